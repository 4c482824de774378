"""From importance scores and pruning targets to a plan: the student architecture and kept units.

A :class:`PrunePlan` says which source layers survive (in order) and, per surviving layer, which
embedding channels, MLP neurons, query groups and heads are kept (indices in Hugging Face order,
sorted ascending so that pruning to the original sizes is the identity). Width is homogeneous, as in
Megatron-Core: every layer keeps the same *number* of neurons/heads, each its own most important ones.
``head_dim`` is always kept.

Heads are ranked within their query group: each kept group keeps its ``heads / groups`` best heads,
so grouped-query attention stays regular. Query groups, when pruned, are ranked by their heads.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from minitron.config.prune import DEPTH_METRICS, PruneTargets
from minitron.errors import MinitronError
from minitron.models.arch import ModelArch
from minitron.prune.scores import ImportanceScores


@dataclasses.dataclass
class PrunePlan:
    source: ModelArch
    student: ModelArch
    layers: list[int]  # kept source layers, in order; student layer j is source layer layers[j]
    hidden: torch.Tensor  # [student hidden] kept channels
    ffn: list[torch.Tensor]  # per student layer: [student ffn] kept neurons
    groups: list[torch.Tensor]  # per student layer: [student groups] kept query groups
    heads: list[torch.Tensor]  # per student layer: [student heads] kept heads (grouped by kept group)

    def summary(self) -> dict:
        return {
            "source": self.source.to_dict(),
            "student": self.student.to_dict(),
            "params_before": self.source.params,
            "params_after": self.student.params,
            "non_embedding_params_before": self.source.non_embedding_params,
            "non_embedding_params_after": self.student.non_embedding_params,
            "kept_fraction_non_embedding": self.student.non_embedding_params / self.source.non_embedding_params,
            "kept_layers": self.layers,
            "dropped_layers": [i for i in range(self.source.num_layers) if i not in self.layers],
        }


def _check_size(field: str, target: Optional[int], source: int) -> int:
    if target is None:
        return source
    if target < 1:
        raise MinitronError(f"prune.{field}={target}: must be >= 1")
    if target > source:
        raise MinitronError(f"prune.{field}={target} is larger than the source's {field}={source}; pruning only removes")
    return target


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest scores, ascending (ties broken by the lower index)."""
    order = torch.argsort(-scores.double(), stable=True)
    return torch.sort(order[:k]).values


