"""The pipeline report: table numbers, PASS/FAIL/SKIP checks, the PNG, tolerance of bad metrics files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minitron.pipeline.report import _count, read_metrics, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_metrics(path: Path, key: str, start: float, end: float, steps: int = 40, tokens: int = 4096) -> str:
    """A run of ``steps`` train records falling linearly from ``start`` to ``end``, a validation every 10 steps."""
    lines = [json.dumps({"kind": "start", "step": 0})]
    for step in range(1, steps + 1):
        value = start + (end - start) * step / steps
        record = {
            "kind": "train",
            "step": step,
            "loss": value + 1.0 if key == "kd" else value,
            "lr": 1e-4,
            "grad_norm": 1.0,
            "tokens": tokens,
            "tokens_per_s": 1000.0,
            "step_seconds": 0.1,
            "memory_gb": 1.0,
        }
        if key == "kd":
            record["kd"] = value
        lines.append(json.dumps(record))
        if step % 10 == 0:
            lines.append(json.dumps({"kind": "valid", "step": step, "loss": value, "tokens": 8192}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def row(name, role, student, loss, kl, tokens, params=134515008, non_embedding=106206720):
    return {
        "name": name,
        "role": role,
        "student": student,
        "path": f"/models/{name}",
        "params": params,
        "non_embedding_params": non_embedding,
        "train_tokens": tokens,
        "heldout_loss": loss,
        "kl": kl,
    }


def make_summary(tmp_path: Path) -> dict:
    runs = tmp_path / "runs"
    models = [
        row("teacher", "teacher", None, 3.18, 0.0, None),
        row("teacher, corrected", "teacher_corrected", None, 3.01, 0.0, 98304),
        # width: every check passes
        row("width, pruned", "pruned", "width", 7.2, 4.1, 0, 90_000_000, 61_700_000),
        row("width, distilled", "distilled", "width", 4.0, 0.9, 163840, 90_000_000, 61_700_000),
        row("width, from scratch", "scratch", "width", 6.5, 3.3, 163840, 90_000_000, 61_700_000),
        # depth: the gap shrinks but KL grows (FAIL); from scratch had other tokens (SKIP)
        row("depth, pruned", "pruned", "depth", 5.0, 2.0, 0),
        row("depth, distilled", "distilled", "depth", 4.5, 2.5, 163840),
        row("depth, from scratch", "scratch", "depth", 4.2, 1.9, 81920),
        # ffn: from scratch wins at equal tokens (FAIL); no pruned row, so no closeness check
        row("ffn, distilled", "distilled", "ffn", 6.0, None, 163840),
        row("ffn, from scratch", "scratch", "ffn", 5.9, None, 163840),
    ]
    curves = [
        {
            "label": "width, distilled",
            "role": "distilled",
            "student": "width",
            "metrics": write_metrics(runs / "width_kd" / "metrics.jsonl", "kd", 4.0, 0.9),
        },
        {
            "label": "width, from scratch",
            "role": "scratch",
            "student": "width",
            "metrics": write_metrics(runs / "width_scratch" / "metrics.jsonl", "loss", 10.0, 6.5),
        },
        {
            "label": "teacher correction",
            "role": "teacher_corrected",
            "student": None,
            "metrics": write_metrics(runs / "correction" / "metrics.jsonl", "loss", 3.3, 3.0, steps=24),
        },
        {
            "label": "depth, distilled",
            "role": "distilled",
            "student": "depth",
            "metrics": str(runs / "depth_kd" / "metrics.jsonl"),
        },  # never written
    ]
    stages = [
        {"name": "importance", "status": "done", "seconds": 61.23, "output": "/runs/importance"},
        {"name": "distill width", "status": "done", "seconds": 300.0, "output": "/runs/width_kd"},
        {"name": "scratch depth", "status": "skipped", "seconds": None, "output": None},
    ]
    return {
        "recipe": "demo_smollm2", "description": "Prune SmolLM2 | then distill.", "teacher": "HuggingFaceTB/SmolLM2",
        "train_data": "/data/train.jsonl", "heldout_data": "/data/heldout.txt", "eval_tokens": 8192,
        "token_budget": 163840, "models": models, "reference_teacher": "teacher, corrected", "curves": curves,
        "stages": stages,
    }  # fmt: skip


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1540, 605)  # 14 x 5.5 inches at 110 dpi


def test_report_table_checks_and_plot(tmp_path):
    run_dir = tmp_path / "pipeline"
    result = write_report(run_dir, make_summary(tmp_path))

    assert result["report"] == str(run_dir / "report.md") and result["curves"] == str(run_dir / "loss_curves.png")
    text = (run_dir / "report.md").read_text()
    assert text.startswith("# Minitron pipeline: demo_smollm2\n\nPrune SmolLM2 | then distill.\n")
    assert "(8,192 tokens evaluated)" in text and "**token budget per student:** 163,840" in text
    assert "measured against *teacher, corrected*" in text
    for line in [
        "| teacher | 134.5M | 106.2M | - | 3.1800 | +0.1700 | 0.0000 |",
        "| teacher, corrected | 134.5M | 106.2M | 98,304 | 3.0100 | +0.0000 | 0.0000 |",
        "| width, pruned | 90.0M | 61.7M | 0 | 7.2000 | +4.1900 | 4.1000 |",
        "| width, distilled | 90.0M | 61.7M | 163,840 | 4.0000 | +0.9900 | 0.9000 |",
        "| width, from scratch | 90.0M | 61.7M | 163,840 | 6.5000 | +3.4900 | 3.3000 |",
        "| depth, from scratch | 134.5M | 106.2M | 81,920 | 4.2000 | +1.1900 | 1.9000 |",
        "| ffn, distilled | 134.5M | 106.2M | 163,840 | 6.0000 | +2.9900 | - |",
    ]:
        assert line + "\n" in text, line
    # rows keep the summary's order
    assert text.index("| width, from scratch |") < text.index("| depth, pruned |") < text.index("| ffn, distilled |")

    assert [(check["name"], check["passed"]) for check in result["checks"]] == [
        ("width: distilled beats from scratch on held-out loss", True),
        ("width: distilled is closer to the teacher than pruned only", True),
        ("depth: distilled is closer to the teacher than pruned only", False),
        ("ffn: distilled beats from scratch on held-out loss", False),
    ]
    assert [check["name"] for check in result["skipped"]] == ["depth: distilled beats from scratch on held-out loss"]
    for line in [
        "- **PASS** width: distilled beats from scratch on held-out loss: distilled 4.0000 < from scratch 6.5000 "
        "at 163,840 training tokens each",
        "- **PASS** width: distilled is closer to the teacher than pruned only: distilled vs pruned: "
        "|gap| 0.9900 < 4.1900, KL 0.9000 < 4.1000",
        "- **FAIL** depth: distilled is closer to the teacher than pruned only: distilled vs pruned: "
        "|gap| 1.4900 < 1.9900, KL 2.5000 >= 2.0000",
        "- **FAIL** ffn: distilled beats from scratch on held-out loss: distilled 6.0000 >= from scratch 5.9000 "
        "at 163,840 training tokens each",
        "- **SKIP** depth: distilled beats from scratch on held-out loss: not compared: unequal training tokens "
        "(distilled 163,840, from scratch 81,920)",
    ]:
        assert line + "\n" in text, line
    # checks read student by student, in the order a student's rows first appear
    assert text.index("- **SKIP** depth: distilled beats") < text.index("- **FAIL** depth: distilled is closer")
    assert text.index("## Checks") < text.index("![loss curves](loss_curves.png)") < text.index("## Stages")
    assert f"- no training records for depth, distilled (`{tmp_path / 'runs' / 'depth_kd' / 'metrics.jsonl'}`)" in text
    assert "| importance | done | 61.2 | `/runs/importance` |\n" in text
    assert "| scratch depth | skipped | - | - |\n" in text

    assert_png(run_dir / "loss_curves.png")
    assert sorted(path.name for path in run_dir.iterdir()) == ["loss_curves.png", "report.md"]


def test_missing_and_broken_metrics(tmp_path):
    summary = make_summary(tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"kind": "train", "step": 1, "lo\nnot json\n[1, 2]\n')
    summary["curves"] = [
        {"label": "width, distilled", "role": "distilled", "student": "width", "metrics": str(empty)},
        {"label": "width, from scratch", "role": "scratch", "student": "width", "metrics": str(garbage)},
        {"label": "teacher correction", "role": "teacher_corrected", "student": None, "metrics": None},
    ]
    summary["stages"] = []
    run_dir = tmp_path / "pipeline"
    (run_dir).mkdir()
    (run_dir / "report.md").write_text("stale")
    write_report(run_dir, summary)  # replaces the stale report
    text = (run_dir / "report.md").read_text()
    assert text.startswith("# Minitron pipeline: demo_smollm2")
    assert text.count("- no training records for") == 3
    assert text.endswith("| stage | status | seconds | output |\n|---|---|---:|---|\n")
    assert_png(run_dir / "loss_curves.png")
    assert sorted(path.name for path in run_dir.iterdir()) == ["loss_curves.png", "report.md"]


def test_minimal_summary(tmp_path):
    """Only a teacher: no checks, and both panels say "no data"."""
    result = write_report(tmp_path, {"recipe": "bare", "models": [row("teacher", "teacher", None, None, None, None)]})
    text = Path(result["report"]).read_text()
    assert "| teacher | 134.5M | 106.2M | - | - | - | - |" in text
    assert "- no student has the rows a check needs" in text
    assert result["checks"] == [] and result["skipped"] == []
    assert_png(Path(result["curves"]))


def test_read_metrics_keeps_last_record_per_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"kind": "start", "step": 0}\n{"kind": "train", "step": 1, "loss": 5.0, "tokens": 10}\n'
        '{"kind": "train", "step": 2, "loss": 4.0, "tokens": 10}\n{"kind": "start", "step": 1}\n'
        '{"kind": "train", "step": 2, "loss": 3.5, "tokens": 12}\n{"kind": "valid", "step": 2, "loss": 3.6, "tok'
    )
    metrics = read_metrics(path)
    assert [(record["step"], record["loss"]) for record in metrics["train"]] == [(1, 5.0), (2, 3.5)]
    assert metrics["valid"] == []
    assert read_metrics(tmp_path / "absent.jsonl") == {"train": [], "valid": []}


def test_count_format():
    assert [_count(value) for value in (None, 512, 98304, 134515008, 999_999_999, 1.24e9)] == [
        "-", "512", "98.3K", "134.5M", "1.0B", "1.2B"]  # fmt: skip


def task(value, stderr, items=50, shots=0, pool=None, metric="acc"):
    return {"metric": metric, "value": value, "stderr": stderr, "items": items, "num_fewshot": shots,
            "fewshot_pool": pool}  # fmt: skip


def test_accuracy_and_throughput_tables_and_plot(tmp_path):
    """Averages and their standard errors, student / teacher speed ratios, and the accuracy-vs-throughput plot."""
    summary = make_summary(tmp_path)
    rows = {row["name"]: row for row in summary["models"]}
    mmlu_pool = "dev (lm-eval's own pool)"
    rows["teacher"]["tasks"] = {"mmlu": task(0.30, 0.03, 57, 5, mmlu_pool),
                                "piqa": task(0.70, 0.04, 50, 0, None, "acc_norm")}  # fmt: skip
    rows["width, distilled"]["tasks"] = {"mmlu": task(0.26, 0.03, 57, 5, mmlu_pool), "piqa": task(0.60, 0.04)}
    rows["width, pruned"]["tasks"] = {"mmlu": task(0.25, None, 57, 5, mmlu_pool)}  # piqa missing: no average
    summary["benchmarks"] = {"tasks": ["mmlu", "piqa"]}
    bench = dict(batch=1, prompt_len=128, output_len=64, dtype="float32", device="cpu", tp=1, pp=1)
    summary["throughput"] = [
        dict(name="teacher", role="teacher", student=None, params=134515008, prefill_tokens_per_s=2000.0,
             decode_tokens_per_s=40.0, **bench),
        dict(name="width, distilled", role="distilled", student="width", params=90_000_000,
             prefill_tokens_per_s=3000.0, decode_tokens_per_s=50.0, **bench),
    ]  # fmt: skip
    run_dir = tmp_path / "pipeline"
    result = write_report(run_dir, summary)
    text = (run_dir / "report.md").read_text()
    # average (0.30 + 0.70) / 2 with stderr sqrt(0.03^2 + 0.04^2) / 2 = 0.025
    assert "| teacher | 30.0 ± 3.0 | 70.0 ± 4.0 | 50.0 ± 2.5 |\n" in text
    assert "| width, distilled | 26.0 ± 3.0 | 60.0 ± 4.0 | 43.0 ± 2.5 |\n" in text
    assert "| width, pruned | 25.0 | - | - |\n" in text
    assert "- **mmlu**: acc, 57 items, 5-shot, few-shot pool: dev (lm-eval's own pool)\n" in text
    assert "- **piqa**: acc_norm, 50 items, 0-shot\n" in text
    assert "| teacher | 134.5M | 2,000.0 | 40.0 | 1.00x | 1.00x |\n" in text
    assert "| width, distilled | 90.0M | 3,000.0 | 50.0 | 1.50x | 1.25x |\n" in text
    assert "Batch 1, 128 prompt tokens, 64 generated" in text
    order = ["## Results", "## Task accuracy", "## Throughput", "![accuracy vs throughput](accuracy_throughput.png)",
             "## Checks"]  # fmt: skip
    assert [text.index(heading) for heading in order] == sorted(text.index(heading) for heading in order)
    # plotted: teacher (own speed), width distilled (own); pruned has no average; the corrected teacher no tasks
    from minitron.pipeline.report import accuracy_points

    assert [(row["name"], speed, accuracy) for row, speed, accuracy, _ in accuracy_points(summary)] == [
        ("teacher", 40.0, 0.5), ("width, distilled", 50.0, pytest.approx(0.43))]  # fmt: skip
    assert result["accuracy_plot"] == str(run_dir / "accuracy_throughput.png")
    assert (run_dir / "accuracy_throughput.png").read_bytes()[:8] == PNG_MAGIC

    # a corrected teacher with tasks but no timing of its own is placed at the teacher's speed
    rows["teacher, corrected"]["tasks"] = {"mmlu": task(0.32, 0.03), "piqa": task(0.68, 0.04)}
    assert ("teacher, corrected", 40.0) in [(row["name"], speed) for row, speed, *_ in accuracy_points(summary)]

    # nothing timed: no throughput table, no plot (and an old plot is removed)
    summary["throughput"] = []
    result = write_report(run_dir, summary)
    text = (run_dir / "report.md").read_text()
    assert "## Task accuracy" in text and "## Throughput" not in text and "accuracy_throughput" not in text
    assert result["accuracy_plot"] is None and not (run_dir / "accuracy_throughput.png").exists()
