"""SmolLM2-135M on 200 items each of MMLU 5-shot, HellaSwag, Winogrande and ARC-Easy: minitron's Megatron backend
and lm-eval's ``hf`` backend give the same accuracy.

Heavy (about 40 minutes of 2 idle CPU cores; hours on a loaded machine, hence the 4-hour timeout): run by
``make test-heavy``, not by ``make test``. A run peaked at ~12 GB resident memory (in the hf half: lm-eval's
``hf`` backend keeps full-vocabulary logits of every position of 8 MMLU 5-shot prompts). The JSON below is
written after the Megatron half as well, so a run cut short still leaves those figures.
Needs the assets (``minitron assets fetch smollm2-135m benchmarks``); skipped with the reason without them.

Items: HellaSwag, Winogrande and ARC-Easy score their first 200 documents, 0-shot (lm-eval's few-shot pools,
the train splits, are not shipped). MMLU is 5-shot from dev (lm-eval's own pool) on 200 test questions spread
over the 57 subjects (:func:`minitron.eval.lm_tasks.spread_items`: the first 4 questions of the first 29
subjects by name, the first 3 of the other 28), so every subject counts and no subject dominates.

Both backends run fp32 on CPU with batch size 8 on the same requests. Checked per request: identical context and
continuation token ids, the same ``is_greedy``, log-likelihoods within :data:`LOGLIK_TOLERANCE`. Checked per item
and metric (``acc``; ``acc_norm`` where the task has it): the same answer, except on a near-tie, an item whose
top-two scores (on the metric's scale) are closer than twice the tolerance, which such a difference can flip.
Near-ties are counted and must be few (:data:`MAX_NEAR_TIES` per task and metric).

Writes ``benchmarks/results/smollm2_backends_200.json``: per task both backends' accuracies (lm-eval's main
metric with stderr, and acc / acc_norm from the per-item log), the counts, the worst difference, wall times.
"""

import json
import os
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO
from lm_eval_helpers import recording, run_tasks_logged

from minitron import assets
from minitron.eval import harness

pytestmark = [pytest.mark.assets, pytest.mark.slow, pytest.mark.heavy, pytest.mark.timeout(4 * 3600)]

NEEDED = ("smollm2-135m", "benchmarks")
ITEMS = 200
SHOTS = {"mmlu": 5, "hellaswag": 0, "winogrande": 0, "arc_easy": 0}
BATCH = 8
LOGLIK_TOLERANCE = 1e-4  # |log-likelihood difference| per request, fp32 (batch composition moves it by ~1e-5)
MAX_NEAR_TIES = 2  # items per task and metric whose top-two gap is under 2 x LOGLIK_TOLERANCE (1% of 200)
RESULT = REPO / "benchmarks" / "results" / "smollm2_backends_200.json"


def item_scores(samples: dict, leaves: dict) -> dict:
    """(leaf task, doc id) -> {metric: (its per-choice scores, the item's 0/1 value)} for acc and acc_norm."""
    out = {}
    for leaf_name, rows in samples.items():
        for row in rows:
            lls = np.array([float(r[0][0] if isinstance(r, list) else r[0]) for r in row["filtered_resps"]])
            lengths = np.array([float(len(c)) for c in leaves[leaf_name].doc_to_choice(row["doc"])])
            scales = {"acc": lls, "acc_norm": lls / lengths if len(lengths) == len(lls) else None}
            out[(leaf_name, row["doc_id"])] = {m: (scales[m], float(row[m])) for m in ("acc", "acc_norm") if m in row}
    return out


def top_two_gap(scores: np.ndarray) -> float:
    top = np.sort(scores)[::-1]
    return float(top[0] - top[1])


@pytest.fixture(scope="module")
def runs():
    """Both backends on every task (per task wall seconds); their recorded requests; the JSON written."""
    if not assets.assets_present(*NEEDED):
        pytest.skip(
            f"assets {NEEDED} are not in {assets.minitron_home()}: run `minitron assets fetch {' '.join(NEEDED)}`"
        )
    from lm_eval.models.huggingface import HFLM

    from minitron.eval.megatron_lm import MegatronLM
    from minitron.models.checkpoint import load_model, open_model
    from minitron.models.tokenizer import load_tokenizer
    from minitron.parallel import setup_distributed

    setup_distributed(1, 1)  # a module-long world (the per-test megatron_world fixture cannot serve a module)
    harness.go_offline()
    model_dir, benchmarks = assets.asset_path("smollm2-135m"), assets.asset_path("benchmarks")
    load_before = os.getloadavg()[0]

    def run(lm) -> dict:
        out = {}
        for name, shots in SHOTS.items():
            start = time.perf_counter()
            summary, samples, leaves = run_tasks_logged(lm, benchmarks, [name], {name: shots}, {name: ITEMS})
            out[name] = {"summary": summary[name], "items": item_scores(samples, leaves),
                         "seconds": time.perf_counter() - start}  # fmt: skip
        return out

    def write(result: dict) -> None:
        sys.path.insert(0, str(REPO))
        from benchmarks.common import machine

        result |= {"load_average_1min_before": load_before, "load_average_1min_after": os.getloadavg()[0],
                   "model": str(model_dir), "machine": machine()}  # fmt: skip
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(result, indent=2) + "\n")

    source = open_model(model_dir)
    ours = recording(MegatronLM)(load_model(source, 1, 1, torch.float32).eval(), load_tokenizer(model_dir),
                                 max_length=source.arch.max_position_embeddings, batch_size=BATCH)  # fmt: skip
    our_runs = run(ours)
    our_seen = ours.seen
    del ours
    write({"partial": "the Megatron backend only (the hf backend did not finish)",  # replaced when it does
           "megatron": {name: r["summary"] | {"seconds": r["seconds"]} for name, r in our_runs.items()}})  # fmt: skip
    theirs = recording(HFLM)(pretrained=str(model_dir), dtype=torch.float32, batch_size=BATCH, device="cpu")
    their_runs = run(theirs)
    result = compare(our_runs, their_runs, our_seen, theirs.seen)
    write(result)
    return result


