"""Build the project's Dockerfile offline: a docker daemon started by hand and a local CPU stand-in for its NGC
base (a Debian root filesystem from mmdebstrap plus the CPU torch wheel), tagged with the Dockerfile's FROM.

The stand-in checks the Dockerfile's own steps and the resolution of minitron's dependencies around a
preinstalled torch that a pip constraint file pins (as NGC images do since 25.03: /etc/pip/constraint.txt);
it does not check the real image's CUDA, Python version or Transformer Engine. Facts behind it:
../shared/docs/reference/infra.md (section 2).

    python tests/infra/container.py build DIR   # daemon under DIR, stand-in base, image `minitron:test`; then stops
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE = "minitron:test"


def base_image(dockerfile: Path = DOCKERFILE) -> str:
    """The image the Dockerfile's (single) FROM names."""
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.M)
    return base


def _apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env, stdout=subprocess.DEVNULL)


def debian_mirror() -> str:
    """The Debian mirror apt uses here (its sources), for mmdebstrap."""
    for source in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        text = source.read_text() if source.is_file() else ""
        uris = re.findall(r"^URIs:\s*(\S+)", text, flags=re.M)  # deb822 sources
        uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, flags=re.M)  # one-line sources
        for uri in uris:
            if uri.rstrip("/").endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


class Docker:
    """A dockerd of our own: data, exec root, socket and pidfile under ``root``; no bridge and no iptables rules
    (builds and containers use the host's network), stopped by its PID."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.socket = self.root / "docker.sock"
        self.pidfile = self.root / "dockerd.pid"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Docker":
        if shutil.which("dockerd") is None:
            _apt_install("docker.io")
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "dockerd.log", "w")
        self.process = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "-H", f"unix://{self.socket}", "--pidfile", str(self.pidfile), "--bridge=none", "--iptables=false",
             "--ip-masq=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while self.docker("info", check=False, capture=True).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dockerd did not start:\n{(self.root / 'dockerd.log').read_text()[-3000:]}")
            time.sleep(0.5)
        return self

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM dockerd (it stops its containers and its containerd), wait, SIGKILL if it hangs; then unmount
        what it left mounted under ``root`` (its network namespace file)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(f"{self.root}/")), reverse=True):
            subprocess.run(["umount", "--lazy", mount], check=False)

    def remove(self) -> None:
        """Stop, then delete ``root`` with its images (``rm -rf``: much faster than Python on overlay trees)."""
        self.stop()
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=False)

    def env(self) -> dict:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0"}

    def docker(self, *args, check: bool = True, capture: bool = False, timeout: int = 1800, **kwargs):
        """Run the docker client shipped with this dockerd (the same API version) against it."""
        packaged = [Path(shutil.which("dockerd")).parent / "docker", Path("/usr/bin/docker")]  # docker.io's client
        client = str(next((path for path in packaged if path.exists()), None) or shutil.which("docker"))
        result = subprocess.run([client, *map(str, args)], env=self.env(), capture_output=capture, text=True,
                                timeout=timeout, **kwargs)  # fmt: skip
        if check and result.returncode != 0:
            detail = f"\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}" if capture else ""
            raise RuntimeError(f"docker {' '.join(map(str, args[:3]))} ... failed ({result.returncode}){detail}")
        return result


STANDIN_DOCKERFILE = """\
# A CPU stand-in for {base}: Debian bookworm, Python 3.11 in a venv on PATH, the CPU torch wheel, and a pip
# constraint file holding torch (NGC images hold their packages with /etc/pip/constraint.txt).
FROM minitron-standin-rootfs:bookworm
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY wheels /tmp/wheels
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv && pip install --no-cache-dir --no-index --find-links /tmp/wheels {torch} \\
    && mkdir -p /etc/pip && pip freeze | grep '^torch==' > /etc/pip/constraint.txt && rm -rf /tmp/wheels
ENV PIP_CONSTRAINT=/etc/pip/constraint.txt
"""


def build_standin_base(docker: Docker, work: Path, torch_spec: str, cache: Path | None = None) -> str:
    """Make the stand-in base and tag it as the Dockerfile's FROM; returns that tag. ``cache``: a directory
    keeping the mmdebstrap tarball between runs (made again when absent)."""
    work.mkdir(parents=True, exist_ok=True)
    tarball = (cache or work) / "bookworm-minbase.tar"
    if not tarball.exists():
        if shutil.which("mmdebstrap") is None:
            _apt_install("mmdebstrap")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        subprocess.run(["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar", "--quiet",
                        "--include=python3,python3-venv,ca-certificates", "bookworm", str(partial),
                        f"deb {debian_mirror()} bookworm main"], check=True)  # fmt: skip
        partial.rename(tarball)
    docker.docker("import", tarball, "minitron-standin-rootfs:bookworm", capture=True)
    context = work / "standin"
    context.mkdir(exist_ok=True)
    shutil.copy(CA_BUNDLE, context / "ca-certificates.crt")
    wheels = context / "wheels"  # torch and its dependencies, fetched by this machine's pip (local wheel first)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), torch_spec], check=True)
    base = base_image()
    (context / "Dockerfile").write_text(STANDIN_DOCKERFILE.format(base=base, torch=torch_spec))
    docker.docker("build", "-q", "--network", "host", "-t", base, context, capture=True)
    return base


def build_project_image(docker: Docker, tag: str = IMAGE) -> None:
    """``docker build`` of the repository's Dockerfile (over the host network: pip reaches its registry); the build's
    output goes to ROOT/build.log."""
    with open(docker.root / "build.log", "w") as log:
        result = docker.docker("build", "--network", "host", "-t", tag, REPO, check=False, stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    if result.returncode != 0:
        log = (docker.root / "build.log").read_text()
        raise RuntimeError(f"docker build failed ({result.returncode}):\n{log[-5000:]}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "build":
        print("usage: container.py build DIR", file=sys.stderr)
        return 2
    import torch

    docker = Docker(Path(argv[1]) / "docker").start()
    try:
        started = time.perf_counter()
        build_standin_base(docker, Path(argv[1]), f"torch=={torch.__version__.split('+')[0]}")
        print(f"stand-in base: {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        build_project_image(docker)
        print(f"image {IMAGE}: {time.perf_counter() - started:.0f} s")
        print(docker.docker("run", "--rm", "--network", "none", IMAGE, "minitron", "--help", capture=True).stdout)
    finally:
        docker.stop()  # keeps DIR (and the image) for a look
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
