"""`minitron train model.init=random`: DIR's architecture with Megatron's initialisation, seeded by train.seed.

The runs train the 2-layer tiny model (vocabulary 256) on a learnable corpus. A random model starts near
the loss of a uniform guess, ln(256) = 5.545 (a little above: with tied embeddings the input token's own
logit stands out); the same command twice gives the same weights; resuming loads the checkpoint, so the
initialisation only matters at step 0."""

import json
import math
import sys

import pytest
import torch

from conftest import REPO, last_json, run_cli, run_torchrun
from train_helpers import losses, train_model, write_indexed_dataset  # noqa: F401 (fixture)

UNIFORM_LOSS = math.log(256)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """40 documents of arithmetic progressions (next token = this one + stride, mod 50, + 40)."""
    documents = [[(13 * i + (i % 3 + 1) * j) % 50 + 40 for j in range(64)] for i in range(40)]
    return write_indexed_dataset(tmp_path_factory.mktemp("random_init") / "corpus", documents)


def train(model, output, corpus, *overrides):
    """`minitron train` of ``model`` into ``output`` (constant lr 3e-3, 4 x 32 tokens a step); the result."""
    result = run_cli("train", f"model.path={model}", f"data.path={corpus}", f"output={output}", "train.seq_length=32",
                     "train.global_batch_size=4", "train.micro_batch_size=4", "train.lr=3e-3", "train.warmup_steps=0",
                     "train.decay_style=constant", "train.eval_interval=0", "logging.progress=false",
                     "logging.tensorboard=false", *overrides)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return last_json(result.stdout)


def parameters(path) -> dict:
    """The named parameters of a minitron Megatron checkpoint or HF directory, at TP=1 in float32."""
    from minitron.models.checkpoint import load_model, open_model

    return dict(load_model(open_model(path), 1, 1, torch.float32).named_parameters())


@pytest.fixture(scope="module")
def random_run(train_model, corpus, tmp_path_factory):
    """8 steps from random init with the tiny model's architecture."""
    run = tmp_path_factory.mktemp("random_init") / "random"
    train(train_model, run, corpus, "model.init=random", "train.steps=8", "checkpoint.interval=4")
    return run


# ---- the config --------------------------------------------------------------------------------


def compose(*overrides):
    from hydra import compose as hydra_compose, initialize_config_dir

    from minitron.config import schema

    schema.register()
    with initialize_config_dir(config_dir=schema.CONF_DIR, version_base=None):
        return schema.to_object(hydra_compose("train", overrides=["model.path=M", "output=O", *overrides]))


def test_init_defaults_to_pretrained_and_takes_random():
    from minitron.config.training import TrainModelConfig

    assert isinstance(compose().model, TrainModelConfig) and compose().model.init == "pretrained"
    assert compose("model.init=random").model.init == "random"


def test_bad_init_is_refused_and_nothing_written(train_model, corpus, tmp_path, monkeypatch, capfd):
    import recipes.train

    output = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["minitron-train", f"model.path={train_model}", f"data.path={corpus}",
                                      f"output={output}", "model.init=bogus"])  # fmt: skip
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        recipes.train.main()
    err = capfd.readouterr().err
    assert exit_info.value.code == 2
    assert err == "error: model.init='bogus': use one of pretrained, random\n", err
    assert list(tmp_path.iterdir()) == []  # nothing written


# ---- the model it builds -------------------------------------------------------------------------


def test_random_model_is_megatron_init_and_follows_the_seed(train_model, megatron_world):
    from minitron.models.checkpoint import load_model, open_model
    from minitron.parallel import setup_distributed

    source = open_model(train_model, init="random")

    def build(seed):
        setup_distributed(1, 1, seed)  # seeds torch (and on GPU Megatron's model-parallel RNG tracker)
        return dict(load_model(source, 1, 1, torch.float32).named_parameters())

    first, again, other, pretrained = build(1234), build(1234), build(5), parameters(train_model)
    assert first.keys() == pretrained.keys()
    for name, param in first.items():
        assert torch.equal(param, again[name]), name  # same seed: the same weights
        if name.endswith("norm.weight"):
            assert torch.equal(param, torch.ones_like(param)), name  # RMSNorm starts at 1
            continue
        assert not torch.equal(param, other[name]) and not torch.equal(param, pretrained[name]), name
        std = param.std().item()  # normal(0, 0.02); the output projections of each layer scaled by 1/sqrt(2 x 2)
        expected = 0.01 if name.endswith(("linear_proj.weight", "linear_fc2.weight")) else 0.02
        assert abs(param.mean().item()) < 0.002 and expected * 0.9 < std < expected * 1.1, (name, std)


# ---- minitron train model.init=random ------------------------------------------------------------


