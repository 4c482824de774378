"""`minitron prune prune.target.*=...`: the search picks the candidate with the best final-rung score and writes it
exactly as an explicit-target prune does; a search left with part of its candidates scored (as a killed one
leaves it) resumes without rescoring them; another budget or space refuses the cache."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import last_json, prepare_rotating_corpus, run_cli

SPACE = ["prune.search.hidden_size_divisor=12", "prune.search.ffn_hidden_size_divisor=32",
         "prune.search.num_layers_divisor=1", "prune.search.max_width_pruning=0.5", "prune.search.max_depth_pruning=0.5",
         "prune.search.top_n=5", "calib.num_samples=4", "calib.seq_length=64", "calib.micro_batch_size=4",
         "importance.loss_num_samples=2"]  # fmt: skip
BUDGET = "prune.target.non_embedding_params=200000"  # of the tiny SmolLM2's 347,616; tolerance 5%


@pytest.fixture(scope="module")
def calib_text(tmp_path_factory):
    import random

    rng = random.Random(4)
    words = "red orange yellow green blue indigo violet black white grey brown pink".split()
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)))
    return path


def search(model, text, out, *extra):
    return run_cli("prune", f"model.path={model}", f"data.path={text}", f"output={out}", BUDGET, *SPACE, *extra)


def test_search_chooses_the_best_and_writes_it_as_prune_does(tiny_models, calib_text, tmp_path):
    model, out = tiny_models["smollm2"], tmp_path / "student"
    result = search(model, calib_text, out)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = last_json(result.stdout)
    table = json.loads((out / "search" / "candidates.json").read_text())
    rows = table["candidates"]
    assert len(rows) == 5 and table["space"]["feasible"] >= 5 and table["budget"]["metric"] == "non_embedding_params"
    best = min(rows, key=lambda row: row["loss_b"])
    assert [row["name"] for row in rows if row["chosen"]] == [best["name"]] == [summary["search"]["chosen"]]
    assert all(190000 <= row["non_embedding_params"] <= 200000 for row in rows)
    assert summary["non_embedding_params_after"] == best["non_embedding_params"]
    for name in ("candidates.csv", "candidates.md", "loss_vs_params.png", "loss_vs_speed.png"):
        assert (out / "search" / name).stat().st_size > 100

    # the same student as `minitron prune` with the chosen shape's explicit targets and the same scores
    explicit = tmp_path / "explicit"
    shape = [f"prune.{k}={best[k]}" for k in ("hidden_size", "ffn_hidden_size", "num_attention_heads",
                                              "num_query_groups", "num_layers")]  # fmt: skip
    result = run_cli("prune", f"model.path={model}", f"prune.scores={out}", f"output={explicit}", *shape)
    assert result.returncode == 0, result.stderr[-3000:]
    mine, theirs = load_file(out / "model.safetensors"), load_file(explicit / "model.safetensors")
    assert sorted(mine) == sorted(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert json.loads((out / "config.json").read_text()) == json.loads((explicit / "config.json").read_text())

    # resume: the cache keeps 3 of the 5 candidates (a killed search); they are not rescored, the 2 others are
    cache = tmp_path / "student.search"
    records = sorted((cache / "rung_b").glob("L*.json"))
    assert len(records) == 5
    for record in records[3:]:
        record.unlink()
    kept = {r.name: (r.stat().st_mtime_ns, r.read_text()) for r in records[:3]}
    shutil.rmtree(out)
    result = search(model, calib_text, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count(": cached, loss") == 3 and result.stderr.count("search (b)") == 5
    assert {r.name: (r.stat().st_mtime_ns, r.read_text()) for r in records[:3]} == kept
    assert last_json(result.stdout)["search"]["chosen"] == best["name"]
    resumed = json.loads((out / "search" / "candidates.json").read_text())["candidates"]
    timeless = [{k: v for k, v in row.items() if k != "seconds_b"} for row in rows]  # rescored ones took new times
    assert [{k: v for k, v in row.items() if k != "seconds_b"} for row in resumed] == timeless

    # another budget or another space: the cache is refused, nothing written
    for change in (["prune.target.non_embedding_params=210000"], ["prune.search.max_depth_pruning=0.25"]):
        other = tmp_path / "other"
        result = search(model, calib_text, other, f"prune.search.cache={cache}", *change)
        assert result.returncode == 2, result.stderr[-2000:]
        line = result.stderr.strip().splitlines()[-1]
        assert f"prune.search.cache={cache} was made by another search" in line, line
        assert not other.exists()


@pytest.mark.slow
def test_rung_c_distils_and_ranks_by_heldout_kl(tmp_path, calib_text):
    """top_k=2: both are written, distilled 2 steps and scored on held-out text; the chosen one has the lower KL."""
    from tiny_models import make_peaked_teacher

    teacher = make_peaked_teacher(tmp_path / "teacher")
    prefix = prepare_rotating_corpus(tmp_path, teacher, "the quick brown fox jumps over the lazy dog again")
    out = tmp_path / "student"
    result = search(teacher, calib_text, out, "prune.search.top_k=2", "prune.search.distill_steps=2",
                    f"prune.search.distill_data={prefix}", f"prune.search.heldout_data={calib_text}",
                    "prune.search.heldout_seq_length=64", "prune.search.heldout_max_windows=4",
                    'prune.search.distill_overrides=["train.seq_length=32","train.global_batch_size=2","train.eval_interval=0","train.warmup_steps=0"]')  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((out / "search" / "candidates.json").read_text())["candidates"]
    distilled = [row for row in rows if row["kl_c"] is not None]
    assert len(distilled) == 2 and all(row["loss_c"] > 0 for row in distilled)
    assert [row["name"] for row in rows if row["chosen"]] == [min(distilled, key=lambda r: r["kl_c"])["name"]]
    assert last_json(result.stdout)["search"]["ranked_by"] == "kl_c"
