"""The schemas of evaluate / generate / bench: every field documented, every config runnable, bad values named."""

from __future__ import annotations

import ast
import inspect

import pytest
from hydra import compose, initialize_config_dir

from minitron.config import evaluate, schema
from minitron.errors import MinitronError


def test_every_field_has_a_comment():
    source = inspect.getsource(evaluate)
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for field in (n for n in node.body if isinstance(n, ast.AnnAssign)):
                text = "\n".join(lines[field.lineno - 1 : field.end_lineno])
                assert "#" in text, f"{node.name}.{field.target.id} has no comment"


@pytest.mark.parametrize("command", ["evaluate", "generate", "bench"])
def test_config_header_says_how_to_run_it_and_composes(command):
    text = (schema.Path(schema.CONF_DIR) / f"{command}.yaml").read_text()
    assert text.startswith("#") and f"minitron {command} model.path=" in text
    schema.register()
    with initialize_config_dir(config_dir=schema.CONF_DIR, version_base=None):
        extra = {"evaluate": ["output=O"], "generate": ["prompt=hi"], "bench": []}[command]
        cfg = compose(config_name=command, overrides=["model.path=M", *extra])
    assert schema.to_object(cfg).model.path == "M"


@pytest.mark.parametrize(
    "settings,message",
    [
        (dict(backend="vllm"), "eval.backend='vllm': use one of megatron, hf"),
        (dict(tasks=["mmlu"], fewshot={"winogrande": 5}), "eval.fewshot.winogrande: winogrande is not in eval.tasks"),
        (dict(limit=0), "eval.limit=0: must be >= 1 or null"),
        (dict(num_fewshot=-1), "eval.num_fewshot=-1"),
    ],
)
def test_bad_settings_name_the_field(settings, message):
    with pytest.raises(MinitronError, match=message.replace("(", r"\(").replace(")", r"\)")):
        evaluate.EvaluateSettings(**settings)


def test_shots_and_limits_per_task():
    settings = evaluate.EvaluateSettings(tasks=["mmlu", "winogrande"], num_fewshot=2, fewshot={"mmlu": 5},
                                         limit=10, limits={"winogrande": 3})  # fmt: skip
    assert settings.shots("mmlu", 0) == 5 and settings.shots("winogrande", 0) == 2
    assert evaluate.EvaluateSettings().shots("mmlu", 5) == 5 and evaluate.EvaluateSettings().shots("hellaswag", 0) == 0
    assert settings.limit_of("mmlu") == 10 and settings.limit_of("winogrande") == 3
