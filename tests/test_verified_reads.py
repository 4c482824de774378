"""Outputs verified on read: a dataset's sidecar records its tokenizer's identity and its files' checksums; train and
distill refuse data made with another tokenizer (both ways round); "up to date" means matching checksums; eval and
importance read a file by what it holds and refuse binary ones."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import last_json, run_cli, run_minitron, tree_snapshot

TEXTS = [f"document {i}: the quick brown fox jumps over the lazy dog, {i * 7} times" for i in range(80)]


def swapped_tokenizer(model_dir: Path) -> Path:
    """Give ``model_dir`` the 256-character tokenizer with 'a' and 'b' swapped: same size, same EOS id, other ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(i): i for i in range(256)}
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=chr(0)))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=chr(10)).save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def two_tokenizers(tiny_models, tmp_path_factory) -> dict:
    """Models A (the tiny Llama) and B (the same with the swapped tokenizer), and a dataset made with each."""
    from minitron.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("tokenizers")
    models = {"A": tiny_models["llama31"], "B": swapped_tokenizer(Path(shutil.copytree(tiny_models["llama31"],
                                                                                         root / "B")))}  # fmt: skip
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    data = {}
    for name, model in models.items():
        data[name] = root / f"data_{name}"
        prepare_dataset(corpus, model, data[name], workers=1, progress=False)
    return {"models": models, "data": data, "corpus": corpus}


def test_the_sidecar_records_the_tokenizer_identity_and_checksums(two_tokenizers):
    from transformers import AutoTokenizer

    for name in ("A", "B"):
        prefix, model = two_tokenizers["data"][name], two_tokenizers["models"][name]
        meta = json.loads(Path(f"{prefix}.json").read_text())
        tokenizer = AutoTokenizer.from_pretrained(model)
        pairs = sorted((index, token) for token, index in tokenizer.get_vocab().items())
        vocab_sha256 = hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()
        assert meta["tokenizer"]["vocab_sha256"] == vocab_sha256
        assert meta["tokenizer"]["special_tokens"]["eos"] == 10 and meta["tokenizer"]["vocab_size"] == 256
        for suffix in ("bin", "idx"):
            assert meta[f"{suffix}_sha256"] == hashlib.sha256(Path(f"{prefix}.{suffix}").read_bytes()).hexdigest()
    a, b = (json.loads(Path(f"{two_tokenizers['data'][n]}.json").read_text())["tokenizer"] for n in "AB")
    assert a["vocab_sha256"] != b["vocab_sha256"] and a["special_tokens"] == b["special_tokens"]


@pytest.mark.parametrize("command", ["train", "distill"])
@pytest.mark.parametrize("model,data", [("A", "B"), ("B", "A")])
def test_data_of_another_tokenizer_is_refused(command, model, data, two_tokenizers, tmp_path, monkeypatch, capfd):
    """Same vocabulary size and EOS id, other ids: the old size/EOD check let it through; now one error line."""
    path, prefix = two_tokenizers["models"][model], two_tokenizers["data"][data]
    models = [f"model.path={path}"] if command == "train" else [f"teacher.path={path}", f"student.path={path}"]
    before = tree_snapshot(tmp_path)
    code, stdout, stderr = run_minitron(monkeypatch, capfd, command, *models, f"data.path={prefix}",
                                        f"output={tmp_path / 'run'}", "train.seq_length=16")  # fmt: skip
    assert code == 2 and stdout == ""
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"error: data.path={prefix} was tokenized with another tokenizer ("), line
    assert "256 tokens, vocabulary sha256" in line and "prepare it with this model's tokenizer" in line, line
    assert tree_snapshot(tmp_path) == before


