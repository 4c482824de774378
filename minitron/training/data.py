"""Training data for the loop: the datasets, and the micro-batches each data-parallel rank steps through.

A dataset is any sequence of sample dicts of ``[seq]`` tensors: ``tokens``, ``labels``, ``loss_mask``,
``position_ids`` (Megatron's ``GPTDataset`` from :mod:`minitron.data.gpt_datasets`, or a list made in a
test). Global batch ``b`` is samples ``[b * G, (b + 1) * G)`` of the dataset; data-parallel rank ``r``
takes its share of it as ``[micro_batch, seq]`` micro-batches. The position in the data is
``consumed_samples`` alone, so a resumed run (in any layout) continues with the very next sample.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

from minitron.errors import MinitronError


@dataclasses.dataclass
class TrainData:
    train: Sequence[dict]  # samples for training (at least steps x global batch, or it wraps around)
    valid: Optional[Sequence[dict]] = None  # samples for validation (None: no validation)


def micro_batches(dataset: Sequence[dict], global_batch_size: int, micro_batch_size: int,
                  consumed_samples: int) -> Iterator[dict]:  # fmt: skip
    """This data-parallel rank's micro-batches, from global sample ``consumed_samples`` on, forever."""
    from megatron.core import parallel_state

    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    try:
        from minitron.data.gpt_datasets import MicroBatchIterator
    except ImportError:
        MicroBatchIterator = _MicroBatches  # until minitron.data lands
    return iter(MicroBatchIterator(dataset, global_batch_size, micro_batch_size, dp, dp_rank, consumed_samples))


class _MicroBatches:
    """Global batches of consecutive samples (wrapping around), this rank's contiguous share of each."""

    def __init__(self, dataset, global_batch_size, micro_batch_size, dp_size, dp_rank, consumed_samples):
        self.dataset, self.consumed = dataset, consumed_samples
        self.global_batch_size, self.micro_batch_size = global_batch_size, micro_batch_size
        self.per_rank = global_batch_size // dp_size
        self.offset = dp_rank * self.per_rank

    def __iter__(self):
        while True:
            start = self.consumed + self.offset
            indices = [(start + i) % len(self.dataset) for i in range(self.per_rank)]
            for first in range(0, self.per_rank, self.micro_batch_size):
                samples = [self.dataset[i] for i in indices[first : first + self.micro_batch_size]]
                yield {key: torch.stack([torch.as_tensor(s[key]) for s in samples]) for key in samples[0]}
            self.consumed += self.global_batch_size


def check_prefix(prefix: Optional[str], seq_length: int) -> int:
    """Raise a clear error unless ``prefix`` is a tokenized dataset with at least one sequence; returns its tokens."""
    if prefix is None:
        raise MinitronError(
            "data.path is required: pass data.path=PREFIX, a tokenized dataset (PREFIX.bin + PREFIX.idx) "
            "made by `minitron data prepare`"
        )
    missing = [str(Path(prefix + suffix)) for suffix in (".bin", ".idx") if not Path(prefix + suffix).is_file()]
    if missing:
        raise MinitronError(
            f"data.path={prefix}: {' and '.join(missing)} not found; data.path is the prefix of a tokenized "
            "dataset made by `minitron data prepare` (without .bin/.idx)"
        )
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    try:
        dataset = IndexedDataset(prefix)
        documents, tokens = len(dataset), int(dataset.sequence_lengths.sum()) if len(dataset) else 0
    except Exception as err:
        raise MinitronError(f"data.path={prefix}: not a readable indexed dataset ({type(err).__name__}: {err})") from None
    if tokens < seq_length + 1:
        raise MinitronError(
            f"data.path={prefix} holds {tokens} tokens in {documents} documents: the dataset is empty or shorter "
            f"than one training sequence of train.seq_length={seq_length} (+1 for the last label); add data"
        )
    return tokens


def build_train_data(cfg, source, run_dir: Path) -> TrainData:
    """Train and validation ``GPTDataset``s of ``cfg.data.path``, sized for the whole run.

    Documents are split by ``data.split``; sequences of ``train.seq_length`` tokens are packed across
    documents (EOD-separated) and shuffled with ``train.seed``. Index caches go to ``data.cache_dir``
    (default OUTPUT/data_cache), so a resumed run sees the same samples in the same order.
    """
    from minitron.data.gpt_datasets import build_gpt_datasets
    from minitron.models.tokenizer import load_tokenizer

    settings = cfg.train
    tokenizer = load_tokenizer(source.carried_files)
    if tokenizer.eos_token_id is None:
        raise MinitronError(f"{source.carried_files}: the tokenizer has no end-of-sequence token to separate documents")
    evaluations = settings.steps // settings.eval_interval + 1 if settings.eval_interval else 0
    num_samples = (settings.steps * settings.global_batch_size,
                   settings.eval_iters * settings.global_batch_size if evaluations else 0, 0)  # fmt: skip
    train, valid, _ = build_gpt_datasets(
        blend=[cfg.data.path], seq_length=settings.seq_length, split=cfg.data.split, seed=settings.seed,
        num_samples=num_samples, cache_dir=cfg.data.cache_dir or str(Path(run_dir) / "data_cache"),
        vocab_size=source.arch.vocab_size, eod_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return TrainData(train=train, valid=valid if evaluations else None)
