"""Every ``minitron`` command, declared once.

The CLI (``minitron --help``, dispatch, ``minitron <command> --help``), the pipeline's planner and
runner (which commands run under the launcher, which configs to validate before the first stage)
and the tests (every command has its recipe and its config) all read :data:`COMMANDS`. Adding a
command is one entry here, one recipe in ``recipes/`` (installed as ``minitron.recipes``), one config
in ``conf/`` with its dataclass schema, and, if the pipeline runs it, one planner function in
:mod:`minitron.pipeline.stages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Command:
    name: str  # what users type: `minitron NAME ...`
    help: str  # one line for `minitron --help`
    module: str  # the module whose main() runs it (a Hydra recipe in minitron.recipes, or a plain CLI)
    config: Optional[str] = None  # conf/<config>.yaml composed by Hydra (None: the module parses its own argv)
    parallel: bool = False  # runs on every rank under a launcher (torchrun) for TP/PP/DP > 1
    subcommand: Optional[str] = None  # the word that must follow the name (`minitron data prepare`)

    @property
    def usage(self) -> str:
        words = " ".join(w for w in ("minitron", self.name, self.subcommand) if w)
        return f"{words} key=value ..." if self.config else f"{words} ..."


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("info", "architecture, parameter counts and FLOPs per token of a model",
                "minitron.recipes.info", "info"),
        Command("convert", "Hugging Face directory <-> Megatron checkpoint, at any TP/PP",
                "minitron.recipes.convert", "convert", parallel=True),
        Command("eval", "held-out loss and perplexity of a model on a text, jsonl or parquet file",
                "minitron.recipes.eval", "eval", parallel=True),
        Command("data", "tokenize text/jsonl/parquet into a Megatron indexed dataset",
                "minitron.recipes.data_prepare", "data_prepare", subcommand="prepare"),
        Command("train", "train a model on a tokenized corpus (teacher correction: train=teacher_correction); resumes",
                "minitron.recipes.train", "train", parallel=True),
        Command("evaluate", "lm-eval tasks (MMLU, HellaSwag, Winogrande, ARC, GSM8K, ...) on the Megatron engine, offline",
                "minitron.recipes.evaluate", "evaluate", parallel=True),
        Command("generate", "generate text from a prompt with a KV cache (greedy or sampled; chat template when present)",
                "minitron.recipes.generate", "generate", parallel=True),
        Command("bench", "prefill and decode tokens/s with the KV cache, and the same through transformers",
                "minitron.recipes.bench", "bench", parallel=True),
        Command("importance", "importance of channels, neurons, heads and layers on calibration data (scores + plots)",
                "minitron.recipes.importance", "importance", parallel=True),
        Command("prune", "importance + width/depth pruning to explicit targets; writes the student as an HF directory",
                "minitron.recipes.prune", "prune", parallel=True),
        Command("distill", "distill a teacher into a (pruned) student on a tokenized corpus (KL on logits); resumes",
                "minitron.recipes.distill", "distill", parallel=True),
        Command("sft", "supervised fine-tuning on chat data (answer tokens only; packed or padded); resumes",
                "minitron.recipes.sft", "sft", parallel=True),
        Command("dpo", "preference optimisation (DPO, IPO, RPO) against a frozen reference, in rounds; resumes",
                "minitron.recipes.dpo", "dpo", parallel=True),
        Command("rewards", "held-out preference accuracy: implicit rewards of an aligned policy vs its reference",
                "minitron.recipes.rewards", "rewards", parallel=True),
        Command("plan", "per-rank memory (weights, grads, optimizer, activations, logits, teacher) and step time of a layout",
                "minitron.recipes.plan", "plan"),
        Command("pipeline", "the whole recipe in one resumable command: importance, prune, distill, eval, export, report",
                "minitron.recipes.pipeline", "pipeline"),
        Command("assets", "fetch the demo teacher, corpus and evaluation data (`minitron assets fetch`)",
                "minitron.assets"),
    )
}  # fmt: skip


def get(name: str) -> Command:
    """The command called ``name``; KeyError if there is none."""
    return COMMANDS[name]
