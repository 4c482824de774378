"""One optimizer step, and a validation pass, through Megatron-Core's pipeline schedules.

A micro-batch is a dict of ``[micro_batch, seq]`` tensors: ``tokens`` (input ids), ``labels`` (next
tokens), ``loss_mask`` (1.0 where the label counts) and ``position_ids``, and for packed SFT examples
``attention_mask`` ``[micro_batch, 1, seq, seq]`` (True = masked). ``get_forward_backward_func``
runs ``num_micro_batches`` of them through this rank's stage (no pipelining at PP=1, 1F1B at PP>1);
the last stage computes the vocab-parallel cross-entropy ``[b, s]`` and returns its masked sum and token
count, which the schedule accumulates and ``finalize_model_grads`` turns into a per-token mean.

Losses are reduced over the whole world (only last-stage, TP-rank-0 processes contribute) so every rank,
rank 0 included, sees the global loss of the step.

What runs per micro-batch is a :class:`StepFunctions` (default: the language model on its labels);
distillation (:mod:`minitron.distill.model`) passes its own, which runs teacher and student together.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Callable, Iterator, Optional

import torch

from minitron.eval.forward import run_schedule


@dataclasses.dataclass
class StepResult:
    loss: float  # mean cross-entropy over the global batch's counted tokens
    tokens: int  # counted (loss-mask) tokens in the global batch
    grad_norm: Optional[float]  # global gradient L2 norm before clipping
    lr: float  # learning rate used for this update
    skipped: bool  # the update was skipped (fp16 overflow)
    extras: dict = dataclasses.field(default_factory=dict)  # other reported per-token means (StepFunctions.report_keys)


def _loss_func(loss_mask: torch.Tensor, per_token_loss: torch.Tensor):
    """Masked loss sum, token count, and the pair ``[sum, count]`` for reporting."""
    mask = loss_mask.to(per_token_loss.device, torch.float32)
    loss_sum = (per_token_loss.float() * mask).sum()
    num_tokens = mask.sum().to(torch.int)
    return loss_sum, num_tokens, {"loss": torch.stack([loss_sum.detach(), mask.sum()])}


def forward_step(data_iterator, model):
    """Megatron ``forward_step_func``: run one micro-batch, return the output and its loss function."""
    batch = next(data_iterator)
    device = next(model.parameters()).device
    tokens = batch["tokens"].to(device, non_blocking=True)
    position_ids = batch["position_ids"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    attention_mask = batch.get("attention_mask")  # [b, 1, s, s] bool, True = masked: packed SFT examples
    if attention_mask is not None:
        attention_mask = attention_mask.to(device, non_blocking=True)
    output = model(tokens, position_ids, attention_mask, labels=labels)  # [b, s] loss on the last stage, hidden elsewhere
    return output, partial(_loss_func, batch["loss_mask"])


@dataclasses.dataclass(frozen=True)
class StepFunctions:
    """What the pipeline schedule runs for each micro-batch, and what its loss function reports."""

    forward_step: Callable = forward_step  # Megatron forward_step_func(data_iterator, model) -> (output, loss_func)
    adjust_tensor_shapes: Optional[Callable] = None  # (recv_shapes, send_shapes) -> new ones; PP>1 only
    report_keys: tuple = ("loss",)  # the loss function's reports, each [sum, tokens]; "loss" first
    sequences_per_sample: int = 1  # sequences in one sample (2 for a preference pair): tokens/s counts them all


def _global_means(outputs: list, keys: tuple = ("loss",)) -> tuple[dict, int]:
    """Sum each reported ``[sum, tokens]`` of this rank's micro-batches over the world: (key -> mean, tokens)."""
    from megatron.core import parallel_state

    totals = torch.zeros(len(keys), 2, dtype=torch.float64)
    if parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0:
        for output in outputs:
            for row, key in enumerate(keys):
                totals[row] += output[key].detach().to("cpu", torch.float64)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        device = "cuda" if torch.cuda.is_available() else "cpu"  # NCCL reduces CUDA tensors only
        totals = totals.to(device)
        torch.distributed.all_reduce(totals)
        totals = totals.cpu()
    means = {key: float(totals[row, 0]) / max(int(totals[row, 1]), 1) for row, key in enumerate(keys)}
    return means, int(totals[0, 1])


def _global_loss(outputs: list) -> tuple[float, int]:
    """Sum the reported ``[loss_sum, tokens]`` of this rank's micro-batches over the world."""
    means, tokens = _global_means(outputs)
    return means["loss"], tokens


def train_step(parts, batches: Iterator[dict], num_micro_batches: int, seq_length: int,
               micro_batch_size: int, functions: Optional[StepFunctions] = None) -> StepResult:  # fmt: skip
    """Forward/backward over one global batch (this rank's ``num_micro_batches``), then one update."""
    from megatron.core.optimizer_param_scheduler import get_canonical_lr_for_logging

    functions = functions or StepFunctions()
    parts.model.train()
    parts.model.zero_grad_buffer()
    parts.optimizer.zero_grad()
    outputs = run_schedule(parts.model, batches, num_micro_batches, seq_length, micro_batch_size,
                           functions.forward_step, False, functions.adjust_tensor_shapes)  # fmt: skip
    lr = get_canonical_lr_for_logging(parts.optimizer.param_groups)
    update_successful, grad_norm, _ = parts.optimizer.step()
    if update_successful:
        parts.scheduler.step(increment=1)
    means, tokens = _global_means(outputs, functions.report_keys)
    return StepResult(
        loss=means.pop("loss"),
        tokens=tokens,
        grad_norm=None if grad_norm is None else float(grad_norm),
        lr=float(lr if lr is not None else parts.optimizer.param_groups[0]["lr"]),
        skipped=not update_successful,
        extras=means,
    )


def evaluate(model, batches: Iterator[dict], num_batches: int, num_micro_batches: int, seq_length: int,
             micro_batch_size: int, functions: Optional[StepFunctions] = None) -> tuple[float, int]:  # fmt: skip
    """Mean loss over ``num_batches`` global batches of validation data (forward only)."""
    functions = functions or StepFunctions()
    model.eval()
    outputs = []
    with torch.no_grad():
        for _ in range(num_batches):
            outputs += run_schedule(model, batches, num_micro_batches, seq_length, micro_batch_size,
                                    functions.forward_step, True, functions.adjust_tensor_shapes)  # fmt: skip
    model.train()
    return _global_loss(outputs)
