"""minitron data prepare: exact token ids per document, any number of workers, sidecar, CLI and bad input."""

import hashlib
import json
import random

import numpy as np
import pytest

from conftest import last_json, run_cli
from minitron.data import prepare
from minitron.errors import MinitronError
from tiny_models import save_char_tokenizer

WORDS = "the of and to in is was for on that with as by at from this be are an or it which has had not".split()
EOD = 10  # the character tokenizer's eos_token is "\n"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A directory with only the 256-character tokenizer (id = code point, 0 for others)."""
    path = tmp_path_factory.mktemp("tokenizer")
    save_char_tokenizer(path)
    return path


def char_ids(text: str) -> list[int]:
    """What the character tokenizer gives, computed independently of it, plus the EOD."""
    return [ord(c) if ord(c) < 256 else 0 for c in text] + [EOD]


def make_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({"id": i, field: text}) + "\n" for i, text in enumerate(texts)))
    return path


def read_documents(prefix) -> list[list[int]]:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(str(prefix))
    return [dataset[i].tolist() for i in range(len(dataset))]


def test_round_trip_and_sidecar(tokenizer_dir, tmp_path):
    texts = make_texts(30) + ["naïve ünïcode €"]  # € is outside the 256 characters: id 0
    data = write_jsonl(tmp_path / "docs.jsonl", texts)
    result = prepare.prepare_dataset(data, tokenizer_dir, tmp_path / "out" / "docs", workers=1, progress=False)

    expected = [char_ids(text) for text in texts]
    assert read_documents(tmp_path / "out" / "docs") == expected
    assert np.fromfile(tmp_path / "out" / "docs.bin", dtype=np.uint16).tolist() == sum(expected, [])
    meta = json.loads((tmp_path / "out" / "docs.json").read_text())
    num_tokens = sum(map(len, expected))
    assert (meta["num_documents"], meta["num_tokens"], meta["vocab_size"], meta["eod_id"]) == (31, num_tokens, 256, EOD)
    assert meta["dtype"] == "uint16" and meta["skipped_documents"] == 0
    assert meta["tokenizer"]["sha256"] == hashlib.sha256((tokenizer_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert meta["tokenizer"]["path"] == str(tokenizer_dir.resolve())
    assert meta["sources"] == [{"path": str(data.resolve()), "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
                                "bytes": data.stat().st_size, "documents": 31}]  # fmt: skip
    assert meta["bin_sha256"] == hashlib.sha256((tmp_path / "out" / "docs.bin").read_bytes()).hexdigest()
    assert result["num_documents"] == 31 and result["num_tokens"] == num_tokens
    assert result["output"] == str(tmp_path / "out" / "docs")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["docs.bin", "docs.idx", "docs.json"]


def test_workers_give_identical_bytes(tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "BATCH_DOCUMENTS", 7)  # 200 documents: 29 tasks spread over the workers
    data = write_jsonl(tmp_path / "docs.jsonl", make_texts(200, seed=1))
    for workers in (1, 3):
        prepare.prepare_dataset(data, tokenizer_dir, tmp_path / f"w{workers}", workers=workers, progress=False)
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"w1{suffix}").read_bytes() == (tmp_path / f"w3{suffix}").read_bytes()
    assert len(read_documents(tmp_path / "w3")) == 200


def test_directory_of_txt_jsonl_parquet(tokenizer_dir, tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet

    texts = make_texts(6, seed=2)
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text(texts[0])
    write_jsonl(folder / "b.jsonl", texts[1:3], field="body")
    pyarrow.parquet.write_table(pyarrow.table({"body": texts[3:6], "n": [1, 2, 3]}), folder / "c.parquet")
    (folder / "notes.md").write_text("not a document")
    result = prepare.prepare_dataset(folder, tokenizer_dir, tmp_path / "out", text_field="body", workers=2,
                                     progress=False)  # fmt: skip
    # a .txt file is one document whatever field is named; files are read in sorted order
    assert read_documents(tmp_path / "out") == [char_ids(text) for text in texts]
    assert [s["path"].rsplit("/", 1)[1] for s in json.loads((tmp_path / "out.json").read_text())["sources"]] == [
        "a.txt", "b.jsonl", "c.parquet"]  # fmt: skip
    assert result["num_documents"] == 6


def test_megatron_checkpoint_uses_its_carried_tokenizer(tokenizer_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "dist").mkdir(parents=True)
    (ckpt / "hf_files").mkdir()
    save_char_tokenizer(ckpt / "hf_files")
    hf_config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                 "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                 "vocab_size": 256, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
                 "rope_theta": 10000.0}  # fmt: skip
    (ckpt / "minitron.json").write_text(
        json.dumps({"format": "minitron-megatron-checkpoint", "dtype": "float32", "hf_config": hf_config})
    )
    assert prepare.tokenizer_dir(ckpt) == ckpt / "hf_files"
    data = tmp_path / "one.txt"
    data.write_text("hello world")
    prepare.prepare_dataset(data, ckpt, tmp_path / "out", workers=1, progress=False)
    assert read_documents(tmp_path / "out") == [char_ids("hello world")]
    assert json.loads((tmp_path / "out.json").read_text())["tokenizer"]["path"] == str((ckpt / "hf_files").resolve())


def test_empty_documents_are_skipped_and_all_empty_is_an_error(tokenizer_dir, tmp_path):
    data = write_jsonl(tmp_path / "docs.jsonl", ["one", "", "two"])
    result = prepare.prepare_dataset(data, tokenizer_dir, tmp_path / "out", workers=1, progress=False)
    assert read_documents(tmp_path / "out") == [char_ids("one"), char_ids("two")]
    assert result["skipped_documents"] == 1
    write_jsonl(tmp_path / "empty.jsonl", ["", ""])
    with pytest.raises(MinitronError, match="no document has any text"):
        prepare.prepare_dataset(tmp_path / "empty.jsonl", tokenizer_dir, tmp_path / "none", workers=1, progress=False)
    assert not list(tmp_path.glob("none*"))


def test_refuses_to_overwrite_unless_asked(tokenizer_dir, tmp_path):
    data = write_jsonl(tmp_path / "docs.jsonl", ["first"])
    prepare.prepare_dataset(data, tokenizer_dir, tmp_path / "out", workers=1, progress=False)
    write_jsonl(data, ["second", "third"])
    with pytest.raises(MinitronError, match=r"out.bin already exists; pass overwrite=true"):
        prepare.prepare_dataset(data, tokenizer_dir, tmp_path / "out.bin", workers=1, progress=False)
    assert read_documents(tmp_path / "out") == [char_ids("first")]
    prepare.prepare_dataset(data, tokenizer_dir, tmp_path / "out", workers=1, overwrite=True, progress=False)
    assert read_documents(tmp_path / "out") == [char_ids("second"), char_ids("third")]
    assert sorted(p.name for p in tmp_path.glob("out*")) == ["out.bin", "out.idx", "out.json"]


def make_bad_input(folder, case):
    """data.path for each bad-input case (``folder`` also holds a stray notes.md)."""
    if case == "missing":
        return folder / "missing.jsonl"
    if case == "unsupported":
        return folder / "notes.md"
    if case == "no_inputs":
        return folder
    if case == "no_field":
        (folder / "bad.jsonl").write_text('{"text": "ok"}\n[1, 2]\n')
        return folder / "bad.jsonl"
    (folder / "broken.jsonl").write_text('{"text": "a"\n')
    return folder / "broken.jsonl"


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "data.path=.*missing.jsonl: no such file"),
        ("unsupported", "data.path=.*unsupported file type '.md'"),
        ("no_inputs", "data.path=.*the directory holds no .txt, .jsonl or .parquet files"),
        ("no_field", "data.path=.*bad.jsonl: line 2 has no string field 'text'; set data.text_field="),
        ("not_json", "data.path=.*broken.jsonl: line 1 is not valid JSON"),
    ],
)
def test_bad_input_is_named(tokenizer_dir, tmp_path, case, message):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.md").write_text("x")
    with pytest.raises(MinitronError, match=message):
        prepare.prepare_dataset(make_bad_input(folder, case), tokenizer_dir, tmp_path / "out" / "x", progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_model_path_and_parquet_column(tokenizer_dir, tmp_path):
    data = write_jsonl(tmp_path / "docs.jsonl", ["x"])
    with pytest.raises(MinitronError, match="model.path=.*nowhere: no such file"):
        prepare.prepare_dataset(data, tmp_path / "nowhere", tmp_path / "out", progress=False)
    with pytest.raises(MinitronError, match="no tokenizer files"):
        prepare.prepare_dataset(data, tmp_path, tmp_path / "out", progress=False)
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet

    pyarrow.parquet.write_table(pyarrow.table({"body": ["a", None]}), tmp_path / "t.parquet")
    with pytest.raises(MinitronError, match=r"no column 'text' \(columns: body\); set data.text_field="):
        prepare.prepare_dataset(tmp_path / "t.parquet", tokenizer_dir, tmp_path / "out", progress=False)
    with pytest.raises(MinitronError, match="row 2 of column data.text_field='body' is null"):
        prepare.prepare_dataset(tmp_path / "t.parquet", tokenizer_dir, tmp_path / "out", "body", progress=False)
    assert not list(tmp_path.glob("out*"))


# ---- the command ---------------------------------------------------------------------------------


def test_cli_writes_dataset_and_json_line(tokenizer_dir, tmp_path):
    texts = make_texts(12, seed=3)
    data = write_jsonl(tmp_path / "docs.jsonl", texts)
    out = tmp_path / "data" / "docs"
    result = run_cli("data", "prepare", f"data.path={data}", f"model.path={tokenizer_dir}", f"output={out}",
                     "data.workers=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = last_json(result.stdout)
    assert summary["num_documents"] == 12 and summary["output"] == str(out)
    assert summary["num_tokens"] == sum(len(char_ids(text)) for text in texts)
    assert read_documents(out) == [char_ids(text) for text in texts]


def assert_refused(result, message, out_dir):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], lines[-3:]
    assert sum(line.startswith("error: ") for line in lines) == 1 and len(lines) == 1, lines
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_cli_bad_input(tokenizer_dir, tmp_path):
    out_dir = tmp_path / "out"
    model = f"model.path={tokenizer_dir}"
    output = f"output={out_dir / 'x'}"
    assert_refused(run_cli("data", "prepare", model, output), "data.path is required", out_dir)
    (tmp_path / "empty.jsonl").write_text("\n")
    assert_refused(run_cli("data", "prepare", f"data.path={tmp_path / 'empty.jsonl'}", model, output),
                   "holds no documents (empty input)", out_dir)  # fmt: skip
    write_jsonl(tmp_path / "body.jsonl", ["a", "b"], field="body")
    assert_refused(run_cli("data", "prepare", f"data.path={tmp_path / 'body.jsonl'}", model, output),
                   "line 1 has no string field 'text'; set data.text_field=", out_dir)  # fmt: skip


def test_cli_data_sub_commands():
    result = run_cli("data", "tokenize")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown data sub-command 'tokenize'")
    assert run_cli("data").returncode == 2
    assert run_cli("data", "--help").returncode == 0


def test_prepare_again_is_a_no_op_until_the_input_changes(tiny_models, tmp_path):
    from minitron.data.prepare import prepare_dataset

    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "hello world"}\n{"text": "second document"}\n')
    out = tmp_path / "data" / "corpus"
    first = prepare_dataset(source, tiny_models["llama31"], out, workers=1, progress=False)
    bin_bytes = (tmp_path / "data" / "corpus.bin").read_bytes()
    again = prepare_dataset(source, tiny_models["llama31"], out, workers=1, progress=False)
    assert again["skipped"] is True and again["num_tokens"] == first["num_tokens"]
    assert (tmp_path / "data" / "corpus.bin").read_bytes() == bin_bytes
    source.write_text('{"text": "changed"}\n')
    with pytest.raises(MinitronError, match="already exists; pass overwrite=true"):
        prepare_dataset(source, tiny_models["llama31"], out, workers=1, progress=False)
