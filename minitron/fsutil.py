"""Small filesystem helpers shared by the modules that stage outputs in temporary directories."""

from __future__ import annotations

import os
from pathlib import Path


def open_permissions(directory: Path) -> None:
    """Give ``directory`` (made by mkdtemp, mode 0700) and its files the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in Path(directory).rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
