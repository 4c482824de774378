"""A recipe as a list of stage commands: what ``minitron pipeline`` runs, in order.

Every stage but the report is one ``minitron <command> key=value ...`` call, the same a user would
type, writing into the run directory::

    RUN/data/train.{bin,idx,json}          tokenized data.train           (data prepare)
    RUN/teacher_corrected/, .../hf         teacher correction + export    (train, convert; optional)
    RUN/importance/                        scores of every unit, plots    (importance)
    RUN/students/NAME/pruned/              pruned student, HF directory   (prune, from the saved scores)
    RUN/students/NAME/distilled/           distillation run, final/       (distill)
    RUN/students/NAME/scratch/             same architecture, random init (train model.init=random)
    RUN/eval/MODEL.json                    held-out loss and KL to the teacher (eval)
    RUN/students/NAME/hf/                  the distilled student for transformers / vLLM (convert)
    RUN/report.md, RUN/loss_curves.png     the table and the curves (report)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from minitron.config.pipeline import PipelineCommand, Recipe
from minitron.config.prune import DEPTH_METRICS
from minitron.errors import MinitronError

PARALLEL_COMMANDS = ("train", "distill", "importance", "prune", "eval")  # run under the launcher


@dataclass
class Stage:
    """One step of the pipeline: ``minitron <command> <args>`` (or the in-process report)."""

    name: str  # unique in the run: importance, prune_width, eval_width_distilled, ...
    command: str  # minitron sub-command (data, train, convert, importance, prune, distill, eval, assets) or "report"
    args: list[str]  # its arguments; the stage counts as done only for exactly these
    output: Optional[str] = None  # what it writes (a path under the run directory)
    about: str = ""  # one line for the progress output
    model: Optional[dict] = None  # eval stages: the row of the report this stage measures
    curve: Optional[dict] = None  # training stages: the curve of the report this run draws

    @property
    def parallel(self) -> bool:
        return self.command in PARALLEL_COMMANDS


def _value(value) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _has(args: list[str], key: str) -> bool:
    return any(arg.split("=", 1)[0].lstrip("+~") == key for arg in args)


def _depth_args(recipe: Recipe, teacher: str) -> list[str]:
    """Importance args asking for exactly the depth metrics and windows the students need."""
    from minitron.models.checkpoint import open_model
    from minitron.prune.plan import PruneTargets, needed_depth_metrics

    if _has(recipe.importance_args, "importance.depth_metrics") and _has(
        recipe.importance_args, "importance.window_sizes"
    ):
        return []
    arch = open_model(teacher).arch
    metrics, windows = {"block_influence"}, set()
    for student in recipe.students.values():
        needed, sizes = needed_depth_metrics(arch, PruneTargets(**student.prune))
        metrics.update(needed)
        windows.update(sizes)
    args = []
    if not _has(recipe.importance_args, "importance.depth_metrics"):
        args.append(f"importance.depth_metrics={_value([m for m in DEPTH_METRICS if m in metrics])}")
    if windows and not _has(recipe.importance_args, "importance.window_sizes"):
        args.append(f"importance.window_sizes={_value(sorted(windows))}")
    return args


def plan_stages(cfg: PipelineCommand, teacher_exists: bool = True) -> list[Stage]:
    """The stages of ``cfg.recipe`` in the order they run.

    ``teacher_exists=False`` (before the assets stage has run, in a dry run) skips the checks that
    read the teacher's config.
    """
    recipe, run = cfg.recipe, Path(cfg.run_dir)
    parallel = [f"parallel.tp={recipe.parallel.tp}", f"parallel.pp={recipe.parallel.pp}"]
    stages: list[Stage] = []
    rows: list[dict] = []

    if recipe.assets:
        stages.append(Stage("assets", "assets", ["fetch", *recipe.assets], about="fetch the demo teacher and corpus"))

    train_prefix = recipe.data.train
    if not Path(f"{train_prefix}.bin").is_file():
        train_prefix = str(run / "data" / "train")
        stages.append(
            Stage(
                "data",
                "data",
                [
                    "prepare",
                    f"data.path={recipe.data.train}",
                    f"model.path={recipe.teacher}",
                    f"output={train_prefix}",
                ],
                output=train_prefix,
                about="tokenize the training corpus with the teacher's tokenizer",
            )
        )

    eval_args = [f"data.path={recipe.data.heldout}", *parallel, *recipe.eval_args]
    teacher = recipe.teacher
    rows.append(dict(name="teacher", role="teacher", student=None, path=teacher, train_tokens=None))
    if recipe.teacher_correction.enabled:
        corrected = run / "teacher_corrected"
        stages.append(
            Stage(
                "teacher_correction",
                "train",
                [
                    f"model.path={teacher}",
                    f"data.path={train_prefix}",
                    f"output={corrected}",
                    *parallel,
                    *recipe.teacher_correction.args,
                ],
                output=str(corrected),
                about="fine-tune the teacher on the distillation data",
                curve=dict(
                    label="teacher correction",
                    role="teacher_corrected",
                    student=None,
                    metrics=str(corrected / "metrics.jsonl"),
                ),
            )
        )
        teacher = str(corrected / "hf")
        stages.append(
            Stage(
                "teacher_export",
                "convert",
                [f"model.path={corrected / 'final'}", f"output={teacher}"],
                output=teacher,
                about="the corrected teacher as a Hugging Face directory (pruning reads HF)",
            )
        )
        rows.append(
            dict(name="teacher, corrected", role="teacher_corrected", student=None, path=teacher, train_tokens=None)
        )
    elif teacher_exists:
        from minitron.models.checkpoint import is_megatron_checkpoint

        if is_megatron_checkpoint(Path(teacher)):
            hf = str(run / "teacher_hf")
            stages.append(
                Stage(
                    "teacher_export",
                    "convert",
                    [f"model.path={teacher}", f"output={hf}"],
                    output=hf,
                    about="the teacher as a Hugging Face directory (pruning reads HF)",
                )
            )
            teacher = hf

    importance = str(run / "importance")
    depth = _depth_args(recipe, recipe.teacher) if teacher_exists else []
    stages.append(
        Stage(
            "importance",
            "importance",
            [
                f"model.path={teacher}",
                f"data.path={recipe.data.calib}",
                f"output={importance}",
                *parallel,
                *recipe.importance_args,
                *depth,
            ],
            output=importance,
            about="importance of channels, neurons, heads and layers on calibration data",
        )
    )

    students = {name: run / "students" / name for name in recipe.students}
    for name, student in recipe.students.items():
        targets = [f"prune.{key}={_value(value)}" for key, value in student.prune.items()]
        stages.append(
            Stage(
                f"prune_{name}",
                "prune",
                [
                    f"model.path={teacher}",
                    f"data.path={recipe.data.calib}",
                    f"output={students[name] / 'pruned'}",
                    f"prune.scores={importance}",
                    *parallel,
                    *recipe.importance_args,
                    *targets,
                ],
                output=str(students[name] / "pruned"),
                about=f"prune the {name} student from the saved scores",
            )
        )
        rows.append(
            dict(
                name=f"{name}, pruned", role="pruned", student=name, path=str(students[name] / "pruned"), train_tokens=0
            )
        )
    budget = recipe.budget.args()

    def student_run(name: str, kind: str, command: str, inputs: list[str], extra: list[str], about: str) -> None:
        """A training run of a student on the token budget: its stage, its curve and its table row."""
        out, label = students[name] / kind, "from scratch" if kind == "scratch" else kind
        curve = dict(label=f"{name}, {label}", role=kind, student=name, metrics=str(out / "metrics.jsonl"))
        stages.append(Stage(f"{'scratch' if kind == 'scratch' else 'distill'}_{name}", command,
                            [*inputs, f"data.path={train_prefix}", f"output={out}", *parallel, *budget, *extra],
                            output=str(out), about=about, curve=curve))  # fmt: skip
        rows.append(dict(name=f"{name}, {label}", role=kind, student=name, path=str(out / "final"),
                         train_tokens=recipe.budget.tokens))  # fmt: skip

    for name, student in recipe.students.items():
        if student.distill:
            student_run(name, "distilled", "distill",
                        [f"teacher.path={teacher}", f"student.path={students[name] / 'pruned'}"], recipe.distill_args,
                        f"distill the {name} student for {recipe.budget.tokens:,} tokens")  # fmt: skip
    for name, student in recipe.students.items():
        if student.from_scratch:
            student_run(name, "scratch", "train", [f"model.path={students[name] / 'pruned'}", "model.init=random"],
                        recipe.scratch_args, f"baseline: the {name} architecture from random init, same tokens")  # fmt: skip

    rows = _ordered(rows, list(recipe.students))
    for row in rows:
        slug = row["name"].replace(", ", "_").replace(" ", "_")
        out = str(run / "eval" / f"{slug}.json")
        kl = [] if row["path"] == teacher else [f"eval.teacher={teacher}"]  # a model's KL to itself is 0
        stages.append(
            Stage(
                f"eval_{slug}",
                "eval",
                [f"model.path={row['path']}", *kl, *eval_args],
                output=out,
                about=f"held-out loss and KL to the teacher: {row['name']}",
                model=row,
            )
        )
    if recipe.export:
        for name, student in recipe.students.items():
            if student.distill:
                hf = str(students[name] / "hf")
                stages.append(
                    Stage(
                        f"export_{name}",
                        "convert",
                        [f"model.path={students[name] / 'distilled' / 'final'}", f"output={hf}"],
                        output=hf,
                        about=f"the distilled {name} student as a Hugging Face directory",
                    )
                )
    stages.append(Stage("report", "report", [], output=str(run / "report.md"), about="report.md and loss_curves.png"))
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise MinitronError(f"recipe {recipe.name}: two stages share a name ({names}); rename the students")
    return stages


def _ordered(rows: list[dict], students: list[str]) -> list[dict]:
    """Teachers first, then each student's pruned, distilled and from-scratch rows together."""
    rank = {"teacher": 0, "teacher_corrected": 1, "pruned": 0, "distilled": 1, "scratch": 2}
    teachers = [r for r in rows if r["student"] is None]
    per_student = [
        r for s in students for r in sorted((r for r in rows if r["student"] == s), key=lambda r: rank[r["role"]])
    ]
    return sorted(teachers, key=lambda r: rank[r["role"]]) + per_student
