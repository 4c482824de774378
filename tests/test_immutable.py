"""A finished run is immutable: rerun with other settings it is refused naming them, rerun with the same ones it
trains nothing and rewrites no record; overwrite=true never deletes an input of the same command."""

from pathlib import Path

import pytest

from conftest import last_json, prepare_rotating_corpus, run_cli, run_minitron, tree_snapshot

WORDS = "one two three four five six seven eight nine ten eleven twelve"


@pytest.fixture(scope="module")
def finished(tiny_models, tmp_path_factory) -> dict:
    """A finished 2-step `train` run and a finished 2-step `distill` run of the tiny Llama on a small corpus."""
    root = tmp_path_factory.mktemp("finished")
    model = tiny_models["llama31"]
    data = prepare_rotating_corpus(root, model, WORDS)
    common = [f"data.path={data}", "train.seq_length=16", "train.global_batch_size=2", "train.steps=2",
              "train.warmup_steps=0", "train.eval_interval=0", "checkpoint.interval=2",
              "logging.progress=false"]  # fmt: skip
    runs = {"train": ["train", f"model.path={model}", f"output={root / 'train'}", *common],
            "distill": ["distill", f"teacher.path={model}", f"student.path={model}", f"output={root / 'distill'}",
                        *common]}  # fmt: skip
    for name, argv in runs.items():
        result = run_cli(*argv)
        assert result.returncode == 0, result.stderr[-3000:]
        assert last_json(result.stdout)["steps"] == 2
    return {"root": root, "argv": runs}


@pytest.mark.parametrize(
    "command,changes,named",
    [
        ("train", ["train.lr=0.001"], "train.lr=0.0003 -> 0.001"),
        ("train", ["train.lr=0.001", "train.seed=7"], "train.lr=0.0003 -> 0.001, train.seed=1234 -> 7"),
        ("train", ["train.steps=1"], "train.steps=2 -> 1"),
        ("distill", ["distill.temperature=2.0"], "distill.temperature=1.0 -> 2.0"),
    ],
)
def test_rerun_with_other_settings_is_refused_and_changes_nothing(command, changes, named, finished):
    run = finished["root"] / command
    before = tree_snapshot(run)
    result = run_cli(*finished["argv"][command], *changes)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: output={run} is a finished run trained with other settings ({named})"), line
    assert f"model.path={run / 'final'}" in line
    assert tree_snapshot(run) == before, "config.yaml, final/, checkpoints and metrics as they were"


@pytest.mark.parametrize("command", ["train", "distill"])
def test_rerun_with_the_same_settings_trains_nothing_and_keeps_the_records(command, finished):
    run = finished["root"] / command
    kept = {name: tree_snapshot(run / name) for name in ("config.yaml", "versions.json", "final", "checkpoints")}
    result = run_cli(*finished["argv"][command], "logging.tensorboard=false")  # a free setting
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_json(result.stdout)["steps_this_run"] == 0
    assert {name: tree_snapshot(run / name) for name in kept} == kept
    assert not (run / "config.1.yaml").exists()


@pytest.fixture
def inputs(tiny_models, text_file, tmp_path) -> dict:
    """A private copy of the tiny model and the text (the tests try to overwrite them)."""
    import shutil

    model = Path(shutil.copytree(tiny_models["llama31"], tmp_path / "model"))
    text = tmp_path / "text.txt"
    text.write_bytes(Path(text_file).read_bytes())
    return {"model": model, "text": text}


OVERWRITES = {  # case -> (command line with {model}, {text}, {root}: the copies and their directory; what is hit)
    "convert onto model": ("convert model.path={model} output={model} overwrite=true", "is the input model.path"),
    "convert into model": ("convert model.path={model} output={model}/sub overwrite=true", "is inside the input"),
    "convert around model": ("convert model.path={model} output={root} overwrite=true", "contains the input"),
    "prune onto model": ("prune model.path={model} data.path={text} output={model} overwrite=true "
                         "prune.ffn_hidden_size=64 calib.num_samples=2 calib.seq_length=16", "is the input model.path"),
    "prune onto data": ("prune model.path={model} data.path={text} output={text} overwrite=true "
                        "prune.ffn_hidden_size=64 calib.num_samples=2 calib.seq_length=16", "is the input data.path"),
    "importance onto model": ("importance model.path={model} data.path={text} output={model} overwrite=true "
                              "calib.num_samples=2 calib.seq_length=16", "is the input model.path"),
    "importance around data": ("importance model.path={model} data.path={text} output={root} overwrite=true "
                               "calib.num_samples=2 calib.seq_length=16", "contains the input"),
    "data prepare into model": ("data prepare data.path={text} model.path={model} output={model}/config "
                                "overwrite=true", "is inside the input model.path"),  # PREFIX.json = config.json
    "eval onto data": ("eval model.path={model} data.path={text} output={text} eval.seq_length=16",
                       "is the input data.path"),
}  # fmt: skip


@pytest.mark.parametrize("case", OVERWRITES)
def test_overwrite_never_deletes_an_input(case, inputs, tmp_path, monkeypatch, capfd):
    """Output equal to, inside, or around an input: refused before anything is written, even with overwrite=true."""
    line_format, hit = OVERWRITES[case]
    argv = line_format.format(model=inputs["model"], text=inputs["text"], root=tmp_path).split()
    before = tree_snapshot(tmp_path)
    code, stdout, stderr = run_minitron(monkeypatch, capfd, *argv)
    assert code == 2 and stdout == "", (code, stdout, stderr)
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: output=") and hit in line and "would change or delete that input" in line, line
    assert tree_snapshot(tmp_path) == before
