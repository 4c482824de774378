"""Documents of a text input (``data.path``), for every command that reads text.

``data.path`` is a ``.txt`` file (one document), a ``.jsonl`` file (one document per non-blank line, in
the string field ``data.text_field``), a ``.parquet`` file (one document per row of the string column
``data.text_field``), or a directory: every such file directly in it, in sorted order. A file is read by
what it holds, and one that does not hold what its name says is refused: a ``.txt`` must be UTF-8 text without
NUL bytes (a tokenized ``.bin`` or a parquet file renamed is not), a ``.jsonl`` JSON lines, a ``.parquet`` a
parquet table. Bad input is one :class:`~minitron.errors.MinitronError` naming the file, the line or row, and the fix.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Iterator

from minitron.errors import MinitronError

SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclasses.dataclass
class Source:
    """One input file."""

    path: Path
    sha256: str
    bytes: int
    documents: int  # documents it holds: 1 (.txt), non-blank lines (.jsonl), rows (.parquet)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "bytes": self.bytes, "documents": self.documents}


def input_files(data_path) -> list[Path]:
    """The files of ``data.path``: the file itself, or the text files directly in the directory, sorted."""
    if data_path is None or str(data_path) == "":
        raise MinitronError("data.path is required: pass data.path=FILE_OR_DIR (.txt, .jsonl, .parquet or a directory)")
    path = Path(data_path).expanduser()
    if not path.exists():
        raise MinitronError(f"data.path={path}: no such file or directory")
    if path.is_dir():
        files = sorted(file for file in path.iterdir() if file.is_file() and file.suffix in SUFFIXES)
        if not files:
            raise MinitronError(f"data.path={path}: the directory holds no .txt, .jsonl or .parquet files")
        return files
    if path.suffix in SUFFIXES:
        return [path]
    raise MinitronError(
        f"data.path={path}: unsupported file type {path.suffix!r}; use .txt, .jsonl, .parquet or a directory"
    )


def list_sources(data_path, text_field: str = "text") -> list[Source]:
    """The input files of ``data.path``, hashed and with their document counts; checked before any work."""
    return [_describe(file, text_field) for file in input_files(data_path)]


def read_texts(data_path, text_field: str = "text") -> list[str]:
    """Every document of ``data.path``, in order; refuses an input that holds no text at all."""
    texts = [text for file in input_files(data_path) for text in read_documents(file, text_field)]
    if not any(text.strip() for text in texts):
        raise MinitronError(f"data.path={data_path}: holds no text")
    return texts


def read_documents(path: Path, text_field: str = "text") -> Iterator[str]:
    """The documents of one input file, in order (blank .jsonl lines are not documents)."""
    path = Path(path)
    if path.suffix == ".txt":
        yield _text(path.read_bytes(), path)
    elif path.suffix == ".jsonl":
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield _jsonl_text(line, number, path, text_field)
    else:
        for texts in _parquet_batches(path, text_field):
            yield from texts.to_pylist()


def _describe(path: Path, text_field: str) -> Source:
    """Hash ``path`` and count its documents, checking every one (so bad input fails before any work)."""
    digest, size, documents = hashlib.sha256(), 0, 0
    with open(path, "rb") as f:
        if path.suffix == ".jsonl":
            for number, line in enumerate(f, 1):
                digest.update(line)
                size += len(line)
                if line.strip():
                    _jsonl_text(line, number, path, text_field)
                    documents += 1
        else:
            decoder = codecs.getincrementaldecoder("utf-8")()
            while chunk := f.read(1 << 22):
                digest.update(chunk)
                if path.suffix == ".txt":
                    _check_text_chunk(chunk, size, decoder, path)
                size += len(chunk)
            if path.suffix == ".txt":
                _check_text_chunk(b"", size, decoder, path, final=True)
            documents = 1
    if path.suffix == ".parquet":
        documents = sum(len(texts) for texts in _parquet_batches(path, text_field))
    return Source(path=path.resolve(), sha256=digest.hexdigest(), bytes=size, documents=documents)


def _not_text(path: Path, why: str) -> MinitronError:
    return MinitronError(
        f"data.path={path}: not a text file ({why}); a .txt must be UTF-8 text: give tokenized data to train/distill "
        "as data.path=PREFIX, a parquet file as .parquet"
    )


def _check_text_chunk(chunk: bytes, offset: int, decoder, path: Path, final: bool = False) -> None:
    """Refuse a ``.txt`` that is binary (NUL bytes) or not UTF-8, naming the byte offset."""
    nul = chunk.find(b"\x00")
    if nul >= 0:
        raise _not_text(path, f"a NUL byte at offset {offset + nul}: binary data")
    try:
        decoder.decode(chunk, final=final)
    except UnicodeDecodeError as err:
        raise _not_text(path, f"invalid UTF-8 at byte {offset + err.start}") from None


def _text(data: bytes, path: Path) -> str:
    """The text of a ``.txt`` file's bytes, refused when they are not UTF-8 text."""
    _check_text_chunk(data, 0, codecs.getincrementaldecoder("utf-8")(), path, final=True)
    return data.decode("utf-8")


def _jsonl_text(line: bytes, number: int, path: Path, text_field: str) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        raise MinitronError(f"data.path={path}: line {number} is not valid JSON") from None
    text = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise MinitronError(
            f"data.path={path}: line {number} has no string field {text_field!r}; "
            "set data.text_field= to the field that holds the text"
        )
    return text


def _pyarrow(path: Path):
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MinitronError(f"data.path={path}: reading .parquet files needs pyarrow: `pip install pyarrow`") from None
    return pyarrow


def _parquet_batches(path: Path, text_field: str):
    """The text column of a parquet file, a pyarrow array per batch of rows (checked: strings, no nulls)."""
    pyarrow = _pyarrow(path)
    try:
        parquet = pyarrow.parquet.ParquetFile(path)
    except Exception as err:
        raise MinitronError(f"data.path={path}: not a readable parquet file ({type(err).__name__}: {err})") from None
    schema = parquet.schema_arrow
    if text_field not in schema.names:
        raise MinitronError(
            f"data.path={path}: no column {text_field!r} (columns: {', '.join(schema.names)}); "
            "set data.text_field= to the column that holds the text"
        )
    column_type = schema.field(text_field).type
    if not (pyarrow.types.is_string(column_type) or pyarrow.types.is_large_string(column_type)):
        raise MinitronError(f"data.path={path}: column data.text_field={text_field!r} holds {column_type}, not text")
    rows = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=[text_field]):
        texts = batch.column(0)
        if texts.null_count:
            row = rows + texts.to_pylist().index(None) + 1
            raise MinitronError(f"data.path={path}: row {row} of column data.text_field={text_field!r} is null")
        rows += len(texts)
        yield texts
