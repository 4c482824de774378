"""minitron installs as a wheel: recipes and configs ship inside the `minitron` package, nothing else lands
in site-packages, and the installed commands run from any directory; the pipeline finds `minitron` on PATH."""

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, clean_env, last_json


def test_package_list_matches_the_tree():
    """pyproject lists every package explicitly (recipes/ and conf/ are mapped into minitron)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "minitron").rglob("__init__.py")}
    assert listed == on_disk | {"minitron.recipes", "minitron.conf"}
    assert config["package-dir"] == {"minitron.recipes": "recipes", "minitron.conf": "conf"}


def test_pipeline_finds_minitron_on_path(tmp_path, monkeypatch):
    """NGC images put console scripts in /usr/local/bin, not beside the interpreter: PATH decides."""
    from minitron.errors import MinitronError
    from minitron.pipeline import runner
    from minitron.pipeline.stages import Stage

    interpreter_dir, bin_dir = tmp_path / "python" / "bin", tmp_path / "usr-local-bin"
    interpreter_dir.mkdir(parents=True)
    bin_dir.mkdir()
    script = bin_dir / "minitron"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter_dir / "python3"))
    monkeypatch.setenv("PATH", str(bin_dir))
    argv = runner.stage_command(Stage("eval_x", "eval", ["model.path=M"]), "torchrun --nproc-per-node 2")
    assert argv == ["torchrun", "--nproc-per-node", "2", str(script), "eval", "model.path=M"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MinitronError, match="`minitron` executable is not on PATH"):
        runner.stage_command(Stage("eval_x", "eval", []), "torchrun --nproc-per-node 2")


@pytest.mark.slow
def test_wheel_installs_and_runs_from_another_directory(tiny_models, text_file, tmp_path):
    # build the wheel (what `pip install .` builds) and check what it would put into site-packages
    # (from a copy of the tree: an in-tree build would leave build/ in the repository)
    source, dist = tmp_path / "source", tmp_path / "dist"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info",
                                                                "__pycache__", "tests", "benchmarks"))  # fmt: skip
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(source)], check=True, capture_output=True, timeout=600)  # fmt: skip
    (wheel,) = dist.glob("minitron-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"minitron"}
    for member in ("minitron/recipes/train.py", "minitron/conf/pipeline.yaml", "minitron/conf/recipe/demo_smollm2.yaml",
                   "minitron/conf/train/teacher_correction.yaml", "minitron/conf/hydra/minitron.yaml"):  # fmt: skip
        assert member in names, member

    # a fresh environment: the wheel installed without dependencies; they come from this environment's
    # site-packages through a .pth line (this environment's editable minitron is not on that path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python*/site-packages"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    (site / "zz_deps.pth").write_text(f"{deps}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=600)  # fmt: skip
    assert (site / "minitron" / "conf" / "eval.yaml").is_file() and not (site / "recipes").exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env({"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    env.pop("PYTHONPATH", None)

    def installed(*args) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "minitron"), *map(str, args)], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import minitron, minitron.config.schema as s; "
                            "print(minitron.__file__); print(s.CONF_DIR)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert all(path.startswith(str(site)) for path in where), where
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import recipes"], cwd=elsewhere, env=env,
                          capture_output=True).returncode != 0  # fmt: skip

    result = installed("info", f"model.path={tiny_models['llama31']}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert last_json(result.stdout)["params"] > 0
    result = installed("eval", f"model.path={tiny_models['llama31']}", f"data.path={text_file}", "eval.seq_length=64",
                       "eval.max_windows=4", f"output={elsewhere / 'eval.json'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((elsewhere / "eval.json").read_text())["loss"] == last_json(result.stdout)["loss"]
    result = installed("train", "--help")
    assert result.returncode == 0 and "train.steps = 100" in result.stdout

    conf = tmp_path / "myconf" / "recipe"
    conf.mkdir(parents=True)
    (conf / "tiny.yaml").write_text(
        f"name: tiny\nteacher: {tiny_models['llama31']}\n"
        f"data: {{train: {text_file}, calib: {text_file}, heldout: {text_file}}}\n"
        "students: {w: {prune: {ffn_hidden_size: 64}, from_scratch: true}}\n"
        "budget: {steps: 20, global_batch_size: 2, micro_batch_size: 1, seq_length: 32}\n"
    )
    result = installed("pipeline", f"hydra.searchpath=[file://{conf.parent}]", "recipe=tiny", "dry_run=true",
                       "launcher=torchrun --nproc-per-node 2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    planned = [stage["name"] for stage in last_json(result.stdout)["stages"]]
    assert planned == ["data", "importance", "prune_w", "distill_w", "scratch_w", "eval_teacher", "eval_w_pruned",
                       "eval_w_distilled", "eval_w_from_scratch", "export_w", "report"]  # fmt: skip
    assert "torchrun --nproc-per-node 2 minitron distill" in result.stderr
    assert not (elsewhere / "runs").exists()
