"""PNG plots of importance scores (matplotlib's object API with the Agg canvas: no display needed).

- ``importance_layers.png``: the depth metrics per layer: block influence, the LM-loss increase when
  a layer alone is dropped, and the LM loss with each run of ``k`` consecutive layers dropped
  (plotted at the run's first layer).
- ``importance_units.png``: embedding channels sorted by score, the MLP neurons of every layer
  (heatmap, neurons in index order) and the attention heads of every layer (heatmap, query groups
  marked).
"""

from __future__ import annotations

from pathlib import Path

import torch

from minitron.prune.scores import ImportanceScores

LAYERS_PNG = "importance_layers.png"
UNITS_PNG = "importance_units.png"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _title(scores: ImportanceScores) -> str:
    meta = scores.meta
    aggregation = meta.get("aggregation") or {}
    parts = [f"{meta['num_samples']} x {meta['seq_length']} tokens"] if "num_samples" in meta else []
    if aggregation:
        parts.append(f"batch {aggregation.get('batch')}, seq {aggregation.get('seq')}")
    return ", ".join(parts)


def plot_layers(scores: ImportanceScores, path: Path) -> Path:
    """Per-layer importance: the three depth metrics, one panel each."""
    num_layers = len(scores.block_influence)
    layers = list(range(num_layers))
    figure = _figure(10, 8)
    bi_axes, loss_axes, window_axes = figure.subplots(3, 1, sharex=True)
    bi_axes.bar(layers, scores.block_influence.tolist(), color="tab:blue")
    bi_axes.set_ylabel("1 - cos(in, out)")
    bi_axes.set_title("block influence (higher: more important)")
    if scores.layer_loss is not None:
        loss_axes.bar(layers, scores.layer_loss.tolist(), color="tab:orange")
        loss_axes.axhline(0.0, color="black", linewidth=0.5)
    else:
        loss_axes.text(0.5, 0.5, "not computed", ha="center", va="center", transform=loss_axes.transAxes)
    loss_axes.set_ylabel("loss increase")
    loss_axes.set_title("LM loss with the layer dropped, minus the full model's")
    for k, values in sorted(scores.window_loss.items()):
        window_axes.plot(list(range(len(values))), values.tolist(), marker="o", markersize=3, label=f"k={k}")
    if scores.base_loss is not None:
        window_axes.axhline(scores.base_loss, color="black", linestyle="--", linewidth=0.8, label="full model")
    if scores.window_loss:
        window_axes.legend(fontsize=8)
    else:
        window_axes.text(0.5, 0.5, "not computed", ha="center", va="center", transform=window_axes.transAxes)
    window_axes.set_ylabel("LM loss")
    window_axes.set_title("LM loss with layers i .. i+k-1 dropped (lower: better to drop)")
    window_axes.set_xlabel("layer (first of the run)")
    window_axes.set_xticks(layers if num_layers <= 40 else layers[::2])
    figure.suptitle(f"Layer importance ({_title(scores)})")
    figure.savefig(path, dpi=110)
    return Path(path)


def _per_layer(values: torch.Tensor):
    """Each layer's row divided by its maximum: units are ranked within their layer."""
    values = values.float()
    return (values / values.amax(dim=1, keepdim=True).clamp_min(1e-30)).numpy()


def _layer_ticks(axes, num_layers: int) -> None:
    axes.set_yticks(list(range(0, num_layers, 1 if num_layers <= 32 else 2)))


def plot_units(scores: ImportanceScores, path: Path) -> Path:
    """Per-unit importance: hidden channels sorted, FFN neurons and heads as layer x unit heatmaps."""
    figure = _figure(12, 10)
    hidden_axes, ffn_axes, heads_axes = figure.subplots(3, 1, height_ratios=[1, 1.4, 1.2])
    ranked = torch.sort(scores.hidden.float(), descending=True).values
    hidden_axes.plot(ranked.tolist(), color="tab:blue")
    hidden_axes.set_yscale("log" if float(ranked[-1]) > 0 else "linear")
    hidden_axes.set_xlabel("channel rank")
    hidden_axes.set_ylabel("score (sum over norms)")
    hidden_axes.set_title(f"embedding channels, sorted ({len(ranked)})")

    image = ffn_axes.imshow(_per_layer(scores.ffn), aspect="auto", interpolation="nearest", cmap="viridis", vmin=0)
    figure.colorbar(image, ax=ffn_axes, label="score / layer max")
    ffn_axes.set_xlabel("neuron")
    ffn_axes.set_ylabel("layer")
    ffn_axes.set_title(f"MLP neurons ({scores.ffn.shape[1]} per layer; ranked within each layer)")
    _layer_ticks(ffn_axes, scores.ffn.shape[0])

    heads = scores.heads.float()
    image = heads_axes.imshow(_per_layer(heads), aspect="auto", interpolation="nearest", cmap="magma")
    figure.colorbar(image, ax=heads_axes, label="score / layer max")
    _layer_ticks(heads_axes, heads.shape[0])
    num_groups = scores.groups.shape[1]
    per_group = heads.shape[1] // num_groups
    for boundary in range(1, num_groups):
        heads_axes.axvline(boundary * per_group - 0.5, color="white", linewidth=1.0)
    heads_axes.set_xlabel(f"head ({num_groups} query groups of {per_group})")
    heads_axes.set_ylabel("layer")
    heads_axes.set_title("attention heads")
    figure.suptitle(f"Unit importance ({_title(scores)})")
    figure.savefig(path, dpi=110)
    return Path(path)


def save_plots(scores: ImportanceScores, directory: Path) -> list[Path]:
    """Write both plots into ``directory``; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [plot_layers(scores, directory / LAYERS_PNG), plot_units(scores, directory / UNITS_PNG)]
