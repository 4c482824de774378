"""Structured (dataclass) schemas of every Hydra config; see :mod:`minitron.config.schema`."""