def randomized(scores: ImportanceScores, seed: int) -> ImportanceScores:
    """Scores of the same shapes drawn at random (the ablation baseline for ``prune.ranking=random``)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(t):
        return torch.rand(t.shape, generator=gen, dtype=torch.float64).float()

    return dataclasses.replace(
        scores,
        hidden=rand(scores.hidden), ffn=rand(scores.ffn), heads=rand(scores.heads), groups=rand(scores.groups),
        block_influence=rand(scores.block_influence),
        layer_loss=None if scores.layer_loss is None else rand(scores.layer_loss),
        window_loss={k: rand(v) for k, v in scores.window_loss.items()},
    )  # fmt: skip


def select_layers(arch: ModelArch, scores: ImportanceScores, targets: PruneTargets) -> list[int]:
    """Source layers kept, from ``drop_layers`` or ``num_layers`` + ``depth_metric``."""
    total = arch.num_layers
    if targets.drop_layers is not None and targets.num_layers is not None:
        raise MinitronError("prune.num_layers and prune.drop_layers are exclusive: set one of them")
    if targets.drop_layers is not None:
        drop = sorted(set(int(i) for i in targets.drop_layers))
        bad = [i for i in drop if not 0 <= i < total]
        if bad:
            raise MinitronError(f"prune.drop_layers: unknown layer index {bad[0]} (the model has layers 0..{total - 1})")
        if len(drop) == total:
            raise MinitronError("prune.drop_layers drops every layer; keep at least one")
        return [i for i in range(total) if i not in drop]
    keep = _check_size("num_layers", targets.num_layers, total)
    n_drop = total - keep
    if n_drop == 0:
        return list(range(total))
    metric = targets.depth_metric
    if metric not in DEPTH_METRICS:
        raise MinitronError(f"prune.depth_metric={metric!r}: use one of {', '.join(DEPTH_METRICS)}")
    if metric == "window_loss":
        if n_drop not in scores.window_loss:
            raise MinitronError(
                f"the importance scores have no contiguous-window losses for {n_drop} layers "
                f"(have {sorted(scores.window_loss)}); re-run importance for prune.num_layers={keep}"
            )
        start = int(torch.argmin(scores.window_loss[n_drop].double()))
        drop = set(range(start, start + n_drop))
    else:
        values = scores.block_influence if metric == "block_influence" else scores.layer_loss
        if values is None:
            raise MinitronError(f"the importance scores have no {metric} layer scores; re-run importance with it")
        drop = set(torch.argsort(values.double(), stable=True)[:n_drop].tolist())
    return [i for i in range(total) if i not in drop]


def plan_pruning(arch: ModelArch, scores: ImportanceScores, targets: PruneTargets, tp: int = 1) -> PrunePlan:
    """The student architecture and kept units for ``targets`` (validated, with clear errors)."""
    if targets.ranking not in ("importance", "random"):
        raise MinitronError(f"prune.ranking={targets.ranking!r}: use importance or random")
    if targets.ranking == "random":
        scores = randomized(scores, targets.seed)
    hidden = _check_size("hidden_size", targets.hidden_size, arch.hidden_size)
    ffn = _check_size("ffn_hidden_size", targets.ffn_hidden_size, arch.ffn_hidden_size)
    groups = _check_size("num_query_groups", targets.num_query_groups, arch.num_query_groups)
    heads = _check_size("num_attention_heads", targets.num_attention_heads, arch.num_attention_heads)
    if targets.num_query_groups is not None and targets.num_attention_heads is None:
        heads = groups * (arch.num_attention_heads // arch.num_query_groups)  # keep heads per group
    if heads % groups:
        raise MinitronError(
            f"prune.num_attention_heads={heads} is not divisible by num_query_groups={groups}: "
            "every query group needs the same number of heads"
        )
    if heads // groups > arch.num_attention_heads // arch.num_query_groups:
        raise MinitronError(
            f"prune.num_attention_heads={heads} with num_query_groups={groups} needs {heads // groups} heads per "
            f"group, more than the source's {arch.num_attention_heads // arch.num_query_groups}"
        )
    if hidden % heads:
        raise MinitronError(
            f"prune.hidden_size={hidden} is not a multiple of num_attention_heads={heads}; Hugging Face "
            f"transformers refuses such a config: use a multiple of {heads}"
        )
    for field, value in (("num_attention_heads", heads), ("num_query_groups", groups), ("ffn_hidden_size", ffn)):
        if value % tp:
            raise MinitronError(f"prune.{field}={value} is not divisible by parallel.tp={tp}; choose a multiple of {tp}")
    expected = {"hidden": (arch.hidden_size,), "ffn": (arch.num_layers, arch.ffn_hidden_size),
                "heads": (arch.num_layers, arch.num_attention_heads), "groups": (arch.num_layers, arch.num_query_groups)}  # fmt: skip
    for name, shape in expected.items():
        if tuple(getattr(scores, name).shape) != shape:
            raise MinitronError(f"importance scores: {name} has shape {tuple(getattr(scores, name).shape)}, "
                                f"the model needs {shape}; they belong to another model")  # fmt: skip

    layers = select_layers(arch, scores, targets)
    heads_per_group_src = arch.num_attention_heads // arch.num_query_groups
    heads_per_group = heads // groups
    kept_ffn, kept_groups, kept_heads = [], [], []
    for layer in layers:
        kept_ffn.append(_top(scores.ffn[layer], ffn))
        layer_groups = _top(scores.groups[layer], groups)
        kept_groups.append(layer_groups)
        per_group = []
        for group in layer_groups.tolist():
            members = torch.arange(group * heads_per_group_src, (group + 1) * heads_per_group_src)
            per_group.append(members[_top(scores.heads[layer][members], heads_per_group)])
        kept_heads.append(torch.cat(per_group))
    student = dataclasses.replace(
        arch, num_layers=len(layers), hidden_size=hidden, ffn_hidden_size=ffn,
        num_attention_heads=heads, num_query_groups=groups,
    )  # fmt: skip
    return PrunePlan(arch, student, layers, _top(scores.hidden, hidden), kept_ffn, kept_groups, kept_heads)


def needed_depth_metrics(arch: ModelArch, targets: PruneTargets) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The depth metrics (and contiguous-window sizes) that ``targets`` needs estimated.

    Block influence always comes with the first pass; the loss metrics cost one forward pass per
    candidate and are estimated only when ``num_layers`` asks for them.
    """
    if targets.num_layers is None or targets.num_layers >= arch.num_layers:
        return ("block_influence",), ()
    if targets.depth_metric == "window_loss":
        return ("block_influence", "window_loss"), (arch.num_layers - targets.num_layers,)
    if targets.depth_metric == "layer_loss":
        return ("block_influence", "layer_loss"), ()
    return ("block_influence",), ()


def check_scores_cover(scores: ImportanceScores, arch: ModelArch, targets: PruneTargets, scores_dir, model_path,
                       data_path) -> None:  # fmt: skip
    """Refuse saved scores that lack a depth metric ``targets`` needs, naming the importance run that adds it."""
    metrics, windows = needed_depth_metrics(arch, targets)
    missing = [m for m in metrics if m == "layer_loss" and scores.layer_loss is None]
    missing_windows = [k for k in windows if k not in scores.window_loss]
    if not missing and not missing_windows:
        return
    data = scores.meta.get("data_path") or data_path or "CALIB_FILE"
    command = (f"minitron importance model.path={model_path} data.path={data} output=SCORES "
               f"importance.depth_metrics=[{','.join(metrics)}]")  # fmt: skip
    if missing_windows:
        command += f" importance.window_sizes=[{','.join(map(str, missing_windows))}]"
        what = (f"contiguous-window losses for dropping {missing_windows[0]} layers (prune.num_layers="
                f"{targets.num_layers}; it has window sizes {sorted(scores.window_loss) or 'none'})")  # fmt: skip
    else:
        what = "per-layer LM losses (prune.depth_metric=layer_loss)"
    raise MinitronError(f"prune.scores={scores_dir} has no {what}; compute them with `{command}` and pass "
                        "prune.scores=SCORES")  # fmt: skip


def placeholder_scores(arch: ModelArch, targets: PruneTargets) -> ImportanceScores:
    """Uniform scores of the right shapes: lets :func:`plan_pruning` check targets before any work."""
    L = arch.num_layers
    ones = torch.ones
    windows = {}
    if targets.num_layers is not None and targets.num_layers < L:
        windows[L - targets.num_layers] = ones(targets.num_layers + 1)
    return ImportanceScores(
        hidden=ones(arch.hidden_size), ffn=ones(L, arch.ffn_hidden_size), heads=ones(L, arch.num_attention_heads),
        groups=ones(L, arch.num_query_groups), block_influence=ones(L), layer_loss=ones(L), window_loss=windows,
    )  # fmt: skip
