"""The run directory of a training run: what it holds and how it is set up.

    OUTPUT/
      config.yaml      the resolved config of the latest start (earlier ones: config.<n>.yaml when it changed)
      versions.json    torch, megatron-core, transformers, Python, git commit
      metrics.jsonl    one record per step, validation and (re)start (see minitron.training.metrics)
      checkpoints/     training checkpoints (see minitron.training.checkpointing)
      final/           the trained model as a minitron Megatron checkpoint (`minitron convert` exports it)
      tensorboard/     event files, when tensorboard is installed
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


def prepare(output, resolved_config: str) -> Path:
    """Create the run directory (rank 0) and record the config and versions; all ranks wait."""
    run_dir = Path(output)
    if runtime.is_main_process():
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
