"""Resolve ``train.scale`` (:class:`~minitron.config.scale.ScaleSettings`) against the device, the build and the layout.

:func:`resolve_scale` turns each ``auto`` into on or off and refuses (MinitronError, one line naming the setting
and the fix) a switch set to ``true`` that this device, build or layout cannot do. What it returns,
:class:`ScaleLayout`, is what :func:`minitron.models.megatron_gpt.transformer_config` (sequence parallelism,
recomputation, fusions) and :func:`minitron.training.engine.wrap_model` (overlapped gradient reduction and
parameter gathering) pass to Megatron-Core, and what ``minitron plan`` counts memory with.

What each switch needs (Megatron-Core 0.16):
  sequence_parallel             TP > 1 (Megatron refuses it at TP=1); on CPU the norms are torch RMSNorm
                                flagged for the TP gradient all-reduce (:func:`minitron.models.megatron_gpt.layer_spec`)
  overlap_grad_reduce           nothing to gain without data parallelism; runs over gloo
  overlap_param_gather          the distributed optimizer (Megatron's DDP asserts it)
  bias_activation_fusion        a torch.compile'd SwiGLU: a GPU kernel (Triton); on CPU it would compile C++ per shape
  rope_fusion                   Transformer Engine's fused RoPE (``fused_apply_rotary_pos_emb``)
  cross_entropy_fusion          a torch.compile'd cross-entropy: a GPU kernel, as bias_activation_fusion
  gradient_accumulation_fusion  Transformer Engine's linear layers (its spec) or Apex's fused_weight_gradient_mlp_cuda
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from typing import Optional

import torch

from minitron.config.scale import AUTO, ScaleSettings
from minitron.errors import MinitronError


@dataclasses.dataclass(frozen=True)
class DeviceCaps:
    """What this machine and build can run."""

    cuda: bool  # a CUDA device is visible to torch
    transformer_engine: bool  # Transformer Engine imports and a GPU is there (minitron then uses TE's layer spec)
    apex_wgrad: bool  # Apex's fused_weight_gradient_mlp_cuda extension imports

    @property
    def gradient_accumulation_fusion(self) -> bool:
        return self.cuda and (self.transformer_engine or self.apex_wgrad)


@functools.lru_cache(maxsize=None)
def device_caps() -> DeviceCaps:
    """This machine's :class:`DeviceCaps` (probed once)."""
    from minitron.models.megatron_gpt import have_transformer_engine

    return DeviceCaps(cuda=torch.cuda.is_available(), transformer_engine=have_transformer_engine(),
                      apex_wgrad=importlib.util.find_spec("fused_weight_gradient_mlp_cuda") is not None)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ScaleLayout:
    """The resolved scale settings: every switch on or off. The default is everything off (as before scale settings)."""

    sequence_parallel: bool = False
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    recompute: str = "none"  # none | selective | full
    recompute_method: Optional[str] = None  # recompute=full: uniform | block
    recompute_num_layers: Optional[int] = None  # recompute=full: layers per group (uniform) or per stage (block)
    bias_activation_fusion: bool = False
    rope_fusion: bool = False
    cross_entropy_fusion: bool = False
    gradient_accumulation_fusion: bool = False

    def transformer_config_fields(self) -> dict:
        """The ``TransformerConfig`` fields these settings set."""
        return dict(
            sequence_parallel=self.sequence_parallel,
            recompute_granularity=None if self.recompute == "none" else self.recompute,
            recompute_method=self.recompute_method,
            recompute_num_layers=self.recompute_num_layers,
            bias_activation_fusion=self.bias_activation_fusion,
            apply_rope_fusion=self.rope_fusion,
            cross_entropy_loss_fusion=self.cross_entropy_fusion,
            gradient_accumulation_fusion=self.gradient_accumulation_fusion,
        )

    def summary(self) -> str:
        """One line for the run's log: the switches that are on."""
        on = [name for name in ("sequence_parallel", "overlap_grad_reduce", "overlap_param_gather",
                                "bias_activation_fusion", "rope_fusion", "cross_entropy_fusion",
                                "gradient_accumulation_fusion") if getattr(self, name)]  # fmt: skip
        if self.recompute != "none":
            on.append(f"recompute={self.recompute}" + (f" ({self.recompute_method}, {self.recompute_num_layers} layers)"
                                                       if self.recompute == "full" else ""))  # fmt: skip
        return ", ".join(on) or "none"


