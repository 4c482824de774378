"""`minitron convert`: HF -> Megatron -> HF is bit-exact at any layout; bad input is refused cleanly."""

import json
import struct

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli, run_torchrun, last_json, REPO, expected_versions
from tiny_models import make_tiny_model, save_char_tokenizer


def hf_tensors(model_dir):
    tensors = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def assert_bit_exact(a_dir, b_dir):
    a, b = hf_tensors(a_dir), hf_tensors(b_dir)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("family,dtype", [("qwen2", torch.float32), ("smollm2", torch.bfloat16)])
def test_round_trip_bit_exact(family, dtype, tmp_path):
    source = make_tiny_model(family, tmp_path / "hf", dtype=dtype)
    save_char_tokenizer(source)
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    result = run_cli("convert", f"model.path={source}", f"output={ckpt}")
    assert result.returncode == 0, result.stderr
    assert last_json(result.stdout)["format"] == "megatron"
    assert (ckpt / "hf_files" / "tokenizer.json").is_file()
    assert json.loads((ckpt / "minitron.json").read_text())["versions"] == expected_versions()
    result = run_cli("convert", f"model.path={ckpt}", f"output={back}")
    assert result.returncode == 0, result.stderr
    assert_bit_exact(source, back)
    assert json.loads((back / "minitron.json").read_text())["versions"] == expected_versions()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (back / name).read_bytes() == (source / name).read_bytes()
    config = json.loads((back / "config.json").read_text())
    assert config["hidden_size"] == json.loads((source / "config.json").read_text())["hidden_size"]
    # converting again into the same output is a no-op, not an error
    again = run_cli("convert", f"model.path={ckpt}", f"output={back}")
    assert again.returncode == 0 and last_json(again.stdout)["skipped"] is True


@pytest.mark.slow
def test_round_trip_across_layouts(tiny_models, tmp_path):
    """Import at TP=2, export at PP=2 (one safetensors file per stage + index): still bit-exact."""
    source = tiny_models["llama31"]
    ckpt, back = tmp_path / "ckpt", tmp_path / "back"
    minitron = REPO / "minitron" / "cli.py"
    run_torchrun(2, minitron, "convert", f"model.path={source}", f"output={ckpt}", "parallel.tp=2")
    run_torchrun(2, minitron, "convert", f"model.path={ckpt}", f"output={back}", "parallel.pp=2")
    assert (back / "model.safetensors.index.json").is_file()
    assert len(list(back.glob("model-*-of-00002.safetensors"))) == 2
    assert_bit_exact(source, back)
    from transformers import AutoModelForCausalLM

    tokens = torch.arange(30).unsqueeze(0)
    a = AutoModelForCausalLM.from_pretrained(source)(tokens).logits
    b = AutoModelForCausalLM.from_pretrained(back)(tokens).logits
    assert torch.equal(a, b)


# ---- bad input: one line naming the cause, exit 2, no output directory ----------------------------


def assert_refused(result, message, *must_not_exist):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], lines[-3:]
    assert sum(line.startswith("error: ") for line in lines) == 1
    assert "Traceback" not in result.stderr
    for path in must_not_exist:
        assert not path.exists(), path
        assert not path.with_name(path.name + ".partial").exists()


def test_missing_and_malformed_config(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    assert_refused(run_cli("convert", f"model.path={tmp_path / 'empty'}", f"output={out}"), "no config.json", out)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "llama", ')
    assert_refused(run_cli("convert", f"model.path={bad}", f"output={out}"), "malformed JSON", out)


def test_unsupported_architecture(tiny_models, tmp_path):
    model = tmp_path / "gpt2"
    model.mkdir()
    config = json.loads((tiny_models["llama31"] / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    assert_refused(run_cli("convert", f"model.path={model}", f"output={out}"), "unsupported architecture", out)


def test_tp_must_divide_query_groups(tiny_models, tmp_path):
    out = tmp_path / "out"
    result = run_torchrun_refused(tiny_models["odd"], out)
    assert "parallel.tp=2 does not divide the model's num_query_groups=3" in result.stderr
    assert not out.exists() and not out.with_name("out.partial").exists()


def run_torchrun_refused(model_dir, out):
    import subprocess
    import sys

    from conftest import free_port

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), str(REPO / "minitron" / "cli.py"), "convert", f"model.path={model_dir}",
               f"output={out}", "parallel.tp=2"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    return result


def test_tp_without_enough_processes(tiny_models, tmp_path):
    out = tmp_path / "out"
    result = run_cli("convert", f"model.path={tiny_models['llama31']}", f"output={out}", "parallel.tp=2")
    assert_refused(result, "needs a multiple of 2 processes", out)


def test_truncated_safetensors(tmp_path):
    model = make_tiny_model("llama31", tmp_path / "model")
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert_refused(run_cli("convert", f"model.path={model}", f"output={out}"), "truncated safetensors", out)
    (length,) = struct.unpack("<Q", data[:8])
    weights.write_bytes(data[: 8 + length // 2])  # header cut
    assert_refused(run_cli("convert", f"model.path={model}", f"output={out}"), "truncated", out)


def test_output_holding_another_model_is_kept(tiny_models, tmp_path):
    out = tmp_path / "out"
    assert run_cli("convert", f"model.path={tiny_models['qwen2']}", f"output={out}").returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run_cli("convert", f"model.path={tiny_models['llama31']}", f"output={out}")
    assert_refused(result, "already exists and holds a different model")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not out.with_name("out.partial").exists()


def test_corrupt_megatron_checkpoint(tiny_models, tmp_path):
    ckpt = tmp_path / "ckpt"
    assert run_cli("convert", f"model.path={tiny_models['qwen2']}", f"output={ckpt}").returncode == 0
    for shard in (ckpt / "dist").glob("*.distcp"):
        shard.write_bytes(shard.read_bytes()[:100])
    out = tmp_path / "out"
    assert_refused(run_cli("convert", f"model.path={ckpt}", f"output={out}"), "corrupt or incomplete", out)
