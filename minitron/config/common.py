"""Config blocks shared by several commands: the model, its parallel layout and the input text.

The config package owns the names a config may use (dtype names here, the metric and loss names in
the group modules); the library imports them from here and maps them to what they mean (for dtypes:
:meth:`minitron.models.checkpoint.ModelSource.build_dtype`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from minitron.errors import MinitronError

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # model.dtype values besides auto (torch attribute names)
MAX_SEED = 2**32 - 1  # numpy's RandomState (Megatron's dataset shuffling) takes seeds in [0, 2**32)


def check_range(key: str, value, at_least=None, above=None, at_most=None, below=None, fix: str = "") -> None:
    """Refuse ``value`` of the setting ``key`` unless it is a finite number in range (None, an unset optional
    setting, passes): one MinitronError ``KEY=VALUE: must be >= N`` (``fix`` is added after a semicolon)."""
    if value is None:
        return
    bounds = [f">= {at_least}" if at_least is not None else None, f"> {above}" if above is not None else None,
              f"<= {at_most}" if at_most is not None else None, f"< {below}" if below is not None else None]  # fmt: skip
    wanted = " and ".join(b for b in bounds if b)
    good = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    good = good and (at_least is None or value >= at_least) and (above is None or value > above)
    good = good and (at_most is None or value <= at_most) and (below is None or value < below)
    if not good:
        finite = "" if isinstance(value, (int, float)) and math.isfinite(value) else "a finite number "
        raise MinitronError(f"{key}={value}: must be {finite}{wanted}" + (f"; {fix}" if fix else ""))


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
            check_range(f"parallel.{name}", getattr(self, name), at_least=1)


@dataclass
class DataConfig:
    path: Optional[str] = None  # .txt, .jsonl, .parquet or a directory of them (minitron.data.documents)
    text_field: str = "text"  # JSON field / parquet column that holds each document's text
