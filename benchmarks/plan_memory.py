"""``minitron plan``'s per-rank memory against the peak memory the engine actually uses, on CPU.

    python benchmarks/plan_memory.py                              # the default cases, SmolLM2-135M, 2 x 512 tokens
    python benchmarks/plan_memory.py --seq 256 --cases train-tp1  # fewer, smaller
    python benchmarks/plan_memory.py --glibc-default              # without the allocator settings below (see why)

Each case (a stage and a TP x PP x DP layout, :data:`CASES`) runs as its own world: ``torchrun --nproc-per-node
TP*PP*DP benchmarks/plan_memory.py --worker ...`` (gloo, fp32, the venv's torchrun, one case at a time; the default
cases have at most two processes). Every rank

  1. imports torch, Megatron-Core and minitron (everything the build imports), starts the world
     (:func:`minitron.parallel.setup_distributed`) and records its resident set (``VmRSS``): the baseline;
  2. builds what the command builds -- ``train``: the policy shard (:func:`minitron.models.checkpoint.load_model`
     of ``--model``, default ``$MINITRON_HOME/models/smollm2-135m``) with Megatron DDP, optimizer and schedule
     (:func:`minitron.training.engine.build_training_parts`); ``distill``: teacher and student as ``minitron
     distill`` does (:func:`minitron.distill.model.load_distillation`, teacher = student = the same model) --
     with the scale settings ``minitron train`` resolves on this machine (all off on CPU);
  3. runs one training step (:func:`minitron.training.step.train_step`; Adam's state now exists), then
     ``gc.collect()`` and glibc's ``malloc_trim(0)`` to drop the load-time transients, records ``VmRSS`` (the
     "static" memory: weights, gradient buffer, optimizer state), and resets the peak (``VmHWM``) by writing 5 to
     ``/proc/self/clear_refs``;
  4. runs ``--steps`` more steps on random token batches of the layout's micro-batch size and sequence length;
     measured = ``VmHWM`` - baseline.

Rank 0 gathers every rank's figures and compares the largest (the plan describes the fullest rank) with
:func:`minitron.plan.memory.plan_memory` of the same :class:`~minitron.plan.memory.Layout` (float32, Megatron's
local spec: ``fused=False``; sequence parallelism off as on CPU; the same micro/global batch, sequence length and
distributed optimizer; ``teacher=`` the teacher's architecture for distillation). The goal (issue 13): the
ratio measured / plan within 1 +- 0.2 for every case. Each rank is also set beside the plan of its own pipeline
stage (:func:`minitron.plan.memory.stage_memory`), split in "static" (after a step) against the plan's weights +
gradients + optimizer (+ the teacher's weights) and "dynamic" (peak - static) against activations + logits/loss
(+ the teacher's working set), to show which part a difference comes from.

Why the allocator settings: torch's CPU allocator is glibc ``malloc``. By default glibc raises its mmap threshold
to the size of each large block freed (up to 32 MiB), after which tensors of up to 32 MiB come from the heap, and
what the heap frees stays resident when it is fragmented: ``VmHWM`` then counts memory that no live tensor holds
(the activations freed by one backward pass are not reused exactly by the next forward). The workers therefore
run with ``MALLOC_MMAP_THRESHOLD_=1048576`` (a fixed threshold: every block of 1 MiB or more -- every activation,
gradient and weight tensor here -- is its own mapping, unmapped when freed, so the resident set follows the live
tensors), ``MALLOC_TRIM_THRESHOLD_=4194304`` and ``MALLOC_ARENA_MAX=2`` (few per-thread heaps). These change
where memory comes from, not what is allocated; ``--glibc-default`` measures without them (and writes
``plan_memory_glibc_default.json``). Measured so on this 2-core machine (2 x 512 tokens): train-tp1 peaks at 4.60 GiB
instead of 4.00 (ratio 1.17) and train-pp2's first stage at 3.45 GiB instead of 2.89 (1.25), the "static" part
unchanged: the difference is heap memory that a step's backward pass freed and glibc kept.

SmolLM2-135M has 9 attention heads in 3 query groups, so TP=2 cannot split it (``check_parallel_layout``); its
smallest tensor-parallel layout is TP=3 (the ``*-tp3`` cases: three processes, not in the default list and not in
the committed results).

Prints a table and writes ``benchmarks/results/plan_memory.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GIB = 1 << 30
TOLERANCE = 0.20
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "4194304", "MALLOC_ARENA_MAX": "2"}


@dataclasses.dataclass(frozen=True)
class Case:
    stage: str  # train | distill
    tp: int = 1
    pp: int = 1
    dp: int = 1
    micro_batches: int = 1  # per optimizer step on each DP rank (global batch = micro x DP x this)
    distributed_optimizer: bool = False

    @property
    def processes(self) -> int:
        return self.tp * self.pp * self.dp


CASES = {
    "train-tp1": Case("train"),
    "train-pp2": Case("train", pp=2, micro_batches=2),
    "train-dp2-distopt": Case("train", dp=2, micro_batches=2, distributed_optimizer=True),
    "distill-tp1": Case("distill"),
    "distill-pp2": Case("distill", pp=2, micro_batches=2),
    "train-tp3": Case("train", tp=3),  # three processes: not run by default
    "distill-tp3": Case("distill", tp=3),
}
DEFAULT_CASES = ("train-tp1", "train-pp2", "train-dp2-distopt", "distill-tp1", "distill-pp2")


def proc_status() -> dict:
    """``VmRSS`` and ``VmHWM`` of this process, in bytes."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0]) * 1024
    return values


