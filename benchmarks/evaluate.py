"""lm-eval speed: minitron's Megatron backend vs lm-eval's own hf backend, MMLU 5-shot on SmolLM2-135M.

    python benchmarks/evaluate.py                          # CPU fp32, 200 test questions, batch 8
    python benchmarks/evaluate.py --items 57               # one question per subject, for a busy machine
    python benchmarks/evaluate.py --device cuda            # GPU, bf16

Both backends run lm-eval's simple_evaluate on the same tasks (minitron's offline MMLU: 5-shot from dev,
``--items`` test questions spread over the 57 subjects by :func:`minitron.eval.lm_tasks.spread_items`: for
200, the first 4 questions of the first 29 subjects by name and the first 3 of the other 28) with the same
batch size, one after the other in this process; items/s = questions / wall seconds of simple_evaluate
(request building, model, metrics). Also checks that both give the same accuracy. Needs `minitron assets
fetch smollm2-135m benchmarks`. Writes ``benchmarks/results/evaluate.json`` (goal: ratio >= 1.0), with the
machine's 1-minute load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import machine, write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="HF directory (default: the smollm2-135m asset)")
    parser.add_argument("--items", type=int, default=200, help="MMLU test questions, spread over the 57 subjects")
    parser.add_argument("--batch", type=int, default=8, help="batch size of both backends")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()

    from minitron.assets import asset_path
    from minitron.eval import harness, lm_tasks

    harness.go_offline()
    from lm_eval.models.huggingface import HFLM

    from minitron.eval.megatron_lm import MegatronLM
    from minitron.models.checkpoint import load_model, open_model
    from minitron.models.tokenizer import load_tokenizer
    from minitron.parallel import setup_distributed

    model_dir = Path(args.model) if args.model else asset_path("smollm2-135m")
    benchmarks = asset_path("benchmarks")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    source = open_model(model_dir)

    def run(lm) -> tuple[dict, float]:
        manager = lm_tasks.task_manager(benchmarks)
        (mmlu,) = lm_tasks.load_tasks(manager, ["mmlu"], {"mmlu": 5}, {"mmlu": None})
        tasks = [lm_tasks.spread_items(mmlu, args.items)]
        start = time.perf_counter()
        results = harness.evaluate(lm, tasks, manager, seed=1234, log_samples=False)
        seconds = time.perf_counter() - start
        return harness.summarize(results, tasks)["mmlu"], seconds

    load_before = os.getloadavg()[0]
    setup_distributed(1, 1)
    model = load_model(source, 1, 1, dtype).eval()
    megatron_lm = MegatronLM(model, load_tokenizer(model_dir), source.arch.max_position_embeddings, args.batch)
    ours, our_seconds = run(megatron_lm)
    del megatron_lm, model
    hf_lm = HFLM(pretrained=str(model_dir), dtype=dtype, batch_size=args.batch, device=args.device)
    theirs, their_seconds = run(hf_lm)
    items = ours["items"]
    result = {
        "task": f"mmlu 5-shot (dev pool), {items} test questions spread over the 57 subjects (first of each)",
        "model": str(model_dir), "device": args.device, "dtype": str(dtype).replace("torch.", ""),
        "batch_size": args.batch, "items": items,
        "megatron": {"seconds": our_seconds, "items_per_s": items / our_seconds, "acc": ours["value"]},
        "hf": {"seconds": their_seconds, "items_per_s": items / their_seconds, "acc": theirs["value"]},
        "ratio": their_seconds / our_seconds, "same_accuracy": ours["value"] == theirs["value"],
        "load_average_1min_before": load_before, "load_average_1min_after": os.getloadavg()[0],
        "machine": machine(),
    }  # fmt: skip
    write_result("evaluate", result)


if __name__ == "__main__":
    main()
