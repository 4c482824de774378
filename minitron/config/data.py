"""Schemas of the data commands (``minitron data prepare``); registered by :func:`register`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from minitron.config.common import check_range
from minitron.errors import MinitronError

DATA_FORMATS = ("text", "sft", "preference")  # text: minitron.data.prepare; sft, preference: minitron.align.data
TRUNCATIONS = ("truncate", "drop", "off")  # the length rule of sft/preference data (minitron.align.data)


@dataclass
class TokenizerModelConfig:
    path: str = MISSING  # Hugging Face directory or minitron Megatron checkpoint whose tokenizer to use


@dataclass
class DataPrepareConfig:
    path: str = MISSING  # .txt (one document), .jsonl (one per line), .parquet (one per row), or a directory of them
    text_field: str = "text"  # JSON field / parquet column that holds each document's text
    workers: Optional[int] = None  # tokenizer processes (None: min(4, CPU count)); output is the same for any number
    format: str = "text"  # text (a corpus) | sft (chat/completion JSONL) | preference (prompt/chosen/rejected JSONL)
    seq_length: int = 2048  # sft/preference: the longest stored sequence (tokens); longer ones follow data.truncation
    truncation: str = "truncate"  # sft/preference: truncate (keep the first seq_length tokens) | drop (the example) | off (refuse)
    chat_template: Optional[str] = None  # sft/preference: a Jinja chat template (file or text); None: the tokenizer's

    def __post_init__(self):
        check_range("data.workers", self.workers, at_least=1, fix="or null for the default")
        check_range("data.seq_length", self.seq_length, at_least=2)
        if self.format not in DATA_FORMATS:
            raise MinitronError(f"data.format={self.format!r}: use one of {', '.join(DATA_FORMATS)}")
        if self.truncation not in TRUNCATIONS:
            raise MinitronError(f"data.truncation={self.truncation!r}: use one of {', '.join(TRUNCATIONS)}")
        if not self.text_field:
            raise MinitronError("data.text_field is empty: name the field or column that holds the text")


@dataclass
class DataPrepareCommand:
    model: TokenizerModelConfig = field(default_factory=TokenizerModelConfig)
    data: DataPrepareConfig = field(default_factory=DataPrepareConfig)
    output: str = MISSING  # prefix to write: OUTPUT.bin, OUTPUT.idx (Megatron indexed dataset) and OUTPUT.json
    overwrite: bool = False  # replace an existing OUTPUT.bin


def register() -> None:
    """Register the data commands' schemas with Hydra's ConfigStore (conf/data_prepare.yaml extends one)."""
    ConfigStore.instance().store(name="data_prepare_schema", node=DataPrepareCommand)
