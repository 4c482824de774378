"""SmolLM2-135M on the real benchmark data: minitron's lm-eval backend against lm-eval's hf backend on a few items.

Needs the assets (`minitron assets fetch smollm2-135m benchmarks`); skipped with the reason when they are not in
the cache. Kept small for CPU: 4 documents each of HellaSwag, Winogrande and ARC-Easy, 0-shot, fp32. (The
200-item MMLU 5-shot / HellaSwag / Winogrande / ARC-Easy comparison of the issue is a separate run.)
"""

import pytest
import torch
from lm_eval_helpers import recording, run_tasks

from minitron import assets
from minitron.eval import harness

pytestmark = [pytest.mark.assets, pytest.mark.slow]

NEEDED = ("smollm2-135m", "benchmarks")
TASKS = ["hellaswag", "winogrande", "arc_easy"]


@pytest.fixture(scope="module")
def smollm2():
    if not assets.assets_present(*NEEDED):
        pytest.skip(
            f"assets {NEEDED} are not in {assets.minitron_home()}: run `minitron assets fetch {' '.join(NEEDED)}`"
        )
    return assets.asset_path("smollm2-135m"), assets.asset_path("benchmarks")


def test_backends_agree_on_real_items(smollm2, megatron_world):
    from lm_eval.models.huggingface import HFLM

    from minitron.eval.megatron_lm import MegatronLM
    from minitron.models.checkpoint import load_model, open_model
    from minitron.models.tokenizer import load_tokenizer

    model_dir, benchmarks = smollm2
    harness.go_offline()
    shots, limits = {name: 0 for name in TASKS}, {name: 4 for name in TASKS}
    ours = recording(MegatronLM)(load_model(open_model(model_dir), 1, 1, torch.float32).eval(), load_tokenizer(model_dir),
                                 max_length=8192, batch_size=4)  # fmt: skip
    our_summary = run_tasks(ours, benchmarks, TASKS, shots, limits)
    theirs = recording(HFLM)(pretrained=str(model_dir), dtype=torch.float32, batch_size=4, device="cpu")
    their_summary = run_tasks(theirs, benchmarks, TASKS, shots, limits)
    assert len(ours.seen) == len(theirs.seen) >= 4 * 4 + 4 * 2 + 4 * 3
    worst = 0.0
    for (ctx, cont, (logprob, greedy)), (ctx_hf, cont_hf, (logprob_hf, greedy_hf)) in zip(ours.seen, theirs.seen):
        assert ctx == ctx_hf and cont == cont_hf
        assert greedy == greedy_hf
        worst = max(worst, abs(logprob - logprob_hf))
    assert worst < 1e-4, worst
    for name in TASKS:
        assert our_summary[name]["value"] == their_summary[name]["value"] and our_summary[name]["items"] == 4
