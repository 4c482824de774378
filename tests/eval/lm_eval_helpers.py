"""Running lm-eval tasks on a backend while recording what it is asked and answers (for backend comparisons)."""

from __future__ import annotations

import pytest

from minitron.eval import harness, lm_tasks


def recording(base):
    class Recording(base):
        """Keeps the token-level requests and answers lm-eval hands to the backend."""

        def _loglikelihood_tokens(self, requests, *args, **kwargs):
            answers = super()._loglikelihood_tokens(requests, *args, **kwargs)
            self.seen = getattr(self, "seen", []) + [(tuple(c), tuple(x), a) for (_, c, x), a in zip(requests, answers)]
            return answers

        def generate_until(self, requests, *args, **kwargs):
            texts = super().generate_until(requests, *args, **kwargs)
            self.generated = getattr(self, "generated", []) + list(zip([r.args[0] for r in requests], texts))
            return texts

    return Recording


def run_tasks(lm, benchmarks, names, shots, limits=None, max_gen_toks=24):
    manager = lm_tasks.task_manager(benchmarks)
    tasks = lm_tasks.load_tasks(manager, names, shots, limits or {n: None for n in names})
    for task in tasks:
        for leaf in task.leaves:
            if leaf.get_config("output_type") == "generate_until":
                leaf.set_config("generation_kwargs", {"max_gen_toks": max_gen_toks}, update=True)
    return harness.summarize(harness.evaluate(lm, tasks, manager, seed=1234, log_samples=False), tasks)


def run_tasks_logged(lm, benchmarks, names, shots, items):
    """Run ``names`` with ``items[name]`` documents each (spread over MMLU's subjects); lm-eval's per-sample log.

    Returns (summary, samples: leaf task name -> lm-eval's logged samples, leaves: leaf task name -> task)."""
    manager = lm_tasks.task_manager(benchmarks)
    tasks = [lm_tasks.spread_items(t, items[t.name])
             for t in lm_tasks.load_tasks(manager, names, shots, {n: None for n in names})]  # fmt: skip
    results = harness.evaluate(lm, tasks, manager, seed=1234, log_samples=True)
    leaves = {leaf.task_name: leaf for t in tasks for leaf in t.leaves}
    return harness.summarize(results, tasks), results["samples"], leaves


def make_long_context_model(directory):
    """A tiny SmolLM2-like model (char tokenizer) in DIRECTORY/model that attends 1024 positions (MMLU 5-shot fits)."""
    import json

    from tiny_models import make_tiny_model, save_char_tokenizer

    path = make_tiny_model("smollm2", directory / "model")
    save_char_tokenizer(path)
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = 1024
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    """Tiny local benchmark files for every shipped task (tests/tiny_benchmarks.py)."""
    from tiny_benchmarks import write_tiny_benchmarks

    return write_tiny_benchmarks(tmp_path_factory.mktemp("benchmarks"))
