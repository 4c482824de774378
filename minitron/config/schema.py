"""Schemas of the Hydra configs in ``conf/``: one dataclass per group, one per command.

The shared blocks (model, parallel layout, input text) are in :mod:`minitron.config.common`, each
command group's schemas in its own module (``data``, ``training``, ``distill``, ``prune``,
``pipeline``); this module holds the small commands (info, convert, eval) and :func:`register`, which
registers them all.

Hydra composes YAML and command-line overrides onto these dataclasses, so a misspelt key or a value
of the wrong type is rejected when the config is composed. Checks that need more than a type are in
``__post_init__`` and raise :class:`~minitron.errors.MinitronError` naming the field and the fix;
they run when a recipe calls :func:`to_object`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from minitron.config import data, distill, pipeline, prune, training
from minitron.config.common import DataConfig, ModelConfig, ParallelConfig
from minitron.errors import MinitronError
from minitron.fsutil import minitron_home


@dataclass
class EvalConfig:
    seq_length: int = 512  # tokens per window; windows do not overlap and each starts fresh
    micro_batch_size: int = 4  # windows per forward pass
    max_windows: Optional[int] = None  # evaluate only the first N windows (None: all)
    reference: bool = False  # also compute the loss with transformers on the same windows and compare
    teacher: Optional[str] = None  # also report KL(teacher || model) on the same windows (teacher: HF dir or minitron checkpoint, same tokenizer)

    def __post_init__(self):
        if self.seq_length < 2:
            raise MinitronError(f"eval.seq_length={self.seq_length}: must be >= 2")
        if self.micro_batch_size < 1:
            raise MinitronError(f"eval.micro_batch_size={self.micro_batch_size}: must be >= 1")
        if self.max_windows is not None and self.max_windows < 1:
            raise MinitronError(f"eval.max_windows={self.max_windows}: must be >= 1 or null")


@dataclass
class InfoSettings:
    seq_length: int = 4096  # sequence length used for the attention term of FLOPs per token


@dataclass
class InfoCommand:
    model: ModelConfig = field(default_factory=ModelConfig)
    info: InfoSettings = field(default_factory=InfoSettings)


@dataclass
class ConvertCommand:
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    output: str = MISSING  # directory to write: a Megatron checkpoint (from HF) or an HF directory (from Megatron)
    overwrite: bool = False  # replace an output directory that holds another model


@dataclass
class EvalCommand:
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def register() -> None:
    """Register the schemas with Hydra's ConfigStore (each conf/<command>.yaml extends one)."""
    store = ConfigStore.instance()
    store.store(name="info_schema", node=InfoCommand)
    store.store(name="convert_schema", node=ConvertCommand)
    store.store(name="eval_schema", node=EvalCommand)
    if not OmegaConf.has_resolver("minitron_home"):
        OmegaConf.register_new_resolver("minitron_home", lambda: str(minitron_home()))
    for group in (training, data, prune, distill, pipeline):
        group.register()


def to_object(cfg):
    """The validated dataclass instance of a composed config (runs every ``__post_init__``)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise MinitronError(f"{missing[0]} is required: pass {missing[0]}=...")
    return OmegaConf.to_object(cfg)


# conf/ sits at the repository root, beside minitron/ and recipes/ (editable install).
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
