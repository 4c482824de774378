"""Compose and validate a command's config from ``key=value`` overrides, with one-line errors.

The CLI composes a command's config before its recipe runs (so a misspelt key, a value of the wrong
type or an override Hydra cannot parse ends in one ``error:`` line and exit 2, not a Hydra trace), and
the pipeline composes every stage's config before its first stage starts. Both go through
:func:`validate`: Hydra's compose API on ``conf/`` + the schema's ``__post_init__`` checks, no model
or data touched.

Paths: ``~`` at the start of an override's value (``model.path=~/models/X``) is expanded here, because
Hydra's grammar does not accept it unquoted and the shell does not expand it after ``=``.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from typing import Iterator, Optional

from omegaconf import DictConfig

from minitron.config import schema
from minitron.errors import MinitronError

_TILDE = re.compile(r"^(?P<key>[+~]{0,2}[\w.\-/@]+)=(?P<value>~[\w.\-]*(/.*)?)$")


def expand_user(overrides: list[str]) -> list[str]:
    """``key=~/x`` -> ``key=/home/me/x`` (only a value that starts with ``~``, as a shell would)."""
    out = []
    for override in overrides:
        match = _TILDE.match(override)
        out.append(f"{match['key']}={os.path.expanduser(match['value'])}" if match else override)
    return out


def hydra_overrides(argv: list[str]) -> list[str]:
    """The ``key=value`` overrides of a command line (Hydra's own flags such as ``--cfg job`` left out)."""
    overrides, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                           "--info", "-i", "--config-dir", "-cd", "--experimental-rerun")  # fmt: skip
            skip = skip and "=" not in arg
            continue
        overrides.append(arg)
    return overrides


@contextlib.contextmanager
def _hydra_context() -> Iterator[None]:
    """Hydra's compose API on ``conf/`` (or the one already set up by a running ``@hydra.main``)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=schema.CONF_DIR, version_base=None):
        yield


def _all_keys(cfg, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg:
        full = f"{prefix}{key}"
        keys.append(full)
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            keys.extend(_all_keys(node, f"{full}."))
    return keys


def _suggest(key: str, config_name: str) -> str:
    """`` (did you mean model.path?)`` for a misspelt ``key`` of ``config_name``'s config, or ``""``."""
    try:
        default = compose(config_name, [], check=False)
    except MinitronError:
        return ""
    keys = _all_keys(default)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not close and "." in key:  # a misspelt last part under the right parent: compare leaf names
        parent = key.rpartition(".")[0]
        siblings = [k for k in keys if k.rpartition(".")[0] == parent]
        close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.4)
    return f" (did you mean {close[0]}?)" if close else ""


def _explain(err: Exception, config_name: str, command: str) -> str:
    """One line for a Hydra/OmegaConf composition error: the key, what is wrong, the fix."""
    from hydra.errors import MissingConfigException, OverrideParseException

    help_hint = f"`{command} --help` lists the settings"
    cause = err.__cause__ or err.__context__
    full_key = getattr(cause, "full_key", None)
    text = str(err)
    if isinstance(err, OverrideParseException):
        override = str(getattr(err, "override", "") or text.splitlines()[0])
        if "=" not in override:
            return f"{override}: expected key=value (e.g. {override}=VALUE)"
        return (f"{override}: Hydra cannot parse this value; quote it, e.g. '{override.split('=', 1)[0]}=\"...\"' "
                "(special characters: spaces, ~, $, quotes, brackets)")  # fmt: skip
    if isinstance(err, MissingConfigException):
        match = re.search(r"Could not find '([^/']+)/([^']+)'", text)
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.M)
        if match:
            group, option = match.groups()
            close = difflib.get_close_matches(option, options, n=1)
            hint = f" (did you mean {group}={close[0]}?)" if close else ""
            return f"{group}={option}: no such {group} config{hint}; available: {', '.join(options) or 'none'}"
        return text.splitlines()[0]
    if full_key is not None and "not in" in str(cause):
        return f"{full_key}: no such setting{_suggest(full_key, config_name)}; {help_hint}"
    if full_key is not None:
        reason = str(cause).splitlines()[0]
        reason = re.sub(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)",
                        lambda m: f"{m[1]!r} is not a valid {m[3].lower()}", reason)  # fmt: skip
        return f"{full_key}: {reason}"
    match = re.search(r"Could not override '([^']+)'", text)
    if match:
        key = match[1]
        return f"{key}: no such setting or config group{_suggest(key, config_name)}; {help_hint}"
    return text.splitlines()[0]


def _in_open_dict(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` lies in a free-form dict setting (``Dict[str, int]``), where ``+key=value`` adds an entry."""
    from omegaconf import OmegaConf

    parent = OmegaConf.select(cfg, key.rpartition(".")[0]) if "." in key else None
    return isinstance(parent, DictConfig) and OmegaConf.get_type(parent) is dict


def compose(config_name: str, overrides: list[str], command: Optional[str] = None, check: bool = True) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides`` applied (``~`` expanded); MinitronError on a bad override.

    ``check`` also refuses keys added with ``+key=...`` that the schema does not have.
    """
    from hydra import compose as hydra_compose

    schema.register()
    command = command or f"minitron {config_name}"
    overrides = expand_user(overrides)
    try:
        with _hydra_context():
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
    except Exception as err:  # Hydra raises several types; all become one line
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if not isinstance(err, (HydraException, OmegaConfBaseException)):
            raise
        raise MinitronError(_explain(err, config_name, command)) from None
    if check:
        for override in overrides:
            key = override.lstrip("+").split("=", 1)[0]
            if override.startswith("+") and not override.startswith("+hydra") and not _in_open_dict(cfg, key):
                raise MinitronError(f"{override}: `+` adds a setting the schema does not have; drop the `+`"
                                    f"{_suggest(key, config_name)}")  # fmt: skip
    return cfg


def validate(config_name: str, overrides: list[str], command: Optional[str] = None):
    """The validated schema object of ``config_name`` with ``overrides`` (every ``__post_init__`` check)."""
    return schema.to_object(compose(config_name, overrides, command))
