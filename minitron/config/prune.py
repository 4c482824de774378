"""Schemas of importance estimation (``minitron importance``); registered by :func:`register`.

``conf/importance.yaml`` composes :class:`ImportanceCommand`: the model, its parallel layout, the
calibration text (``data``), how many windows of it to use (``calib``) and what to estimate
(``importance``). The paper's calibration is 1024 samples of 4096 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from minitron.config.common import MAX_SEED, DataConfig, ModelConfig, ParallelConfig, check_range
from minitron.errors import MinitronError

BATCH_REDUCTIONS = ("l2", "mean", "max")  # over calibration samples (minitron.prune.aggregation)
SEQ_REDUCTIONS = ("mean", "l2", "max")  # over the tokens of one sample
# per-layer importance (minitron.prune.importance): block influence 1 - cos(input, output), the LM loss with
# the layer dropped, the LM loss with a contiguous run of layers dropped
DEPTH_METRICS = ("block_influence", "layer_loss", "window_loss")
RANKINGS = ("importance", "random")  # prune.ranking: by the scores, or the seeded random baseline


@dataclass
class CalibConfig:
    num_samples: int = 1024  # calibration windows (the paper: 1024); the data must hold this many
    seq_length: int = 4096  # tokens per window (the paper: 4096); at most the model's max_position_embeddings
    micro_batch_size: int = 1  # windows per forward pass on one rank

    def __post_init__(self):
        for name in ("num_samples", "micro_batch_size"):
            check_range(f"calib.{name}", getattr(self, name), at_least=1)
        check_range("calib.seq_length", self.seq_length, at_least=2)


@dataclass
class ImportanceConfig:
    batch_aggregation: str = "l2"  # over calibration samples: l2 (the paper's best) | mean | max
    seq_aggregation: str = "mean"  # over the tokens of a sample, of |activation|: mean (the paper's best) | l2 | max
    depth_metrics: list[str] = field(default_factory=lambda: list(DEPTH_METRICS))  # layer scores: block_influence (free, with the first pass) | layer_loss (a pass per layer) | window_loss (a pass per run of layers)
    window_sizes: Optional[list[int]] = None  # run lengths k for window_loss (layers dropped); null: [num_layers // 2]
    loss_num_samples: Optional[int] = None  # compute the loss metrics on the first N windows only (null: all)
    plots: bool = True  # also write PNG plots of the scores

    def __post_init__(self):
        if self.batch_aggregation not in BATCH_REDUCTIONS:
            raise MinitronError(
                f"importance.batch_aggregation={self.batch_aggregation!r}: use one of {', '.join(BATCH_REDUCTIONS)}"
            )
        if self.seq_aggregation not in SEQ_REDUCTIONS:
            raise MinitronError(
                f"importance.seq_aggregation={self.seq_aggregation!r}: use one of {', '.join(SEQ_REDUCTIONS)}"
            )
        unknown = [m for m in self.depth_metrics if m not in DEPTH_METRICS]
        if unknown:
            raise MinitronError(f"importance.depth_metrics: unknown {unknown}; use any of {', '.join(DEPTH_METRICS)}")
        if self.window_sizes is not None and any(k < 1 for k in self.window_sizes):
            raise MinitronError(f"importance.window_sizes={list(self.window_sizes)}: every size must be >= 1")
        check_range("importance.loss_num_samples", self.loss_num_samples, at_least=1, fix="or null for all")


@dataclass
class ImportanceCommand:
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)  # calibration text (.txt, .jsonl, .parquet or a directory)
    calib: CalibConfig = field(default_factory=CalibConfig)
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    output: str = MISSING  # directory to write: importance.safetensors, importance.json, config.yaml, plots
    overwrite: bool = False  # replace an output directory that already holds something


@dataclass
class PruneTargets:
    """What to prune to; every size is optional (None keeps the source's)."""

    hidden_size: Optional[int] = None  # embedding channels (a multiple of the kept num_attention_heads)
    ffn_hidden_size: Optional[int] = None  # MLP neurons per layer
    num_attention_heads: Optional[int] = None  # query heads per layer (divisible by num_query_groups)
    num_query_groups: Optional[int] = None  # key/value heads per layer (ranked by their heads)
    num_layers: Optional[int] = None  # layers to keep, chosen by depth_metric
    drop_layers: Optional[list[int]] = None  # explicit 0-based layers to drop (instead of num_layers)
    depth_metric: str = "window_loss"  # window_loss: contiguous run with the lowest LM loss (the paper's best) | layer_loss | block_influence
    ranking: str = "importance"  # importance | random (the ablation baseline, seeded)
    seed: int = 0  # seed of the random ranking

    def __post_init__(self):
        for name in ("hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "num_layers"):
            check_range(f"prune.{name}", getattr(self, name), at_least=1, fix="or null to keep the source's")
        if self.depth_metric not in DEPTH_METRICS:
            raise MinitronError(f"prune.depth_metric={self.depth_metric!r}: use one of {', '.join(DEPTH_METRICS)}")
        if self.ranking not in RANKINGS:
            raise MinitronError(f"prune.ranking={self.ranking!r}: use one of {', '.join(RANKINGS)}")
        for layer in self.drop_layers or []:
            check_range("prune.drop_layers", layer, at_least=0, fix="layers are numbered from 0")
        check_range("prune.seed", self.seed, at_least=0, at_most=MAX_SEED)


@dataclass
class PruneSettings(PruneTargets):
    """Targets and ranking of ``minitron prune``, and where to take the scores from."""

    scores: Optional[str] = None  # saved importance scores of this model (fingerprint checked): no forward passes

    def targets(self) -> PruneTargets:
        fields = {f: getattr(self, f) for f in PruneTargets.__dataclass_fields__}
        fields["drop_layers"] = None if self.drop_layers is None else list(self.drop_layers)
        return PruneTargets(**fields)


@dataclass
class PruneCommand:
    model: ModelConfig = field(default_factory=ModelConfig)  # the teacher: a Hugging Face directory
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # layout of the importance forward passes
    data: DataConfig = field(default_factory=DataConfig)  # calibration text (.txt, .jsonl, .parquet or a directory)
    calib: CalibConfig = field(default_factory=CalibConfig)
    # aggregation and loss_num_samples apply; the depth metrics are the ones the targets need
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    prune: PruneSettings = field(default_factory=PruneSettings)
    output: str = MISSING  # directory to write the student (Hugging Face) with its scores and summary
    overwrite: bool = False  # replace an output directory that holds another model


def register() -> None:
    """Register the importance and prune schemas with Hydra's ConfigStore (conf/importance.yaml, conf/prune.yaml)."""
    ConfigStore.instance().store(name="importance_schema", node=ImportanceCommand)
    ConfigStore.instance().store(name="prune_schema", node=PruneCommand)
