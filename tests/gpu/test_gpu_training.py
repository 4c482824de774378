"""On a CUDA GPU (NCCL, bf16): training and distillation steps in bf16 against fp32, exact resume (also with the
distributed optimizer over 2 GPUs), export of a GPU-trained model equal to its checkpoint, Transformer Engine's layer
spec against transformers, TP=2 and PP=2 under NCCL. Every test skips with the reason where the hardware or
package is missing; all go through the same commands as users (`minitron train|distill|convert|eval`). Forward parity
with transformers in fp32 and bf16 is tests/models/test_gpu.py."""

import importlib.util

import pytest
import torch

from conftest import REPO, last_json, prepare_rotating_corpus, run_cli, run_torchrun
from training.train_helpers import train_model, train_records  # noqa: F401 (fixture)

CUDA = torch.cuda.is_available()
GPUS = torch.cuda.device_count() if CUDA else 0
pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]  # fmt: skip
two_gpus = pytest.mark.skipif(GPUS < 2, reason=f"needs 2 GPUs for NCCL across processes; this machine has {GPUS}")
with_te = pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is None,
                             reason="Transformer Engine is not installed (the NGC image has it)")  # fmt: skip

# bf16 keeps 8 significant bits: each rounding is off by at most 2^-8 = 0.39% of the value. The tiny model's loss
# (about ln 256 = 5.5 at the start) comes from bf16 logits through a handful of roundings per value (2 layers; softmax
# and the loss reduced in fp32; fp32 main weights in the optimizer), so bf16 and fp32 agree to about 1%; 3% leaves
# room for three steps of updates from those slightly different gradients, and still catches a broken bf16 path
# (a wrong scale, a dropped cast, an fp16 overflow are off by far more).
BF16_RTOL = 0.03
# KL between two models is a difference of log-probabilities: its absolute error is about 2^-8 times a log-prob's
# magnitude (a few units), hence an absolute term besides the relative one.
BF16_KL_ATOL = 0.02
# Bit-exact replays need cuBLAS's deterministic workspace (its default picks split-K reductions per run).
DETERMINISTIC = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


@pytest.fixture(scope="module")
def corpus(train_model, tmp_path_factory):  # noqa: F811
    words = "the model learns to count one two three four five six seven eight nine ten"
    return prepare_rotating_corpus(tmp_path_factory.mktemp("gpu_data"), train_model, words)


def train_args(model, prefix, run, steps: int, *extra) -> list[str]:
    return [f"model.path={model}", f"data.path={prefix}", f"output={run}", f"train.steps={steps}",
            "train.global_batch_size=4", "train.micro_batch_size=2", "train.seq_length=32", "data.split='90,10,0'",
            "train.eval_interval=0", "train.warmup_steps=1", "train.lr=1e-3", "checkpoint.interval=2",
            "logging.progress=false", *extra]  # fmt: skip


def losses(run) -> list[float]:
    return [record["loss"] for record in train_records(run)]


def cli(*args):
    result = run_cli(*args, timeout=900, env=DETERMINISTIC)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_bf16_training_steps_match_fp32(train_model, corpus, tmp_path):  # noqa: F811
    fp32 = cli("train", *train_args(train_model, corpus, tmp_path / "fp32", 3, "model.dtype=float32"))
    bf16 = cli("train", *train_args(train_model, corpus, tmp_path / "bf16", 3, "model.dtype=bfloat16"))
    assert "bfloat16" in bf16.stderr and "float32" in fp32.stderr
    reference, measured = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert len(reference) == len(measured) == 3
    assert measured == pytest.approx(reference, rel=BF16_RTOL)
    assert measured != reference  # bf16 really ran: not bit-equal to fp32


def test_bf16_resume_is_exact(train_model, corpus, tmp_path):  # noqa: F811
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cli("train", *train_args(train_model, corpus, straight, 4, "model.dtype=bfloat16"))
    cli("train", *train_args(train_model, corpus, resumed, 2, "model.dtype=bfloat16"))
    result = last_json(cli("train", *train_args(train_model, corpus, resumed, 4, "model.dtype=bfloat16")).stdout)
    assert result["resumed_from"] == "iter_0000002" and result["steps_this_run"] == 2
    assert losses(resumed) == losses(straight)  # bit-exact: weights, Adam state, RNG and data position restored


