"""Chat/preference rendering, answer-only masks, the length rule, packing, and the stored datasets."""

import pytest
import torch

from minitron.align import chat, data
from minitron.errors import MinitronError
from tests.align.align_helpers import CHATML, prepare, preference_rows, sft_rows
from tests.tiny_models import save_char_tokenizer


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("chartok")
    save_char_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def tokenizer(char_dir):
    from minitron.models.tokenizer import load_tokenizer

    return load_tokenizer(char_dir)


def _text(ids):
    return "".join(chr(i) for i in ids)


def test_masks_cover_assistant_turns_with_end_of_turn(tokenizer):
    messages = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]  # fmt: skip
    ids, mask = chat.render_conversation(tokenizer, CHATML, messages, "row")
    answer = _text([t for t, m in zip(ids, mask) if m])
    assert answer == "a1<|im_end|>\na2<|im_end|>\n"  # each answer, its end-of-turn, nothing of the prompts
    assert _text(ids).endswith("<|im_start|>assistant\na2<|im_end|>\n")


def test_pair_rendering_and_default_rewards(tokenizer):
    c_ids, c_mask, r_ids, r_mask, rewards = chat.render_pair(tokenizer, CHATML, {"prompt": "p", "chosen": "yes",
                                                                                 "rejected": "no"}, "row")  # fmt: skip
    assert _text([t for t, m in zip(c_ids, c_mask) if m]) == "yes<|im_end|>\n"
    assert _text([t for t, m in zip(r_ids, r_mask) if m]) == "no<|im_end|>\n"
    assert c_ids[: c_mask.index(1)] == r_ids[: r_mask.index(1)]  # same prompt tokens
    assert rewards == (1.0, 0.0)


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "rejected": "no"}, "no string field 'chosen'"),
    ({"prompt": "p", "chosen": " ", "rejected": "no"}, "empty answer"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "chosen_reward": "high"}, "chosen_reward must be a number"),
])  # fmt: skip
def test_bad_preference_rows(tokenizer, row, message):
    with pytest.raises(MinitronError, match=message):
        chat.render_pair(tokenizer, CHATML, row, "row")


def test_no_template_is_refused(tokenizer):
    with pytest.raises(MinitronError, match="no chat template; pass data.chat_template"):
        chat.chat_template(tokenizer, None, "MODEL")


def test_length_rule_counts(tmp_path, char_dir):
    rows = [{"prompt": "short", "completion": "ok"}, {"prompt": "x" * 40, "completion": "a long answer here"},
            {"prompt": "y" * 80, "completion": "z"}]  # fmt: skip
    # ChatML adds 61 characters: 68 tokens (kept), 119 (prompt 90 < 96: truncated), 142 (prompt 130: dropped)
    for name in ("t", "d", "o"):
        (tmp_path / name).mkdir()
    prefix = prepare(tmp_path / "t", char_dir, "sft", rows, seq_length=96)
    meta = data.read_chat_sidecar(prefix, "sft")
    assert (meta["rows"], meta["num_examples"], meta["truncated"], meta["dropped"]) == (3, 2, 1, 1)
    meta = data.read_chat_sidecar(prepare(tmp_path / "d", char_dir, "sft", rows, seq_length=96, truncation="drop"), "sft")
    assert (meta["num_examples"], meta["truncated"], meta["dropped"]) == (1, 0, 2)
    with pytest.raises(MinitronError, match="data.truncation=off"):
        prepare(tmp_path / "o", char_dir, "sft", rows, seq_length=96, truncation="off")
    assert not list((tmp_path / "o").glob("sft.bin*")) and not list((tmp_path / "o").glob("sft.json"))


def test_sft_samples_padded_and_packed(tmp_path, char_dir, tokenizer):
    prefix = prepare(tmp_path, char_dir, "sft", sft_rows(6), seq_length=256)
    examples = data.ChatExamples(str(prefix))
    padded, packed = data.SFTDataset(str(prefix), 256), data.SFTDataset(str(prefix), 256, pack=True)
    assert len(padded) == 6 and len(packed) < 6
    # every example's answer tokens are the labels where loss_mask is 1, in both layouts
    answers = [[int(t) for t, m in zip(*examples.sequences(i)[0]) if m] for i in range(6)]
    from_padded = [padded[i]["labels"][padded[i]["loss_mask"] > 0].tolist() for i in range(6)]
    assert from_padded == answers
    flat = [t for i in range(len(packed)) for t in packed[i]["labels"][packed[i]["loss_mask"] > 0].tolist()]
    assert flat == [t for a in answers for t in a]
    assert sum(int(padded[i]["loss_mask"].sum()) for i in range(6)) == data.read_chat_sidecar(prefix, "sft")["answer_tokens"]
    sample = packed[0]
    mask = sample["attention_mask"][0]
    first_len = len(examples.sequences(0)[0][0])
    assert mask.shape == (256, 256)
    assert not mask[first_len, first_len] and mask[first_len, first_len - 1]  # 2nd example does not see the 1st
    assert not mask[first_len - 1, 0] and mask[0, 1]  # causal inside an example
    assert sample["position_ids"][first_len].item() == 0


def test_preference_samples(tmp_path, char_dir):
    prefix = prepare(tmp_path, char_dir, "preference", preference_rows(4, rewards=True), seq_length=96)
    dataset = data.PreferenceDataset(str(prefix), 96)
    sample = dataset[1]
    assert sample["tokens"].shape == (2, 96) and sample["rewards"].tolist() == [2.0, 0.5]
    chosen = "".join(chr(t) for t in sample["labels"][0][sample["loss_mask"][0] > 0].tolist())
    rejected = "".join(chr(t) for t in sample["labels"][1][sample["loss_mask"][1] > 0].tolist())
    assert (chosen, rejected) == ("blue<|im_end|>\n", "loud<|im_end|>\n")
    with pytest.raises(MinitronError, match="not a sft dataset"):
        data.read_chat_sidecar(prefix, "sft")
