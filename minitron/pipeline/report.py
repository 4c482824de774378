"""The pipeline's report: ``report.md`` (settings, results, task accuracy and throughput tables, checks, stages),
``loss_curves.png`` and ``accuracy_throughput.png``.

``write_report(run_dir, summary)`` takes the summary the pipeline runner builds: ``recipe``,
``description``, ``teacher``, ``train_data``, ``heldout_data``, ``eval_tokens``, ``token_budget``, the
table rows ``models`` (``name``, ``role`` in teacher / teacher_corrected / pruned / distilled / scratch,
``student``, ``params``, ``non_embedding_params``, ``train_tokens``, ``heldout_loss``, ``kl``; any number
may be None; optionally ``tasks``: ``{task: {metric, value, stderr, items, num_fewshot, fewshot_pool}}`` from
``minitron evaluate``), ``benchmarks`` (``tasks``: the recipe's task list, in column order), ``throughput``
(one entry per timed architecture: ``name``, ``role``, ``student``, ``params``, ``prefill_tokens_per_s``,
``decode_tokens_per_s``, ``batch``, ``prompt_len``, ``output_len``, ``dtype``, ``device``), ``reference_teacher`` (the row name gaps and KL are measured against), ``curves`` (``label``,
``role``, ``student``, ``metrics``: a ``metrics.jsonl`` path, see ``minitron.training.metrics``) and
``stages`` (``name``, ``status``, ``seconds``, ``output``) and ``searches`` (students whose shape was searched to a
budget: ``name``, ``table`` (the search's candidates.md), ``plots`` (its PNG paths)).

Checks, per student (the first row of each role counts): (a) distilled beats from-scratch on held-out
loss, judged only at equal training tokens; (b) distillation brings the pruned model closer to the
reference teacher: smaller |held-out loss gap| and, when both are known, smaller KL. A check whose
numbers are missing is listed as SKIP (with the reason) and returned under ``skipped``, not ``checks``.

Both files are written atomically (:mod:`minitron.fsutil`), so a reader never sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from minitron.fsutil import atomic_path, write_text_atomic

REPORT_MD = "report.md"
CURVES_PNG = "loss_curves.png"
ACCURACY_PNG = "accuracy_throughput.png"


# ---------------------------------------------------------------- metrics.jsonl


def read_metrics(path) -> dict[str, list[dict]]:
    """``{"train": [...], "valid": [...]}`` records of a metrics file, by step (the last record of a step
    wins); a missing file, or lines cut short, give fewer records, never an error."""
    records: dict[str, dict[int, dict]] = {"train": {}, "valid": {}}
    if path and Path(path).is_file():
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("kind") in records and isinstance(record.get("step"), int):
                records[record["kind"]][record["step"]] = record
    return {kind: [by_step[step] for step in sorted(by_step)] for kind, by_step in records.items()}


def _training_tokens(train: list[dict]) -> tuple[dict[int, float], bool]:
    """step -> training tokens seen by the end of it (cumulative ``tokens``), and whether tokens were logged
    (if not, the step number stands in)."""
    if not train or any(not isinstance(record.get("tokens"), (int, float)) for record in train):
        return {record["step"]: float(record["step"]) for record in train}, False
    seen, total = {}, 0.0
    for record in train:
        total += record["tokens"]
        seen[record["step"]] = total
    return seen, True


def _smooth(values: list[float]) -> list[float]:
    """Trailing mean over ~5% of the points (at least 1)."""
    window = max(1, len(values) // 20)
    out, running = [], 0.0
    for index, value in enumerate(values):
        running += value
        if index >= window:
            running -= values[index - window]
        out.append(running / min(index + 1, window))
    return out


# ---------------------------------------------------------------- numbers


def _count(value: Optional[float]) -> str:
    """134515008 -> 134.5M; None -> -."""
    if value is None:
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale * 0.99995:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:g}"


def _tokens(value: Optional[int]) -> str:
    return "-" if value is None else f"{int(value):,}"


def _loss(value: Optional[float], signed: bool = False) -> str:
    return "-" if value is None else (f"{value:+.4f}" if signed else f"{value:.4f}")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------- checks


def _reference(models: list[dict], name: Optional[str]) -> Optional[dict]:
    """The row gaps are measured against: the named one, else the corrected teacher, else the teacher."""
    for row in models:
        if row.get("name") == name:
            return row
    for role in ("teacher_corrected", "teacher"):
        for row in models:
            if row.get("role") == role:
                return row
    return None


def _gap(row: dict, reference_loss: Optional[float]) -> Optional[float]:
    if row.get("heldout_loss") is None or reference_loss is None:
        return None
    return row["heldout_loss"] - reference_loss


def run_checks(models: list[dict], reference_loss: Optional[float]) -> list[dict]:
    """``{"name", "passed", "detail"}`` student by student; ``passed`` is None for a check that was skipped."""
    by_student: dict[str, dict[str, dict]] = {}
    for row in models:
        if row.get("student") is not None:
            by_student.setdefault(row["student"], {}).setdefault(row.get("role"), row)
    checks = []
    for student, rows in by_student.items():
        distilled, scratch, pruned = rows.get("distilled"), rows.get("scratch"), rows.get("pruned")
        if distilled and scratch:
            name = f"{student}: distilled beats from scratch on held-out loss"
            tokens = (distilled.get("train_tokens"), scratch.get("train_tokens"))
            losses = (distilled.get("heldout_loss"), scratch.get("heldout_loss"))
            if None in losses:
                checks.append({"name": name, "passed": None, "detail": "a held-out loss is missing"})
            elif None in tokens or tokens[0] != tokens[1]:
                detail = (
                    f"not compared: unequal training tokens (distilled {_tokens(tokens[0])}, "
                    f"from scratch {_tokens(tokens[1])})"
                )
                checks.append({"name": name, "passed": None, "detail": detail})
            else:
                passed = losses[0] < losses[1]
                detail = (
                    f"distilled {_loss(losses[0])} {'<' if passed else '>='} from scratch "
                    f"{_loss(losses[1])} at {_tokens(tokens[0])} training tokens each"
                )
                checks.append({"name": name, "passed": passed, "detail": detail})
        if distilled and pruned:
            name = f"{student}: distilled is closer to the teacher than pruned only"
            gaps = (_gap(distilled, reference_loss), _gap(pruned, reference_loss))
            kls = (distilled.get("kl"), pruned.get("kl"))
            verdicts, parts = [], []
            if None not in gaps:
                verdicts.append(abs(gaps[0]) < abs(gaps[1]))
                parts.append(f"|gap| {abs(gaps[0]):.4f} {'<' if verdicts[-1] else '>='} {abs(gaps[1]):.4f}")
            if None not in kls:
                verdicts.append(kls[0] < kls[1])
                parts.append(f"KL {kls[0]:.4f} {'<' if verdicts[-1] else '>='} {kls[1]:.4f}")
            if verdicts:
                detail = "distilled vs pruned: " + ", ".join(parts)
                checks.append({"name": name, "passed": all(verdicts), "detail": detail})
            else:
                checks.append({"name": name, "passed": None, "detail": "no held-out gap or KL for both models"})
    return checks


# ---------------------------------------------------------------- loss_curves.png


def _colors(summary: dict) -> dict:
    """One colour per student, shared by both panels; the teacher is black."""
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
    students = []
    for item in list(summary.get("models") or []) + list(summary.get("curves") or []):
        if item.get("student") is not None and item["student"] not in students:
            students.append(item["student"])
    return {student: palette[index % len(palette)] for index, student in enumerate(students)} | {None: "black"}


def _draw(axes, curve: dict, key: str, color: str, linestyle: str) -> bool:
    """One run's training curve (raw, thin; smoothed on top) and its validation points; False if no data."""
    metrics = read_metrics(curve.get("metrics"))
    train = [record for record in metrics["train"] if isinstance(record.get(key, record.get("loss")), (int, float))]
    if not train:
        return False
    seen, have_tokens = _training_tokens(train)
    x = [seen[record["step"]] for record in train]
    y = [record.get(key, record["loss"]) for record in train]
    label = curve.get("label", "?") + ("" if key in train[-1] else f" (no {key}: loss)")
    label += "" if have_tokens else " (x: steps)"
    axes.plot(x, y, color=color, linestyle=linestyle, linewidth=0.6, alpha=0.3)
    axes.plot(x, _smooth(y), color=color, linestyle=linestyle, linewidth=1.6, label=label)
    if key == "loss" and metrics["valid"]:
        per_step = x[-1] / train[-1]["step"] if train[-1]["step"] else 1.0
        valid_x = [seen.get(record["step"], record["step"] * per_step) for record in metrics["valid"]]
        axes.plot(valid_x, [record["loss"] for record in metrics["valid"]], color=color, linestyle="none",
                  marker="o", markersize=4)  # fmt: skip
    return True


