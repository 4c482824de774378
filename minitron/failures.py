"""Ending cleanly when the machine, not the input, stops a command: a full disk, a read-only or forbidden
target, Ctrl-C (SIGINT) and SIGTERM.

Every ``minitron`` command runs through :func:`run_cleanly` (``minitron.cli.main``), which makes SIGTERM
raise :class:`Terminated` (a ``KeyboardInterrupt``) in the main thread, so that the command's own cleanup
(``finally`` blocks, staging directories and ``.partial`` files removed on any exception) runs as for Ctrl-C;
an interruption then ends in one ``interrupted:`` line and exit status 130 (SIGINT) or 143 (SIGTERM). An
``OSError`` (also one wrapped in another exception) that says the disk is full, the file system read-only or
the target forbidden becomes one ``error:`` line naming the path and the fix, exit status 2 (:func:`describe`;
recipes get it through :func:`minitron.runtime.stage`, inside Hydra, which would print a traceback). Other
exceptions are bugs and keep their traceback. Under a launcher only rank 0 prints.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
from typing import Callable, Optional

EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM  # 130, 143: the shells' convention

_FIXES = {
    errno.ENOSPC: ("no space left on device", "free some space or write the output to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write the output to another disk"),
    errno.EROFS: ("read-only file system", "write the output to a writable directory"),
    errno.EACCES: ("permission denied", "write the output to a directory you may write to"),
    errno.EPERM: ("operation not permitted", "write the output to a directory you may write to"),
}


# torch's C++ file writer reports a short write without errno: "[enforce fail at inline_container.cc] . unexpected
# pos 704 vs 598" or "PytorchStreamWriter failed writing file"; on a full disk that is what ENOSPC looks like
_TORCH_SHORT_WRITE = re.compile(r"No space left on device|unexpected pos \d+ vs \d+|failed writing file")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that cleanup runs as for Ctrl-C."""


_received: list[int] = []  # signals received by this process (their exception may have been swallowed)


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: a second must not interrupt the cleanup
    _received.append(signum)
    raise Terminated()


def _on_sigint(signum, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt()


def _quiet_unraisable(previous):
    """``sys.unraisablehook`` that keeps quiet about our interruptions (Python would print their traceback where
    it swallows them; :func:`check_interrupted` raises them again) and passes anything else on."""

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)

    return hook


def check_interrupted() -> None:
    """Raise again for a SIGINT/SIGTERM whose exception was swallowed where Python ignores exceptions (it can
    land in an at-fork handler while a process pool starts); long loops call this between pieces of work."""
    if _received:
        raise Terminated() if _received[-1] == signal.SIGTERM else KeyboardInterrupt()


def _os_error(err: BaseException) -> Optional[OSError]:
    """The OSError of a kind in :data:`_FIXES` behind ``err``: itself, its causes, or the per-rank failures of a
    torch.distributed.checkpoint ``CheckpointException``; None when there is none."""
    seen, pending, short_write = set(), [err], False
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FIXES:
            return current
        short_write = short_write or bool(_TORCH_SHORT_WRITE.search(str(current.args[0]) if current.args else ""))
        failures = getattr(current, "failures", None)
        if isinstance(failures, dict):  # CheckpointException: {rank: exception or WRAPPED_EXCEPTION (exc, tb)}
            for failure in failures.values():
                pending.append(failure[0] if isinstance(failure, tuple) else failure)
        pending.extend([current.__cause__, current.__context__])
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if short_write else None


def describe(err: BaseException) -> Optional[str]:
    """The one-line message for an exception caused by the disk (full, read-only, forbidden), else None."""
    found = _os_error(err)
    if found is None:
        return None
    what, fix = _FIXES[found.errno]
    path = found.filename if found.filename is not None else "writing the output"  # torch names no file
    return f"{path}: {what}; {fix} (nothing half-written is kept)"


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0" or os.environ.get("WORLD_SIZE", "1") == "1"


def print_line(kind: str, message: str) -> None:
    """``KIND: MESSAGE`` on stderr, by rank 0 (or a lone process) only."""
    if _is_main_process():
        print(f"{kind}: {message}", file=sys.stderr, flush=True)


def run_cleanly(command: str, run: Callable[[], int]) -> int:
    """Run ``run()`` (a command's main, returning its exit status) with SIGTERM as an interruption; a disk error
    or an interruption becomes one line and its exit status (see the module docstring)."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm), signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread (a test or an embedding program): signals are its owner's
        previous = None
    _received.clear()  # this command's signals only (several commands may run in one process: tests)
    unraisable_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_unraisable(unraisable_hook)
    try:
        return run()
    except KeyboardInterrupt as err:
        name, status = ("SIGTERM", EXIT_SIGTERM) if isinstance(err, Terminated) else ("SIGINT", EXIT_SIGINT)
        print_line("interrupted", f"`minitron {command}` stopped by {name}; nothing half-written was kept (run the "
                                  "same command again: training and distillation resume from their last checkpoint)")
        return status
    except SystemExit:
        raise
    except BaseException as err:  # an OSError, or one wrapped (torch.distributed.checkpoint's CheckpointException)
        message = describe(err)
        if message is None:
            raise
        print_line("error", message)
        return 2
    finally:
        sys.unraisablehook = unraisable_hook
        _received.clear()  # handled here: a later command or training loop in this process must not see it
        if previous is not None:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
