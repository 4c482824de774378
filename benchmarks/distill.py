"""Distillation throughput: one distillation step vs a teacher forward plus a student training step, each alone.

    python benchmarks/distill.py                                 # CPU, fp32, SmolLM2-135M teacher and student, 4 x 512
    python benchmarks/distill.py --batch 2 --seq 256 --rounds 1  # smaller, for a busy machine
    python benchmarks/distill.py --student PRUNED_DIR            # a pruned student (same tokenizer)
    python benchmarks/distill.py --device cuda                   # GPU, bf16

A distillation step (minitron.distill: teacher forward without gradients, student forward/backward, KL on
the logits, one Adam update) does the work of a teacher forward and a student training step (the
language-model loss instead of the KL) done separately; the overhead ratio is its time over the sum of
theirs (goal <= 1.1: the teacher and the KL add nothing beyond their own cost). All three run on the same
random token batch with the same student (Adam lr 1e-5, clipping 1.0); the teacher is the HF directory
``--teacher`` (default ``$MINITRON_HOME/models/smollm2-135m``), the student ``--student`` (default: the
teacher's weights). After ``--warmup`` calls of each, ``--rounds`` rounds alternate ``--steps`` calls of
each (so all see the same machine load); times are medians. Writes ``benchmarks/results/distill.json``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import machine, time_alternating, write_result  # noqa: E402
from benchmarks.train import default_model, make_batch, versions_and_time  # noqa: E402


def build(teacher_dir: Path, student_dir: Path, batch: int, seq: int, dtype: torch.dtype):
    """The three timed functions (teacher forward, student step, distillation step) on one token batch."""
    from minitron.config.distill import DistillSettings
    from minitron.config.training import TrainSettings
    from minitron.distill.model import load_distillation
    from minitron.models.checkpoint import open_model
    from minitron.parallel import setup_distributed
    from minitron.training.engine import build_training_parts
    from minitron.training.step import train_step

    setup_distributed(1, 1)
    student, teacher = open_model(student_dir), open_model(teacher_dir)
    settings = TrainSettings(steps=1000, global_batch_size=batch, micro_batch_size=batch, seq_length=seq, lr=1e-5,
                             min_lr=1e-5, warmup_steps=0, decay_style="constant", clip_grad=1.0)  # fmt: skip
    distill = load_distillation(student, teacher, 1, 1, dtype, DistillSettings(), seed=0)
    parts = build_training_parts(distill.student, settings)
    device = next(distill.teacher.parameters()).device
    tokens = make_batch(student.arch.vocab_size, batch, seq)
    micro_batch = {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": torch.ones(batch, seq),
                   "position_ids": torch.arange(seq).expand(batch, seq)}  # fmt: skip
    functions = distill.step_functions()

    def teacher_forward() -> None:
        with torch.no_grad():
            distill.teacher(micro_batch["tokens"].to(device), micro_batch["position_ids"].to(device), None)

    def student_step() -> float:
        return train_step(parts, iter([micro_batch]), 1, seq, batch).loss

    def distill_step() -> float:
        return train_step(parts, iter([micro_batch]), 1, seq, batch, functions=functions).loss

    return {"teacher_forward": teacher_forward, "student_step": student_step, "distill_step": distill_step}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=default_model(), help="HF directory of the teacher")
    parser.add_argument("--student", type=Path, default=None, help="HF directory of the student (default: the teacher)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each first")
    parser.add_argument("--steps", type=int, default=1, help="timed calls of each per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds alternating the three")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU here")
    student_dir = args.student or args.teacher
    for name, path in (("--teacher", args.teacher), ("--student", student_dir)):
        if not (path / "config.json").is_file():
            parser.error(f"{name} {path}: no config.json (fetch the teacher with `minitron assets fetch smollm2-135m`)")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    device = torch.device(args.device)

    functions = build(args.teacher, student_dir, args.batch, args.seq, dtype)
    times = time_alternating(functions, device, args.warmup, args.rounds, args.steps)

    tokens = args.batch * args.seq
    median = {name: statistics.median(values) for name, values in times.items()}
    separate = median["teacher_forward"] + median["student_step"]
    result = {
        "benchmark": "distill",
        "teacher": str(args.teacher),
        "student": str(student_dir),
        "device": args.device,
        "dtype": str(dtype).replace("torch.", ""),
        "batch": args.batch,
        "seq_length": args.seq,
        "timed_calls": len(times["distill_step"]),
        "machine": machine(),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    for name, values in times.items():
        result[name] = {"seconds": median[name], "seconds_all": [round(t, 4) for t in values],
                        "tokens_per_s": tokens / median[name]}  # fmt: skip
    result["separate_seconds"] = separate
    result["separate_tokens_per_s"] = tokens / separate
    result["overhead_ratio"] = median["distill_step"] / separate
    result.update(versions_and_time())

    load = result["machine"].get("load_average_1min")
    print(f"{args.batch} x {args.seq} tokens, {result['dtype']} on {args.device}; 1-minute load average {load}")
    for name in ("teacher_forward", "student_step", "distill_step"):
        print(f"{name:16} {median[name]:8.3f} s {tokens / median[name]:10,.1f} tokens/s")
    print(f"{'teacher+student':16} {separate:8.3f} s {tokens / separate:10,.1f} tokens/s")
    print(f"distill / (teacher forward + student step): {result['overhead_ratio']:.3f} (goal <= 1.1)")
    write_result("distill", result)
    return result


if __name__ == "__main__":
    main()
    from minitron.parallel import teardown_distributed

    teardown_distributed()
