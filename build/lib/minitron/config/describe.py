"""``minitron <command> --help``: every setting of a command with its type, value and comment.

The comments are the ones on the schema's dataclass fields (``steps: int = 100  # optimizer steps``),
read from the source, so the help cannot drift from the schema. Values are those of the composed
config (the YAML defaults of ``conf/<command>.yaml`` and its groups), not the dataclass defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re

from omegaconf import DictConfig, OmegaConf


@functools.lru_cache(maxsize=None)
def field_comments(cls: type) -> dict[str, str]:
    """``{field name: its trailing comment}`` of a dataclass, from its source (inherited fields too)."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        names = {f.name for f in dataclasses.fields(klass)}
        current = None
        for line in lines[1:]:
            match = re.match(r"^\s{4}(\w+)\s*:", line)
            if match and match[1] in names:
                current = match[1]
            elif re.match(r"^\s{4}(def |@|class )", line):
                current = None
            if current and "#" in line and current not in comments:
                comment = line.split("#", 1)[1].strip()
                if comment and not comment.startswith("fmt:"):
                    comments[current] = comment
    return comments


def _rows(cfg: DictConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    rows = []
    cls = OmegaConf.get_type(cfg)
    comments = field_comments(cls) if dataclasses.is_dataclass(cls) else {}
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for key in cfg:
        node = cfg._get_node(key)
        full = f"{prefix}{key}"
        is_section = isinstance(node, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(node))
        if is_section and not node._is_missing() and not node._is_none():
            rows.extend(_rows(node, f"{full}."))
            continue
        if node._is_missing():
            value = "(required)"
        elif node._is_interpolation():
            value = str(node._value())
        elif OmegaConf.is_config(node):
            value = json.dumps(OmegaConf.to_container(node), separators=(", ", ": "))
        else:
            value = " ".join(OmegaConf.to_yaml({"v": node._value()}).strip()[3:].split())
            value = value if len(value) <= 60 else value[:57] + "..."
        rows.append((full, types.get(str(key), ""), value, comments.get(str(key), "")))
    return rows


def describe(cfg: DictConfig) -> str:
    """A table of every leaf setting of a composed config: ``key  type = value  # comment``."""
    rows = _rows(cfg)
    width = min(max((len(f"{key} = {value}") for key, _, value, _ in rows), default=0), 56)
    lines = []
    for key, _, value, comment in rows:
        left = f"{key} = {value}"
        lines.append(f"  {left:<{width}}  # {comment}" if comment else f"  {left}")
    return "\n".join(lines)
