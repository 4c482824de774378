"""Schema of the scale settings (``train.scale``): what makes a large model fit and run fast on many devices.

One block, shared by every command that trains through :mod:`minitron.training.engine` (``minitron train``,
``minitron distill`` and the stages built on them), and read by ``minitron plan``. Each switch is ``auto``
(on where this device and build support it and it pays off, off on CPU), ``true`` (refused with one
``error:`` line where the device, the build or the layout cannot do it) or ``false``.
:func:`minitron.parallel.scale.resolve_scale` turns the block into what Megatron-Core is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from minitron.config.common import check_range
from minitron.errors import MinitronError

AUTO = "auto"
RECOMPUTE_GRANULARITIES = ("none", "selective", "full")  # none | Megatron's recompute_granularity values
RECOMPUTE_METHODS = ("uniform", "block")  # Megatron's recompute_method values
SWITCHES = ("sequence_parallel", "overlap_grad_reduce", "overlap_param_gather", "bias_activation_fusion",
            "rope_fusion", "cross_entropy_fusion", "gradient_accumulation_fusion")  # fmt: skip


@dataclass
class ScaleSettings:
    sequence_parallel: Any = AUTO  # split norm/residual activations over TP ranks along the sequence; needs parallel.tp>1 (auto: on with TP>1 on GPU)
    overlap_grad_reduce: Any = AUTO  # reduce(-scatter) gradients bucket by bucket during the backward pass (auto: on GPU with DP>1)
    overlap_param_gather: Any = AUTO  # all-gather the distributed optimizer's updated weights during the next forward; needs train.distributed_optimizer=true (auto: on GPU with DP>1)
    recompute: str = "none"  # activation recomputation: none | selective (the attention core) | full (keep each layer's input only, rerun it)
    recompute_method: str = "uniform"  # recompute=full: uniform (every layer, in groups of recompute_num_layers) | block (the first recompute_num_layers layers of each pipeline stage)
    recompute_num_layers: Optional[int] = None  # recompute=full: layers per group (uniform) or per stage (block); null: 1 (uniform), all (block)
    bias_activation_fusion: Any = AUTO  # fused SwiGLU, Megatron's compiled GPU kernel (auto: on GPU)
    rope_fusion: Any = AUTO  # fused rotary embedding, Transformer Engine's kernel (auto: on GPU with TE)
    cross_entropy_fusion: Any = AUTO  # Megatron's fused vocab-parallel cross-entropy, a compiled GPU kernel, same values to fp32 rounding (auto: on GPU)
    gradient_accumulation_fusion: Any = AUTO  # weight gradients accumulated into fp32 main_grad inside the GEMM: TE or Apex's fused_weight_gradient_mlp_cuda (auto: where present)

    def __post_init__(self):
        for name in SWITCHES:
            value = getattr(self, name)
            if value != AUTO and not isinstance(value, bool):
                raise MinitronError(f"train.scale.{name}={value}: use auto, true or false")
        if self.recompute not in RECOMPUTE_GRANULARITIES:
            raise MinitronError(f"train.scale.recompute={self.recompute}: use one of {', '.join(RECOMPUTE_GRANULARITIES)}")
        if self.recompute_method not in RECOMPUTE_METHODS:
            raise MinitronError(
                f"train.scale.recompute_method={self.recompute_method}: use one of {', '.join(RECOMPUTE_METHODS)}"
            )
        check_range("train.scale.recompute_num_layers", self.recompute_num_layers, at_least=1)
        if self.recompute_num_layers is not None and self.recompute != "full":
            raise MinitronError(
                f"train.scale.recompute_num_layers={self.recompute_num_layers} applies to full recomputation only; "
                "add train.scale.recompute=full or drop it"
            )
