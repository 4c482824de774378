"""`minitron train`: its configs compose, and bad input is refused with the field named and nothing written."""

import functools
from pathlib import Path

import pytest

from conftest import REPO, assert_group_option_documented, compose_command, run_cli, run_in_process
from train_helpers import train_model, write_indexed_dataset  # noqa: F401 (fixture)

TRAIN_GROUP = sorted((REPO / "conf" / "train").glob("*.yaml"))


compose = functools.partial(compose_command, "train")


@pytest.mark.parametrize("path", TRAIN_GROUP, ids=[p.stem for p in TRAIN_GROUP])
def test_train_group_composes_and_documents_every_field(path):
    from minitron.config.training import TrainSettings

    cfg = compose(f"train={path.stem}", "model.path=M", "data.path=D", "output=O")
    assert isinstance(cfg.train, TrainSettings)
    assert_group_option_documented(path, TrainSettings, "train")


def test_teacher_correction_follows_the_paper():
    cfg = compose("train=teacher_correction", "model.path=M", "data.path=D", "output=O").train
    default = compose("model.path=M", "data.path=D", "output=O").train
    assert cfg.warmup_steps == 120 and cfg.decay_style == "cosine"
    assert cfg.lr == pytest.approx(3e-4 / 5)  # 1/5 of the original peak
    assert 90e9 <= cfg.steps * cfg.global_batch_size * cfg.seq_length <= 110e9  # ~100B tokens
    assert default.decay_style == "cosine" and default.warmup_steps > 0


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.global_batch_size=6", "train.global_batch_size=6 is not divisible by train.micro_batch_size=4"),
        ("train.warmup_steps=200", "train.warmup_steps=200 must be smaller"),
        ("train.decay_style=step", "train.decay_style='step'"),
        ("checkpoint.verify=md5", "checkpoint.verify='md5'"),
        ("train.min_lr=1", "train.min_lr=1.0"),
    ],
)
def test_schema_rejects_bad_values(override, message):
    from minitron.errors import MinitronError

    with pytest.raises(MinitronError, match=message.replace("(", r"\(").replace(".", r"\.")):
        compose("model.path=M", "output=O", "train.micro_batch_size=4", "train.steps=100", override)


run_recipe = functools.partial(run_in_process, "train")  # (monkeypatch, capfd, *args, world_size=None)


@pytest.fixture
def dataset(tmp_path):
    documents = [[(7 * i + j) % 200 + 20 for j in range(60)] for i in range(20)]
    return write_indexed_dataset(tmp_path / "corpus", documents)


@pytest.mark.parametrize(
    "case,message",
    [
        ("no-data", "data.path is required"),
        ("missing-data", "data.path={tmp}/nowhere: {tmp}/nowhere.bin and {tmp}/nowhere.idx not found"),
        ("empty-data", "data.path={tmp}/empty holds 5 tokens in 1 documents"),
        ("seq-too-long", "train.seq_length=300 exceeds the model's max_position_embeddings=256"),
        ("batch-vs-dp",
         "train.global_batch_size=6 is not divisible by train.micro_batch_size=2 x data-parallel size 2 = 4"),
        ("tp-vs-heads", "parallel.tp=4 does not divide the model's num_attention_heads=6"),
        ("output-not-a-run", "output={tmp}/other is a non-empty directory that is not a training run"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_and_nothing_written(case, message, train_model, dataset, tmp_path, monkeypatch, capfd):
    output = tmp_path / "run"
    args = {"model.path": train_model, "data.path": dataset, "output": output, "train.seq_length": 32,
            "train.global_batch_size": 4, "train.micro_batch_size": 1}  # fmt: skip
    world_size = None
    if case == "no-data":
        del args["data.path"]
    elif case == "missing-data":
        args["data.path"] = tmp_path / "nowhere"
    elif case == "empty-data":
        args["data.path"] = write_indexed_dataset(tmp_path / "empty", [[5, 6, 7, 8, 9]])
    elif case == "seq-too-long":
        args["train.seq_length"] = 300
    elif case == "batch-vs-dp":
        args.update({"train.global_batch_size": 6, "train.micro_batch_size": 2})
        world_size = 2
    elif case == "tp-vs-heads":
        args["parallel.tp"] = 4
        world_size = 4
    elif case == "output-not-a-run":
        output = tmp_path / "other"
        output.mkdir()
        (output / "notes.txt").write_text("mine")
        args["output"] = output
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run_recipe(monkeypatch, capfd, *(f"{k}={v}" for k, v in args.items()), world_size=world_size)
    assert code == 2
    assert err.strip() == "error: " + err.strip().removeprefix("error: ") and err.count("\n") == 1, err
    assert message.format(tmp=tmp_path) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert not Path(output / "config.yaml").exists()


def test_cli_reports_missing_data_path(train_model, tmp_path):
    result = run_cli("train", f"model.path={train_model}", f"output={tmp_path / 'run'}", "train.seq_length=32")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: data.path is required")
    assert not (tmp_path / "run").exists()
