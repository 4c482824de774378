"""`minitron train` end to end: prepared data -> train (1 process) -> resume at TP=2 (torchrun) -> HF export."""

import pytest
import torch

from conftest import REPO, last_json, prepare_rotating_corpus, run_cli, run_torchrun
from train_helpers import train_model, train_records  # noqa: F401 (fixture)


@pytest.mark.slow
def test_train_resume_at_tp2_and_export(train_model, tmp_path):
    from transformers import AutoModelForCausalLM

    prefix = prepare_rotating_corpus(tmp_path, train_model, "the model learns to count one two three four five six "
                                     "seven eight nine ten")  # fmt: skip

    run, hf = tmp_path / "run", tmp_path / "hf"
    common = [f"model.path={train_model}", f"data.path={prefix}", f"output={run}", "train.global_batch_size=4",
              "train.micro_batch_size=2", "train.seq_length=32", "data.split='90,10,0'", "train.eval_interval=2",
              "train.eval_iters=1", "train.warmup_steps=1", "checkpoint.interval=2", "logging.progress=false"]  # fmt: skip
    first = run_cli("train", *common, "train.steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    result = last_json(first.stdout)
    assert result["steps"] == 4 and result["resumed_from"] is None and result["valid_loss"] > 0
    assert [r["step"] for r in train_records(run, "valid")] == [2, 4]
    assert (run / "config.yaml").is_file() and "steps: 4" in (run / "config.yaml").read_text()

    # the same command with more steps resumes, here in another layout (TP=2 over 2 processes)
    second = run_torchrun(2, REPO / "minitron" / "cli.py", "train", *common, "train.steps=6", "parallel.tp=2")
    result = last_json(second.stdout)
    assert result["steps"] == 6 and result["resumed_from"] == "iter_0000004" and result["steps_this_run"] == 2
    assert "resharding iter_0000004: saved at TP=1" in second.stderr
    assert [r["step"] for r in train_records(run)] == [1, 2, 3, 4, 5, 6]
    assert (run / "config.1.yaml").is_file()  # the first start's config, kept because it changed

    exported = run_cli("convert", f"model.path={run / 'final'}", f"output={hf}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    trained = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    original = AutoModelForCausalLM.from_pretrained(train_model, dtype=torch.float32)
    assert trained.config.hidden_size == original.config.hidden_size
    changed = [not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), original.state_dict().values())]
    assert all(changed)  # every tensor was trained
