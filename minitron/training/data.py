"""Training data for the loop: the datasets, and the micro-batches each data-parallel rank steps through.

A dataset is any sequence of sample dicts of ``[seq]`` tensors: ``tokens``, ``labels``, ``loss_mask``,
``position_ids`` (Megatron's ``GPTDataset`` from :mod:`minitron.data.gpt_datasets`, or a list made in a
test). Global batch ``b`` is samples ``[b * G, (b + 1) * G)`` of the dataset (wrapping around); each
data-parallel rank takes its share as ``[micro_batch, seq]`` micro-batches (``MicroBatchIterator``). The
position in the data is ``consumed_samples`` alone, so a resumed run, in any layout, continues with the
very next sample.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Optional, Sequence


from minitron.errors import MinitronError


@dataclasses.dataclass
class TrainData:
    train: Sequence[dict]  # samples for training (at least steps x global batch, or it wraps around)
    valid: Optional[Sequence[dict]] = None  # samples for validation (None: no validation)


def micro_batches(dataset: Sequence[dict], global_batch_size: int, micro_batch_size: int,
                  consumed_samples: int) -> Iterator[dict]:  # fmt: skip
    """This data-parallel rank's micro-batches, from global sample ``consumed_samples`` on, forever."""
    from megatron.core import parallel_state

    from minitron.data.gpt_datasets import MicroBatchIterator

    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    return iter(MicroBatchIterator(dataset, global_batch_size, micro_batch_size, dp, dp_rank, consumed_samples))


def check_data(path, seq_length: int, vocab_size: int, eod_id: Optional[int],
               tokenizer: Optional[dict] = None) -> int:  # fmt: skip
    """Raise a clear error unless ``path`` (a prefix or a blend) holds at least one sequence of data made
    with the model's tokenizer (``tokenizer``: its :func:`~minitron.models.tokenizer.vocabulary_identity`,
    compared with the one the dataset's sidecar records); returns its tokens. Reads the files, writes nothing."""
    from minitron.data.gpt_datasets import describe_prefix, parse_blend

    if path is None:
        raise MinitronError(
            "data.path is required: pass data.path=PREFIX, a tokenized dataset (PREFIX.bin + PREFIX.idx) "
            "made by `minitron data prepare`"
        )
    prefixes, _ = parse_blend(path)
    described = [describe_prefix(prefix, vocab_size, eod_id) for prefix in prefixes]
    for d in described:
        if d["vocab_size"] > vocab_size or (eod_id is not None and d["eod_id"] != eod_id):
            raise MinitronError(
                f"data.path={d['prefix']} was tokenized with another tokenizer (vocabulary {d['vocab_size']}, EOD "
                f"{d['eod_id']}; the model's: {vocab_size}, {eod_id}); prepare it with this model's tokenizer"
            )
        made_with = d["tokenizer"] or {}
        if tokenizer is not None and "vocab_sha256" in made_with:
            differ = [key for key in ("vocab_size", "vocab_sha256", "special_tokens")
                      if made_with.get(key) != tokenizer.get(key)]  # fmt: skip
            if differ:
                raise MinitronError(
                    f"data.path={d['prefix']} was tokenized with another tokenizer ({made_with.get('path')}: "
                    f"{_describe(made_with)}; the model's: {_describe(tokenizer)}); prepare it with this model's "
                    "tokenizer (`minitron data prepare model.path=MODEL ...`)"
                )
    tokens = sum(d["num_tokens"] for d in described)
    if tokens < seq_length + 1:
        documents = sum(d["num_documents"] for d in described)
        raise MinitronError(
            f"data.path={path} holds {tokens} tokens in {documents} documents: the dataset is empty or shorter "
            f"than one training sequence of train.seq_length={seq_length} (+1 for the last label); add data"
        )
    return tokens


def _describe(identity: dict) -> str:
    special = ", ".join(f"{k} {v}" for k, v in (identity.get("special_tokens") or {}).items() if v is not None)
    return f"{identity.get('vocab_size')} tokens, vocabulary sha256 {str(identity.get('vocab_sha256'))[:12]}, {special}"


def build_train_data(cfg, source, run_dir: Path) -> TrainData:
    """Train and validation ``GPTDataset``s of ``cfg.data.path`` (a prefix or a blend), sized for the whole run.

    Documents are split by ``data.split``; sequences of ``train.seq_length`` tokens are packed across
    documents (EOD-separated) and shuffled with ``train.seed``. Index caches go to ``data.cache_dir``
    (default OUTPUT/data_cache), so a resumed run sees the same samples in the same order.
    """
    from minitron.data.gpt_datasets import build_gpt_datasets

    settings = cfg.train
    evaluations = settings.steps // settings.eval_interval + 1 if settings.eval_interval else 0
    num_samples = (settings.steps * settings.global_batch_size,
                   settings.eval_iters * settings.global_batch_size if evaluations else 0, 0)  # fmt: skip
    train, valid, _ = build_gpt_datasets(
        blend=cfg.data.path, seq_length=settings.seq_length, split=cfg.data.split, seed=settings.seed,
        num_samples=num_samples, cache_dir=cfg.data.cache_dir or str(Path(run_dir) / "data_cache"),
        vocab_size=source.arch.vocab_size, eod_id=eod_id(source),
    )  # fmt: skip
    return TrainData(train=train, valid=valid if evaluations else None)


def tokenizer_identity(source) -> Optional[dict]:
    """The vocabulary identity of the model's tokenizer (None when the model carries no tokenizer files)."""
    from minitron.models.tokenizer import load_tokenizer, vocabulary_identity

    try:
        return vocabulary_identity(load_tokenizer(source.carried_files))
    except MinitronError:
        return None


def eod_id(source) -> Optional[int]:
    """The end-of-sequence id of the model's tokenizer (what `minitron data prepare` ends documents with)."""
    from minitron.models.tokenizer import load_tokenizer

    return load_tokenizer(source.carried_files).eos_token_id
