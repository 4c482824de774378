"""The ``minitron`` command: ``minitron <stage> key=value ...`` runs ``recipes/<stage>.py``.

Each stage is a Hydra recipe, so its arguments are config overrides (``model.path=DIR``,
``parallel.tp=2``, ``--cfg job`` to print the composed config). Run it under
``torchrun --nproc-per-node N $(which minitron) <stage> ...`` for TP/PP/DP > 1.
"""

from __future__ import annotations

import importlib
import sys

STAGES = {
    "info": "architecture, parameter counts and FLOPs per token of a model",
    "convert": "Hugging Face directory <-> Megatron checkpoint, at any TP/PP",
    "eval": "held-out loss and perplexity of a model on a text or jsonl file",
    "evaluate": "lm-eval tasks (MMLU, HellaSwag, Winogrande, ARC, GSM8K, ...) on the Megatron engine, offline",
    "generate": "generate text from a prompt with a KV cache (greedy or sampled; chat template when present)",
    "bench": "prefill and decode tokens/s with the KV cache, and the same through transformers",
    "importance": "importance of channels, neurons, heads and layers on calibration data (scores + plots)",
    "train": "train a model on a tokenized corpus (teacher correction: train=teacher_correction); resumes",
    "distill": "distill a teacher into a (pruned) student on a tokenized corpus (KL on logits); resumes",
    "data": "tokenize text/jsonl/parquet into a Megatron indexed dataset (`minitron data prepare ...`)",
    "prune": "importance + width/depth pruning to explicit targets; writes the student as an HF directory",
    "pipeline": "the whole recipe in one resumable command: importance, prune, distill, eval, export, report",
    "assets": "fetch the demo teacher, corpus and evaluation data (`minitron assets fetch`)",
}

USAGE = """usage: minitron <stage> [key=value ...]

Compress Llama-family LLMs with the Minitron recipe on Megatron-Core.

stages:
{stages}

Examples:
  minitron info model.path=~/models/SmolLM2-135M
  minitron convert model.path=HF_DIR output=CKPT_DIR
  torchrun --nproc-per-node 2 $(which minitron) eval model.path=CKPT_DIR data.path=heldout.jsonl parallel.tp=2

`minitron <stage> --help` shows a stage's config; `minitron <stage> --cfg job` prints it resolved."""

DATA_USAGE = """usage: minitron data prepare data.path=FILE_OR_DIR model.path=DIR output=PREFIX [data.workers=N]
                             [data.text_field=text] [overwrite=false]

Tokenize .txt/.jsonl/.parquet documents with DIR's tokenizer into PREFIX.bin/.idx/.json."""


def usage() -> str:
    width = max(map(len, STAGES))
    return USAGE.format(stages="\n".join(f"  {name:<{width}}  {text}" for name, text in STAGES.items()))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    stage, rest = argv[0], argv[1:]
    if stage in ("-V", "--version"):
        from minitron import __version__

        print(f"minitron {__version__}")
        return 0
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if stage == "assets":
        from minitron import assets

        return assets.main(rest)
    if stage == "data":
        if not rest or rest[0] != "prepare":
            if rest and rest[0] in ("-h", "--help", "help"):
                print(DATA_USAGE)
                return 0
            given = f"unknown data sub-command {rest[0]!r}" if rest else "missing data sub-command"
            print(f"error: {given}\n\n{DATA_USAGE}", file=sys.stderr)
            return 2
        stage, rest = "data_prepare", rest[1:]
    recipe = importlib.import_module(f"recipes.{stage}")
    sys.argv = [f"minitron-{stage}", *rest]
    recipe.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
