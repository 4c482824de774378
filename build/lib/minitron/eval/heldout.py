"""Held-out loss: mean next-token cross-entropy over non-overlapping windows of a text.

Definition (shared by minitron's engine and the transformers reference, so they compare exactly):
the documents of ``data.path`` (:func:`minitron.data.documents.read_texts`), joined by blank lines, are tokenized
without special tokens, cut into consecutive windows of ``seq_length`` tokens (a final partial window
is dropped), and each window is scored from scratch: positions 0..L-2 predict tokens 1..L-1. The loss
is the mean over all predicted tokens; ``tokens`` counts them.

With a teacher (``eval.teacher``), the same predicted positions also give ``kl``, the mean per-token
KL(teacher || model) = sum_v q_v (log q_v - log p_v) of the next-token distributions (temperature 1,
natural log; computed on vocab-parallel logits by :func:`minitron.distill.losses.forward_kl`), and
``teacher_loss``, the teacher's held-out loss on those windows. Teacher and model must share the tokenizer.

Losses and KL are taken a chunk of tokens at a time (:func:`minitron.distill.vocab_parallel.token_chunks`), so
that their fp32 temporaries stay within a byte budget (1 GiB by default) on every device, whatever the
sequence length: beyond the logits themselves, nothing ``[tokens, vocabulary]``-sized is allocated.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Optional

import torch

from minitron.errors import MinitronError


def tokenize(texts: list[str], tokenizer) -> list[int]:
    """Token ids of the documents joined by blank lines, without special tokens."""
    return tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]


def make_windows(token_ids: list[int], seq_length: int, max_windows: Optional[int] = None) -> torch.Tensor:
    """Consecutive non-overlapping windows ``[num_windows, seq_length]`` (int64)."""
    count = len(token_ids) // seq_length
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise MinitronError(
            f"data.path holds {len(token_ids)} tokens, fewer than one window of eval.seq_length={seq_length}; "
            "use more text or a smaller eval.seq_length"
        )
    return torch.tensor(token_ids[: count * seq_length], dtype=torch.int64).view(count, seq_length)


def open_teacher(path, model, tokenizer, tp: int, pp: int, seq_length: int):
    """The ``ModelSource`` of ``eval.teacher=path``, checked against ``model`` (a ``ModelSource``) and its
    ``tokenizer``: the same vocabulary size and tokens, splits into ``tp`` x ``pp``, attends ``seq_length``.

    Every problem is one :class:`MinitronError` naming ``eval.teacher``.
    """
    from minitron.models.checkpoint import open_model
    from minitron.models.megatron_gpt import check_parallel_layout, check_sequence_length
    from minitron.models.tokenizer import vocabulary

    path = Path(path).expanduser()
    if not path.exists():
        raise MinitronError(f"eval.teacher={path}: no such file or directory")
    try:
        teacher = open_model(path)
        check_parallel_layout(teacher.arch, tp, pp, role="teacher")
        check_sequence_length(teacher.arch, "eval.seq_length", seq_length, role="teacher")
    except MinitronError as err:
        raise MinitronError(f"eval.teacher={path}: {str(err).replace(f'model.path={path}: ', '')}") from None
    fix = "KL(teacher || model) needs the model's tokenizer; pass a teacher of the same family (or unset eval.teacher)"
    if teacher.arch.vocab_size != model.arch.vocab_size:
        raise MinitronError(
            f"eval.teacher={path} has a vocabulary of {teacher.arch.vocab_size} tokens, model.path "
            f"{model.arch.vocab_size}: {fix}"
        )
    teacher_vocab = vocabulary(teacher.carried_files)
    if teacher_vocab is not None and teacher_vocab != tokenizer.get_vocab():
        raise MinitronError(
            f"eval.teacher={path} has another tokenizer than model.path (same size, other tokens): {fix}"
        )
    return teacher


def summarize(loss_sum: float, tokens: int) -> dict:
    loss = loss_sum / tokens
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "tokens": tokens}


LM_LOSS_TEMPORARIES = 1  # [tokens, vocab] temporaries of a cross-entropy chunk: its fp32 copy, worked on in place


def language_model_loss(model, labels: torch.Tensor, logits: torch.Tensor,
                        budget_bytes: Optional[int] = None) -> torch.Tensor:  # fmt: skip
    """Per-token loss ``[b, s]``: ``model``'s own (Megatron) cross-entropy of ``labels`` ``[b, s]`` under this TP
    rank's ``logits`` ``[b, s, v/tp]``, a chunk of tokens at a time within ``budget_bytes`` of temporaries
    (default :data:`~minitron.distill.vocab_parallel.TEMPORARIES_BUDGET_BYTES`). ``logits`` are not modified.

    Collective over the TP group: every TP rank of the last pipeline stage calls it.
    """
    from minitron.distill.vocab_parallel import TEMPORARIES_BUDGET_BYTES, token_chunks

    batch, seq, vocab = logits.shape
    tokens = logits.reshape(batch * seq, 1, vocab)  # [tokens, b=1, v/tp]: Megatron's [s, b, v] layout
    token_labels = labels.to(logits.device).reshape(1, batch * seq)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    loss = torch.empty(batch * seq, dtype=torch.float32, device=logits.device)
    budget = TEMPORARIES_BUDGET_BYTES if budget_bytes is None else budget_bytes
    for rows in token_chunks(batch * seq, vocab, LM_LOSS_TEMPORARIES, dtype.itemsize, budget):
        chunk = tokens[rows].to(dtype, copy=True)  # Megatron's cross-entropy shifts and exponentiates it in place
        loss[rows] = model.compute_language_model_loss(token_labels[:, rows], chunk).reshape(-1)
    return loss.view(batch, seq)


def _labels_and_mask(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.roll(windows, shifts=-1, dims=1)
    mask = torch.ones_like(windows, dtype=torch.float32)
    mask[:, -1] = 0.0  # the last position has no next token inside the window
    return labels, mask


def megatron_heldout_loss(model, windows: torch.Tensor, micro_batch_size: int, progress: bool = True,
                          teacher=None) -> dict:  # fmt: skip
    """Held-out loss of a sharded ``GPTModel`` at any TP/PP/DP (windows split over DP ranks).

    With ``teacher`` (a shard of the same layout and vocabulary) the result also holds ``kl`` and
    ``teacher_loss``; micro-batches then go through the teacher and the model one at a time.
    """
    from megatron.core import parallel_state
    from tqdm import tqdm

    from minitron.eval.forward import forward_only, forward_pair

    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    mine = windows[dp_rank::dp]
    batches = []
    for start in range(0, len(mine), micro_batch_size):
        chunk = mine[start : start + micro_batch_size]
        labels, mask = _labels_and_mask(chunk)
        batches.append({"tokens": chunk, "labels": labels, "mask": mask})
    device = next(model.parameters()).device
    # loss sum, tokens[, KL sum, teacher loss sum]; NCCL reduces device tensors only
    totals = torch.zeros(2 if teacher is None else 4, dtype=torch.float64, device=device)
    counts_here = parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0
    bar = tqdm(total=len(batches), desc="eval", unit="batch", disable=not (progress and torch.distributed.get_rank() == 0))

    def accumulate(batch, *per_token_values):
        if counts_here:
            mask = batch["mask"].to(per_token_values[0].device)
            for index, values in zip((0, 2, 3), per_token_values):
                totals[index] += float((values.float() * mask).sum())
            totals[1] += float(mask.sum())
        bar.update(1)

    def score(batch, logits):
        accumulate(batch, language_model_loss(model, batch["labels"], logits))

    if teacher is None:
        # batches differ in size only at the end: run full ones together, the remainder alone
        groups: dict[int, list] = {}
        for batch in batches:
            groups.setdefault(len(batch["tokens"]), []).append(batch)
        for size, group in groups.items():
            forward_only(model, group, len(group), windows.shape[1], size, score, with_labels=False)
    else:
        for batch in batches:
            forward_pair(model, teacher, batch, partial(_score_pair, model, teacher, accumulate))
    bar.close()
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    result = summarize(float(totals[0]), int(totals[1]))
    if teacher is not None:
        result.update(kl=float(totals[2]) / result["tokens"], teacher_loss=float(totals[3]) / result["tokens"])
    return result


def _score_pair(model, teacher, accumulate, batch: dict, logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    """Per-token loss, KL(teacher || model) and teacher loss ``[b, s]`` of one micro-batch's logits ``[b, s, v/tp]``.

    Every TP rank of the last stage runs this (the reductions are collective over the TP group). Each loss
    is the model's own Megatron cross-entropy (:func:`language_model_loss`), as without a teacher; the KL, last,
    overwrites the model's logits. All three go through the tokens in chunks within the temporaries budget.
    """
    from minitron.distill import losses, vocab_parallel

    loss = language_model_loss(model, batch["labels"], logits)
    teacher_loss = language_model_loss(teacher, batch["labels"], teacher_logits)
    kl = losses.forward_kl(logits, teacher_logits, 1.0, vocab_parallel.tp_group(), inplace=True)
    accumulate(batch, loss, kl, teacher_loss)


def hf_heldout_loss(model_dir, windows: torch.Tensor, micro_batch_size: int = 4) -> dict:
    """The same held-out loss computed by ``transformers`` (fp32, CPU): the reference."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    loss_sum, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(windows), micro_batch_size):
            chunk = windows[start : start + micro_batch_size]
            logits = model(chunk).logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum"
            )
            loss_sum += float(loss)
            tokens += chunk[:, 1:].numel()
    return summarize(loss_sum, tokens)
