"""minitron prune: importance on calibration data, then width/depth pruning to explicit targets.

    minitron prune model.path=HF_DIR data.path=calib.jsonl output=STUDENT prune.hidden_size=3072 prune.ffn_hidden_size=9216
    minitron prune prune=llama31_8b_to_4b_depth model.path=HF_DIR data.path=calib.jsonl output=STUDENT
    minitron prune ... prune.scores=PREVIOUS_STUDENT_OR_SCORES_DIR   # this model's saved scores: no forward passes
    minitron prune prune=smollm2_search_50pct ... prune.target.non_embedding_params=53e6   # search the shape to a budget
    torchrun --nproc-per-node 2 $(which minitron) prune ... parallel.tp=2   # importance at any TP/PP/DP

STUDENT is a Hugging Face directory (it loads in transformers and in minitron at any layout) with
``importance.safetensors``/``importance.json`` (the scores), ``prune_summary.json`` (architecture and
parameters before and after, kept layers, software versions) and plots. The last stdout line is the summary as JSON.
With a budget (``prune.target.params | non_embedding_params | memory_gb | speedup``) the shape is searched
(minitron.prune.search): STUDENT is the chosen candidate written exactly as an explicit-target prune writes it,
plus ``search/`` (candidates table and plots); per-candidate scores are cached in ``prune.search.cache``.
"""

import json
from functools import partial
from pathlib import Path

import torch
from omegaconf import OmegaConf

from minitron import runtime
from minitron.config import schema
from minitron.errors import MinitronError
from minitron.models import checkpoint
from minitron.models.megatron_gpt import check_parallel_layout, check_sequence_length
from minitron.fsutil import check_not_an_input
from minitron.parallel import output_lock, setup_distributed, teardown_distributed
from minitron.prune import plots, search, search_distill
from minitron.prune.search_report import write_search_report
from minitron.prune.calibration import calibration_windows, compute_importance
from minitron.prune.plan import check_scores_cover, needed_depth_metrics, placeholder_scores, plan_pruning
from minitron.prune.scores import ImportanceScores
from minitron.prune.surgery import write_pruned_hf

def fingerprint(cfg, source) -> str:
    """What the student depends on: the teacher's files, the targets, the calibration settings."""
    settings = {k: OmegaConf.to_container(OmegaConf.structured(getattr(cfg, k))) for k in ("data", "calib", "importance", "prune")}
    return source.fingerprint(settings=settings)


def check_scores_model(scores: ImportanceScores, directory, source) -> None:
    """Refuse ``prune.scores=directory`` unless its scores were computed on ``source`` (the fingerprint that
    ``minitron importance`` and ``minitron prune`` record in importance.json as ``model_fingerprint``)."""
    recorded, fingerprint = scores.meta.get("model_fingerprint"), source.fingerprint()
    fix = f"rerun `minitron importance model.path={source.path} output=SCORES_DIR` and pass prune.scores=SCORES_DIR"
    if recorded is None:
        raise MinitronError(
            f"prune.scores={directory} does not record the model it was computed on "
            f"(no model_fingerprint in importance.json); {fix}"
        )
    if recorded != fingerprint:
        where = f"{scores.meta['model_path']}, " if scores.meta.get("model_path") else ""
        raise MinitronError(
            f"prune.scores={directory} were computed on another model ({where}model_fingerprint {recorded}) than "
            f"model.path={source.path} (fingerprint {fingerprint}); {fix}"
        )


