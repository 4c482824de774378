"""An outside oracle: TRL's own DPO and SFT loss code (``DPOTrainer._compute_loss``, trl 1.16.0) on a tiny HF policy and
reference equals minitron's preference losses and metrics (``minitron.align.losses``) on the same batch.

TRL computes its log-probs inside the loss; minitron's side takes the same models' per-token log-probs
(``log_softmax`` of the logits at the completion tokens TRL's collator marks) through
:func:`sequence_logps` and :func:`pair_losses`. Checked: loss, rewards/chosen, rewards/rejected,
rewards/margins, rewards/accuracies, logps/chosen, logps/rejected, for DPO (TRL ``sigmoid``), IPO (TRL's
length-normalised form = minitron's ``ipo`` on averaged log-probs) and DPO with an SFT term (TRL
``["sigmoid", "sft"]``, which replaced ``rpo_alpha``; its SFT term is the token mean over the batch's chosen
completions, minitron's is per pair, so the test combines minitron's per-pair sums in TRL's normalisation).

SFT: ``minitron sft``'s step-1 loss (its own data prepare and engine, end to end) equals ``SFTTrainer.compute_loss``
(completion-only loss) on the same prompt/completion rows, whose token ids and answer masks match minitron's.
"""

from __future__ import annotations

import json

import pytest
import torch

from minitron.align.losses import pair_losses, sequence_logps
from tests.tiny_models import make_tiny_model, save_char_tokenizer

trl = pytest.importorskip("trl", reason="trl (test extra) is not installed")

BETA = 0.1
ROWS = [
    {"prompt": "what is two plus two? ", "chosen": "four", "rejected": "five, or maybe six"},
    {"prompt": "name a colour: ", "chosen": "a deep blue", "rejected": "loud"},
    {"prompt": "opposite of up? ", "chosen": "down", "rejected": "left"},
]


@pytest.fixture
def models(tmp_path):
    """(directory, tokenizer, policy, reference): fresh per test (a DPOTrainer adapts the models it is given)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path
    policy_dir = make_tiny_model("llama31", root / "policy", num_layers=2, seed=0)
    reference_dir = make_tiny_model("llama31", root / "reference", num_layers=2, seed=1)
    save_char_tokenizer(policy_dir)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32)
    return root, tokenizer, policy, reference


def _trl_step(models, loss_type: list, loss_weights: list | None = None):
    """TRL's loss and logged metrics of one batch of all ROWS, and the batch TRL's collator made."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    root, tokenizer, policy, reference = models
    args = DPOConfig(output_dir=str(root / "out"), beta=BETA, loss_type=loss_type, loss_weights=loss_weights,
                     per_device_train_batch_size=len(ROWS), report_to=[], use_cpu=True, max_length=128,
                     seed=0)  # fmt: skip
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(ROWS),
                         processing_class=tokenizer)  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()  # no dropout; "eval" metrics
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, batch, return_outputs=False)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    return loss.item(), metrics, batch


def _logps(model, batch, average: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) sequence log-probs ``[pairs]`` of a TRL batch ``[2 * pairs, seq]`` (chosen rows first)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    token_logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    seq = sequence_logps(token_logps, batch["completion_mask"][:, 1:], average=average)
    return seq.chunk(2)


def _ours(models, batch, name: str, average: bool, sft_weight: float = 0.0) -> dict:
    _, _, policy, reference = models
    pc, pr = _logps(policy, batch, average)
    rc, rr = _logps(reference, batch, average)
    out = pair_losses(name, pc, pr, rc, rr, beta=BETA, sft_weight=sft_weight)
    return {"loss": out["loss"].mean().item(), "rewards/chosen": out["chosen"].mean().item(),
            "rewards/rejected": out["rejected"].mean().item(), "rewards/margins": out["margin"].mean().item(),
            "rewards/accuracies": out["accuracy"].mean().item(), "logps/chosen": pc.mean().item(),
            "logps/rejected": pr.mean().item(), "sft": out["sft"]}  # fmt: skip


def _assert_metrics(trl_metrics: dict, ours: dict, average: bool) -> None:
    names = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]
    if not average:  # TRL logs summed log-probs
        names += ["logps/chosen", "logps/rejected"]
    for name in names:
        assert ours[name] == pytest.approx(trl_metrics[name], abs=1e-5, rel=1e-6), name


def test_dpo_equals_trl_sigmoid(models):
    trl_loss, metrics, batch = _trl_step(models, ["sigmoid"])
    ours = _ours(models, batch, "dpo", average=False)
    assert ours["loss"] == pytest.approx(trl_loss, abs=1e-6)
    assert abs(trl_loss - 0.693147) > 1e-3  # policy != reference: a non-trivial loss
    assert 0 < metrics["rewards/accuracies"] < 1 or metrics["rewards/margins"] != 0
    _assert_metrics(metrics, ours, average=False)


