"""`minitron evaluate` end to end: outputs, the hf backend and every layout equal to TP=1, and bad input (one error
line, exit 2, nothing written)."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO, last_json, run_cli, run_torchrun
from lm_eval_helpers import benchmarks  # noqa: F401 (fixture)

from minitron.eval import lm_tasks

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def long_context_model(tmp_path_factory):
    """The tiny SmolLM2-like model attending 1024 positions (MMLU 5-shot fits)."""
    from lm_eval_helpers import make_long_context_model

    return make_long_context_model(tmp_path_factory.mktemp("lm"))


def _evaluate_args(model, benchmarks, output, *extra):
    tasks = ",".join(lm_tasks.TASKS)
    return ["evaluate", f"model.path={model}", f"eval.data_dir={benchmarks}", f"output={output}",
            f"eval.tasks=[{tasks}]", "eval.limit=2", "+eval.fewshot.hellaswag=2", "+eval.fewshot.gsm8k=1",
            "eval.max_gen_toks=12", "eval.batch_size=3", *extra]  # fmt: skip


def _samples(output) -> dict:
    """(leaf task, doc_id) -> (arguments, responses) from the per-sample logs."""
    out = {}
    for path in output.glob("samples_*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            out[(path.stem[len("samples_") :], row["doc_id"])] = (row["arguments"], row["resps"])
    return out


def _assert_same_samples(got: dict, want: dict, skip_tasks=()) -> None:
    assert got.keys() == want.keys() and len(want) > 100
    for key, (arguments, responses) in want.items():
        if key[0] in skip_tasks:
            continue
        got_arguments, got_responses = got[key]
        assert got_arguments == arguments, key
        for mine, theirs in zip(got_responses, responses, strict=True):
            if isinstance(theirs[0], str):  # generated text
                assert mine == theirs, key
            else:  # [logprob, is_greedy]
                assert abs(mine[0][0] - theirs[0][0]) < TOLERANCE and mine[0][1] == theirs[0][1], key


@pytest.mark.slow
def test_evaluate_outputs_and_every_layout_equals_tp1(long_context_model, benchmarks, tmp_path):
    single = run_cli(*_evaluate_args(long_context_model, benchmarks, tmp_path / "tp1"), timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    result = last_json(single.stdout)
    assert set(result["results"]) == set(lm_tasks.TASKS)
    assert result["tasks"]["mmlu"] | {"value": None, "stderr": None} == {
        "metric": "acc", "value": None, "stderr": None, "items": 57 * 2, "num_fewshot": 5,
        "fewshot_pool": "dev (lm-eval's own pool)"}  # fmt: skip
    assert result["tasks"]["hellaswag"]["fewshot_pool"].startswith("validation without the scored item (stand-in")
    assert result["tasks"]["winogrande"]["num_fewshot"] == 0 and result["tasks"]["winogrande"]["fewshot_pool"] is None
    table = single.stdout.splitlines()[:-1]
    assert table[0].split() == ["task", "metric", "value", "stderr", "items", "shots"] and len(table) == 1 + len(
        lm_tasks.TASKS
    )
    results = json.loads((tmp_path / "tp1" / "results.json").read_text())
    assert results["results"]["mmlu"]["acc,none"] == result["results"]["mmlu"]
    assert results["minitron"]["tasks"] == result["tasks"] and results["minitron"]["benchmarks_dir"] == str(benchmarks)
    markdown = (tmp_path / "tp1" / "results.md").read_text()
    assert all(subject in markdown for subject in ("abstract_algebra", "world_religions", "winogrande", "gsm8k"))
    reference = _samples(tmp_path / "tp1")
    assert all(
        arguments[0][0].count("\n\n") == 2 for (task, _), (arguments, _) in reference.items() if task == "hellaswag"
    )
    hf = run_cli(*_evaluate_args(long_context_model, benchmarks, tmp_path / "hf", "eval.backend=hf"), timeout=600)
    assert hf.returncode == 0, hf.stderr[-3000:]
    assert last_json(hf.stdout)["results"] == result["results"]
    _assert_same_samples(_samples(tmp_path / "hf"), reference)  # lm-eval's own backend: same prompts and scores
    cli = REPO / "minitron" / "cli.py"
    for layout in (["parallel.tp=2"], ["parallel.pp=2"], []):  # the last: DP=2
        output = tmp_path / (layout[0].replace("parallel.", "").replace("=", "") if layout else "dp2")
        run = run_torchrun(2, cli, *_evaluate_args(long_context_model, benchmarks, output, *layout), timeout=900)
        assert last_json(run.stdout)["tasks"].keys() == result["tasks"].keys()
        # lm-eval draws random few-shot examples in each process's document order, so under DP the
        # random stand-in pools (hellaswag, gsm8k here) give other prompts; MMLU's first_n pool does not
        _assert_same_samples(_samples(output), reference, skip_tasks=() if layout else ("hellaswag", "gsm8k"))


def _assert_refused(result, output, *needles):
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], (
        result.stderr[-2000:]
    )
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not output.exists() and not output.with_name(output.name + ".partial").exists()


def test_unknown_task_lists_the_known_ones(tiny_models, benchmarks, tmp_path):
    out = tmp_path / "out"
    result = run_cli("evaluate", f"model.path={tiny_models['smollm2']}", f"eval.data_dir={benchmarks}", f"output={out}",
                     "eval.tasks=[mmlu,triviaqa]")  # fmt: skip
    _assert_refused(result, out, "unknown task 'triviaqa'", "known tasks: " + ", ".join(lm_tasks.TASKS))


def test_missing_benchmark_assets_name_the_fetch_command(tiny_models, tmp_path):
    out = tmp_path / "out"
    result = run_cli("evaluate", f"model.path={tiny_models['smollm2']}", f"output={out}", "eval.tasks=[hellaswag]",
                     env={"MINITRON_HOME": str(tmp_path / "empty_home")})  # fmt: skip
    _assert_refused(result, out, "minitron assets fetch benchmarks")


def test_missing_benchmark_file_in_data_dir(tiny_models, benchmarks, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(benchmarks, partial)
    (partial / "arc_easy" / "validation.jsonl").unlink()
    out = tmp_path / "out"
    result = run_cli("evaluate", f"model.path={tiny_models['smollm2']}", f"eval.data_dir={partial}", f"output={out}",
                     "eval.tasks=[arc_easy]")  # fmt: skip
    _assert_refused(result, out, "arc_easy/validation.jsonl is missing")


def test_num_fewshot_larger_than_the_pool(tiny_models, benchmarks, tmp_path):
    out = tmp_path / "out"
    result = run_cli("evaluate", f"model.path={tiny_models['smollm2']}", f"eval.data_dir={benchmarks}", f"output={out}",
                     "eval.tasks=[mmlu]", "eval.num_fewshot=6")  # fmt: skip
    _assert_refused(result, out, "eval.num_fewshot=6 for mmlu", "holds only 5 examples", "use at most 5")


def test_context_shorter_than_the_prompts_is_refused(tiny_models, benchmarks, tmp_path):
    # MMLU 5-shot prompts are ~400 characters; the tiny model attends 256 (one token per character)
    out = tmp_path / "out"
    result = run_cli("evaluate", f"model.path={tiny_models['smollm2']}", f"eval.data_dir={benchmarks}", f"output={out}",
                     "eval.tasks=[mmlu]", "eval.limit=1")  # fmt: skip
    _assert_refused(result, out, "loglikelihood requests are longer than the model's context of 256 tokens",
                    "eval.allow_truncation=true")  # fmt: skip


def test_tokenizer_that_does_not_belong_to_the_model(tiny_models, benchmarks, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model = tmp_path / "model"
    shutil.copytree(tiny_models["smollm2"], model)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    words = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(300)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, eos_token="w1").save_pretrained(model)
    out = tmp_path / "out"
    result = run_cli(
        "evaluate", f"model.path={model}", f"eval.data_dir={benchmarks}", f"output={out}", "eval.tasks=[piqa]"
    )
    _assert_refused(result, out, "the tokenizer has 300 tokens but the model's vocab_size is 256")
