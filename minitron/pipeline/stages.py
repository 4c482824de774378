"""A recipe as a list of stage commands: what ``minitron pipeline`` runs, in order.

Every stage but the report is one ``minitron <command> key=value ...`` call, the same a user would
type, writing into the run directory::

    RUN/data/train.{bin,idx,json}          tokenized data.train           (data prepare)
    RUN/teacher_corrected/, .../hf         teacher correction + export    (train, convert; optional)
    RUN/importance/                        scores of every unit, plots    (importance)
    RUN/students/NAME/pruned/              pruned student, HF directory   (prune, from the saved scores)
    RUN/students/NAME/distilled/           distillation run, final/       (distill)
    RUN/students/NAME/scratch/             same architecture, random init (train model.init=random)
    RUN/eval/MODEL.json                    held-out loss and KL to the teacher, the report's row (eval)
    RUN/tasks/MODEL/results.json           lm-eval task accuracy of the row (evaluate; recipe.benchmarks)
    RUN/throughput/MODEL.json              prefill / decode tokens/s (bench; recipe.throughput)
    RUN/data/align/KIND_FILE_SEQ           alignment data, tokenized once (data prepare data.format=sft|preference)
    RUN/students/NAME/sft[K]/, dpo/        alignment: SFT stages, then DPO/RPO rounds (sft, dpo; students.NAME.align)
    RUN/align/NAME_rewards.json            held-out reward accuracy of the aligned student (rewards)
    RUN/answers/MODEL.json                 greedy answers to the recipe's fixed prompts (generate)
    RUN/students/NAME/hf/, aligned_hf/     the distilled (and aligned) student for transformers / vLLM (convert)
    RUN/report.md, RUN/*.png               the tables, the curves, accuracy vs throughput (report)

The plan is a sequence of planner functions, one per step of the recipe, each appending its stages.
Which commands run under the launcher comes from the command registry (:mod:`minitron.commands`);
the report's rows are the eval stages' own JSON outputs (their ``eval.tags`` name the row); the task
accuracy and throughput stages name the row they add to (``Stage.row``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from minitron.commands import COMMANDS
from minitron.config.pipeline import PipelineCommand, Recipe
from minitron.config.prune import DEPTH_METRICS
from minitron.errors import MinitronError

REPORT = "report"  # the one stage that is not a `minitron` command: it runs in the pipeline's process


@dataclass
class Stage:
    """One step of the pipeline: ``minitron <command> <args>`` (or the in-process report)."""

    name: str  # unique in the run: importance, prune_width, eval_width_distilled, ...
    command: str  # a command of minitron.commands.COMMANDS, or REPORT
    args: list[str]  # its arguments; the stage counts as done only for exactly these
    output: Optional[str] = None  # what it writes (a path under the run directory)
    about: str = ""  # one line for the progress output
    curve: Optional[dict] = None  # training stages: the curve of the report this run draws
    row: Optional[str] = None  # prune / evaluate / bench stages: the report row (model name) their output adds to

    @property
    def parallel(self) -> bool:
        """Runs on every rank under the pipeline's launcher."""
        return self.command in COMMANDS and COMMANDS[self.command].parallel


def _value(value) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _has(args: list[str], key: str) -> bool:
    return any(arg.split("=", 1)[0].lstrip("+~") == key for arg in args)


def prune_args(student) -> list[str]:
    """A student's ``prune`` section as ``minitron prune`` arguments: ``config`` selects a ``conf/prune/`` file,
    ``target`` / ``search`` (a budget and its search space) are flattened, the rest are explicit targets."""
    args = [f"prune={student.prune['config']}"] if "config" in student.prune else []
    for key, value in student.prune.items():
        if key in ("target", "search"):
            args += [f"prune.{key}.{inner}={_value(setting)}" for inner, setting in (value or {}).items()]
        elif key != "config":
            args.append(f"prune.{key}={_value(value)}")
    return args


def _search_data_args(train_data: str, heldout: str) -> list[str]:
    """Where rung (c) of a budget student's search distils and scores its candidates: the run's own data."""
    return [f"prune.search.distill_data={train_data}", f"prune.search.heldout_data={heldout}"]


def _prune_settings(recipe: Recipe, student):
    """The student's validated ``prune`` settings (targets, or a budget and its search space)."""
    from minitron.config.compose import validate

    return validate("prune", [f"model.path={recipe.teacher}", f"data.path={recipe.data.calib}", "output=unused",
                              *prune_args(student), *_search_data_args("unused", "unused")]).prune  # fmt: skip


