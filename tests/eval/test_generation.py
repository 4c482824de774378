"""KV-cache generation on the Megatron engine: greedy equals transformers token for token, at TP=1/2 and PP=2."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO, last_json, run_cli, run_torchrun

from minitron.eval.generation import Sampling, choose_next, generate

PROMPTS = ["The cat sat", "Once upon a time", "Once upon a tide", "ab"]  # two of one length: batched together


@pytest.fixture(scope="module")
def peaked(tmp_path_factory):
    """A tiny Llama-3.1 (rope scaling, GQA) whose greedy text varies: its matrices are scaled x6, which makes
    its predictions confident and dependent on the whole context (a plain random tiny model repeats one token)."""
    from tiny_models import make_tiny_model, save_char_tokenizer
    from transformers import AutoModelForCausalLM

    path = make_tiny_model("llama31", tmp_path_factory.mktemp("gen") / "model", seed=1)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 and "embed" not in name and "lm_head" not in name:
                param.mul_(6.0)
    model.save_pretrained(path)
    save_char_tokenizer(path)
    return path


def _hf_greedy(model_dir, prompt_ids, max_new_tokens, eos=None) -> list[int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=eos, pad_token_id=0)[0, len(prompt_ids):].tolist()  # fmt: skip
    return out[:-1] if eos is not None and out and out[-1] == eos else out


def test_greedy_equals_transformers(peaked, megatron_world):
    from minitron.models.checkpoint import load_model, open_model

    model = load_model(open_model(peaked), 1, 1, torch.float32).eval()
    prompts = [[ord(c) for c in text] for text in PROMPTS]
    ours = generate(model, prompts, 24, Sampling(), batch_size=2)
    for prompt, tokens in zip(prompts, ours):
        assert tokens == _hf_greedy(peaked, prompt, 24) and len(tokens) == 24
    assert len({tuple(t) for t in ours}) == len(PROMPTS) and all(len(set(t)) > 3 for t in ours[1:])
    # stopping at EOS ("\n" in the char tokenizer): the same tokens up to it, EOS itself dropped
    stops = generate(model, prompts, 40, Sampling(), eos_token_ids=[ord("e")])
    for prompt, tokens in zip(prompts, stops):
        assert tokens == _hf_greedy(peaked, prompt, 40, eos=ord("e"))


def test_sampling_is_seeded_and_respects_top_k_top_p(peaked, megatron_world):
    from minitron.models.checkpoint import load_model, open_model

    model = load_model(open_model(peaked), 1, 1, torch.float32).eval()
    prompts = [[ord(c) for c in PROMPTS[0]]]
    greedy = generate(model, prompts, 12, Sampling())
    assert generate(model, prompts, 12, Sampling(do_sample=True, top_k=1, seed=3)) == greedy
    hot = Sampling(do_sample=True, temperature=3.0, seed=5)
    assert generate(model, prompts, 12, hot) == generate(model, prompts, 12, hot)
    assert generate(model, prompts, 12, hot) != generate(
        model, prompts, 12, Sampling(do_sample=True, temperature=3.0, seed=6)
    )

    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])

    def draws(sampling: Sampling) -> set[int]:
        return set(choose_next(probs.log().repeat(400, 1), sampling, torch.Generator().manual_seed(0)).tolist())

    assert draws(Sampling(do_sample=True, top_k=2)) == {0, 1}
    assert draws(Sampling(do_sample=True, top_p=0.6)) == {0, 1}  # mass before token 2 is 0.8 >= 0.6
    assert draws(Sampling(do_sample=True, top_p=0.9)) == {0, 1, 2}
    assert draws(Sampling(do_sample=True)) == {0, 1, 2, 3}


def test_generate_cli_plain_prompt(peaked):
    result = run_cli("generate", f"model.path={peaked}", f"prompt={PROMPTS[1]!r}", "generate.max_new_tokens=16",
                     "generate.chat=false")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = last_json(result.stdout)
    assert out["chat"] is False and out["prompt_tokens"] == len(PROMPTS[1])
    expected = _hf_greedy(peaked, [ord(c) for c in PROMPTS[1]], 16, eos=10)
    assert out["token_ids"] == expected and out["text"] == "".join(map(chr, expected))
    assert out["decode_tokens_per_s"] > 0
    refused = run_cli("generate", f"model.path={peaked}", "prompt=hi", "generate.chat=true")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error: generate.chat=true")


@pytest.mark.slow
def test_generate_tp2_and_pp2_equal_tp1(peaked):
    args = [
        "generate",
        f"model.path={peaked}",
        f"prompt={PROMPTS[0]!r}",
        "generate.max_new_tokens=20",
        "generate.chat=false",
    ]
    single = last_json(run_cli(*args).stdout)["token_ids"]
    assert single == _hf_greedy(peaked, [ord(c) for c in PROMPTS[0]], 20, eos=10)
    for layout in ("parallel.tp=2", "parallel.pp=2"):
        run = run_torchrun(2, REPO / "minitron" / "cli.py", *args, layout)
        assert last_json(run.stdout)["token_ids"] == single, layout


def test_bench_reports_both_engines(peaked):
    result = run_cli("bench", f"model.path={peaked}", "bench.batch=2", "bench.prompt_len=16", "bench.output_len=6",
                     "bench.repeats=1")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = last_json(result.stdout)
    for engine in ("megatron", "transformers"):
        assert out[engine]["prefill_tokens_per_s"] > 0 and out[engine]["decode_tokens_per_s"] > 0
    assert out["decode_ratio"] == out["megatron"]["decode_tokens_per_s"] / out["transformers"]["decode_tokens_per_s"]
    assert (out["batch"], out["prompt_len"], out["output_len"], out["dtype"]) == (2, 16, 6, "float32")
    too_long = run_cli("bench", f"model.path={peaked}", "bench.prompt_len=250", "bench.output_len=10")
    assert too_long.returncode == 2 and "exceeds the model's max_position_embeddings=256" in too_long.stderr
