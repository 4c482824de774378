"""Chat and preference JSONL made in the tests, prepared with the 256-character tokenizer and a ChatML template."""

from __future__ import annotations

import json
from pathlib import Path

# ChatML, as SmolLM2-Instruct's template renders it (without the default system turn)
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QUESTIONS = ["what is two plus two", "name a colour", "say hi", "count to three", "spell cat", "opposite of up"]
ANSWERS = ["four", "blue", "hi there", "one two three", "c a t", "down"]
WRONG = ["five", "loud", "bye", "three two one", "d o g", "left"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sft_rows(n: int = 12) -> list:
    rows = []
    for i in range(n):
        q, a = QUESTIONS[i % len(QUESTIONS)], ANSWERS[i % len(ANSWERS)]
        if i % 3 == 2:  # a two-turn conversation
            rows.append({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": q},
                                      {"role": "assistant", "content": a}, {"role": "user", "content": "again"},
                                      {"role": "assistant", "content": a + "!"}]})  # fmt: skip
        else:
            rows.append({"prompt": q, "completion": a})
    return rows


def preference_rows(n: int = 12, rewards: bool = False) -> list:
    rows = []
    for i in range(n):
        row = {"prompt": QUESTIONS[i % 6], "chosen": ANSWERS[i % 6], "rejected": WRONG[i % 6]}
        if rewards:
            row.update(chosen_reward=1.0 + i % 3, rejected_reward=0.5)
        rows.append(row)
    return rows


def prepare(directory: Path, model_dir: Path, kind: str, rows: list, seq_length: int = 64, **kwargs) -> Path:
    """Write ``rows`` and prepare them as a ``kind`` dataset; returns the prefix."""
    from minitron.align.data import prepare_chat_dataset

    source = write_jsonl(Path(directory) / f"{kind}.jsonl", rows)
    prefix = Path(directory) / kind
    prepare_chat_dataset(kind, source, model_dir, prefix, seq_length, template=CHATML, **kwargs)
    return prefix
