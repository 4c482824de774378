"""Filesystem helpers: minitron's home directory, atomic file writes, directories moved into place whole, and
the one lock a writer holds on its output.

A reader never sees half a file: :func:`write_text_atomic` / :func:`write_json_atomic` (and
:func:`atomic_path` for writers that need a path, such as matplotlib) write a hidden temporary next to
the target, named after this process (``.NAME.<pid>.<n>.tmp``, so concurrent writers never share one),
fsync it and ``os.replace`` it over the target. A failure leaves the target as it was and no temporary.

One writer per output: every command that writes holds :func:`output_lock` on its output for as long as it
writes (an exclusive ``flock`` on ``.NAME.lock`` beside the output, holding the writer's PID); a second writer
gets one MinitronError naming that PID. The kernel releases the lock when the holder exits in any way; a
holder that ends normally also removes the lock file. :func:`check_not_an_input` refuses an output that would
overwrite, or write inside, one of the same command's inputs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator, Optional

from minitron.errors import MinitronError

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



def lock_path(output) -> Path:
    """The lock file of ``output`` (a file, a directory or a dataset prefix): ``.NAME.lock`` beside it."""
    output = Path(output).expanduser().absolute()
    return output.with_name(f".{output.name}.lock")


def _holder(path: Path) -> str:
    """The PID recorded in the lock file ``path`` (``?`` when it cannot be read yet)."""
    for _ in range(20):  # the holder writes its PID right after taking the lock
        with contextlib.suppress(OSError):
            pid = path.read_text().strip()
            if pid:
                return pid
        time.sleep(0.05)
    return "?"


@contextlib.contextmanager
def output_lock(output, name: Optional[str] = None) -> Iterator[Path]:
    """Hold the exclusive lock of ``output`` for the block (see the module docstring); yields the lock file.

    Parent directories that do not exist are created, and removed again on release when still empty.
    ``name`` is what the error calls the output (default ``output=PATH``)."""
    path = lock_path(output)
    made = [parent for parent in reversed([path.parent, *path.parent.parents]) if not parent.exists()]
    fd: Optional[int] = None
    try:
        while True:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:  # a read-only or forbidden place: name the output, not the lock file
                raise OSError(err.errno, err.strerror, str(output)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                os.close(fd)
                fd = None
                raise MinitronError(
                    f"{name or f'output={output}'} is being written by another minitron process "
                    f"(pid {_holder(path)}); wait for it to finish or stop it first"
                ) from None
            try:  # the file we locked may have been removed by a holder that just finished: lock the new one
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
            fd = None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)  # releases the lock
        for parent in reversed(made):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only when empty


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def check_not_an_input(outputs, inputs) -> None:
    """Refuse to write any of ``outputs`` (paths) when it is, lies inside, or contains one of ``inputs``
    (``(setting, path)`` pairs; a directory input is protected whole, a file input only itself): writing there
    would change or delete what the command reads. Paths are compared resolved (symbolic links followed)."""
    inputs = list(inputs.items() if isinstance(inputs, dict) else inputs)
    for output in [outputs] if isinstance(outputs, (str, os.PathLike)) else outputs:
        out = Path(output).expanduser().resolve()
        for setting, given in inputs:
            if given is None or str(given) == "":
                continue
            source = Path(given).expanduser().resolve()
            if out == source:
                where = "is"
            elif _inside(out, source):
                where = "is inside"
            elif _inside(source, out):
                where = "contains"
            else:
                continue
            raise MinitronError(
                f"output={output} {where} the input {setting}={given}: writing it would change or delete that "
                "input; choose an output outside every input"
            )