def _switch(settings: ScaleSettings, name: str, auto: bool, missing: Optional[str]) -> bool:
    """Resolve one switch: ``auto`` -> ``auto`` (and possible); ``true`` -> refused with ``missing`` when set."""
    value = getattr(settings, name)
    if value == AUTO:
        return auto and missing is None
    if value and missing is not None:
        raise MinitronError(f"train.scale.{name}=true {missing}; set train.scale.{name}=auto or false")
    return bool(value)


def resolve_scale(settings: ScaleSettings, tp: int, pp: int, dp: int, distributed_optimizer: bool,
                  num_layers: Optional[int] = None, caps: Optional[DeviceCaps] = None,
                  no_sequence_parallel: Optional[str] = None) -> ScaleLayout:  # fmt: skip
    """The :class:`ScaleLayout` of ``settings`` for a TP x PP x DP layout on this device (or ``caps``).

    ``num_layers`` (the model's) checks ``recompute_num_layers`` against the layers of one pipeline stage;
    ``no_sequence_parallel`` names a setting of the command that rules sequence parallelism out."""
    caps = caps or device_caps()
    gpu = None if caps.cuda else "needs a GPU (this machine has none)"
    sp_missing = None if tp > 1 else f"needs tensor parallelism (parallel.tp={tp}); add parallel.tp=2 or more"
    sp_missing = sp_missing or (f"does not work with {no_sequence_parallel}" if no_sequence_parallel else None)
    sequence_parallel = _switch(settings, "sequence_parallel", caps.cuda, sp_missing)
    overlap_grad_reduce = _switch(settings, "overlap_grad_reduce", caps.cuda and dp > 1, None)
    overlap_param_gather = _switch(
        settings, "overlap_param_gather", caps.cuda and dp > 1,
        None if distributed_optimizer else "needs the distributed optimizer; add train.distributed_optimizer=true",
    )  # fmt: skip
    te = None if caps.transformer_engine else "needs Transformer Engine's fused RoPE (not installed, or no GPU)"
    wgrad = None if caps.gradient_accumulation_fusion else (
        "needs Transformer Engine or Apex's fused_weight_gradient_mlp_cuda on a GPU (neither is usable here)")  # fmt: skip
    recompute_method = recompute_layers = None
    if settings.recompute == "full":
        stage_layers = num_layers // pp if num_layers else None
        recompute_method = settings.recompute_method
        recompute_layers = settings.recompute_num_layers or (1 if recompute_method == "uniform" else stage_layers)
        if stage_layers is not None and recompute_layers is not None and recompute_layers > stage_layers:
            raise MinitronError(
                f"train.scale.recompute_num_layers={recompute_layers} exceeds the {stage_layers} layers of a pipeline "
                f"stage; use train.scale.recompute_num_layers<={stage_layers}"
            )
        if recompute_layers is None:
            raise MinitronError("train.scale.recompute_method=block needs train.scale.recompute_num_layers=N")
    return ScaleLayout(
        sequence_parallel=sequence_parallel,
        overlap_grad_reduce=overlap_grad_reduce,
        overlap_param_gather=overlap_param_gather,
        recompute=settings.recompute,
        recompute_method=recompute_method,
        recompute_num_layers=recompute_layers,
        bias_activation_fusion=_switch(settings, "bias_activation_fusion", True, gpu),
        rope_fusion=_switch(settings, "rope_fusion", True, gpu or te),
        cross_entropy_fusion=_switch(settings, "cross_entropy_fusion", True, gpu),
        gradient_accumulation_fusion=_switch(settings, "gradient_accumulation_fusion", True, wgrad),
    )


def resolve_for_run(train, parallel, world_size: int, num_layers: int,
                    no_sequence_parallel: Optional[str] = None) -> ScaleLayout:  # fmt: skip
    """:func:`resolve_scale` for a run's ``train`` settings (``train.scale``, ``train.distributed_optimizer``) and
    ``parallel`` layout over ``world_size`` processes (call after the layout checks: tp x pp divides it)."""
    dp = max(world_size // (parallel.tp * parallel.pp), 1)
    return resolve_scale(train.scale, parallel.tp, parallel.pp, dp, train.distributed_optimizer, num_layers,
                         no_sequence_parallel=no_sequence_parallel)  # fmt: skip


def without_recompute(scale: ScaleLayout) -> ScaleLayout:
    """``scale`` for a model that runs without gradients (a distillation teacher): nothing to recompute."""
    return dataclasses.replace(scale, recompute="none", recompute_method=None, recompute_num_layers=None)
