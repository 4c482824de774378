"""Every shipped Hydra config composes against its dataclass schema (a broken YAML fails here)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from minitron.config import schema

CONF = Path(schema.CONF_DIR)
PRIMARY = sorted(p.stem for p in CONF.glob("*.yaml"))
GROUP_OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir()
    if group.is_dir() and group.name != "hydra" and (CONF / f"{group.name}.yaml").is_file()
    for option in group.glob("*.yaml")
)


@pytest.fixture(scope="module", autouse=True)
def hydra_dir():
    schema.register()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        yield


@pytest.mark.parametrize("name", PRIMARY)
def test_primary_config_composes(name):
    cfg = compose(config_name=name)
    assert OmegaConf.is_config(cfg) and len(cfg) > 0


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_group_option_composes(group, option):
    cfg = compose(config_name=group, overrides=[f"{group}={option}"])
    assert OmegaConf.is_config(cfg)


def test_unknown_key_is_rejected():
    with pytest.raises(Exception, match="bogus"):
        compose(config_name="eval", overrides=["eval.bogus=1"])


def test_minitron_home_resolver_is_the_assets_directory(monkeypatch, tmp_path):
    from minitron.assets import ASSETS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINITRON_HOME", "cache")  # relative: resolved against the working directory
    cfg = compose(config_name="pipeline", overrides=["recipe=demo_smollm2"])
    assert cfg.recipe.teacher == str(tmp_path / "cache" / "models" / "smollm2-135m") == str(ASSETS["smollm2-135m"].path)


def test_config_package_imports_no_library():
    """minitron.config owns the names; importing it must not import torch or the library (fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys, minitron.config.schema; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('minitron.') "
            "and not m.startswith(('minitron.config', 'minitron.conf', 'minitron.errors', 'minitron.fsutil'))))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"



def _numeric_leaves(cfg, prefix: str = "") -> list[tuple[str, bool]]:
    """(dotted key, is a float) of every int/float setting of a composed config (lists of numbers left out)."""
    from omegaconf import DictConfig, FloatNode, IntegerNode

    keys = []
    for key in cfg:
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            if not node._is_missing() and not node._is_none():
                keys.extend(_numeric_leaves(node, f"{prefix}{key}."))
        elif isinstance(node, (IntegerNode, FloatNode)):
            keys.append((f"{prefix}{key}", isinstance(node, FloatNode)))
    return keys


def _numeric_settings() -> list[tuple[str, str, bool]]:
    from minitron.config.compose import compose as compose_config

    return [(name, key, is_float) for name in PRIMARY
            for key, is_float in _numeric_leaves(compose_config(name, [], check=False))]  # fmt: skip


NUMERIC_SETTINGS = _numeric_settings()


def test_every_command_has_numeric_settings_to_check():
    commands = {name for name, _, _ in NUMERIC_SETTINGS}
    assert {"info", "eval", "train", "distill", "importance", "prune", "pipeline", "data_prepare"} <= commands
    assert len(NUMERIC_SETTINGS) >= 60


CASES = [(name, key, bad) for name, key, is_float in NUMERIC_SETTINGS for bad in (["-1", "nan"] if is_float else ["-1"])]


@pytest.mark.parametrize("name,key,bad", CASES, ids=[f"{n}:{k}={b}" for n, k, b in CASES])
def test_every_numeric_setting_is_range_checked(name, key, bad):
    """No count, length, rate, temperature, epsilon or seed accepts -1 (nor a float NaN): the schema that declares
    it refuses it with one MinitronError that starts with the setting's name and the value given."""
    from minitron.config.compose import validate
    from minitron.errors import MinitronError

    required = [f"{k}=X" for k in OmegaConf.missing_keys(compose(config_name=name))]
    with pytest.raises(MinitronError) as err:
        validate(name, [*required, f"{key}={bad}"])
    message = str(err.value)
    setting = message.split("=")[0]
    assert key.endswith(setting) and ("." in setting or setting == key), message  # full dotted name
    value = "nan" if bad == "nan" else ("-1.0" if dict(((k, f) for _, k, f in NUMERIC_SETTINGS))[key] else "-1")
    assert message.startswith(f"{setting}={value}: must be "), message
