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


PRIMARY_BUDGETS = ("params", "non_embedding_params", "memory_gb", "speedup")  # prune.target.*: set at most one
EXPLICIT_SIZES = ("hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "num_layers", "drop_layers")
RANK_BY = ("kl", "loss")  # rung (c) ranks by held-out KL(teacher || student) or held-out LM loss


@dataclass
class BudgetTarget:
    """A budget for the architecture search (``prune.target.*``): one primary metric, with a tolerance.

    Size budgets (params, non_embedding_params, memory_gb) are upper bounds: a candidate is feasible when its
    exact count v is in [(1 - tolerance) B, B]. ``speedup`` is measured on this device (the candidate's
    generation time over the teacher's on the same prompts, see minitron.prune.search_score) and must be
    >= (1 - tolerance) S; the analytic rung keeps candidates whose FLOPs-per-token ratio reaches that.
    """

    params: Optional[float] = None  # total parameters of the student, embeddings included (e.g. 4.5e9)
    non_embedding_params: Optional[float] = None  # parameters outside the embedding table and LM head
    memory_gb: Optional[float] = None  # bf16 weights + bf16 KV cache at memory_batch_size x memory_seq_length, 1e9 bytes
    speedup: Optional[float] = None  # generation-time speedup over the teacher, measured on this device (e.g. 2.0)
    tolerance: float = 0.05  # how far under a size budget (or under a speedup) still counts (the paper: +-5%)
    memory_batch_size: int = 1  # sequences held in the KV cache for memory_gb (ModelOpt: 1)
    memory_seq_length: int = 4096  # tokens per sequence in the KV cache for memory_gb (ModelOpt: 4096)
    bench_batch_size: int = 1  # speedup: prompts generated at once
    bench_prompt_length: int = 128  # speedup: prompt tokens (prefill)
    bench_output_length: int = 32  # speedup: new tokens (decode)
    bench_repeats: int = 3  # speedup: timed runs (median) after one warm-up, per model

    def __post_init__(self):
        set_budgets = [name for name in PRIMARY_BUDGETS if getattr(self, name) is not None]
        if len(set_budgets) > 1:
            raise MinitronError(
                f"prune.target: two primary budgets at once ({', '.join(f'prune.target.{n}' for n in set_budgets)}); "
                "set exactly one of them"
            )
        for name in PRIMARY_BUDGETS:
            check_range(f"prune.target.{name}", getattr(self, name), above=0)
        check_range("prune.target.speedup", self.speedup, above=1, fix="a student is smaller: it runs faster")
        check_range("prune.target.tolerance", self.tolerance, at_least=0, below=1)
        for name in ("memory_batch_size", "memory_seq_length", "bench_batch_size", "bench_prompt_length",
                     "bench_output_length", "bench_repeats"):  # fmt: skip
            check_range(f"prune.target.{name}", getattr(self, name), at_least=1)

    def primary(self) -> Optional[tuple[str, float]]:
        """``(metric, budget)`` of the one budget set, or None (explicit targets)."""
        return next(((name, getattr(self, name)) for name in PRIMARY_BUDGETS if getattr(self, name) is not None), None)


@dataclass
class SearchSettings:
    """The search space and the scoring rungs (``prune.search.*``); used only when a ``prune.target`` is set.

    Every width axis takes the source size minus multiples of its divisor, down to (1 - max pruning fraction)
    of the source; depth likewise. Defaults follow NVIDIA: ModelOpt's divisors (hidden 256, FFN 512, layers 2),
    and the pruning limits of its Nemotron-3-Nano tutorial (width 30%, depth 15%), tighter than ModelOpt's
    40% / 20% defaults, because the papers found hidden size the most fragile axis and depth pruning worse than
    width pruning at equal parameters; query groups are not pruned (ModelOpt dropped that axis in 0.41).
    """

    hidden_size_divisor: int = 256  # hidden sizes tried: source - k x divisor (ModelOpt: 256); must divide the source's
    ffn_hidden_size_divisor: int = 512  # FFN sizes tried: source - k x divisor (ModelOpt: 512)
    heads_per_group_divisor: int = 1  # query heads per group tried: source - k x divisor (heads stay within groups)
    num_query_groups_divisor: int = 1  # query groups tried: source - k x divisor
    num_layers_divisor: int = 2  # layer counts tried: source - k x divisor (ModelOpt: 2)
    max_width_pruning: float = 0.30  # largest fraction of hidden, FFN and heads removed (NVIDIA's tutorial: 0.30)
    max_query_groups_pruning: float = 0.0  # largest fraction of query groups removed (0: not pruned, as ModelOpt)
    max_depth_pruning: float = 0.15  # largest fraction of layers removed (NVIDIA's tutorial: 0.15)
    top_n: int = 10  # rung (b): candidates (largest by the budget's metric first) pruned in memory and scored (ModelOpt: 10)
    score_num_samples: Optional[int] = None  # rung (b): calibration windows for the LM loss (null: all calib windows)
    measure_speed: bool = False  # rung (b): also time generation of every candidate and the teacher (always for speedup)
    top_k: int = 0  # rung (c): best rung-(b) candidates distilled briefly and ranked on held-out data (0: skip rung c)
    distill_steps: int = 300  # rung (c): distillation steps per candidate (the paper: rankings settle by ~300)
    distill_data: Optional[str] = None  # rung (c): tokenized training prefix (`minitron data prepare`) for distill
    distill_overrides: list[str] = field(default_factory=list)  # rung (c): extra `minitron distill` settings, key=value
    heldout_data: Optional[str] = None  # rung (c): held-out text (.txt/.jsonl/.parquet) for `minitron eval`
    heldout_seq_length: int = 512  # rung (c): tokens per held-out window
    heldout_max_windows: Optional[int] = None  # rung (c): at most this many held-out windows (null: all)
    rank_by: str = "kl"  # rung (c): kl = held-out KL(teacher || student) | loss = held-out LM loss
    cache: Optional[str] = None  # per-candidate scores, kept across runs so a killed search resumes (null: OUTPUT.search)

    def __post_init__(self):
        for name in ("hidden_size_divisor", "ffn_hidden_size_divisor", "heads_per_group_divisor",
                     "num_query_groups_divisor", "num_layers_divisor", "top_n", "distill_steps", "heldout_seq_length"):  # fmt: skip
            check_range(f"prune.search.{name}", getattr(self, name), at_least=1)
        check_range("prune.search.top_k", self.top_k, at_least=0)
        check_range("prune.search.score_num_samples", self.score_num_samples, at_least=1, fix="or null for all")
        check_range("prune.search.heldout_max_windows", self.heldout_max_windows, at_least=1, fix="or null for all")
        for name in ("max_width_pruning", "max_query_groups_pruning", "max_depth_pruning"):
            check_range(f"prune.search.{name}", getattr(self, name), at_least=0, below=1)
        if self.rank_by not in RANK_BY:
            raise MinitronError(f"prune.search.rank_by={self.rank_by!r}: use one of {', '.join(RANK_BY)}")
        if self.top_k > self.top_n:
            raise MinitronError(f"prune.search.top_k={self.top_k} is more than top_n={self.top_n}: rung (c) distils "
                                "the best of rung (b); lower top_k or raise top_n")  # fmt: skip
        if self.top_k and (self.distill_data is None or self.heldout_data is None):
            raise MinitronError(f"prune.search.top_k={self.top_k} distils candidates: set prune.search.distill_data="
                                "TOKENIZED_PREFIX and prune.search.heldout_data=TEXT (or top_k=0)")  # fmt: skip
        for override in self.distill_overrides:
            if "=" not in override:
                raise MinitronError(f"prune.search.distill_overrides: {override!r} is not key=value")


@dataclass
class PruneSettings(PruneTargets):
    """Targets and ranking of ``minitron prune``, and where to take the scores from."""

    scores: Optional[str] = None  # saved importance scores of this model (fingerprint checked): no forward passes
    target: BudgetTarget = field(default_factory=BudgetTarget)  # a budget instead of explicit sizes: searches the shape
    search: SearchSettings = field(default_factory=SearchSettings)  # search space and scoring rungs (with a target)

    def __post_init__(self):
        super().__post_init__()
        explicit = [name for name in EXPLICIT_SIZES if getattr(self, name) is not None]
        if self.target.primary() is not None and explicit:
            raise MinitronError(
                f"prune.target.{self.target.primary()[0]} searches the shape; it cannot be combined with explicit "
                f"sizes ({', '.join(f'prune.{n}' for n in explicit)}): drop one or the other"
            )

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
