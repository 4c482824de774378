"""GPT datasets over prepared prefixes, and the micro-batches one data-parallel rank steps through.

:func:`build_gpt_datasets` turns a blend of prefixes (made by ``minitron data prepare``) into
Megatron-Core ``GPTDataset``\\ s for train, valid and test: each prefix's documents are split by
``split`` (contiguous document ranges, so the splits share no document), concatenated (EOD-separated),
cut into sequences of ``seq_length + 1`` tokens and shuffled with ``seed``. A blend of several prefixes
is a ``BlendedDataset`` that draws from each in proportion to its weight (unweighted: to its tokens).

A sample is a dict of ``[seq_length]`` tensors:

- ``tokens`` (int64): input ids
- ``labels`` (int64): the next token of each position (``tokens`` shifted left by one)
- ``loss_mask`` (float32): 1.0 everywhere (EODs are predicted; no padding exists)
- ``position_ids`` (int64): ``0 .. seq_length-1`` (no reset at document boundaries)

plus ``dataset_id`` (int16 scalar, the index of its prefix in the blend) when the blend has several prefixes.

:class:`MicroBatchIterator` yields ``[micro_batch_size, seq_length]`` stacks of them for one
data-parallel rank, from any ``consumed_samples`` on.
"""

from __future__ import annotations

import numbers
import re
from pathlib import Path
from typing import Optional, Sequence

import torch

from minitron.data.prepare import read_sidecar
from minitron.errors import MinitronError

SPLIT_NAMES = ("train", "valid", "test")


class DatasetTokenizer:
    """What ``GPTDatasetConfig`` needs of a tokenizer: sizes, EOD, pad, and an identity for cache keys."""

    pad = -1  # Megatron's "no pad token" id: never in the data, so no label is masked as padding

    def __init__(self, vocab_size: int, eod: int, identity: dict):
        self.vocab_size = vocab_size
        self.eod = eod
        self.unique_identifiers = {"class": type(self).__name__, "vocab_size": vocab_size, "eod": eod, **identity}


def parse_blend(blend) -> tuple[list[str], Optional[list[float]]]:
    """``PREFIX``, ``[PREFIX, ...]`` or ``[(WEIGHT, PREFIX), ...]`` -> (prefixes, weights or None)."""
    items = [blend] if isinstance(blend, (str, Path)) else list(blend)
    if not items:
        raise MinitronError("data.path is empty: give one dataset prefix or a list of (weight, prefix) pairs")
    if all(isinstance(item, (str, Path)) for item in items):
        return [str(Path(item).expanduser()) for item in items], None
    prefixes, weights = [], []
    for item in items:
        pair = list(item) if not isinstance(item, (str, Path)) else []
        if len(pair) != 2 or not isinstance(pair[1], (str, Path)):
            raise MinitronError(
                f"data.path: blend entry {item!r} is not a (weight, prefix) pair; give prefixes only, or a weight "
                "for every prefix"
            )
        try:
            weight = float(pair[0])
        except (TypeError, ValueError):
            raise MinitronError(f"data.path: blend weight {pair[0]!r} of {pair[1]} is not a number") from None
        if not weight > 0:
            raise MinitronError(f"data.path: blend weight {weight} of {pair[1]} must be > 0")
        prefixes.append(str(Path(pair[1]).expanduser()))
        weights.append(weight)
    return prefixes, weights


