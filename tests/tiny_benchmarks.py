"""Tiny benchmark files in the benchmarks asset's layout and the original schemas, made in the tests.

Texts are short (the tiny models attend 256 characters) and deterministic; every task gets enough
documents for its few-shot pool. MMLU gets every one of lm-eval's 57 subjects (2 test, 5 dev each).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = "red blue cat dog sun moon tree rock fish bird cup pen map box hat key".split()


def _phrase(rng: random.Random, n: int = 3) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def mmlu_subjects() -> list[str]:
    """lm-eval's 57 MMLU subjects (from its own task files)."""
    import lm_eval.tasks

    root = Path(lm_eval.tasks.__file__).parent / "mmlu" / "default"
    return sorted(p.stem[len("mmlu_") :] for p in root.glob("mmlu_*.yaml"))


def _rows(benchmark: str, split: str, count: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(count):
        q = _phrase(rng)
        choices = [_phrase(rng, 2) for _ in range(4)]
        if benchmark == "hellaswag":
            rows.append({"ind": i, "activity_label": "Play", "ctx_a": f"A {q}.", "ctx_b": "then", "ctx": f"A {q}. then",
                         "endings": choices, "source_id": f"s{i}", "split": "val", "split_type": "indomain",
                         "label": str(rng.randrange(4))})  # fmt: skip
        elif benchmark == "winogrande":
            rows.append({"sentence": f"The {q} saw _ by the {_phrase(rng, 1)}.", "option1": choices[0], "option2": choices[1],
                         "answer": str(rng.randrange(1, 3))})  # fmt: skip
        elif benchmark in ("arc_challenge", "arc_easy"):
            labels = ["A", "B", "C", "D"] if i % 3 else ["1", "2", "3", "4"]
            rows.append({"id": f"{benchmark}-{split}-{i}", "question": f"Which {q}?",
                         "choices": {"text": choices, "label": labels}, "answerKey": rng.choice(labels)})  # fmt: skip
        elif benchmark == "piqa":
            rows.append({"goal": f"How to {q}?", "sol1": choices[0], "sol2": choices[1], "label": rng.randrange(2)})
        elif benchmark == "social_iqa":
            rows.append({"context": f"Kim had a {q}.", "question": "What next?", "answerA": choices[0],
                         "answerB": choices[1], "answerC": choices[2], "label": str(rng.randrange(1, 4))})  # fmt: skip
        elif benchmark == "commonsense_qa":
            rows.append({"id": f"c{i}", "question": f"Where is the {q}?", "question_concept": "thing",
                         "choices": {"label": list("ABCDE"), "text": [_phrase(rng, 1) for _ in range(5)]},
                         "answerKey": rng.choice("ABCDE")})  # fmt: skip
        elif benchmark == "boolq":
            rows.append({"question": f"is the {q} red", "passage": f"Title -- The {q} is here.", "idx": i,
                         "label": rng.randrange(2)})  # fmt: skip
        elif benchmark == "openbookqa":
            rows.append({"id": f"o{i}", "question_stem": f"The {q} is",
                         "choices": {"text": choices, "label": list("ABCD")}, "answerKey": rng.choice("ABCD")})  # fmt: skip
        elif benchmark == "gsm8k":
            a, b = rng.randrange(1, 9), rng.randrange(1, 9)
            rows.append(
                {"question": f"{a} plus {b}?", "answer": f"{a} + {b} = <<{a}+{b}={a + b}>>{a + b}\n#### {a + b}"}
            )
        else:
            raise ValueError(benchmark)
    return rows


# benchmark -> {split: documents}
SPLITS = {
    "hellaswag": {"validation": 6}, "winogrande": {"validation": 6}, "arc_challenge": {"test": 5, "validation": 4},
    "arc_easy": {"test": 5, "validation": 4}, "piqa": {"validation": 6}, "social_iqa": {"validation": 6},
    "commonsense_qa": {"validation": 6}, "boolq": {"validation": 6}, "openbookqa": {"test": 5, "validation": 4},
    "gsm8k": {"test": 5},
}  # fmt: skip


def write_tiny_benchmarks(root: Path, seed: int = 0) -> Path:
    """Write every benchmark's files under ``root`` (``<benchmark>/<split>.jsonl``); returns ``root``."""
    rng = random.Random(seed)
    files: dict[str, list[dict]] = {}
    for benchmark, splits in SPLITS.items():
        for split, count in splits.items():
            files[f"{benchmark}/{split}.jsonl"] = _rows(benchmark, split, count, rng)
    for split, count in (("test", 2), ("dev", 5)):
        files[f"mmlu/{split}.jsonl"] = [
            {"question": f"Q{i} {_phrase(rng, 2)}?", "subject": subject, "choices": [_phrase(rng, 1) for _ in range(4)],
             "answer": rng.randrange(4)}
            for subject in mmlu_subjects() for i in range(count)
        ]  # fmt: skip
    for name, rows in files.items():
        path = Path(root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return Path(root)
