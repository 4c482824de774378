"""Importance estimation equals a brute-force computation with transformers, at any parallel layout.

The reference hooks the Hugging Face model directly: ``input_layernorm`` and
``post_attention_layernorm`` outputs (embedding channels), the ``down_proj`` input (MLP neurons), the
``o_proj`` input viewed as ``[heads, head_dim]`` (heads), ``output_hidden_states`` (block influence),
and runs the model with layers removed from ``model.layers`` (loss metrics).
"""

import functools
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, TESTS, clean_env, expected_versions, last_json, run_cli, run_torchrun
from minitron.errors import MinitronError

sys.path.insert(0, str(TESTS / "workers"))
from importance import MICRO_BATCH_SIZE, WINDOW_SIZES, calibration_windows  # noqa: E402

TOLERANCE = 1e-5
ALL_METRICS = ("block_influence", "layer_loss", "window_loss")
SEQ = {"mean": lambda a: a.mean(dim=1), "l2": lambda a: a.pow(2).sum(dim=1).sqrt(), "max": lambda a: a.amax(dim=1)}
BATCH = {"l2": lambda p: p.pow(2).sum(dim=0).sqrt(), "mean": lambda p: p.mean(dim=0), "max": lambda p: p.amax(dim=0)}


# ---- the reference: transformers, by hand ------------------------------------------------------------


def hf_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@functools.lru_cache(maxsize=None)
def hf_activations(model_dir) -> dict:
    """Per layer ``[batch, seq, features]`` activations of the reference windows, and the layers' in/out."""
    model = hf_model(model_dir)
    captured, handles = {}, []

    def keep(name, index, pre=False):
        def hook(module, args, output=None):
            captured[(name, index)] = (args[0] if pre else output).detach().double()

        return hook

    for index, layer in enumerate(model.model.layers):
        handles += [
            layer.input_layernorm.register_forward_hook(keep("attn_norm", index)),
            layer.post_attention_layernorm.register_forward_hook(keep("mlp_norm", index)),
            layer.mlp.down_proj.register_forward_pre_hook(keep("ffn", index, pre=True)),
            layer.self_attn.o_proj.register_forward_pre_hook(keep("proj", index, pre=True)),
            layer.register_forward_hook(keep("output", index)),
        ]
    with torch.no_grad():
        hidden_states = model(calibration_windows(), output_hidden_states=True).hidden_states
    for handle in handles:
        handle.remove()
    for index in range(len(model.model.layers)):
        # hidden_states[i] is layer i's input; the last entry is after the final norm, so take the hook's
        captured[("input", index)] = hidden_states[index].double()
        if index + 1 < len(model.model.layers):
            assert torch.equal(hidden_states[index + 1].double(), captured[("output", index)])
    return captured


def reference_scores(model_dir, heads: int, groups: int, batch="l2", seq="mean") -> dict:
    acts = hf_activations(model_dir)
    layers = range(len([key for key in acts if key[0] == "ffn"]))

    def score(activation):  # [b, s, f] -> [f]
        return BATCH[batch](SEQ[seq](activation.abs()))

    channels = torch.stack([score(acts[("proj", i)]) for i in layers])
    head = channels.reshape(len(layers), heads, -1).norm(dim=-1)
    return {
        "hidden": sum(score(acts[(norm, i)]) for i in layers for norm in ("attn_norm", "mlp_norm")),
        "ffn": torch.stack([score(acts[("ffn", i)]) for i in layers]),
        "heads": head,
        "groups": head.reshape(len(layers), groups, -1).norm(dim=-1),
        "block_influence": torch.stack([
            (1 - torch.nn.functional.cosine_similarity(acts[("input", i)], acts[("output", i)], dim=-1)).mean()
            for i in layers
        ]),
    }  # fmt: skip


