"""Assemble what a training run steps: the wrapped model, the optimizer and the learning-rate schedule.

    GPTModel shard (fp32 on CPU; bf16 inside Float16Module on GPU)
      -> megatron.core DistributedDataParallel: gradients land in one contiguous fp32 buffer per dtype
         (``param.main_grad``) and are reduced over data-parallel ranks by ``finalize_model_grads``
      -> get_megatron_optimizer: Adam (torch AdamW without Apex/TE), gradient clipping, fp32 main weights
         for bf16/fp16 params, optionally the distributed optimizer (state sharded over DP ranks)
      -> OptimizerParamScheduler: linear warm-up from 0, then cosine / linear / constant decay

The loss is normalised per token over the whole global batch (``calculate_per_token_loss``): each
micro-batch returns its summed loss and token count, and ``finalize_model_grads`` divides the reduced
gradients by the global token count, so any TP x PP x DP split of the same batch gives the same update.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from minitron.config.training import TrainSettings
from minitron.parallel.scale import ScaleLayout


@dataclasses.dataclass
class TrainingParts:
    """What the loop steps and what a checkpoint holds."""

    model: torch.nn.Module  # DistributedDataParallel(Float16Module?(GPTModel)): what the schedules run
    optimizer: object  # megatron.core MegatronOptimizer (a ChainedOptimizer of one)
    scheduler: object  # megatron.core OptimizerParamScheduler
    distributed_optimizer: bool  # optimizer state sharded over data-parallel ranks

    @property
    def module(self):
        """The bare ``GPTModel`` shard (for ``sharded_state_dict`` and export)."""
        return unwrap(self.model)


def unwrap(model):
    """The ``GPTModel`` inside DDP / Float16Module wrappers."""
    from megatron.core.utils import unwrap_model

    return unwrap_model(model)


def wrap_model(model, distributed_optimizer: bool, scale: Optional[ScaleLayout] = None):
    """Wrap a ``GPTModel`` shard for training: Float16Module for bf16/fp16 params, then Megatron DDP, which
    overlaps the gradient reduction and the parameter all-gather with compute as ``scale`` says."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.transformer.module import Float16Module

    config = model.config
    config.calculate_per_token_loss = True  # read by DDP (no 1/DP pre-scaling) and the schedules
    if config.bf16 or config.fp16:
        model = Float16Module(config, model)
    scale = scale or ScaleLayout()
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, use_distributed_optimizer=distributed_optimizer,
        overlap_grad_reduce=scale.overlap_grad_reduce, overlap_param_gather=scale.overlap_param_gather,
    )  # fmt: skip
    model = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)
    config.no_sync_func = model.no_sync  # no reduction until the last micro-batch
    config.finalize_model_grads_func = finalize_model_grads  # reduce over DP, tied embeddings over PP, 1/tokens
    return model


def build_optimizer(model, settings: TrainSettings):
    """Megatron's Adam over the wrapped ``model`` with the peak LR, clipping and weight decay of ``settings``."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    config = model.config if hasattr(model, "config") else unwrap(model).config
    params_dtype = next(model.parameters()).dtype
    optimizer_config = OptimizerConfig(
        optimizer="adam",
        lr=settings.lr,
        min_lr=settings.min_lr,
        weight_decay=settings.weight_decay,
        adam_beta1=settings.adam_beta1,
        adam_beta2=settings.adam_beta2,
        adam_eps=settings.adam_eps,
        clip_grad=settings.clip_grad,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        params_dtype=params_dtype,
        use_distributed_optimizer=settings.distributed_optimizer,
    )
    optimizer = get_megatron_optimizer(optimizer_config, [model])
    if params_dtype == torch.float16:
        config.grad_scale_func = optimizer.scale_loss  # dynamic loss scaling
    return optimizer


def build_scheduler(optimizer, settings: TrainSettings):
    """Warm-up from 0 to ``lr`` over ``warmup_steps``, then decay to ``min_lr`` at ``decay_steps``.

    On resume only the step count comes from the checkpoint: the schedule is the one configured now.
    """
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=settings.lr,
        min_lr=settings.min_lr,
        lr_warmup_steps=settings.warmup_steps,
        lr_decay_steps=settings.total_decay_steps,
        lr_decay_style=settings.decay_style,
        start_wd=settings.weight_decay,
        end_wd=settings.weight_decay,
        wd_incr_steps=settings.steps,
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=False,
        override_opt_param_scheduler=True,
    )


def gather_params(model) -> None:
    """With overlapped parameter gathering, the weights an optimizer step updated on other data-parallel ranks
    arrive only in the next forward pass: gather them now (before a checkpoint or an export reads them)."""
    if getattr(model, "ddp_config", None) is not None and model.ddp_config.overlap_param_gather:
        model.start_param_sync(force_sync=True)


def build_training_parts(model, settings: TrainSettings, scale: Optional[ScaleLayout] = None) -> TrainingParts:
    """Wrap a loaded ``GPTModel`` shard (built with the same ``scale``) and build its optimizer and schedule."""
    wrapped = wrap_model(model, settings.distributed_optimizer, scale)
    optimizer = build_optimizer(wrapped, settings)
    scheduler = build_scheduler(optimizer, settings)
    return TrainingParts(wrapped, optimizer, scheduler, settings.distributed_optimizer)
