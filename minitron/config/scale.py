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
    # Split the activations outside the matmuls (norms, residuals) over the TP ranks along the sequence
    # (Korthikanti et al. 2022): activation memory / tp; needs parallel.tp > 1. auto: on with TP > 1 on GPU.
    sequence_parallel: Any = AUTO
    # Reduce (reduce-scatter with the distributed optimizer) gradients bucket by bucket during the backward
    # pass instead of after it. auto: on GPU with data parallelism.
    overlap_grad_reduce: Any = AUTO
    # All-gather the distributed optimizer's updated weights bucket by bucket during the next forward pass;
    # needs train.distributed_optimizer=true. auto: on GPU with data parallelism and the distributed optimizer.
    overlap_param_gather: Any = AUTO
    # Activation recomputation: none | selective (the attention core: scores and softmax are recomputed in
    # the backward pass) | full (only each recomputed layer's input is kept; the layer runs forward twice).
    recompute: str = "none"
    # recompute=full: uniform (every layer, in groups of recompute_num_layers) | block (only the first
    # recompute_num_layers layers of each pipeline stage; the others keep their activations).
    recompute_method: str = "uniform"
    # recompute=full: layers per group (uniform) or recomputed layers per pipeline stage (block);
    # null: 1 (uniform) or every layer of the stage (block).
    recompute_num_layers: Optional[int] = None
    # Fused SwiGLU of the MLP (Megatron's compiled GPU kernel). auto: on GPU.
    bias_activation_fusion: Any = AUTO
    # Fused rotary embedding (Transformer Engine's kernel). auto: on GPU with Transformer Engine.
    rope_fusion: Any = AUTO
    # Megatron's fused vocab-parallel cross-entropy for the language-model loss (compiled GPU kernel; same
    # values to fp32 rounding). auto: on GPU.
    cross_entropy_fusion: Any = AUTO
    # Accumulate weight gradients into the fp32 main_grad inside the weight-gradient GEMM (Transformer
    # Engine's linear layers or Apex's fused_weight_gradient_mlp_cuda). auto: on where present (GPU).
    gradient_accumulation_fusion: Any = AUTO

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