def test_ipo_equals_trl_ipo_on_averaged_logps(models):
    trl_loss, metrics, batch = _trl_step(models, ["ipo"])
    ours = _ours(models, batch, "ipo", average=True)
    assert ours["loss"] == pytest.approx(trl_loss, rel=1e-6)
    summed = _ours(models, batch, "ipo", average=False)  # TRL's rewards are beta * summed log-ratios
    _assert_metrics(metrics, summed, average=False)


def test_dpo_with_sft_term_equals_trl_sigmoid_plus_sft(models):
    alpha = 0.5
    trl_loss, metrics, batch = _trl_step(models, ["sigmoid", "sft"], [1.0, alpha])
    ours = _ours(models, batch, "dpo", average=False)
    chosen_tokens = batch["completion_mask"][: len(ROWS), 1:].sum()
    expected = ours["loss"] + alpha * ours["sft"].sum().item() / chosen_tokens.item()
    assert expected == pytest.approx(trl_loss, abs=1e-6)
    # minitron's own sft_weight is per pair: with every pair's sum divided by the batch's token count, it is TRL's
    per_pair = _ours(models, batch, "dpo", average=False, sft_weight=alpha * len(ROWS) / chosen_tokens.item())
    assert per_pair["loss"] == pytest.approx(trl_loss, abs=1e-6)
    _assert_metrics(metrics, ours, average=False)


SFT_ROWS = [
    {"prompt": "what is two plus two?", "completion": "four"},
    {"prompt": "name a colour", "completion": "a deep blue"},
    {"prompt": "opposite of up?", "completion": "down, not left"},
]


def test_sft_loss_equals_trl_sft_trainer(tmp_path):
    """minitron sft's step-1 loss (the engine, on its own prepared data) equals TRL's ``SFTTrainer.compute_loss``
    (completion-only loss) on the same rows rendered with the same chat template; the token ids and answer masks
    of both sides are equal too (TRL's completion = minitron's assistant turn, end-of-turn and newline kept)."""
    from conftest import last_json, run_cli
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from minitron.align.data import SFTDataset
    from tests.align.align_helpers import CHATML, prepare

    model_dir = make_tiny_model("smollm2", tmp_path / "model", num_layers=2, seed=0)
    save_char_tokenizer(model_dir)
    prefix = prepare(tmp_path, model_dir, "sft", SFT_ROWS, seq_length=96)
    dataset = SFTDataset(str(prefix), 96)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token, tokenizer.chat_template = chr(0), CHATML
    conversations = [{"prompt": [{"role": "user", "content": r["prompt"]}],
                      "completion": [{"role": "assistant", "content": r["completion"]}]} for r in SFT_ROWS]  # fmt: skip
    args = SFTConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(SFT_ROWS), report_to=[],
                     use_cpu=True, max_length=96, completion_only_loss=True, packing=False, seed=0)  # fmt: skip
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = SFTTrainer(model=hf, args=args, train_dataset=Dataset.from_list(conversations),
                         processing_class=tokenizer)  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()  # no dropout
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()

    # the same tokens and answer targets on both sides (TRL's batch order is shuffled: compare as sets)
    ours = set()
    for i in range(len(dataset)):
        sample = dataset[i]
        n = int((sample["loss_mask"] > 0).nonzero().max()) + 1  # through the last answer target
        ours.add((tuple(sample["tokens"][:n].tolist()) + (int(sample["labels"][n - 1]),),
                  tuple(sample["loss_mask"][:n].int().tolist())))  # fmt: skip
    theirs = set()
    for ids, labels, attention in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        n = int(attention.sum())
        theirs.add((tuple(ids[:n].tolist()), tuple((labels[1:n] != -100).int().tolist())))
    assert ours == theirs
    answer_tokens = int((batch["labels"][:, 1:] != -100).sum())

    result = run_cli("sft", f"model.path={model_dir}", f"data.path={prefix}", f"output={tmp_path / 'run'}",
                     "train.seq_length=96", "train.steps=1", f"train.global_batch_size={len(SFT_ROWS)}",
                     f"train.micro_batch_size={len(SFT_ROWS)}", "logging.progress=false", "logging.tensorboard=false",
                     "train.warmup_steps=0")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    last_json(result.stdout)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    step = next(r for r in map(json.loads, lines) if r["kind"] == "train")
    assert step["tokens"] == answer_tokens
    assert step["loss"] == pytest.approx(trl_loss, abs=1e-5)
    assert 3.0 < trl_loss < 10.0  # a random model on 256 tokens: about ln 256 = 5.5, not a degenerate zero
