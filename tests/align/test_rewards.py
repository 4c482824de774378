"""minitron rewards: held-out implicit rewards of an aligned policy against its reference, equal to the same
quantities computed with transformers; policy == reference gives zero rewards."""

import pytest
import torch

from conftest import last_json, run_cli
from tests.align.test_recipes import QUIET, setup  # noqa: F401  (module fixture)


def hf_sequence_logps(model_dir, dataset, count: int) -> torch.Tensor:
    """[count, 2] summed answer-token log-probs (chosen, rejected) of each pair, by transformers."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = torch.zeros(count, 2, dtype=torch.float64)
    with torch.no_grad():
        for i in range(count):
            sample = dataset[i]
            logps = torch.log_softmax(hf(sample["tokens"]).logits, -1).gather(-1, sample["labels"][..., None])[..., 0]
            out[i] = (logps * sample["loss_mask"]).sum(-1).double()
    return out


def test_rewards_equal_transformers_and_zero_against_itself(setup, tmp_path):  # noqa: F811
    from minitron.align.data import PreferenceDataset
    from minitron.models.checkpoint import open_model

    trained = run_cli("dpo", f"model.path={setup['model']}", f"data.path={setup['pairs']}", f"output={tmp_path / 'dpo'}",
                      "train.seq_length=96", "train.lr=3e-3", "train.steps=3", "train.global_batch_size=4", *QUIET)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    policy = tmp_path / "dpo" / "final"
    args = [f"data.path={setup['pairs']}", "rewards.seq_length=96", "rewards.micro_batch_size=4", "align.beta=0.1"]
    result = run_cli("rewards", f"model.path={policy}", f"reference.path={setup['model']}", *args,
                     f"output={tmp_path / 'rewards.json'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ours = last_json(result.stdout)
    dataset = PreferenceDataset(str(setup["pairs"]), 96)
    assert ours["pairs"] == len(dataset) == 12
    hf_dir = tmp_path / "policy_hf"
    assert run_cli("convert", f"model.path={policy}", f"output={hf_dir}").returncode == 0
    assert open_model(hf_dir).kind == "hf"
    rewards = 0.1 * (hf_sequence_logps(hf_dir, dataset, 12) - hf_sequence_logps(setup["model"], dataset, 12))
    assert ours["rewards/chosen"] == pytest.approx(float(rewards[:, 0].mean()), abs=1e-5)
    assert ours["rewards/rejected"] == pytest.approx(float(rewards[:, 1].mean()), abs=1e-5)
    assert ours["rewards/margins"] == pytest.approx(float((rewards[:, 0] - rewards[:, 1]).mean()), abs=1e-5)
    assert ours["rewards/accuracies"] == pytest.approx(float((rewards[:, 0] > rewards[:, 1]).double().mean()))
    assert ours["rewards/margins"] != 0.0  # the policy moved
    assert (tmp_path / "rewards.json").read_text().strip().startswith("{")

    same = run_cli("rewards", f"model.path={setup['model']}", *args, "rewards.max_pairs=8")
    assert same.returncode == 0, same.stderr[-3000:]
    against_itself = last_json(same.stdout)
    assert against_itself["pairs"] == 8
    assert against_itself["rewards/margins"] == against_itself["rewards/accuracies"] == 0.0
