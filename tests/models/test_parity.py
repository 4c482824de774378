"""minitron's Megatron-Core model gives transformers' logits, at TP=1, TP=2 and PP=2 (fp32, gloo)."""

import json

import pytest
import torch

from conftest import FAMILIES, TESTS, run_torchrun

TOLERANCE = 1e-4


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_match_transformers_tp1(family, tiny_models, megatron_world):
    from transformers import AutoModelForCausalLM

    from minitron.eval.forward import full_logits
    from minitron.models.checkpoint import load_model, open_model

    source = open_model(tiny_models[family])
    model = load_model(source, 1, 1, torch.float32).eval()
    tokens = torch.randint(0, 256, (3, 50), generator=torch.Generator().manual_seed(0))
    reference = AutoModelForCausalLM.from_pretrained(tiny_models[family], dtype=torch.float32)(tokens).logits
    logits = full_logits(model, tokens)
    assert logits.shape == reference.shape
    assert (logits - reference).abs().max().item() < TOLERANCE
    # the model is not trivially matching: logits vary across positions and vocabulary
    assert logits.std().item() > 0.01


@pytest.mark.slow
@pytest.mark.parametrize(
    "nproc,tp,pp,families",
    [
        (2, 2, 1, ["llama31", "qwen2", "smollm2"]),  # "odd" has 3 query groups: TP=2 cannot split it
        (3, 3, 1, ["odd"]),
        (2, 1, 2, list(FAMILIES)),
    ],
    ids=["tp2", "tp3-odd", "pp2"],
)
def test_logits_match_transformers_multiprocess(nproc, tp, pp, families, tiny_models, tmp_path):
    out = tmp_path / "result.json"
    dirs = [tiny_models[family] for family in families]
    run_torchrun(nproc, TESTS / "workers" / "parity.py", "--tp", tp, "--pp", pp, "--out", out, *dirs)
    results = json.loads(out.read_text())
    assert len(results) == len(families)
    for model_dir, result in results.items():
        assert 0 <= result["max_abs_logit_diff"] < TOLERANCE, (model_dir, result)
        assert abs(result["loss"] - result["reference_loss"]) < TOLERANCE, (model_dir, result)
        assert result["params"] == result["arch_params"], (model_dir, result)
