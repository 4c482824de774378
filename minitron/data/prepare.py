"""Tokenize documents into a Megatron indexed dataset: ``PREFIX.bin``, ``PREFIX.idx`` and ``PREFIX.json``.

Input (``data.path``): a ``.txt``, ``.jsonl`` or ``.parquet`` file or a directory of them, read by
:mod:`minitron.data.documents`.

Each document is tokenized with the model's Hugging Face tokenizer without special tokens, and the
tokenizer's end-of-sequence id (EOD) is appended: the ``.bin`` holds ``ids(doc_0) EOD ids(doc_1) EOD ...``,
one sequence per document, as ``uint16`` when the vocabulary has fewer than 65,500 tokens, else
``int32``. Documents that tokenize to nothing are skipped (and counted). Tokenization runs in
``workers`` processes; the output is byte-identical for any number of them.

``PREFIX.json`` (the sidecar) says what the dataset is: ``num_documents`` and ``num_tokens`` (EODs
included), ``vocab_size``, ``eod_id``, ``dtype``, the tokenizer (path and sha256 of its file, and its
identity: sha256 of its vocabulary and its special tokens' ids, which `train` and `distill` compare with
their model's), the sources (path, sha256, size, documents) and the sha256 of the ``.bin`` and ``.idx``.
"Up to date" (a rerun that writes nothing) means same sources, same tokenizer, and files whose checksums
match the sidecar's. The three files are written
under temporary names unique to the writer (``PREFIX.bin.<pid>.partial``) and renamed into place at the end,
``.bin`` last; bad input leaves nothing behind. The writer holds the lock of ``PREFIX``
(:func:`minitron.fsutil.output_lock`) from the "up to date" check to the last rename; the partial files of a
killed writer are removed by the next one.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import hashlib
import itertools
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from minitron import failures
from minitron.data.documents import list_sources, read_documents
from minitron.errors import MinitronError
from minitron.fsutil import check_not_an_input, output_lock, sha256_file, write_json_atomic
from minitron.models.tokenizer import load_tokenizer, vocabulary_identity

FORMAT = "minitron-indexed-dataset"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
BATCH_CHARS = 1 << 16  # characters of text per tokenization task (a task is a list of whole documents)
BATCH_DOCUMENTS = 64  # documents per task, at most


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def sidecar_path(prefix) -> Path:
    return Path(f"{prefix}.json")


def read_sidecar(prefix) -> Optional[dict]:
    """The ``PREFIX.json`` written by :func:`prepare_dataset`, or None when there is none."""
    path = sidecar_path(prefix)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise MinitronError(f"{path}: malformed JSON; prepare the dataset again (`minitron data prepare`)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MinitronError(f"{path}: not a minitron dataset description (format={meta.get('format')!r})")
    return meta


# ---- the tokenizer -------------------------------------------------------------------------------


def tokenizer_dir(model_path) -> Path:
    """Where the tokenizer of ``model.path`` lives: the HF directory, or a checkpoint's ``hf_files/``."""
    from minitron.models import checkpoint

    if model_path is None or str(model_path) == "":
        raise MinitronError("model.path is required: pass model.path=DIR (HF directory or minitron checkpoint)")
    path = Path(model_path).expanduser()
    if not path.exists():
        raise MinitronError(f"model.path={path}: no such file or directory")
    if checkpoint.is_megatron_checkpoint(path):
        return checkpoint.open_model(path).carried_files
    return path


def tokenizer_identity(files_dir: Path, tokenizer=None) -> dict:
    """Path of the tokenizer, sha256 of its main file, and its vocabulary identity
    (:func:`~minitron.models.tokenizer.vocabulary_identity`): what the sidecar records and readers compare."""
    files_dir = Path(files_dir).resolve()
    for name in TOKENIZER_FILES:
        if (files_dir / name).is_file():
            identity = vocabulary_identity(tokenizer or load_tokenizer(files_dir))
            return {"path": str(files_dir), "file": name, "sha256": sha256_file(files_dir / name), **identity}
    raise MinitronError(f"{files_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")


_worker: dict = {}  # this process's tokenizer, EOD id and token dtype (set by _init_worker)


def _init_worker(files_dir: str, eod_id: int, dtype: str, tokenizer=None) -> None:
    if tokenizer is None:  # a pool process: one tokenizing thread each, the pool is the parallelism
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the pool's terminate(), not minitron.failures' handler
        tokenizer = load_tokenizer(Path(files_dir))
    _worker.update(tokenizer=tokenizer, eod_id=eod_id, dtype=np.dtype(dtype))


def _encode(texts: list[str]) -> list[np.ndarray]:
    """Token ids of each document followed by EOD, ``[len + 1]`` each, in the dataset's dtype."""
    tokenizer, eod_id, dtype = _worker["tokenizer"], _worker["eod_id"], _worker["dtype"]
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return [np.array([*doc, eod_id], dtype=dtype) for doc in ids]


