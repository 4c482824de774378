"""Training throughput: minitron's Megatron-Core engine vs a plain PyTorch loop over the transformers model.

    python benchmarks/train.py                                  # CPU, fp32, SmolLM2-135M, batch 4 x 512
    python benchmarks/train.py --batch 2 --seq 256 --steps 2    # smaller, for a busy machine
    python benchmarks/train.py --device cuda --dtype bfloat16   # GPU: bf16 (Megatron: bf16 params + fp32 main
                                                                #  weights; plain loop: fp32 weights + autocast)
    python benchmarks/train.py --random-weights --model DIR     # DIR needs only config.json (same architecture)

Both sides train the same weights (the HF directory, default ``$MINITRON_HOME/models/smollm2-135m``) on the
same random token batch with Adam (lr 1e-5, betas 0.9/0.95, weight decay 0.1) and gradient clipping at 1.0.
After ``--warmup`` steps each, ``--rounds`` rounds alternate ``--steps`` steps of each side (so both see the
same machine load); tokens/s is the batch's tokens over the median step time. Also measured here: this
machine's dense matmul FLOP/s in the benchmark's dtype (the same-size GEMM, repeated), and from the model's
training FLOPs per token (6N + attention, see ModelArch.flops_per_token) the achieved FLOP/s and their ratio
to that matmul rate (MFU). Prints a table and writes ``benchmarks/results/train.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ADAM = dict(lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def default_model() -> Path:
    home = os.environ.get("MINITRON_HOME") or str(Path.home() / ".cache" / "minitron")
    return Path(home) / "models" / "smollm2-135m"


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_flops(device: str, dtype: torch.dtype, size: int, seconds: float = 3.0) -> float:
    """Dense ``size x size`` matmul FLOP/s of this machine in ``dtype`` (the best of repeated timings)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        synchronize(device)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


def random_weights(model_dir: Path) -> Path:
    """An HF directory with random weights (seed 0) of ``model_dir``'s architecture (only its config.json)."""
    import tempfile

    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=torch.float32)
    out = Path(tempfile.mkdtemp(prefix="minitron-bench-"))
    model.save_pretrained(out)
    return out


def make_batch(vocab_size: int, batch: int, seq: int) -> torch.Tensor:
    """``[batch, seq + 1]`` token ids: inputs are ``[:, :-1]``, next-token labels ``[:, 1:]``."""
    return torch.randint(0, vocab_size, (batch, seq + 1), generator=torch.Generator().manual_seed(0))


def plain_pytorch(model_dir: Path, tokens: torch.Tensor, device: str, dtype: torch.dtype):
    """A step function of the reference loop: transformers model, torch AdamW, clip_grad_norm_."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), **ADAM)
    inputs, labels = tokens[:, :-1].to(device), tokens[:, 1:].to(device)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return step


def minitron_engine(model_dir: Path, tokens: torch.Tensor, dtype: torch.dtype):
    """A step function of minitron's engine: GPTModel + DDP + Megatron optimizer + pipeline schedule."""
    from minitron.config.training import TrainSettings
    from minitron.models.checkpoint import load_model, open_model
    from minitron.parallel import setup_distributed
    from minitron.training.engine import build_training_parts
    from minitron.training.step import train_step

    batch, seq = tokens.shape[0], tokens.shape[1] - 1
    setup_distributed(1, 1)
    settings = TrainSettings(steps=1000, global_batch_size=batch, micro_batch_size=batch, seq_length=seq,
                             lr=ADAM["lr"], min_lr=ADAM["lr"], warmup_steps=0, decay_style="constant",
                             weight_decay=ADAM["weight_decay"], adam_beta1=ADAM["betas"][0],
                             adam_beta2=ADAM["betas"][1], adam_eps=ADAM["eps"], clip_grad=1.0)  # fmt: skip
    parts = build_training_parts(load_model(open_model(model_dir), 1, 1, dtype), settings)
    micro_batch = {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": torch.ones(batch, seq),
                   "position_ids": torch.arange(seq).expand(batch, seq)}  # fmt: skip

    def step() -> float:
        return train_step(parts, iter([micro_batch]), 1, seq, batch).loss

    return step


def timed(step, device: str, count: int) -> tuple[list[float], list[float]]:
    times, losses = [], []
    for _ in range(count):
        synchronize(device)
        start = time.perf_counter()
        losses.append(step())
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times, losses


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model(), help="HF directory of the model")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each side first")
    parser.add_argument("--steps", type=int, default=2, help="timed steps of each side per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds alternating the two sides")
    parser.add_argument("--random-weights", action="store_true", help="random weights of the model's architecture")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train.json")
    args = parser.parse_args(argv)
    dtype = DTYPES[args.dtype or ("bfloat16" if args.device == "cuda" else "float32")]
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU here")
    if not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json (fetch it with `minitron assets fetch`)")

    from minitron.models.arch import load_arch

    if args.random_weights:
        args.model = random_weights(args.model)
    arch = load_arch(args.model)
    peak = matmul_flops(args.device, dtype, 8192 if args.device == "cuda" else 2048)
    tokens = make_batch(arch.vocab_size, args.batch, args.seq)
    sides = {
        "pytorch": plain_pytorch(args.model, tokens, args.device, dtype),
        "minitron": minitron_engine(args.model, tokens, dtype),
    }
    first_loss = {name: timed(step, args.device, args.warmup)[1][0] for name, step in sides.items()}
    times = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, step in sides.items():
            times[name] += timed(step, args.device, args.steps)[0]

    tokens_per_step = args.batch * args.seq
    flops_per_token = arch.flops_per_token(args.seq)["train"]
    result = {
        "benchmark": "train",
        "model": str(args.model), "random_weights": args.random_weights,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).replace("torch.", ""),
        "batch": args.batch,
        "seq_length": args.seq,
        "timed_steps": len(times["minitron"]),
        "matmul_flops": peak,
        "train_flops_per_token": flops_per_token,
        "first_step_loss": first_loss,
    }
    for name, step_times in times.items():
        seconds = statistics.median(step_times)
        result[name] = {
            "step_seconds": seconds,
            "step_seconds_all": [round(t, 4) for t in step_times],
            "tokens_per_s": tokens_per_step / seconds,
            "flops": tokens_per_step / seconds * flops_per_token,
            "mfu": tokens_per_step / seconds * flops_per_token / peak,
        }
    result["ratio_minitron_vs_pytorch"] = result["minitron"]["tokens_per_s"] / result["pytorch"]["tokens_per_s"]
    result.update(versions_and_time())

    print(f"{arch.params / 1e6:.1f}M params, {args.batch} x {args.seq} tokens/step, {result['dtype']} on {args.device} "
          f"({result['threads']} threads); matmul peak {peak / 1e9:,.1f} GFLOP/s")  # fmt: skip
    print(f"{'':10} {'s/step':>8} {'tokens/s':>10} {'GFLOP/s':>9} {'MFU':>6} {'first loss':>11}")
    for name in sides:
        r = result[name]
        print(f"{name:10} {r['step_seconds']:8.3f} {r['tokens_per_s']:10,.1f} {r['flops'] / 1e9:9,.1f} "
              f"{r['mfu']:6.1%} {first_loss[name]:11.5f}")  # fmt: skip
    print(f"minitron / pytorch tokens/s: {result['ratio_minitron_vs_pytorch']:.3f} (goal >= 0.9)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions_and_time() -> dict:
    from minitron.runtime import versions

    return {"versions": versions(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


if __name__ == "__main__":
    main()
    from minitron.parallel import teardown_distributed

    teardown_distributed()
