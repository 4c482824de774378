"""Schemas of the Hydra configs in ``conf/``: one dataclass per group, one per command.

Hydra composes YAML and command-line overrides onto these dataclasses, so a misspelt key or a value
of the wrong type is rejected when the config is composed. Checks that need more than a type are in
``__post_init__`` and raise :class:`~minitron.errors.MinitronError` naming the field and the fix;
they run when a recipe calls :func:`to_object`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from minitron.errors import MinitronError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def minitron_home() -> str:
    """``$MINITRON_HOME``, default ``~/.cache/minitron``: where `minitron assets fetch` puts assets."""
    return os.environ.get("MINITRON_HOME") or str(Path.home() / ".cache" / "minitron")


@dataclass
class ModelConfig:
    path: str = MISSING  # Hugging Face directory or minitron Megatron checkpoint
    dtype: str = "auto"  # parameter dtype: auto (convert: as stored; else fp32 on CPU, bf16 on GPU) | float32 | bfloat16 | float16

    def __post_init__(self):
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise MinitronError(f"model.dtype={self.dtype!r}: use auto, {', '.join(DTYPES)}")

    def torch_dtype(self, stored: torch.dtype, for_compute: bool) -> torch.dtype:
        """The dtype to build the model in: explicit, or the stored one / the device's compute dtype."""
        if self.dtype != "auto":
            return DTYPES[self.dtype]
        if not for_compute:
            return stored
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32


@dataclass
class ParallelConfig:
    tp: int = 1  # tensor-parallel size: divides heads, query groups, FFN and vocab
    pp: int = 1  # pipeline-parallel size: divides the number of layers
    # data-parallel size is the number of processes / (tp * pp)

    def __post_init__(self):
        for name in ("tp", "pp"):
            if getattr(self, name) < 1:
                raise MinitronError(f"parallel.{name}={getattr(self, name)}: must be >= 1")


@dataclass
class DataConfig:
    path: Optional[str] = None  # text file (.txt) or JSON-lines file (.jsonl, field `text`)
    text_field: str = "text"  # field of each JSON line that holds the document


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
        OmegaConf.register_new_resolver("minitron_home", minitron_home)

    # each command group's schemas live beside their code; imported here (they import this module)
    from minitron.config import data, distill, evaluate, pipeline, prune, training

    for group in (training, data, prune, distill, pipeline, evaluate):
        group.register()


def to_object(cfg):
    """The validated dataclass instance of a composed config (runs every ``__post_init__``)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise MinitronError(f"{missing[0]} is required: pass {missing[0]}=...")
    return OmegaConf.to_object(cfg)


# conf/ sits at the repository root, beside minitron/ and recipes/ (editable install).
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
