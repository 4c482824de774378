"""The one reader of text inputs (eval, importance, prune and data prepare): every format, in order, bad input."""

import json

import pytest

from minitron.data import documents
from minitron.errors import MinitronError


def test_read_texts_of_a_file(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(json.dumps({"text": "a"}) + "\n\n" + json.dumps({"text": "b"}) + "\n")
    assert documents.read_texts(jsonl) == ["a", "b"]  # the blank line is no document
    (tmp_path / "t.txt").write_text("one\n\ntwo")
    assert documents.read_texts(tmp_path / "t.txt") == ["one\n\ntwo"]  # a .txt file is one document
    jsonl.write_text(json.dumps({"body": "a"}) + "\n")
    with pytest.raises(MinitronError, match="line 1 has no string field 'text'; set data.text_field="):
        documents.read_texts(jsonl)
    assert documents.read_texts(jsonl, text_field="body") == ["a"]
    with pytest.raises(MinitronError, match="missing.txt: no such file"):
        documents.read_texts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(MinitronError, match="holds no text"):
        documents.read_texts(tmp_path / "empty.txt")
    (tmp_path / "notes.md").write_text("text")
    with pytest.raises(MinitronError, match=r"unsupported file type '\.md'"):
        documents.read_texts(tmp_path / "notes.md")


def test_read_texts_of_a_directory_with_parquet(tmp_path):
    import pyarrow
    import pyarrow.parquet

    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "b1"}) + "\n" + json.dumps({"body": "b2"}) + "\n")
    pyarrow.parquet.write_table(pyarrow.table({"body": ["c1", "c2", "c3"]}), tmp_path / "c.parquet")
    (tmp_path / "a.txt").write_text("a1")
    (tmp_path / "skipped.csv").write_text("x")
    assert documents.read_texts(tmp_path, "body") == ["a1", "b1", "b2", "c1", "c2", "c3"]  # files in sorted order
    pyarrow.parquet.write_table(pyarrow.table({"body": ["c1", None]}), tmp_path / "c.parquet")
    with pytest.raises(MinitronError, match="row 2 of column data.text_field='body' is null"):
        documents.read_texts(tmp_path, "body")
