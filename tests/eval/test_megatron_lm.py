"""minitron's lm-eval backend (MegatronLM) against lm-eval's own hf backend (HFLM), on every shipped task.

Both run through lm-eval's simple_evaluate on tiny benchmark files and a tiny random model (fp32, CPU).
Per request: the same context and continuation token ids, log-likelihoods within 1e-5, the same
is_greedy; generation (GSM8K) gives the same text; the metrics agree.
"""

from __future__ import annotations

import pytest
import torch
from lm_eval_helpers import benchmarks, recording, run_tasks  # noqa: F401 (benchmarks: fixture)

from minitron.eval import harness, lm_tasks

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def lm_eval_model(tmp_path_factory):
    """A tiny SmolLM2-like model (char tokenizer) that attends 1024 positions, so MMLU 5-shot fits."""
    from lm_eval_helpers import make_long_context_model

    return make_long_context_model(tmp_path_factory.mktemp("lm"))


@pytest.mark.slow
def test_every_task_same_requests_and_scores_as_hf_backend(lm_eval_model, benchmarks, megatron_world):
    from lm_eval.models.huggingface import HFLM

    from minitron.eval.megatron_lm import MegatronLM
    from minitron.models.checkpoint import load_model, open_model
    from minitron.models.tokenizer import load_tokenizer

    harness.go_offline()
    names = list(lm_tasks.TASKS)
    # MMLU 5-shot from dev; stand-in pools exercised too: hellaswag 2-shot, arc_easy 2-shot, gsm8k 1-shot
    shots = {n: lm_tasks.TASKS[n].default_shots for n in names} | {"hellaswag": 2, "arc_easy": 2, "gsm8k": 1}
    source = open_model(lm_eval_model)
    ours = recording(MegatronLM)(load_model(source, 1, 1, torch.float32).eval(), load_tokenizer(lm_eval_model),
                                  max_length=1024, batch_size=4)  # fmt: skip
    theirs = recording(HFLM)(pretrained=str(lm_eval_model), dtype=torch.float32, batch_size=1, device="cpu")
    our_summary = run_tasks(ours, benchmarks, names, shots)
    their_summary = run_tasks(theirs, benchmarks, names, shots)

    assert len(ours.seen) == len(theirs.seen) > 600
    for (ctx, cont, (logprob, greedy)), (ctx_hf, cont_hf, (logprob_hf, greedy_hf)) in zip(ours.seen, theirs.seen):
        assert ctx == ctx_hf and cont == cont_hf
        assert abs(logprob - logprob_hf) < TOLERANCE, (logprob, logprob_hf)
        assert greedy == greedy_hf
    assert ours.generated == theirs.generated and len(ours.generated) == 5
    assert all(text for _, text in ours.generated)
    for name in names:
        assert our_summary[name]["value"] == their_summary[name]["value"], name
        assert our_summary[name]["items"] == their_summary[name]["items"] > 0
    assert our_summary["mmlu"]["items"] == 57 * 2 and our_summary["mmlu"]["num_fewshot"] == 5