def layout_of(case: Case, micro_batch_size: int, seq_length: int):
    from minitron.plan.memory import Layout

    return Layout(tp=case.tp, pp=case.pp, dp=case.dp, micro_batch_size=micro_batch_size,
                  global_batch_size=micro_batch_size * case.dp * case.micro_batches, seq_length=seq_length,
                  dtype="float32", sequence_parallel=False, recompute="none",
                  distributed_optimizer=case.distributed_optimizer, fused=False)  # fmt: skip


# ---- one rank of a case (under torchrun) ----------------------------------------------------------------------


def worker(args) -> None:
    import ctypes
    import gc
    import importlib

    import torch
    from megatron.core import parallel_state

    from benchmarks.train import make_batch
    from minitron.config.distill import DistillSettings
    from minitron.config.scale import ScaleSettings
    from minitron.config.training import TrainSettings
    from minitron.distill.model import load_distillation
    from minitron.models.checkpoint import load_model, open_model
    from minitron.parallel import setup_distributed, teardown_distributed
    from minitron.parallel.scale import resolve_scale
    from minitron.training.engine import build_training_parts
    from minitron.training.step import train_step

    for module in ("megatron.core.distributed", "megatron.core.models.gpt", "megatron.core.optimizer",
                   "megatron.core.pipeline_parallel"):  # fmt: skip
        importlib.import_module(module)  # everything the build imports, before the baseline
    case = CASES[args.case]
    ctx = setup_distributed(case.tp, case.pp)
    torch.distributed.barrier()
    gc.collect()
    baseline = proc_status()["VmRSS"]

    source = open_model(args.model)
    micro, seq = args.micro_batch_size, args.seq
    settings = TrainSettings(steps=1000, global_batch_size=micro * ctx.dp * case.micro_batches,
                             micro_batch_size=micro, seq_length=seq, lr=1e-5, min_lr=1e-5, warmup_steps=0,
                             decay_style="constant", clip_grad=1.0,
                             distributed_optimizer=case.distributed_optimizer)  # fmt: skip
    scale = resolve_scale(ScaleSettings(), case.tp, case.pp, ctx.dp, case.distributed_optimizer,
                          source.arch.num_layers)  # fmt: skip
    functions = None
    if case.stage == "distill":
        distill = load_distillation(source, source, case.tp, case.pp, torch.float32, DistillSettings(), 0, scale)
        parts = build_training_parts(distill.student, settings, scale)
        functions = distill.step_functions()
    else:
        parts = build_training_parts(load_model(source, case.tp, case.pp, torch.float32, scale), settings, scale)
    built = proc_status()["VmRSS"]

    tokens = make_batch(source.arch.vocab_size, micro * case.micro_batches, seq)
    batches = [{"tokens": rows[:, :-1], "labels": rows[:, 1:], "loss_mask": torch.ones(micro, seq),
                "position_ids": torch.arange(seq).expand(micro, seq)} for rows in tokens.split(micro)]  # fmt: skip

    def step() -> float:
        return train_step(parts, iter(batches), case.micro_batches, seq, micro, functions).loss

    start = time.perf_counter()
    losses = [step()]
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    static = proc_status()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS
    losses += [step() for _ in range(args.steps)]
    peak = proc_status()["VmHWM"]
    seconds = time.perf_counter() - start

    mine = {"rank": ctx.rank, "tp_rank": parallel_state.get_tensor_model_parallel_rank(),
            "pp_rank": parallel_state.get_pipeline_model_parallel_rank(),
            "dp_rank": parallel_state.get_data_parallel_rank(), "baseline": baseline, "built": built - baseline,
            "static": static - baseline, "measured": peak - baseline, "dynamic": peak - static}  # fmt: skip
    ranks = [None] * ctx.world_size
    torch.distributed.all_gather_object(ranks, mine)
    if ctx.rank == 0:
        result = {"ranks": ranks, "losses": losses, "seconds": seconds, "threads": torch.get_num_threads()}
        Path(args.result_file).write_text(json.dumps(result))
    teardown_distributed()