def _batches(documents: Iterable[str]) -> Iterator[list[str]]:
    batch, chars = [], 0
    for text in documents:
        batch.append(text)
        chars += len(text)
        if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCUMENTS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def encode_documents(documents: Iterable[str], files_dir: Path, eod_id: int, dtype, workers: int,
                     tokenizer=None) -> Iterator[np.ndarray]:  # fmt: skip
    """Each document's ids + EOD, in input order, tokenized by ``workers`` processes (1: this one)."""
    init_args = (str(files_dir), eod_id, np.dtype(dtype).name)
    if workers == 1:
        _init_worker(*init_args, tokenizer=tokenizer or load_tokenizer(files_dir))
        for batch in _batches(documents):
            yield from _encode(batch)
        return
    with multiprocessing.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
        pending = collections.deque()  # at most 2 tasks per worker in flight: memory stays bounded
        for batch in _batches(documents):
            failures.check_interrupted()  # a Ctrl-C that landed while the pool forked was swallowed there
            pending.append(pool.apply_async(_encode, (batch,)))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


# ---- the output ----------------------------------------------------------------------------------


def output_prefix(output, overwrite: bool) -> Path:
    """``output`` as a prefix (a trailing .bin/.idx is dropped); refuses an existing PREFIX.bin unless overwrite."""
    if output is None or str(output) == "":
        raise MinitronError("output is required: pass output=PREFIX (writes PREFIX.bin, PREFIX.idx and PREFIX.json)")
    text = str(Path(output).expanduser())
    if text.endswith((".bin", ".idx")):
        text = text[:-4]
    prefix = Path(text)
    if prefix.is_dir():
        raise MinitronError(
            f"output={output} is a directory; output is a file prefix: output={prefix}/NAME writes NAME.bin, "
            "NAME.idx and NAME.json there"
        )
    if Path(f"{prefix}.bin").exists() and not overwrite:
        raise MinitronError(f"output={prefix}: {prefix}.bin already exists; pass overwrite=true to replace it")
    return prefix


def damage(prefix, meta: dict) -> Optional[str]:
    """Why the files of the dataset ``prefix`` do not match its sidecar ``meta`` (None when they do): sizes
    first, then the sha256 of the ``.bin`` and ``.idx`` (those the sidecar records)."""
    bin_path = Path(f"{prefix}.bin")
    expected = meta.get("num_tokens", 0) * np.dtype(meta.get("dtype", "uint16")).itemsize
    if bin_path.stat().st_size != expected:
        return f"{bin_path} holds {bin_path.stat().st_size} bytes, its sidecar says {expected}"
    for suffix in (".bin", ".idx"):
        recorded = meta.get(f"{suffix[1:]}_sha256")
        if recorded is not None and sha256_file(f"{prefix}{suffix}") != recorded:
            return f"{prefix}{suffix} does not match the sha256 its sidecar records"
    return None


def _refuse_damaged(prefix: Path, overwrite: bool) -> None:
    """Without overwrite, an existing dataset whose files do not match its sidecar is named as damaged."""
    if overwrite or not Path(f"{prefix}.bin").is_file() or not Path(f"{prefix}.idx").is_file():
        return
    try:
        meta = read_sidecar(prefix)
    except MinitronError:
        meta = None
    reason = damage(prefix, meta) if meta else None
    if reason:
        raise MinitronError(f"output={prefix}: the dataset there is damaged ({reason}); pass overwrite=true to "
                            "prepare it again")  # fmt: skip


def _up_to_date(output, sources, files_dir, text_field, tokenizer) -> Optional[dict]:
    """The summary of an existing dataset at ``output`` made from the same files with the same tokenizer; None when
    there is none, it was made otherwise, or its files do not match its sidecar's checksums."""
    prefix = Path(str(output).removesuffix(".bin").removesuffix(".idx"))
    sidecar = Path(f"{prefix}.json")
    if not (Path(f"{prefix}.bin").is_file() and Path(f"{prefix}.idx").is_file() and sidecar.is_file()):
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError:
        return None
    same = (
        meta.get("sources") == [source.to_dict() for source in sources]
        and meta.get("tokenizer") == tokenizer_identity(files_dir, tokenizer)
        and meta.get("text_field") == text_field
    )
    if not same or damage(prefix, meta) is not None:
        return None
    keys = ("num_documents", "num_tokens", "skipped_documents", "vocab_size", "eod_id", "dtype")
    return {"output": str(prefix), **{k: meta[k] for k in keys}, "skipped": True}


