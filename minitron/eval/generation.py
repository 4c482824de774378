"""Text generation on a sharded Megatron-Core ``GPTModel`` with a KV cache, at any TP x PP.

The cache is Megatron-Core's ``StaticInferenceContext``: each attention layer keeps its keys and values
``[max_seq, b, groups / tp, head_dim]``; the prompt ``[b, s]`` is one forward (causal), then every step
feeds the last token ``[b, 1]`` and attends to all cached positions. Only the last position's logits
``[b, vocab]`` are computed (gathered over TP by Megatron); the next token is chosen on the last
pipeline stage (identically on every TP rank) and broadcast to the other stages.

Rotary positions follow the cache offset, the same for every row, so a batch holds prompts of one
length: :func:`generate` groups prompts by length. Greedy decoding is the argmax of the fp32 logits
(the first index on a tie, as ``transformers``); sampling applies temperature, then top-k, then top-p,
and draws with a ``torch.Generator`` seeded from :attr:`Sampling.seed`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen."""

    do_sample: bool = False  # False: greedy (argmax)
    temperature: float = 1.0  # logits are divided by it before sampling (0 means greedy)
    top_k: int = 0  # keep the k likeliest tokens (0: all)
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches p (1: all)
    seed: int = 1234  # seed of the sampling generator

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0.0


def choose_next(logits: torch.Tensor, sampling: Sampling, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Next tokens ``[b]`` from fp32 logits ``[b, vocab]``."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    logits = logits / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= sampling.top_p  # mass before this token already >= p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)


@dataclass
class Timing:
    """Wall-clock seconds of the prompt passes and the decode steps of a :func:`generate` call."""

    prefill_seconds: float = 0.0
    prefill_tokens: int = 0
    decode_seconds: float = 0.0
    decode_tokens: int = 0

    def speeds(self) -> dict:
        """Tokens per second of the prompt passes and of the decode steps (None when there were none)."""
        return {
            "prefill_tokens_per_s": self.prefill_tokens / self.prefill_seconds if self.prefill_seconds else None,
            "decode_tokens_per_s": self.decode_tokens / self.decode_seconds if self.decode_seconds else None,
        }


def eos_token_ids(tokenizer, files_dir) -> list[int]:
    """The tokens that end a generation: the tokenizer's EOS and those of ``generation_config.json``."""
    import json
    from pathlib import Path

    ids = {tokenizer.eos_token_id} - {None}
    config = Path(files_dir) / "generation_config.json"
    if config.is_file():
        eos = json.loads(config.read_text()).get("eos_token_id")
        ids |= set(eos if isinstance(eos, list) else [eos]) - {None}
    return sorted(ids)


def _last_logits(model, tokens: torch.Tensor, context) -> Optional[torch.Tensor]:
    """Forward ``tokens`` ``[b, s]`` continuing the cached sequence; full-vocabulary last logits ``[b, vocab]``
    (fp32) on the last pipeline stage, None elsewhere."""
    from minitron.eval.forward import forward_only

    out = []

    def keep(batch, logits):  # [b, 1, vocab]: Megatron gathers inference logits over TP
        out.append(logits[:, -1].float())

    forward_only(model, [{"tokens": tokens}], 1, tokens.shape[1], tokens.shape[0], keep, with_labels=False,
                 inference_context=context)  # fmt: skip
    return out[0] if out else None


def _broadcast_from_last_stage(values: torch.Tensor) -> torch.Tensor:
    from megatron.core import parallel_state

    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        torch.distributed.broadcast(values, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                                    group=parallel_state.get_pipeline_model_parallel_group())  # fmt: skip
    return values


def generate_batch(model, prompts: torch.Tensor, max_new_tokens: int, sampling: Sampling, stopped=None,
                   generator: Optional[torch.Generator] = None, timing: Optional[Timing] = None) -> list[list[int]]:  # fmt: skip
    """Continue prompts ``[b, s]`` (one length) by up to ``max_new_tokens`` tokens each; returns the new tokens per row.

    ``stopped(row, tokens)`` says whether a row is finished after its latest token (which is kept); the
    loop ends when every row is finished. Call on every rank of the model-parallel group.
    """
    from megatron.core.inference.contexts import StaticInferenceContext

    device = next(model.parameters()).device
    batch, length = prompts.shape
    context = StaticInferenceContext(batch, length + max_new_tokens)
    tokens = prompts.to(device)
    new: list[list[int]] = [[] for _ in range(batch)]
    done = [False] * batch
    with torch.no_grad():
        for step in range(max_new_tokens):
            start = time.perf_counter()
            logits = _last_logits(model, tokens, context)
            chosen = torch.zeros(batch, dtype=torch.int64, device=device)
            if logits is not None:
                chosen = choose_next(logits, sampling, generator)
            chosen = _broadcast_from_last_stage(chosen)
            if timing is not None:
                if chosen.is_cuda:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                if step == 0:
                    timing.prefill_seconds += seconds
                    timing.prefill_tokens += tokens.numel()
                else:
                    timing.decode_seconds += seconds
                    timing.decode_tokens += tokens.numel()
            context.sequence_len_offset += tokens.shape[1]
            context.enable_decode_mode()
            for row, token in enumerate(chosen.tolist()):
                if not done[row]:
                    new[row].append(token)
                    done[row] = stopped is not None and stopped(row, new[row])
            if all(done):
                break
            tokens = chosen.view(batch, 1)
    return new


def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: Sampling, tokenizer=None,
             stop: Sequence[str] = (), eos_token_ids: Sequence[int] = (), batch_size: int = 8,
             timing: Optional[Timing] = None) -> list[list[int]]:  # fmt: skip
    """New tokens for each prompt (token lists of any lengths), in order; prompts of one length share batches.

    A row stops after an EOS token (dropped from its output) or once its decoded text contains one of
    ``stop`` (kept: the caller cuts the text), else after ``max_new_tokens``.
    """
    eos = {token for token in eos_token_ids if token is not None}

    def stopped(row: int, tokens: list[int]) -> bool:
        if tokens[-1] in eos:
            return True
        return bool(stop) and any(s in tokenizer.decode(tokens, skip_special_tokens=True) for s in stop if s)

    generator = None
    if not sampling.greedy:
        generator = torch.Generator().manual_seed(sampling.seed)
    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(index)
    outputs: list[list[int]] = [[] for _ in prompts]
    for length in sorted(by_length, reverse=True):
        indices = by_length[length]
        for start in range(0, len(indices), batch_size):
            rows = indices[start : start + batch_size]
            batch = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.int64)
            new = generate_batch(model, batch, max_new_tokens, sampling, stopped, generator, timing)
            for i, tokens in zip(rows, new):
                outputs[i] = tokens[:-1] if tokens and tokens[-1] in eos else tokens
    return outputs
