"""Rung (b): a candidate pruned in memory from saved scores is the student `minitron prune` writes for the same
explicit targets (logits within 1e-6), and its score is that student's LM loss as transformers computes it."""

import pytest
import torch

from conftest import run_cli
from minitron.config.prune import PruneTargets
from minitron.eval.heldout import hf_heldout_loss
from minitron.models.checkpoint import load_model, open_model
from minitron.prune.scores import ImportanceScores
from minitron.prune.search_score import lm_loss, prune_in_memory, score_candidate

TOKENS = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def calib_text(tmp_path_factory):
    import random

    rng = random.Random(2)
    words = "north south east west up down left right inside outside over under near far".split()
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)))
    return path


@pytest.mark.parametrize("family,targets", [
    ("qwen2", dict(hidden_size=48, ffn_hidden_size=64, num_attention_heads=2, num_layers=3)),
    ("smollm2", dict(hidden_size=72, ffn_hidden_size=192, num_query_groups=1, num_layers=2)),
])  # fmt: skip
def test_in_memory_prune_equals_minitron_prune(family, targets, tiny_models, calib_text, tmp_path, megatron_world):
    from minitron.eval.forward import full_logits

    out = tmp_path / "student"
    overrides = [f"prune.{k}={v}" for k, v in targets.items()]
    result = run_cli("prune", f"model.path={tiny_models[family]}", f"data.path={calib_text}", f"output={out}",
                     "calib.num_samples=4", "calib.seq_length=64", "calib.micro_batch_size=4", *overrides)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    source, scores = open_model(tiny_models[family]), ImportanceScores.load(out)
    model, plan = prune_in_memory(source, scores, PruneTargets(**targets), 1, 1, torch.float32)
    written = load_model(open_model(out), 1, 1, torch.float32).eval()
    assert plan.student == open_model(out).arch
    with torch.no_grad():
        mine, theirs = full_logits(model, TOKENS), full_logits(written, TOKENS)
    assert mine.shape == (2, 48, 256)
    torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)

    windows = TOKENS.repeat(2, 1)
    expected = hf_heldout_loss(out, windows)["loss"]
    assert abs(lm_loss(model, windows, 2) - expected) < 1e-5
    scored = score_candidate(source, scores, PruneTargets(**targets), windows, 2, 1, 1, torch.float32)
    assert scored["loss"] == lm_loss(model, windows, 2) and scored["seconds"] > 0
