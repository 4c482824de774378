"""Failing cleanly: a full disk (a tmpfs of a few MB), a read-only mount, SIGINT and SIGTERM during `data prepare`
and `train` end in one `error:` or `interrupted:` line, exit 2 (130 / 143 for the signals), no traceback, and no
half-written file; an interrupted training run keeps its last checkpoint, which the rerun resumes from.

The disk tests mount tmpfs file systems (root, Linux); they are skipped where that is not allowed."""

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import MINITRON, REPO, clean_env, last_json, prepare_rotating_corpus, run_minitron

WORDS = "a stitch in time saves nine and the early bird catches the worm before the rain"


@contextlib.contextmanager
def tmpfs(directory: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` mounted on ``directory`` for the block (skips the test where mounting is not allowed)."""
    directory.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def minitron(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MINITRON, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=clean_env({"PYTHONPATH": str(REPO)}))  # fmt: skip


def assert_one_line(stderr: str, kind: str, *parts: str) -> str:
    """The last stderr line is ``KIND: ...`` containing ``parts``, no other line starts with error:/interrupted:,
    and there is no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert lines[-1].startswith(f"{kind}: ") and all(part in lines[-1] for part in parts), lines[-1]
    assert sum(line.startswith(("error:", "interrupted:")) for line in lines) == 1, stderr[-3000:]
    return lines[-1]


def partials(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".partial" in p.name or p.name.endswith((".tmp", ".lock"))]


@pytest.fixture(scope="module")
def model(tiny_models) -> Path:
    return tiny_models["llama31"]


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    """~4 MB of JSON lines: about 3.8 M tokens of the character tokenizer (7.6 MB as uint16)."""
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    with open(path, "w") as f:
        for i in range(3000):
            f.write(json.dumps({"text": f"lorem ipsum dolor sit amet {i} " * 40}) + "\n")
    return path


@pytest.fixture(scope="module")
def dataset(model, tmp_path_factory) -> Path:
    return prepare_rotating_corpus(tmp_path_factory.mktemp("data"), model, WORDS, documents=200)


TRAIN = ["train.seq_length=16", "train.global_batch_size=2", "train.warmup_steps=0", "train.eval_interval=0",
         "logging.progress=false", "logging.tensorboard=false"]  # fmt: skip


# ---- a full disk ----------------------------------------------------------------------------------------------


def test_data_prepare_on_a_full_disk(model, big_corpus, tmp_path):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        result = minitron("data", "prepare", f"data.path={big_corpus}", f"model.path={model}",
                          f"output={disk / 'data' / 'big'}", "data.workers=2")  # fmt: skip
        assert result.returncode == 2
        assert_one_line(result.stderr, "error", f"output={disk / 'data' / 'big'}: no space left on device",
                        "write the output to another disk")  # fmt: skip
        assert list(disk.iterdir()) == [], "no partial file, and the directory made for the output is gone"


def test_train_on_a_full_disk_keeps_no_half_checkpoint(model, dataset, tmp_path):
    """The run's records fit, its first checkpoint does not: no iter_*.partial stays, no final/."""
    with tmpfs(tmp_path / "disk", "4m") as disk:
        (disk / "filler").write_bytes(bytes(2_600_000))
        run = disk / "run"
        result = minitron("train", f"model.path={model}", f"data.path={dataset}", f"output={run}", "train.steps=2",
                          *TRAIN)  # fmt: skip
        assert result.returncode == 2
        assert_one_line(result.stderr, "error", "no space left on device")
        assert partials(disk) == [] and not (run / "final").exists()
        assert list((run / "checkpoints").iterdir()) == []


# ---- a read-only target ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["data prepare", "train", "convert", "importance", "eval"])
def test_a_read_only_target_is_refused_in_one_line(command, model, dataset, text_file, tmp_path, monkeypatch, capfd):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        out = ro / "sub" / "out"
        argv = {
            "data prepare": ["data", "prepare", f"data.path={text_file}", f"model.path={model}", f"output={out}"],
            "train": ["train", f"model.path={model}", f"data.path={dataset}", f"output={out}", "train.steps=2", *TRAIN],
            "convert": ["convert", f"model.path={model}", f"output={out}"],
            "importance": ["importance", f"model.path={model}", f"data.path={text_file}", f"output={out}",
                           "calib.num_samples=2", "calib.seq_length=16"],
            "eval": ["eval", f"model.path={model}", f"data.path={text_file}", f"output={out}", "eval.seq_length=16",
                     "eval.max_windows=2"],
        }[command]  # fmt: skip
        code, stdout, stderr = run_minitron(monkeypatch, capfd, *argv)
        assert code == 2 and stdout == ""
        (line,) = stderr.strip().splitlines()
        assert line == f"error: {out}: read-only file system; write the output to a writable directory (nothing " \
                       "half-written is kept)", line
        assert list(ro.iterdir()) == []


# ---- SIGINT and SIGTERM ---------------------------------------------------------------------------------------


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([*MINITRON, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=clean_env({"PYTHONPATH": str(REPO)}))  # fmt: skip


def wait_for(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


SIGNALS = [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]


@pytest.mark.parametrize("signum,status,name", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_data_prepare_interrupted(signum, status, name, model, big_corpus, tmp_path):
    prefix = tmp_path / "out" / "big"
    process = start("data", "prepare", f"data.path={big_corpus}", f"model.path={model}", f"output={prefix}",
                    "data.workers=2")  # fmt: skip
    # once tokens are being written (the worker pool is up): a signal that lands while the pool forks is a
    # separate, narrower case (see minitron.failures.check_interrupted)
    wait_for(lambda: any(p.name.startswith("big.bin.") and p.stat().st_size > 0
                         for p in prefix.parent.glob("*.partial")), process)  # fmt: skip
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr[-3000:]
    assert_one_line(stderr, "interrupted", f"`minitron data` stopped by {name}")
    assert not prefix.parent.exists() or list(prefix.parent.iterdir()) == [], "no partial file, no lock, no dataset"


@pytest.mark.parametrize("signum,status,name", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_train_interrupted_keeps_its_resume_point(signum, status, name, model, dataset, tmp_path):
    """Interrupted after its third checkpoint: exit 130/143, one line, no half checkpoint; the rerun resumes from
    the newest complete checkpoint (here extended by one step, so that it ends quickly)."""
    run = tmp_path / "run"
    argv = ["train", f"model.path={model}", f"data.path={dataset}", f"output={run}", "checkpoint.interval=1",
            "checkpoint.keep_last=10", *TRAIN]  # fmt: skip
    process = start(*argv, "train.steps=1000")
    wait_for(lambda: len(list((run / "checkpoints").glob("iter_*[0-9]"))) >= 3, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr[-3000:]
    assert_one_line(stderr, "interrupted", f"`minitron train` stopped by {name}", "resume from their last checkpoint")
    assert partials(run) == [] and not (run / "final").exists()
    newest = max(int(p.name.removeprefix("iter_")) for p in (run / "checkpoints").glob("iter_*"))
    rerun = minitron(*argv, f"train.steps={newest + 1}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = last_json(rerun.stdout)
    assert result["resumed_from"] == f"iter_{newest:07d}" and result["steps_this_run"] == 1


def test_sigterm_is_an_interruption_in_process_too(monkeypatch, capfd):
    """minitron.failures.run_cleanly turns SIGTERM into an interruption whose cleanup runs (a finally block here)."""
    from minitron import failures

    cleaned = []

    def command() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            return 0
        finally:
            cleaned.append(True)

    before = signal.getsignal(signal.SIGTERM)
    capfd.readouterr()
    assert failures.run_cleanly("demo", command) == 143 and cleaned == [True]
    assert capfd.readouterr().err.startswith("interrupted: `minitron demo` stopped by SIGTERM")
    assert signal.getsignal(signal.SIGTERM) == before, "the handler is put back"
