"""Run a recipe's stages in order, skip the finished ones, resume a killed one; keep a manifest.

``RUN/pipeline.json`` (written atomically after every change) records, per stage, its command, its
status (``running`` / ``done`` / ``failed``), attempts, start and end times, seconds and the stage's
result (the JSON object each ``minitron`` command prints last). Running the same pipeline command
again skips every ``done`` stage and reruns the rest; a stage that was killed reruns with the same
command, and each command resumes on its own (training and distillation from their newest valid
checkpoint; the others write their outputs atomically, so a killed one starts over cleanly). A done
stage whose command has changed since is an error: the run directory would mix two recipes.

Each stage runs as a child process (under ``launcher`` for the parallel ones) whose output is shown
and kept in ``RUN/logs/<stage>.log``. The child gets SIGTERM if the pipeline process dies.
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from minitron import runtime
from minitron.commands import COMMANDS
from minitron.config.pipeline import PipelineCommand
from minitron.errors import MinitronError
from minitron.fsutil import output_lock, write_json_atomic
from minitron.pipeline.launcher import check_launcher
from minitron.pipeline.memory import check_fits, stage_plan, summary_line
from minitron.pipeline.stages import REPORT, Stage, plan_stages
from minitron.pipeline.summary import build_report

MANIFEST = "pipeline.json"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Manifest:
    """``RUN/pipeline.json``: the recipe and the record of every stage."""

    def __init__(self, run_dir: Path, recipe: str, config: dict):
        self.path = run_dir / MANIFEST
        self.data = {"recipe": recipe, "config": config, "stages": {}}
        if self.path.is_file():
            try:
                old = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                raise MinitronError(
                    f"{self.path}: malformed JSON (the run's manifest is damaged); remove it to rerun every "
                    "stage (finished stages' outputs are reused where their commands say so)"
                ) from None
            if old.get("recipe") != recipe:
                raise MinitronError(
                    f"output={run_dir} holds a run of recipe {old.get('recipe')!r}, not {recipe!r}; "
                    "choose another output directory"
                )
            self.data["stages"] = old.get("stages", {})
        self.data["config"] = config

    def record(self, name: str) -> dict:
        return self.data["stages"].get(name, {})

    def update(self, name: str, **fields) -> None:
        self.data["stages"].setdefault(name, {}).update(fields)
        write_json_atomic(self.path, self.data)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def minitron_executable() -> str:
    """The ``minitron`` console script the launcher starts: on PATH (NGC images put it in /usr/local/bin),
    else beside this interpreter (a virtual environment that is not activated)."""
    found = shutil.which("minitron") or shutil.which("minitron", path=str(Path(sys.executable).parent))
    if found is None:
        raise MinitronError(
            "the `minitron` executable is not on PATH (needed to start parallel stages under the launcher); "
            "install minitron (pip install .) or add its bin directory to PATH"
        )
    return found


def stage_command(stage: Stage, launcher: str) -> list[str]:
    """The argv of a stage: ``minitron <command> <args>``, under ``launcher`` for the parallel ones."""
    if stage.parallel and launcher.strip():
        return [*shlex.split(launcher), minitron_executable(), stage.command, *stage.args]
    return [sys.executable, "-m", "minitron.cli", stage.command, *stage.args]


def validate_stages(stages: list[Stage]) -> None:
    """Compose every stage's config with its arguments and run the schema's checks; no model is loaded.

    A typo or a bad value in any stage's arguments fails here, before the first stage starts."""
    from minitron.config.compose import validate

    for stage in stages:
        command = COMMANDS.get(stage.command)
        if command is None:
            continue
        args = stage.args[1:] if command.subcommand else stage.args
        try:
            if command.config is not None:
                validate(command.config, args, command=f"minitron {command.name}")
            elif command.name == "assets":
                from minitron.assets import check_names

                check_names(args[1:])
        except MinitronError as err:
            raise MinitronError(f"stage {stage.name} (`minitron {command.name}`): {err}") from None


def _pump(stream, sinks, keep: Optional[list] = None) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        for sink in sinks:
            sink.write(chunk)
            sink.flush()
        if keep is not None:
            keep.append(chunk)


