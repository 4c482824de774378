"""GPT datasets over prepared prefixes (samples, blends, splits, checks) and the resumable micro-batch iterator."""

import json
import random

import pytest
import torch

from minitron.data import prepare
from minitron.data.gpt_datasets import MicroBatchIterator, build_gpt_datasets
from minitron.errors import MinitronError
from tiny_models import save_char_tokenizer

EOD = 10  # the character tokenizer's eos_token ("\n")
SEQ = 16


def make_texts(letters: str, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(letters + " ") for _ in range(rng.randint(3, 60))) for _ in range(count)]


@pytest.fixture(scope="module")
def prefixes(tmp_path_factory):
    """Two datasets of the character tokenizer (prefixes "a", "b"; "tokenizer" its directory): A uses only
    the letters a-m, B only n-z."""
    root = tmp_path_factory.mktemp("datasets")
    save_char_tokenizer(root / "tokenizer")
    out = {"tokenizer": root / "tokenizer"}
    for name, letters, count in (("a", "abcdefghijklm", 120), ("b", "nopqrstuvwxyz", 80)):
        texts = make_texts(letters, count, seed=len(name + letters))
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
        prepare.prepare_dataset(data, root / "tokenizer", root / name, workers=1, progress=False)
        out[name] = str(root / name)
    return out


def as_text(ids) -> str:
    return "".join(map(chr, ids.tolist()))


def stream_of(dataset) -> str:
    """The dataset's documents (ids + EOD) concatenated in its shuffled document order, as characters."""
    indexed = dataset.dataset
    return "".join(as_text(torch.as_tensor(indexed[int(doc)])) for doc in dataset.document_index)


def test_samples_are_windows_of_the_document_stream(prefixes, tmp_path):
    train, valid, test = build_gpt_datasets(prefixes["a"], SEQ, "90,5,5", seed=7, num_samples=(50, 5, 5),
                                            cache_dir=tmp_path / "cache")  # fmt: skip
    assert len(train) >= 50 and len(valid) >= 5 and len(test) >= 5
    stream = stream_of(train)
    for index in range(len(train)):
        sample = train[index]
        assert set(sample) == {"tokens", "labels", "loss_mask", "position_ids"}
        assert all(value.shape == (SEQ,) for value in sample.values())
        assert torch.equal(sample["labels"][:-1], sample["tokens"][1:])  # labels are the next tokens
        assert torch.equal(sample["position_ids"], torch.arange(SEQ))
        assert torch.equal(sample["loss_mask"], torch.ones(SEQ))
        window = as_text(sample["tokens"]) + chr(int(sample["labels"][-1]))
        assert window in stream  # seq+1 consecutive tokens of the documents, EODs included
    # the index cache makes a second build identical
    again, _, _ = build_gpt_datasets(prefixes["a"], SEQ, "90,5,5", seed=7, num_samples=(50, 5, 5),
                                     cache_dir=tmp_path / "cache")  # fmt: skip
    assert all(torch.equal(again[i]["tokens"], train[i]["tokens"]) for i in range(len(train)))
    assert list((tmp_path / "cache").iterdir())


def test_splits_share_no_document(prefixes):
    train, valid, test = build_gpt_datasets(prefixes["a"], SEQ, "80,10,10", seed=1, num_samples=(40, 8, 8))
    documents = [set(map(int, split.document_index)) for split in (train, valid, test)]
    assert [len(d) for d in documents] == [96, 12, 12]  # 120 documents: contiguous ranges 0-95, 96-107, 108-119
    assert documents[0] == set(range(96)) and documents[1] == set(range(96, 108))
    assert documents[2] == set(range(108, 120))


