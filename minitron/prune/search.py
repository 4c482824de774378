"""The architecture search: from a budget to the best student shape, in three cached rungs.

(a) analytic (:mod:`minitron.prune.search_space`): every shape of the space, its exact parameters, memory and
    FLOPs; the feasible ones ordered by the budget's metric, closest to the budget first; the first
    ``prune.search.top_n`` go on.
(b) zero-shot (:mod:`minitron.prune.search_score`): each is pruned in memory from the importance scores and
    scored by its LM loss on the calibration windows; a speedup budget is measured here (candidates below it
    drop out).
(c) short distillation (:mod:`minitron.prune.search_distill`, when ``prune.search.top_k`` > 0): the ``top_k``
    best of (b) are written as students, distilled for ``distill_steps`` and ranked by held-out KL (or loss).

The chosen shape is the best of the last rung run. Every candidate's record is cached as soon as it is scored
(:class:`~minitron.prune.search_cache.SearchCache`), so a search killed halfway resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import torch

from minitron import runtime
from minitron.config.prune import PruneSettings
from minitron.errors import MinitronError
from minitron.models.checkpoint import ModelSource
from minitron.prune.scores import ImportanceScores
from minitron.prune.search_cache import SearchCache
from minitron.prune.search_score import generation_seconds, score_candidate
from minitron.prune.search_space import (Candidate, check_budget, depth_windows, enumerate_candidates, source_candidate,
                                          space_axes)

TEACHER = "teacher"  # the cache record of the teacher's generation time


@dataclasses.dataclass
class SearchResult:
    chosen: Candidate
    rows: list[dict]  # every scored candidate: shape, analytic figures, rung scores, chosen (search_report.COLUMNS)
    rank_metric: str  # what chose: "loss_b" (zero-shot loss) or "kl_c" / "loss_c" (after distillation)


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _teacher_seconds(source: ModelSource, settings: PruneSettings, cache: SearchCache, tp: int, pp: int,
                     dtype: torch.dtype) -> float:  # fmt: skip
    """The teacher's generation time on this device (cached): the reference of every measured speedup."""
    _barrier()
    record = cache.get("rung_b", TEACHER)
    if record is None:
        from minitron.models.checkpoint import load_model

        model = load_model(source, tp, pp, dtype).eval()
        record = {"generation_seconds": generation_seconds(model, source.arch.vocab_size, settings.target)}
        del model
        if runtime.is_main_process():
            cache.put("rung_b", TEACHER, record)
    return record["generation_seconds"]


def rung_b(source: ModelSource, scores: ImportanceScores, candidates: list[Candidate], settings: PruneSettings,
           windows: torch.Tensor, micro_batch_size: int, cache: SearchCache, tp: int, pp: int,
           dtype: torch.dtype) -> dict[str, dict]:  # fmt: skip
    """Zero-shot record of every candidate (name -> ``loss``, ``seconds``[, ``generation_seconds``, ``speedup``]),
    read from the cache or scored and cached."""
    measure = settings.target.speedup is not None or settings.search.measure_speed
    teacher = _teacher_seconds(source, settings, cache, tp, pp, dtype) if measure else None
    records = {}
    for index, candidate in enumerate(candidates):
        _barrier()  # every rank reads the cache at the same point
        record = cache.get("rung_b", candidate.name)
        if record is None:
            record = score_candidate(source, scores, candidate.targets(settings.targets()), windows,
                                     micro_batch_size, tp, pp, dtype, settings.target if measure else None)  # fmt: skip
            if measure:
                record["speedup"] = teacher / record["generation_seconds"]
            if runtime.is_main_process():
                cache.put("rung_b", candidate.name, record)
            runtime.log(f"search (b) {index + 1}/{len(candidates)} {candidate.name}: loss {record['loss']:.4f}"
                        + (f", speedup {record['speedup']:.2f}x" if measure else ""))  # fmt: skip
        else:
            runtime.log(f"search (b) {index + 1}/{len(candidates)} {candidate.name}: cached, loss {record['loss']:.4f}")
        records[candidate.name] = record
    return records


def _meets_speedup(record: dict, settings: PruneSettings) -> bool:
    target = settings.target
    return target.speedup is None or record["speedup"] >= (1.0 - target.tolerance) * target.speedup


