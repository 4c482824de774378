"""The report stage: gather the stages' results into a summary, then write report.md and the curves."""

from __future__ import annotations

from pathlib import Path

from minitron.config.pipeline import PipelineCommand
from minitron.fsutil import write_json_atomic
from minitron.pipeline.report import write_report
from minitron.pipeline.stages import Stage


def _params(path: str) -> tuple:
    from minitron.models.checkpoint import open_model

    try:
        arch = open_model(path).arch
    except Exception:  # a model whose stage was disabled or failed: the row shows "-"
        return None, None
    return arch.params, arch.non_embedding_params


def _trained_tokens(record: dict):
    """Tokens a finished `minitron train` stage consumed: its result's consumed samples x its sequence length."""
    from omegaconf import OmegaConf

    try:
        seq_length = OmegaConf.load(Path(record["output"]) / "config.yaml").train.seq_length
        return int(record["result"]["consumed_samples"]) * int(seq_length)
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        return None


def build_summary(cfg: PipelineCommand, stages: list[Stage], manifest: dict) -> dict:
    """What the report shows, from the planned stages and the manifest's stage results."""
    recipe, records = cfg.recipe, manifest.get("stages", {})
    models = []
    for stage in stages:
        if stage.model is None:
            continue
        result = records.get(stage.name, {}).get("result") or {}
        params, non_embedding = _params(stage.model["path"])
        models.append(
            dict(
                stage.model,
                params=params,
                non_embedding_params=non_embedding,
                heldout_loss=result.get("loss"),
                kl=result.get("kl"),
            )
        )
        if stage.model["role"] == "teacher_corrected":
            models[-1]["train_tokens"] = _trained_tokens(records.get("teacher_correction", {}))
    eval_tokens = next(
        (r.get("result", {}).get("tokens") for n, r in records.items() if n.startswith("eval_") and r.get("result")),
        None,
    )
    reference = "teacher, corrected" if recipe.teacher_correction.enabled else "teacher"
    return {
        "recipe": recipe.name,
        "description": recipe.description,
        "teacher": recipe.teacher,
        "train_data": recipe.data.train,
        "heldout_data": recipe.data.heldout,
        "eval_tokens": eval_tokens,
        "token_budget": recipe.budget.tokens,
        "models": models,
        "reference_teacher": reference,
        "curves": [stage.curve for stage in stages if stage.curve is not None],
        "stages": [
            dict(
                name=s.name,
                status=records.get(s.name, {}).get("status"),
                seconds=records.get(s.name, {}).get("seconds"),
                output=s.output,
            )
            for s in stages
            if s.command != "report"
        ],
    }


def build_report(cfg: PipelineCommand, stages: list[Stage], manifest: dict, run_dir: Path) -> dict:
    summary = build_summary(cfg, stages, manifest)
    write_json_atomic(run_dir / "summary.json", summary)
    written = write_report(run_dir, summary)
    return {
        "report": written["report"],
        "curves": written["curves"],
        "summary": str(run_dir / "summary.json"),
        "checks": written["checks"],
    }