def test_blend_draws_the_weighted_shares(prefixes):
    train, _, _ = build_gpt_datasets([(0.7, prefixes["a"]), (0.3, prefixes["b"])], SEQ, "100,0,0", seed=3,
                                     num_samples=(1000, 0, 0))  # fmt: skip
    assert len(train) == 1000
    ids = [int(train[i]["dataset_id"]) for i in range(1000)]
    assert abs(ids.count(0) - 700) <= 2 and abs(ids.count(1) - 300) <= 2
    for i in range(0, 1000, 37):  # each sample comes from the dataset it says
        letters = set(as_text(train[i]["tokens"])) - {" ", chr(EOD)}
        assert letters <= set("abcdefghijklm" if ids[i] == 0 else "nopqrstuvwxyz"), (ids[i], letters)
    # unweighted: in proportion to their tokens, and still the number of samples asked for
    train, _, _ = build_gpt_datasets([prefixes["a"], prefixes["b"]], SEQ, "100,0,0", seed=3, num_samples=(500, 0, 0))
    tokens = [json.loads(open(p + ".json").read())["num_tokens"] for p in (prefixes["a"], prefixes["b"])]
    share = sum(int(train[i]["dataset_id"]) == 0 for i in range(500)) / 500
    assert len(train) >= 500 and abs(share - tokens[0] / sum(tokens)) < 0.01


def test_checks_name_the_field(prefixes, tmp_path):
    with pytest.raises(MinitronError, match=r"data.path=.*nowhere: .*nowhere.bin and .*nowhere.idx not found.*"
                                            r"minitron data prepare"):  # fmt: skip
        build_gpt_datasets(str(tmp_path / "nowhere"), SEQ, "100,0,0", 1, (10, 0, 0))
    with pytest.raises(MinitronError, match="EOD id 10 but the model's tokenizer ends them with 2"):
        build_gpt_datasets(prefixes["a"], SEQ, "100,0,0", 1, (10, 0, 0), vocab_size=256, eod_id=2)
    with pytest.raises(MinitronError, match="has 256 tokens but the model's vocabulary has 200"):
        build_gpt_datasets(prefixes["a"], SEQ, "100,0,0", 1, (10, 0, 0), vocab_size=200)
    with pytest.raises(MinitronError, match="data.split='1,x'"):
        build_gpt_datasets(prefixes["a"], SEQ, "1,x", 1, (10, 0, 0))
    with pytest.raises(MinitronError, match="blend weight -1.0 .* must be > 0"):
        build_gpt_datasets([(1, prefixes["a"]), (-1, prefixes["b"])], SEQ, "100,0,0", 1, (10, 0, 0))
    # another tokenizer in the blend; a sidecar that does not match its .idx
    for name, edit, message in (("other", {"tokenizer": {"sha256": "0" * 64}}, "different tokenizers"),
                                ("stale", {"num_tokens": 1}, "the files come from different runs")):  # fmt: skip
        copy = tmp_path / name
        for suffix in (".bin", ".idx"):
            copy.with_name(name + suffix).write_bytes(open(prefixes["b"] + suffix, "rb").read())
        meta = {**json.loads(open(prefixes["b"] + ".json").read()), **edit}
        copy.with_name(name + ".json").write_text(json.dumps(meta))
        with pytest.raises(MinitronError, match=message):
            build_gpt_datasets([prefixes["a"], str(copy)], SEQ, "100,0,0", 1, (10, 0, 0))


def test_split_without_documents(prefixes, tmp_path):
    data = tmp_path / "few.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["abc def", "ghi", "jkl mno", "pqr"]))
    prepare.prepare_dataset(data, prefixes["tokenizer"], tmp_path / "few", workers=1, progress=False)
    # 4 documents at 99,1,0: none for validation; fine when no validation sample is wanted
    train, valid, test = build_gpt_datasets(str(tmp_path / "few"), 4, "99,1,0", 1, (10, 0, 0))
    assert len(train) >= 10 and valid is None and test is None
    with pytest.raises(MinitronError, match="data.split='99,1,0' leaves none of the 4 documents .* valid split"):
        build_gpt_datasets(str(tmp_path / "few"), 4, "99,1,0", 1, (10, 2, 0))


# ---- micro-batches -------------------------------------------------------------------------------


