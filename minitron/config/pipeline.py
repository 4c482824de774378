"""Schemas of ``minitron pipeline``: a recipe (``conf/recipe/*.yaml``) and the command around it.

A recipe names the teacher, the data, and what each stage adds to its command line; the pipeline
turns it into a list of stage commands (:mod:`minitron.pipeline.stages`). Stage settings are given as
the same ``key=value`` overrides the stage takes on its own command line, so a recipe reads like the
commands it runs. The token budget of the students is one section, shared by distillation and the
from-scratch baseline so that both see exactly the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from minitron.config.common import ParallelConfig, check_range
from minitron.config.prune import PruneTargets
from minitron.errors import MinitronError

# keys of the shared budget; a stage's own args must not set them (the budget would differ per student)
BUDGET_KEYS = ("train.steps", "train.global_batch_size", "train.seq_length")
# what a student's `prune` section may set: explicit targets, or a budget (`target`) and its `search` space
PRUNE_TARGETS = (*PruneTargets.__dataclass_fields__, "target", "search", "config")


@dataclass
class RecipeData:
    train: str = (
        MISSING  # distillation corpus: .txt/.jsonl/.parquet file or directory (tokenized once), or a prepared PREFIX
    )
    calib: str = MISSING  # calibration text for importance estimation (.txt or .jsonl)
    heldout: str = MISSING  # held-out text for the evaluation table (.txt or .jsonl)


@dataclass
class TeacherCorrection:
    enabled: bool = False  # fine-tune the teacher on data.train before pruning (the paper: ~100B tokens for 8B)
    args: List[str] = field(
        default_factory=list
    )  # `minitron train` overrides, e.g. [train=teacher_correction, train.steps=1000]


@dataclass
class TokenBudget:
    steps: int = 100  # optimizer steps of each distillation and of each from-scratch baseline
    global_batch_size: int = 8  # sequences per step
    micro_batch_size: int = 1  # sequences per forward/backward pass on one rank
    seq_length: int = 512  # tokens per sequence

    def __post_init__(self):
        for name in ("steps", "global_batch_size", "micro_batch_size", "seq_length"):
            check_range(f"recipe.budget.{name}", getattr(self, name), at_least=1)

    @property
    def tokens(self) -> int:
        return self.steps * self.global_batch_size * self.seq_length

    def args(self) -> list[str]:
        return [
            f"train.steps={self.steps}",
            f"train.global_batch_size={self.global_batch_size}",
            f"train.micro_batch_size={self.micro_batch_size}",
            f"train.seq_length={self.seq_length}",
        ]


@dataclass
class RecipeBenchmarks:
    tasks: List[str] = field(
        default_factory=list
    )  # lm-eval tasks every model of the run is scored on (`minitron evaluate`); empty: no task accuracy
    fewshot: Dict[str, int] = field(
        default_factory=dict
    )  # shots per task; a task not listed gets its default (MMLU 5 from dev, the others 0)
    limits: Dict[str, int] = field(
        default_factory=dict
    )  # documents scored per task (MMLU: per subject); a task not listed: all of them
    args: List[str] = field(default_factory=list)  # other `minitron evaluate` overrides (eval.batch_size, ...)

    def __post_init__(self):
        for task, shots in self.fewshot.items():
            check_range(f"recipe.benchmarks.fewshot.{task}", shots, at_least=0)
        for task, limit in self.limits.items():
            check_range(f"recipe.benchmarks.limits.{task}", limit, at_least=1)

    def validate(self) -> None:
        from minitron.eval.lm_tasks import check_task_names

        if self.tasks:
            check_task_names(list(self.tasks))
        for section in ("fewshot", "limits"):
            for task in getattr(self, section):
                if task not in self.tasks:
                    raise MinitronError(
                        f"recipe.benchmarks.{section}.{task}: {task} is not in recipe.benchmarks.tasks={list(self.tasks)}"
                    )
        for arg in self.args:
            if arg.split("=", 1)[0].lstrip("+~") in ("eval.tasks", "eval.fewshot", "eval.limits", "model.path", "output"):
                raise MinitronError(
                    f"recipe.benchmarks.args: {arg!r} is set by the pipeline; use recipe.benchmarks.tasks / fewshot / "
                    "limits instead"
                )

    def args_for(self) -> list[str]:
        """``minitron evaluate`` arguments of the tasks, their shots and limits (no model, no output)."""
        return [f"eval.tasks=[{','.join(self.tasks)}]", *(f"+eval.fewshot.{task}={n}" for task, n in self.fewshot.items()),
                *(f"+eval.limits.{task}={n}" for task, n in self.limits.items()), *self.args]  # fmt: skip


@dataclass
class RecipeThroughput:
    enabled: bool = False  # time prefill and decode (`minitron bench`) of the teacher and of each student's final model
    args: List[str] = field(
        default_factory=list
    )  # `minitron bench` overrides (bench.batch, bench.prompt_len, bench.output_len, bench.repeats)


@dataclass
class AlignStage:
    data: str = MISSING  # JSONL: chat rows ({"messages"} or {"prompt", "completion"}) for sft; {"prompt", "chosen", "rejected"} for dpo
    args: List[str] = field(
        default_factory=list
    )  # `minitron sft` / `minitron dpo` overrides (train.steps, train.lr, align.loss, align.rounds, ...)


@dataclass
class StudentAlign:
    sft: List[AlignStage] = field(default_factory=list)  # SFT stages in order, each from the previous one's output
    dpo: Optional[AlignStage] = None  # preference optimisation (DPO/IPO/RPO, align.rounds) after the SFT stages
    seq_length: int = 512  # tokens per example: the prepared data's limit and train.seq_length (checked by Recipe.validate, which knows the student's name)


@dataclass
class AlignmentReport:
    heldout_pairs: Optional[str] = None  # held-out {"prompt", "chosen", "rejected"} JSONL: reward accuracy of each aligned student
    prompts: List[str] = field(default_factory=list)  # fixed prompts answered greedily by the teacher and every student's final model
    max_new_tokens: int = 48  # tokens generated per answer
    args: List[str] = field(default_factory=list)  # `minitron rewards` overrides (rewards.max_pairs, align.beta, ...)

    def __post_init__(self):
        check_range("recipe.alignment.max_new_tokens", self.max_new_tokens, at_least=1)


@dataclass
class Student:
    prune: Dict[str, Any] = field(
        default_factory=dict
    )  # `minitron prune` targets (prune.<key>), e.g. {hidden_size: 3072}, or a budget searched for the shape:
    # {target: {non_embedding_params: 5.36e7}, search: {num_layers_divisor: 3}} (prune.target.*, prune.search.*),
    # or a conf/prune/ file: {config: smollm2_search_50pct}
    distill: bool = True  # distill the pruned student from the teacher for the token budget
    from_scratch: bool = False  # baseline: train this architecture from random init on the same tokens
    align: Optional[StudentAlign] = None  # alignment after distillation: SFT stages, then DPO/RPO rounds


@dataclass
class Recipe:
    name: str = MISSING  # the recipe's name; the default run directory is runs/<name>
    description: str = ""  # one paragraph for the report
    assets: List[str] = field(default_factory=list)  # `minitron assets fetch` these first (demo teacher and corpus)
    teacher: str = MISSING  # HF directory or minitron Megatron checkpoint (`${minitron_home:}` = the assets directory)
    data: RecipeData = field(default_factory=RecipeData)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # layout of every parallel stage
    teacher_correction: TeacherCorrection = field(default_factory=TeacherCorrection)
    importance_args: List[str] = field(default_factory=list)  # `minitron importance` overrides (calib.*, importance.*)
    students: Dict[str, Student] = field(default_factory=dict)  # name -> pruning targets; one run directory each
    budget: TokenBudget = field(
        default_factory=TokenBudget
    )  # training tokens of every distilled / from-scratch student
    distill_args: List[str] = field(default_factory=list)  # `minitron distill` overrides (train.lr, distill.*, ...)
    scratch_args: List[str] = field(default_factory=list)  # `minitron train` overrides of the from-scratch baselines
    eval_args: List[str] = field(default_factory=list)  # `minitron eval` overrides (eval.max_windows, eval.seq_length)
    benchmarks: RecipeBenchmarks = field(
        default_factory=RecipeBenchmarks
    )  # task accuracy (lm-eval) of every model of the run, in the report's accuracy table
    throughput: RecipeThroughput = field(
        default_factory=RecipeThroughput
    )  # tokens/s of the teacher and the students, in the report's throughput table
    alignment: AlignmentReport = field(
        default_factory=AlignmentReport
    )  # what the report shows of alignment: held-out reward accuracy, greedy answers to fixed prompts
    export: bool = True  # write every distilled student as a Hugging Face directory (students/NAME/hf)

    def __post_init__(self):
        for name, student in self.students.items():
            if student.align is not None:
                check_range(f"recipe.students.{name}.align.seq_length", student.align.seq_length, at_least=2)

    def validate(self) -> None:
        """Checks of a complete recipe (the schema's defaults are not one): run before any stage."""
        if not self.students:
            raise MinitronError(
                f"recipe {self.name}: recipe.students is empty; give at least one student's prune targets"
            )
        for name, student in self.students.items():
            if not name.isidentifier():
                raise MinitronError(
                    f"recipe.students.{name}: a student's name must be a plain identifier (letters, digits, _)"
                )
            if not student.prune:
                raise MinitronError(f"recipe.students.{name}.prune is empty: give targets, e.g. {{num_layers: 16}}")
            unknown = sorted(set(student.prune) - set(PRUNE_TARGETS))
            if unknown:
                raise MinitronError(
                    f"recipe.students.{name}.prune: unknown {unknown}; use any of {', '.join(PRUNE_TARGETS)}"
                )
        self.benchmarks.validate()
        for name, student in self.students.items():
            if student.align is not None and not student.distill:
                raise MinitronError(f"recipe.students.{name}.align: alignment starts from the distilled student; "
                                    "set distill: true or drop align")  # fmt: skip
            if student.align is not None and not (student.align.sft or student.align.dpo):
                raise MinitronError(f"recipe.students.{name}.align: give sft stages, a dpo stage, or both")
        for section in ("distill_args", "scratch_args"):
            for arg in getattr(self, section):
                if arg.split("=", 1)[0].lstrip("+~") in BUDGET_KEYS:
                    raise MinitronError(
                        f"recipe.{section}: {arg!r} sets the token budget per stage; set recipe.budget instead so "
                        "distilled and from-scratch students see the same tokens"
                    )


@dataclass
class PipelineCommand:
    recipe: Recipe = field(default_factory=Recipe)  # conf/recipe/<name>.yaml: `minitron pipeline recipe=NAME`
    output: Optional[str] = None  # run directory (None: runs/<recipe.name>); rerun the same command to resume
    launcher: str = ""  # prefix of the parallel stages' commands, e.g. "torchrun --nproc-per-node 8" ("": one process)
    dry_run: bool = False  # print the stages and their commands and what is already done; run nothing
    device_memory_gb: Optional[float] = None  # GiB per device the training stages must fit (null: this GPU's; CPU: unchecked)

    def __post_init__(self):
        check_range("device_memory_gb", self.device_memory_gb, above=0, fix="or null for this GPU's memory")

    @property
    def run_dir(self) -> str:
        return self.output or f"runs/{self.recipe.name}"


def register() -> None:
    """Register the pipeline schema with Hydra's ConfigStore (called by ``schema.register``)."""
    ConfigStore.instance().store(name="pipeline_schema", node=PipelineCommand)