def run_child(argv: list[str], log_path: Path) -> tuple[int, Optional[dict]]:
    """Run ``argv``; show and log its output; return (exit status, its final JSON line or None)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out: list[bytes] = []
    with open(log_path, "ab") as log:
        log.write(f"\n$ {shlex.join(argv)}   # {_now()}\n".encode())
        log.flush()
        child = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=_die_with_parent
        )
        console = sys.stderr.buffer
        pumps = [
            threading.Thread(target=_pump, args=(child.stdout, [log], out), daemon=True),
            threading.Thread(target=_pump, args=(child.stderr, [console, log]), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        try:
            status = child.wait()
        except BaseException:  # Ctrl-C or SIGTERM of the pipeline: stop the stage too
            child.terminate()
            child.wait()
            raise
        for pump in pumps:
            pump.join()
    result = None
    for line in reversed(b"".join(out).decode(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                pass
            break
    return status, result


def _check_unchanged(stage: Stage, record: dict, run_dir: Path) -> None:
    if record.get("args") != stage.args:
        old, new = set(record.get("args") or []), set(stage.args)
        changed = sorted(new - old) or sorted(old - new)
        raise MinitronError(
            f"stage {stage.name} of {run_dir} finished with other settings (now: {' '.join(changed)}); use a new "
            f"output=DIR for the new recipe, or remove {stage.output or 'its output'} and its entry in "
            f"{run_dir / MANIFEST} to redo that stage"
        )


def run_stage(
    stage: Stage, cfg: PipelineCommand, manifest: Manifest, run_dir: Path, stages: list[Stage], position: str = ""
) -> dict:
    """Run one stage of ``stages``, or skip it when done (``position``, e.g. "[3/20]", leads its log line)."""
    record = manifest.record(stage.name)
    if record.get("status") == "done":
        _check_unchanged(stage, record, run_dir)
        runtime.log(f"{position} {stage.name}: done earlier ({record.get('seconds', 0):.0f} s), skipped".lstrip())
        return record
    if position:
        runtime.log(f"{position} {stage.name}")
    attempts = record.get("attempts", 0) + 1
    resumed = " (resuming)" if record.get("status") in ("running", "failed") else ""
    runtime.log(f"\n== {stage.name}: {stage.about}{resumed}")
    manifest.update(
        stage.name,
        status="running",
        command=stage.command,
        args=stage.args,
        output=stage.output,
        attempts=attempts,
        started=_now(),
        finished=None,
    )
    start = time.perf_counter()
    if stage.command == REPORT:
        status, result = 0, build_report(cfg, stages, manifest.data, run_dir)
    else:
        check_fits(stage, cfg.launcher, cfg.device_memory_gb)  # a training stage that would not fit this GPU is refused before it starts
        argv = stage_command(stage, cfg.launcher)
        runtime.log(f"$ {shlex.join(argv)}")
        status, result = run_child(argv, run_dir / "logs" / f"{stage.name}.log")
    seconds = round(time.perf_counter() - start, 1)
    if status != 0:
        manifest.update(stage.name, status="failed", exit_status=status, finished=_now(), seconds=seconds)
        raise MinitronError(
            f"stage {stage.name} failed (exit status {status}); its output is in {run_dir / 'logs' / (stage.name + '.log')}. "
            "Fix the cause and run the same command again: finished stages are skipped and this one resumes"
        )
    manifest.update(stage.name, status="done", exit_status=0, finished=_now(), seconds=seconds, result=result)
    runtime.log(f"== {stage.name}: done in {seconds:.0f} s")
    return manifest.record(stage.name)


def run_pipeline(cfg: PipelineCommand, config: dict) -> dict:
    """Run (or resume) the pipeline of ``cfg`` in ``cfg.run_dir``; returns the final summary."""
    run_dir = Path(cfg.run_dir)
    recipe = cfg.recipe
    recipe.validate()
    teacher_ready = Path(recipe.teacher).exists()
    if not teacher_ready and not recipe.assets:
        raise MinitronError(
            f"recipe.teacher={recipe.teacher}: no such directory; point it at an HF directory or a checkpoint"
        )
    validate_stages(plan_stages(cfg, teacher_exists=teacher_ready))  # every stage's config, in seconds
    if cfg.dry_run:
        return dry_run(cfg, run_dir, teacher_ready)
    check_launcher(cfg.launcher)  # srun without a reachable controller fails here, not after the first stages
    with output_lock(run_dir):  # one pipeline per run directory; its stages lock their own outputs
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest = Manifest(run_dir, recipe.name, config)
        started = time.perf_counter()
        if not teacher_ready:  # fetch the assets first: planning reads the teacher's config
            assets = plan_stages(cfg, teacher_exists=False)[:1]
            run_stage(assets[0], cfg, manifest, run_dir, assets)
        stages = plan_stages(cfg)
        if not teacher_ready:
            validate_stages(stages)  # with what planning learnt from the teacher's config
        for index, stage in enumerate(stages, 1):
            run_stage(stage, cfg, manifest, run_dir, stages, f"[{index}/{len(stages)}]")
        report = manifest.record("report").get("result") or {}
        runtime.log(
            f"\npipeline {recipe.name} done in {time.perf_counter() - started:.0f} s (this run); report: "
            f"{report.get('report')}"
        )
        return {"output": str(run_dir), "recipe": recipe.name, "manifest": str(manifest.path), **report}


def dry_run(cfg: PipelineCommand, run_dir: Path, teacher_ready: bool) -> dict:
    """Print every stage with its command and whether it is done; run nothing."""
    stages = plan_stages(cfg, teacher_exists=teacher_ready)
    done = {}
    if (run_dir / MANIFEST).is_file():
        done = {k: v.get("status") for k, v in json.loads((run_dir / MANIFEST).read_text()).get("stages", {}).items()}
    for index, stage in enumerate(stages, 1):
        state = done.get(stage.name) or "to do"
        memory = summary_line(stage_plan(stage, cfg.launcher, cfg.device_memory_gb)) if state != "done" else None
        launcher = f"{cfg.launcher} " if stage.parallel and cfg.launcher.strip() else ""
        command = (
            "(in-process)"
            if stage.command == REPORT
            else f"{launcher}minitron {shlex.join([stage.command, *stage.args])}"
        )
        print(f"[{index}/{len(stages)}] {stage.name:<28} {state:<8} {command}", file=sys.stderr)
        if memory:
            print(f"{'':>36}{memory}", file=sys.stderr)
    return {
        "output": str(run_dir),
        "recipe": cfg.recipe.name,
        "dry_run": True,
        "stages": [{"name": s.name, "status": done.get(s.name) or "to do"} for s in stages],
    }
