"""Refuse bad input to `minitron sft` and `minitron dpo` before anything is written, each with the field and the fix.

The model is checked as `minitron train` checks its own (sequence length, layout, batch sizes, output);
the data must be a dataset of the command's kind made with the model's tokenizer; the DPO reference must
have the policy's architecture and tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from minitron.align.data import read_chat_sidecar
from minitron.errors import MinitronError
from minitron.models.checkpoint import ModelSource, open_model
from minitron.models.megatron_gpt import check_parallel_layout
from minitron.training import data
from minitron.training.checks import check_run_inputs


def open_source(field: str, path) -> ModelSource:
    """The model at ``path``; a missing path is reported under ``field``."""
    if path is None or not Path(str(path)).expanduser().exists():
        raise MinitronError(f"{field}={path}: no such file or directory (an HF directory or minitron checkpoint)")
    return open_model(Path(str(path)).expanduser())


def check_align_inputs(cfg, kind: str, source: ModelSource, world_size: int) -> dict:
    """Raise :class:`MinitronError` for the first problem; returns the dataset's sidecar. Writes nothing."""
    settings = cfg.train
    check_run_inputs(cfg, source, world_size)  # as `minitron train` checks its model, layout, batch and output
    if cfg.data.path is None:
        raise MinitronError(f"data.path is required: a dataset from `minitron data prepare data.format={kind}`")
    meta = read_chat_sidecar(cfg.data.path, kind)
    model_tokenizer = data.tokenizer_identity(source)
    made_with = meta.get("tokenizer") or {}
    if model_tokenizer is not None and any(made_with.get(k) != model_tokenizer.get(k)
                                           for k in ("vocab_size", "vocab_sha256", "special_tokens")):  # fmt: skip
        raise MinitronError(f"data.path={cfg.data.path} was made with another tokenizer ({made_with.get('path')}); "
                            "prepare it with this model's tokenizer (`minitron data prepare model.path=MODEL ...`)")  # fmt: skip
    if meta["seq_length"] > settings.seq_length:
        raise MinitronError(f"data.path={cfg.data.path} holds sequences up to {meta['seq_length']} tokens, more than "
                            f"train.seq_length={settings.seq_length}; set train.seq_length={meta['seq_length']} or "
                            "prepare the data with a smaller data.seq_length")  # fmt: skip
    return meta


def check_reference(policy: ModelSource, reference: ModelSource, tp: int, pp: int) -> None:
    """The reference must share the policy's tokenizer (same vocabulary) and fit the same TP/PP layout."""
    from minitron.models.tokenizer import vocabulary

    if reference.arch.vocab_size != policy.arch.vocab_size or (
        vocabulary(reference.carried_files) is not None
        and vocabulary(policy.carried_files) is not None
        and vocabulary(reference.carried_files) != vocabulary(policy.carried_files)
    ):
        raise MinitronError(
            f"reference.path={reference.path} has another tokenizer than model.path={policy.path}; the reference "
            "must be the policy's starting point (or a model with its tokenizer)"
        )
    check_parallel_layout(reference.arch, tp, pp, role="reference")
