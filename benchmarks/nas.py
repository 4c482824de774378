"""Architecture search on SmolLM2-135M at ~50% of the non-embedding parameters (conf/prune/smollm2_search_50pct).

    python benchmarks/nas.py [--calib 4] [--top-n 4] [--layers-divisor 6] [--steps 10] [--batch 8] [--heldout 4]
                             [--work DIR]

1. `minitron prune prune=smollm2_search_50pct` on ``--calib`` x 256 tokens of the sotu calibration split (rung b
   over the ``--top-n`` largest feasible shapes, depths in multiples of ``--layers-divisor``; no rung c): the chosen
   shape and the search's wall time. Divisor 6 (30, 24, 18 layers) needs the window losses of one window size for
   the top 4 (6 layers dropped: 25 windows) where the config's 3 needs two (3 and 9: 50 windows).
2. Rung (b) cost: the time to score the chosen candidate (prune in memory from the saved scores, build, load, LM
   loss) over the time of one plain forward pass (the same LM loss of the same student) on the same tokens
   (goal: <= 1.2).
3. The searched student against the demo's hand-picked width (hidden 432, FFN 864) and depth (15 layers, window
   loss) students, each distilled ``--steps`` steps of ``--batch`` x 256 tokens (forward KL to the teacher, the
   same tokens in the same order, the demo's LR schedule) on the sotu training split, then scored on
   ``--heldout`` x 256 tokens of the held-out split: held-out loss and KL. Goal: searched <= the better
   hand-picked one.
Writes benchmarks/results/nas.json (every setting, phase wall times, machine and load average). Needs
`minitron assets fetch smollm2-135m sotu`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402

HAND_PICKED = {"width": ["prune.hidden_size=432", "prune.ffn_hidden_size=864"],
               "depth": ["prune.num_layers=15", "prune.depth_metric=window_loss"]}  # as conf/recipe/demo_smollm2
DISTILL = ["train.lr=5.0e-4", "train.min_lr=5.0e-5", "train.warmup_steps=2", "train.eval_interval=0",
           "train.seq_length=256", "logging.progress=false"]  # the demo's distill_args (same for all three)


def minitron(*args) -> dict:
    """Run ``minitron ARGS``; the JSON of its last stdout line."""
    done = subprocess.run([sys.executable, "-m", "minitron.cli", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"minitron {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rung_b_cost(model_path: Path, student: Path, calib: Path, num_samples: int, repeats: int) -> dict:
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
        for _ in range(repeats):
            start = time.perf_counter()
            loss = lm_loss(model, windows, 4)
            forwards.append(time.perf_counter() - start)
            scored.append(score_candidate(source, scores, targets, windows, 4, 1, 1, torch.float32)["seconds"])
        forward, score = sorted(forwards)[repeats // 2], sorted(scored)[repeats // 2]  # medians
        return {"tokens": int(windows.numel()), "repeats": repeats, "forward_seconds": forward, "score_seconds": score,
                "ratio": score / forward, "loss": loss}  # fmt: skip
    finally:
        teardown_distributed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=4, help="calibration windows of 256 tokens")
    parser.add_argument("--loss-samples", type=int, default=2, help="calibration windows for the window losses")
    parser.add_argument("--top-n", type=int, default=4, help="rung (b) candidates")
    parser.add_argument("--layers-divisor", type=int, default=6, help="depths tried: 30 - k x divisor")
    parser.add_argument("--cost-repeats", type=int, default=3, help="timed repeats of the rung (b) cost (median)")
    parser.add_argument("--steps", type=int, default=10, help="distillation steps per student")
    parser.add_argument("--batch", type=int, default=8, help="sequences of 256 tokens per distillation step")
    parser.add_argument("--note", default=None, help="free text kept in the JSON (e.g. how a resumed run went)")
    parser.add_argument("--parallel", action="store_true", help="run the three distillations at the same time")
    parser.add_argument("--heldout", type=int, default=4, help="held-out windows of 256 tokens")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()

    from minitron.assets import asset_path, corpus_split_path

    model = asset_path("smollm2-135m")
    calib, train, held = (corpus_split_path("sotu", split) for split in ("calib", "train", "heldout"))
    work = args.work or Path(tempfile.mkdtemp(prefix="nas-bench-"))
    common = [f"model.path={model}", f"data.path={calib}", f"calib.num_samples={args.calib}", "calib.seq_length=256",
              f"importance.loss_num_samples={args.loss_samples}"]  # fmt: skip
    search_args = [f"prune.search.top_n={args.top_n}", f"prune.search.num_layers_divisor={args.layers_divisor}"]
    load_before, wall_start = os.getloadavg(), time.perf_counter()
    phases = {}

    start = time.perf_counter()
    searched = minitron("prune", "prune=smollm2_search_50pct", *common, f"output={work / 'searched'}", *search_args)
    search_seconds = phases["search"] = time.perf_counter() - start
    table = json.loads((work / "searched" / "search" / "candidates.json").read_text())
    students = {"searched": work / "searched"}
    summaries = {"searched": searched}
    for name, targets in HAND_PICKED.items():
        summaries[name] = minitron("prune", *common, f"output={work / name}", *targets)
        students[name] = work / name

    phases["hand_picked_prunes"] = time.perf_counter() - start - search_seconds

    start = time.perf_counter()
    cost = rung_b_cost(model, work / "searched", calib, args.calib, args.cost_repeats)
    phases["rung_b_cost"] = time.perf_counter() - start

    start = time.perf_counter()
    prefix = work / "train"
    minitron("data", "prepare", f"data.path={train}", f"model.path={model}", f"output={prefix}", "data.workers=1")
    phases["data_prepare"] = time.perf_counter() - start
    distill_args = [f"train.steps={args.steps}", f"train.global_batch_size={args.batch}",
                    f"train.micro_batch_size={min(args.batch, 4)}", f"checkpoint.interval={args.steps}", *DISTILL]
    eval_args = ["eval.seq_length=256", f"eval.max_windows={args.heldout}", "eval.micro_batch_size=4"]

    def distill_and_eval(name: str) -> tuple[dict, float]:
        start, run = time.perf_counter(), work / f"distill-{name}"
        minitron("distill", f"teacher.path={model}", f"student.path={students[name]}", f"data.path={prefix}",
                 f"output={run}", *distill_args)  # fmt: skip
        heldout = minitron("eval", f"model.path={run / 'final'}", f"data.path={held}", f"eval.teacher={model}",
                           *eval_args)  # fmt: skip
        return heldout, time.perf_counter() - start

    # the three runs are independent (same tokens, same schedule): --parallel overlaps them on a shared machine
    with ThreadPoolExecutor(max_workers=len(students) if args.parallel else 1) as pool:
        done = dict(zip(students, pool.map(distill_and_eval, students)))
    results = {}
    for name, (heldout, seconds) in done.items():
        phases[f"distill_eval_{name}"] = seconds
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
        "rung_b_cost": cost, "students": results,
        "settings": {"calib_windows": args.calib, "calib_seq_length": 256, "window_loss_samples": args.loss_samples,
                     "search_overrides": search_args, "hand_picked": HAND_PICKED, "distill_overrides": distill_args,
                     "distill_tokens_per_step": args.batch * 256, "eval_overrides": eval_args,
                     "heldout_tokens": args.heldout * 256, "distill_in_parallel": args.parallel,
                     "data": {"calib": str(calib), "train": str(train), "heldout": str(held)}},
        "reused_outputs": [name for name, summary in summaries.items() if summary.get("skipped")],
        "note": args.note,
        "searched_at_least_as_good": results["searched"]["heldout_loss"] <= best_hand,
        "wall_seconds": time.perf_counter() - wall_start, "phase_seconds": phases,
        "machine": {**machine(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "nice": os.nice(0)}, "threads": os.environ.get("OMP_NUM_THREADS"),
    })  # fmt: skip


if __name__ == "__main__":
    main()
