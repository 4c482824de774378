"""Training across layouts (2 processes, gloo): TP=2, PP=2 and DP=2 equal TP=1; a killed run resumes exactly;
checkpoints reshard (TP=2 -> TP=1, distributed optimizer DP=2 -> DP=1)."""

import functools
import json
import shutil

import pytest
import torch

import conftest
from conftest import TESTS
from train_helpers import losses, train_model  # noqa: F401 (fixture)
from workers.train import run_job

WORKER = TESTS / "workers" / "train.py"
TOLERANCE = 1e-5


torchrun_jobs = functools.partial(conftest.torchrun_jobs, WORKER)  # (directory, name, jobs, expect_kill=False)


def final_parameters(run_dir):
    from minitron.models.checkpoint import load_model, open_model

    model = load_model(open_model(run_dir / "final"), 1, 1, torch.float32)
    return dict(model.named_parameters())


@pytest.mark.slow
def test_layouts_equal_tp1(train_model, tmp_path, megatron_world):
    model = str(train_model)
    run_job(model, str(tmp_path / "tp1"), steps=5)  # reference: this process, TP=1 DP=1, 4 micro-batches
    layouts = {"tp2": {"tp": 2}, "pp2": {"pp": 2}, "dp2": {}, "dp2-distopt": {"distributed_optimizer": True}}
    jobs = [{"model": model, "run": str(tmp_path / name), "steps": 5, **layout} for name, layout in layouts.items()]
    torchrun_jobs(tmp_path, "layouts", jobs)
    reference = losses(tmp_path / "tp1")
    assert len(reference) == 5 and reference[-1] < reference[0]
    expected = final_parameters(tmp_path / "tp1")
    for name in layouts:
        got = losses(tmp_path / name)
        assert len(got) == 5
        assert max(abs(a - b) for a, b in zip(got, reference)) < TOLERANCE, (name, got, reference)
        # each layout's final model loads here at TP=1 and holds (nearly) the reference's weights
        weights = final_parameters(tmp_path / name)
        worst = max((weights[key] - expected[key]).abs().max().item() for key in expected)
        assert weights.keys() == expected.keys() and worst < TOLERANCE, (name, worst)


@pytest.fixture(scope="module")
def killed_runs(train_model, tmp_path_factory):
    """For TP=2 and for DP=2 with the distributed optimizer: an uninterrupted 6-step run ("whole") and one
    SIGKILLed after step 3 (checkpoints every 2 steps) then resumed ("killed"). Three launches in all."""
    root = tmp_path_factory.mktemp("killed")
    model = str(train_model)
    layouts = {"tp2": {"tp": 2}, "dp2-distopt": {"distributed_optimizer": True}}

    def job(name, kind, **extra):
        run = str(root / f"{name}-{kind}")
        return {"model": model, "run": run, "steps": 6, "interval": 2, **layouts[name], **extra}

    first = [job("tp2", "whole"), job("dp2-distopt", "whole"), job("tp2", "killed", kill_after=3)]
    torchrun_jobs(root, "launch1", first, expect_kill=True)
    torchrun_jobs(root, "launch2", [job("tp2", "killed"), job("dp2-distopt", "killed", kill_after=3)], expect_kill=True)
    torchrun_jobs(root, "launch3", [job("dp2-distopt", "killed")])
    return root


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["tp2", "dp2-distopt"])
def test_killed_run_resumes_bit_identically(layout, killed_runs, megatron_world):
    whole, killed = killed_runs / f"{layout}-whole", killed_runs / f"{layout}-killed"
    starts = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    starts = [record for record in starts if record["kind"] == "start"]
    assert [s["resumed_from"] for s in starts] == [None, "iter_0000002"]  # killed after step 3: resumed at 2
    assert losses(killed) == losses(whole) and len(losses(whole)) == 6
    expected, got = final_parameters(whole), final_parameters(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("layout,settings", [("tp2", {}), ("dp2-distopt", {"distributed_optimizer": True})])
def test_checkpoint_reshards_to_one_process(layout, settings, killed_runs, train_model, tmp_path, megatron_world,
                                            capfd):  # fmt: skip
    """The whole run's step-4 checkpoint (TP=2, or DP=2 distributed optimizer) resumed here at TP=1 DP=1."""
    run = tmp_path / "run"
    shutil.copytree(killed_runs / f"{layout}-whole", run)
    shutil.rmtree(run / "checkpoints" / "iter_0000006")
    shutil.rmtree(run / "final")
    capfd.readouterr()
    result = run_job(str(train_model), str(run), steps=6, interval=2, **settings)
    assert result["resumed_from"] == "iter_0000004"
    assert "resharding iter_0000004" in capfd.readouterr().err
    expected = losses(killed_runs / f"{layout}-whole")
    got = losses(run)
    assert got[:4] == expected[:4]
    assert max(abs(a - b) for a, b in zip(got[4:], expected[4:])) < TOLERANCE, (got, expected)