@two_gpus
def test_distributed_optimizer_resume_is_exact_over_two_gpus(train_model, corpus, tmp_path, monkeypatch):  # noqa: F811
    extra = ("model.dtype=bfloat16", "train.distributed_optimizer=true")  # DP=2: optimizer state sharded
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cli_py = REPO / "minitron" / "cli.py"
    for key, value in DETERMINISTIC.items():
        monkeypatch.setenv(key, value)
    run_torchrun(2, cli_py, "train", *train_args(train_model, corpus, straight, 4, *extra))
    run_torchrun(2, cli_py, "train", *train_args(train_model, corpus, resumed, 2, *extra))
    result = last_json(run_torchrun(2, cli_py, "train", *train_args(train_model, corpus, resumed, 4, *extra)).stdout)
    assert result["resumed_from"] == "iter_0000002"
    assert losses(resumed) == losses(straight)


def test_bf16_distillation_steps_match_fp32(train_model, corpus, tmp_path):  # noqa: F811
    from tiny_models import make_tiny_model, save_char_tokenizer

    teacher = make_tiny_model("smollm2", tmp_path / "teacher", num_layers=2, seed=7)
    save_char_tokenizer(teacher)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        args = train_args(train_model, corpus, tmp_path / dtype, 3, f"student.dtype={dtype}")
        args = [a.replace("model.path=", "student.path=") for a in args]
        cli("distill", f"teacher.path={teacher}", *args)
        runs[dtype] = losses(tmp_path / dtype)
    assert len(runs["float32"]) == 3
    for fp32, bf16 in zip(runs["float32"], runs["bfloat16"]):
        assert abs(bf16 - fp32) <= BF16_RTOL * abs(fp32) + BF16_KL_ATOL, runs


def test_export_of_a_gpu_trained_model_equals_its_checkpoint(train_model, corpus, tmp_path):  # noqa: F811
    run, hf = tmp_path / "run", tmp_path / "hf"
    cli("train", *train_args(train_model, corpus, run, 2, "model.dtype=bfloat16"))
    cli("convert", f"model.path={run / 'final'}", f"output={hf}")
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("one two three four five six seven eight nine ten " * 20)
    args = [f"data.path={heldout}", "eval.seq_length=32", "eval.max_windows=4", "model.dtype=float32"]
    from_checkpoint = last_json(cli("eval", f"model.path={run / 'final'}", *args).stdout)
    from_export = last_json(cli("eval", f"model.path={hf}", *args, "eval.reference=true").stdout)
    assert from_export["loss"] == from_checkpoint["loss"]  # the same weights, bit for bit
    assert from_export["abs_diff"] < 1e-4  # and transformers reads them the same way


@with_te
def test_transformer_engine_spec_matches_transformers(train_model, corpus, tmp_path):  # noqa: F811
    """With TE installed and a GPU, minitron builds TE's layer spec: forward equals transformers, backward trains."""
    from minitron.models.megatron_gpt import have_transformer_engine

    assert have_transformer_engine()
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("one two three four five six seven eight nine ten " * 20)
    result = last_json(cli("eval", f"model.path={train_model}", f"data.path={heldout}", "eval.seq_length=32",
                           "eval.max_windows=4", "model.dtype=float32", "eval.reference=true").stdout)  # fmt: skip
    assert result["abs_diff"] < 1e-4  # TF32 is off for fp32 in both
    run = tmp_path / "run"
    cli("train", *train_args(train_model, corpus, run, 3, "model.dtype=bfloat16"))
    assert all(torch.isfinite(torch.tensor(losses(run))))


@two_gpus
@pytest.mark.parametrize("layout", ["parallel.tp=2", "parallel.pp=2"])
def test_tp2_and_pp2_under_nccl_equal_one_gpu(train_model, tmp_path, layout, monkeypatch):  # noqa: F811
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("one two three four five six seven eight nine ten " * 20)
    args = [f"model.path={train_model}", f"data.path={heldout}", "eval.seq_length=32", "eval.max_windows=4",
            "model.dtype=float32"]  # fmt: skip
    one = last_json(cli("eval", *args).stdout)
    for key, value in DETERMINISTIC.items():
        monkeypatch.setenv(key, value)
    two = last_json(run_torchrun(2, REPO / "minitron" / "cli.py", "eval", *args, layout).stdout)
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-5) and two["tokens"] == one["tokens"]