def compare(our_runs: dict, their_runs: dict, our_seen: list, their_seen: list) -> dict:
    """Per request and per item agreement of the two backends, as recorded in the JSON."""
    deltas = [abs(a[2][0] - b[2][0]) for a, b in zip(our_seen, their_seen)]
    requests = {
        "count": len(our_seen), "count_hf": len(their_seen),
        "same_token_ids": all(a[:2] == b[:2] for a, b in zip(our_seen, their_seen)),
        "greedy_mismatches": sum(a[2][1] != b[2][1] for a, b in zip(our_seen, their_seen)),
        "worst_loglik_difference": max(deltas), "median_loglik_difference": float(np.median(deltas)),
    }  # fmt: skip
    tasks = {}
    for name in SHOTS:
        ours, theirs = our_runs[name]["items"], their_runs[name]["items"]
        row = {"items": len(ours), "items_hf": len(theirs), "num_fewshot": SHOTS[name],
               "main_metric": our_runs[name]["summary"]["metric"], "metrics": {}}  # fmt: skip
        for backend, runs in (("megatron", our_runs), ("hf", their_runs)):
            summary = runs[name]["summary"]
            row[backend] = {"value": summary["value"], "stderr": summary["stderr"], "seconds": runs[name]["seconds"],
                            "items_per_s": summary["items"] / runs[name]["seconds"]}  # fmt: skip
        for metric in (m for m in ("acc", "acc_norm") if all(m in item for item in ours.values())):
            gaps = {key: min(top_two_gap(ours[key][metric][0]), top_two_gap(theirs[key][metric][0])) for key in ours}
            near_ties = [key for key, gap in gaps.items() if gap < 2 * LOGLIK_TOLERANCE]
            differ = [key for key in ours if ours[key][metric][1] != theirs[key][metric][1]]
            row["metrics"][metric] = {
                "megatron": float(np.mean([v[metric][1] for v in ours.values()])),
                "hf": float(np.mean([v[metric][1] for v in theirs.values()])),
                "near_ties": len(near_ties), "differing_items": len(differ),
                "differing_not_near_tie": [list(k) for k in differ if k not in near_ties],
            }  # fmt: skip
        tasks[name] = row
    return {"items_per_task": ITEMS, "batch_size": BATCH, "dtype": "float32", "device": "cpu",
            "mmlu_items": "5-shot (dev pool); 200 test questions: the first 4 of the first 29 subjects by name, "
                          "the first 3 of the other 28",
            "loglik_tolerance": LOGLIK_TOLERANCE, "near_tie_gap": 2 * LOGLIK_TOLERANCE,
            "requests": requests, "tasks": tasks,
            "seconds": {backend: sum(r[name]["seconds"] for name in SHOTS)
                        for backend, r in (("megatron", our_runs), ("hf", their_runs))}}  # fmt: skip


def test_same_requests_and_log_likelihoods(runs):
    requests = runs["requests"]
    assert requests["count"] == requests["count_hf"] > 4 * ITEMS
    assert requests["same_token_ids"]
    assert requests["greedy_mismatches"] == 0
    assert requests["worst_loglik_difference"] < LOGLIK_TOLERANCE, requests


@pytest.mark.parametrize("name", list(SHOTS))
def test_same_accuracy_except_near_ties(runs, name):
    row = runs["tasks"][name]
    assert row["items"] == row["items_hf"] == ITEMS
    assert set(row["metrics"]) == ({"acc"} if name in ("mmlu", "winogrande") else {"acc", "acc_norm"})
    for metric, counts in row["metrics"].items():
        assert counts["differing_not_near_tie"] == [], (metric, counts)
        assert counts["near_ties"] <= MAX_NEAR_TIES, (metric, counts)
        assert abs(counts["megatron"] - counts["hf"]) * ITEMS <= counts["differing_items"] + 1e-9
    if all(c["differing_items"] == 0 for c in row["metrics"].values()):
        assert row["megatron"]["value"] == row["hf"]["value"]
    assert row["megatron"]["value"] == row["metrics"][row["main_metric"]]["megatron"]
