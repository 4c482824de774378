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
