"""Refuse bad input to `minitron distill` before anything is written, each with the field and the fix.

Config-only checks are in the schema (:mod:`minitron.config.distill`); these need the two models, the
number of processes or the data on disk. The student is checked as `minitron train` checks its model
(:func:`minitron.training.checks.check_train_inputs`).
"""

from __future__ import annotations

from pathlib import Path

from minitron.config.distill import DistillCommand
from minitron.errors import MinitronError
from minitron.fsutil import write_json_atomic
from minitron.models.checkpoint import ModelSource, open_model
from minitron.models.megatron_gpt import check_parallel_layout
from minitron.models.tokenizer import vocabulary
from minitron.training.checks import check_train_inputs


def open_models(cfg: DistillCommand) -> tuple[ModelSource, ModelSource]:
    """``(student, teacher)`` sources; a missing path is reported under its own field name."""
    sources = []
    for role in ("student", "teacher"):
        path = Path(getattr(cfg, role).path).expanduser()
        if not path.exists():
            raise MinitronError(f"{role}.path={path}: no such file or directory")
        sources.append(open_model(path))
    return sources[0], sources[1]


def normalized_pairs(pairs, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """``distill.hidden_pairs`` as non-negative (student, teacher) layer indices; negative ones count from the end."""
    result = []
    for student_layer, teacher_layer in pairs:
        indices = []
        for role, layer, count in (("student", student_layer, student_layers),
                                   ("teacher", teacher_layer, teacher_layers)):  # fmt: skip
            if not -count <= layer < count:
                raise MinitronError(
                    f"distill.hidden_pairs: {role} layer {layer} in [{student_layer}, {teacher_layer}] is out of "
                    f"range: the {role} has {count} layers (0..{count - 1}, or -1 for the last)"
                )
            indices.append(layer % count)
        result.append((indices[0], indices[1]))
    return result


def check_distill_inputs(cfg: DistillCommand, student: ModelSource, teacher: ModelSource, world_size: int) -> None:
    """Raise :class:`MinitronError` for the first problem found; reads files, writes nothing."""
    tp, pp, settings = cfg.parallel.tp, cfg.parallel.pp, cfg.distill
    if student.arch.vocab_size != teacher.arch.vocab_size:
        raise MinitronError(
            f"teacher.path and student.path have different vocabularies (teacher {teacher.arch.vocab_size} tokens, "
            f"student {student.arch.vocab_size}): distillation needs the same tokenizer; prune the student from "
            "this teacher"
        )
    student_vocab, teacher_vocab = vocabulary(student.carried_files), vocabulary(teacher.carried_files)
    if student_vocab is not None and teacher_vocab is not None and student_vocab != teacher_vocab:
        raise MinitronError(
            "teacher.path and student.path have different tokenizers (same size, different tokens): "
            "distillation needs the same tokenizer; prune the student from this teacher"
        )
    check_parallel_layout(student.arch, tp, pp, role="student")
    check_parallel_layout(teacher.arch, tp, pp, role="teacher")
    if cfg.train.seq_length > teacher.arch.max_position_embeddings:
        raise MinitronError(
            f"train.seq_length={cfg.train.seq_length} exceeds the teacher's max_position_embeddings="
            f"{teacher.arch.max_position_embeddings}; use train.seq_length<={teacher.arch.max_position_embeddings}"
        )
    if settings.topk is not None and settings.topk > student.arch.vocab_size:
        raise MinitronError(
            f"distill.topk={settings.topk} exceeds the vocabulary ({student.arch.vocab_size} tokens); use a smaller k"
        )
    pairs = normalized_pairs(settings.hidden_pairs, student.arch.num_layers, teacher.arch.num_layers)
    for student_layer, teacher_layer in pairs:
        for role, layer, count in (("student", student_layer, student.arch.num_layers),
                                   ("teacher", teacher_layer, teacher.arch.num_layers)):  # fmt: skip
            first_on_last_stage = count - count // pp
            if layer < first_on_last_stage:
                raise MinitronError(
                    f"distill.hidden_pairs: {role} layer {layer} is not on the last pipeline stage (layers "
                    f"{first_on_last_stage}..{count - 1} at parallel.pp={pp}), where hidden-state losses are "
                    "computed; pair later layers or use a smaller parallel.pp"
                )
    check_train_inputs(cfg, student, world_size)


TEACHER_RECORD = "teacher.json"


def check_same_teacher(output, teacher: ModelSource) -> None:
    """Refuse to resume a distillation run with another teacher than the one it started with."""
    import json

    record = Path(output) / TEACHER_RECORD
    if not record.is_file():
        return
    try:
        started = json.loads(record.read_text())
    except json.JSONDecodeError:
        return  # a record cut short by a kill: the next start rewrites it
    if started.get("identity") != teacher.fingerprint(same_for_copies=True):
        raise MinitronError(
            f"output={output} is a distillation from teacher {started.get('path')}, not teacher.path={teacher.path} "
            "(its config or weights differ); resume with the same teacher or choose a new output directory"
        )


def record_teacher(run_dir: Path, teacher: ModelSource) -> None:
    """Write RUN/teacher.json (rank 0): which teacher this run distills from."""
    from minitron.runtime import is_main_process

    if is_main_process():
        record = {"path": str(teacher.path), "identity": teacher.fingerprint(same_for_copies=True)}
        write_json_atomic(run_dir / TEACHER_RECORD, record)


def check_same_hidden_pairs(cfg: DistillCommand) -> None:
    """Refuse to resume a run whose checkpoints hold projections for other ``distill.hidden_pairs``."""
    import yaml

    config = Path(cfg.output) / "config.yaml"
    if not config.is_file() or not (Path(cfg.output) / "checkpoints").is_dir():
        return
    try:
        started = (yaml.safe_load(config.read_text()) or {}).get("distill", {}).get("hidden_pairs", [])
    except yaml.YAMLError:
        return
    if [list(p) for p in started] != [list(p) for p in cfg.distill.hidden_pairs]:
        raise MinitronError(
            f"output={cfg.output} was started with distill.hidden_pairs={started}; its checkpoints hold that many "
            f"projections, so it cannot resume with distill.hidden_pairs={[list(p) for p in cfg.distill.hidden_pairs]}; "
            "resume with the same pairs or choose a new output directory"
        )