def run_search(source: ModelSource, scores: ImportanceScores, candidates: list[Candidate], settings: PruneSettings,
               windows: torch.Tensor, micro_batch_size: int, cache: SearchCache, tp: int, pp: int,
               dtype: torch.dtype, distill_rung=None) -> SearchResult:  # fmt: skip
    """Rungs (b) and (c) over the analytic rung's best ``candidates``; returns the chosen shape and the table.

    ``distill_rung(candidates_to_distill) -> {name: {"loss", "kl", ...}}`` runs rung (c) (None: skipped)."""
    search = settings.search
    zero_shot = rung_b(source, scores, candidates, settings, windows, micro_batch_size, cache, tp, pp, dtype)
    passing = [c for c in candidates if _meets_speedup(zero_shot[c.name], settings)]
    if not passing:
        best = max(candidates, key=lambda c: zero_shot[c.name]["speedup"])
        raise MinitronError(
            f"prune.target.speedup={settings.target.speedup:g}: no candidate reached it on this device (the fastest, "
            f"{best.name}, measured {zero_shot[best.name]['speedup']:.2f}x); lower the target or widen the space"
        )
    ranked = sorted(passing, key=lambda c: zero_shot[c.name]["loss"])
    distilled: dict[str, dict] = {}
    rank_metric = "loss_b"
    if search.top_k and distill_rung is not None:
        distilled = distill_rung(ranked[: search.top_k])
        rank_metric = f"{search.rank_by}_c"
        chosen = min(ranked[: search.top_k], key=lambda c: distilled[c.name][search.rank_by])
    else:
        chosen = ranked[0]
    teacher = source_candidate(source.arch, settings.target)
    rows = []
    for c in candidates:
        b, d = zero_shot[c.name], distilled.get(c.name, {})
        rows.append({
            "name": c.name, **c.shape(), "params": c.params, "non_embedding_params": c.non_embedding_params,
            "memory_gb": c.memory_gb, "flops_per_token": c.flops_per_token,
            "flops_speedup": teacher.flops_per_token / c.flops_per_token, "measured_speedup": b.get("speedup"),
            "loss_b": b["loss"], "seconds_b": b["seconds"], "loss_c": d.get("loss"), "kl_c": d.get("kl"),
            "feasible": _meets_speedup(b, settings), "chosen": c.name == chosen.name,
        })  # fmt: skip
    return SearchResult(chosen, rows, rank_metric)



@dataclasses.dataclass
class SearchPlan:
    """What a budgeted ``minitron prune`` will do, worked out (and checked) before any work."""

    candidates: list[Candidate]  # rung (b)'s candidates: the analytic rung's best top_n
    feasible: int  # feasible shapes in the space
    valid: int  # valid shapes in the space
    depth_metrics: tuple[str, ...]  # what the importance pass must estimate for them
    window_sizes: tuple[int, ...]  # contiguous-window sizes (layers dropped) they need
    cache: SearchCache

    def summary(self, settings: PruneSettings, arch) -> dict:
        metric, value = settings.target.primary()
        return {"budget": {"metric": metric, "value": value, "tolerance": settings.target.tolerance},
                "space": {"axes": space_axes(arch, settings.search), "valid": self.valid, "feasible": self.feasible,
                          "scored": len(self.candidates)}}  # fmt: skip


def cache_key(cfg, source: ModelSource) -> dict:
    """What the cached scores depend on: the model, the budget, the space and every scoring setting (not top_n /
    top_k / the cache's place, which only say how many candidates to score)."""
    from omegaconf import OmegaConf

    def plain(node):
        return OmegaConf.to_container(OmegaConf.structured(node))

    search = {k: v for k, v in plain(cfg.prune.search).items() if k not in ("top_n", "top_k", "cache")}
    targets = plain(cfg.prune.targets())
    return {"model": source.fingerprint(), "target": plain(cfg.prune.target), "space_and_scoring": search,
            "ranking": {k: targets[k] for k in ("depth_metric", "ranking", "seed")}, "scores": cfg.prune.scores,
            "data": plain(cfg.data), "calib": plain(cfg.calib), "importance": plain(cfg.importance)}  # fmt: skip


def prepare(cfg, source: ModelSource) -> SearchPlan:
    """Check the budget, the space and the cache of a budgeted ``minitron prune`` (writes nothing)."""
    settings, arch = cfg.prune, source.arch
    if cfg.data.path is None:
        raise MinitronError(f"prune.target.{settings.target.primary()[0]} scores candidates on calibration text: "
                            "pass data.path=CALIB_FILE")  # fmt: skip
    chosen = check_budget(arch, settings.search, settings.target, cfg.parallel.tp)
    candidates = chosen[: settings.search.top_n]
    windows = depth_windows(arch, candidates)
    metrics: tuple[str, ...] = ("block_influence",)
    if windows and settings.depth_metric == "window_loss":
        metrics += ("window_loss",)
    elif windows and settings.depth_metric == "layer_loss":
        metrics += ("layer_loss",)
    windows = windows if "window_loss" in metrics else ()
    cache = SearchCache(settings.search.cache or f"{str(cfg.output).rstrip('/')}.search", cache_key(cfg, source))
    cache.check()
    return SearchPlan(candidates, len(chosen), len(enumerate_candidates(arch, settings.search, settings.target,
                                                                         cfg.parallel.tp)), metrics, windows, cache)  # fmt: skip
