"""launch/slurm_pipeline.sbatch on a real one-node Slurm cluster (tests/infra/slurm_cluster.py): the tiny recipe's
parallel stages run at TP=2 through srun + node_torchrun.sh (2 processes from the job's 2 GPUs, fake devices);
a job cancelled in the middle of distillation is resubmitted unchanged and resumes to the end."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import slurm_cluster
from conftest import REPO, clean_env, free_port
from pipeline.test_pipeline import manifest, pipeline_args, teacher_model, tiny_recipe  # noqa: F401 (fixture)

pytestmark = [pytest.mark.infra, pytest.mark.slow]
SBATCH = REPO / "launch" / "slurm_pipeline.sbatch"


@pytest.fixture(scope="module")
def cluster():
    """A fresh one-node cluster (2 fake GPUs) for this module; stopped by PID afterwards, pass or fail."""
    if os.geteuid() != 0:
        pytest.skip("needs root: installs slurm-wlm and munge, starts their daemons")
    root = Path(tempfile.mkdtemp(prefix="minitron-slurm-"))
    try:
        yield slurm_cluster.start(root, gpus=2)
    finally:
        slurm_cluster.stop(root)
        shutil.rmtree(root, ignore_errors=True)


def submit(cluster: dict, log: Path, *args) -> str:
    """``sbatch launch/slurm_pipeline.sbatch ARGS`` from the repository root with this venv's minitron on PATH and
    this checkout first on PYTHONPATH; returns the job id."""
    environment = clean_env({
        **{k: v for k, v in cluster.items() if k in ("SLURM_CONF", "PATH")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cluster['PATH']}",
        "PYTHONPATH": str(REPO), "MASTER_PORT": str(free_port()),
    })  # fmt: skip
    command = ["sbatch", "--parsable", "--gpus-per-node=2", f"--output={log}", str(SBATCH), *map(str, args)]
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.strip().split(";")[0]


def job_state(cluster: dict, job: str) -> dict:
    """``scontrol show job`` as a dict (JobState, ExitCode, ...)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job], env=cluster, capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def wait_job(cluster: dict, job: str, log: Path, timeout: float = 900) -> dict:
    """Poll until the job has ended (faster than sbatch --wait); returns its final state."""
    deadline = time.monotonic() + timeout
    while (state := job_state(cluster, job)).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
        assert time.monotonic() < deadline, f"job {job} still {state.get('JobState')}\n{tail(log)}"
        time.sleep(1)
    return state


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-5000:] if log.exists() else f"{log}: no output"


def tp2_recipe(conf: Path, teacher: Path, steps: int) -> Path:
    """The tiny recipe (tests/pipeline) at TP=2 with one width student, no teacher correction, no baseline."""
    return tiny_recipe(conf, teacher, steps=steps, parallel={"tp": 2, "pp": 1},
                       teacher_correction={"enabled": False, "args": []},
                       students={"width": {"prune": {"hidden_size": 48, "ffn_hidden_size": 128}}})  # fmt: skip


def test_slurm_pipeline_sbatch_runs_the_recipe_at_tp2(cluster, teacher_model, tmp_path):  # noqa: F811
    conf, run, log = tp2_recipe(tmp_path / "conf", teacher_model, steps=2), tmp_path / "run", tmp_path / "job.out"
    started = time.perf_counter()
    job = submit(cluster, log, *pipeline_args(conf, run)[1:])
    state = wait_job(cluster, job, log)
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", f"{state}\n{tail(log)}"
    stages = manifest(run)
    assert {record["status"] for record in stages.values()} == {"done"}
    assert list(stages) == ["data", "importance", "prune_width", "distill_width", "eval_teacher", "eval_width_pruned",
                            "eval_width_distilled", "export_width", "report"]  # fmt: skip
    for name in ("importance", "distill_width", "eval_width_distilled"):  # parallel stages: srun + torchrun, TP=2
        stage_log = (run / "logs" / f"{name}.log").read_text()
        assert "srun --kill-on-bad-exit=1 --ntasks-per-node=1" in stage_log and "node_torchrun.sh" in stage_log
    assert "TP=2 PP=1 DP=1" in (run / "logs" / "distill_width.log").read_text()
    assert stages["distill_width"]["result"]["steps"] == 2
    summary = json.loads((run / "summary.json").read_text())
    rows = {row["name"]: row for row in summary["models"]}
    assert set(rows) == {"teacher", "width, pruned", "width, distilled"}
    assert all(row["heldout_loss"] is not None for row in rows.values()) and rows["width, distilled"]["kl"] > 0
    assert "width, distilled" in (run / "report.md").read_text()
    print(f"slurm pipeline job: {time.perf_counter() - started:.0f} s")


