"""What every recipe shares: error reporting, the final JSON line, provenance, quiet start-up.

A recipe's ``main`` is wrapped by :func:`stage`: a :class:`MinitronError`, or a full disk / read-only /
forbidden target (:func:`minitron.failures.describe`), becomes one line on stderr (``error: ...``) and exit
status 2, with nothing else printed; other exceptions keep their traceback.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Optional

import hydra

from minitron.config import schema
from minitron.errors import MinitronError

# Megatron-Core warns about every optional CUDA library it cannot find; on CPU that is expected.
# Deprecation notices from torch.distributed.checkpoint and Megatron's own config warnings are not
# actionable by users either. Set PYTHONWARNINGS to see them again.
if not sys.warnoptions:
    for _pattern in ("Transformer Engine and Apex are not installed", "Apex is not installed", ".*TransformerEngine.*"):
        warnings.filterwarnings("ignore", message=_pattern)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(megatron|torch\.distributed)\..*")


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def log(*parts) -> None:
    """Progress output for people (stderr, rank 0 only): stdout stays machine-readable."""
    if is_main_process():
        print(*parts, file=sys.stderr, flush=True)


def print_result(result: dict) -> None:
    """The command's result as the last line of stdout, one JSON object (rank 0 only)."""
    if is_main_process():
        print(json.dumps(result), flush=True)


def report_result(result: dict, output: Optional[str] = None) -> None:
    """End a command: ``result`` written atomically to ``output`` (when given) and printed as the last stdout
    line, both by the main process only."""
    if output and is_main_process():
        from minitron.fsutil import write_json_atomic

        write_json_atomic(output, result)
    print_result(result)


def stage(fn):
    """Run a recipe's main with minitron's error contract (see module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MinitronError as err:
            if is_main_process() or os.environ.get("WORLD_SIZE", "1") == "1":
                print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # an OSError, or one wrapped (torch.distributed.checkpoint's CheckpointException)
            from minitron import failures

            message = failures.describe(err)
            if message is None:
                raise
            failures.print_line("error", message)
            sys.exit(2)

    return wrapper


def recipe(config_name: str):
    """``@runtime.recipe("train")``: ``main(cfg)`` becomes the Hydra entry point of ``conf/train.yaml`` (schemas
    registered, composed from the command line) with the error contract of :func:`stage`."""
    schema.register()

    def decorate(fn):
        return hydra.main(config_path=schema.CONF_DIR, config_name=config_name, version_base=None)(stage(fn))

    return decorate


def versions() -> dict:
    """Versions recorded next to every output: minitron (package version, and the git commit when it runs
    from a git checkout of minitron), Python, torch, megatron-core, transformers and Transformer Engine
    (None when it is not importable)."""
    import megatron.core
    import torch
    import transformers

    import minitron

    return {
        "minitron": minitron.__version__,
        "minitron_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "megatron_core": megatron.core.__version__,
        "transformers": transformers.__version__,
        "transformer_engine": _transformer_engine_version(),
    }


def _git_commit() -> Optional[str]:
    """The commit of the minitron checkout this code runs from; None for an installed package (even one that
    sits inside some other git repository) or without git."""
    checkout = Path(__file__).resolve().parents[1]
    try:
        top, commit = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True,
            timeout=5,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return commit if Path(top).resolve() == checkout else None


def _transformer_engine_version() -> Optional[str]:
    import importlib.util

    if importlib.util.find_spec("transformer_engine") is None:
        return None
    try:
        import transformer_engine
    except Exception:  # installed but not importable here (e.g. no CUDA): not what ran
        return None
    return getattr(transformer_engine, "__version__", None) or "unknown"
