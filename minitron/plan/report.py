"""``minitron plan``'s result: the layout of a command's config, its memory and time, and what would make it fit."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from minitron.config.scale import AUTO
from minitron.models.arch import ModelArch
from minitron.models.megatron_gpt import check_parallel_layout
from minitron.plan.archs import open_arch
from minitron.plan.memory import GIB, Layout, plan_flops, plan_memory


def device_memory_bytes(device_memory_gb: Optional[float]) -> Optional[int]:
    """The given GiB, else this GPU's memory, else None (unknown on CPU)."""
    if device_memory_gb is not None:
        return int(device_memory_gb * GIB)
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return None


def layout_of(train, tp: int, pp: int, dp: int, dtype: str, fused: Optional[bool] = None) -> Layout:
    """The :class:`Layout` of ``train`` settings (``TrainSettings``) at TP x PP x DP; ``auto`` scale switches are
    taken as a GPU build resolves them (sequence parallelism on with TP > 1)."""
    scale = train.scale
    sequence_parallel = (tp > 1) if scale.sequence_parallel == AUTO else bool(scale.sequence_parallel)
    full = scale.recompute == "full"
    return Layout(tp=tp, pp=pp, dp=dp, micro_batch_size=train.micro_batch_size,
                  global_batch_size=train.global_batch_size, seq_length=train.seq_length, dtype=dtype,
                  sequence_parallel=sequence_parallel, recompute=scale.recompute,
                  recompute_method=scale.recompute_method if full else None,
                  recompute_num_layers=scale.recompute_num_layers if full else None,
                  distributed_optimizer=train.distributed_optimizer,
                  fused=(dtype != "float32") if fused is None else fused)  # fmt: skip


# settings tried, in order, when a layout does not fit: (the override that says it, how it changes the layout)
_REMEDIES = (
    ("train.scale.sequence_parallel=true", lambda l: l.tp > 1 and not l.sequence_parallel,
     lambda l: dataclasses.replace(l, sequence_parallel=True)),
    ("train.distributed_optimizer=true", lambda l: l.dp > 1 and not l.distributed_optimizer,
     lambda l: dataclasses.replace(l, distributed_optimizer=True)),
    ("train.scale.recompute=selective", lambda l: l.recompute == "none",
     lambda l: dataclasses.replace(l, recompute="selective")),
    ("train.scale.recompute=full", lambda l: l.recompute != "full",
     lambda l: dataclasses.replace(l, recompute="full", recompute_method="uniform", recompute_num_layers=1)),
    ("train.micro_batch_size=1", lambda l: l.micro_batch_size > 1, lambda l: dataclasses.replace(l, micro_batch_size=1)),
)  # fmt: skip


def fits_with(arch: ModelArch, layout: Layout, teacher: Optional[ModelArch], memory: int) -> list[str]:
    """Overrides that make the plan fit in ``memory``: the first single setting that does, else the cumulative
    list of them in :data:`_REMEDIES` order, else a larger TP or PP (empty when nothing found fits)."""
    for override, applies, change in _REMEDIES:
        if applies(layout) and plan_memory(arch, change(layout), teacher)["total"] <= memory:
            return [override]
    chosen, current = [], layout
    for override, applies, change in _REMEDIES:
        if applies(current):
            chosen.append(override)
            current = change(current)
            if plan_memory(arch, current, teacher)["total"] <= memory:
                return chosen
    for factor in (2, 4, 8):
        for name, field in (("parallel.tp", "tp"), ("parallel.pp", "pp")):
            bigger = dataclasses.replace(layout, **{field: getattr(layout, field) * factor})
            try:
                check_parallel_layout(arch, bigger.tp, bigger.pp)
            except Exception:
                continue
            if plan_memory(arch, bigger, teacher)["total"] <= memory:
                return [f"{name}={getattr(bigger, field)}"]
    return []


def plan_layout(arch: ModelArch, layout: Layout, teacher: Optional[ModelArch] = None, memory: Optional[int] = None,
                mfu: float = 0.4, peak_tflops: float = 989.0) -> dict:  # fmt: skip
    """Memory, time, fit and remedies of one layout (the JSON ``minitron plan`` prints)."""
    check_parallel_layout(arch, layout.tp, layout.pp)
    if teacher is not None:
        check_parallel_layout(teacher, layout.tp, layout.pp, "teacher")
    memory_plan = plan_memory(arch, layout, teacher)
    fits = None if memory is None else memory_plan["total"] <= memory
    return {"layout": dataclasses.asdict(layout), **memory_plan, "device_memory": memory, "fits": fits,
            "fits_with": fits_with(arch, layout, teacher, memory) if fits is False else [],
            **plan_flops(arch, layout, teacher, mfu, peak_tflops)}  # fmt: skip


def plan_stage(cfg) -> dict:
    """:func:`plan_layout` of a ``PlanCommand``."""
    settings = cfg.plan
    arch = open_arch(cfg.model.path)
    teacher = open_arch(settings.teacher, "plan.teacher") if settings.stage == "distill" else None
    layout = layout_of(cfg.train, cfg.parallel.tp, cfg.parallel.pp, settings.dp, settings.dtype, settings.fused)
    result = plan_layout(arch, layout, teacher, device_memory_bytes(settings.device_memory_gb), settings.mfu,
                         settings.peak_tflops)  # fmt: skip
    return {"model": cfg.model.path, "stage": settings.stage, "teacher": settings.teacher, **result}


def describe(result: dict) -> str:
    """The plan as a few lines for people."""
    gib = lambda n: f"{n / GIB:8.2f} GiB"  # noqa: E731
    layout = result["layout"]
    lines = [f"{result.get('stage', 'train')} {result.get('model', '')}: TP={layout['tp']} PP={layout['pp']} "
             f"DP={layout['dp']}, micro-batch {layout['micro_batch_size']} x {layout['seq_length']} tokens, "
             f"{layout['dtype']}, sequence parallel {layout['sequence_parallel']}, recompute {layout['recompute']}, "
             f"distributed optimizer {layout['distributed_optimizer']}",
             f"  per rank ({result['params_per_rank']:,} parameters, {result['micro_batches_in_flight']} "
             "micro-batches in flight):"]  # fmt: skip
    lines += [f"    {name:<12}{gib(value)}" for name, value in result["parts"].items()]
    memory = result["device_memory"]
    verdict = "" if memory is None else (f" of {gib(memory).strip()}: " + ("fits" if result["fits"] else "does not fit"))
    lines.append(f"    {'total':<12}{gib(result['total'])}{verdict}")
    if result["fits_with"]:
        lines.append(f"  fits with: {' '.join(result['fits_with'])}")
    lines.append(f"  {result['flops_per_step']:.3e} FLOPs/step: {result['step_seconds']:.2f} s/step, "
                 f"{result['tokens_per_s']:,.0f} tokens/s at MFU {result['mfu']} of {result['peak_tflops']} TFLOP/s")
    return "\n".join(lines)
