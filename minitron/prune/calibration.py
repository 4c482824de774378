"""Calibration data and the importance pass shared by `minitron importance` and `minitron prune`."""

from __future__ import annotations

import time
from typing import Optional, Sequence

import torch

from minitron.config.prune import CalibConfig, ImportanceConfig
from minitron.data.documents import read_texts
from minitron.errors import MinitronError
from minitron.eval import heldout
from minitron.models.checkpoint import ModelSource, load_hf_weights, load_megatron_weights
from minitron.models.tokenizer import load_tokenizer
from minitron.prune.scores import ImportanceScores


def calibration_windows(source: ModelSource, data_path, text_field: str, num_samples: int, seq_length: int) -> torch.Tensor:
    """``[num_samples, seq_length]`` token windows of the calibration text (consecutive, no overlap)."""
    texts = read_texts(data_path, text_field)
    token_ids = heldout.tokenize(texts, load_tokenizer(source.carried_files))
    available = len(token_ids) // seq_length
    if available < num_samples:
        raise MinitronError(
            f"calibration data shorter than asked: data.path={data_path} holds {len(token_ids):,} tokens, "
            f"{available} windows of calib.seq_length={seq_length}, but calib.num_samples={num_samples}; "
            "lower calib.num_samples or calib.seq_length, or use more text"
        )
    return heldout.make_windows(token_ids, seq_length, num_samples)


def compute_importance(
    source: ModelSource,
    windows: torch.Tensor,
    ctx,
    dtype: torch.dtype,
    calib: CalibConfig,
    settings: ImportanceConfig,
    depth_metrics: Sequence[str],
    window_sizes: Optional[Sequence[int]],
) -> tuple[ImportanceScores, float]:
    """Load ``source`` into this rank's shard and estimate its importance; returns (scores, load seconds).

    ``calib`` gives the micro-batch size, ``settings`` the aggregations and the loss-metric sample count;
    ``depth_metrics`` and ``window_sizes`` are what to estimate (all configured ones, or what prune needs).

    ``scores.meta["versions"]`` records the software that computed them (:func:`minitron.runtime.versions`)."""
    from minitron.models.megatron_gpt import build_gpt_model
    from minitron.prune.importance import estimate_importance
    from minitron.runtime import versions

    start = time.perf_counter()
    # the local layer spec (SDPA attention) on any device: the hooks need the norms as modules
    model = build_gpt_model(source.arch, ctx.tp, ctx.pp, dtype, attention="sdpa")
    (load_hf_weights if source.kind == "hf" else load_megatron_weights)(model, source)
    model.eval()
    load_seconds = time.perf_counter() - start
    scores = estimate_importance(
        model, source.arch, windows, calib.micro_batch_size,
        aggregation=(settings.batch_aggregation, settings.seq_aggregation), depth_metrics=depth_metrics,
        window_sizes=window_sizes, loss_num_samples=settings.loss_num_samples,
    )  # fmt: skip
    scores.meta["versions"] = versions()
    return scores, load_seconds
