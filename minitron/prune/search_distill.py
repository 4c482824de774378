"""Rung (c) of the architecture search: the best zero-shot candidates, distilled briefly, scored on held-out text.

Each candidate is written as the student an explicit-target ``minitron prune`` writes
(:func:`~minitron.prune.surgery.write_pruned_hf`, into ``CACHE/students/NAME``), then distilled by
``minitron distill`` (teacher = the source model, ``prune.search.distill_steps`` steps on
``prune.search.distill_data``, plus ``prune.search.distill_overrides``) into ``CACHE/distill/NAME``, and scored
by ``minitron eval`` on ``prune.search.heldout_data`` with ``eval.teacher`` = the source: held-out loss and
KL(teacher || student). The commands run as child processes in one process each (their output goes to
``CACHE/distill/NAME.log``); ``minitron distill`` resumes its own run, so a search killed during a distillation
continues it. Results are cached per candidate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from minitron import runtime
from minitron.config.prune import PruneSettings
from minitron.errors import MinitronError
from minitron.fsutil import replace_directory
from minitron.models.checkpoint import ModelSource
from minitron.prune.plan import plan_pruning
from minitron.prune.scores import ImportanceScores
from minitron.prune.search_cache import SearchCache
from minitron.prune.search_space import Candidate
from minitron.prune.surgery import write_pruned_hf

LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                    "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")  # fmt: skip


def _minitron(log: Path, *args: str) -> None:
    """Run ``minitron ARGS`` in a child process of its own (no launcher variables), appending to ``log``."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    with open(log, "a") as out:
        done = subprocess.run([sys.executable, "-m", "minitron.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                              env=env)  # fmt: skip
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise MinitronError(f"search rung (c): `minitron {args[0]}` failed (exit {done.returncode}): {tail[0]}; "
                            f"full log: {log}")  # fmt: skip


def write_student(source: ModelSource, scores: ImportanceScores, candidate: Candidate, settings: PruneSettings,
                  directory: Path) -> None:  # fmt: skip
    """The candidate's student as ``minitron prune`` writes it (HF directory), atomically into ``directory``."""
    if (directory / "config.json").is_file():
        return
    staging = directory.with_name(directory.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    plan = plan_pruning(source.arch, scores, candidate.targets(settings.targets()))
    write_pruned_hf(source, plan, staging)
    replace_directory(staging, directory)


def distill_and_score(source: ModelSource, scores: ImportanceScores, candidates: list[Candidate],
                      settings: PruneSettings, cache: SearchCache) -> dict[str, dict]:  # fmt: skip
    """Rung (c) of ``candidates``: name -> ``{"loss", "kl", "teacher_loss", "tokens"}`` on the held-out text."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MinitronError("prune.search.top_k > 0 distils candidates in child processes: run the search in one "
                            "process (no torchrun), or set prune.search.top_k=0")  # fmt: skip
    search, records = settings.search, {}
    for index, candidate in enumerate(candidates):
        record = cache.get("rung_c", candidate.name)
        if record is None:
            student, run = cache.path("students", candidate.name), cache.path("distill", candidate.name)
            log = cache.path("distill", f"{candidate.name}.log")
            log.parent.mkdir(parents=True, exist_ok=True)
            write_student(source, scores, candidate, settings, student)
            runtime.log(f"search (c) {index + 1}/{len(candidates)} {candidate.name}: distilling "
                        f"{search.distill_steps} steps (log {log})")  # fmt: skip
            _minitron(log, "distill", f"teacher.path={source.path}", f"student.path={student}",
                      f"data.path={search.distill_data}", f"output={run}", f"train.steps={search.distill_steps}",
                      "logging.progress=false", *search.distill_overrides)  # fmt: skip
            result = cache.path("distill", f"{candidate.name}.heldout.json")
            eval_args = [f"model.path={run / 'final'}", f"data.path={search.heldout_data}",
                         f"eval.teacher={source.path}", f"eval.seq_length={search.heldout_seq_length}",
                         f"output={result}"]  # fmt: skip
            if search.heldout_max_windows is not None:
                eval_args.append(f"eval.max_windows={search.heldout_max_windows}")
            _minitron(log, "eval", *eval_args)
            heldout = json.loads(result.read_text())
            record = {k: heldout[k] for k in ("loss", "kl", "teacher_loss", "tokens")}
            cache.put("rung_c", candidate.name, record)
            runtime.log(f"search (c) {candidate.name}: held-out loss {record['loss']:.4f}, KL {record['kl']:.4f}")
        else:
            runtime.log(f"search (c) {index + 1}/{len(candidates)} {candidate.name}: cached, loss {record['loss']:.4f}")
        records[candidate.name] = record
    return records