def plot_curves(summary: dict, path: Path) -> Path:
    """Left: the distillation runs' logit KL; right: LM loss of the from-scratch and teacher-correction runs,
    with the held-out losses of the reference teacher and each distilled student as dashed lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(14, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    kl_axes, lm_axes = figure.subplots(1, 2)
    colors = _colors(summary)
    curves = summary.get("curves") or []
    drawn_kl = [_draw(kl_axes, curve, "kd", colors.get(curve.get("student"), "gray"), "-")
                for curve in curves if curve.get("role") == "distilled"]  # fmt: skip
    drawn_lm = [_draw(lm_axes, curve, "loss", colors.get(curve.get("student"), "gray"),
                      ":" if curve.get("role") == "teacher_corrected" else "-")
                for curve in curves if curve.get("role") != "distilled"]  # fmt: skip
    models = summary.get("models") or []
    reference = _reference(models, summary.get("reference_teacher"))
    if reference is not None and reference.get("heldout_loss") is not None:
        lm_axes.axhline(reference["heldout_loss"], color="black", linestyle="--", linewidth=1.0,
                        label=f"{reference.get('name')}: held-out {reference['heldout_loss']:.4f}")  # fmt: skip
    for row in models:
        if row.get("role") == "distilled" and row.get("heldout_loss") is not None:
            lm_axes.axhline(row["heldout_loss"], color=colors.get(row.get("student"), "gray"), linestyle="--",
                            linewidth=1.0, label=f"{row.get('name')}: held-out {row['heldout_loss']:.4f}")  # fmt: skip
    for axes, drawn in ((kl_axes, drawn_kl), (lm_axes, drawn_lm)):
        if not any(drawn):
            axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes, color="gray",
                      bbox={"facecolor": "white", "edgecolor": "none"})  # fmt: skip
        elif summary.get("token_budget"):
            axes.axvline(summary["token_budget"], color="gray", linestyle=":", linewidth=0.8,
                         label="token budget per student")  # fmt: skip
        if axes.get_legend_handles_labels()[0]:
            axes.legend(
                fontsize=8,
                title_fontsize=8,
                title="lines: training, dots: validation, dashed: held-out" if axes is lm_axes else None,
            )
        axes.set_xlabel("training tokens")
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _count(value)))
        axes.grid(alpha=0.3)
    kl_axes.set_title("distillation: KL to the teacher (training)")
    kl_axes.set_ylabel("logit KL per token (kd)")
    lm_axes.set_title("language-model loss")
    lm_axes.set_ylabel("cross-entropy per token")
    figure.suptitle(f"{summary.get('recipe', 'pipeline')}: training curves")
    figure.savefig(path, dpi=110, format="png")
    return Path(path)


# ---------------------------------------------------------------- task accuracy and throughput


def task_columns(summary: dict) -> list[str]:
    """The tasks of the accuracy table: the recipe's, in its order, then any other a row has."""
    columns = list((summary.get("benchmarks") or {}).get("tasks") or [])
    for row in summary.get("models") or []:
        columns += [task for task in row.get("tasks") or {} if task not in columns]
    return columns


