"""Scale settings (train.scale): each one that runs on CPU trains to the same losses as without it; what the device,
the build or the layout cannot do is refused (the command-line cases are rows of tests/test_bad_input.py)."""

import functools

import pytest

import conftest
from conftest import TESTS
from train_helpers import losses, train_model  # noqa: F401 (fixture)
from workers.train import run_job

from minitron.config.scale import ScaleSettings
from minitron.errors import MinitronError
from minitron.parallel.scale import DeviceCaps, ScaleLayout, resolve_scale

WORKER = TESTS / "workers" / "train.py"
TOLERANCE = 1e-5
STEPS = 3
CPU = DeviceCaps(cuda=False, transformer_engine=False, apex_wgrad=False)
GPU_TE = DeviceCaps(cuda=True, transformer_engine=True, apex_wgrad=False)

torchrun_jobs = functools.partial(conftest.torchrun_jobs, WORKER)


def test_auto_is_off_on_cpu_and_on_where_a_gpu_supports_it():
    auto = ScaleSettings()
    assert resolve_scale(auto, tp=2, pp=1, dp=2, distributed_optimizer=True, caps=CPU) == ScaleLayout()
    on_gpu = resolve_scale(auto, tp=2, pp=1, dp=2, distributed_optimizer=True, caps=GPU_TE)
    assert on_gpu == ScaleLayout(sequence_parallel=True, overlap_grad_reduce=True, overlap_param_gather=True,
                                 bias_activation_fusion=True, rope_fusion=True, cross_entropy_fusion=True,
                                 gradient_accumulation_fusion=True)  # fmt: skip
    # what the layout rules out stays off: no TP -> no SP, no DP -> no overlap, no distributed optimizer -> no gather
    alone = resolve_scale(auto, tp=1, pp=1, dp=1, distributed_optimizer=False, caps=GPU_TE)
    assert not (alone.sequence_parallel or alone.overlap_grad_reduce or alone.overlap_param_gather)
    no_te = resolve_scale(auto, tp=1, pp=1, dp=1, distributed_optimizer=False, caps=DeviceCaps(True, False, False))
    assert not no_te.rope_fusion and not no_te.gradient_accumulation_fusion and no_te.bias_activation_fusion


@pytest.mark.parametrize("setting,caps,message", [
    ({"sequence_parallel": True}, GPU_TE, "train.scale.sequence_parallel=true needs tensor parallelism (parallel.tp=1)"),
    ({"overlap_param_gather": True}, GPU_TE, "needs the distributed optimizer; add train.distributed_optimizer=true"),
    ({"rope_fusion": True}, DeviceCaps(True, False, False), "train.scale.rope_fusion=true needs Transformer Engine"),
    ({"gradient_accumulation_fusion": True}, DeviceCaps(True, False, False), "needs Transformer Engine or Apex"),
    ({"bias_activation_fusion": True}, CPU, "train.scale.bias_activation_fusion=true needs a GPU"),
    ({"recompute": "full", "recompute_method": "block"}, CPU, "recompute_method=block needs train.scale.recompute_num_layers"),
])  # fmt: skip
def test_refused_where_the_device_or_layout_cannot(setting, caps, message):
    with pytest.raises(MinitronError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_scale(ScaleSettings(**setting), tp=1, pp=1, dp=1, distributed_optimizer=False, caps=caps)


def test_full_recompute_defaults():
    uniform = resolve_scale(ScaleSettings(recompute="full"), 1, 2, 1, False, num_layers=8, caps=CPU)
    assert (uniform.recompute_method, uniform.recompute_num_layers) == ("uniform", 1)
    block = resolve_scale(ScaleSettings(recompute="full", recompute_method="block", recompute_num_layers=3),
                          1, 2, 1, False, num_layers=8, caps=CPU)  # fmt: skip
    assert block.transformer_config_fields()["recompute_granularity"] == "full"
    with pytest.raises(MinitronError, match="exceeds the 4 layers of a pipeline stage"):
        resolve_scale(ScaleSettings(recompute="full", recompute_num_layers=5), 1, 2, 1, False, num_layers=8, caps=CPU)


def _same_losses(got, reference, name):
    assert len(got) == STEPS == len(reference), (name, got)
    assert max(abs(a - b) for a, b in zip(got, reference)) < TOLERANCE, (name, got, reference)


@pytest.mark.slow
def test_recomputation_gives_the_same_losses(train_model, tmp_path, megatron_world):
    """In this process (TP=1): selective, full uniform and full block recomputation train exactly as without."""
    runs = {"plain": {}, "selective": {"recompute": "selective"}, "full": {"recompute": "full"},
            "full-block": {"recompute": "full", "recompute_method": "block", "recompute_num_layers": 1}}  # fmt: skip
    for name, scale in runs.items():
        run_job(str(train_model), str(tmp_path / name), steps=STEPS, scale=scale)
    reference = losses(tmp_path / "plain")
    assert reference[-1] < reference[0]
    for name in runs:
        _same_losses(losses(tmp_path / name), reference, name)


@pytest.mark.slow
def test_parallel_scale_settings_give_the_same_losses(train_model, tmp_path, megatron_world):
    """2 processes over gloo: sequence parallelism at TP=2 (with selective recomputation too), overlapped gradient
    reduction at DP=2, and overlapped reduce-scatter + parameter all-gather with the distributed optimizer at DP=2,
    each against the same layout without it; the final weights (read after the overlapped gather) agree too."""
    from test_parallel import final_parameters

    model = str(train_model)
    runs = {
        "tp2": {"tp": 2},
        "tp2-sp": {"tp": 2, "scale": {"sequence_parallel": True}},
        "tp2-sp-selective": {"tp": 2, "scale": {"sequence_parallel": True, "recompute": "selective"}},
        "dp2": {},
        "dp2-overlap": {"scale": {"overlap_grad_reduce": True}},
        "dp2-distopt": {"distributed_optimizer": True},
        "dp2-distopt-overlap": {"distributed_optimizer": True,
                                "scale": {"overlap_grad_reduce": True, "overlap_param_gather": True}},
    }  # fmt: skip
    jobs = [{"model": model, "run": str(tmp_path / name), "steps": STEPS, **job} for name, job in runs.items()]
    torchrun_jobs(tmp_path, "scale", jobs)
    for name, reference in (("tp2-sp", "tp2"), ("tp2-sp-selective", "tp2"), ("dp2-overlap", "dp2"),
                            ("dp2-distopt-overlap", "dp2-distopt")):  # fmt: skip
        _same_losses(losses(tmp_path / name), losses(tmp_path / reference), name)
        expected, got = final_parameters(tmp_path / reference), final_parameters(tmp_path / name)
        worst = max((got[key] - expected[key]).abs().max().item() for key in expected)
        assert got.keys() == expected.keys() and worst < TOLERANCE, (name, worst)
