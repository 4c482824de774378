"""Forward passes through a sharded ``GPTModel`` with Megatron-Core's pipeline schedules.

The same call runs at any TP/PP: Megatron's ``get_forward_backward_func`` moves activations between
pipeline stages; the results appear on the last stage, where ``on_output`` is called per micro-batch.
:func:`run_schedule` is minitron's one call into that schedule (training steps run through it too).
:func:`forward_pair` runs a teacher and a model (same layout) on one micro-batch, one after the other.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

import torch

# on_output(micro_batch, output) with output = logits [b, s, vocab/tp] or per-token loss [b, s]
OutputHook = Callable[[dict, torch.Tensor], None]
# on_output(micro_batch, logits, teacher_logits), both [b, s, vocab/tp]
PairHook = Callable[[dict, torch.Tensor, torch.Tensor], None]


def _position_ids(tokens: torch.Tensor) -> torch.Tensor:
    return torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0).expand_as(tokens)


def run_schedule(model, micro_batches: Iterator[dict], num_micro_batches: int, seq_length: int,
                 micro_batch_size: int, forward_step: Callable, forward_only: bool,
                 adjust_tensor_shapes: Optional[Callable] = None) -> list:  # fmt: skip
    """Megatron-Core's pipeline schedule of the current layout over ``num_micro_batches`` micro-batches.

    ``forward_step(data_iterator, model) -> (output, loss_func)`` runs each one; returns what the loss
    function returned per micro-batch (on the last pipeline stage; empty elsewhere). With ``forward_only``
    nothing is backpropagated. ``adjust_tensor_shapes(recv_shapes, send_shapes)``: other shapes between
    stages (PP > 1 only)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    extra = {"adjust_tensor_shapes_fn": adjust_tensor_shapes} if adjust_tensor_shapes else {}
    return get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=micro_batches,
        model=[model],
        num_microbatches=num_micro_batches,
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=forward_only,
        **extra,
    )


def forward_only(
    model,
    micro_batches: Iterable[dict],
    num_micro_batches: int,
    seq_length: int,
    micro_batch_size: int,
    on_output: OutputHook,
    with_labels: bool,
    inference_context=None,
) -> None:
    """Run ``num_micro_batches`` micro-batches ``{"tokens": [b, s], "labels": [b, s]?}`` forward.

    With ``with_labels`` the model returns the per-token cross-entropy ``[b, s]`` (vocab-parallel,
    never gathering the vocabulary); otherwise this TP rank's logits ``[b, s, vocab / tp]``. With an
    ``inference_context`` (Megatron's KV cache, see :mod:`minitron.eval.generation`) the tokens continue
    the cached sequence and only the last position's logits come out, gathered over TP: ``[b, 1, vocab]``.
    """
    device = next(model.parameters()).device

    def forward_step(data_iterator, step_model):
        batch = next(data_iterator)
        tokens = batch["tokens"].to(device)
        labels = batch["labels"].to(device) if with_labels else None
        if inference_context is None:
            output = step_model(tokens, _position_ids(tokens), None, labels=labels)
        else:
            positions = _position_ids(tokens) + inference_context.sequence_len_offset
            output = step_model(tokens, positions, None, labels=labels, inference_context=inference_context,
                                runtime_gather_output=True)  # fmt: skip

        def collect(output_tensor):
            on_output(batch, output_tensor)
            return output_tensor.new_zeros(()), {}

        return output, collect

    with torch.no_grad():
        run_schedule(model, iter(micro_batches), num_micro_batches, seq_length, micro_batch_size, forward_step,
                     forward_only=True)  # fmt: skip


def forward_pair(model, teacher, micro_batch: dict, on_output: PairHook) -> None:
    """One micro-batch ``{"tokens": [b, s], ...}`` through ``teacher``, then through ``model``.

    Both are shards of the same TP x PP layout; each runs its own pipeline schedule (their hidden sizes
    may differ). On the last stage ``on_output(micro_batch, logits, teacher_logits)`` gets this TP rank's
    logits ``[b, s, vocab / tp]`` of both; only this micro-batch's teacher logits are held meanwhile.
    """
    tokens = micro_batch["tokens"]
    held = []

    def keep(batch, teacher_logits):
        held.append(teacher_logits)

    def pair(batch, logits):
        on_output(batch, logits, held.pop())

    seq_length, batch_size = tokens.shape[1], tokens.shape[0]
    forward_only(teacher, [micro_batch], 1, seq_length, batch_size, keep, with_labels=False)
    forward_only(model, [micro_batch], 1, seq_length, batch_size, pair, with_labels=False)


def full_logits(model, tokens: torch.Tensor) -> Optional[torch.Tensor]:
    """Logits ``[b, s, vocab]`` (gathered over TP) for one batch; None on ranks other than the last stage."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    collected = []

    def keep(batch, logits):
        collected.append(gather_from_tensor_model_parallel_region(logits).float().cpu())

    forward_only(model, [{"tokens": tokens}], 1, tokens.shape[1], tokens.shape[0], keep, with_labels=False)
    if not parallel_state.is_pipeline_last_stage():
        return None
    return collected[0]