def average_accuracy(row: dict, columns: list[str]) -> tuple[Optional[float], Optional[float]]:
    """Unweighted mean of the row's main metric over ``columns`` and its standard error (tasks independent);
    (None, None) unless the row has every task."""
    tasks = row.get("tasks") or {}
    if not columns or any(tasks.get(task, {}).get("value") is None for task in columns):
        return None, None
    values = [tasks[task]["value"] for task in columns]
    errors = [tasks[task].get("stderr") for task in columns]
    stderr = None if None in errors else sum(error**2 for error in errors) ** 0.5 / len(errors)
    return sum(values) / len(values), stderr


def speed_of(row: dict, throughput: list[dict]) -> Optional[dict]:
    """The timed entry of ``row``'s architecture: its own, else its student's, else the teacher's (a corrected
    teacher has the teacher's shape)."""
    for entry in throughput:
        if entry.get("name") == row.get("name"):
            return entry
    for entry in throughput:
        if row.get("student") is not None and entry.get("student") == row.get("student"):
            return entry
    if row.get("role") in ("teacher", "teacher_corrected"):
        return next((entry for entry in throughput if entry.get("role") == "teacher"), None)
    return None


def _accuracy(value: Optional[float], stderr: Optional[float] = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" + ("" if stderr is None else f" ± {100 * stderr:.1f}")


def _rate(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _ratio(value: Optional[float], reference: Optional[float]) -> str:
    return "-" if value is None or not reference else f"{value / reference:.2f}x"


def accuracy_lines(summary: dict) -> list[str]:
    """The accuracy table (percent, ± standard error) and what each column rests on; [] without task results."""
    models = [row for row in summary.get("models") or [] if row.get("tasks")]
    columns = task_columns(summary)
    if not models or not columns:
        return []
    lines = ["| model | " + " | ".join(columns) + " | average |", "|---|" + "---:|" * (len(columns) + 1)]
    for row in models:
        tasks = row["tasks"]
        cells = [_accuracy(tasks.get(task, {}).get("value"), tasks.get(task, {}).get("stderr")) for task in columns]
        lines.append("| " + " | ".join(_cell(text) for text in (row.get("name", "?"), *cells,
                                                                   _accuracy(*average_accuracy(row, columns)))) + " |")  # fmt: skip
    lines += ["", "Percent correct ± standard error (lm-eval's). What each column rests on:", ""]
    first = models[0]["tasks"]
    for task in columns:
        info = first.get(task) or {}
        pool = f", few-shot pool: {info['fewshot_pool']}" if info.get("num_fewshot") and info.get("fewshot_pool") else ""
        lines.append(f"- **{task}**: {info.get('metric', '?')}, {_tokens(info.get('items'))} items, "
                     f"{info.get('num_fewshot', '?')}-shot{pool}")  # fmt: skip
    return lines


def throughput_lines(summary: dict) -> list[str]:
    """The throughput table with student / teacher ratios; [] when nothing was timed."""
    throughput = summary.get("throughput") or []
    if not throughput:
        return []
    teacher = next((entry for entry in throughput if entry.get("role") == "teacher"), {})
    lines = ["| model | params | prefill tokens/s | decode tokens/s | prefill vs teacher | decode vs teacher |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for entry in throughput:
        lines.append("| " + " | ".join(_cell(text) for text in (
            entry.get("name", "?"), _count(entry.get("params")), _rate(entry.get("prefill_tokens_per_s")),
            _rate(entry.get("decode_tokens_per_s")),
            _ratio(entry.get("prefill_tokens_per_s"), teacher.get("prefill_tokens_per_s")),
            _ratio(entry.get("decode_tokens_per_s"), teacher.get("decode_tokens_per_s")),
        )) + " |")  # fmt: skip
    first = throughput[0]
    lines += ["", f"Batch {first.get('batch')}, {first.get('prompt_len')} prompt tokens, {first.get('output_len')} "
              f"generated (greedy, KV cache), {first.get('dtype')} on {first.get('device')}, Megatron engine "
              f"(`minitron bench`); a student's other models share its shape and speed."]  # fmt: skip
    return lines


def accuracy_points(summary: dict) -> list[tuple[dict, float, float, Optional[float]]]:
    """(row, decode tokens/s, average accuracy, its stderr) of every row that has both."""
    columns, points = task_columns(summary), []
    for row in summary.get("models") or []:
        accuracy, stderr = average_accuracy(row, columns)
        speed = speed_of(row, summary.get("throughput") or [])
        if accuracy is not None and speed is not None and speed.get("decode_tokens_per_s"):
            points.append((row, speed["decode_tokens_per_s"], accuracy, stderr))
    return points


def plot_accuracy_throughput(summary: dict, path: Path) -> Path:
    """Average task accuracy against decode tokens/s (:func:`accuracy_points`), marker area proportional to
    parameters, error bars one standard error."""
    columns, points = task_columns(summary), accuracy_points(summary)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    colors = _colors(summary)
    largest = max([row.get("params") or 1 for row, *_ in points], default=1)
    for row, speed, accuracy, stderr in points:
        color = colors.get(row.get("student"), "gray")
        size = 600 * (row.get("params") or largest) / largest
        axes.scatter([speed], [100 * accuracy], s=size, color=color, alpha=0.55, edgecolors="black", linewidths=0.6)
        if stderr is not None:
            axes.errorbar([speed], [100 * accuracy], yerr=[100 * stderr], color=color, capsize=3, linewidth=0.8)
        axes.annotate(f"{row.get('name')} ({_count(row.get('params'))})", (speed, 100 * accuracy), fontsize=8,
                      textcoords="offset points", xytext=(8, 6))  # fmt: skip
    axes.set_xlabel("decode tokens/s (minitron bench)")
    axes.set_ylabel(f"average accuracy, % ({', '.join(columns)})")
    axes.set_title(f"{summary.get('recipe', 'pipeline')}: accuracy vs throughput (marker area: parameters)")
    axes.grid(alpha=0.3)
    axes.margins(x=0.2, y=0.15)
    figure.savefig(path, dpi=110, format="png")
    return Path(path)


# ---------------------------------------------------------------- report.md


def alignment_lines(summary: dict) -> list[str]:
    """Held-out reward accuracy of the aligned students and the greedy answers to the fixed prompts; [] if none."""
    lines = []
    scored = [row for row in summary.get("models") or [] if row.get("rewards")]
    if scored:
        lines += ["Implicit rewards beta x (log pi - log pi_ref) on held-out preference pairs, against the model each "
                  "student's preference optimisation started from (`minitron rewards`):", "",
                  "| model | pairs | reward accuracy | margin | chosen | rejected |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for row in scored:
            rewards = row["rewards"]
            lines.append("| " + " | ".join(_cell(text) for text in (
                row.get("name", "?"), _tokens(rewards.get("pairs")), _accuracy(rewards.get("rewards/accuracies")),
                _loss(rewards.get("rewards/margins")), _loss(rewards.get("rewards/chosen")),
                _loss(rewards.get("rewards/rejected")))) + " |")  # fmt: skip
        lines.append("")
        lines.append("Task accuracy before and after alignment: the *distilled* and *aligned* rows of the tables above.")
    answered = summary.get("answers") or []
    if answered:
        lines += ["", "Greedy answers to the recipe's fixed prompts (`minitron generate`):"]
        prompts = [answer["prompt"] for answer in answered[0]["answers"]]
        for index, prompt in enumerate(prompts):
            lines += ["", f"**{_cell(prompt)}**", ""]
            for model in answered:
                text = model["answers"][index]["text"] if index < len(model["answers"]) else None
                lines.append(f"- *{_cell(model['name'])}*: {_cell(text if text is not None else '-').strip()}")
    return lines


def _relative(path: str, run_dir: Optional[Path]) -> str:
    """``path`` relative to the report's directory where it lies inside it (so the report renders anywhere)."""
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve())) if run_dir else str(path)
    except ValueError:
        return str(path)


def render_markdown(summary: dict, checks: list[dict], run_dir: Optional[Path] = None) -> str:
    """The report's text; ``checks`` as ``run_checks`` returns them (skipped ones included)."""
    models = summary.get("models") or []
    reference = _reference(models, summary.get("reference_teacher"))
    reference_loss = None if reference is None else reference.get("heldout_loss")
    eval_tokens = summary.get("eval_tokens")
    lines = [f"# Minitron pipeline: {summary.get('recipe', '?')}", ""]
    if summary.get("description"):
        lines += [str(summary["description"]).strip(), ""]
    lines += [
        f"**Teacher:** `{summary.get('teacher', '?')}` · **training data:** `{summary.get('train_data', '?')}` · "
        f"**held-out data:** `{summary.get('heldout_data', '?')}` ({_tokens(eval_tokens)} tokens evaluated) · "
        f"**token budget per student:** {_tokens(summary.get('token_budget'))}",
        "",
        "## Results",
        "",
        f"Gap and KL are measured against *{reference.get('name') if reference else 'no teacher row'}*.",
        "",
        "| model | params | non-embedding params | training tokens | held-out loss | gap to teacher | KL to teacher |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in models:
        lines.append("| " + " | ".join(_cell(text) for text in (
            row.get("name", "?"), _count(row.get("params")), _count(row.get("non_embedding_params")),
            _tokens(row.get("train_tokens")), _loss(row.get("heldout_loss")),
            _loss(_gap(row, reference_loss), signed=True), _loss(row.get("kl")),
        )) + " |")  # fmt: skip
    accuracy, speed = accuracy_lines(summary), throughput_lines(summary)
    if accuracy:
        lines += ["", "## Task accuracy", "", *accuracy]
    if speed:
        lines += ["", "## Throughput", "", *speed]
    if summary.get("accuracy_plot"):
        lines += ["", f"![accuracy vs throughput]({ACCURACY_PNG})"]
    alignment = alignment_lines(summary)
    if alignment:
        lines += ["", "## Alignment", "", *alignment]
    for search in summary.get("searches") or []:
        lines += ["", f"## Architecture search: {search.get('name', '?')}", "",
                  "The student's shape was searched to its budget (`minitron prune prune.target.*`); every scored "
                  "candidate:", "", str(search.get("table", "")).strip(), ""]  # fmt: skip
        lines += [f"![{Path(plot).stem}]({_relative(plot, run_dir)})" for plot in search.get("plots") or []]
    lines += ["", "## Checks", ""]
    verdicts = {True: "PASS", False: "FAIL", None: "SKIP"}
    lines += [f"- **{verdicts[check['passed']]}** {check['name']}: {check['detail']}" for check in checks]
    if not checks:
        lines.append("- no student has the rows a check needs")
    lines += ["", "## Loss curves", "", f"![loss curves]({CURVES_PNG})"]
    missing = [curve for curve in summary.get("curves") or [] if not read_metrics(curve.get("metrics"))["train"]]
    if missing:
        lines.append("")
    for curve in missing:
        lines.append(f"- no training records for {curve.get('label', '?')} (`{curve.get('metrics')}`)")
    lines += ["", "## Stages", "", "| stage | status | seconds | output |", "|---|---|---:|---|"]
    for stage in summary.get("stages") or []:
        seconds = stage.get("seconds")
        output = f"`{stage['output']}`" if stage.get("output") else "-"
        lines.append(f"| {_cell(stage.get('name', '?'))} | {_cell(stage.get('status', '?'))} | "
                     f"{'-' if seconds is None else f'{seconds:.1f}'} | {_cell(output)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, summary: dict) -> dict:
    """Write ``run_dir/report.md`` and ``run_dir/loss_curves.png``; returns ``{"report", "curves", "checks",
    "skipped"}`` (paths as strings; checks ``{"name", "passed", "detail"}``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    models = summary.get("models") or []
    reference = _reference(models, summary.get("reference_teacher"))
    checks = run_checks(models, None if reference is None else reference.get("heldout_loss"))
    report, curves = run_dir / REPORT_MD, run_dir / CURVES_PNG
    with atomic_path(curves) as temporary:
        plot_curves(summary, temporary)
    drawn = bool(accuracy_points(summary))
    if drawn:
        with atomic_path(run_dir / ACCURACY_PNG) as temporary:
            plot_accuracy_throughput(summary, temporary)
    else:
        (run_dir / ACCURACY_PNG).unlink(missing_ok=True)  # a plot of an earlier report would be stale
    write_text_atomic(report, render_markdown(summary | {"accuracy_plot": drawn}, checks, run_dir))
    return {
        "report": str(report),
        "curves": str(curves),
        "accuracy_plot": str(run_dir / ACCURACY_PNG) if drawn else None,
        "checks": [check for check in checks if check["passed"] is not None],
        "skipped": [{"name": check["name"], "detail": check["detail"]} for check in checks if check["passed"] is None],
    }