# ---- the driver ---------------------------------------------------------------------------------------------------


def run_case(name: str, args) -> dict:
    """Launch one case's world; returns rank 0's gathered figures."""
    from minitron.parallel.setup import free_port

    case = CASES[name]
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, **({} if args.glibc_default else MALLOC_ENV)}
    with tempfile.TemporaryDirectory(prefix="minitron-plan-memory-") as tmp:
        result_file = Path(tmp) / "result.json"
        command = [str(torchrun), "--nproc-per-node", str(case.processes), "--master-addr", "127.0.0.1",
                   "--master-port", str(free_port()), str(Path(__file__).resolve()), "--worker", "--case", name,
                   "--model", str(args.model), "--micro-batch-size", str(args.micro_batch_size), "--seq",
                   str(args.seq), "--steps", str(args.steps), "--result-file", str(result_file)]  # fmt: skip
        done = subprocess.run(command, check=False, env=env, cwd=REPO, capture_output=True, text=True)
        if done.returncode or not result_file.is_file():
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
            raise SystemExit(f"{name}: the workers failed (exit status {done.returncode})")
        return json.loads(result_file.read_text())


def compare(name: str, gathered: dict, arch, args) -> dict:
    """The case's plan beside its measured figures; each rank also beside the plan of its own pipeline stage."""
    from minitron.plan.memory import DTYPE_BYTES, plan_memory, stage_memory, stage_params

    case = CASES[name]
    layout = layout_of(case, args.micro_batch_size, args.seq)
    teacher = arch if case.stage == "distill" else None
    plan = plan_memory(arch, layout, teacher)
    ranks = sorted(gathered["ranks"], key=lambda r: r["rank"])
    for rank in ranks:
        own = stage_memory(arch, layout, rank["pp_rank"], teacher)
        parts = own["parts"]
        static = parts["weights"] + parts["gradients"] + parts["optimizer"]
        if teacher is not None:  # the teacher's weights stay, its one layer's working set comes and goes
            static += stage_params(teacher, layout.tp, layout.pp, rank["pp_rank"]) * DTYPE_BYTES[layout.dtype]
        rank.update(stage_plan=own["total"], stage_plan_static=static, stage_plan_dynamic=own["total"] - static,
                    ratio_to_stage_plan=rank["measured"] / own["total"])  # fmt: skip
    fullest = max(ranks, key=lambda r: r["measured"])
    ratio = fullest["measured"] / plan["total"]
    return {"case": name, "stage": case.stage, "processes": case.processes, "layout": dataclasses.asdict(layout),
            "plan": plan, "ranks": ranks, "measured_max": fullest["measured"], "fullest_rank": fullest["rank"],
            "ratio": ratio, "within_tolerance": abs(ratio - 1) <= TOLERANCE, "losses": gathered["losses"],
            "seconds": gathered["seconds"], "threads_per_process": gathered["threads"]}  # fmt: skip


