"""`minitron distill`: its configs compose, bad input is refused with the field named and nothing written, and
the command distills end to end into a student that `minitron convert` exports to Hugging Face."""

import functools
import json
from pathlib import Path

import pytest
import torch

from conftest import (REPO, assert_group_option_documented, compose_command, last_json, prepare_rotating_corpus,
                      run_cli, run_in_process)  # fmt: skip
from distill_helpers import make_student, records, student_model, teacher_model  # noqa: F401 (fixtures)

DISTILL_GROUP = sorted((REPO / "conf" / "distill").glob("*.yaml"))


compose = functools.partial(compose_command, "distill")


@pytest.mark.parametrize("path", DISTILL_GROUP, ids=[p.stem for p in DISTILL_GROUP])
def test_distill_group_composes_and_documents_every_field(path):
    from minitron.config.distill import DistillSettings

    cfg = compose(f"distill={path.stem}", "teacher.path=T", "student.path=S", "data.path=D", "output=O")
    assert isinstance(cfg.distill, DistillSettings)
    assert_group_option_documented(path, DistillSettings, "distill")


def test_defaults_follow_the_paper():
    cfg = compose("teacher.path=T", "student.path=S", "output=O")
    assert (cfg.distill.loss, cfg.distill.temperature, cfg.distill.lm_loss_weight) == ("forward_kl", 1.0, 0.0)
    assert cfg.distill.hidden_pairs == [] and (cfg.train.lr, cfg.train.min_lr) == (1e-4, 1e-5)


@pytest.mark.parametrize(
    "override,message",
    [
        ("distill.loss=jsd", "distill.loss='jsd': use one of forward_kl, reverse_kl, topk"),
        ("distill.loss=topk", "distill.loss=topk needs distill.topk=K"),
        ("distill.temperature=0", "distill.temperature=0.0: must be > 0"),
        ("distill.hidden_loss=l1", "distill.hidden_loss='l1'"),
        ("distill.hidden_pairs=[[1,2,3]]", "distill.hidden_pairs: [1, 2, 3] is not a [student_layer, teacher_layer]"),
        ("distill.lm_loss_weight=-1", "distill.lm_loss_weight=-1.0: must be >= 0"),
    ],
)
def test_schema_rejects_bad_values(override, message):
    from minitron.errors import MinitronError

    with pytest.raises(MinitronError) as err:
        compose("teacher.path=T", "student.path=S", "output=O", override)
    assert message in str(err.value)


run_recipe = functools.partial(run_in_process, "distill")  # (monkeypatch, capfd, *args, world_size=None)


