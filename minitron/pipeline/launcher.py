"""The launcher of the parallel stages (``launcher=``), checked before the first stage starts.

A pipeline that cannot start its parallel stages should say so in its first second, not after the data
stage: the launcher's program must be on PATH, and a Slurm launcher (``srun ...``) needs a controller that
answers ``scontrol ping``.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from minitron.errors import MinitronError

SLURM_LAUNCHERS = ("srun",)  # programs that need a reachable slurmctld
PING_TIMEOUT_S = 30  # scontrol retries a missing slurm.conf for 60 s; a healthy controller answers in milliseconds


def check_launcher(launcher: str) -> None:
    """Refuse ``launcher`` (one MinitronError) when its program is missing or, for srun, Slurm does not answer."""
    words = shlex.split(launcher)
    if not words:
        return  # parallel stages run as one process
    program = words[0]
    if shutil.which(program) is None:
        raise MinitronError(
            f"launcher={launcher!r}: {program} is not on PATH; install it, give its full path, or use "
            "launcher=\"torchrun --nproc-per-node N\""
        )
    if Path(program).name in SLURM_LAUNCHERS:
        reason = slurm_unreachable()
        if reason:
            raise MinitronError(
                f"launcher={launcher!r}: Slurm is not reachable ({reason}); run from a node of the cluster "
                "(sbatch launch/slurm_pipeline.sbatch ...) with SLURM_CONF pointing at its slurm.conf, or check "
                "slurmctld"
            )


def slurm_unreachable() -> str:
    """Why the Slurm controller cannot be reached ("" when ``scontrol ping`` says it is UP)."""
    if shutil.which("scontrol") is None:
        return "scontrol is not on PATH"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=PING_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"scontrol ping gave no answer in {PING_TIMEOUT_S} s"
    answer = " ".join((ping.stdout + " " + ping.stderr).split())
    if ping.returncode == 0 and " is UP" in answer:
        return ""
    down = [line.strip() for line in ping.stdout.splitlines() if " is DOWN" in line]
    return f"scontrol ping: {down[0] if down else answer[-200:] or f'exit status {ping.returncode}'}"
