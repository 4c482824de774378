"""minitron sft and minitron dpo resume: a run stopped after its step-2 checkpoint and run again ends with the same
losses and weights as an uninterrupted run; in SFT, prompt tokens receive zero gradient."""

import shutil

import pytest
import torch

from tests.align.test_recipes import final_parameters, records, run, setup  # noqa: F401 (fixture)


def _by_step(run_dir) -> dict:
    """step -> loss of the run's train records (a repeated step: its last record)."""
    return {r["step"]: r["loss"] for r in records(run_dir)}


@pytest.mark.parametrize("command", ["sft", "dpo"])
def test_killed_run_resumes_to_the_uninterrupted_result(command, setup, tmp_path, megatron_world):  # noqa: F811
    args = ["train.steps=4", "train.global_batch_size=4", "train.micro_batch_size=2", "checkpoint.interval=2"]
    whole = run(command, setup, tmp_path / "whole", *args)
    assert whole["resumed_from"] is None
    uninterrupted = _by_step(tmp_path / "whole")
    assert sorted(uninterrupted) == [1, 2, 3, 4]

    # the same run, killed after step 3 (before its step-4 checkpoint): only step 2's checkpoint survives
    killed = tmp_path / "killed"
    run(command, setup, killed, *args)
    checkpoints = killed / "checkpoints"
    assert (checkpoints / "iter_0000002").is_dir() and (checkpoints / "iter_0000004").is_dir()
    shutil.rmtree(checkpoints / "iter_0000004")
    shutil.rmtree(killed / "final")
    for marker in ("result.json", "done"):
        (killed / marker).unlink(missing_ok=True)
    resumed = run(command, setup, killed, *args)
    assert resumed["resumed_from"] == "iter_0000002" and resumed["steps_this_run"] == 2
    assert _by_step(killed) == uninterrupted  # steps 3 and 4 again, bit for bit
    a, b = final_parameters(tmp_path / "whole"), final_parameters(killed)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff == 0.0, diff


def test_prompt_tokens_get_zero_gradient(setup, megatron_world):  # noqa: F811
    """SFT: the loss's gradient w.r.t. the per-token losses is 0 on prompt (and padding) tokens and 1/1 (summed)
    on answer tokens; changing the targets of prompt tokens changes neither the loss nor any weight gradient."""
    from minitron.align.data import SFTDataset
    from minitron.models.checkpoint import load_model, open_model
    from minitron.training.step import forward_step

    model = load_model(open_model(setup["model"]), 1, 1, torch.float32)
    sample = SFTDataset(str(setup["sft"]), 256)[2]  # a two-turn conversation: prompt, answer, prompt, answer
    mask = sample["loss_mask"]
    assert 0 < mask.sum() < (sample["tokens"] != sample["tokens"][-1]).sum()  # both kinds of token present

    def loss_and_grads(labels):
        model.zero_grad()
        batch = {k: v[None] for k, v in {**sample, "labels": labels}.items()}
        output, loss_func = forward_step(iter([batch]), model)
        output.retain_grad()
        loss_sum, _, _ = loss_func(output)
        loss_sum.backward()
        return float(loss_sum), output.grad[0].clone(), {k: p.grad.clone() for k, p in model.named_parameters()}

    loss, token_grad, grads = loss_and_grads(sample["labels"])
    assert torch.equal(token_grad, mask.to(token_grad.dtype))  # d(sum of answer-token CE)/d(CE_t) = mask_t
    other = torch.where(mask.bool(), sample["labels"], (sample["labels"] + 7) % 256)  # other prompt targets
    assert not torch.equal(other, sample["labels"])
    loss_b, _, grads_b = loss_and_grads(other)
    assert loss_b == loss
    assert all(torch.equal(grads[k], grads_b[k]) for k in grads)