def test_random_init_starts_at_the_uniform_loss_and_learns(random_run, corpus, tmp_path):
    trained = losses(random_run)
    assert len(trained) == 8
    assert abs(trained[0] - UNIFORM_LOSS) < 0.1, trained  # a random model: no better than a uniform guess
    assert sum(trained[-2:]) / 2 < trained[0] - 0.5, trained  # and it learns the corpus
    meta = json.loads((random_run / "final" / "minitron.json").read_text())
    assert meta["init"] == "random" and meta["format"] == "minitron-megatron-checkpoint"
    assert "init: random" in (random_run / "config.yaml").read_text()

    # the default, model.init=pretrained, from the trained checkpoint starts where that run ended
    pretrained = tmp_path / "pretrained"
    train(random_run / "final", pretrained, corpus, "train.steps=1")
    assert losses(pretrained)[0] < UNIFORM_LOSS - 0.5, losses(pretrained)
    assert "init" not in json.loads((pretrained / "final" / "minitron.json").read_text())


def test_same_seed_same_weights_and_resume(random_run, corpus, tmp_path, megatron_world):
    """From the trained checkpoint as DIR (its architecture only), 4 steps then a resume to 8: the same
    losses and final weights as the first run, so neither DIR's weights nor the resume change anything."""
    run = tmp_path / "again"
    common = ["model.init=random", "checkpoint.interval=4"]
    first = train(random_run / "final", run, corpus, *common, "train.steps=4")
    assert first["resumed_from"] is None
    resumed = train(random_run / "final", run, corpus, *common, "train.steps=8")
    assert resumed["resumed_from"] == "iter_0000004" and resumed["steps_this_run"] == 4
    assert losses(run) == losses(random_run)
    reference, again = parameters(random_run / "final"), parameters(run / "final")
    for name, param in reference.items():
        assert torch.equal(param, again[name]), name


@pytest.mark.slow
def test_random_init_at_tp2_is_deterministic(train_model, corpus, tmp_path, megatron_world):
    command = [REPO / "minitron" / "cli.py", "train", f"model.path={train_model}", "model.init=random",
               f"data.path={corpus}", "train.seq_length=32", "train.global_batch_size=4", "train.micro_batch_size=4",
               "train.lr=3e-3", "train.warmup_steps=0", "train.steps=2", "train.eval_interval=0",
               "logging.progress=false", "logging.tensorboard=false", "parallel.tp=2"]  # fmt: skip
    for name in ("tp2-a", "tp2-b"):
        result = last_json(run_torchrun(2, *command, f"output={tmp_path / name}").stdout)
        assert result["steps"] == 2
    assert losses(tmp_path / "tp2-a") == losses(tmp_path / "tp2-b")
    assert abs(losses(tmp_path / "tp2-a")[0] - UNIFORM_LOSS) < 0.1
    first, second = parameters(tmp_path / "tp2-a" / "final"), parameters(tmp_path / "tp2-b" / "final")
    for name, param in first.items():
        assert torch.equal(param, second[name]), name


@pytest.fixture(scope="module")
def initial_weights(train_model, corpus, tmp_path_factory):
    """The random initialisation at PP=1 (one process), saved after a step at learning rate 0 (changing nothing)."""
    run = tmp_path_factory.mktemp("random_init") / "pp1"
    train(train_model, run, corpus, "model.init=random", "train.steps=1", "train.lr=0", "train.min_lr=0")
    return parameters(run / "final")


def test_a_step_at_learning_rate_zero_saves_the_initialisation(train_model, initial_weights, megatron_world):
    from minitron.models.checkpoint import load_model, open_model
    from minitron.parallel import setup_distributed

    setup_distributed(1, 1, 1234)  # train.seed's default
    built = dict(load_model(open_model(train_model, init="random"), 1, 1, torch.float32).named_parameters())
    for name, param in initial_weights.items():
        assert torch.equal(param, built[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["parallel.pp=2", "parallel.tp=2"])
def test_random_init_is_the_same_in_every_layout(layout, train_model, corpus, initial_weights, tmp_path):
    """Each parameter is drawn whole from a seed of (train.seed, its name with the global layer number), then
    sharded: PP=2 (each stage builds its own layers) and TP=2 save exactly the PP=1 weights."""
    command = [REPO / "minitron" / "cli.py", "train", f"model.path={train_model}", "model.init=random",
               f"data.path={corpus}", "train.seq_length=32", "train.global_batch_size=4", "train.micro_batch_size=4",
               "train.lr=0", "train.min_lr=0", "train.warmup_steps=0", "train.decay_style=constant", "train.steps=1",
               "train.eval_interval=0", "logging.progress=false", "logging.tensorboard=false", layout,
               f"output={tmp_path / 'run'}"]  # fmt: skip
    assert last_json(run_torchrun(2, *command).stdout)["steps"] == 1
    saved = parameters(tmp_path / "run" / "final")
    assert saved.keys() == initial_weights.keys()
    for name, param in initial_weights.items():
        assert torch.equal(param, saved[name]), name