def other_tokenizer(model_dir: Path) -> Path:
    """Replace ``model_dir``'s tokenizer by one of the same size with other ids (characters reversed)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(vocab={chr(i): 255 - i for i in range(256)}, unk_token=chr(0)))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=chr(10)).save_pretrained(model_dir)
    return model_dir


@pytest.mark.parametrize(
    "case,message",
    [
        ("no-teacher", "teacher.path={tmp}/nowhere: no such file or directory"),
        ("no-student", "student.path={tmp}/nowhere: no such file or directory"),
        ("vocab-size", "teacher.path and student.path have different vocabularies (teacher 256 tokens, student 258)"),
        ("tokenizer", "teacher.path and student.path have different tokenizers (same size, different tokens)"),
        ("pair-range", "distill.hidden_pairs: student layer 2 in [2, 0] is out of range: the student has 2 layers"),
        ("pair-stage", "distill.hidden_pairs: teacher layer 1 is not on the last pipeline stage (layers 2..3 at "
                       "parallel.pp=2)"),
        ("topk", "distill.topk=300 exceeds the vocabulary (256 tokens)"),
        ("teacher-layout", "parallel.pp=4 does not divide the teacher's num_layers=2"),
        ("no-data", "data.path is required"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_and_nothing_written(case, message, student_model, teacher_model, tmp_path,
                                                  monkeypatch, capfd):  # fmt: skip
    output = tmp_path / "run"
    args = {"teacher.path": teacher_model, "student.path": student_model, "data.path": tmp_path / "data",
            "output": output, "train.seq_length": 32}  # fmt: skip
    world_size = None
    if case == "no-teacher":
        args["teacher.path"] = tmp_path / "nowhere"
    elif case == "no-student":
        args["student.path"] = tmp_path / "nowhere"
    elif case == "vocab-size":
        args["student.path"] = make_student(tmp_path / "models" / "odd", family="odd")
    elif case == "tokenizer":
        args["student.path"] = other_tokenizer(make_student(tmp_path / "models" / "other"))
    elif case == "pair-range":
        args["distill.hidden_pairs"] = "[[2,0]]"
    elif case == "pair-stage":
        args.update({"distill.hidden_pairs": "[[1,1]]", "parallel.pp": 2})
        world_size = 2
    elif case == "topk":
        args.update({"distill.loss": "topk", "distill.topk": 300})
    elif case == "teacher-layout":  # roles swapped: the 2-layer model as the teacher
        args.update({"teacher.path": student_model, "student.path": teacher_model, "parallel.pp": 4})
        world_size = 4
    elif case == "no-data":
        del args["data.path"]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run_recipe(monkeypatch, capfd, *(f"{k}={v}" for k, v in args.items()), world_size=world_size)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message.format(tmp=tmp_path) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert not output.exists()


@pytest.mark.slow
def test_distill_command_and_hf_export(student_model, teacher_model, tmp_path):
    from transformers import AutoModelForCausalLM

    prefix = prepare_rotating_corpus(tmp_path, student_model, "the student learns what the teacher says one two three "
                                     "four five six seven")  # fmt: skip
    run, hf = tmp_path / "run", tmp_path / "hf"
    result = run_cli("distill", f"teacher.path={teacher_model}", f"student.path={student_model}", f"data.path={prefix}",
                     f"output={run}", "train.steps=3", "train.global_batch_size=2", "train.seq_length=32",
                     "train.warmup_steps=1", "train.lr=1e-3", "data.split='90,10,0'", "train.eval_interval=3",
                     "train.eval_iters=1", "logging.progress=false", "distill.hidden_pairs=[[-1,-1]]")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["steps"] == 3 and summary["valid_loss"] > 0 and "distill" in result.stderr
    assert "hidden" in records(run)[0] and records(run, "valid")[0]["step"] == 3
    assert "teacher:" in (run / "config.yaml").read_text()
    assert json.loads((run / "teacher.json").read_text())["path"] == str(teacher_model)

    # resuming the run with another teacher is refused before anything is touched
    before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))
    other = run_cli("distill", f"teacher.path={student_model}", f"student.path={student_model}", f"data.path={prefix}",
                    f"output={run}", "train.steps=4", "train.global_batch_size=2", "train.seq_length=32", "train.warmup_steps=1")  # fmt: skip
    assert other.returncode == 2 and other.stderr.count("error:") == 1
    assert f"is a distillation from teacher {teacher_model}, not teacher.path={student_model}" in other.stderr
    assert sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*")) == before
    # ... and so is resuming with other hidden-state pairs (the checkpoints hold their projections)
    pairs = run_cli("distill", f"teacher.path={teacher_model}", f"student.path={student_model}", f"data.path={prefix}",
                    f"output={run}", "train.steps=4", "train.global_batch_size=2", "train.seq_length=32", "train.warmup_steps=1")  # fmt: skip
    assert pairs.returncode == 2 and pairs.stderr.count("error:") == 1
    assert "started with distill.hidden_pairs=[[-1, -1]]" in pairs.stderr and "distill.hidden_pairs=[]" in pairs.stderr
    assert sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*")) == before

    exported = run_cli("convert", f"model.path={run / 'final'}", f"output={hf}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    distilled = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    original = AutoModelForCausalLM.from_pretrained(student_model, dtype=torch.float32)
    assert distilled.config.hidden_size == original.config.hidden_size == 64
    assert distilled.state_dict().keys() == original.state_dict().keys()
    assert all(not torch.equal(a, b) for a, b in zip(distilled.state_dict().values(), original.state_dict().values()))