def hf_loss(model, windows, drop=()) -> float:
    """Mean next-token cross-entropy with the layers in ``drop`` removed from the model."""
    layers = model.model.layers
    model.model.layers = torch.nn.ModuleList([layer for i, layer in enumerate(layers) if i not in drop])
    try:
        with torch.no_grad():
            logits = model(windows).logits[:, :-1]
    finally:
        model.model.layers = layers
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)))


def assert_close(ours: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    assert ours.shape == reference.shape, what
    diff = float((ours.double() - reference.double()).abs().max())
    assert diff < TOLERANCE, f"{what}: max abs diff {diff:.3g}"


# ---- minitron ----------------------------------------------------------------------------------------


def megatron_model(model_dir):
    from minitron.models.checkpoint import load_model, open_model

    source = open_model(model_dir)
    return load_model(source, 1, 1, torch.float32).eval(), source.arch


def estimate(model_dir, **kwargs):
    from minitron.prune.importance import estimate_importance

    model, arch = megatron_model(model_dir)
    kwargs = {"depth_metrics": ("block_influence",), "progress": False, **kwargs}
    return estimate_importance(model, arch, calibration_windows(), MICRO_BATCH_SIZE, **kwargs)


@pytest.mark.parametrize("family", ["smollm2", "odd"])
def test_width_scores_and_block_influence_match_transformers(family, tiny_models, megatron_world):
    scores = estimate(tiny_models[family])
    arch = scores.meta["arch"]
    reference = reference_scores(tiny_models[family], arch["num_attention_heads"], arch["num_query_groups"])
    for name, expected in reference.items():
        assert_close(getattr(scores, name), expected, name)
    assert scores.meta["aggregation"] == {"batch": "l2", "seq": "mean"}
    assert scores.meta["num_samples"] == 5 and scores.meta["seq_length"] == 24
    assert scores.layer_loss is None and scores.window_loss == {}
    assert float(scores.ffn.std()) > 0 and float(scores.heads.std()) > 0  # not trivially equal


@pytest.mark.parametrize("batch", ["l2", "mean", "max"])
@pytest.mark.parametrize("seq", ["mean", "l2", "max"])
def test_every_aggregation_matches_transformers(batch, seq, tiny_models, megatron_world):
    scores = estimate(tiny_models["llama31"], aggregation=(batch, seq))
    reference = reference_scores(tiny_models["llama31"], heads=4, groups=2, batch=batch, seq=seq)
    for name in ("hidden", "ffn", "heads", "groups"):
        assert_close(getattr(scores, name), reference[name], f"{name} ({batch}, {seq})")
    assert scores.meta["aggregation"] == {"batch": batch, "seq": seq}


def test_loss_metrics_match_transformers_with_layers_removed(tiny_models, megatron_world):
    scores = estimate(tiny_models["qwen2"], depth_metrics=ALL_METRICS, window_sizes=WINDOW_SIZES)
    model, windows = hf_model(tiny_models["qwen2"]), calibration_windows()
    base = hf_loss(model, windows)
    assert abs(scores.base_loss - base) < TOLERANCE
    expected = torch.tensor([hf_loss(model, windows, drop=(i,)) - base for i in range(4)])
    assert_close(scores.layer_loss, expected, "layer_loss")
    assert sorted(scores.window_loss) == [1, 2]
    assert_close(scores.window_loss[1], expected + base, "window_loss[1]")
    pairs = torch.tensor([hf_loss(model, windows, drop=(i, i + 1)) for i in range(3)])
    assert_close(scores.window_loss[2], pairs, "window_loss[2]")
    assert scores.meta["forward_passes"] == 1 + 4 + 3  # the single-layer runs serve both metrics
    assert float(expected.abs().max()) > 1e-3  # dropping a layer changes the loss


def test_loss_metrics_on_a_subset_of_the_windows(tiny_models, megatron_world):
    full = estimate(tiny_models["smollm2"])
    subset = estimate(tiny_models["smollm2"], depth_metrics=("block_influence", "layer_loss"), loss_num_samples=3)
    model, windows = hf_model(tiny_models["smollm2"]), calibration_windows()
    assert abs(subset.base_loss - hf_loss(model, windows[:3])) < TOLERANCE
    assert abs(subset.meta["calibration_loss"] - hf_loss(model, windows)) < TOLERANCE
    first_dropped = hf_loss(model, windows[:3], drop=(0,)) - subset.base_loss
    assert_close(subset.layer_loss[0], torch.tensor(first_dropped), "layer 0")
    for name in ("hidden", "ffn", "heads", "block_influence"):  # width scores still use every window
        assert_close(getattr(subset, name), getattr(full, name), name)
    assert subset.meta["loss_num_samples"] == 3 and subset.meta["num_samples"] == 5


def test_dropping_layers_is_undone(tiny_models, megatron_world):
    from minitron.eval.forward import full_logits
    from minitron.prune.depth import dropped_layers

    model, _ = megatron_model(tiny_models["llama31"])
    tokens = calibration_windows()[:2]
    before = full_logits(model, tokens)
    with dropped_layers(model, [1, 2]):
        dropped = full_logits(model, tokens)
    after = full_logits(model, tokens)
    assert torch.equal(before, after)
    assert float((dropped - before).abs().max()) > 1e-3
    assert all("forward" not in vars(layer) for layer in model.decoder.layers)


def test_bad_requests_are_refused(tiny_models, megatron_world):
    from megatron.core.transformer.identity_op import IdentityOp

    with pytest.raises(MinitronError, match="importance.window_sizes: 4 is not between 1 and num_layers - 1 = 3"):
        estimate(tiny_models["llama31"], depth_metrics=("window_loss",), window_sizes=(4,))
    with pytest.raises(MinitronError, match="unknown"):
        estimate(tiny_models["llama31"], depth_metrics=("perplexity",))
    # Transformer Engine's spec fuses the norms into the next linear layer: refused, no hook left behind
    from minitron.prune.importance import estimate_importance

    model, arch = megatron_model(tiny_models["llama31"])
    model.decoder.layers[2].input_layernorm = IdentityOp()
    with pytest.raises(NotImplementedError, match="local spec"):
        estimate_importance(model, arch, calibration_windows(), 2, progress=False)
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())