def _student_depths(recipe: Recipe, arch, student) -> tuple[set, set]:
    """Depth metrics and contiguous-window sizes a student's pruning reads from the importance scores; a budget
    student needs the windows of every candidate its search scores (rung b's top_n)."""
    from minitron.prune.plan import needed_depth_metrics
    from minitron.prune.search_space import check_budget, depth_windows

    settings = _prune_settings(recipe, student)
    if settings.target.primary() is None:
        metrics, windows = needed_depth_metrics(arch, settings.targets())
        return set(metrics), set(windows)
    candidates = check_budget(arch, settings.search, settings.target, recipe.parallel.tp)[: settings.search.top_n]
    if settings.depth_metric != "window_loss":
        return {settings.depth_metric}, set()
    windows = set(depth_windows(arch, candidates))
    return ({"window_loss"} if windows else set()), windows


def _depth_args(recipe: Recipe, teacher: str) -> list[str]:
    """Importance args asking for exactly the depth metrics and windows the students need."""
    from minitron.models.checkpoint import open_model

    if _has(recipe.importance_args, "importance.depth_metrics") and _has(
        recipe.importance_args, "importance.window_sizes"
    ):
        return []
    arch = open_model(teacher).arch
    metrics, windows = {"block_influence"}, set()
    for student in recipe.students.values():
        needed, sizes = _student_depths(recipe, arch, student)
        metrics.update(needed)
        windows.update(sizes)
    args = []
    if not _has(recipe.importance_args, "importance.depth_metrics"):
        args.append(f"importance.depth_metrics={_value([m for m in DEPTH_METRICS if m in metrics])}")
    if windows and not _has(recipe.importance_args, "importance.window_sizes"):
        args.append(f"importance.window_sizes={_value(sorted(windows))}")
    return args


@dataclass
class Plan:
    """What the planner functions share while they append stages: where things are so far."""

    cfg: PipelineCommand
    teacher_exists: bool  # False before the assets stage ran: skip what reads the teacher's config
    stages: list[Stage] = field(default_factory=list)
    teacher: str = ""  # the teacher every later stage uses (HF directory; the corrected one when there is one)
    train_data: str = ""  # prefix of the tokenized training data
    models: list[dict] = field(default_factory=list)  # what the eval stages measure: path + report tags, in order
    aligned: list[dict] = field(default_factory=list)  # per aligned student: name, final model, DPO reference, beta

    @property
    def recipe(self) -> Recipe:
        return self.cfg.recipe

    @property
    def run(self) -> Path:
        return Path(self.cfg.run_dir)

    @property
    def parallel(self) -> list[str]:
        return [f"parallel.tp={self.recipe.parallel.tp}", f"parallel.pp={self.recipe.parallel.pp}"]

    def student_dir(self, name: str) -> Path:
        return self.run / "students" / name

    def add(self, name: str, command: str, args: list[str], output=None, about: str = "", curve=None, row=None):
        self.stages.append(Stage(name, command, args, None if output is None else str(output), about, curve, row))

    def teacher_and_students(self, roles: tuple) -> list[dict]:
        """The teacher's row, then each student's last row (in plan order) whose role is one of ``roles``."""
        chosen = [model for model in self.models if model["role"] == "teacher"]
        for name in self.recipe.students:
            chosen += [model for model in self.models if model["student"] == name and model["role"] in roles][-1:]
        return chosen

    def measure(self, path, name: str, role: str, student: Optional[str] = None) -> None:
        """Add a model to the evaluation table (one eval stage, one report row)."""
        self.models.append(dict(path=str(path), name=name, role=role, student=student))


def _slug(name: str) -> str:
    """A row name as a file name: "width, distilled" -> width_distilled."""
    return name.replace(", ", "_").replace(" ", "_")


def plan_assets(plan: Plan) -> None:
    if plan.recipe.assets:
        plan.add("assets", "assets", ["fetch", *plan.recipe.assets], about="fetch the demo teacher and corpus")


def plan_data(plan: Plan) -> None:
    """Tokenize the training corpus, unless the recipe names a prepared prefix."""
    recipe = plan.recipe
    plan.train_data = recipe.data.train
    if not Path(f"{recipe.data.train}.bin").is_file():
        plan.train_data = str(plan.run / "data" / "train")
        plan.add("data", "data", ["prepare", f"data.path={recipe.data.train}", f"model.path={recipe.teacher}",
                                  f"output={plan.train_data}"],
                 plan.train_data, "tokenize the training corpus with the teacher's tokenizer")  # fmt: skip


