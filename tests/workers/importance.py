"""torchrun worker: importance scores of one model in several parallel layouts, one after another.

    torchrun --nproc-per-node 2 tests/workers/importance.py --layouts 2x1,1x2,1x1 --out DIR MODEL_DIR

Layout ``TxP`` is TP=T, PP=P and DP = world / (T * P). For each, every rank estimates importance of
fixed windows (the ones ``tests/prune/test_importance.py`` uses); global rank 0 saves the scores to
``DIR/TxP/`` with ``ranks_agree.json``: the largest difference between any rank's scores and rank 0's.
"""

import argparse
import json
from pathlib import Path

import torch

WINDOWS = dict(num=5, length=24, seed=3)  # 5 windows: uneven over 2 data-parallel ranks
MICRO_BATCH_SIZE = 2
WINDOW_SIZES = (1, 2)


def calibration_windows() -> torch.Tensor:
    generator = torch.Generator().manual_seed(WINDOWS["seed"])
    return torch.randint(0, 256, (WINDOWS["num"], WINDOWS["length"]), generator=generator)


def flat(scores) -> torch.Tensor:
    parts = [scores.hidden, scores.ffn, scores.heads, scores.groups, scores.block_influence, scores.layer_loss]
    parts += [scores.window_loss[k] for k in sorted(scores.window_loss)] + [torch.tensor([scores.base_loss])]
    return torch.cat([p.double().flatten() for p in parts])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layouts", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("model_dir")
    args = parser.parse_args()

    from minitron.models.checkpoint import load_model, open_model
    from minitron.parallel import setup_distributed, teardown_distributed
    from minitron.prune.importance import estimate_importance

    source = open_model(args.model_dir)
    for layout in args.layouts.split(","):
        tp, pp = map(int, layout.split("x"))
        setup_distributed(tp, pp)
        model = load_model(source, tp, pp, torch.float32).eval()
        scores = estimate_importance(
            model, source.arch, calibration_windows(), MICRO_BATCH_SIZE, window_sizes=WINDOW_SIZES, progress=False
        )
        mine = flat(scores)
        everyone = [torch.empty_like(mine) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(everyone, mine)
        if torch.distributed.get_rank() == 0:
            out = Path(args.out) / layout
            scores.save(out)
            disagreement = max(float((other - mine).abs().max()) for other in everyone)
            (out / "ranks_agree.json").write_text(json.dumps({"max_abs_diff": disagreement, "meta": scores.meta}))
        del model
    teardown_distributed()


if __name__ == "__main__":
    main()
