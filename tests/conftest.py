"""Shared fixtures: tiny random HF models of each family, a one-process Megatron world, CLI and torchrun runners."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

from tiny_models import FAMILIES, make_tiny_model, save_char_tokenizer  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
MINITRON = [sys.executable, "-m", "minitron.cli"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """family -> HF directory of a 4-layer random model with a 256-character tokenizer."""
    root = tmp_path_factory.mktemp("tiny")
    dirs = {}
    for family in FAMILIES:
        dirs[family] = make_tiny_model(family, root / family)
        save_char_tokenizer(dirs[family])
    return dirs


@pytest.fixture(scope="session")
def megatron_world():
    """A one-process Megatron-Core world (TP=1, PP=1) for in-process tests."""
    from minitron.parallel import setup_distributed

    return setup_distributed(1, 1)


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    """A few thousand words of deterministic text."""
    import random

    rng = random.Random(0)
    words = "the of and to in is was for on that with as by at from this be are an or it which has had not".split()
    path = tmp_path_factory.mktemp("text") / "heldout.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def clean_env(extra: dict | None = None) -> dict:
    """This environment without any rendezvous variables (each subprocess starts its own world)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    return {**env, **(extra or {})}


def run_cli(*args, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``minitron ARGS`` in a subprocess; returns the completed process (text output)."""
    return subprocess.run(
        [*MINITRON, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=clean_env(env)
    )


def run_torchrun(nproc: int, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``torchrun --nproc-per-node NPROC ARGS`` (a script path and its arguments) over gloo."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *map(str, args)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=clean_env())
    if result.returncode != 0:
        raise AssertionError(f"torchrun failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def last_json(stdout: str) -> dict:
    """The JSON object on the last line of a command's stdout."""
    return json.loads(stdout.strip().splitlines()[-1])
