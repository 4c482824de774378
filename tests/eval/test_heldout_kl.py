"""Held-out KL(teacher || model) of `minitron eval eval.teacher=`: zero to itself, == transformers, any layout."""

import pytest
import torch

from conftest import REPO, last_json, run_cli, run_torchrun
from minitron.data.documents import read_texts
from minitron.errors import MinitronError
from minitron.eval import heldout
from tiny_models import make_peaked_teacher

SEQ_LENGTH, MAX_WINDOWS = 64, 6  # micro-batches of 4 windows: one full, one partial


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """SmolLM2-like teacher with peaked predictions (same character tokenizer): its KL to a random model is far from 0."""
    return make_peaked_teacher(tmp_path_factory.mktemp("kl_teacher") / "hf")


def eval_args(model, text_file, *extra):
    return ("eval", f"model.path={model}", f"data.path={text_file}", f"eval.seq_length={SEQ_LENGTH}",
            f"eval.max_windows={MAX_WINDOWS}", *extra)  # fmt: skip


@pytest.fixture(scope="module")
def single_process(tiny_models, teacher, text_file):
    """`minitron eval` of the llama31 tiny model with the teacher, one process."""
    result = run_cli(*eval_args(tiny_models["llama31"], text_file, f"eval.teacher={teacher}"))
    assert result.returncode == 0, result.stderr[-3000:]
    return last_json(result.stdout)


def test_kl_of_a_model_to_itself_is_zero(tiny_models, megatron_world):
    from minitron.models.checkpoint import load_model, open_model

    windows = torch.randint(0, 256, (5, 24), generator=torch.Generator().manual_seed(3))
    source = open_model(tiny_models["qwen2"])
    model = load_model(source, 1, 1, torch.float32).eval()
    alone = heldout.megatron_heldout_loss(model, windows, micro_batch_size=2, progress=False)
    same = load_model(source, 1, 1, torch.float32).eval()
    paired = heldout.megatron_heldout_loss(model, windows, micro_batch_size=2, progress=False, teacher=same)
    assert paired["tokens"] == alone["tokens"] == 5 * 23
    assert abs(paired["kl"]) < 1e-6
    assert paired["teacher_loss"] == paired["loss"]
    assert abs(paired["loss"] - alone["loss"]) < 1e-6


def brute_force(model_dir, teacher_dir, windows: torch.Tensor) -> dict:
    """Mean KL(teacher || model) and the teacher's loss over positions 0..L-2, with transformers (fp64 softmax)."""
    from transformers import AutoModelForCausalLM

    def log_probs(path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            return torch.log_softmax(model(windows).logits[:, :-1].double(), dim=-1)

    log_p, log_q = log_probs(model_dir), log_probs(teacher_dir)
    kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    teacher_nll = -log_q.gather(-1, windows[:, 1:, None]).squeeze(-1)
    return {"kl": float(kl.mean()), "teacher_loss": float(teacher_nll.mean()), "tokens": kl.numel()}


def test_kl_equals_transformers(tiny_models, teacher, text_file, single_process):
    from minitron.models.tokenizer import load_tokenizer

    texts = read_texts(text_file)  # the windows as `minitron eval` builds them
    windows = heldout.make_windows(heldout.tokenize(texts, load_tokenizer(tiny_models["llama31"])), SEQ_LENGTH,
                                   MAX_WINDOWS)  # fmt: skip
    expected = brute_force(tiny_models["llama31"], teacher, windows)
    out = single_process
    assert out["teacher"] == str(teacher)
    assert out["tokens"] == expected["tokens"] == MAX_WINDOWS * (SEQ_LENGTH - 1)
    assert expected["kl"] > 0.1  # the two models really differ
    assert abs(out["kl"] - expected["kl"]) < 1e-5
    assert abs(out["teacher_loss"] - expected["teacher_loss"]) < 1e-5
    alone = last_json(run_cli(*eval_args(tiny_models["llama31"], text_file)).stdout)
    assert "kl" not in alone and "teacher" not in alone
    assert abs(out["loss"] - alone["loss"]) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["parallel.tp=2", "parallel.pp=2"])
def test_kl_at_tp2_and_pp2_equals_single_process(tiny_models, teacher, text_file, single_process, layout):
    result = run_torchrun(2, REPO / "minitron" / "cli.py",
                          *eval_args(tiny_models["llama31"], text_file, f"eval.teacher={teacher}", layout))  # fmt: skip
    out = last_json(result.stdout)
    assert out["tokens"] == single_process["tokens"]
    for key in ("kl", "teacher_loss", "loss"):
        assert abs(out[key] - single_process[key]) < 1e-5, (key, out, single_process)


def test_teacher_with_another_vocabulary_is_refused(tiny_models, text_file):
    result = run_cli(*eval_args(tiny_models["llama31"], text_file, f"eval.teacher={tiny_models['odd']}"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1 and "eval.teacher=" in errors[0] and "258 tokens" in errors[0], errors


def test_teacher_checks(tiny_models, tmp_path):
    import shutil

    from minitron.models.checkpoint import open_model
    from minitron.models.tokenizer import load_tokenizer

    model = open_model(tiny_models["llama31"])
    tokenizer = load_tokenizer(model.carried_files)
    other_tokens = tmp_path / "other_tokens"  # same size, characters mapped to other ids
    shutil.copytree(tiny_models["smollm2"], other_tokens)
    text = (other_tokens / "tokenizer.json").read_text()
    (other_tokens / "tokenizer.json").write_text(text.replace('"a": 97', '"a": 98', 1).replace('"b": 98', '"b": 97', 1))
    with pytest.raises(MinitronError, match=r"eval.teacher=.*another tokenizer"):
        heldout.open_teacher(other_tokens, model, tokenizer, 1, 1, SEQ_LENGTH)
    with pytest.raises(MinitronError, match=r"eval.teacher=.*no such file"):
        heldout.open_teacher(tmp_path / "missing", model, tokenizer, 1, 1, SEQ_LENGTH)
    with pytest.raises(MinitronError, match=r"eval.teacher=.*parallel.tp=5 does not divide the teacher's"):
        heldout.open_teacher(tiny_models["smollm2"], model, tokenizer, 5, 1, SEQ_LENGTH)
    assert heldout.open_teacher(tiny_models["smollm2"], model, tokenizer, 2, 2, SEQ_LENGTH).arch.vocab_size == 256
