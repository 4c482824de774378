"""The architecture search's report, written into the student's ``search/`` directory.

- ``candidates.json``: the budget, the space (axes, valid and feasible counts), what ranked, every scored row;
- ``candidates.csv`` and ``candidates.md``: one row per scored candidate (:data:`COLUMNS`): shape, parameters,
  non-embedding parameters, memory, FLOPs speedup, measured speedup (when timed), loss at rung (b), loss and KL
  at rung (c), feasible, chosen;
- ``loss_vs_params.png`` and ``loss_vs_speed.png``: each rung's loss against parameters and against speed
  (measured speedup when timed, else the FLOPs ratio; the axis label says which), the chosen one circled.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from minitron.fsutil import write_text_atomic
from minitron.prune.plots import _figure

COLUMNS = ("name", "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
           "params", "non_embedding_params", "memory_gb", "flops_speedup", "measured_speedup", "loss_b", "loss_c",
           "kl_c", "feasible", "chosen")  # fmt: skip
PARAMS_PNG = "loss_vs_params.png"
SPEED_PNG = "loss_vs_speed.png"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) and value >= 10000 else str(value)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], x_key: str, x_label: str, path: Path) -> None:
    figure = _figure(6.5, 4.2)
    axes = figure.add_subplot()
    for key, label, marker in (("loss_b", "zero-shot LM loss (rung b)", "o"),
                               ("loss_c", "held-out loss after short distillation (rung c)", "s")):  # fmt: skip
        points = [(row[x_key], row[key]) for row in rows if row.get(key) is not None and row.get(x_key) is not None]
        if points:
            axes.scatter(*zip(*points), label=label, marker=marker, s=22, alpha=0.8)
        chosen = [(row[x_key], row[key]) for row in rows if row["chosen"] and row.get(key) is not None]
        if chosen:
            axes.scatter(*zip(*chosen), s=140, facecolors="none", edgecolors="red", linewidths=1.5)
    axes.set_xlabel(x_label)
    axes.set_ylabel("loss (nats/token)")
    axes.set_title("architecture search candidates (red circle: chosen)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def write_search_report(directory: Path, summary: dict, rows: list[dict]) -> list[Path]:
    """Write the table, JSON and plots of ``rows`` (``summary``: budget, space, ranking) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / "candidates.json", json.dumps({**summary, "candidates": rows}, indent=2))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(directory / "candidates.csv", buffer.getvalue())
    write_text_atomic(directory / "candidates.md", markdown_table(rows))
    _plot(rows, "params", "parameters", directory / PARAMS_PNG)
    measured = all(row.get("measured_speedup") is not None for row in rows)
    speed_key, speed_label = (("measured_speedup", "measured speedup over the teacher (this device)") if measured
                              else ("flops_speedup", "speedup over the teacher (FLOPs per token ratio)"))  # fmt: skip
    _plot(rows, speed_key, speed_label, directory / SPEED_PNG)
    return [directory / name for name in ("candidates.json", "candidates.csv", "candidates.md", PARAMS_PNG, SPEED_PNG)]
