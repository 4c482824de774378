"""Every command README.md shows works as written.

The README's `bash` blocks are read line by line. The first block (`make demo`, `make test`) is what CI
itself runs. Every other command runs for real, in order, in a scratch directory whose home holds a tiny
model at ~/models/Llama-3.1-8B (32 layers, so the depth examples make sense) and small text files; a
command that needs the real 8B model, 8 GPUs or hours (see HEAVY) is composed and validated instead, with
exactly the arguments written (a pipeline runs with dry_run=true, which plans and validates every stage).
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, clean_env
from tiny_models import make_tiny_model, save_char_tokenizer

README = REPO / "README.md"
# a command containing one of these is composed and validated, not run: why
HEAVY = {
    "--nproc-per-node 8": "8 processes (GPUs)",
    "train=teacher_correction": "the paper's 100B-token schedule",
    "minitron importance": "default calibration set: 1024 x 4096 tokens",
    "minitron prune": "8B-sized targets / default calibration set",
    "students/": "reads a pruned 8B student",
    "runs/distill": "reads the distillation of an 8B student",
    "recipe=demo_smollm2": "the ~29-minute demo (`make demo` runs it)",
    "runs/sft": "reads the SFT run of an 8B student",
}


def readme_commands() -> list[str]:
    """The command lines of README.md's bash blocks after the first (comments and continuations resolved)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2 and "make demo" in blocks[0] and "make test" in blocks[0]
    commands = []
    for block in blocks[1:]:
        for line in block.replace("\\\n", " ").splitlines():
            if shlex.split(line, comments=True):
                commands.append(line.strip())  # run by bash as written (it drops the trailing comment)
    return commands


def test_readme_opens_with_the_two_setup_commands():
    first = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S)[1]
    assert [line.split("#")[0].strip() for line in first.strip().splitlines()] == ["make demo", "make test"]


def minitron_args(command: str) -> list[str]:
    """``minitron ARGS`` or ``torchrun ... $(which minitron) ARGS`` -> ARGS."""
    words = shlex.split(command, comments=True)
    if words[0] == "minitron":
        return words[1:]
    assert words[0] == "torchrun" and "$(which" in words, command
    return words[words.index("minitron)") + 1:]


def validate(args: list[str], home: Path) -> None:
    """Compose and validate a command line in-process (what the CLI does before it runs anything)."""
    from minitron.cli import _resolve
    from minitron.config.compose import validate as validate_config

    command, rest = _resolve(args)
    assert command.config, args
    saved = os.environ["HOME"]
    os.environ["HOME"] = str(home)
    try:
        validate_config(command.config, rest, command=f"minitron {command.name}")
    finally:
        os.environ["HOME"] = saved


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("readme")
    home, work = root / "home", root / "work"
    model = make_tiny_model("llama31", home / "models" / "Llama-3.1-8B", num_layers=32, seed=3,
                            num_attention_heads=16, num_key_value_heads=8)  # the paper recipe's TP=8 divides them
    save_char_tokenizer(model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1024}))
    work.mkdir()
    words = "the of and to in is was for on that with as by at from this be are an or it which has had".split()
    for name, docs, seed in (("corpus", 120, 0), ("heldout", 6, 1), ("calib", 20, 2)):
        rng = __import__("random").Random(seed)
        lines = [json.dumps({"text": " ".join(rng.choice(words) for _ in range(300))}) for _ in range(docs)]
        (work / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return home, work


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~40 commands run or validated one after another
def test_every_readme_command_works_as_written(workspace):
    home, work = workspace
    bin_dir = Path(sys.executable).parent
    env = clean_env({
        "HOME": str(home),
        "MINITRON_HOME": os.environ.get("MINITRON_HOME") or str(Path.home() / ".cache" / "minitron"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
    })  # fmt: skip
    from minitron.assets import assets_present

    commands = readme_commands()
    assert len(commands) >= 20
    ran, composed = [], []
    for command in commands:
        heavy = [why for marker, why in HEAVY.items() if marker in command]
        args = minitron_args(command)
        if args[0] == "pipeline":  # plans and validates every stage; runs nothing
            if "_smollm2" in command and not assets_present("smollm2-135m", "sotu", "benchmarks", "align-demo"):
                validate(args, home)
                composed.append(command)
                continue
            words = shlex.split(command, comments=True)
            command, heavy = shlex.join(words if "dry_run=true" in words else [*words, "dry_run=true"]), []
        if args[0] == "evaluate" and not assets_present("benchmarks"):
            heavy = ["the benchmarks asset is not fetched"]
        if heavy:
            validate(args, home)
            composed.append(command)
            continue
        result = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                                timeout=600)  # fmt: skip
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        ran.append(command)
    assert len(ran) >= 12, ran
    # what the commands left is what the README says they make
    for path in ("ckpt/llama31-8b/minitron.json", "hf/llama31-8b/config.json", "data/corpus.bin",
                 "runs/tc-short/final/minitron.json", "hf/llama31-8b-corrected/model.safetensors",
                 "runs/scratch/final/minitron.json"):  # fmt: skip
        assert (work / path).exists(), path
    print(f"README: {len(ran)} commands run, {len(composed)} composed and validated")
    shutil.rmtree(work / "runs", ignore_errors=True)