def plan_teacher(plan: Plan) -> None:
    """Teacher correction (optional) and the HF export pruning needs; the teacher rows of the table."""
    recipe, run = plan.recipe, plan.run
    plan.teacher = recipe.teacher
    plan.measure(recipe.teacher, "teacher", "teacher")
    if recipe.teacher_correction.enabled:
        corrected = run / "teacher_corrected"
        plan.add("teacher_correction", "train",
                 [f"model.path={recipe.teacher}", f"data.path={plan.train_data}", f"output={corrected}",
                  *plan.parallel, *recipe.teacher_correction.args],
                 corrected, "fine-tune the teacher on the distillation data",
                 curve=dict(label="teacher correction", role="teacher_corrected", student=None,
                            metrics=str(corrected / "metrics.jsonl")))  # fmt: skip
        checkpoint, plan.teacher, which = corrected / "final", str(corrected / "hf"), "the corrected teacher"
    else:
        from minitron.models.checkpoint import is_megatron_checkpoint

        if not (plan.teacher_exists and is_megatron_checkpoint(Path(recipe.teacher))):
            return  # an HF teacher: pruning reads it as it is
        checkpoint, plan.teacher, which = recipe.teacher, str(run / "teacher_hf"), "the teacher"
    plan.add("teacher_export", "convert", [f"model.path={checkpoint}", f"output={plan.teacher}"],
             plan.teacher, f"{which} as a Hugging Face directory (pruning reads HF)")
    if recipe.teacher_correction.enabled:
        plan.measure(plan.teacher, "teacher, corrected", "teacher_corrected")


def plan_importance(plan: Plan) -> None:
    recipe, output = plan.recipe, plan.run / "importance"
    depth = _depth_args(recipe, recipe.teacher) if plan.teacher_exists else []
    plan.add("importance", "importance",
             [f"model.path={plan.teacher}", f"data.path={recipe.data.calib}", f"output={output}", *plan.parallel,
              *recipe.importance_args, *depth],
             output, "importance of channels, neurons, heads and layers on calibration data")  # fmt: skip


def plan_prune(plan: Plan) -> None:
    """One pruned student per recipe student, all from the importance stage's saved scores."""
    recipe = plan.recipe
    for name, student in recipe.students.items():
        pruned = plan.student_dir(name) / "pruned"
        targets = prune_args(student)
        if _prune_settings(recipe, student).target.primary() is not None:  # a budget: the shape is searched
            targets += _search_data_args(plan.train_data, recipe.data.heldout)
        plan.add(f"prune_{name}", "prune",
                 [f"model.path={plan.teacher}", f"data.path={recipe.data.calib}", f"output={pruned}",
                  f"prune.scores={plan.run / 'importance'}", *plan.parallel, *recipe.importance_args, *targets],
                 pruned, f"prune the {name} student from the saved scores", row=f"{name}, pruned")  # fmt: skip


def _student_run(plan: Plan, name: str, kind: str, command: str, inputs: list[str], extra: list[str], about: str):
    """A training run of a student on the shared token budget: its stage and its curve."""
    out, label = plan.student_dir(name) / kind, "from scratch" if kind == "scratch" else kind
    plan.add(f"{'scratch' if kind == 'scratch' else 'distill'}_{name}", command,
             [*inputs, f"data.path={plan.train_data}", f"output={out}", *plan.parallel, *plan.recipe.budget.args(),
              *extra],
             out, about, curve=dict(label=f"{name}, {label}", role=kind, student=name,
                                    metrics=str(out / "metrics.jsonl")))  # fmt: skip


def plan_distill(plan: Plan) -> None:
    recipe = plan.recipe
    for name, student in recipe.students.items():
        if student.distill:
            _student_run(plan, name, "distilled", "distill",
                         [f"teacher.path={plan.teacher}", f"student.path={plan.student_dir(name) / 'pruned'}"],
                         recipe.distill_args, f"distill the {name} student for {recipe.budget.tokens:,} tokens")  # fmt: skip


def plan_scratch(plan: Plan) -> None:
    recipe = plan.recipe
    for name, student in recipe.students.items():
        if student.from_scratch:
            _student_run(plan, name, "scratch", "train",
                         [f"model.path={plan.student_dir(name) / 'pruned'}", "model.init=random"], recipe.scratch_args,
                         f"baseline: the {name} architecture from random init, same tokens")  # fmt: skip


