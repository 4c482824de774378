"""Small filesystem helpers shared by the modules that stage outputs in temporary directories."""

from __future__ import annotations

import json
import os
from pathlib import Path


def open_permissions(directory: Path) -> None:
    """Give ``directory`` (made by mkdtemp, mode 0700) and its files the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in Path(directory).rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def write_json_atomic(path, data) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same directory (fsynced, renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
