"""Filesystem helpers: minitron's home directory, atomic file writes and directories moved into place whole.

A reader never sees half a file: :func:`write_text_atomic` / :func:`write_json_atomic` (and
:func:`atomic_path` for writers that need a path, such as matplotlib) write a hidden temporary next to
the target, named after this process (``.NAME.<pid>.<n>.tmp``, so concurrent writers never share one),
fsync it and ``os.replace`` it over the target. A failure leaves the target as it was and no temporary.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

_temporaries = itertools.count()  # numbers this process's temporaries


def minitron_home() -> Path:
    """``$MINITRON_HOME`` (default ``~/.cache/minitron``), absolute: where `minitron assets fetch` puts assets."""
    return Path(os.environ.get("MINITRON_HOME") or "~/.cache/minitron").expanduser().absolute()


def sha256_file(path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (files created, renamed or removed in it) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """A temporary path for the block to write ``path``'s new content to; moved into place when the block ends.

    The parent directory is created if needed. On an exception the temporary is removed and ``path``
    keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{next(_temporaries)}.tmp")
    try:
        yield temporary
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> None:
    """Replace the file ``path`` with ``text`` (UTF-8) in one step (see the module docstring)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomic(path, data, indent: int = 2) -> None:
    """Replace the file ``path`` with ``data`` as indented JSON and a final newline, in one step."""
    write_text_atomic(path, json.dumps(data, indent=indent) + "\n")


def replace_directory(staging: Path, out: Path) -> None:
    """Move the finished directory ``staging`` to ``out`` (same filesystem); an existing ``out`` is moved
    aside to ``STAGING.old`` first and deleted once the new one is in place."""
    staging, out = Path(staging), Path(out)
    old = staging.with_name(staging.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def open_permissions(directory: Path) -> None:
    """Give ``directory`` (made by mkdtemp, mode 0700) and its files the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in Path(directory).rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)