def stage_processes(run: Path) -> list[psutil.Process]:
    """Processes whose command line names the run directory (the pipeline and its stages' ranks)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] != psutil.STATUS_ZOMBIE and str(run) in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def test_a_cancelled_job_resumes_when_resubmitted(cluster, teacher_model, tmp_path):  # noqa: F811
    conf, run = tp2_recipe(tmp_path / "conf", teacher_model, steps=16), tmp_path / "run"
    args = pipeline_args(conf, run)[1:]
    first_log, second_log = tmp_path / "first.out", tmp_path / "second.out"
    job = submit(cluster, first_log, *args)
    latest = run / "students" / "width" / "distilled" / "checkpoints" / "latest"
    deadline = time.monotonic() + 900
    while not latest.exists():  # cancel once distillation has saved a checkpoint
        assert job_state(cluster, job).get("JobState") in ("PENDING", "RUNNING"), tail(first_log)
        assert time.monotonic() < deadline, tail(first_log)
        time.sleep(0.2)
    subprocess.run(["scancel", job], env=cluster, check=True)
    state = wait_job(cluster, job, first_log, timeout=120)
    assert state["JobState"] == "CANCELLED", state
    deadline = time.monotonic() + 60
    while stage_processes(run):  # the pipeline and every rank are gone
        assert time.monotonic() < deadline, [p.info["cmdline"] for p in stage_processes(run)]
        time.sleep(0.5)
    stages = manifest(run)
    assert stages["distill_width"]["status"] == "running", stages["distill_width"]
    assert all(stages[name]["status"] == "done" for name in ("data", "importance", "prune_width"))

    job = submit(cluster, second_log, *args)
    state = wait_job(cluster, job, second_log)
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", f"{state}\n{tail(second_log)}"
    stages = manifest(run)
    assert {record["status"] for record in stages.values()} == {"done"}
    assert stages["distill_width"]["attempts"] == 2 and stages["prune_width"]["attempts"] == 1
    resumed = stages["distill_width"]["result"]
    assert resumed["resumed_from"] is not None and resumed["steps"] == 16 and 0 < resumed["steps_this_run"] < 16
    assert "importance: done earlier" in second_log.read_text()
    assert (run / "report.md").is_file()


def test_a_slurm_launcher_without_a_reachable_controller_is_refused(teacher_model, tmp_path):  # noqa: F811
    """`launcher='srun ...'` where scontrol ping finds no slurmctld (a slurm.conf whose controller port is closed):
    one error line, exit 2, before any stage and without a run directory."""
    if os.geteuid() != 0:
        pytest.skip("needs root: installs slurm-wlm")
    slurm_cluster.install()
    (tmp_path / "slurm.conf").write_text(slurm_cluster.slurm_conf(tmp_path, 1, 0, (free_port(), free_port())))
    conf, run = tiny_recipe(tmp_path / "conf", teacher_model), tmp_path / "run"
    environment = clean_env({"SLURM_CONF": str(tmp_path / "slurm.conf"), "PYTHONPATH": str(REPO),
                             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{slurm_cluster.env(tmp_path)['PATH']}"})  # fmt: skip
    launcher = f"launcher='srun --ntasks-per-node=1 {REPO / 'launch' / 'node_torchrun.sh'}'"
    result = subprocess.run([sys.executable, "-m", "minitron.cli", *pipeline_args(conf, run, launcher)],
                            env=environment, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: launcher='srun --ntasks-per-node=1 ") and "Slurm is not reachable (scontrol ping: " in line
    assert "is DOWN" in line, line
    assert not run.exists()
