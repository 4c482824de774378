"""Atomic writes, whole-directory replacement and minitron's home directory (minitron.fsutil)."""

import os
from pathlib import Path

import pytest

from minitron import fsutil


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with fsutil.atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [path.name for path in tmp_path.iterdir()] == ["report.md"]


def test_writes_replace_the_file_and_make_the_directory(tmp_path):
    target = tmp_path / "new" / "run" / "pipeline.json"
    fsutil.write_json_atomic(target, {"stages": {"a": 1}})
    assert target.read_text() == '{\n  "stages": {\n    "a": 1\n  }\n}\n'
    fsutil.write_text_atomic(target, "naïve\n")
    assert target.read_bytes() == "naïve\n".encode() and os.listdir(target.parent) == ["pipeline.json"]
    fsutil.write_json_atomic(target, [1, 2], indent=1)
    assert target.read_text() == "[\n 1,\n 2\n]\n"


def test_temporaries_are_unique_per_process_and_write(tmp_path):
    target = tmp_path / "latest"
    with fsutil.atomic_path(target) as first, fsutil.atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert first.name.startswith(f".latest.{os.getpid()}.") and first.name.endswith(".tmp")
        first.write_text("1")
        second.write_text("2")
    assert target.read_text() == "1"  # the outer block ends last and wins
    assert os.listdir(tmp_path) == ["latest"]


def test_replace_directory(tmp_path):
    out, staging = tmp_path / "model", tmp_path / "model.partial"
    staging.mkdir()
    (staging / "a").write_text("new")
    fsutil.replace_directory(staging, out)
    assert (out / "a").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["model"]
    staging.mkdir()
    (staging / "b").write_text("newer")
    fsutil.replace_directory(staging, out)
    assert os.listdir(out) == ["b"] and sorted(os.listdir(tmp_path)) == ["model"]  # the old one is gone


def test_minitron_home_is_absolute_and_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("MINITRON_HOME", "~/somewhere")
    assert fsutil.minitron_home() == Path.home() / "somewhere"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINITRON_HOME", "relative/cache")
    assert fsutil.minitron_home() == tmp_path / "relative" / "cache"
    monkeypatch.delenv("MINITRON_HOME")
    assert fsutil.minitron_home() == Path.home() / ".cache" / "minitron"
