"""Forward throughput: minitron (Megatron-Core engine) vs transformers on the same model and batch.

    python benchmarks/forward.py                                   # CPU, fp32, SmolLM2-135M, 4 x 512
    python benchmarks/forward.py --device cuda --dtype bfloat16 --batch 16 --seq 2048

Both engines compute full-vocabulary logits for the same random tokens; iterations alternate between
the engines (so background load hits both alike) and the median time per engine is reported. Writes
benchmarks/results/forward[-<device>].json with tokens/s of each and their ratio (goal >= 0.9).
Needs the demo teacher (`minitron assets fetch smollm2-135m`) unless --model is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, matmul_flops, median, timed, write_result  # noqa: E402


def random_weights(config_dir: Path, dtype: torch.dtype) -> Path:
    """Save a randomly initialised model of ``config_dir/config.json`` to a temporary directory."""
    import tempfile

    from transformers import AutoConfig, AutoModelForCausalLM

    out = Path(tempfile.mkdtemp(prefix="minitron-bench-"))
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir), dtype=dtype).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF model directory (default: the SmolLM2-135M asset)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--tag", help="results go to benchmarks/results/forward-<tag>.json")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    from minitron.assets import asset_path
    from minitron.models.checkpoint import load_model, open_model
    from minitron.parallel import setup_distributed, teardown_distributed

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model_dir = Path(args.model) if args.model else asset_path("smollm2-135m")
    if not any(model_dir.glob("*.safetensors")):  # a config alone: random weights of that architecture
        model_dir = random_weights(model_dir, dtype)
    setup_distributed(1, 1)
    source = open_model(model_dir)
    ours = load_model(source, 1, 1, dtype).eval()
    theirs = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    tokens = torch.randint(0, source.arch.vocab_size, (args.batch, args.seq), device=device)
    positions = torch.arange(args.seq, device=device).unsqueeze(0).expand(args.batch, -1)

    def run_ours():
        return ours(tokens, positions, None)

    def run_theirs():
        return theirs(tokens).logits

    times = {"minitron": [], "transformers": []}
    with torch.no_grad():
        diff = (run_ours().float() - run_theirs().float()).abs().max().item()  # also the warm-up
        for _ in range(args.iters):
            times["minitron"].append(timed(run_ours, device))
            times["transformers"].append(timed(run_theirs, device))
    tokens_per_step = args.batch * args.seq
    flops_per_token = source.arch.flops_per_token(args.seq)["forward"]
    peak = matmul_flops(device, dtype)
    result = {"model": str(model_dir), "device": args.device, "dtype": args.dtype, "batch": args.batch,
              "seq_length": args.seq, "iters": args.iters, "max_abs_logit_diff": diff,
              "matmul_peak_flops": peak, "machine": machine()}  # fmt: skip
    for engine, values in times.items():
        seconds = median(values)
        result[engine] = {
            "median_seconds": seconds,
            "tokens_per_second": tokens_per_step / seconds,
            "achieved_flops": flops_per_token * tokens_per_step / seconds,
            "fraction_of_matmul_peak": flops_per_token * tokens_per_step / seconds / peak,
            "all_seconds": values,
        }
    result["ratio_minitron_over_transformers"] = (
        result["minitron"]["tokens_per_second"] / result["transformers"]["tokens_per_second"]
    )
    write_result(f"forward-{args.tag}" if args.tag else "forward", result)
    teardown_distributed()


if __name__ == "__main__":
    main()
