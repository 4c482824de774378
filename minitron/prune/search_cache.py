"""The architecture search's cache: one JSON record per candidate and rung, so a killed search resumes.

Layout of the cache directory (``prune.search.cache``, default ``OUTPUT.search``)::

    search.json               the key: model fingerprint, budget, space and scoring settings (written first)
    importance/               the importance scores the candidates are pruned from (once computed)
    rung_b/<candidate>.json   zero-shot LM loss (and generation seconds) of a candidate; teacher.json for speedups
    rung_c/<candidate>.json   held-out loss / KL after the short distillation
    students/<candidate>/     rung (c): the pruned student (HF directory), distill/<candidate>/ its run

Every record is written atomically when its candidate is done. A cache whose key differs (another budget,
space, model, data or scoring setting) is refused, naming what changed; reuse it only for the same search.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from minitron.errors import MinitronError
from minitron.fsutil import write_json_atomic

KEY_FILE = "search.json"


class SearchCache:
    def __init__(self, directory, key: dict):
        self.directory = Path(directory)
        self.key = json.loads(json.dumps(key, sort_keys=True, default=str))

    def check(self) -> None:
        """Refuse a cache made for another search (writes nothing)."""
        path = self.directory / KEY_FILE
        if not path.is_file():
            if self.directory.exists() and any(self.directory.iterdir()):
                raise MinitronError(f"prune.search.cache={self.directory} holds other files (no {KEY_FILE}); "
                                    "choose another prune.search.cache")  # fmt: skip
            return
        try:
            recorded = json.loads(path.read_text())
        except json.JSONDecodeError:
            recorded = {}
        if recorded != self.key:
            changed = sorted(k for k in set(recorded) | set(self.key) if recorded.get(k) != self.key.get(k))
            raise MinitronError(
                f"prune.search.cache={self.directory} was made by another search (it differs in {', '.join(changed)}); "
                "its scores do not apply: pass a new prune.search.cache=DIR or delete that directory"
            )

    def open(self) -> None:
        self.check()
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.directory / KEY_FILE).is_file():
            write_json_atomic(self.directory / KEY_FILE, self.key)

    def get(self, rung: str, name: str) -> Optional[dict]:
        path = self.directory / rung / f"{name}.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # cannot happen with atomic writes; rescored if it does

    def put(self, rung: str, name: str, record: dict) -> None:
        (self.directory / rung).mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.directory / rung / f"{name}.json", record)

    def path(self, *parts: str) -> Path:
        return self.directory.joinpath(*parts)
