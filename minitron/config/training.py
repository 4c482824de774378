"""Schemas of ``minitron train``: the ``train`` group (``conf/train/*.yaml``) and the command around it.

``conf/train.yaml`` composes :class:`TrainCommand`; its ``train`` node is one file of the
``conf/train/`` group (``default``, ``teacher_correction``), typed by :class:`TrainSettings`; its ``model``
node adds ``init`` (pretrained weights or random initialisation) to the shared model schema. Checks
that need only the config run in ``__post_init__``; those that need the model, the data or the number
of processes run in :mod:`minitron.training.checks` before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from minitron.config.common import MAX_SEED, ModelConfig, ParallelConfig, check_range
from minitron.config.scale import ScaleSettings
from minitron.errors import MinitronError

DECAY_STYLES = ("cosine", "linear", "constant")
MODEL_INITS = ("pretrained", "random")
VERIFY_MODES = ("checksum", "size")


@dataclass
class TrainModelConfig(ModelConfig):
    init: str = "pretrained"  # pretrained: DIR's weights | random: DIR's architecture, N(0, 0.02) seeded by train.seed

    def __post_init__(self):
        super().__post_init__()
        if self.init not in MODEL_INITS:
            raise MinitronError(f"model.init={self.init!r}: use one of {', '.join(MODEL_INITS)}")


@dataclass
class TrainDataConfig:
    path: Any = None  # tokenized dataset prefix (`minitron data prepare`), a list of them, or [[weight, prefix], ...]
    split: str = "99,1,0"  # train,valid,test shares of documents; quote it on a command line: "data.split='90,10,0'"
    cache_dir: Optional[str] = None  # where dataset index caches go (None: OUTPUT/data_cache)


@dataclass
class TrainSettings:
    steps: int = 100  # optimizer steps (global batches) of the whole run, resumed ones included
    global_batch_size: int = 8  # sequences per optimizer step, over all data-parallel ranks
    micro_batch_size: int = 1  # sequences per forward/backward pass on one rank (gradients accumulate)
    seq_length: int = 512  # tokens per sequence; at most the model's max_position_embeddings
    lr: float = 3.0e-4  # peak learning rate, reached at the end of the warm-up
    min_lr: float = 3.0e-5  # learning rate at the end of the decay (and after it)
    warmup_steps: int = 0  # linear warm-up from 0 to lr over this many steps
    decay_style: str = "cosine"  # after warm-up: cosine | linear | constant
    decay_steps: Optional[int] = None  # step at which the decay reaches min_lr (None: train.steps)
    weight_decay: float = 0.1  # decoupled (AdamW) weight decay; norms and biases get none
    adam_beta1: float = 0.9  # Adam first-moment decay
    adam_beta2: float = 0.95  # Adam second-moment decay
    adam_eps: float = 1.0e-8  # Adam denominator epsilon
    clip_grad: float = 1.0  # clip the global gradient L2 norm to this (0: no clipping)
    distributed_optimizer: bool = False  # shard optimizer state and fp32 main weights over data-parallel ranks
    seed: int = 1234  # RNG seed (initialisation, dropout) and data shuffling seed
    log_interval: int = 1  # a console line every N steps (metrics.jsonl gets every step)
    eval_interval: int = 100  # validation loss every N steps and at the end (0: never)
    eval_iters: int = 4  # global batches of validation data per evaluation
    scale: ScaleSettings = field(default_factory=ScaleSettings)  # sequence parallelism, overlap, recomputation, fusions

    def __post_init__(self):
        for name in ("steps", "global_batch_size", "micro_batch_size", "log_interval", "eval_iters", "decay_steps"):
            check_range(f"train.{name}", getattr(self, name), at_least=1)
        for name in ("warmup_steps", "eval_interval"):
            check_range(f"train.{name}", getattr(self, name), at_least=0)
        check_range("train.seq_length", self.seq_length, at_least=2)
        check_range("train.lr", self.lr, at_least=0, fix="0 trains nothing (it saves the initial weights)")
        check_range("train.min_lr", self.min_lr, at_least=0)
        check_range("train.weight_decay", self.weight_decay, at_least=0)
        check_range("train.clip_grad", self.clip_grad, at_least=0, fix="0 turns clipping off")
        for name in ("adam_beta1", "adam_beta2"):
            check_range(f"train.{name}", getattr(self, name), at_least=0, below=1)
        check_range("train.adam_eps", self.adam_eps, above=0)
        check_range("train.seed", self.seed, at_least=0, at_most=MAX_SEED)
        if self.global_batch_size % self.micro_batch_size:
            raise MinitronError(
                f"train.global_batch_size={self.global_batch_size} is not divisible by "
                f"train.micro_batch_size={self.micro_batch_size}; use a multiple of it"
            )
        if self.decay_style not in DECAY_STYLES:
            raise MinitronError(f"train.decay_style={self.decay_style!r}: use one of {', '.join(DECAY_STYLES)}")
        if not 0.0 <= self.min_lr <= self.lr:
            raise MinitronError(f"train.min_lr={self.min_lr}: must be between 0 and train.lr={self.lr}")
        decay_steps = self.total_decay_steps
        if self.warmup_steps >= decay_steps:
            length = "train.decay_steps" if self.decay_steps is not None else "train.steps"
            raise MinitronError(
                f"train.warmup_steps={self.warmup_steps} must be smaller than {length}={decay_steps}: "
                f"add train.warmup_steps={max(decay_steps // 10, 0)} (about 10% of the run) or raise {length}"
            )

    @property
    def total_decay_steps(self) -> int:
        return self.decay_steps if self.decay_steps is not None else self.steps


@dataclass
class CheckpointConfig:
    interval: int = 100  # save a training checkpoint every N steps, and always after the last step
    keep_last: int = 2  # keep the newest N training checkpoints, delete older ones
    resume: bool = True  # continue from the newest valid checkpoint in OUTPUT/checkpoints when there is one
    verify: str = "checksum"  # what a checkpoint's manifest records and a resume checks: checksum (size + CRC32) | size

    def __post_init__(self):
        check_range("checkpoint.interval", self.interval, at_least=1)
        check_range("checkpoint.keep_last", self.keep_last, at_least=1)
        if self.verify not in VERIFY_MODES:
            raise MinitronError(f"checkpoint.verify={self.verify!r}: use one of {', '.join(VERIFY_MODES)}")


@dataclass
class LoggingConfig:
    progress: bool = True  # progress bar on stderr
    tensorboard: bool = True  # write OUTPUT/tensorboard when the `tensorboard` package is installed
    wandb_project: Optional[str] = None  # also log to Weights & Biases under this project (needs `wandb`)
    wandb_name: Optional[str] = None  # W&B run name (None: the output directory's name)


@dataclass
class TrainCommand:
    model: TrainModelConfig = field(default_factory=TrainModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output: str = MISSING  # run directory: checkpoints/, final/, config.yaml, versions.json, metrics.jsonl


def register() -> None:
    """Register the training schemas with Hydra's ConfigStore (called by ``schema.register``)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainCommand)