def test_scores_save_load_and_plots(tiny_models, megatron_world, tmp_path):
    from minitron.prune import plots
    from minitron.prune.scores import ImportanceScores

    scores = estimate(tiny_models["smollm2"], depth_metrics=ALL_METRICS, window_sizes=(2,))
    scores.save(tmp_path)
    loaded = ImportanceScores.load(tmp_path)
    assert torch.equal(loaded.ffn, scores.ffn) and torch.equal(loaded.window_loss[2], scores.window_loss[2])
    assert loaded.meta["arch"]["num_layers"] == 4 and loaded.base_loss == scores.base_loss
    paths = plots.save_plots(loaded, tmp_path / "plots")
    assert [p.name for p in paths] == [plots.LAYERS_PNG, plots.UNITS_PNG]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in paths)


def test_scores_written_under_the_old_block_influence_name_load(tmp_path):
    """importance.safetensors/.json written when block influence was called ``layer_bi``/``bi`` still load."""
    from safetensors.torch import save_file

    from minitron.prune.scores import META_FILE, SCORES_FILE, ImportanceScores

    old = {"hidden": torch.rand(8), "ffn": torch.rand(2, 16), "heads": torch.rand(2, 4), "groups": torch.rand(2, 2),
           "layer_bi": torch.tensor([0.25, 0.5])}  # fmt: skip
    save_file(old, str(tmp_path / SCORES_FILE))
    (tmp_path / META_FILE).write_text(json.dumps({"base_loss": 2.5, "depth_metrics": ["bi", "layer_loss"]}))
    loaded = ImportanceScores.load(tmp_path)
    assert torch.equal(loaded.block_influence, old["layer_bi"]) and torch.equal(loaded.ffn, old["ffn"])
    assert loaded.meta["depth_metrics"] == ["block_influence", "layer_loss"] and loaded.base_loss == 2.5