def describe_prefix(prefix: str, vocab_size: Optional[int], eod_id: Optional[int]) -> dict:
    """Documents, tokens, vocabulary, EOD and identity of one prefix (from its sidecar, checked against .idx)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    missing = [f"{prefix}{suffix}" for suffix in (".bin", ".idx") if not Path(f"{prefix}{suffix}").is_file()]
    if missing:
        raise MinitronError(
            f"data.path={prefix}: {' and '.join(missing)} not found; data.path is the prefix of a tokenized dataset, "
            f"made by `minitron data prepare data.path=TEXT model.path=MODEL output={prefix}`"
        )
    try:
        indexed = IndexedDataset(prefix)
        documents = len(indexed)
        tokens = int(indexed.sequence_lengths.sum()) if documents else 0
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
        raise MinitronError(f"data.path={prefix}: not a readable indexed dataset ({reason})") from None
    if documents == 0 or tokens == 0:
        raise MinitronError(f"data.path={prefix}: the dataset holds no documents; prepare it from non-empty text")
    size = Path(f"{prefix}.bin").stat().st_size
    if size != tokens * indexed.index.dtype_size:  # cheap: the checksums are compared by `data prepare`
        raise MinitronError(
            f"data.path={prefix}: {prefix}.bin holds {size} bytes but {prefix}.idx indexes {tokens} tokens of "
            f"{indexed.index.dtype_size} bytes; the dataset is damaged: prepare it again with overwrite=true"
        )
    meta = read_sidecar(prefix)
    if meta is None:
        if vocab_size is None or eod_id is None:
            raise MinitronError(
                f"data.path={prefix}: no {prefix}.json says which tokenizer made it; prepare it with "
                "`minitron data prepare` (or pass the vocabulary size and EOD id)"
            )
        content = f"idx mtime {Path(prefix + '.idx').stat().st_mtime_ns}"
        return {"prefix": prefix, "num_documents": documents, "num_tokens": tokens, "vocab_size": vocab_size,
                "eod_id": eod_id, "tokenizer_sha256": None, "tokenizer": None, "content": content}  # fmt: skip
    if (meta["num_documents"], meta["num_tokens"]) != (documents, tokens):
        raise MinitronError(
            f"data.path={prefix}: {prefix}.json describes {meta['num_documents']} documents / "
            f"{meta['num_tokens']} tokens but {prefix}.idx holds {documents} / {tokens}: the files come from "
            "different runs; prepare again"
        )
    return {"prefix": prefix, "num_documents": documents, "num_tokens": tokens, "vocab_size": meta["vocab_size"],
            "eod_id": meta["eod_id"], "tokenizer_sha256": meta["tokenizer"]["sha256"],
            "tokenizer": meta["tokenizer"], "content": meta["bin_sha256"]}  # fmt: skip


def _check_tokenizers(described: list[dict], vocab_size: Optional[int], eod_id: Optional[int]) -> None:
    first = described[0]
    for other in described[1:]:
        for key in ("tokenizer_sha256", "vocab_size", "eod_id"):
            if other[key] != first[key]:
                raise MinitronError(
                    f"data.path: {first['prefix']} and {other['prefix']} were tokenized with different tokenizers "
                    f"({key} {first[key]} vs {other[key]}); prepare every dataset of a blend with the same model.path"
                )
    if vocab_size is not None and first["vocab_size"] > vocab_size:
        raise MinitronError(
            f"data.path={first['prefix']}: its tokenizer has {first['vocab_size']} tokens but the model's vocabulary "
            f"has {vocab_size}; prepare the data with this model's tokenizer"
        )
    if eod_id is not None and first["eod_id"] != eod_id:
        raise MinitronError(
            f"data.path={first['prefix']}: documents end with EOD id {first['eod_id']} but the model's tokenizer "
            f"ends them with {eod_id}; prepare the data with this model's tokenizer"
        )


def _check_split(split: str) -> None:
    parts = split.split(",")
    if not 1 <= len(parts) <= 3 or not all(re.fullmatch(r"\s*[0-9]*\.?[0-9]+\s*", part) for part in parts):
        raise MinitronError(f"data.split={split!r}: give up to three comma-separated shares, e.g. 99,1,0")
    if sum(float(part) for part in parts) <= 0:
        raise MinitronError(f"data.split={split!r}: the shares must not all be 0")


def build_gpt_datasets(blend, seq_length: int, split: str, seed: int, num_samples: tuple[int, int, int],
                       cache_dir: Optional[str] = None, vocab_size: Optional[int] = None,
                       eod_id: Optional[int] = None) -> tuple:  # fmt: skip
    """Train, valid and test datasets of ``blend`` (each None where ``split`` gives it no share).

    ``num_samples`` is the number of sequences each split must provide at least (it repeats its
    documents, in a new shuffle, when one pass is not enough). ``vocab_size`` (the model's) and ``eod_id``
    (its tokenizer's), when given, are checked against the datasets' sidecars; they stand in for a
    missing sidecar. Index caches go to ``cache_dir`` (None: kept in memory); in a torch.distributed
    world call this on every rank, rank 0 builds the caches first, and ``cache_dir`` must be shared.
    """
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    if seq_length < 1:
        raise MinitronError(f"train.seq_length={seq_length}: must be >= 1")
    num_samples = tuple(num_samples)
    if len(num_samples) != 3 or any(not isinstance(n, numbers.Integral) or n < 0 for n in num_samples):
        raise MinitronError(f"num_samples={num_samples}: give three counts >= 0 (train, valid, test)")
    _check_split(split)
    prefixes, weights = parse_blend(blend)
    described = [describe_prefix(prefix, vocab_size, eod_id) for prefix in prefixes]
    _check_tokenizers(described, vocab_size, eod_id)
    if len(prefixes) > 1 and weights is None:  # explicit weights, so that every split gets its num_samples
        weights = [d["num_tokens"] for d in described]
    # BlendedDataset asks torch.distributed for the rank whenever it has a cache dir (blended_dataset.py:153)
    use_cache = cache_dir is not None and (len(prefixes) == 1 or torch.distributed.is_initialized())
    tokenizer = DatasetTokenizer(
        described[0]["vocab_size"], described[0]["eod_id"],
        {"tokenizer_sha256": described[0]["tokenizer_sha256"], "contents": [d["content"] for d in described]},
    )  # fmt: skip
    config = GPTDatasetConfig(
        random_seed=seed, sequence_length=seq_length, blend=(prefixes, weights), split=split,
        path_to_cache=str(cache_dir) if use_cache else None, tokenizer=tokenizer, reset_position_ids=False,
        reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False,
    )  # fmt: skip
    # A split with a share but no whole document would make Megatron loop forever: drop it where no
    # sample of it is wanted, else say so.
    for index, bounds in enumerate(config.split_matrix):
        if bounds is None:
            continue
        for d in described:
            n = d["num_documents"]
            if int(round(bounds[1] * n)) - int(round(bounds[0] * n)) == 0:
                if num_samples[index] == 0:
                    config.split_matrix[index] = None
                    break
                raise MinitronError(
                    f"data.split={split!r} leaves none of the {n} documents of {d['prefix']} to the "
                    f"{SPLIT_NAMES[index]} split; add documents or change data.split (a share of 0 drops a split)"
                )
    sizes = [int(n) for n in num_samples]
    datasets = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()
    train = datasets[0]
    if train is not None and len(train) == 0:
        raise MinitronError(
            f"data.path={prefixes[0] if len(prefixes) == 1 else prefixes}: the train split holds fewer than "
            f"train.seq_length+1={seq_length + 1} tokens; add data or use a shorter sequence"
        )
    return tuple(datasets)


def collate(samples: Sequence[dict]) -> dict:
    """Stack sample dicts of ``[seq]`` tensors into one dict of ``[len(samples), seq]`` tensors."""
    return {key: torch.stack([torch.as_tensor(sample[key]) for sample in samples]) for key in samples[0]}


class MicroBatchIterator:
    """Micro-batches of one data-parallel rank, forever, resumable from any ``consumed_samples``.

    Position ``p`` (counted over all ranks from the start of training) is sample ``p % len(dataset)``:
    the data wraps around, in the same order, when it runs out. Each micro-step takes the next
    ``micro_batch_size * dp_size`` positions ``[c, c + micro_batch_size * dp_size)``, and rank ``r``
    gets ``c + r, c + r + dp_size, ...`` (interleaved). A global batch is ``num_microbatches`` micro-steps,
    so global batch ``b`` is positions ``[b * global_batch_size, (b + 1) * global_batch_size)`` for any
    ``dp_size``; ``consumed_samples`` after each micro-batch is the position to resume from.
    Yields ``collate``\\ d dicts: ``tokens``, ``labels``, ``loss_mask``, ``position_ids`` ``[micro_batch_size, seq]``.
    """

    def __init__(self, dataset, global_batch_size: int, micro_batch_size: int, dp_size: int = 1, dp_rank: int = 0,
                 consumed_samples: int = 0):  # fmt: skip
        if micro_batch_size < 1:
            raise MinitronError(f"train.micro_batch_size={micro_batch_size}: must be >= 1")
        if dp_size < 1 or not 0 <= dp_rank < dp_size:
            raise MinitronError(f"data-parallel rank {dp_rank} of {dp_size}: need 0 <= rank < size")
        step = micro_batch_size * dp_size
        if global_batch_size < 1 or global_batch_size % step:
            raise MinitronError(
                f"train.global_batch_size={global_batch_size} must be a multiple of train.micro_batch_size="
                f"{micro_batch_size} x data-parallel size {dp_size} = {step}"
            )
        if consumed_samples < 0 or consumed_samples % step:
            raise MinitronError(
                f"consumed_samples={consumed_samples} must be a multiple of train.micro_batch_size x data-parallel "
                f"size = {step} (resume at a global batch boundary)"
            )
        if len(dataset) == 0:
            raise MinitronError("the training dataset holds no samples; add data or use a shorter train.seq_length")
        self.dataset = dataset
        self.global_batch_size, self.micro_batch_size = global_batch_size, micro_batch_size
        self.dp_size, self.dp_rank = dp_size, dp_rank
        self.consumed_samples = consumed_samples

    @property
    def num_microbatches(self) -> int:
        """Micro-batches per global batch on each rank."""
        return self.global_batch_size // (self.micro_batch_size * self.dp_size)

    def indices(self) -> list[int]:
        """Dataset indices of this rank's next micro-batch."""
        first = self.consumed_samples + self.dp_rank
        return [(first + j * self.dp_size) % len(self.dataset) for j in range(self.micro_batch_size)]

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = collate([self.dataset[index] for index in self.indices()])
        self.consumed_samples += self.micro_batch_size * self.dp_size
        return batch
