"""Helpers of the distillation tests: a tiny teacher and a smaller student with the same tokenizer, run readers.

Test modules import the fixtures by name (``from distill_helpers import teacher_model, student_model``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tiny_models import make_peaked_teacher, make_tiny_model, save_char_tokenizer


def make_teacher(out_dir: Path) -> Path:
    """4-layer SmolLM2-like model (hidden 96, tied embeddings, vocab 256) with confident predictions."""
    return make_peaked_teacher(out_dir, num_layers=4, seed=1)


def make_student(out_dir: Path, family: str = "llama31", num_layers: int = 2, seed: int = 2) -> Path:
    """2-layer Llama-3.1-like model (hidden 64, untied embeddings), same 256-character tokenizer."""
    make_tiny_model(family, out_dir, num_layers=num_layers, seed=seed)
    save_char_tokenizer(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def teacher_model(tmp_path_factory) -> Path:
    return make_teacher(tmp_path_factory.mktemp("distill_teacher") / "hf")


@pytest.fixture(scope="session")
def student_model(tmp_path_factory) -> Path:
    return make_student(tmp_path_factory.mktemp("distill_student") / "hf")


def records(run_dir: Path, kind: str = "train") -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] == kind]


def losses(run_dir: Path, key: str = "loss") -> list[float]:
    return [record[key] for record in records(run_dir)]


def final_parameters(run_dir: Path) -> dict:
    """The parameters of a run's OUTPUT/final student, loaded here at TP=1 PP=1."""
    from minitron.models.checkpoint import load_model, open_model

    return dict(load_model(open_model(Path(run_dir) / "final"), 1, 1, torch.float32).named_parameters())


def torchrun_jobs(root: Path, name: str, jobs: list, expect_kill: bool = False) -> None:
    """Run tests/workers/distill.py on ``jobs`` over 2 processes (see conftest.torchrun_jobs)."""
    import conftest

    conftest.torchrun_jobs(conftest.TESTS / "workers" / "distill.py", root, name, jobs, expect_kill)
