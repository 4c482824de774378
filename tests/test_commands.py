"""The `minitron` command line: the registry matches recipes/ and conf/, help lists every setting with its
comment, `~` in paths works, and bad command lines end in one `error:` line, exit 2, nothing written."""

import importlib
import os
import subprocess
from pathlib import Path

import pytest

from conftest import MINITRON, REPO, clean_env, last_json

from minitron.commands import COMMANDS


def minitron(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MINITRON, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=clean_env({"PYTHONPATH": str(REPO), **(env or {})}))  # fmt: skip


def test_registry_matches_recipes_and_configs():
    from minitron.config import schema

    conf = Path(schema.CONF_DIR)
    recipes = {p.stem for p in (REPO / "recipes").glob("*.py") if p.stem != "__init__"}
    declared = {c.module.rpartition(".")[2] for c in COMMANDS.values() if c.module.startswith("minitron.recipes.")}
    assert declared == recipes, "every recipe is a command and every command's recipe exists"
    configs = {c.config for c in COMMANDS.values() if c.config}
    assert configs == {p.stem for p in conf.glob("*.yaml")}, "every primary config belongs to one command"
    for command in COMMANDS.values():
        module = importlib.import_module(command.module)
        assert callable(module.main), command.name
        assert command.help and len(command.help) < 110