def prepare_dataset(data_path, model_path, output, text_field: str = "text", workers: Optional[int] = None,
                    overwrite: bool = False, progress: bool = True) -> dict:  # fmt: skip
    """Tokenize ``data_path`` with the tokenizer of ``model_path`` into ``output``.bin/.idx/.json.

    Returns a summary: ``output`` (the prefix), ``num_documents``, ``num_tokens`` (EODs included),
    ``skipped_documents``, ``vocab_size``, ``eod_id``, ``dtype``, ``workers``, ``seconds``, ``tokens_per_s``.
    """
    from megatron.core.datasets.indexed_dataset import DType

    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise MinitronError(f"data.workers={workers}: must be >= 1")
    sources = list_sources(data_path, text_field)
    if not sum(source.documents for source in sources):
        raise MinitronError(f"data.path={data_path}: holds no documents (empty input); nothing to write")
    files_dir = tokenizer_dir(model_path)
    tokenizer = load_tokenizer(files_dir)
    eod_id = tokenizer.eos_token_id
    if eod_id is None:
        raise MinitronError(f"model.path={model_path}: its tokenizer has no eos_token to end documents with")
    vocab_size = len(tokenizer)
    dtype = DType.optimal_dtype(vocab_size)
    prefix = output_prefix(output, overwrite=True)
    final = {suffix: Path(f"{prefix}{suffix}") for suffix in (".bin", ".idx", ".json")}
    check_not_an_input(final.values(), [("model.path", model_path), *(("data.path", s.path) for s in sources)])
    with output_lock(prefix):
        for stale in (*prefix.parent.glob(f"{glob.escape(prefix.name)}.bin*.partial"),
                      *prefix.parent.glob(f"{glob.escape(prefix.name)}.idx*.partial")):  # fmt: skip
            stale.unlink(missing_ok=True)  # left by a killed writer (the lock says none is running)
        existing = _up_to_date(output, sources, files_dir, text_field, tokenizer)
        if existing is not None and not overwrite:
            return existing
        _refuse_damaged(prefix, overwrite)
        output_prefix(output, overwrite)
        return _write_dataset(sources, files_dir, tokenizer, eod_id, vocab_size, dtype, workers, prefix, final,
                              data_path, text_field, progress)  # fmt: skip


def _write_dataset(sources, files_dir, tokenizer, eod_id, vocab_size, dtype, workers, prefix, final, data_path,
                   text_field, progress) -> dict:  # fmt: skip
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from tqdm import tqdm

    from minitron.runtime import versions

    staged = {suffix: Path(f"{final[suffix]}.{os.getpid()}.partial") for suffix in (".bin", ".idx")}
    start = time.perf_counter()
    builder = None
    try:
        builder = IndexedDatasetBuilder(str(staged[".bin"]), dtype=dtype)
        num_documents = num_tokens = skipped = 0
        bin_digest = hashlib.sha256()
        documents = itertools.chain.from_iterable(read_documents(source.path, text_field) for source in sources)
        encoded = encode_documents(documents, files_dir, eod_id, dtype, workers, tokenizer=tokenizer)
        bar = tqdm(total=sum(s.documents for s in sources), desc="tokenize", unit="doc", file=sys.stderr,
                   disable=not progress)  # fmt: skip
        with contextlib.closing(encoded), bar:  # closing: a failure stops the worker pool at once
            for ids in encoded:
                bar.update(1)
                if len(ids) == 1:  # nothing but the EOD: an empty document
                    skipped += 1
                    continue
                builder.add_document(ids, [len(ids)])
                bin_digest.update(ids.tobytes())
                num_documents += 1
                num_tokens += len(ids)
                bar.set_postfix_str(f"{num_tokens:,} tokens", refresh=False)
        builder.finalize(str(staged[".idx"]))
        if num_documents == 0:
            raise MinitronError(f"data.path={data_path}: no document has any text ({skipped} empty); nothing to write")
        seconds = time.perf_counter() - start
        meta = {
            "format": FORMAT,
            "version": 2,
            "num_documents": num_documents,
            "num_tokens": num_tokens,
            "skipped_documents": skipped,
            "vocab_size": vocab_size,
            "eod_id": eod_id,
            "dtype": np.dtype(dtype).name,
            "bin_sha256": bin_digest.hexdigest(),
            "idx_sha256": sha256_file(staged[".idx"]),
            "tokenizer": tokenizer_identity(files_dir, tokenizer),
            "text_field": text_field,
            "sources": [source.to_dict() for source in sources],
            "versions": versions(),
        }
        os.replace(staged[".idx"], final[".idx"])
        write_json_atomic(final[".json"], meta)
        os.replace(staged[".bin"], final[".bin"])  # last: its presence marks a finished dataset
    except BaseException as err:
        if builder is not None:
            with contextlib.suppress(OSError):  # closing flushes: on a full disk that fails again
                builder.data_file.close()
        for path in staged.values():
            path.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = f"output={prefix}"  # a buffered write names no file
        raise
    return {
        "output": str(prefix),
        "num_documents": num_documents,
        "num_tokens": num_tokens,
        "skipped_documents": skipped,
        "vocab_size": vocab_size,
        "eod_id": eod_id,
        "dtype": meta["dtype"],
        "workers": workers,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(num_tokens / max(seconds, 1e-9)),
    }
