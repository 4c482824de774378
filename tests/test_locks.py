"""One writer per output: every command that writes holds the lock of its output; a second writer gets one
`error:` line naming the holder's PID, exit 2, and changes nothing; the lock goes with its holder however it
ends; two `data prepare` runs started together never mix their bytes."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MINITRON, REPO, clean_env, hold_lock, prepare_rotating_corpus, run_minitron, tree_snapshot

from minitron.errors import MinitronError
from minitron.fsutil import lock_path, output_lock

WORDS = "the quick brown fox jumps over the lazy dog while seven wise owls watch"


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    with output_lock(out) as lock:
        assert lock == tmp_path / "new" / "deeper" / ".out.lock" and lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(MinitronError) as err:
            with output_lock(out):
                pass
        assert str(err.value) == (f"output={out} is being written by another minitron process (pid {os.getpid()}); "
                                  "wait for it to finish or stop it first")  # fmt: skip
    assert list(tmp_path.iterdir()) == [], "the lock file and the directories made for it are gone"
    with output_lock(out):  # free again
        pass


def test_the_lock_goes_with_a_killed_holder(tmp_path):
    """SIGKILL runs no cleanup: the kernel releases the flock, and the next writer takes the lock (and the stale
    lock file with it)."""
    out = tmp_path / "out"
    code = (f"import sys, time; sys.path.insert(0, {str(REPO)!r}); from minitron.fsutil import output_lock\n"
            f"with output_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=clean_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MinitronError, match=f"pid {holder.pid}\\)"):
            with output_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(out).exists()  # left by the killed holder ...
    with output_lock(out):  # ... and no obstacle
        pass
    assert not lock_path(out).exists()


@pytest.fixture(scope="module")
def inputs(tiny_models, text_file, tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("lock_inputs")
    model = tiny_models["llama31"]
    from tiny_benchmarks import write_tiny_benchmarks

    return {"model": model, "text": text_file, "data": prepare_rotating_corpus(directory, model, WORDS),
            "benchmarks": write_tiny_benchmarks(directory / "benchmarks")}  # fmt: skip


def _command_lines(inputs: dict, out: Path) -> dict:
    """command -> (argv, the path it locks) for every command that writes."""
    model, text, data = inputs["model"], inputs["text"], inputs["data"]
    small_train = ["train.seq_length=16", "train.global_batch_size=2", "train.steps=2", "train.warmup_steps=0",
                   "train.eval_interval=0"]  # fmt: skip
    small_calib = ["calib.num_samples=2", "calib.seq_length=16"]
    return {
        "data prepare": (["data", "prepare", f"data.path={text}", f"model.path={model}", f"output={out / 'corpus'}",
                          "data.workers=1"], out / "corpus"),  # fmt: skip
        "train": (["train", f"model.path={model}", f"data.path={data}", f"output={out / 'run'}", *small_train],
                  out / "run"),  # fmt: skip
        "distill": (["distill", f"teacher.path={model}", f"student.path={model}", f"data.path={data}",
                     f"output={out / 'run'}", *small_train], out / "run"),  # fmt: skip
        "importance": (["importance", f"model.path={model}", f"data.path={text}", f"output={out / 'scores'}",
                        *small_calib], out / "scores"),  # fmt: skip
        "prune": (["prune", f"model.path={model}", f"data.path={text}", f"output={out / 'student'}",
                   "prune.ffn_hidden_size=64", *small_calib], out / "student"),  # fmt: skip
        "convert": (["convert", f"model.path={model}", f"output={out / 'ckpt'}"], out / "ckpt"),
        "eval": (["eval", f"model.path={model}", f"data.path={text}", f"output={out / 'eval.json'}",
                  "eval.seq_length=16", "eval.max_windows=2"], out / "eval.json"),  # fmt: skip
        "evaluate": (["evaluate", f"model.path={model}", f"eval.data_dir={inputs['benchmarks']}",
                      f"output={out / 'tasks'}", "eval.tasks=[arc_easy]", "eval.limit=2"], out / "tasks"),  # fmt: skip
    }


COMMANDS_THAT_WRITE = ["data prepare", "train", "distill", "importance", "prune", "convert", "eval", "evaluate"]


@pytest.mark.parametrize("command", COMMANDS_THAT_WRITE)
def test_a_second_writer_of_each_command_is_refused(command, inputs, tmp_path, monkeypatch, capfd):
    """Another process (pid 4242) holds the output's lock: one error line naming it, exit 2, nothing changed."""
    out = tmp_path / "out"
    out.mkdir()
    argv, locked = _command_lines(inputs, out)[command]
    with hold_lock(locked):
        before = tree_snapshot(tmp_path)
        code, stdout, stderr = run_minitron(monkeypatch, capfd, *argv)
        assert tree_snapshot(tmp_path) == before
    assert code == 2 and stdout == "", (code, stdout, stderr)
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: ") and "is being written by another minitron process (pid 4242)" in line, line


