"""Shared fixtures: tiny random HF models of each family, a one-process Megatron world, CLI and torchrun runners."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one pytest worker per core: one thread each, children too
    os.environ["OMP_NUM_THREADS"] = "1"

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


@pytest.fixture
def megatron_world():
    """A one-process Megatron-Core world (TP=1, PP=1) for in-process tests, made sure of for each test: an
    in-process command run by an earlier test (``run_in_process``, ``run_minitron``) ends with
    ``teardown_distributed``, which destroys the world; ``setup_distributed`` is cheap when it still exists."""
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


def torchrun_command(nproc: int, *args) -> list[str]:
    """``torchrun --nproc-per-node NPROC ARGS`` (a script path and its arguments) on a free local port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *map(str, args)]  # fmt: skip


def run_torchrun(nproc: int, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``torchrun --nproc-per-node NPROC ARGS`` (a script path and its arguments) over gloo."""
    command = torchrun_command(nproc, *args)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=clean_env())
    if result.returncode != 0:
        raise AssertionError(f"torchrun failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def run_torchrun_until_killed(log: Path, nproc: int, *args, timeout: int = 600) -> str:
    """Run ``torchrun`` as :func:`run_torchrun` on a job that SIGKILLs one of its ranks; asserts it ended that way
    and returns its output. The output goes to the file ``log``, not a pipe (nothing can hold the test's pipes
    open), and the launch runs in its own process group, killed afterwards with whatever the killed rank left."""
    with open(log, "w") as out:
        launch = subprocess.Popen(torchrun_command(nproc, *args), stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                  env=clean_env(), start_new_session=True)  # fmt: skip
        try:
            returncode = launch.wait(timeout=timeout)
        finally:
            try:
                os.killpg(launch.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    text = Path(log).read_text()
    assert returncode != 0 and "SIGKILL" in text, text[-3000:]
    return text


def last_json(stdout: str) -> dict:
    """The JSON object on the last line of a command's stdout."""
    return json.loads(stdout.strip().splitlines()[-1])


def run_in_process(command: str, monkeypatch, capfd, *args, world_size: int | None = None) -> tuple[int, str]:
    """Run ``minitron COMMAND ARGS`` in this process (through :mod:`minitron.cli`) as a ``WORLD_SIZE`` run that
    must exit (bad input); returns (exit status, stderr)."""
    from minitron import cli

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main replaces it
    if world_size:
        monkeypatch.setenv("WORLD_SIZE", str(world_size))
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, *map(str, args)])
    return exit_info.value.code, capfd.readouterr().err


def torchrun_jobs(worker: Path, directory: Path, name: str, jobs: list, expect_kill: bool = False) -> None:
    """Run the test worker script ``worker`` over 2 processes on ``jobs`` (written to DIRECTORY/NAME.json); with
    ``expect_kill`` a job kills a rank and the launch must end by SIGKILL (:func:`run_torchrun_until_killed`)."""
    spec = Path(directory) / f"{name}.json"
    spec.write_text(json.dumps(jobs))
    if expect_kill:
        run_torchrun_until_killed(Path(directory) / f"{name}.log", 2, worker, spec)
    else:
        run_torchrun(2, worker, spec)


def compose_command(command: str, *overrides):
    """The validated config object of ``minitron COMMAND OVERRIDES``, as the command's recipe builds it."""
    from hydra import compose, initialize_config_dir

    from minitron.config import schema

    schema.register()
    with initialize_config_dir(config_dir=schema.CONF_DIR, version_base=None):
        return schema.to_object(compose(command, overrides=list(overrides)))


def assert_group_option_documented(path: Path, settings, command: str) -> None:
    """``conf/<group>/<option>.yaml`` opens with comments saying how to run it (``minitron COMMAND``), sets every
    field of the dataclass ``settings`` and comments each line it sets."""
    import dataclasses

    import yaml

    text = path.read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert text.startswith("#") and (f"minitron {command}" in header or f"minitron) {command}" in header)
    assert set(yaml.safe_load(text)) == {f.name for f in dataclasses.fields(settings)}  # every field set and visible
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert "#" in line, f"{path.name}: field without a comment: {line}"


def prepare_rotating_corpus(directory: Path, model_dir, words: str, documents: int = 60) -> Path:
    """Tokenize ``documents`` rotations of ``words`` with ``model_dir``'s tokenizer; returns the dataset prefix."""
    from minitron.data.prepare import prepare_dataset

    words = words.split()
    corpus = Path(directory) / "corpus.jsonl"
    lines = [json.dumps({"text": " ".join(words[i % 7 :] + words[: i % 7])}) for i in range(documents)]
    corpus.write_text("\n".join(lines) + "\n")
    prefix = Path(directory) / "corpus"
    prepare_dataset(corpus, model_dir, prefix, workers=1, progress=False)
    return prefix


def expected_versions() -> dict:
    """The ``versions`` block every output must record, worked out here without minitron.runtime: the
    packages this interpreter imports and the commit of this checkout (None outside a git checkout)."""
    import importlib.util
    import platform

    import megatron.core
    import torch
    import transformers

    import minitron

    commit = None
    if (REPO / ".git").exists():
        git = ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]
        commit = subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
    engine = None  # Transformer Engine counts only where it imports (GPU images)
    if importlib.util.find_spec("transformer_engine") is not None:
        try:
            import transformer_engine

            engine = transformer_engine.__version__
        except Exception:  # installed but not importable here (as minitron.runtime judges it)
            pass
    return {"minitron": minitron.__version__, "minitron_commit": commit, "python": platform.python_version(),
            "torch": torch.__version__, "megatron_core": megatron.core.__version__,
            "transformers": transformers.__version__, "transformer_engine": engine}  # fmt: skip


def tree_snapshot(*roots) -> dict:
    """What a command may not change when it refuses its input: every path under ``roots`` (directories and
    files) with each file's size, modification time and sha256. Directories' own mtimes are left out (a
    lock file created and removed again beside an output changes its directory's mtime, nothing else)."""
    import hashlib

    snapshot = {}
    for root in map(Path, roots):
        for path in sorted([root, *root.rglob("*")]) if root.exists() else []:
            if path.is_symlink() or path.is_dir():
                snapshot[str(path)] = "dir" if path.is_dir() and not path.is_symlink() else f"link {os.readlink(path)}"
            else:
                stat = path.stat()
                snapshot[str(path)] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return snapshot


def run_minitron(monkeypatch, capfd, *argv) -> tuple[int, str, str]:
    """Run ``minitron ARGV`` in this process through :func:`minitron.cli.main` (fast: for commands that refuse
    their input); returns (exit status, stdout, stderr)."""
    from minitron import cli

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main replaces it
    capfd.readouterr()
    try:
        code = cli.main([str(arg) for arg in argv])
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capfd.readouterr()
    return code, out, err


def hold_lock(output, pid: int = 4242):
    """Hold the writer's lock of ``output`` as another process would (``pid`` recorded in it); a context manager."""
    import contextlib
    import fcntl

    from minitron.fsutil import lock_path

    @contextlib.contextmanager
    def held():
        path = lock_path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            lock.write(f"{pid}\n")
            lock.flush()
            try:
                yield path
            finally:
                path.unlink(missing_ok=True)

    return held()
