"""Helpers of the training tests: a 2-layer tiny model fixture, tokenized datasets on disk, run-directory readers.

Test modules import the fixture by name (``from train_helpers import train_model``): a second conftest.py
would replace the root one as the ``conftest`` module that other test files import from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_models import make_tiny_model, save_char_tokenizer


@pytest.fixture(scope="session")
def train_model(tmp_path_factory) -> Path:
    """A 2-layer SmolLM2-like HF model (hidden 96, 6 heads in 2 groups, tied embeddings, vocab 256)."""
    model_dir = make_tiny_model("smollm2", tmp_path_factory.mktemp("train_model") / "hf", num_layers=2)
    save_char_tokenizer(model_dir)
    return model_dir


def write_indexed_dataset(prefix: Path, documents: list[list[int]]) -> str:
    """Write token documents as a Megatron indexed dataset PREFIX.bin/.idx; returns the prefix."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    for document in documents:
        builder.add_document(torch.tensor(document, dtype=torch.int64), [len(document)])
    builder.finalize(f"{prefix}.idx")
    return str(prefix)


def train_records(run_dir: Path, kind: str = "train") -> list[dict]:
    """The ``kind`` records of a run's metrics.jsonl, in order."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def losses(run_dir: Path) -> list[float]:
    return [record["loss"] for record in train_records(run_dir)]
