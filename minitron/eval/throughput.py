"""Prefill and decode throughput with a KV cache: minitron's engine and transformers, on the same prompts.

Both run greedy decoding of ``prompts`` ``[batch, prompt_len]`` for exactly ``output_len`` new tokens
(no stopping). Prefill is the prompt pass (which also yields the first new token); decode is the
``output_len - 1`` one-token steps after it. Tokens per second count every row of the batch:
prefill ``batch * prompt_len / seconds``, decode ``batch * (output_len - 1) / seconds``. Each figure
is the median of ``repeats`` runs after one untimed warm-up.
"""

from __future__ import annotations

import statistics
import time

import torch

from minitron.eval.generation import Sampling, Timing, generate_batch


def random_prompts(batch: int, prompt_len: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Token ids ``[batch, prompt_len]`` drawn uniformly from ``[0, vocab)``."""
    return torch.randint(0, vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(seed))


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median_rates(runs: list[tuple[float, float]], batch: int, prompt_len: int, output_len: int) -> dict:
    prefill = statistics.median(run[0] for run in runs)
    decode = statistics.median(run[1] for run in runs)
    return {
        "prefill_tokens_per_s": batch * prompt_len / prefill,
        "decode_tokens_per_s": batch * (output_len - 1) / decode if output_len > 1 else None,
        "prefill_seconds": prefill, "decode_seconds": decode,
    }  # fmt: skip


def megatron_throughput(model, prompts: torch.Tensor, output_len: int, repeats: int) -> dict:
    """Throughput of :func:`minitron.eval.generation.generate_batch` (call on every rank of the model)."""
    generate_batch(model, prompts, min(output_len, 2), Sampling())  # warm-up
    runs = []
    for _ in range(repeats):
        timing = Timing()
        generate_batch(model, prompts, output_len, Sampling(), timing=timing)
        runs.append((timing.prefill_seconds, timing.decode_seconds))
    return _median_rates(runs, *prompts.shape, output_len)


def hf_throughput(model_dir, prompts: torch.Tensor, output_len: int, repeats: int, dtype: torch.dtype) -> dict:
    """The same loop through ``transformers``: one prompt forward, then one-token steps on its KV cache."""
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    prompts = prompts.to(device)

    def run(new_tokens: int) -> tuple[float, float]:
        _sync()
        start = time.perf_counter()
        out = model(prompts, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        _sync()
        prefill = time.perf_counter() - start
        cache = out.past_key_values
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            out = model(token, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        _sync()
        return prefill, time.perf_counter() - start

    with torch.no_grad():
        run(min(output_len, 2))  # warm-up
        runs = [run(output_len) for _ in range(repeats)]
    return _median_rates(runs, *prompts.shape, output_len)
