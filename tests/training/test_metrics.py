"""Training metrics: metrics.jsonl survives a resume as one clean log; TensorBoard when installed; W&B when asked."""

import json

import pytest

from minitron.config.training import LoggingConfig
from minitron.training.metrics import METRICS_FILE, MetricsLogger, have_tensorboard, truncate_after, wandb_problem


def record(loss):
    return {"loss": loss, "lr": 1e-3, "grad_norm": 0.5, "tokens": 64, "tokens_per_s": 100.0, "memory_gb": 0.1}


def test_resume_drops_the_records_after_the_checkpoint(tmp_path):
    logger = MetricsLogger(tmp_path, LoggingConfig(progress=False, tensorboard=False), 5, 0, {})
    logger.start(0)
    for step in range(1, 5):
        logger.train(step, record(5.0 - step), log_interval=2)
    logger.valid(4, 1.5, 128)
    logger.close()
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"kind": "train", "step": 5, "lo')  # cut short by a kill
    truncate_after(tmp_path / METRICS_FILE, 2)
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("start", 0), ("train", 1), ("train", 2)]


@pytest.mark.skipif(not have_tensorboard(), reason="tensorboard is not installed (optional)")
def test_tensorboard_events_when_installed(tmp_path):
    logger = MetricsLogger(tmp_path, LoggingConfig(progress=False, tensorboard=True), 2, 0, {})
    logger.train(1, record(3.0), log_interval=1)
    logger.valid(1, 2.5, 64)
    logger.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_wandb_needs_the_package_only_when_configured(monkeypatch):
    import importlib.util

    assert wandb_problem(LoggingConfig()) is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "logging.wandb_project" in wandb_problem(LoggingConfig(wandb_project="minitron"))
