"""torchrun worker: minitron logits and held-out loss vs transformers, at the layout given by --tp/--pp.

    torchrun --nproc-per-node 2 tests/workers/parity.py --tp 2 --pp 1 --out RESULT.json DIR [DIR ...]

For each HF directory: build this rank's shard from the HF weights, compute full-vocabulary logits
of a fixed batch and the held-out loss of fixed windows, compare with transformers (fp32), and write
``{dir: {"max_abs_logit_diff", "loss", "reference_loss", "params"}}`` from global rank 0.
"""

import argparse
import json

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("dirs", nargs="+")
    args = parser.parse_args()

    from megatron.core import parallel_state
    from transformers import AutoModelForCausalLM

    from minitron.eval.forward import full_logits
    from minitron.eval.heldout import hf_heldout_loss, megatron_heldout_loss
    from minitron.models.checkpoint import load_model, open_model
    from minitron.parallel import setup_distributed, teardown_distributed

    setup_distributed(args.tp, args.pp)
    results = {}
    tokens = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    windows = torch.randint(0, 256, (6, 32), generator=torch.Generator().manual_seed(2))
    for model_dir in args.dirs:
        source = open_model(model_dir)
        model = load_model(source, args.tp, args.pp, torch.float32).eval()
        logits = full_logits(model, tokens)
        loss = megatron_heldout_loss(model, windows, micro_batch_size=4, progress=False)
        # count each parameter once: TP shards on every rank, replicated ones (norms) on TP rank 0,
        # and not the last stage's copy of a tied embedding
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        local_params = sum(
            p.numel() for n, p in model.named_parameters()
            if not (n == "output_layer.weight" and source.arch.tie_word_embeddings)
            and (getattr(p, "tensor_model_parallel", False) or tp_rank == 0)
        )
        counts = torch.tensor([local_params], dtype=torch.int64)
        torch.distributed.all_reduce(counts)
        diff = torch.tensor([-1.0])
        if logits is not None:
            reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(tokens).logits
            diff[0] = (logits - reference).abs().max()
        torch.distributed.all_reduce(diff, op=torch.distributed.ReduceOp.MAX)
        results[model_dir] = {
            "max_abs_logit_diff": float(diff),
            "loss": loss["loss"],
            "reference_loss": hf_heldout_loss(model_dir, windows)["loss"],
            "params": int(counts),
            "arch_params": source.arch.params,
        }
    if torch.distributed.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    teardown_distributed()


if __name__ == "__main__":
    main()
