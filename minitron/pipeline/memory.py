"""The memory plan of the pipeline's training stages (train, distill, sft, dpo): printed by ``dry_run=true``, and
checked before such a stage starts on a device whose memory is known (a GPU): a stage that would not fit is
refused, naming the settings that would make it fit (:mod:`minitron.plan`).

The plan needs the architectures, so a stage whose model is written by an earlier stage (a pruned student) is
planned once that model exists. Processes per node come from the launcher (``--nproc-per-node N``, ``NPROC``),
DP from them over TP x PP.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from minitron.errors import MinitronError
from minitron.pipeline.stages import Stage

# command -> (the model trained, the frozen model beside it: teacher or reference; None: none)
_MODELS = {"train": ("model.path", None), "sft": ("model.path", None), "distill": ("student.path", "teacher.path"),
           "dpo": ("model.path", "reference.path")}  # fmt: skip
_CONFIGS = {"train": "train", "sft": "sft", "distill": "distill", "dpo": "dpo"}


def processes(launcher: str) -> int:
    """Processes per run the launcher starts (``--nproc-per-node N`` or ``--nproc_per_node=N``, else NPROC, else 1)."""
    match = re.search(r"--nproc[-_]per[-_]node[ =](\d+)", launcher or "")
    if match:
        return int(match[1])
    return int(os.environ.get("NPROC", "1")) if (launcher or "").strip() else 1


def _arg(args: list[str], key: str) -> Optional[str]:
    return next((arg.split("=", 1)[1] for arg in args if arg.split("=", 1)[0].lstrip("+") == key), None)


def stage_plan(stage: Stage, launcher: str, device_memory_gb: Optional[float] = None) -> Optional[dict]:
    """The memory plan of a training stage (None for other stages); ``{"waits_for": path}`` when its model is
    not written yet."""
    if stage.command not in _MODELS:
        return None
    import torch

    from minitron.config.compose import validate
    from minitron.plan.archs import open_arch
    from minitron.plan.report import device_memory_bytes, layout_of, plan_layout

    trained_key, frozen_key = _MODELS[stage.command]
    trained = _arg(stage.args, trained_key)
    frozen = (_arg(stage.args, frozen_key) or trained) if frozen_key else None
    for path in (trained, frozen):
        if path is not None and not Path(path).exists():
            return {"waits_for": path}
    cfg = validate(_CONFIGS[stage.command], stage.args)
    tp, pp = cfg.parallel.tp, cfg.parallel.pp
    dp = max(processes(launcher) // (tp * pp), 1)
    dtype = "bfloat16" if torch.cuda.is_available() else "float32"  # what model.dtype=auto computes in
    layout = layout_of(cfg.train, tp, pp, dp, dtype)
    return plan_layout(open_arch(trained), layout, open_arch(frozen) if frozen else None,
                       device_memory_bytes(device_memory_gb))  # fmt: skip


def summary_line(plan: Optional[dict]) -> Optional[str]:
    """One line: per-rank total and its parts, fit against the device when known."""
    if plan is None:
        return None
    if "waits_for" in plan:
        return f"memory plan: once {plan['waits_for']} exists"
    gib = 1024**3
    parts = ", ".join(f"{key.replace('_', '/')} {value / gib:.2f}" for key, value in plan["parts"].items())
    fit = "" if plan.get("fits") is None else (" fits" if plan["fits"] else " DOES NOT FIT")
    device = "" if plan.get("device_memory") is None else f" of {plan['device_memory'] / gib:.1f} GiB"
    return f"memory plan: {plan['total'] / gib:.2f} GiB per rank{device}{fit} ({parts} GiB)"


def check_fits(stage: Stage, launcher: str, device_memory_gb: Optional[float] = None) -> None:
    """Refuse a training stage whose plan does not fit ``device_memory_gb`` (None: this GPU's memory; no-op on CPU)."""
    plan = stage_plan(stage, launcher, device_memory_gb)
    if plan is None or plan.get("fits") is not False:
        return
    gib = 1024**3
    remedy = " ".join(plan.get("fits_with") or []) or "a larger parallel.tp / parallel.pp"
    raise MinitronError(
        f"stage {stage.name} (`minitron {stage.command}`): needs {plan['total'] / gib:.1f} GiB per rank, more than "
        f"this device's {plan['device_memory'] / gib:.1f} GiB; add {remedy} to the recipe's arguments of this stage"
    )
