"""Training metrics: console progress, ``metrics.jsonl``, TensorBoard when installed, W&B when configured.

Only global rank 0 writes. ``OUTPUT/metrics.jsonl`` gets one JSON object per line:
``{"kind": "start", "step": S, ...}`` at every (re)start, ``{"kind": "train", "step", "loss", "lr",
"grad_norm", "tokens", "tokens_per_s", "step_seconds", "memory_gb"}`` per step and ``{"kind":
"valid", "step", "loss", "tokens"}`` per validation. On a resume from step S, records of steps after S
(written by the interrupted run) are dropped first, so the file reads like one uninterrupted run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path
from typing import Optional

import torch

from minitron.config.training import LoggingConfig
from minitron.runtime import is_main_process

METRICS_FILE = "metrics.jsonl"


def memory_gb() -> float:
    """Peak GPU memory allocated by this process, or its resident CPU memory, in GB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    import psutil

    return psutil.Process().memory_info().rss / 1e9


def have_tensorboard() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def truncate_after(path: Path, step: int) -> None:
    """Drop the records of steps after ``step`` from a metrics file (rank 0 calls it)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept))


class MetricsLogger:
    """Writes every sink for one run; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Path, settings: LoggingConfig, total_steps: int, start_step: int, run_config: dict):
        self.enabled = is_main_process()
        self.total_steps = total_steps
        self.file = None
        self.tensorboard = None
        self.wandb = None
        self.bar = None
        if not self.enabled:
            return
        path = Path(run_dir) / METRICS_FILE
        truncate_after(path, start_step)
        self.file = open(path, "a", encoding="utf-8")
        if settings.tensorboard and have_tensorboard():
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=start_step + 1)
        if settings.wandb_project:
            import wandb

            run_id = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]  # resumes continue it
            self.wandb = wandb.init(
                project=settings.wandb_project, name=settings.wandb_name or Path(run_dir).name, id=run_id,
                config=run_config, dir=str(run_dir), resume="allow",
            )  # fmt: skip
        if settings.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def _write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def _say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            import sys

            print(text, file=sys.stderr, flush=True)

    def start(self, step: int, **info) -> None:
        if self.enabled:
            self._write({"kind": "start", "step": step, "time": time.time(), **info})

    def train(self, step: int, record: dict, log_interval: int) -> None:
        """One training step's record (see the module docstring for the fields)."""
        if not self.enabled:
            return
        self._write({"kind": "train", "step": step, **record})
        if self.tensorboard is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s", "memory_gb"):
                if record.get(key) is not None:
                    self.tensorboard.add_scalar(f"train/{key}", record[key], step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in record.items() if v is not None}, step=step)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
        if step % log_interval == 0 or step == self.total_steps:
            grad_norm = "-" if record.get("grad_norm") is None else f"{record['grad_norm']:.3f}"
            self._say(
                f"step {step}/{self.total_steps} | loss {record['loss']:.4f} | lr {record['lr']:.3e} | "
                f"grad norm {grad_norm} | {record['tokens_per_s']:,.0f} tokens/s | mem {record['memory_gb']:.2f} GB"
                + (" | update skipped" if record.get("skipped") else "")
            )

    def valid(self, step: int, loss: float, tokens: int) -> None:
        if not self.enabled:
            return
        self._write({"kind": "valid", "step": step, "loss": loss, "tokens": tokens})
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("valid/loss", loss, step)
        if self.wandb is not None:
            self.wandb.log({"valid/loss": loss}, step=step)
        self._say(f"step {step}/{self.total_steps} | validation loss {loss:.4f} over {tokens:,} tokens")

    def note(self, text: str) -> None:
        if self.enabled:
            self._say(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.file is not None:
            self.file.close()


def wandb_problem(settings: LoggingConfig) -> Optional[str]:
    """Why W&B logging cannot run as configured (None when it can or is off)."""
    if settings.wandb_project and importlib.util.find_spec("wandb") is None:
        return "logging.wandb_project is set but the `wandb` package is not installed: pip install wandb, or unset it"
    return None
