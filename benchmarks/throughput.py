"""Prefill and decode tokens/s of a pipeline run's teacher and students, side by side in one process, on this machine.

    python benchmarks/throughput.py [RUN_DIR]                       # default runs/demo_smollm2
    python benchmarks/throughput.py RUN_DIR --batch 1 8 --prompt-len 128 --output-len 64 --rounds 3

Models: the run's teacher (``config.recipe.teacher`` of ``RUN_DIR/pipeline.json``) and, for every student
directory ``RUN_DIR/students/<name>``, its HF export (``hf``), else its distilled checkpoint
(``distilled/final``), else the pruned one. Throughput depends only on the architecture, so the corrected
teacher (the teacher's architecture) and a student's pruned, distilled and from-scratch models (one
architecture) are measured once each; the JSON lists which models each figure stands for.

Each model is measured through minitron's engine (:func:`minitron.eval.throughput.megatron_throughput`:
Megatron-Core ``GPTModel`` with its static KV cache) and, where it is an HF directory, through transformers
(:func:`minitron.eval.throughput.hf_throughput`) on the same random prompts ``[batch, prompt_len]``, greedy,
exactly ``output_len`` new tokens, fp32 on CPU (bf16 on a GPU). Prefill tokens/s = batch x prompt_len /
prompt-pass seconds; decode tokens/s = batch x (output_len - 1) / seconds of the one-token steps. The
machine is shared, so the models are measured in ``--rounds`` interleaved rounds (each a median of
``--repeats`` runs) and every figure is the median over rounds; the 1-minute load average before and after
is recorded; on a busy machine ``--threads 1`` avoids the threads of one operation waiting for each other
(figures per thread then), and ``--clock cpu`` times with the process's CPU seconds instead of wall seconds
(with one thread: the time an idle core would take, whatever else runs). Ratios are student / teacher at the
same settings and backend.

The anchor: the paper (Llama-3.1-Minitron-4B from Llama-3.1-8B) reports 2.7x (depth) and 1.8x (width) the
teacher's throughput, measured with TensorRT-LLM in FP8 on an H100. Ours (demo run, fp32, one CPU thread,
CPU-second clock, prompt 128, 32 new tokens; benchmarks/results/throughput.json): prefill 1.6-1.8x for both
students; decode depth 1.5x and width 1.3x (batch 1) / 1.5x (batch 8) on minitron's engine, 1.5-1.6x and
1.6-1.8x through transformers. Why ours differ, as the JSON quantifies per model
(``params_ratio``, ``non_embedding_params_ratio``, ``layers_ratio`` next to the measured ratios):

* The embedding table and the (tied) LM head are 28M of the teacher's 135M parameters (21%; 13% of the
  8B teacher), and every decode step multiplies by the whole ``[49152, hidden]`` matrix. Width pruning
  shrinks it with ``hidden``; depth pruning keeps it whole, so the depth student (15 of 30 layers, half the
  non-embedding parameters) still reads 61% of the teacher's weights per token: at most 1.65x (width 1.80x)
  where decode is bound by reading the weights, which is what transformers' decode ratios track.
* minitron's engine also pays a fixed cost per layer and step (Megatron-Core module calls and its static
  KV-cache bookkeeping): ``decode_step_fit`` puts it at ~2 ms per layer against ~0.7 ms per 10M
  parameters at batch 1. Depth halves the layers and so that cost; width keeps all 30, so on our engine
  width gains less than its parameter ratio, and the engine's decode is slower than transformers' for
  these tiny models (the GEMMs, 432-576 wide, are far from compute-bound).
* Prefill is compute-bound (prompt_len x batch rows per GEMM): both students halve the non-embedding
  FLOPs. minitron's engine runs the LM head at the last prompt position only; transformers at every
  position (a fifth of the teacher's prefill FLOPs, which width shrinks and depth keeps).
* The paper's figures come from fused FP8 kernels on a GPU at large batches, where per-layer overheads
  are small, the 4B models' GEMMs are compute-bound, and depth also halves the sequential latency; its
  depth student is faster than its parameter ratio (8.0B / 4.5B = 1.8x) for that reason.
* This machine is shared (load average 5-10 during the run): figures are CPU seconds of one thread, the
  medians of 2 interleaved rounds, and move by 10-20% between rounds.

Writes ``benchmarks/results/throughput.json`` (with machine info) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import machine, write_result  # noqa: E402

PAPER = {
    "source": "Sreenivas et al. 2024, LLM Pruning and Distillation in Practice: The Minitron Approach",
    "teacher": "Llama-3.1-8B",
    "students": {"Llama-3.1-Minitron-4B-Depth": 2.7, "Llama-3.1-Minitron-4B-Width": 1.8},
    "measured_with": "TensorRT-LLM, FP8, one H100 (throughput in tokens/s, student / teacher)",
}


def run_models(run_dir: Path) -> list[dict]:
    """The teacher and one model per student of the run in ``run_dir``: ``{name, path, stands_for}``."""
    pipeline = json.loads((run_dir / "pipeline.json").read_text())
    recipe = pipeline["config"]["recipe"]
    models = [{"name": "teacher", "path": Path(recipe["teacher"]), "stands_for": ["teacher"]}]
    if (run_dir / "teacher_corrected").is_dir():
        models[0]["stands_for"].append("teacher, corrected")
    for student in sorted(recipe["students"]):
        folder = run_dir / "students" / student
        candidates = [folder / "hf", folder / "distilled" / "final", folder / "pruned"]
        path = next((p for p in candidates if p.is_dir()), None)
        if path is None:
            raise SystemExit(f"error: student {student}: none of {', '.join(map(str, candidates))} exists")
        variants = [v for v in ("pruned", "distilled", "scratch") if (folder / v).is_dir()]
        models.append({"name": student, "path": path, "stands_for": [f"{student}, {v}" for v in variants]})
    return models


def describe(source) -> dict:
    arch = source.arch
    return {
        "layers": arch.num_layers, "hidden": arch.hidden_size, "ffn_hidden": arch.ffn_hidden_size,
        "heads": arch.num_attention_heads, "kv_heads": arch.num_query_groups, "vocab": arch.vocab_size,
        "params": arch.params, "embedding_params": arch.embedding_params,
        "non_embedding_params": arch.non_embedding_params,
    }  # fmt: skip


def measure_round(models: list[dict], batch: int, args, dtype: torch.dtype) -> dict:
    """One round: every model through the engine, then (HF directories) through transformers."""
    from minitron.eval import throughput
    from minitron.models.checkpoint import load_model

    out = {}
    for m in models:
        prompts = throughput.random_prompts(batch, args.prompt_len, m["source"].arch.vocab_size)
        model = load_model(m["source"], 1, 1, dtype).eval()
        rates = {"megatron": throughput.megatron_throughput(model, prompts, args.output_len, args.repeats)}
        del model
        if m["source"].kind == "hf" and not args.no_transformers:
            rates["transformers"] = throughput.hf_throughput(m["path"], prompts, args.output_len, args.repeats, dtype)
        out[m["name"]] = rates
    return out


def median_over_rounds(rounds: list[dict], name: str, backend: str) -> dict | None:
    runs = [r[name][backend] for r in rounds if backend in r[name]]
    if not runs:
        return None
    keys = ("prefill_tokens_per_s", "decode_tokens_per_s")
    return {k: statistics.median(run[k] for run in runs) for k in keys} | {
        f"{k}_per_round": [run[k] for run in runs] for k in keys
    }


def decode_step_fit(models: list[dict], figures: dict, batch: int, backend: str) -> dict | None:
    """Least-squares split of one decode step's seconds into a cost per layer and a cost per weight.

    step seconds ~= layers x ``per_layer`` + parameters x ``per_param``: ``per_param`` is what reading
    (and multiplying by) the weights costs, ``per_layer`` what a layer costs beyond its weights (kernel
    launches, module calls, attention over the cache). Needs three models or more."""
    rows = [(m["source"].arch.num_layers, m["source"].arch.params,
             batch / figures[m["name"]][backend]["decode_tokens_per_s"]) for m in models]  # fmt: skip
    if len(rows) < 3:
        return None
    design = torch.tensor([[layers, params / 1e6] for layers, params, _ in rows], dtype=torch.float64)
    seconds = torch.tensor([step for _, _, step in rows], dtype=torch.float64)
    per_layer, per_mparam = torch.linalg.lstsq(design, seconds[:, None]).solution[:, 0].tolist()
    fitted = design @ torch.tensor([per_layer, per_mparam], dtype=torch.float64)
    return {
        "backend": backend, "ms_per_layer": per_layer * 1e3, "ms_per_100M_params": per_mparam * 1e5,
        "step_ms": {m["name"]: 1e3 * row[2] for m, row in zip(models, rows)},
        "fitted_step_ms": {m["name"]: 1e3 * float(f) for m, f in zip(models, fitted)},
    }  # fmt: skip


def use_cpu_clock() -> None:
    """Make minitron's timers (engine and transformers loops) read this process's CPU seconds, not wall seconds."""
    import time
    import types

    from minitron.eval import generation, throughput

    clock = types.SimpleNamespace(perf_counter=time.process_time)
    generation.time = throughput.time = clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="?", default="runs/demo_smollm2", help="a `minitron pipeline` output")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes to measure")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model and round (median)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all models (median)")
    parser.add_argument("--no-transformers", action="store_true", help="skip the transformers figure")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's); 1: steadier on a shared machine")  # fmt: skip
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: time with this process's CPU seconds (with --threads 1: what an idle core would "
                             "take; steady on a shared machine)")  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        use_cpu_clock()

    from minitron.models.checkpoint import open_model
    from minitron.parallel import setup_distributed

    run_dir = Path(args.run_dir)
    if not (run_dir / "pipeline.json").is_file():
        raise SystemExit(f"error: {run_dir / 'pipeline.json'} is missing; pass a `minitron pipeline` output directory")
    models = run_models(run_dir)
    for m in models:
        m["source"] = open_model(m["path"])
    ctx = setup_distributed(1, 1)
    dtype = torch.bfloat16 if ctx.device.type == "cuda" else torch.float32
    load_before = os.getloadavg()[0]

    settings = []
    for batch in args.batch:
        rounds = []
        for r in range(args.rounds):
            print(f"batch {batch}, round {r + 1}/{args.rounds} (load {os.getloadavg()[0]:.1f})", flush=True)
            rounds.append(measure_round(models, batch, args, dtype))
        figures = {m["name"]: {b: median_over_rounds(rounds, m["name"], b) for b in ("megatron", "transformers")}
                   for m in models}  # fmt: skip
        teacher = figures["teacher"]
        for name, fig in figures.items():
            for backend, rates in fig.items():
                if rates is None or teacher[backend] is None:
                    continue
                for phase in ("prefill", "decode"):
                    rates[f"{phase}_ratio_vs_teacher"] = (
                        rates[f"{phase}_tokens_per_s"] / teacher[backend][f"{phase}_tokens_per_s"]
                    )
        settings.append({"batch": batch, "models": figures,
                         "decode_step_fit": decode_step_fit(models, figures, batch, "megatron")})  # fmt: skip

    teacher_arch = describe(models[0]["source"])
    described = []
    for m in models:
        info = describe(m["source"])
        info |= {
            f"{k}_ratio": teacher_arch[k] / info[k] for k in ("params", "non_embedding_params", "layers")
        }  # teacher / model: the speed-up these would predict
        described.append({"name": m["name"], "path": str(m["path"]), "kind": m["source"].kind,
                          "stands_for": m["stands_for"], **info})  # fmt: skip

    header = ("batch", "model", "backend", "prefill tok/s", "ratio", "decode tok/s", "ratio")
    print("\n{:>5} {:<10} {:<13} {:>14} {:>6} {:>13} {:>6}".format(*header))
    for s in settings:
        for name, fig in s["models"].items():
            for backend, rates in fig.items():
                if rates is None:
                    continue
                ratios = [rates.get(f"{phase}_ratio_vs_teacher", float("nan")) for phase in ("prefill", "decode")]
                print(f"{s['batch']:>5} {name:<10} {backend:<13} {rates['prefill_tokens_per_s']:>14,.1f} "
                      f"{ratios[0]:>6.2f} {rates['decode_tokens_per_s']:>13,.1f} {ratios[1]:>6.2f}")  # fmt: skip

    result = {
        "command": " ".join(["python", "benchmarks/throughput.py", *sys.argv[1:]]),
        "run_dir": str(run_dir), "device": ctx.device.type, "dtype": str(dtype).replace("torch.", ""),
        "prompt_len": args.prompt_len, "output_len": args.output_len, "repeats": args.repeats,
        "rounds": args.rounds, "clock": args.clock, "threads": torch.get_num_threads(),
        "models": described, "settings": settings,
        "paper_anchor": PAPER,
        "why_ours_differ": __doc__.split("Why ours differ, ")[1].split("Writes ``")[0].strip(),
        "load_average_1min_before": load_before, "load_average_1min_after": os.getloadavg()[0],
        "machine": machine(),
    }  # fmt: skip
    write_result("throughput", result)


if __name__ == "__main__":
    main()