def test_assets_fetch_is_refused_while_another_fetch_holds_the_asset(tmp_path, monkeypatch, capfd):
    from minitron.assets import ASSETS

    monkeypatch.setenv("MINITRON_HOME", str(tmp_path / "home"))
    with hold_lock(ASSETS["sotu"].path):
        before = tree_snapshot(tmp_path)
        code, _, stderr = run_minitron(monkeypatch, capfd, "assets", "fetch", "sotu")
        assert tree_snapshot(tmp_path) == before
    (line,) = stderr.strip().splitlines()
    assert code == 2 and line.startswith("error: asset sotu (") and "(pid 4242)" in line, stderr


def test_two_data_prepares_started_together_never_mix(inputs, tmp_path):
    """Two writers of one prefix at the same moment: one writes, the other is refused (or, if the first was
    already done, finds it up to date); the dataset's bytes match its sidecar's checksum; no partial file."""
    corpus = tmp_path / "text.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"{WORDS} {i} " * 40}) + "\n" for i in range(400)))
    prefix = tmp_path / "out" / "corpus"
    argv = [*MINITRON, "data", "prepare", f"data.path={corpus}", f"model.path={inputs['model']}", f"output={prefix}",
            "data.workers=1"]  # fmt: skip
    env = clean_env({"PYTHONPATH": str(REPO)})
    writers = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
               for _ in range(2)]  # fmt: skip
    results = [(w.wait(timeout=300), *w.communicate()) for w in writers]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for code, stdout, stderr in results:
        if code == 2:
            (line,) = stderr.strip().splitlines()
            assert "is being written by another minitron process" in line, line
        else:
            assert json.loads(stdout.strip().splitlines()[-1])["output"] == str(prefix)
    meta = json.loads(Path(f"{prefix}.json").read_text())
    assert hashlib.sha256(Path(f"{prefix}.bin").read_bytes()).hexdigest() == meta["bin_sha256"]
    assert sorted(p.name for p in prefix.parent.iterdir()) == ["corpus.bin", "corpus.idx", "corpus.json"]


@pytest.mark.slow
def test_under_torchrun_rank_0_holds_the_lock_and_every_rank_stops(inputs, tmp_path):
    """2 processes: rank 0 finds the output locked; both ranks stop (no rank goes on alone: rank 1 learns of the
    refusal from rank 0's broadcast), rank 0 prints the one error line, the launcher fails, nothing is written.
    (torchrun adds its own failure report after it.)"""
    from conftest import torchrun_command

    out = tmp_path / "ckpt"
    command = torchrun_command(2, "-m", "minitron.cli", "convert", f"model.path={inputs['model']}", f"output={out}",
                               "parallel.tp=2")  # fmt: skip
    with hold_lock(out):
        before = tree_snapshot(tmp_path)
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO,
                                env=clean_env({"PYTHONPATH": str(REPO)}))  # fmt: skip
        assert tree_snapshot(tmp_path) == before
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1 and "(pid 4242)" in errors[0], result.stderr[-3000:]
    assert "exitcode  : 2" in result.stderr  # rank 0's; rank 1 stops by itself or by the launcher's SIGTERM
    assert time.perf_counter() - started < 240
