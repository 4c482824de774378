"""Rung (b) of the architecture search: a candidate pruned in memory from the saved importance scores, scored.

The student is what ``minitron prune`` with the candidate's explicit targets would write, without the disk:
:func:`~minitron.prune.plan.plan_pruning` picks the kept units from the scores, :func:`~minitron.prune.surgery.
pruned_tensors` slices the source's Hugging Face tensors (read from its safetensors, ``[out, in]`` layouts as
documented there), and the sliced tensors go straight into a Megatron ``GPTModel`` shard of the student's
architecture (:func:`~minitron.models.checkpoint.load_hf_tensors`), at the run's TP/PP. Nothing is written.

The score is the LM loss (mean next-token cross-entropy, :func:`~minitron.eval.heldout.megatron_heldout_loss`)
on the calibration windows ``[num_windows, seq_length]``. A speedup budget is measured here too: the
generation time (prefill + decode, :func:`~minitron.eval.throughput.megatron_throughput`) of the candidate and of
the teacher on the same random prompts, on this device.
"""

from __future__ import annotations

import time

import torch

from minitron.config.prune import BudgetTarget, PruneTargets
from minitron.eval.heldout import megatron_heldout_loss
from minitron.eval.throughput import megatron_throughput, random_prompts
from minitron.models.checkpoint import ModelSource, load_hf_tensors
from minitron.models.megatron_gpt import build_gpt_model
from minitron.prune.plan import PrunePlan, plan_pruning
from minitron.prune.scores import ImportanceScores
from minitron.prune.surgery import pruned_tensors


def prune_in_memory(source: ModelSource, scores: ImportanceScores, targets: PruneTargets, tp: int, pp: int,
                    dtype: torch.dtype) -> tuple[torch.nn.Module, PrunePlan]:  # fmt: skip
    """This rank's shard of the student ``targets`` give (eval mode), and its plan; peak memory is the student
    plus its full tensors (held once, as they are sliced)."""
    plan = plan_pruning(source.arch, scores, targets, tp=tp)
    tensors = dict(pruned_tensors(source, plan))
    model = build_gpt_model(plan.student, tp, pp, dtype, initialize=False)
    load_hf_tensors(model, plan.student, tensors.__getitem__, f"the in-memory student {plan.student.num_layers} layers")
    return model.eval(), plan


def lm_loss(model, windows: torch.Tensor, micro_batch_size: int) -> float:
    """Mean next-token loss of ``model`` on ``windows`` ``[n, seq]`` (every rank calls it)."""
    with torch.no_grad():
        return megatron_heldout_loss(model, windows, micro_batch_size, progress=False)["loss"]


def generation_seconds(model, vocab_size: int, budget: BudgetTarget) -> float:
    """Median prefill + decode seconds of greedy generation of ``budget.bench_*`` shapes (after a warm-up)."""
    prompts = random_prompts(budget.bench_batch_size, budget.bench_prompt_length, vocab_size)
    rates = megatron_throughput(model, prompts, budget.bench_output_length, budget.bench_repeats)
    return rates["prefill_seconds"] + rates["decode_seconds"]


def score_candidate(source: ModelSource, scores: ImportanceScores, targets: PruneTargets, windows: torch.Tensor,
                    micro_batch_size: int, tp: int, pp: int, dtype: torch.dtype,
                    bench: BudgetTarget | None = None) -> dict:  # fmt: skip
    """Rung (b) of one candidate: ``{"loss", "seconds"}`` (wall time of pruning + scoring), and with ``bench``
    (the budget's ``bench_*`` shapes) ``"generation_seconds"``."""
    start = time.perf_counter()
    model, _ = prune_in_memory(source, scores, targets, tp, pp, dtype)
    result = {"loss": lm_loss(model, windows, micro_batch_size)}
    result["seconds"] = time.perf_counter() - start
    if bench is not None:
        result["generation_seconds"] = generation_seconds(model, source.arch.vocab_size, bench)
    del model
    return result