def numbered(count: int) -> list[dict]:
    """Samples whose tokens say their index."""
    return [{"tokens": torch.full((3,), i), "labels": torch.full((3,), i)} for i in range(count)]


def take(iterator, count: int) -> list[list[int]]:
    return [next(iterator)["tokens"][:, 0].tolist() for _ in range(count)]


def test_micro_batches_resume_exactly():
    dataset = numbered(10)
    full = take(MicroBatchIterator(dataset, 8, 2, dp_size=2, dp_rank=1), 8)
    # global batch b is positions [8b, 8b+8) (wrapping at 10); rank 1 of 2 gets every second one
    assert full == [[1, 3], [5, 7], [9, 1], [3, 5], [7, 9], [1, 3], [5, 7], [9, 1]]
    for consumed in (8, 16, 24):
        resumed = MicroBatchIterator(dataset, 8, 2, dp_size=2, dp_rank=1, consumed_samples=consumed)
        assert take(resumed, 8 - consumed // 4) == full[consumed // 4 :]
        assert resumed.consumed_samples == 32


def test_data_parallel_ranks_split_each_global_batch():
    dataset = numbered(50)
    single = MicroBatchIterator(dataset, 12, 3, dp_size=1)
    ranks = [MicroBatchIterator(dataset, 12, 1, dp_size=4, dp_rank=r, consumed_samples=12) for r in range(4)]
    assert single.num_microbatches == 4 and ranks[0].num_microbatches == 3
    take(single, 4)  # global batch 0
    expected = sorted(sum(take(single, 4), []))  # global batch 1: samples 12..23
    seen = [sum(take(rank, 3), []) for rank in ranks]
    assert sorted(sum(seen, [])) == expected == list(range(12, 24))
    assert all(not set(a) & set(b) for i, a in enumerate(seen) for b in seen[i + 1 :])


def test_micro_batches_of_gpt_samples(prefixes):
    train, _, _ = build_gpt_datasets(prefixes["a"], SEQ, "100,0,0", seed=5, num_samples=(40, 0, 0))
    full = list(zip(range(6), MicroBatchIterator(train, 8, 4)))
    resumed = MicroBatchIterator(train, 8, 4, consumed_samples=8)
    for (_, expected), batch in zip(full[2:], resumed):
        assert set(batch) == {"tokens", "labels", "loss_mask", "position_ids"}
        assert batch["tokens"].shape == (4, SEQ) and batch["tokens"].dtype == torch.int64
        assert all(torch.equal(batch[key], expected[key]) for key in batch)
    assert torch.equal(full[0][1]["tokens"], torch.stack([train[i]["tokens"] for i in range(4)]))


def test_batch_sizes_must_divide():
    message = r"train.global_batch_size=10 must be a multiple of train.micro_batch_size=2 x data-parallel size 2 = 4"
    with pytest.raises(MinitronError, match=message):
        MicroBatchIterator(numbered(10), 10, 2, dp_size=2)
    with pytest.raises(MinitronError, match="consumed_samples=6 must be a multiple"):
        MicroBatchIterator(numbered(10), 8, 2, dp_size=2, consumed_samples=6)


def test_blend_cache_in_a_distributed_world(prefixes, megatron_world, tmp_path):
    """A blend's index cache is written in a torch.distributed world and read back to the same samples."""
    blend = [(0.5, prefixes["a"]), (0.5, prefixes["b"])]
    first, _, _ = build_gpt_datasets(blend, SEQ, "100,0,0", seed=2, num_samples=(64, 0, 0), cache_dir=tmp_path)
    assert any(path.name.endswith("BlendedDataset-train-dataset_index.npy") for path in tmp_path.iterdir())
    again, _, _ = build_gpt_datasets(blend, SEQ, "100,0,0", seed=2, num_samples=(64, 0, 0), cache_dir=tmp_path)
    assert all(torch.equal(first[i]["tokens"], again[i]["tokens"]) for i in range(64))
