"""The training loop in one process (TP=1): it learns, follows its LR schedule, and resumes past corruption."""

import math
import shutil

import pytest
import torch

from train_helpers import losses, train_model, train_records  # noqa: F401 (fixture)
from workers.train import run_job


def test_loss_goes_down_and_lr_follows_warmup_then_cosine(train_model, tmp_path, megatron_world):
    run = tmp_path / "run"
    result = run_job(str(train_model), str(run), steps=24, lr=3e-3, eval_interval=8)
    train = train_records(run)
    assert [r["step"] for r in train] == list(range(1, 25))
    first, last = train[0]["loss"], sum(r["loss"] for r in train[-3:]) / 3
    assert first > 5.0 and last < first - 2.0, (first, last)  # a learnable corpus: the model learns it
    valid = train_records(run, "valid")
    assert [r["step"] for r in valid] == [8, 16, 24]
    assert valid[0]["loss"] > valid[1]["loss"] > valid[2]["loss"]
    assert result["valid_loss"] == valid[-1]["loss"] and result["loss"] == train[-1]["loss"]
    # Megatron's schedule: step s (1-based) uses the LR after s-1 scheduler steps; warm-up 1, cosine to lr/10
    peak, floor, decay = 3e-3, 3e-4, 24
    for record in train:
        done = record["step"] - 1
        cosine = 0.5 * (1 + math.cos(math.pi * (done - 1) / (decay - 1)))
        expected = peak * done if done <= 1 else floor + (peak - floor) * cosine
        assert record["lr"] == pytest.approx(expected, rel=1e-6), record
    assert all(r["grad_norm"] > 0 and r["tokens"] == 4 * 32 and r["tokens_per_s"] > 0 for r in train)
    # the final model is a minitron Megatron checkpoint, and the run directory records its provenance
    assert (run / "final" / "minitron.json").is_file() and (run / "final" / "hf_files" / "tokenizer.json").is_file()
    assert (run / "config.yaml").is_file() and "megatron_core" in (run / "versions.json").read_text()
    assert (run / "checkpoints" / "latest").read_text().strip() == "iter_0000024"


def _flip_a_byte(checkpoint):
    victim = max(checkpoint.glob("*.distcp"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))


def _truncate(checkpoint):
    victim = max(checkpoint.glob("*.distcp"), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-100])


@pytest.mark.parametrize(
    "damage,verify,problem", [(_flip_a_byte, "checksum", "wrong CRC32"), (_truncate, "size", "wrong size")],
    ids=["flipped-byte", "truncated"],
)  # fmt: skip
def test_corrupt_newest_checkpoint_is_refused(damage, verify, problem, train_model, tmp_path, megatron_world, capfd):
    run = tmp_path / "run"
    run_job(str(train_model), str(run), steps=4, interval=2, verify=verify)
    uninterrupted = losses(run)
    checkpoints = run / "checkpoints"
    damage(checkpoints / "iter_0000004")
    (checkpoints / "iter_0000006.partial").mkdir()  # half-written by a run killed while saving
    capfd.readouterr()

    result = run_job(str(train_model), str(run), steps=4, interval=2, verify=verify)
    err = capfd.readouterr().err
    assert "warning: refusing checkpoint" in err and "iter_0000004" in err and problem in err, err
    assert result["resumed_from"] == "iter_0000002" and result["steps_this_run"] == 2
    assert losses(run) == uninterrupted  # steps 3 and 4 again, exactly
    assert (checkpoints / "iter_0000004.corrupt").is_dir() and (checkpoints / "iter_0000004").is_dir()
    assert not list(checkpoints.glob("*.partial"))

    # with every checkpoint unusable, the run stops with a clear error instead of silently starting over
    shutil.rmtree(checkpoints / "iter_0000004.corrupt")
    for checkpoint in (checkpoints / "iter_0000002", checkpoints / "iter_0000004"):
        (checkpoint / "minitron_manifest.json").unlink(missing_ok=True)
    from minitron.errors import MinitronError

    with pytest.raises(MinitronError, match="no valid checkpoint to resume from"):
        run_job(str(train_model), str(run), steps=4, interval=2, verify=verify)


def test_resume_with_nothing_left_to_do(train_model, tmp_path, megatron_world):
    run = tmp_path / "run"
    run_job(str(train_model), str(run), steps=2)
    before = (run / "final" / "minitron.json").stat().st_mtime_ns
    result = run_job(str(train_model), str(run), steps=2)
    assert result["resumed_from"] == "iter_0000002" and result["steps_this_run"] == 0
    assert (run / "final" / "minitron.json").stat().st_mtime_ns == before  # the final model is not rewritten
    assert len(losses(run)) == 2


def test_checkpoint_holds_exact_state(train_model, tmp_path, megatron_world):
    """Weights and Adam moments after a load equal those saved, bit for bit."""
    from minitron.models.checkpoint import load_model, open_model
    from minitron.training import checkpointing
    from minitron.training.engine import build_training_parts
    from workers.train import make_config

    run = tmp_path / "run"
    run_job(str(train_model), str(run), steps=3, interval=3)
    cfg = make_config(str(train_model), str(run))
    source = open_model(train_model)
    parts = build_training_parts(load_model(source, 1, 1, torch.float32), cfg.train)
    step, consumed = checkpointing.load(parts, run / "checkpoints" / "iter_0000003", source.arch.to_dict())
    assert (step, consumed) == (3, 12) and parts.scheduler.num_steps == 3
    final = load_model(open_model(run / "final"), 1, 1, torch.float32)
    for (name, loaded), (_, saved) in zip(parts.module.named_parameters(), final.named_parameters()):
        assert torch.equal(loaded, saved), name
    states = list(parts.optimizer.chained_optimizers[0].optimizer.state.values())
    assert states and all(float(s["step"]) == 3 for s in states)
    assert all(s["exp_avg_sq"].abs().sum() > 0 for s in states)
