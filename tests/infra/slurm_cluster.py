"""A one-node Slurm cluster on localhost for tests and CI: munged, slurmctld and slurmd started by hand.

Everything lives under one temporary directory (config, state, spool, logs, munge socket, fake GPU devices),
on free ports, so it neither needs nor touches /etc/slurm or another cluster on the machine. Facts behind it:
../shared/docs/reference/infra.md (section 1).

    python tests/infra/slurm_cluster.py start DIR    # installs slurm-wlm + munge if missing; prints SLURM_CONF=...
    SLURM_CONF=DIR/slurm.conf sbatch ...
    python tests/infra/slurm_cluster.py stop DIR     # cancels jobs, waits, scontrol shutdown, stops munged

The node has this machine's CPU count and ``gpus`` fake GPUs (character devices like /dev/null declared as
``gres/gpu``), so scripts with ``#SBATCH --gpus-per-node`` run; steps see CUDA_VISIBLE_DEVICES and
SLURM_GPUS_PER_NODE as on a GPU cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = {"slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "sbatch": "slurm-wlm", "munged": "munge"}
MUNGE_KEY = Path("/etc/munge/munge.key")


def install() -> None:
    """apt-get install slurm-wlm and munge when their programs are missing (root, Debian)."""
    missing = {package for program, package in PACKAGES.items() if shutil.which(program, path=_sbin_path()) is None}
    if not missing and MUNGE_KEY.exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    install_command = ["apt-get", "install", "-y", "-q", *sorted(set(PACKAGES.values()))]
    subprocess.run(install_command, check=True, env=env, stdout=subprocess.DEVNULL)


def _sbin_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_conf(root: Path, cpus: int, gpus: int, ports: tuple[int, int]) -> str:
    """The slurm.conf of a one-node cluster whose files all live under ``root``."""
    gres = f" Gres=gpu:{gpus}" if gpus else ""
    return "\n".join([
        "ClusterName=minitron", "SlurmctldHost=localhost", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={root}/munge/munge.socket",
        f"SlurmctldPort={ports[0]}", f"SlurmdPort={ports[1]}",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log", f"SlurmdLogFile={root}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "MpiDefault=none", "SwitchType=switch/none", "ReturnToService=2", "SchedulerType=sched/backfill",
        "MailProg=/bin/true", "KillWait=5", *(["GresTypes=gpu"] if gpus else []),
        f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000{gres} State=UNKNOWN",
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
    ]) + "\n"  # fmt: skip


def env(root: Path) -> dict:
    """This environment pointed at the cluster under ``root`` (SLURM_CONF), with /usr/sbin on PATH."""
    return {**os.environ, "SLURM_CONF": str(Path(root) / "slurm.conf"), "PATH": _sbin_path()}


def _run(root: Path, *argv, check: bool = True, timeout: int = 60) -> str:
    result = subprocess.run(argv, env=env(root), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}\n{logs(root)}")
    return result.stdout


def logs(root: Path) -> str:
    """The tail of the daemons' logs (for failure messages)."""
    parts = []
    for log in sorted((Path(root) / "log").glob("*.log")):
        parts.append(f"== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(parts)


def _pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(predicate, timeout: float, what: str, root: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"slurm cluster: {what} after {timeout:.0f} s\n{logs(root)}")
        time.sleep(0.2)


def start(root: Path, gpus: int = 2) -> dict:
    """Install if needed, write the config under ``root`` (a fresh directory) and start munged, slurmctld and
    slurmd; returns the environment for Slurm's commands. On failure whatever started is stopped again."""
    install()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # munged runs as the munge user and must reach its directory
    for sub in ("state", "spool", "log", "fakegpu"):
        (root / sub).mkdir(exist_ok=True)
    munge = root / "munge"
    munge.mkdir(exist_ok=True)
    munge.chmod(0o755)  # munged: clients need to reach its socket
    shutil.chown(munge, "munge", "munge")
    for index in range(gpus):
        device = root / "fakegpu" / f"nvidia{index}"
        if not device.exists():
            os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # a character device, as /dev/null
    if gpus:
        (root / "gres.conf").write_text(
            f"AutoDetect=off\nName=gpu File={root}/fakegpu/nvidia[0-{gpus - 1}]\n" if gpus > 1
            else f"AutoDetect=off\nName=gpu File={root}/fakegpu/nvidia0\n"
        )
    (root / "slurm.conf").write_text(slurm_conf(root, os.cpu_count() or 1, gpus, (_free_port(), _free_port())))
    try:
        _start_daemon(root, "runuser", "-u", "munge", "--", "/usr/sbin/munged", f"--socket={munge}/munge.socket",
                      f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                      f"--seed-file={munge}/munged.seed")  # fmt: skip
        _wait(lambda: _alive(_pid(munge / "munged.pid")), 10, "munged did not start", root)
        _start_daemon(root, "/usr/sbin/slurmctld")
        _wait(lambda: _alive(_pid(root / "slurmctld.pid")), 20, "slurmctld did not start", root)
        _start_daemon(root, "/usr/sbin/slurmd", "-N", "localhost")
        _wait(lambda: _run(root, "sinfo", "-h", "-o", "%T", check=False).strip() == "idle", 60,
              "the node is not idle", root)  # fmt: skip
    except BaseException:
        stop(root)
        raise
    return env(root)


def _start_daemon(root: Path, *argv) -> None:
    """Run a daemon's start command (it forks into the background); raises with its output if it fails."""
    result = subprocess.run(argv, env=env(root), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}\n{logs(root)}")


def stop(root: Path, timeout: float = 60) -> None:
    """Cancel every job, wait for the queue to empty, ``scontrol shutdown``, wait for slurmctld and slurmd to exit,
    then stop munged: each by the PID in its pidfile (a daemon that does not exit in time is killed)."""
    root = Path(root)
    daemons = [_pid(root / "slurmctld.pid"), _pid(root / "slurmd.pid")]
    if _alive(daemons[0]):
        _run(root, "scancel", "--user=root", check=False)
        try:
            _wait(lambda: not _run(root, "squeue", "-h", check=False).strip(), timeout, "jobs still queued", root)
        except TimeoutError:
            pass
        _run(root, "scontrol", "shutdown", check=False)
    for pid in daemons:
        _stop_pid(pid, timeout)
    _stop_pid(_pid(root / "munge" / "munged.pid"), timeout, terminate=True)


def _stop_pid(pid: int | None, timeout: float, terminate: bool = False) -> None:
    """Wait for ``pid`` to exit: SIGTERM at once with ``terminate``, else after half of ``timeout``; SIGKILL at the
    end of it."""
    deadline = time.monotonic() + timeout
    signalled = False
    if terminate and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        signalled = True
    while _alive(pid):
        now = time.monotonic()
        if now > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        if not signalled and now > deadline - timeout / 2:
            os.kill(pid, signal.SIGTERM)
            signalled = True
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: slurm_cluster.py start|stop DIR", file=sys.stderr)
        return 2
    if argv[0] == "start":
        start(Path(argv[1]))
        print(f"SLURM_CONF={Path(argv[1]) / 'slurm.conf'}")
    else:
        stop(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
