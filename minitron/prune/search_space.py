"""The architecture search space and its analytic rung: every candidate's exact size, memory and FLOPs.

A candidate is a homogeneous student shape ``(hidden_size, ffn_hidden_size, num_attention_heads,
num_query_groups, num_layers)``; heads are counted per query group (``heads = groups x heads_per_group``, so
grouped-query attention stays regular and heads are pruned within their groups, as
:func:`minitron.prune.plan.plan_pruning` does). Each axis takes the source size minus multiples of its divisor,
down to ``(1 - max pruning fraction)`` of the source (:func:`axis_choices`); the space is the product of the
axes (:func:`enumerate_candidates`), less the shapes Hugging Face refuses (hidden not a multiple of the heads)
and those that do not split at ``parallel.tp``.

The analytic rung builds no model: parameters come from :class:`~minitron.models.arch.ModelArch`'s counts
(the same formulas ``minitron info`` prints, checked against built models in the tests), memory is bf16
weights plus a bf16 KV cache (2 bytes x 2 (K and V) x layers x groups x head_dim x batch x tokens), FLOPs per
token are :meth:`ModelArch.flops_per_token` at ``memory_seq_length``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Optional

from minitron.config.prune import BudgetTarget, PruneTargets, SearchSettings
from minitron.errors import MinitronError
from minitron.models.arch import ModelArch

BYTES_BF16 = 2
AXES = ("hidden_size", "ffn_hidden_size", "heads_per_group", "num_query_groups", "num_layers")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One student shape and its analytic figures (no model built)."""

    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    num_layers: int
    params: int  # total parameters (embeddings and an untied LM head included)
    non_embedding_params: int  # params - embedding table - untied LM head
    memory_gb: float  # bf16 weights + bf16 KV cache (BudgetTarget.memory_batch_size x memory_seq_length), 1e9 bytes
    flops_per_token: int  # forward FLOPs per token at memory_seq_length

    @property
    def name(self) -> str:
        """``L30-h576-f1536-a9g3``: layers, hidden, FFN, heads and query groups."""
        return (f"L{self.num_layers}-h{self.hidden_size}-f{self.ffn_hidden_size}-"
                f"a{self.num_attention_heads}g{self.num_query_groups}")  # fmt: skip

    def shape(self) -> dict:
        return {axis: getattr(self, axis) for axis in
                ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups")}  # fmt: skip

    def targets(self, base: PruneTargets) -> PruneTargets:
        """The explicit targets ``minitron prune`` takes for this shape (depth metric and ranking from ``base``)."""
        return dataclasses.replace(base, drop_layers=None, **self.shape())

    def metric(self, name: str, source: "Candidate") -> float:
        """The value of budget metric ``name``; speedup is estimated here as the source's FLOPs over this one's."""
        if name == "speedup":
            return source.flops_per_token / self.flops_per_token
        return getattr(self, name)


def axis_choices(source_size: int, divisor: int, max_pruning: float, field: str) -> list[int]:
    """``source_size - k x divisor`` for k = 0, 1, ... while at least ``(1 - max_pruning) x source_size`` and >= 1,
    largest first. The divisor must divide the source size, so that every choice is a multiple of it."""
    if source_size % divisor:
        divisors = [d for d in range(2, source_size + 1) if source_size % d == 0][:8]
        raise MinitronError(
            f"prune.search.{field}_divisor={divisor} does not divide the model's {field}={source_size}; "
            f"use a divisor of {source_size} (e.g. {', '.join(map(str, divisors)) or 1})"
        )
    lowest = max(1, math.ceil((1.0 - max_pruning) * source_size - 1e-9))
    return list(range(source_size, lowest - 1, -divisor))


def space_axes(arch: ModelArch, search: SearchSettings) -> dict[str, list[int]]:
    """Choices of each axis (:data:`AXES`), largest first."""
    heads_per_group = arch.num_attention_heads // arch.num_query_groups
    return {
        "hidden_size": axis_choices(arch.hidden_size, search.hidden_size_divisor, search.max_width_pruning, "hidden_size"),
        "ffn_hidden_size": axis_choices(arch.ffn_hidden_size, search.ffn_hidden_size_divisor, search.max_width_pruning,
                                        "ffn_hidden_size"),
        "heads_per_group": axis_choices(heads_per_group, search.heads_per_group_divisor, search.max_width_pruning,
                                        "heads_per_group"),
        "num_query_groups": axis_choices(arch.num_query_groups, search.num_query_groups_divisor,
                                         search.max_query_groups_pruning, "num_query_groups"),
        "num_layers": axis_choices(arch.num_layers, search.num_layers_divisor, search.max_depth_pruning, "num_layers"),
    }  # fmt: skip


def shape_is_valid(hidden: int, ffn: int, heads: int, groups: int, tp: int) -> bool:
    """Hugging Face needs hidden a multiple of the heads; TP must split heads, groups and the FFN."""
    return hidden % heads == 0 and heads % tp == 0 and groups % tp == 0 and ffn % tp == 0


def analyse(arch: ModelArch, hidden: int, ffn: int, heads: int, groups: int, layers: int,
            budget: BudgetTarget) -> Candidate:  # fmt: skip
    """The :class:`Candidate` of one shape: exact counts from the student's :class:`ModelArch`."""
    student = dataclasses.replace(arch, hidden_size=hidden, ffn_hidden_size=ffn, num_attention_heads=heads,
                                  num_query_groups=groups, num_layers=layers)  # fmt: skip
    kv_cache = 2 * layers * groups * arch.head_dim * budget.memory_batch_size * budget.memory_seq_length
    memory = BYTES_BF16 * (student.params + kv_cache) / 1e9
    flops = student.flops_per_token(budget.memory_seq_length)["forward"]
    return Candidate(hidden, ffn, heads, groups, layers, student.params, student.non_embedding_params, memory, flops)


def source_candidate(arch: ModelArch, budget: BudgetTarget) -> Candidate:
    """The unpruned model as a candidate (the reference of speedups and of "budget larger than the model")."""
    return analyse(arch, arch.hidden_size, arch.ffn_hidden_size, arch.num_attention_heads, arch.num_query_groups,
                   arch.num_layers, budget)  # fmt: skip


def enumerate_candidates(arch: ModelArch, search: SearchSettings, budget: BudgetTarget, tp: int = 1) -> list[Candidate]:
    """Every valid shape of the space (in the product order of :func:`space_axes`), with its analytic figures."""
    axes = space_axes(arch, search)
    candidates = []
    for hidden, ffn, per_group, groups, layers in itertools.product(*(axes[a] for a in AXES)):
        heads = per_group * groups
        if shape_is_valid(hidden, ffn, heads, groups, tp):
            candidates.append(analyse(arch, hidden, ffn, heads, groups, layers, budget))
    return candidates


def bounds(metric: str, value: float, tolerance: float) -> tuple[float, float]:
    """Accepted ``[low, high]`` of a metric: size budgets ``[(1 - tol) B, B]``, speedup ``[(1 - tol) S, inf)``."""
    if metric == "speedup":
        return (1.0 - tolerance) * value, math.inf
    return (1.0 - tolerance) * value, value


def feasible(candidates: list[Candidate], source: Candidate, budget: BudgetTarget) -> list[Candidate]:
    """Candidates within the budget, ordered by the budget's metric closest to it first (largest model first);
    ties broken by the shape (wider first, then deeper)."""
    metric, value = budget.primary()
    low, high = bounds(metric, value, budget.tolerance)
    kept = [c for c in candidates if low <= c.metric(metric, source) <= high]
    order = (lambda c: c.metric(metric, source)) if metric == "speedup" else (lambda c: -c.metric(metric, source))
    return sorted(kept, key=lambda c: (order(c), -c.hidden_size, -c.ffn_hidden_size, -c.num_attention_heads,
                                       -c.num_query_groups, -c.num_layers))  # fmt: skip


def check_budget(arch: ModelArch, search: SearchSettings, budget: BudgetTarget, tp: int = 1) -> list[Candidate]:
    """The feasible candidates, best-first; refuses a budget the model already meets or none of the space meets."""
    metric, value = budget.primary()
    source = source_candidate(arch, budget)
    unit = " GB" if metric == "memory_gb" else ("x" if metric == "speedup" else "")
    if metric != "speedup" and value >= source.metric(metric, source):
        raise MinitronError(
            f"prune.target.{metric}={value:g} is not smaller than the model's {_fmt(source.metric(metric, source))}"
            f"{unit}: nothing to prune; set a budget below it"
        )
    candidates = enumerate_candidates(arch, search, budget, tp)
    chosen = feasible(candidates, source, budget)
    if not chosen:
        low, high = bounds(metric, value, budget.tolerance)
        closest = min(candidates, key=lambda c: abs(c.metric(metric, source) - value)) if candidates else None
        described = (f"the closest is {closest.name} with {metric} {_fmt(closest.metric(metric, source))}{unit}"
                     if closest else "the space is empty")  # fmt: skip
        axes = space_axes(arch, search)
        ranges = ", ".join(f"{a} {min(v)}..{max(v)}" for a, v in axes.items())
        raise MinitronError(
            f"prune.target.{metric}={value:g}: no candidate of the search space within [{_fmt(low)}, {_fmt(high)}]"
            f"{unit} (space: {ranges}; {described}); raise prune.target.tolerance, prune.search.max_width_pruning "
            "or max_depth_pruning, or lower the divisors"
        )
    return chosen


def _fmt(value: float) -> str:
    if value == math.inf:
        return "inf"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"


def candidate_from_shape(arch: ModelArch, shape: dict, budget: BudgetTarget) -> Candidate:
    """The :class:`Candidate` of a shape dict (as cached or reported)."""
    return analyse(arch, shape["hidden_size"], shape["ffn_hidden_size"], shape["num_attention_heads"],
                   shape["num_query_groups"], shape["num_layers"], budget)  # fmt: skip


def depth_windows(arch: ModelArch, candidates: list[Candidate]) -> tuple[int, ...]:
    """Contiguous-window sizes (layers dropped) the candidates need from the importance scores."""
    return tuple(sorted({arch.num_layers - c.num_layers for c in candidates if c.num_layers < arch.num_layers}))


def summarize_space(arch: ModelArch, search: SearchSettings, budget: BudgetTarget, tp: int,
                    chosen: Optional[list[Candidate]] = None) -> dict:  # fmt: skip
    """What the search looked at: the axes, the number of valid and feasible shapes."""
    axes = space_axes(arch, search)
    return {"axes": axes, "valid": len(enumerate_candidates(arch, search, budget, tp)),
            "feasible": None if chosen is None else len(chosen)}  # fmt: skip