def gib(n: float) -> str:
    return f"{n / GIB:6.2f}"


def main(argv=None) -> dict:
    from benchmarks.common import machine, write_result
    from benchmarks.train import default_model, versions_and_time

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model(), help="HF directory (teacher = student)")
    parser.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(DEFAULT_CASES))
    parser.add_argument("--micro-batch-size", type=int, default=2, help="sequences per micro-batch")
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--steps", type=int, default=3, help="measured steps after the first")
    parser.add_argument("--glibc-default", action="store_true", help="glibc malloc's default settings (see above)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=tuple(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json (fetch it with `minitron assets fetch smollm2-135m`)")

    from minitron.models.checkpoint import open_model
    from minitron.models.megatron_gpt import check_parallel_layout

    arch = open_model(args.model).arch
    for name in args.cases:
        check_parallel_layout(arch, CASES[name].tp, CASES[name].pp)
    cases = []
    for name in args.cases:
        started = time.perf_counter()
        cases.append(compare(name, run_case(name, args), arch, args))
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)

    result = {"benchmark": "plan_memory", "model": str(args.model), "dtype": "float32",
              "micro_batch_size": args.micro_batch_size, "seq_length": args.seq, "measured_steps": args.steps,
              "malloc_env": {} if args.glibc_default else MALLOC_ENV, "tolerance": TOLERANCE,
              "all_within_tolerance": all(c["within_tolerance"] for c in cases), "cases": cases,
              "machine": machine()}  # fmt: skip
    result.update(versions_and_time())

    print(f"\n{arch.params / 1e6:.1f}M params, micro-batch {args.micro_batch_size} x {args.seq} tokens, float32 "
          "on CPU, GiB per rank")  # fmt: skip
    print(f"{'case':18} {'plan':>6} {'measured per rank':>17} {'ratio':>6}   per rank, measured/plan of its stage: "
          "static (after a step) + dynamic (peak - static)")  # fmt: skip
    for c in cases:
        measured = " ".join(gib(r["measured"]) for r in c["ranks"])
        pieces = "   ".join(f"{r['static'] / GIB:.2f}/{r['stage_plan_static'] / GIB:.2f} + {r['dynamic'] / GIB:.2f}/"
                            f"{r['stage_plan_dynamic'] / GIB:.2f}" for r in c["ranks"])  # fmt: skip
        flag = "" if c["within_tolerance"] else "  OUT"
        print(f"{c['case']:18} {gib(c['plan']['total'])} {measured:>17} {c['ratio']:6.3f}   {pieces}{flag}")
    for c in cases:
        parts = ", ".join(f"{k} {v / GIB:.3f}" for k, v in c["plan"]["parts"].items())
        print(f"  plan of {c['case']} (pipeline stage {c['plan']['pipeline_stage']}): {parts}")
    print(f"all within {TOLERANCE:.0%}: {result['all_within_tolerance']}")
    write_result("plan_memory" if not args.glibc_default else "plan_memory_glibc_default", result)
    return result


if __name__ == "__main__":
    main()
