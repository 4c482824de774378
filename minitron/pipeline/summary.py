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


def _read_json(path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, TypeError):
        return None


def _task_results(output: str) -> Optional[dict]:
    """``{task: {metric, value, stderr, items, num_fewshot, fewshot_pool}}`` of an evaluate stage's results.json."""
    results = _read_json(Path(output) / "results.json")
    return None if results is None else (results.get("minitron") or {}).get("tasks")


def _throughput(output: str) -> Optional[dict]:
    """Prefill / decode tokens/s of a bench stage's JSON, with the settings they were measured at."""
    result = _read_json(output)
    if result is None or not isinstance(result.get("megatron"), dict):
        return None
    settings = ("batch", "prompt_len", "output_len", "dtype", "device", "tp", "pp")
    return dict(prefill_tokens_per_s=result["megatron"].get("prefill_tokens_per_s"),
                decode_tokens_per_s=result["megatron"].get("decode_tokens_per_s"),
                **{key: result.get(key) for key in settings})  # fmt: skip


def build_summary(cfg: PipelineCommand, stages: list[Stage], manifest: dict) -> dict:
    """What the report shows: the rows are the eval stages' own JSON outputs, in the plan's order."""
    recipe, records = cfg.recipe, manifest.get("stages", {})
    models = [row for stage in stages if stage.command == "eval" for row in [_row(stage.output)] if row is not None]
    by_name = {row["name"]: row for row in models}
    throughput, searches, answers = [], [], []  # one entry per timed architecture / per searched student, in the plan's order
    for stage in stages:
        row = by_name.get(stage.row)
        search = Path(stage.output or ".") / "search"
        if stage.command == "prune" and (search / "candidates.md").is_file():
            searches.append(dict(name=stage.row, table=(search / "candidates.md").read_text(),
                                 plots=[str(path) for path in sorted(search.glob("*.png"))]))  # fmt: skip
        elif stage.command == "rewards" and row is not None:
            row["rewards"] = _read_json(stage.output)
        elif stage.command == "generate" and row is not None:
            result = _read_json(stage.output)
            if result is not None:
                answers.append(dict(name=row["name"], answers=[dict(prompt=a.get("prompt"), text=a.get("text"))
                                                               for a in result.get("answers") or [result]]))  # fmt: skip
        elif stage.command == "evaluate" and row is not None:
            row["tasks"] = _task_results(stage.output)
        elif stage.command == "bench" and row is not None:
            measured = _throughput(stage.output)
            if measured is not None:
                throughput.append(dict(name=row["name"], role=row["role"], student=row["student"],
                                       params=row["params"], **measured))  # fmt: skip
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
        "benchmarks": {"tasks": list(recipe.benchmarks.tasks)},
        "throughput": throughput,
        "searches": searches,
        "answers": answers,
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
        "accuracy_plot": written["accuracy_plot"],
        "summary": str(run_dir / "summary.json"),
        "checks": written["checks"],
    }
