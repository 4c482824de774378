"""Held-out loss: the window definition, minitron == transformers, any layout, clear errors."""

import pytest
import torch

from conftest import REPO, expected_versions, last_json, run_cli, run_torchrun
from minitron.errors import MinitronError
from minitron.eval import heldout


def test_windows_are_consecutive_and_drop_the_tail():
    windows = heldout.make_windows(list(range(10)), seq_length=3)
    assert windows.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert heldout.make_windows(list(range(10)), 3, max_windows=2).shape == (2, 3)
    with pytest.raises(MinitronError, match="fewer than one window of eval.seq_length=20"):
        heldout.make_windows(list(range(10)), seq_length=20)


def test_loss_equals_transformers(tiny_models, megatron_world):
    from minitron.models.checkpoint import load_model, open_model

    windows = torch.randint(0, 256, (5, 24), generator=torch.Generator().manual_seed(3))
    for family in ("llama31", "odd"):
        model = load_model(open_model(tiny_models[family]), 1, 1, torch.float32).eval()
        ours = heldout.megatron_heldout_loss(model, windows, micro_batch_size=2, progress=False)
        reference = heldout.hf_heldout_loss(tiny_models[family], windows, micro_batch_size=3)
        assert ours["tokens"] == reference["tokens"] == 5 * 23
        assert abs(ours["loss"] - reference["loss"]) < 1e-5


def test_language_model_loss_in_many_chunks_equals_megatron_one_slice(tiny_models, megatron_world):
    """The held-out loss is the model's own Megatron cross-entropy, taken a few tokens at a time within the
    temporaries budget; the logits are left as they were (Megatron's cross-entropy works in place)."""
    from minitron.distill import vocab_parallel
    from minitron.models.checkpoint import load_model, open_model

    model = load_model(open_model(tiny_models["llama31"]), 1, 1, torch.float32).eval()
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 10, 256, generator=generator) * 4  # [b, s, vocab]
    labels = torch.randint(0, 256, (3, 10), generator=generator)
    before = logits.clone()
    one_slice = model.compute_language_model_loss(labels, logits.transpose(0, 1).contiguous())  # [b, s]
    budget = 4 * heldout.LM_LOSS_TEMPORARIES * 4 * 256  # four tokens a chunk: 8 chunks of 30 tokens
    assert len(vocab_parallel.token_chunks(30, 256, heldout.LM_LOSS_TEMPORARIES, budget_bytes=budget)) == 8
    chunked = heldout.language_model_loss(model, labels, logits, budget_bytes=budget)
    assert chunked.shape == (3, 10) and one_slice.min() > 0.5
    assert torch.allclose(chunked, one_slice, atol=1e-6, rtol=0)
    assert torch.equal(logits, before)


def test_eval_cli_with_reference(tiny_models, text_file):
    result = run_cli("eval", f"model.path={tiny_models['qwen2']}", f"data.path={text_file}",
                     "eval.seq_length=64", "eval.max_windows=10", "eval.reference=true")  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = last_json(result.stdout)
    assert out["tokens"] == 10 * 63 and out["windows"] == 10
    assert out["abs_diff"] < 1e-4
    assert abs(out["ppl"] - torch.tensor(out["loss"]).exp().item()) < 1e-3
    assert out["versions"] == expected_versions()


@pytest.mark.slow
def test_eval_data_parallel_equals_single_process(tiny_models, text_file):
    single = last_json(run_cli("eval", f"model.path={tiny_models['smollm2']}", f"data.path={text_file}",
                               "eval.seq_length=64", "eval.max_windows=9").stdout)  # fmt: skip
    result = run_torchrun(2, REPO / "minitron" / "cli.py", "eval", f"model.path={tiny_models['smollm2']}",
                          f"data.path={text_file}", "eval.seq_length=64", "eval.max_windows=9")  # fmt: skip
    data_parallel = last_json(result.stdout)
    assert data_parallel["tokens"] == single["tokens"]
    assert abs(data_parallel["loss"] - single["loss"]) < 1e-6


def test_eval_bad_input(tiny_models, text_file, tmp_path):
    too_long = run_cli("eval", f"model.path={tiny_models['qwen2']}", f"data.path={text_file}", "eval.seq_length=4096")
    assert too_long.returncode == 2 and "eval.seq_length=4096 exceeds the model's max_position_embeddings=256" in too_long.stderr
    missing = run_cli("eval", f"model.path={tiny_models['qwen2']}", f"data.path={tmp_path / 'nope.txt'}", "eval.seq_length=64")
    assert missing.returncode == 2 and "data.path=" in missing.stderr and "no such file" in missing.stderr.lower()
    no_data = run_cli("eval", f"model.path={tiny_models['qwen2']}", "eval.seq_length=64")
    assert no_data.returncode == 2 and "data.path is required" in no_data.stderr
