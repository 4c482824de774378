"""DPO throughput: one DPO step vs a reference forward plus a policy training step on the same sequences, each alone.

    minitron data prepare data.format=preference data.path=$MINITRON_HOME/align/preference_train.jsonl \
        model.path=$MINITRON_HOME/models/smollm2-135m output=PAIRS data.seq_length=256
    python benchmarks/dpo.py --data PAIRS                                # CPU, fp32, SmolLM2-135M, 4 pairs x 256
    python benchmarks/dpo.py --data PAIRS --batch 2 --rounds 2           # smaller, for a busy machine
    python benchmarks/dpo.py --data PAIRS --device cuda                  # GPU, bf16

A DPO step (what ``minitron dpo`` runs: :func:`minitron.align.preference.load_preference`'s step functions
through :func:`minitron.training.step.train_step`: reference forward without gradients on the chosen and
rejected sequences, policy forward/backward on both, per-sequence log-probs of both models, the DPO loss, one
Adam update) does the work of a reference forward on the ``2 x batch`` sequences and a policy training step on
them (the language-model loss on the answer tokens instead of the DPO loss) done separately; the overhead
ratio is its time over the sum of theirs (goal <= 1.05: pairing, the log-probs and the loss add nothing beyond
the two models' own cost). All three run on the first ``--batch`` pairs of ``--data`` (a prepared preference
dataset, ``--seq`` its data.seq_length) with the same policy (Adam lr 1e-5, clipping 1.0); policy and
reference are the HF directory ``--model`` (default ``$MINITRON_HOME/models/smollm2-135m``). After
``--warmup`` calls of each, ``--rounds`` rounds alternate ``--steps`` calls of each (so all see the same
machine load); times are medians. Writes ``benchmarks/results/dpo.json``.
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

from benchmarks.common import machine, time_alternating, write_result
from benchmarks.train import default_model, versions_and_time


def build(model_dir: Path, data: Path, pairs: int, seq: int, dtype: torch.dtype):
    """The three timed functions (reference forward, policy step, DPO step) on ``pairs`` pairs of ``data``."""
    from torch.utils.data import default_collate

    from minitron.align.data import PreferenceDataset
    from minitron.align.preference import load_preference
    from minitron.config.align import AlignSettings
    from minitron.config.training import TrainSettings
    from minitron.models.checkpoint import open_model
    from minitron.parallel import setup_distributed
    from minitron.training.engine import build_training_parts
    from minitron.training.step import train_step

    setup_distributed(1, 1)
    source = open_model(model_dir)
    settings = TrainSettings(steps=1000, global_batch_size=pairs, micro_batch_size=pairs, seq_length=seq, lr=1e-5,
                             min_lr=1e-5, warmup_steps=0, decay_style="constant", clip_grad=1.0)  # fmt: skip
    model = load_preference(source, source, 1, 1, dtype, AlignSettings(), seed=0)
    parts = build_training_parts(model.policy, settings)
    reference = model.teacher  # the frozen reference shard
    device = next(reference.parameters()).device
    dataset = PreferenceDataset(str(data), seq)
    pair_batch = default_collate([dataset[i] for i in range(pairs)])  # [m, 2, s] (chosen, rejected) + rewards [m, 2]
    rows = {key: value.flatten(0, 1) for key, value in pair_batch.items() if key != "rewards"}  # [2m, s]
    functions = model.step_functions()

    def reference_forward() -> None:
        with torch.no_grad():
            reference(rows["tokens"].to(device), rows["position_ids"].to(device), None)

    def policy_step() -> float:
        return train_step(parts, iter([rows]), 1, seq, 2 * pairs).loss

    def dpo_step() -> float:
        return train_step(parts, iter([pair_batch]), 1, seq, pairs, functions=functions).loss

    answer_tokens = int(rows["loss_mask"].sum())
    return {"reference_forward": reference_forward, "policy_step": policy_step, "dpo_step": dpo_step}, answer_tokens


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model(), help="HF directory of policy and reference")
    parser.add_argument("--data", type=Path, required=True, help="prefix of a prepared preference dataset")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=4, help="pairs per step")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence (the data's data.seq_length or more)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each first")
    parser.add_argument("--steps", type=int, default=1, help="timed calls of each per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds alternating the three")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU here")
    if not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json (fetch it with `minitron assets fetch smollm2-135m`)")
    if not Path(f"{args.data}.json").is_file():
        parser.error(f"--data {args.data}: no {args.data}.json (prepare pairs with `minitron data prepare "
                     "data.format=preference ...`, see above)")  # fmt: skip
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    device = torch.device(args.device)

    functions, answer_tokens = build(args.model, args.data, args.batch, args.seq, dtype)
    times = time_alternating(functions, device, args.warmup, args.rounds, args.steps)

    tokens = 2 * args.batch * args.seq  # chosen and rejected sequences, padded to --seq
    median = {name: statistics.median(values) for name, values in times.items()}
    separate = median["reference_forward"] + median["policy_step"]
    result = {
        "benchmark": "dpo",
        "model": str(args.model),
        "data": str(args.data),
        "device": args.device,
        "dtype": str(dtype).replace("torch.", ""),
        "pairs": args.batch,
        "seq_length": args.seq,
        "sequences_per_step": 2 * args.batch,
        "answer_tokens_per_step": answer_tokens,
        "timed_calls": len(times["dpo_step"]),
        "machine": machine(),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    for name, values in times.items():
        result[name] = {"seconds": median[name], "seconds_all": [round(t, 4) for t in values],
                        "tokens_per_s": tokens / median[name]}  # fmt: skip
    result["separate_seconds"] = separate
    result["separate_tokens_per_s"] = tokens / separate
    result["overhead_ratio"] = median["dpo_step"] / separate
    result.update(versions_and_time())

    load = result["machine"].get("load_average_1min")
    print(f"{args.batch} pairs x 2 x {args.seq} tokens, {result['dtype']} on {args.device}; "
          f"1-minute load average {load}")  # fmt: skip
    for name in ("reference_forward", "policy_step", "dpo_step"):
        print(f"{name:17} {median[name]:8.3f} s {tokens / median[name]:10,.1f} tokens/s")
    print(f"{'reference+policy':17} {separate:8.3f} s {tokens / separate:10,.1f} tokens/s")
    print(f"dpo / (reference forward + policy step): {result['overhead_ratio']:.3f} (goal <= 1.05)")
    write_result("dpo", result)
    return result


if __name__ == "__main__":
    main()
    from minitron.parallel import teardown_distributed

    teardown_distributed()