def _prepare_align_data(plan: Plan, path: str, kind: str, seq_length: int) -> str:
    """Tokenize an alignment JSONL once per run with the teacher's tokenizer (the students share it); its prefix."""
    name = f"data_{Path(path).stem}_{seq_length}"
    prefix = plan.run / "data" / "align" / f"{kind}_{Path(path).stem}_{seq_length}"
    if not any(stage.name == name for stage in plan.stages):
        plan.add(name, "data", ["prepare", f"data.format={kind}", f"data.path={path}", f"model.path={plan.teacher}",
                                f"data.seq_length={seq_length}", f"output={prefix}"],
                 prefix, f"tokenize {Path(path).name} ({kind}, chat template, answer-token masks)")  # fmt: skip
    return str(prefix)


def plan_align(plan: Plan) -> None:
    """Each student with an ``align`` block: its SFT stages in order from the distilled model, then DPO/RPO rounds
    referenced to the SFT output; the aligned model becomes a row of every table."""
    from minitron.config.compose import validate

    for name, student in plan.recipe.students.items():
        align = student.align
        if align is None:
            continue
        start, reference, beta = plan.student_dir(name) / "distilled" / "final", None, None
        seq = [f"train.seq_length={align.seq_length}"]
        for number, sft in enumerate(align.sft, 1):
            out = plan.student_dir(name) / ("sft" if len(align.sft) == 1 else f"sft{number}")
            plan.add(f"sft_{name}" if len(align.sft) == 1 else f"sft_{name}_{number}", "sft", [f"model.path={start}", f"data.path={_prepare_align_data(plan, sft.data, 'sft', align.seq_length)}",
                             f"output={out}", *plan.parallel, *seq, *sft.args],
                     out, f"supervised fine-tuning of the {name} student on {Path(sft.data).name}")  # fmt: skip
            start = out / "final"
        if align.dpo is not None:
            out = plan.student_dir(name) / "dpo"
            args = [f"model.path={start}", f"data.path={_prepare_align_data(plan, align.dpo.data, 'preference', align.seq_length)}",
                    f"output={out}", *plan.parallel, *seq, *align.dpo.args]  # fmt: skip
            settings = validate("dpo", args).align
            plan.add(f"dpo_{name}", "dpo", args, out, f"{settings.loss} x {settings.rounds} round(s) of the {name} student")
            reference, beta = start, settings
            start = out / "final" if settings.rounds == 1 else out / f"round-{settings.rounds}" / "final"
        plan.measure(start, f"{name}, aligned", "aligned", name)
        plan.aligned.append(dict(name=name, final=str(start), reference=reference and str(reference), settings=beta,
                                 seq_length=align.seq_length))  # fmt: skip


def plan_eval(plan: Plan) -> None:
    """Held-out loss and KL to the (corrected) teacher of every model: one eval stage and JSON row each.

    Rows: the teachers, then each student's pruned, distilled and from-scratch models together."""
    recipe = plan.recipe
    aligned = {model["student"]: model for model in plan.models if model["role"] == "aligned"}
    plan.models = [model for model in plan.models if model["role"] != "aligned"]
    for name, student in recipe.students.items():
        plan.measure(plan.student_dir(name) / "pruned", f"{name}, pruned", "pruned", name)
        if student.distill:
            plan.measure(plan.student_dir(name) / "distilled" / "final", f"{name}, distilled", "distilled", name)
        if name in aligned:
            plan.models.append(aligned[name])
        if student.from_scratch:
            plan.measure(plan.student_dir(name) / "scratch" / "final", f"{name}, from scratch", "scratch", name)
    for model in plan.models:
        slug = _slug(model["name"])
        output = plan.run / "eval" / f"{slug}.json"
        kl = [] if model["path"] == plan.teacher else [f"eval.teacher={plan.teacher}"]  # KL to itself is 0
        tags = {key: model[key] for key in ("name", "role", "student") if model[key] is not None}
        tags_arg = ",".join(f"'{key}={value}'" for key, value in tags.items())
        plan.add(f"eval_{slug}", "eval",
                 [f"model.path={model['path']}", *kl, f"data.path={recipe.data.heldout}", *plan.parallel,
                  *recipe.eval_args, f"output={output}", f"eval.tags=[{tags_arg}]"],
                 output, f"held-out loss and KL to the teacher: {model['name']}")  # fmt: skip


def plan_benchmarks(plan: Plan) -> None:
    """lm-eval task accuracy (``minitron evaluate``) of every model the eval stages measure."""
    benchmarks = plan.recipe.benchmarks
    if not benchmarks.tasks:
        return
    for model in plan.models:
        output = plan.run / "tasks" / _slug(model["name"])
        plan.add(f"tasks_{_slug(model['name'])}", "evaluate",
                 [f"model.path={model['path']}", *plan.parallel, *benchmarks.args_for(), f"output={output}",
                  "overwrite=true"],
                 output, f"task accuracy ({', '.join(benchmarks.tasks)}): {model['name']}",
                 row=model["name"])  # fmt: skip


