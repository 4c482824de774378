"""The report stage: gather the stages' results into a summary, then write report.md and the curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from minitron.config.pipeline import PipelineCommand
from minitron.fsutil import write_json_atomic
from minitron.pipeline.report import write_report
from minitron.pipeline.stages import REPORT, Stage


def _row(path: str) -> Optional[dict]:
    """A table row from an eval stage's JSON output (None when the stage has not produced it)."""
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    model, tags = result.get("model") or {}, result.get("tags") or {}
    return dict(name=tags.get("name", model.get("path")), role=tags.get("role"), student=tags.get("student"),
                path=model.get("path"), params=model.get("params"),
                non_embedding_params=model.get("non_embedding_params"), train_tokens=model.get("trained_tokens"),
                heldout_loss=result.get("loss"), kl=result.get("kl"), eval_tokens=result.get("tokens"))  # fmt: skip


def build_summary(cfg: PipelineCommand, stages: list[Stage], manifest: dict) -> dict:
    """What the report shows: the rows are the eval stages' own JSON outputs, in the plan's order."""
    recipe, records = cfg.recipe, manifest.get("stages", {})
    models = [row for stage in stages if stage.command == "eval" for row in [_row(stage.output)] if row is not None]
    eval_tokens = next((row["eval_tokens"] for row in models if row.get("eval_tokens")), None)
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
            if s.command != REPORT
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
