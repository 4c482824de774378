"""The benchmarks minitron evaluates with lm-eval: which tasks, where their data is, which few-shot pool.

Each task is lm-eval's own (prompt, ``process_docs``, metrics exactly as lm-eval 0.4.13 ships them); the
YAML files in ``minitron/eval/tasks/`` change only where the data comes from. Each is a group
``minitron_<task>`` listing the built-in task with ``custom_dataset: !function benchmark_dataset`` (and,
for MMLU, lm-eval's four category groups redefined with one ``subject`` per task). :func:`load_tasks`
loads the groups and hands their built-in children to lm-eval, so results carry lm-eval's task names.

Few-shot examples: lm-eval draws them from the train split, which no registry package ships, except
for MMLU (dev, first 5 per subject: exact). Elsewhere the pool is a stand-in, recorded in the result
(:attr:`TaskSpec.pool`): the validation split for tasks scored on test (ARC, OpenBookQA), else the
scored split itself without the scored item. By default only MMLU runs few-shot (5, as in the paper).
lm-eval draws random few-shot examples in each process's document order, so with data parallelism a
stand-in pool gives other (equally valid) prompts than one process; MMLU's ordered pool does not.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from minitron.errors import MinitronError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
# lm-eval's task directories holding the built-in definitions the YAMLs above refer to
BUILTIN_DIRS = ("mmlu/default", "hellaswag", "winogrande", "arc", "piqa", "siqa", "commonsense_qa",
                "super_glue/boolq", "openbookqa", "gsm8k")  # fmt: skip
FETCH = "minitron assets fetch benchmarks"


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark as minitron runs it."""

    benchmark: str  # directory of its files under the benchmarks asset
    scored_split: str  # the split lm-eval scores
    pool_split: str  # the split few-shot examples are drawn from (the scored item is never among them)
    standard_pool: bool  # the pool is lm-eval's own (else a stand-in for the unshipped train split)
    default_shots: int  # shots unless eval.num_fewshot / eval.fewshot say otherwise
    metric: str  # main metric, as in lm-eval's results ("acc", "acc_norm", "exact_match,strict-match")

    @property
    def pool(self) -> str:
        if self.standard_pool:
            return f"{self.pool_split} (lm-eval's own pool)"
        same = " without the scored item" if self.pool_split == self.scored_split else ""
        return f"{self.pool_split}{same} (stand-in: lm-eval samples from train, which is not shipped)"


TASKS: dict[str, TaskSpec] = {
    "mmlu": TaskSpec("mmlu", "test", "dev", True, 5, "acc"),
    "hellaswag": TaskSpec("hellaswag", "validation", "validation", False, 0, "acc_norm"),
    "winogrande": TaskSpec("winogrande", "validation", "validation", False, 0, "acc"),
    "arc_challenge": TaskSpec("arc_challenge", "test", "validation", False, 0, "acc_norm"),
    "arc_easy": TaskSpec("arc_easy", "test", "validation", False, 0, "acc_norm"),
    "piqa": TaskSpec("piqa", "validation", "validation", False, 0, "acc_norm"),
    "social_iqa": TaskSpec("social_iqa", "validation", "validation", False, 0, "acc"),
    "commonsense_qa": TaskSpec("commonsense_qa", "validation", "validation", False, 0, "acc"),
    "boolq": TaskSpec("boolq", "validation", "validation", False, 0, "acc"),
    "openbookqa": TaskSpec("openbookqa", "test", "validation", False, 0, "acc_norm"),
    "gsm8k": TaskSpec("gsm8k", "test", "test", False, 0, "exact_match,strict-match"),
}


def check_task_names(names: list[str]) -> None:
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise MinitronError(f"eval.tasks: unknown task {unknown[0]!r}; known tasks: {', '.join(TASKS)}")
    if not names:
        raise MinitronError(f"eval.tasks is empty; choose from {', '.join(TASKS)}")


def check_benchmark_files(benchmarks_dir: Path, names: list[str], fetched: bool) -> None:
    """Every file the tasks ``names`` read exists under ``benchmarks_dir`` (``fetched``: it is the asset)."""
    for name in names:
        spec = TASKS[name]
        for split in {spec.scored_split, spec.pool_split}:
            path = Path(benchmarks_dir) / spec.benchmark / f"{split}.jsonl"
            if not path.is_file():
                where = (
                    f"run `{FETCH}`"
                    if fetched
                    else f"eval.data_dir={benchmarks_dir} must hold it (or unset eval.data_dir and run `{FETCH}`)"
                )
                raise MinitronError(f"task {name}: benchmark file {path} is missing; {where}")