def plan_throughput(plan: Plan) -> None:
    """Prefill and decode tokens/s (``minitron bench``) of the teacher and of each student's architecture (its
    final model: distilled, else pruned; the other models of a student share its shape and so its speed)."""
    if not plan.recipe.throughput.enabled:
        return
    for model in plan.teacher_and_students(("pruned", "distilled")):
        output = plan.run / "throughput" / f"{_slug(model['name'])}.json"
        plan.add(f"bench_{_slug(model['name'])}", "bench",
                 [f"model.path={model['path']}", *plan.parallel, "bench.reference=false", *plan.recipe.throughput.args,
                  f"output={output}"],
                 output, f"prefill and decode tokens/s: {model['name']}", row=model["name"])  # fmt: skip


def plan_alignment_report(plan: Plan) -> None:
    """Held-out reward accuracy of each student aligned with DPO/RPO (``minitron rewards``), and the greedy answers
    of the teacher and every student's final model to the recipe's fixed prompts (``minitron generate``)."""
    report = plan.recipe.alignment
    for aligned in plan.aligned:
        if report.heldout_pairs and aligned["reference"] is not None:
            settings, output = aligned["settings"], plan.run / "align" / f"{aligned['name']}_rewards.json"
            pairs = _prepare_align_data(plan, report.heldout_pairs, "preference", aligned["seq_length"])
            plan.add(f"rewards_{aligned['name']}", "rewards",
                     [f"model.path={aligned['final']}", f"reference.path={aligned['reference']}", f"data.path={pairs}",
                      *plan.parallel, f"rewards.seq_length={aligned['seq_length']}", f"align.beta={settings.beta}",
                      f"align.average_logps={_value(settings.average_logps)}", *report.args, f"output={output}"],
                     output, f"held-out reward accuracy of the aligned {aligned['name']} student",
                     row=f"{aligned['name']}, aligned")  # fmt: skip
    if not report.prompts:
        return
    for model in plan.teacher_and_students(("distilled", "aligned")):
        output = plan.run / "answers" / f"{_slug(model['name'])}.json"
        plan.add(f"answers_{_slug(model['name'])}", "generate",
                 [f"model.path={model['path']}", *plan.parallel, f"prompts={_value(list(report.prompts))}",
                  f"generate.max_new_tokens={report.max_new_tokens}", f"output={output}"],
                 output, f"greedy answers to {len(report.prompts)} fixed prompts: {model['name']}",
                 row=model["name"])  # fmt: skip


def plan_export(plan: Plan) -> None:
    if not plan.recipe.export:
        return
    for name, student in plan.recipe.students.items():
        if student.distill:
            hf = plan.student_dir(name) / "hf"
            plan.add(f"export_{name}", "convert",
                     [f"model.path={plan.student_dir(name) / 'distilled' / 'final'}", f"output={hf}"],
                     hf, f"the distilled {name} student as a Hugging Face directory")  # fmt: skip
    for aligned in plan.aligned:
        hf = plan.student_dir(aligned["name"]) / "aligned_hf"
        plan.add(f"export_{aligned['name']}_aligned", "convert", [f"model.path={aligned['final']}", f"output={hf}"],
                 hf, f"the aligned {aligned['name']} student as a Hugging Face directory")


def plan_report(plan: Plan) -> None:
    plan.add(REPORT, REPORT, [], plan.run / "report.md", "report.md and its plots")


PLANNERS = (plan_assets, plan_data, plan_teacher, plan_importance, plan_prune, plan_distill, plan_scratch, plan_align,
            plan_eval, plan_benchmarks, plan_throughput, plan_alignment_report, plan_export, plan_report)  # fmt: skip


def plan_stages(cfg: PipelineCommand, teacher_exists: bool = True) -> list[Stage]:
    """The stages of ``cfg.recipe`` in the order they run.

    ``teacher_exists=False`` (before the assets stage has run, in a dry run) skips the checks that
    read the teacher's config.
    """
    plan = Plan(cfg, teacher_exists)
    for planner in PLANNERS:
        planner(plan)
    names = [stage.name for stage in plan.stages]
    if len(set(names)) != len(names):
        raise MinitronError(f"recipe {cfg.recipe.name}: two stages share a name ({names}); rename the students")
    unknown = sorted({stage.command for stage in plan.stages} - set(COMMANDS) - {REPORT})
    if unknown:
        raise AssertionError(f"planner produced commands missing from minitron.commands: {unknown}")
    return plan.stages
