"""`minitron prune`: importance + surgery end to end; the student loads in transformers; saved scores
are reused; bad input is refused before any work."""

import json

import pytest
import torch

from conftest import expected_versions, last_json, run_cli


@pytest.fixture(scope="module")
def long_text(tmp_path_factory):
    import random

    rng = random.Random(1)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(4000)))
    return path


def test_prune_width_and_depth(tiny_models, long_text, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "student"
    result = run_cli("prune", f"model.path={tiny_models['qwen2']}", f"data.path={long_text}", f"output={out}",
                     "calib.num_samples=8", "calib.seq_length=64", "calib.micro_batch_size=4",
                     "prune.hidden_size=48", "prune.ffn_hidden_size=64", "prune.num_layers=3")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["student"]["hidden_size"] == 48 and summary["student"]["num_layers"] == 3
    assert len(summary["dropped_layers"]) == 1
    student = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in student.parameters()) == summary["params_after"]
    assert (out / "importance.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / "prune_summary.json").read_text())["versions"] == expected_versions()
    assert json.loads((out / "importance.json").read_text())["versions"] == expected_versions()
    assert list(out.glob("*.png"))

    # pruning again to other targets reuses the saved scores (no calibration data needed)
    again = tmp_path / "student2"
    result = run_cli("prune", f"model.path={tiny_models['qwen2']}", f"prune.scores={out}", f"output={again}",
                     "prune.ffn_hidden_size=32")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((again / "config.json").read_text())["intermediate_size"] == 32
    # the same command again is a no-op
    result = run_cli("prune", f"model.path={tiny_models['qwen2']}", f"prune.scores={out}", f"output={again}",
                     "prune.ffn_hidden_size=32")  # fmt: skip
    assert result.returncode == 0 and last_json(result.stdout)["skipped"] is True
    with torch.no_grad():
        assert student(torch.arange(20).unsqueeze(0)).logits.isfinite().all()

    # a depth target whose metric the saved scores lack: one line naming the importance run that adds it;
    # that very command (SCORES filled in) makes scores the prune then accepts
    deeper = tmp_path / "student3"
    args = [f"model.path={tiny_models['qwen2']}", f"output={deeper}", "prune.num_layers=2"]
    result = run_cli("prune", f"prune.scores={out}", *args)
    assert result.returncode == 2 and not deeper.exists()
    (line,) = result.stderr.strip().splitlines()
    assert "has no contiguous-window losses for dropping 2 layers" in line and "window sizes [1]" in line
    suggested = line.split("`")[1].split()
    assert suggested[:2] == ["minitron", "importance"] and "importance.window_sizes=[2]" in suggested
    scores = tmp_path / "scores"
    suggested = [arg.replace("output=SCORES", f"output={scores}") for arg in suggested[2:]]
    result = run_cli("importance", *suggested, "calib.num_samples=8", "calib.seq_length=64", "calib.micro_batch_size=4")
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli("prune", f"prune.scores={scores}", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((deeper / "config.json").read_text())["num_hidden_layers"] == 2


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["prune.hidden_size=128"], "prune.hidden_size=128 is larger than the source's hidden_size=64"),
        (["prune.num_attention_heads=3"], "prune.num_attention_heads=3 is not divisible by num_query_groups=2"),
        (["prune.drop_layers=[0,9]"], "prune.drop_layers: unknown layer index 9"),
        (["calib.num_samples=1000", "prune.ffn_hidden_size=64"], "calibration data shorter than asked"),
    ],
)
def test_prune_bad_input(overrides, message, tiny_models, long_text, tmp_path):
    out = tmp_path / "student"
    result = run_cli("prune", f"model.path={tiny_models['qwen2']}", f"data.path={long_text}", f"output={out}",
                     "calib.seq_length=64", *overrides)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr.strip().splitlines()[-1]
    assert not out.exists() and not out.with_name("student.partial").exists()


def test_scores_of_another_model_are_refused(tiny_models, long_text, tmp_path):
    """Scores from `minitron importance` on one model; a model of the same architecture but other weights
    (the same tiny Qwen2, another seed) refuses them, naming both fingerprints and the fix."""
    from tiny_models import make_tiny_model, save_char_tokenizer

    from minitron.models.checkpoint import open_model

    model = tiny_models["qwen2"]
    scores = tmp_path / "scores"
    result = run_cli("importance", f"model.path={model}", f"data.path={long_text}", f"output={scores}",
                     "calib.num_samples=4", "calib.seq_length=64", "calib.micro_batch_size=4",
                     "importance.depth_metrics=[block_influence]")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((scores / "importance.json").read_text())["model_fingerprint"] == open_model(model).fingerprint()

    other = make_tiny_model("qwen2", tmp_path / "other", seed=1)
    save_char_tokenizer(other)
    out = tmp_path / "student"
    refused = run_cli("prune", f"model.path={other}", f"prune.scores={scores}", f"output={out}",
                      "prune.ffn_hidden_size=64")  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-3000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert line == (
        f"error: prune.scores={scores} were computed on another model ({model}, model_fingerprint "
        f"{open_model(model).fingerprint()}) than model.path={other} (fingerprint {open_model(other).fingerprint()}); "
        f"rerun `minitron importance model.path={other} output=SCORES_DIR` and pass prune.scores=SCORES_DIR"
    ), line
    assert not out.exists() and not out.with_name("student.partial").exists()

    accepted = run_cli("prune", f"model.path={model}", f"prune.scores={scores}", f"output={out}",
                       "prune.ffn_hidden_size=64")  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 64
