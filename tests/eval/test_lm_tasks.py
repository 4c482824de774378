"""The offline task definitions: lm-eval's own tasks on local files, their few-shot pools, the checks."""

from __future__ import annotations

import pytest
import yaml

from minitron.errors import MinitronError
from minitron.eval import harness, lm_tasks


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    from tiny_benchmarks import write_tiny_benchmarks

    harness.go_offline()
    return write_tiny_benchmarks(tmp_path_factory.mktemp("benchmarks"))


def test_every_task_has_a_yaml_and_mmlu_categories_match_lm_eval():
    import lm_eval.tasks

    for name in lm_tasks.TASKS:
        config = yaml.safe_load((lm_tasks.TASKS_DIR / f"{name}.yaml").read_text().replace("!function", ""))
        assert config["group"] == f"minitron_{name}"
    root = lm_tasks.Path(lm_eval.tasks.__file__).parent / "mmlu" / "default"
    for category in ("stem", "other", "social_sciences", "humanities"):
        theirs = sorted(p.stem[len("mmlu_"):] for p in root.glob("mmlu_*.yaml")
                        if f'"tag": "mmlu_{category}_tasks"' in p.read_text())  # fmt: skip
        ours = yaml.safe_load((lm_tasks.TASKS_DIR / f"mmlu_{category}.yaml").read_text().replace("!function", ""))
        assert [t["dataset_kwargs"]["subject"] for t in ours["task"]] == theirs
        assert [t["task"] for t in ours["task"]] == [f"mmlu_{s}" for s in theirs]


def test_tasks_read_the_local_files_with_lm_eval_prompts(benchmarks):
    manager = lm_tasks.task_manager(benchmarks)
    names = ["mmlu", "arc_easy", "boolq"]
    tasks = {t.name: t for t in lm_tasks.load_tasks(manager, names, {"mmlu": 5, "arc_easy": 0, "boolq": 0},
                                                    {"mmlu": None, "arc_easy": 3, "boolq": None})}  # fmt: skip
    assert len(tasks["mmlu"].leaves) == 57 and tasks["mmlu"].items == 114 and tasks["arc_easy"].items == 3
    leaf = next(t for t in tasks["mmlu"].leaves if t.task_name == "mmlu_anatomy")
    doc = leaf.task_docs[0]
    prompt = leaf.fewshot_context(doc, 5)
    assert prompt.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert prompt.count("\nAnswer:") == 6 and prompt.endswith(f"{doc['question'].strip()}\nA. {doc['choices'][0]}\n"
                                                               f"B. {doc['choices'][1]}\nC. {doc['choices'][2]}\n"
                                                               f"D. {doc['choices'][3]}\nAnswer:")  # fmt: skip
    arc = tasks["arc_easy"].leaves[0]
    numbered = next(d for d in arc.task_docs if d["choices"]["label"][0] == "1")
    assert arc.doc_to_target(numbered) == numbered["choices"]["label"].index(numbered["answerKey"])
    boolq = tasks["boolq"].leaves[0].task_docs[0]
    assert tasks["boolq"].leaves[0].doc_to_text(boolq) == f"{boolq['passage']}\nQuestion: {boolq['question']}?\nAnswer:"


def test_spread_items_over_subjects(benchmarks):
    """100 MMLU items over 57 subjects of 2 test questions: 43 subjects (first by name) give 2, 14 give 1."""
    manager = lm_tasks.task_manager(benchmarks)
    (task,) = lm_tasks.load_tasks(manager, ["mmlu"], {"mmlu": 0}, {"mmlu": None})
    spread = lm_tasks.spread_items(task, 100)
    names = sorted(spread.docs)
    assert spread.items == 100 and [spread.docs[n] for n in names] == [2] * 43 + [1] * 14
    assert lm_tasks.samples_of([spread])[names[-1]] == [0] and lm_tasks.spread_items(task, 500).items == 114
    assert task.items == 114  # the loaded task is left as it was


@pytest.mark.parametrize("name,shots", [("hellaswag", 5), ("gsm8k", 4), ("winogrande", 5)])
def test_stand_in_pool_is_every_other_document_never_the_scored_one(benchmarks, name, shots):
    """Pool = the scored split: with shots = documents - 1, each prompt holds all the others and not itself."""
    manager = lm_tasks.task_manager(benchmarks)
    (task,) = lm_tasks.load_tasks(manager, [name], {name: shots}, {name: None})
    leaf = task.leaves[0]
    leaf.set_fewshot_seed(1234)
    docs = list(leaf.task_docs)
    assert len(docs) == shots + 1
    for doc in docs:
        context = leaf.fewshot_context(doc, shots)
        context = context[0] if isinstance(context, list) else context  # winogrande: one context per option
        examples = context.split(leaf.config.fewshot_delimiter)[:-1]
        assert len(examples) == shots
        own = leaf.doc_to_text(doc) if name != "winogrande" else doc["sentence"][: doc["sentence"].index("_")]
        assert not any(example.startswith(own) for example in examples)
    with pytest.raises(MinitronError, match=f"eval.num_fewshot={shots + 1} for {name}: .* holds only {shots} examples"):
        lm_tasks.load_tasks(manager, [name], {name: shots + 1}, {name: None})


def test_standard_pool_labels():
    assert lm_tasks.TASKS["mmlu"].pool == "dev (lm-eval's own pool)"
    assert (
        lm_tasks.TASKS["arc_challenge"].pool
        == "validation (stand-in: lm-eval samples from train, which is not shipped)"
    )
    with pytest.raises(MinitronError, match="unknown task 'mmlu_pro'; known tasks: mmlu, hellaswag"):
        lm_tasks.check_task_names(["mmlu_pro"])
