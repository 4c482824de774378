"""Schemas of ``minitron evaluate`` (lm-eval tasks), ``minitron generate`` and ``minitron bench``.

``conf/evaluate.yaml`` composes :class:`EvaluateCommand`, ``conf/generate.yaml`` :class:`GenerateCommand`,
``conf/bench.yaml`` :class:`BenchCommand`. Checks that need only the config run here; those that need the
model, the tokenizer or the benchmark files run in :mod:`minitron.eval.harness` before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from minitron.config.common import ModelConfig, ParallelConfig, check_range
from minitron.errors import MinitronError

BACKENDS = ("megatron", "hf")


@dataclass
class EvaluateSettings:
    tasks: List[str] = field(
        default_factory=lambda: ["mmlu", "winogrande", "hellaswag", "arc_challenge"]
    )  # lm-eval tasks (minitron.eval.lm_tasks.TASKS)
    num_fewshot: Optional[int] = None  # shots for every task; null: each task's default (MMLU 5 from dev, the others 0)
    fewshot: Dict[str, int] = field(
        default_factory=dict
    )  # shots per task, over num_fewshot (command line: +eval.fewshot.winogrande=5)
    limit: Optional[int] = (
        None  # score only the first N documents of each lm-eval task (MMLU: of each subject); null: all
    )
    limits: Dict[str, int] = field(
        default_factory=dict
    )  # limit per task, over limit (command line: +eval.limits.hellaswag=200)
    backend: str = "megatron"  # megatron: minitron's engine at parallel.tp/pp (any DP) | hf: lm-eval's own HFLM (HF dir, one process)
    batch_size: int = 8  # inputs per forward pass
    max_gen_toks: int = 256  # cap on generated tokens of generation tasks that set none (GSM8K), both backends
    allow_truncation: bool = (
        False  # left-truncate prompts longer than the model's context (as lm-eval's hf) and count them; false: refuse
    )
    data_dir: Optional[str] = (
        None  # benchmark files in the benchmarks asset's layout; null: the asset (minitron assets fetch benchmarks)
    )
    seed: int = 1234  # lm-eval's few-shot sampling seed (and its numpy/torch seeds)
    log_samples: bool = True  # write lm-eval's per-sample log (samples_<task>.jsonl)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise MinitronError(f"eval.backend={self.backend!r}: use one of {', '.join(BACKENDS)}")
        for name, value in (("batch_size", self.batch_size), ("max_gen_toks", self.max_gen_toks)):
            if value < 1:
                raise MinitronError(f"eval.{name}={value}: must be >= 1")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise MinitronError(f"eval.num_fewshot={self.num_fewshot}: must be >= 0 or null")
        if self.limit is not None and self.limit < 1:
            raise MinitronError(f"eval.limit={self.limit}: must be >= 1 or null")
        for group in ("fewshot", "limits"):
            for task in getattr(self, group):
                if task not in self.tasks:
                    raise MinitronError(f"eval.{group}.{task}: {task} is not in eval.tasks={list(self.tasks)}")
        check_range("eval.seed", self.seed, at_least=0)
        if any(n < 0 for n in self.fewshot.values()) or any(n < 1 for n in self.limits.values()):
            raise MinitronError("eval.fewshot values must be >= 0 and eval.limits values >= 1")

    def shots(self, task: str, default: int) -> int:
        """Shots of ``task``: eval.fewshot, else eval.num_fewshot, else the task's ``default``."""
        if task in self.fewshot:
            return self.fewshot[task]
        return default if self.num_fewshot is None else self.num_fewshot

    def limit_of(self, task: str) -> Optional[int]:
        return self.limits.get(task, self.limit)


@dataclass
class EvaluateCommand:
    model: ModelConfig = field(default_factory=ModelConfig)  # the model evaluated (HF directory or minitron checkpoint)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # TP x PP of the megatron backend; DP = processes / (TP x PP)
    eval: EvaluateSettings = field(default_factory=EvaluateSettings)  # tasks, shots, limits, backend
    output: str = MISSING  # directory to write: results.json, results.md, samples_<task>.jsonl
    overwrite: bool = False  # replace an existing output directory


@dataclass
class GenerateSettings:
    max_new_tokens: int = 64  # tokens generated after the prompt (fewer when EOS comes first)
    do_sample: bool = False  # false: greedy; true: sample with temperature / top_k / top_p
    temperature: float = 1.0  # divides the logits before sampling
    top_k: int = 0  # sample among the k likeliest tokens (0: all)
    top_p: float = 1.0  # sample among the smallest set of tokens holding probability p (1: all)
    seed: int = 1234  # seed of the sampler
    chat: Optional[bool] = None  # wrap the prompt in the tokenizer's chat template; null: when it has one

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise MinitronError(f"generate.max_new_tokens={self.max_new_tokens}: must be >= 1")
        check_range("generate.temperature", self.temperature, above=0)
        check_range("generate.top_k", self.top_k, at_least=0, fix="0 keeps every token")
        check_range("generate.top_p", self.top_p, above=0, at_most=1)
        check_range("generate.seed", self.seed, at_least=0)


@dataclass
class GenerateCommand:
    model: ModelConfig = field(default_factory=ModelConfig)  # the model (HF directory or minitron checkpoint)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # TP x PP (every process runs the same generation)
    prompt: Optional[str] = None  # the prompt text, e.g. 'prompt="What is the capital of France?"'
    prompts: List[str] = field(default_factory=list)  # several prompts, answered in turn by one loaded model
    generate: GenerateSettings = field(default_factory=GenerateSettings)  # length and sampling
    output: Optional[str] = None  # also write the result JSON here, atomically

    def __post_init__(self):
        if self.prompt is None and not self.prompts:
            raise MinitronError('prompt is required: pass prompt=... (e.g. prompt="Hi"), or prompts=[...] for several')
        if self.prompt is not None and self.prompts:
            raise MinitronError("prompt and prompts are both set: give one prompt= or a list prompts=[...]")

    @property
    def all_prompts(self) -> list[str]:
        return [self.prompt] if self.prompt is not None else list(self.prompts)


@dataclass
class BenchSettings:
    batch: int = 1  # sequences generated together
    prompt_len: int = 128  # prompt tokens per sequence (random token ids)
    output_len: int = 128  # tokens generated per sequence
    repeats: int = 3  # timed runs after one warm-up; the figures are medians
    reference: bool = True  # also time transformers' generate on the same prompts (HF directories only)

    def __post_init__(self):
        for name in ("batch", "prompt_len", "output_len", "repeats"):
            if getattr(self, name) < 1:
                raise MinitronError(f"bench.{name}={getattr(self, name)}: must be >= 1")


@dataclass
class BenchCommand:
    model: ModelConfig = field(default_factory=ModelConfig)  # the model timed (HF directory or minitron checkpoint)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # TP x PP of the Megatron engine
    bench: BenchSettings = field(default_factory=BenchSettings)  # batch, lengths, repeats
    output: Optional[str] = None  # also write the result (the last stdout line) to this JSON file, atomically


def register() -> None:
    """Register the schemas with Hydra's ConfigStore (called by ``schema.register``)."""
    store = ConfigStore.instance()
    store.store(name="evaluate_schema", node=EvaluateCommand)
    store.store(name="generate_schema", node=GenerateCommand)
    store.store(name="bench_schema", node=BenchCommand)
