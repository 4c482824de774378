"""minitron sft and minitron dpo on a tiny model: invariance to micro-batching, packing, an HF oracle for
the log-probs, step 0 of DPO (ln 2, rewards 0), rounds, resume, and TP/PP/DP (slow)."""

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import last_json, run_cli, run_torchrun
from tests.align.align_helpers import prepare, preference_rows, sft_rows
from tests.tiny_models import make_tiny_model, save_char_tokenizer

# adam_eps 1e-3: Adam's update of a weight whose gradient is ~0 is lr * g / (|g| + eps), i.e. lr * sign(g) at
# eps 1e-8, so float-rounding differences between two equal runs (other GEMM shapes) could move it by lr;
# with eps 1e-3 the update is linear there and the runs' weights differ by rounding only
QUIET = ["logging.progress=false", "logging.tensorboard=false", "train.warmup_steps=0", "train.adam_eps=1e-3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    model = make_tiny_model("smollm2", root / "model", num_layers=2)
    save_char_tokenizer(model)
    return {"root": root, "model": model, "sft": prepare(root, model, "sft", sft_rows(12), seq_length=256),
            "pairs": prepare(root, model, "preference", preference_rows(12, rewards=True), seq_length=96)}  # fmt: skip


def records(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


def final_parameters(run_dir: Path) -> dict:
    from minitron.models.checkpoint import load_model, open_model

    model = load_model(open_model(run_dir / "final"), 1, 1, torch.float32)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def run(command: str, setup, out: Path, *args):
    data = setup["sft"] if command == "sft" else setup["pairs"]
    seq = 256 if command == "sft" else 96
    result = run_cli(command, f"model.path={setup['model']}", f"data.path={data}", f"output={out}",
                     f"train.seq_length={seq}", "train.lr=1e-3", *QUIET, *args)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return last_json(result.stdout)


@pytest.mark.parametrize("command", ["sft", "dpo"])
def test_micro_batching_does_not_change_the_run(command, setup, tmp_path, megatron_world):
    run(command, setup, tmp_path / "mb1", "train.steps=2", "train.global_batch_size=4", "train.micro_batch_size=1")
    run(command, setup, tmp_path / "mb4", "train.steps=2", "train.global_batch_size=4", "train.micro_batch_size=4")
    one, four = records(tmp_path / "mb1"), records(tmp_path / "mb4")
    assert [r["loss"] for r in one] == pytest.approx([r["loss"] for r in four], abs=1e-5)
    assert [r["tokens"] for r in one] == [r["tokens"] for r in four]
    a, b = final_parameters(tmp_path / "mb1"), final_parameters(tmp_path / "mb4")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_sft_loss_equals_hf_answer_token_cross_entropy(setup, tmp_path):
    """Step 1's loss = summed CE over the batch's answer tokens / their number, by transformers."""
    from transformers import AutoModelForCausalLM

    from minitron.align.data import SFTDataset

    run("sft", setup, tmp_path / "run", "train.steps=1", "train.global_batch_size=4", "train.micro_batch_size=2")
    hf = AutoModelForCausalLM.from_pretrained(setup["model"], dtype=torch.float32)
    dataset = SFTDataset(str(setup["sft"]), 256)
    total = count = 0.0
    for i in range(4):
        sample = dataset[i]
        logits = hf(sample["tokens"][None]).logits[0]
        ce = torch.nn.functional.cross_entropy(logits, sample["labels"], reduction="none")
        total += float((ce * sample["loss_mask"]).sum())
        count += float(sample["loss_mask"].sum())
    step = records(tmp_path / "run")[0]
    assert step["tokens"] == count
    assert step["loss"] == pytest.approx(total / count, abs=1e-5)


def test_packed_equals_padded(setup, megatron_world):
    """The packed layout gives every example the loss and gradient it has alone (block-diagonal mask)."""
    from minitron.align.data import SFTDataset
    from minitron.models.checkpoint import load_model, open_model
    from minitron.training.step import forward_step

    model = load_model(open_model(setup["model"]), 1, 1, torch.float32)
    padded, packed = SFTDataset(str(setup["sft"]), 256), SFTDataset(str(setup["sft"]), 256, pack=True)
    assert len(packed) < len(padded)
    examples = sum(len(b) for b in packed.bins[:2])

    def loss_and_grads(dataset, n):
        model.zero_grad()
        total = 0.0
        for i in range(n):
            batch = {k: v[None] for k, v in dataset[i].items()}
            output, loss_func = forward_step(iter([batch]), model)
            loss_sum, _, _ = loss_func(output)
            loss_sum.backward()
            total += float(loss_sum)
        return total, {k: p.grad.clone() for k, p in model.named_parameters()}

    loss_a, grads_a = loss_and_grads(padded, examples)
    loss_b, grads_b = loss_and_grads(packed, 2)
    assert loss_b == pytest.approx(loss_a, rel=1e-6)
    assert max(((grads_a[k] - grads_b[k]).abs().max() / grads_a[k].abs().max().clamp(min=1e-12)).item()
               for k in grads_a) < 1e-4  # fmt: skip


def test_dpo_step0_and_hf_logps(setup, tmp_path):
    """Step 1 (policy == reference): loss ln 2, rewards 0; logps/chosen and /rejected equal transformers'."""
    from transformers import AutoModelForCausalLM

    from minitron.align.data import PreferenceDataset

    run("dpo", setup, tmp_path / "run", "train.steps=1", "train.global_batch_size=4", "train.micro_batch_size=2")
    step = records(tmp_path / "run")[0]
    assert step["loss"] == pytest.approx(math.log(2), abs=1e-7)
    assert step["rewards/chosen"] == step["rewards/rejected"] == step["rewards/accuracies"] == 0.0
    hf = AutoModelForCausalLM.from_pretrained(setup["model"], dtype=torch.float32)
    dataset = PreferenceDataset(str(setup["pairs"]), 96)
    sums = [0.0, 0.0]
    for i in range(4):
        sample = dataset[i]
        logps = torch.log_softmax(hf(sample["tokens"]).logits, -1).gather(-1, sample["labels"][..., None])[..., 0]
        for side in (0, 1):
            sums[side] += float((logps[side] * sample["loss_mask"][side]).sum())
    assert step["logps/chosen"] == pytest.approx(sums[0] / 4, abs=1e-4)
    assert step["logps/rejected"] == pytest.approx(sums[1] / 4, abs=1e-4)


def test_second_round_is_referenced_to_the_first(setup, tmp_path):
    result = run("dpo", setup, tmp_path / "run", "train.steps=2", "train.global_batch_size=4", "align.rounds=2",
                 "align.loss=rpo_bwd_kl")  # fmt: skip
    assert result["final"] == str(tmp_path / "run" / "round-2" / "final")
    first, second = records(tmp_path / "run" / "round-1"), records(tmp_path / "run" / "round-2")
    # each round starts with policy == its reference: rewards 0 at its first step
    assert first[0]["rewards/margins"] == second[0]["rewards/margins"] == 0.0
    # and round 2's policy starts from round 1's final weights: its logps equal round 1's model on that batch
    assert second[0]["logps/chosen"] != first[0]["logps/chosen"]


@pytest.mark.slow
@pytest.mark.parametrize("layout", [["parallel.tp=2"], ["parallel.pp=2"], []], ids=["tp2", "pp2", "dp2"])
def test_layouts_equal_tp1(layout, setup, tmp_path, megatron_world):
    """TP=2, PP=2 and DP=2 (2 processes) equal one process over 3 steps, for SFT and DPO (loss and weights)."""
    for command in ("sft", "dpo"):
        data, seq = (setup["sft"], 256) if command == "sft" else (setup["pairs"], 96)
        # lr 1e-4: Adam turns last-bit gradient differences into weight differences of about lr x 1e-2
        args = [f"model.path={setup['model']}", f"data.path={data}", f"train.seq_length={seq}", "train.lr=1e-4",
                "train.steps=3", "train.global_batch_size=4", *QUIET]  # fmt: skip
        run(command, setup, tmp_path / f"{command}-1", "train.steps=3", "train.global_batch_size=4", "train.lr=1e-4")
        run_torchrun(2, "-m", "minitron.cli", command, *args, f"output={tmp_path / f'{command}-2'}", *layout)
        one, two = records(tmp_path / f"{command}-1"), records(tmp_path / f"{command}-2")
        assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], abs=1e-5)
        a, b = final_parameters(tmp_path / f"{command}-1"), final_parameters(tmp_path / f"{command}-2")
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
