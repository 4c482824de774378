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

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from minitron.config import align, data, distill, evaluate, pipeline, plan, prune, training
from minitron.config.common import DataConfig, ModelConfig, ParallelConfig, check_range
from minitron.errors import MinitronError
from minitron.fsutil import minitron_home


@dataclass
class EvalConfig:
    seq_length: int = 512  # tokens per window; windows do not overlap and each starts fresh
    micro_batch_size: int = 4  # windows per forward pass
    max_windows: Optional[int] = None  # evaluate only the first N windows (None: all)
    reference: bool = False  # also compute the loss with transformers on the same windows and compare
    teacher: Optional[str] = None  # also report KL(teacher || model) on the same windows (teacher: HF dir or minitron checkpoint, same tokenizer)
    tags: List[str] = field(default_factory=list)  # "key=value" labels copied into the result's `tags` (the pipeline names its report rows with them)

    @property
    def tag_dict(self) -> dict:
        return dict(tag.split("=", 1) for tag in self.tags)

    def __post_init__(self):
        check_range("eval.seq_length", self.seq_length, at_least=2)
        check_range("eval.micro_batch_size", self.micro_batch_size, at_least=1)
        check_range("eval.max_windows", self.max_windows, at_least=1, fix="or null for all")
        for tag in self.tags:
            if "=" not in tag:
                raise MinitronError(f"eval.tags: {tag!r} is not key=value")


@dataclass
class InfoSettings:
    seq_length: int = 4096  # sequence length used for the attention term of FLOPs per token

    def __post_init__(self):
        check_range("info.seq_length", self.seq_length, at_least=1)


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
    output: Optional[str] = None  # also write the result (the last stdout line) to this JSON file, atomically


def register() -> None:
    """Register the schemas with Hydra's ConfigStore (each conf/<command>.yaml extends one)."""
    store = ConfigStore.instance()
    store.store(name="info_schema", node=InfoCommand)
    store.store(name="convert_schema", node=ConvertCommand)
    store.store(name="eval_schema", node=EvalCommand)
    if not OmegaConf.has_resolver("minitron_home"):
        OmegaConf.register_new_resolver("minitron_home", lambda: str(minitron_home()))
    for group in (training, data, prune, distill, pipeline, evaluate, align, plan):
        group.register()


def _expand_home(cfg) -> None:
    """Expand a leading ``~`` in every string value (paths in YAML files: ``teacher: ~/models/X``)."""
    for key in list(cfg.keys()) if OmegaConf.is_dict(cfg) else range(len(cfg)):
        node = cfg._get_node(key)
        if OmegaConf.is_config(node):
            if not node._is_missing() and not node._is_none() and not node._is_interpolation():
                _expand_home(node)
        elif not node._is_missing() and not node._is_interpolation():
            value = node._value()
            if isinstance(value, str) and (value == "~" or value.startswith("~/")):
                cfg[key] = os.path.expanduser(value)


def to_object(cfg):
    """The validated dataclass instance of a composed config (runs every ``__post_init__``)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise MinitronError(f"{missing[0]} is required: pass {missing[0]}=...")
    _expand_home(cfg)
    return OmegaConf.to_object(cfg)


# conf/ sits at the repository root; it is installed as the package minitron.conf (pyproject.toml).
CONF_DIR = str(Path(importlib.import_module("minitron.conf").__path__[0]).resolve())
