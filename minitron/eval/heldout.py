"""Held-out loss: mean next-token cross-entropy over non-overlapping windows of a text.

Definition (shared by minitron's engine and the transformers reference, so they compare exactly):
the text (a .txt file, or the ``text`` fields of a .jsonl file joined by blank lines) is tokenized
without special tokens, cut into consecutive windows of ``seq_length`` tokens (a final partial window
is dropped), and each window is scored from scratch: positions 0..L-2 predict tokens 1..L-1. The loss
is the mean over all predicted tokens; ``tokens`` counts them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import torch

from minitron.errors import MinitronError


def read_texts(path, text_field: str = "text") -> list[str]:
    """Documents of a .txt (one document) or .jsonl (one per line, field ``text_field``) file."""
    if path is None:
        raise MinitronError("data.path is required: pass data.path=FILE (.txt or .jsonl)")
    path = Path(path)
    if not path.is_file():
        raise MinitronError(f"data.path={path}: no such file")
    if path.suffix == ".jsonl":
        texts = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    texts.append(json.loads(line)[text_field])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise MinitronError(
                        f"data.path={path}: line {number} is not a JSON object with a {text_field!r} field "
                        f"(set data.text_field= to the field that holds the text)"
                    ) from None
    else:
        texts = [path.read_text(encoding="utf-8", errors="replace")]
    if not any(t.strip() for t in texts):
        raise MinitronError(f"data.path={path}: holds no text")
    return texts


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


def summarize(loss_sum: float, tokens: int) -> dict:
    loss = loss_sum / tokens
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "tokens": tokens}


def _labels_and_mask(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.roll(windows, shifts=-1, dims=1)
    mask = torch.ones_like(windows, dtype=torch.float32)
    mask[:, -1] = 0.0  # the last position has no next token inside the window
    return labels, mask


def megatron_heldout_loss(model, windows: torch.Tensor, micro_batch_size: int, progress: bool = True) -> dict:
    """Held-out loss of a sharded ``GPTModel`` at any TP/PP/DP (windows split over DP ranks)."""
    from megatron.core import parallel_state
    from tqdm import tqdm

    from minitron.eval.forward import forward_only

    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    mine = windows[dp_rank::dp]
    batches = []
    for start in range(0, len(mine), micro_batch_size):
        chunk = mine[start : start + micro_batch_size]
        labels, mask = _labels_and_mask(chunk)
        batches.append({"tokens": chunk, "labels": labels, "mask": mask})
    device = next(model.parameters()).device
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # NCCL reduces device tensors only
    counts_here = parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0
    bar = tqdm(total=len(batches), desc="eval", unit="batch", disable=not (progress and torch.distributed.get_rank() == 0))

    def accumulate(batch, per_token_loss):
        if counts_here:
            mask = batch["mask"].to(per_token_loss.device)
            totals[0] += float((per_token_loss.float() * mask).sum())
            totals[1] += float(mask.sum())
        bar.update(1)

    # batches differ in size only at the end: run full ones together, the remainder alone
    groups: dict[int, list] = {}
    for batch in batches:
        groups.setdefault(len(batch["tokens"]), []).append(batch)
    for size, group in groups.items():
        forward_only(model, group, len(group), windows.shape[1], size, accumulate, with_labels=True)
    bar.close()
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    return summarize(float(totals[0]), int(totals[1]))


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
