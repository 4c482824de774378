"""Provenance: the versions block names the minitron commit only when minitron runs from its own git checkout."""

import importlib.util
import shutil
import subprocess

from conftest import REPO, expected_versions
from minitron import runtime


def runtime_copy_at(package_dir):
    """minitron/runtime.py copied into ``package_dir`` and loaded from there (as an installed package would be)."""
    package_dir.mkdir(parents=True)
    shutil.copy(REPO / "minitron" / "runtime.py", package_dir / "runtime.py")
    spec = importlib.util.spec_from_file_location("runtime_copy", package_dir / "runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_versions_of_this_checkout():
    assert runtime.versions() == expected_versions()


def test_no_commit_outside_a_minitron_checkout(tmp_path):
    assert runtime_copy_at(tmp_path / "site-packages" / "minitron")._git_commit() is None
    # installed into a virtual environment that sits inside some other project's git repository
    project = tmp_path / "project"
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run(["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "other project"], check=True)  # fmt: skip
    assert runtime_copy_at(project / ".venv" / "site-packages" / "minitron")._git_commit() is None
