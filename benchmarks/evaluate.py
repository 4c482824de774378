"""lm-eval speed: minitron's Megatron backend vs lm-eval's own hf backend, MMLU 5-shot on SmolLM2-135M.

    python benchmarks/evaluate.py                          # CPU fp32, 4 test questions per subject (228), batch 8
    python benchmarks/evaluate.py --per-subject 1          # 57 questions, for a busy machine
    python benchmarks/evaluate.py --device cuda            # GPU, bf16

Both backends run lm-eval's simple_evaluate on the same tasks (minitron's offline MMLU: 5-shot from dev,
the first ``--per-subject`` test questions of each of the 57 subjects) with the same batch size, one after
the other in this process; items/s = questions / wall seconds of simple_evaluate (request building,
model, metrics). Also checks that both give the same accuracy. Needs `minitron assets fetch smollm2-135m
benchmarks`. Writes ``benchmarks/results/evaluate.json`` (goal: ratio >= 1.0).
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--per-subject", type=int, default=4, help="MMLU test questions per subject")
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
        tasks = lm_tasks.load_tasks(manager, ["mmlu"], {"mmlu": 5}, {"mmlu": args.per_subject})
        start = time.perf_counter()
        results = harness.evaluate(lm, tasks, manager, seed=1234, log_samples=False)
        seconds = time.perf_counter() - start
        return harness.summarize(results, tasks)["mmlu"], seconds

    setup_distributed(1, 1)
    model = load_model(source, 1, 1, dtype).eval()
    megatron_lm = MegatronLM(model, load_tokenizer(model_dir), source.arch.max_position_embeddings, args.batch)
    ours, our_seconds = run(megatron_lm)
    del megatron_lm, model
    hf_lm = HFLM(pretrained=str(model_dir), dtype=dtype, batch_size=args.batch, device=args.device)
    theirs, their_seconds = run(hf_lm)
    items = ours["items"]
    result = {
        "task": "mmlu 5-shot (dev pool), first %d test questions of each subject" % args.per_subject,
        "model": str(model_dir), "device": args.device, "dtype": str(dtype).replace("torch.", ""),
        "batch_size": args.batch, "items": items,
        "megatron": {"seconds": our_seconds, "items_per_s": items / our_seconds, "acc": ours["value"]},
        "hf": {"seconds": their_seconds, "items_per_s": items / their_seconds, "acc": theirs["value"]},
        "ratio": their_seconds / our_seconds, "same_accuracy": ours["value"] == theirs["value"],
        "machine": machine(),
    }  # fmt: skip
    write_result("evaluate", result)


if __name__ == "__main__":
    main()