@runtime.recipe("prune")
def main(cfg) -> None:
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    cfg = schema.to_object(cfg)
    source = checkpoint.open_model(cfg.model.path)
    if source.kind != "hf":
        raise MinitronError(
            f"model.path={source.path} is a Megatron checkpoint; prune reads Hugging Face tensors: "
            f"export it first with `minitron convert model.path={source.path} output=HF_DIR`"
        )
    arch, targets = source.arch, cfg.prune.targets()
    searching = search.prepare(cfg, source) if cfg.prune.target.primary() else None  # budget, space, cache
    if searching is None:
        plan_pruning(arch, placeholder_scores(arch, targets), targets, tp=cfg.parallel.tp)  # every check, before any work
        depth_metrics, window_sizes = needed_depth_metrics(arch, targets)
    else:
        depth_metrics, window_sizes = searching.depth_metrics, searching.window_sizes
    check_parallel_layout(arch, cfg.parallel.tp, cfg.parallel.pp)
    scores = ImportanceScores.load(Path(cfg.prune.scores)) if cfg.prune.scores else None
    if scores is not None:
        check_scores_model(scores, cfg.prune.scores, source)
        for candidate_targets in ([c.targets(targets) for c in searching.candidates] if searching else [targets]):
            check_scores_cover(scores, arch, candidate_targets, cfg.prune.scores, source.path, cfg.data.path)
    if scores is None or searching is not None:  # a search scores its candidates on the calibration windows
        check_sequence_length(arch, "calib.seq_length", cfg.calib.seq_length)
        windows = calibration_windows(source, cfg.data.path, cfg.data.text_field, cfg.calib.num_samples, cfg.calib.seq_length)

    check_not_an_input(cfg.output, [("model.path", cfg.model.path), ("data.path", cfg.data.path),
                                    ("prune.scores", cfg.prune.scores)])  # fmt: skip
    if searching is not None:
        check_not_an_input(searching.cache.directory, [("model.path", cfg.model.path), ("data.path", cfg.data.path),
                                                       ("prune.scores", cfg.prune.scores), ("output", cfg.output)])  # fmt: skip
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp)
    try:
        with output_lock(cfg.output):
            key = fingerprint(cfg, source)
            staging = checkpoint.begin_output(cfg.output, key, cfg.overwrite)
            if staging is None:
                runtime.log(f"{cfg.output} already holds this student: nothing to do")
                summary = json.loads((Path(cfg.output) / "prune_summary.json").read_text())
                runtime.print_result({**summary, "skipped": True})
                return
            with checkpoint.staged(staging):
                if searching is not None:
                    if ctx.is_main:
                        searching.cache.open()
                    torch.distributed.barrier()
                    if scores is None and searching.cache.path("importance", "importance.json").is_file():
                        scores = ImportanceScores.load(searching.cache.path("importance"))  # a resumed search
                if scores is None:
                    dtype = source.build_dtype(cfg.model.dtype, for_compute=True)
                    runtime.log(f"importance of {source.path}: {len(windows)} windows x {cfg.calib.seq_length} "
                                f"tokens, TP={ctx.tp} PP={ctx.pp} DP={ctx.dp}, depth metrics "
                                f"{list(depth_metrics)}")  # fmt: skip
                    scores, _ = compute_importance(source, windows, ctx, dtype, cfg.calib, cfg.importance,
                                                   depth_metrics, window_sizes)  # fmt: skip
                    scores.meta.update(data_path=str(cfg.data.path), model_path=str(source.path),
                                       model_fingerprint=source.fingerprint())  # fmt: skip
                    if searching is not None and ctx.is_main:
                        scores.save(searching.cache.path("importance"))
                found = None
                if searching is not None:
                    dtype = source.build_dtype(cfg.model.dtype, for_compute=True)
                    score_windows = windows[: cfg.prune.search.score_num_samples]
                    distill = partial(search_distill.distill_and_score, source, scores, settings=cfg.prune,
                                      cache=searching.cache)  # rung (c) of the candidates it is given
                    found = search.run_search(source, scores, searching.candidates, cfg.prune, score_windows,
                                              cfg.calib.micro_batch_size, searching.cache, ctx.tp, ctx.pp, dtype,
                                              distill)  # fmt: skip
                    targets = found.chosen.targets(targets)
                    runtime.log(f"search chose {found.chosen.name} (by {found.rank_metric})")
                plan = plan_pruning(arch, scores, targets, tp=cfg.parallel.tp)
                summary = {"output": str(cfg.output), **plan.summary(), "targets": OmegaConf.to_container(OmegaConf.structured(cfg.prune)),
                           "versions": runtime.versions()}  # fmt: skip
                if found is not None:
                    search_summary = {**searching.summary(cfg.prune, arch), "chosen": found.chosen.name,
                                      "ranked_by": found.rank_metric, "cache": str(searching.cache.directory)}  # fmt: skip
                    summary["search"] = search_summary
                    if ctx.is_main:
                        write_search_report(staging / "search", search_summary, found.rows)
                if ctx.is_main:
                    runtime.log(f"student: {plan.student.params:,} parameters (from {arch.params:,}); "
                                f"non-embedding kept {summary['kept_fraction_non_embedding']:.1%}")  # fmt: skip
                    write_pruned_hf(source, plan, staging)
                    scores.save(staging)
                    plots.save_plots(scores, staging)
                    (staging / "prune_summary.json").write_text(json.dumps(summary, indent=2))
                    (staging / "prune_config.yaml").write_text(resolved)
                    (staging / "minitron.json").write_text(json.dumps({"format": "hf-pruned", "source_fingerprint": key,
                                                                             "trained_tokens": 0}))
                torch.distributed.barrier()
            checkpoint.finish_output(staging, cfg.output)
            runtime.print_result(summary)
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
