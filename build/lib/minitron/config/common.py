"""Config blocks shared by several commands: the model, its parallel layout and the input text.

The config package owns the names a config may use (dtype names here, the metric and loss names in
the group modules); the library imports them from here and maps them to what they mean (for dtypes:
:meth:`minitron.models.checkpoint.ModelSource.build_dtype`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from minitron.errors import MinitronError

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # model.dtype values besides auto (torch attribute names)


@dataclass
class ModelConfig:
    path: str = MISSING  # Hugging Face directory or minitron Megatron checkpoint
    dtype: str = "auto"  # parameter dtype: auto (convert: as stored; else fp32 on CPU, bf16 on GPU) | float32 | bfloat16 | float16

    def __post_init__(self):
        if self.dtype != "auto" and self.dtype not in DTYPE_NAMES:
            raise MinitronError(f"model.dtype={self.dtype!r}: use auto, {', '.join(DTYPE_NAMES)}")


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
    path: Optional[str] = None  # .txt, .jsonl, .parquet or a directory of them (minitron.data.documents)
    text_field: str = "text"  # JSON field / parquet column that holds each document's text