def test_help_lists_every_command(tmp_path):
    result = minitron("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in COMMANDS.values():
        assert f"  {' '.join(filter(None, (command.name, command.subcommand)))}  " in result.stdout
        assert command.help in result.stdout


@pytest.mark.parametrize("name", [c.name for c in COMMANDS.values() if c.config])
def test_command_help_shows_every_setting_with_its_comment(name, tmp_path):
    from minitron.config.compose import compose
    from minitron.config.describe import _rows

    command = COMMANDS[name]
    args = [name, *([command.subcommand] if command.subcommand else []), "--help"]
    result = minitron(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = _rows(compose(command.config, [], check=False))
    assert rows
    for key, _, _, comment in rows:
        assert comment, f"{name}: {key} has no comment in its schema"
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(f"{key} = "))
        assert line.rstrip().endswith(f"# {comment}")
    assert list(tmp_path.iterdir()) == []


def test_train_help_values_are_the_composed_ones(tmp_path):
    result = minitron("train", "--help", cwd=tmp_path)
    lines = {line.split("=")[0].strip(): line for line in result.stdout.splitlines() if " = " in line}
    assert "train.warmup_steps = 10 " in lines["train.warmup_steps"]  # conf/train/default.yaml, not the dataclass's 0
    assert "optimizer steps (global batches) of the whole run" in lines["train.steps"]


def test_tilde_in_paths(tiny_models, tmp_path):
    """`~` works in any path value on the command line, in recipe YAML, and in MINITRON_HOME."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    os.symlink(tiny_models["llama31"], home / "models" / "X")
    env = {"HOME": str(home)}
    result = minitron("info", "model.path=~/models/X", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert last_json(result.stdout)["path"] == str(home / "models" / "X")

    result = minitron("convert", "model.path=~/models/X", "output=~/ckpt", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (home / "ckpt" / "minitron.json").is_file()

    from minitron.config.schema import minitron_home

    os.environ["HOME"], saved = str(home), os.environ["HOME"]
    os.environ["MINITRON_HOME"], saved_home = "~/cache", os.environ.get("MINITRON_HOME")
    try:
        assert str(minitron_home()) == str(home / "cache")
    finally:
        os.environ["HOME"] = saved
        if saved_home is None:
            del os.environ["MINITRON_HOME"]
        else:
            os.environ["MINITRON_HOME"] = saved_home

    recipe_dir = tmp_path / "conf" / "recipe"
    recipe_dir.mkdir(parents=True)
    (recipe_dir / "mine.yaml").write_text(
        "name: mine\nteacher: ~/models/X\ndata: {train: ~/train.jsonl, calib: ~/calib.jsonl, heldout: ~/h.jsonl}\n"
        "students: {w: {prune: {ffn_hidden_size: 64}}}\n"
    )
    result = minitron("pipeline", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "recipe=mine", "dry_run=true",
                      "output=~/run", cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"model.path={home}/models/X" in result.stderr and f"data.path={home}/calib.jsonl" in result.stderr
    assert last_json(result.stdout)["output"] == str(home / "run") and not (home / "run").exists()


BAD_COMMAND_LINES = [
    (["infoo"], "unknown command 'infoo': did you mean `minitron info`?"),
    (["data"], "missing data sub-command: use `minitron data prepare key=value ...`"),
    (["data", "prepar"], "unknown data sub-command 'prepar'"),
    (["info", "model.pth=M"], "model.pth: no such setting (did you mean model.path?)"),
    (["info", "model.path=M", "info.seq_lenght=5"], "info.seq_lenght: no such setting (did you mean info.seq_length?)"),
    (["info", "model.path=M", "info.seq_length=abc"], "info.seq_length: 'abc' is not a valid integer"),
    (["info", "model.path=M", "+info.extra=1"], "+info.extra=1: `+` adds a setting the schema does not have"),
    (["info", "model.path"], "model.path: expected key=value"),
    (["info", "model.path=[1,"], "model.path=[1,: Hydra cannot parse this value; quote it"),
    (["info"], "model.path is required: pass model.path=..."),
    (["info", "model.path=M", "model.dtype=float8"], "model.dtype='float8': use auto, float32"),
    (["train", "model.path=M", "data.path=D", "output=OUT", "train=teacher_correctio"],
     "train=teacher_correctio: no such train config (did you mean train=teacher_correction?)"),
    (["train", "train=teacher_correction", "model.path=M", "data.path=D", "output=OUT", "train.steps=100"],
     "train.warmup_steps=120 must be smaller than train.steps=100: add train.warmup_steps=10"),
    (["convert", "model.path=M", "output=OUT", "parallel.tp=0"], "parallel.tp=0: must be >= 1"),
    (["eval", "model.path=M", "data.path=D", "eval.seq_length=1"], "eval.seq_length=1: must be >= 2"),
    (["distill", "teacher.path=M", "student.path=M", "data.path=D", "output=OUT", "distill.temprature=2"],
     "distill.temprature: no such setting (did you mean distill.temperature?)"),
    (["prune", "model.path=M", "output=OUT", "prune.hiden_size=3"],
     "prune.hiden_size: no such setting (did you mean prune.hidden_size?)"),
    (["pipeline", "recipe=demo_smolm2"], "recipe=demo_smolm2: no such recipe config (did you mean recipe=demo_smollm2?)"),
    (["pipeline", "recipe.budget.stpes=3"], "recipe.budget.stpes: no such setting (did you mean recipe.budget.steps?)"),
    (["data", "prepare", "data.path=D", "model.path=M", "output=OUT", "data.workerz=2"],
     "data.workerz: no such setting (did you mean data.workers?)"),
]


@pytest.mark.parametrize("argv,message", BAD_COMMAND_LINES, ids=[" ".join(a) for a, _ in BAD_COMMAND_LINES])
def test_bad_command_lines_give_one_error_line(argv, message, tiny_models, tmp_path):
    argv = [arg.replace("=M", f"={tiny_models['llama31']}") for arg in argv]
    result = minitron(*argv, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}"), line
    assert list(tmp_path.iterdir()) == [], "nothing written"


def test_cfg_job_prints_the_composed_config(tiny_models, tmp_path):
    result = minitron("eval", f"model.path={tiny_models['llama31']}", "data.path=D", "eval.seq_length=64", "--cfg", "job",
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "seq_length: 64" in result.stdout
    result = minitron("eval", "eval.seq_lenght=64", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 2 and "did you mean eval.seq_length?" in result.stderr


def test_version(tmp_path):
    from minitron import __version__

    result = minitron("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"minitron {__version__}"