def test_up_to_date_means_matching_checksums(two_tokenizers, tmp_path, monkeypatch, capfd):
    """A .bin changed in place (same size, one token different) is no longer "up to date": the rerun refuses it as
    damaged (without overwrite) and rebuilds it (with overwrite); train refuses a .bin of the wrong size."""
    prefix = tmp_path / "data"
    model, corpus = two_tokenizers["models"]["A"], two_tokenizers["corpus"]
    argv = ["data", "prepare", f"data.path={corpus}", f"model.path={model}", f"output={prefix}", "data.workers=1"]
    assert run_minitron(monkeypatch, capfd, *argv)[0] == 0
    good = Path(f"{prefix}.bin").read_bytes()
    code, stdout, _ = run_minitron(monkeypatch, capfd, *argv)
    assert code == 0 and last_json(stdout)["skipped"] is True  # up to date: checksums match

    damaged = bytearray(good)
    damaged[100] ^= 0x01
    Path(f"{prefix}.bin").write_bytes(bytes(damaged))
    before = tree_snapshot(tmp_path)
    code, stdout, stderr = run_minitron(monkeypatch, capfd, *argv)
    (line,) = stderr.strip().splitlines()
    assert code == 2 and line == (f"error: output={prefix}: the dataset there is damaged ({prefix}.bin does not "
                                  "match the sha256 its sidecar records); pass overwrite=true to prepare it "
                                  "again")  # fmt: skip
    assert tree_snapshot(tmp_path) == before
    code, stdout, _ = run_minitron(monkeypatch, capfd, *argv, "overwrite=true")
    assert code == 0 and "skipped" not in last_json(stdout) and Path(f"{prefix}.bin").read_bytes() == good

    Path(f"{prefix}.bin").write_bytes(good + bytes(4096))  # two writers' zeros appended
    code, _, stderr = run_minitron(monkeypatch, capfd, "train", f"model.path={model}", f"data.path={prefix}",
                                   f"output={tmp_path / 'run'}", "train.seq_length=16")  # fmt: skip
    (line,) = stderr.strip().splitlines()
    expected = (f"error: data.path={prefix}: {prefix}.bin holds {len(good) + 4096} bytes but {prefix}.idx indexes "
                f"{len(good) // 2} tokens of 2 bytes")  # fmt: skip
    assert code == 2 and line.startswith(expected), line
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def text_files(tmp_path_factory) -> dict:
    """The same documents as .jsonl and as .parquet, a tokenized .bin, and binary files named .txt."""
    import numpy as np
    import pyarrow
    import pyarrow.parquet

    root = tmp_path_factory.mktemp("by_content")
    files = {"jsonl": root / "docs.jsonl", "parquet": root / "docs.parquet", "bin": root / "docs.bin",
             "bin as txt": root / "tokens.txt", "parquet as txt": root / "table.txt",
             "latin-1 txt": root / "latin.txt"}  # fmt: skip
    files["jsonl"].write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    pyarrow.parquet.write_table(pyarrow.table({"text": TEXTS}), files["parquet"])
    files["bin"].write_bytes(np.arange(2000, dtype=np.uint16).tobytes())
    files["bin as txt"].write_bytes(files["bin"].read_bytes())
    files["parquet as txt"].write_bytes(files["parquet"].read_bytes())
    files["latin-1 txt"].write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e ".encode("latin-1") * 50)
    return files


def test_eval_reads_parquet_by_content(tiny_models, text_files):
    """The loss of the documents from a .parquet file equals the loss of the same documents from .jsonl."""
    losses = {}
    for kind in ("jsonl", "parquet"):
        result = run_cli("eval", f"model.path={tiny_models['llama31']}", f"data.path={text_files[kind]}",
                         "eval.seq_length=64")  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        losses[kind] = last_json(result.stdout)
    assert losses["parquet"]["loss"] == losses["jsonl"]["loss"] and losses["parquet"]["tokens"] > 1000


def test_importance_reads_parquet_by_content(tiny_models, text_files):
    """Calibration windows cut from a .parquet file are those of the same documents in .jsonl."""
    import torch

    from minitron.models.checkpoint import open_model
    from minitron.prune.calibration import calibration_windows

    source = open_model(tiny_models["llama31"])
    windows = {kind: calibration_windows(source, text_files[kind], "text", 8, 64) for kind in ("jsonl", "parquet")}
    assert windows["jsonl"].shape == (8, 64) and torch.equal(windows["jsonl"], windows["parquet"])


@pytest.mark.parametrize("command", ["eval", "importance"])
@pytest.mark.parametrize(
    "kind,message",
    [
        ("bin", "unsupported file type '.bin'; use .txt, .jsonl, .parquet or a directory"),
        ("bin as txt", "not a text file (a NUL byte at offset 0: binary data)"),
        ("parquet as txt", "not a text file (a NUL byte at offset"),
        ("latin-1 txt", "not a text file (invalid UTF-8 at byte 3)"),
    ],
)
def test_binary_or_unknown_files_are_refused(command, kind, message, tiny_models, text_files, tmp_path, monkeypatch,
                                             capfd):  # fmt: skip
    extra = ["eval.seq_length=64"] if command == "eval" else [f"output={tmp_path / 'scores'}", "calib.num_samples=2",
                                                              "calib.seq_length=16"]  # fmt: skip
    before = tree_snapshot(tmp_path, text_files["bin"].parent)
    code, stdout, stderr = run_minitron(monkeypatch, capfd, command, f"model.path={tiny_models['llama31']}",
                                        f"data.path={text_files[kind]}", *extra)  # fmt: skip
    assert code == 2 and stdout == ""
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"error: data.path={text_files[kind]}: {message}"), line
    assert tree_snapshot(tmp_path, text_files["bin"].parent) == before
