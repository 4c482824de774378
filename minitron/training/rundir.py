"""The run directory of a training run: what it holds and how it is set up.

    OUTPUT/
      config.yaml      the resolved config of the latest start that trained (earlier ones: config.<n>.yaml)
      versions.json    torch, megatron-core, transformers, Python, git commit
      metrics.jsonl    one record per step, validation and (re)start (see minitron.training.metrics)
      checkpoints/     training checkpoints (see minitron.training.checkpointing)
      final/           the trained model as a minitron Megatron checkpoint (`minitron convert` exports it)
      tensorboard/     event files, when tensorboard is installed

A finished run (``final/`` written) is immutable: running it again with other settings is refused, naming them
(:func:`check_rerun`), except a larger ``train.steps``, which continues it (Megatron's semantics); running it
again with the same settings trains nothing and rewrites neither config.yaml nor versions.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from minitron import runtime
from minitron.errors import MinitronError


def check_output(output) -> None:
    """Refuse an output that is a file, or a non-empty directory that is not a training run's."""
    path = Path(output)
    if path.is_file():
        raise MinitronError(f"output={path} is a file; pass a directory for the run")
    if path.is_dir():
        entries = {p.name for p in path.iterdir()}
        if entries and not entries & {"config.yaml", "checkpoints", "metrics.jsonl"}:
            raise MinitronError(
                f"output={path} is a non-empty directory that is not a training run; choose a new output directory"
            )


# settings a finished run may be rerun with changed: where and how it runs and logs, not what it trains
RERUN_FREE = ("output", "parallel.", "logging.", "checkpoint.keep_last", "checkpoint.verify", "checkpoint.resume",
              "data.cache_dir")  # fmt: skip


def _flatten(config, prefix: str = "") -> dict:
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config}
    flat = {}
    for key, value in config.items():
        flat.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def is_finished(output) -> bool:
    """Whether the run in ``output`` has written its final model."""
    return (Path(output) / "final" / "minitron.json").is_file()


def check_rerun(output, run_config: dict) -> bool:
    """Refuse to run a finished run again with other settings (see the module docstring). Returns whether this
    start trains: False for a finished run rerun with the same settings."""
    import yaml

    path = Path(output) / "config.yaml"
    if not is_finished(output) or not path.is_file():
        return True
    try:
        started = _flatten(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError:
        raise MinitronError(f"{path}: not valid YAML; the run's record is damaged: choose a new output") from None
    now = _flatten(run_config)
    keys = [k for k in sorted(set(started) | set(now)) if not k.startswith(RERUN_FREE)]
    changed = [k for k in keys if started.get(k) != now.get(k)]
    if changed == ["train.steps"] and (now["train.steps"] or 0) > (started["train.steps"] or 0):
        return True  # continues the run to more steps
    if changed:
        what = ", ".join(f"{k}={started.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise MinitronError(
            f"output={output} is a finished run trained with other settings ({what}{more}); it stays as it is: "
            f"choose a new output directory (to train its model further: model.path={Path(output) / 'final'})"
        )
    return False


def prepare(output, resolved_config: str, record: bool = True) -> Path:
    """Create the run directory (rank 0) and record the config and versions (unless not ``record``: a start that
    will not train); all ranks wait."""
    run_dir = Path(output)
    if runtime.is_main_process() and record:
        run_dir.mkdir(parents=True, exist_ok=True)
        config = run_dir / "config.yaml"
        if config.is_file() and config.read_text() != resolved_config:
            number = 1
            while (run_dir / f"config.{number}.yaml").exists():
                number += 1
            config.rename(run_dir / f"config.{number}.yaml")
        config.write_text(resolved_config)
        (run_dir / "versions.json").write_text(json.dumps(runtime.versions(), indent=2) + "\n")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return run_dir
