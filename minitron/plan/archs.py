"""Architectures ``minitron plan`` knows by name (their HF ``config.json`` sizes), and opening a model by path or name."""

from __future__ import annotations

from pathlib import Path

from minitron.errors import MinitronError
from minitron.models.arch import ModelArch, arch_from_hf_config

_LLAMA31 = {"model_type": "llama", "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192}}  # fmt: skip
KNOWN = {
    "llama31_8b": {**_LLAMA31, "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336,
                   "num_attention_heads": 32, "num_key_value_heads": 8},
    "llama31_minitron_4b_width": {**_LLAMA31, "num_hidden_layers": 32, "hidden_size": 3072, "intermediate_size": 9216,
                                  "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128},
    "llama31_minitron_4b_depth": {**_LLAMA31, "num_hidden_layers": 16, "hidden_size": 4096,
                                  "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8},
    "llama32_1b": {**_LLAMA31, "num_hidden_layers": 16, "hidden_size": 2048, "intermediate_size": 8192,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": True},
    "smollm2_135m": {"model_type": "llama", "vocab_size": 49152, "max_position_embeddings": 8192,
                     "rope_theta": 100000.0, "num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "tie_word_embeddings": True},
}  # fmt: skip


def open_arch(path_or_name: str, field: str = "model.path") -> ModelArch:
    """The architecture of an HF directory or minitron checkpoint at ``path_or_name``, or of a :data:`KNOWN` name."""
    if path_or_name in KNOWN:
        return arch_from_hf_config(KNOWN[path_or_name])
    if not Path(path_or_name).exists():
        raise MinitronError(f"{field}={path_or_name}: no such file or directory, nor an architecture name "
                            f"({', '.join(KNOWN)})")  # fmt: skip
    from minitron.models.checkpoint import open_model

    return open_model(path_or_name).arch