@functools.lru_cache(maxsize=32)
def _rows(path: str, mtime_ns: int) -> tuple[dict, ...]:
    with open(path, encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def read_rows(path: Path) -> tuple[dict, ...]:
    """The rows of a benchmark JSONL file (cached per file version: MMLU's 57 subjects read it once)."""
    return _rows(str(path), os.stat(path).st_mtime_ns)


def benchmark_dataset(benchmarks_dir: str, benchmark: str, subject: Optional[str] = None, **_metadata):
    """lm-eval ``custom_dataset``: a ``DatasetDict`` of every ``<split>.jsonl`` of ``benchmark``.

    lm-eval calls it with the task's metadata (``benchmarks_dir`` comes from there) and
    ``dataset_kwargs`` (``benchmark``, and ``subject`` for an MMLU subject: only its rows). Built in
    memory: no download, no dataset cache written.
    """
    import datasets

    splits = {}
    for path in sorted((Path(benchmarks_dir) / benchmark).glob("*.jsonl")):
        rows = read_rows(path)
        if subject is not None:
            rows = [row for row in rows if row["subject"] == subject]
        splits[path.stem] = datasets.Dataset.from_list(list(rows))
    if not splits:
        raise MinitronError(f"no benchmark files under {Path(benchmarks_dir) / benchmark}; run `{FETCH}`")
    return datasets.DatasetDict(splits)


def task_manager(benchmarks_dir: Path):
    """lm-eval ``TaskManager`` over the built-in task directories used here and minitron's YAMLs (indexed last)."""
    import logging

    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    builtin = Path(lm_eval.tasks.__file__).parent
    index_log = logging.getLogger("lm_eval.tasks._index")
    level = index_log.level
    index_log.setLevel(logging.ERROR)  # "overrides existing task": the MMLU category groups, on purpose
    try:
        return TaskManager(include_path=[builtin / d for d in BUILTIN_DIRS] + [TASKS_DIR], include_defaults=False,
                           metadata={"benchmarks_dir": str(benchmarks_dir)})  # fmt: skip
    finally:
        index_log.setLevel(level)


@dataclass
class LoadedTask:
    """One requested task after loading: lm-eval's object and how it will run."""

    name: str
    spec: TaskSpec
    obj: object  # lm-eval Task (a single task) or Group (mmlu)
    leaves: list  # its lm-eval leaf tasks
    shots: int  # few-shot examples per prompt
    limit: Optional[int]  # documents scored per leaf task (None: all)
    docs: dict  # leaf task name -> documents it scores (after the limit)

    @property
    def items(self) -> int:
        """Documents scored, over all leaf tasks."""
        return sum(self.docs.values())


def _leaf_tasks(obj) -> list:
    return obj.get_all_tasks() if hasattr(obj, "get_all_tasks") else [obj]


def _pool_size(task, spec: TaskSpec) -> int:
    pool = len(task.sampler.fewshot_docs())  # the documents lm-eval samples few-shot examples from
    return pool - 1 if spec.pool_split == spec.scored_split else pool


def load_tasks(manager, names: list[str], shots: dict[str, int], limits: dict[str, Optional[int]],
               max_gen_toks: Optional[int] = None) -> list[LoadedTask]:  # fmt: skip
    """Load the tasks ``names`` with their shots and per-leaf-task limits; checks each few-shot pool is large enough.

    ``max_gen_toks`` caps the generation of tasks whose config does not set it (lm-eval's backends default to 256);
    it is written into the task's ``generation_kwargs``, so every backend sees it in the requests."""
    loaded = manager.load([f"minitron_{name}" for name in names])
    out = []
    for name in names:
        (child,) = loaded["groups"][f"minitron_{name}"]
        spec = TASKS[name]
        leaves = _leaf_tasks(child)
        for task in leaves:
            if shots[name] > 0:
                pool = _pool_size(task, spec)
                if shots[name] > pool:
                    raise MinitronError(
                        f"eval.num_fewshot={shots[name]} for {name}: its few-shot pool ({spec.pool}) holds only "
                        f"{pool} examples{f' for {task.task_name}' if len(leaves) > 1 else ''}; use at most {pool}"
                    )
            task.set_config(key="num_fewshot", value=shots[name])
            kwargs = task.get_config("generation_kwargs")
            if task.get_config("output_type") == "generate_until" and max_gen_toks and "max_gen_toks" not in kwargs:
                task.set_config(key="generation_kwargs", value={"max_gen_toks": max_gen_toks}, update=True)
        limit = limits[name]
        docs = {t.task_name: len(t.task_docs) if limit is None else min(limit, len(t.task_docs)) for t in leaves}
        out.append(LoadedTask(name, spec, child, leaves, shots[name], limit, docs))
    return out


def samples_of(tasks: list[LoadedTask]) -> dict[str, list[int]]:
    """lm-eval's ``samples``: the first ``limit`` documents of every leaf task (all of them when no limit)."""
    return {leaf: list(range(count)) for t in tasks for leaf, count in t.docs.items()}


def spread_items(task: LoadedTask, total: int) -> LoadedTask:
    """``task`` scoring ``total`` documents spread evenly over its leaf tasks (MMLU: its 57 subjects).

    Every leaf scores its first ``total // leaves`` documents and the first ``total % leaves`` leaves, in
    name order, one more (a leaf with fewer documents scores all of them)."""
    leaves = sorted(task.leaves, key=lambda leaf: leaf.task_name)
    share, extra = divmod(total, len(leaves))
    docs = {leaf.task_name: min(share + (i < extra), len(leaf.task_docs)) for i, leaf in enumerate(leaves)}
    return dataclasses.replace(task, limit=share + (extra > 0), docs=docs)