@pytest.mark.slow
def test_parallel_layouts_equal_tp1(tiny_models, megatron_world, tmp_path):
    from minitron.prune.scores import ImportanceScores

    single = estimate(tiny_models["smollm2"], depth_metrics=ALL_METRICS, window_sizes=WINDOW_SIZES)
    layouts = {"2x1": "TP=2", "1x2": "PP=2", "1x1": "DP=2"}
    run_torchrun(2, TESTS / "workers" / "importance.py", "--layouts", ",".join(layouts), "--out", tmp_path,
                 tiny_models["smollm2"])  # fmt: skip
    for layout, name in layouts.items():
        parallel = ImportanceScores.load(tmp_path / layout)
        agreement = json.loads((tmp_path / layout / "ranks_agree.json").read_text())
        assert agreement["max_abs_diff"] < 1e-6, (name, agreement)  # every rank holds the same scores
        tp, pp = map(int, layout.split("x"))
        assert parallel.meta["parallel"] == {"tp": tp, "pp": pp, "dp": 2 // (tp * pp)}
        for field in ("hidden", "ffn", "heads", "groups", "block_influence", "layer_loss"):
            assert_close(getattr(parallel, field), getattr(single, field), f"{name} {field}")
        for k in WINDOW_SIZES:
            assert_close(parallel.window_loss[k], single.window_loss[k], f"{name} window_loss[{k}]")
        assert abs(parallel.base_loss - single.base_loss) < TOLERANCE


def test_cli_writes_scores_and_plots_and_refuses_short_data(tiny_models, text_file, tmp_path):
    out = tmp_path / "scores"
    args = [f"model.path={tiny_models['llama31']}", f"data.path={text_file}", "calib.seq_length=32",
            "calib.micro_batch_size=2", "importance.window_sizes=[2]"]  # fmt: skip
    result = run_cli("importance", *args, "calib.num_samples=4", f"output={out}")
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["windows"] == 4 and summary["seq_length"] == 32
    for path in [summary["scores"], summary["meta"], *summary["plots"]]:
        assert Path(path).is_file() and Path(path).parent == out
    meta = json.loads((out / "importance.json").read_text())
    assert meta["data_path"] == str(text_file) and meta["window_sizes"] == [2] and meta["num_samples"] == 4
    assert meta["versions"] == expected_versions() and (out / "config.yaml").is_file()

    short = run_cli("importance", *args, "calib.num_samples=100000", f"output={tmp_path / 'short'}")
    assert short.returncode == 2
    assert "calibration data shorter than asked" in short.stderr and "calib.num_samples=100000" in short.stderr
    assert not (tmp_path / "short").exists()


# SIGKILLs the importance run once the scores are written, before its config and plots: a run killed mid-way
KILLED_WHILE_WRITING = """
import os, signal, sys
from minitron.prune import plots
plots.save_plots = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
import recipes.importance
sys.argv = ["minitron-importance", *sys.argv[1:]]
recipes.importance.main()
"""


def test_killed_run_leaves_no_output_and_a_rerun_needs_no_overwrite(tiny_models, text_file, tmp_path):
    out = tmp_path / "scores"
    args = [f"model.path={tiny_models['llama31']}", f"data.path={text_file}", "calib.seq_length=32",
            "calib.num_samples=4", "calib.micro_batch_size=2", "importance.window_sizes=[2]",
            f"output={out}"]  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, *args], capture_output=True, text=True,
                            check=False, cwd=REPO, env=clean_env({"PYTHONPATH": str(REPO)}), timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not out.exists()  # never half-written: the scores went to the staging directory
    assert (tmp_path / "scores.partial" / "importance.safetensors").is_file()

    rerun = run_cli("importance", *args)  # no overwrite=true needed
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["importance.safetensors", "importance.json", "config.yaml", "importance_layers.png", "importance_units.png"]
    )
    assert not (tmp_path / "scores.partial").exists()
    assert last_json(rerun.stdout)["scores"] == str(out / "importance.safetensors")
