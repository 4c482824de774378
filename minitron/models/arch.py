"""The architecture description of a Llama-family decoder, and its mapping to Hugging Face configs.

One dataclass, :class:`ModelArch`, describes every model minitron handles (Llama 3/3.1, Mistral,
Qwen2, SmolLM2): pre-norm RMSNorm blocks, grouped-query attention with rotary embeddings, SwiGLU MLP.
It is built from a Hugging Face ``config.json`` (:func:`arch_from_hf_config`), turned back into one
(:func:`hf_config_from_arch`), and counts its own parameters and FLOPs. The Megatron-Core side lives
in :mod:`minitron.models.megatron`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Optional

import torch

from minitron.errors import MinitronError

# HF `model_type` -> our family name. All share the Llama block; they differ in a few config flags.
SUPPORTED_MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
HF_NAMES = {"num_layers": "num_hidden_layers", "ffn_hidden_size": "intermediate_size",
            "num_query_groups": "num_key_value_heads"}  # ModelArch field -> its config.json key where they differ


@dataclasses.dataclass(frozen=True)
class ModelArch:
    """A Llama-family decoder-only transformer.

    Attention: ``num_attention_heads`` query heads of ``head_dim`` channels in ``num_query_groups``
    KV groups (GQA); ``head_dim`` is independent of ``hidden_size`` (pruning keeps it).
    """

    model_type: str  # HF model_type: llama | mistral | qwen2
    num_layers: int  # transformer blocks
    hidden_size: int  # residual-stream width (embedding channels)
    ffn_hidden_size: int  # SwiGLU inner width (HF intermediate_size)
    num_attention_heads: int  # query heads
    num_query_groups: int  # key/value heads (HF num_key_value_heads)
    head_dim: int  # channels per head (Megatron kv_channels)
    vocab_size: int  # rows of the embedding table
    max_position_embeddings: int  # longest sequence the model was trained for
    rope_theta: float  # RoPE base
    rope_scaling: Optional[dict] = None  # HF rope parameters beyond the base (type llama3 | linear)
    rms_norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_word_embeddings: bool = False  # LM head shares the embedding matrix
    qkv_bias: bool = False  # bias on the q, k, v projections (Qwen2)
    sliding_window: Optional[int] = None  # Mistral sliding-window attention span, None = full

    def __post_init__(self):
        from minitron.config.common import check_range

        for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
                     "head_dim", "vocab_size", "max_position_embeddings"):  # fmt: skip
            check_range(f"config.json: {HF_NAMES.get(name, name)}", getattr(self, name), at_least=1,
                        fix="the model's config.json is damaged or not a decoder's")  # fmt: skip
        if self.head_dim % 2:
            raise MinitronError(f"config.json: head_dim={self.head_dim}: must be even (rotary embeddings pair channels)")
        check_range("config.json: rope_theta", self.rope_theta, above=0)
        check_range("config.json: rms_norm_eps", self.rms_norm_eps, above=0)
        check_range("config.json: sliding_window", self.sliding_window, at_least=1)
        if self.num_attention_heads % self.num_query_groups:
            raise MinitronError(
                f"num_attention_heads={self.num_attention_heads} is not divisible by "
                f"num_query_groups={self.num_query_groups}: every query group needs the same number of heads"
            )

    # ---- parameter counts -------------------------------------------------------------------
    @property
    def attention_params_per_layer(self) -> int:
        q = self.num_attention_heads * self.head_dim
        kv = 2 * self.num_query_groups * self.head_dim
        bias = (q + kv) if self.qkv_bias else 0
        return self.hidden_size * (q + kv) + bias + q * self.hidden_size

    @property
    def mlp_params_per_layer(self) -> int:
        return 3 * self.hidden_size * self.ffn_hidden_size

    @property
    def params_per_layer(self) -> int:
        return self.attention_params_per_layer + self.mlp_params_per_layer + 2 * self.hidden_size

    @property
    def embedding_params(self) -> int:
        """Embedding table plus the LM head when it is not tied."""
        one = self.vocab_size * self.hidden_size
        return one if self.tie_word_embeddings else 2 * one

    @property
    def non_embedding_params(self) -> int:
        return self.num_layers * self.params_per_layer + self.hidden_size  # + final norm

    @property
    def params(self) -> int:
        return self.embedding_params + self.non_embedding_params

    def flops_per_token(self, seq_length: int) -> dict:
        """Forward and training FLOPs per token at ``seq_length``.

        Matmul FLOPs are 2 per multiply-add: 2 x (all linear weights incl. the LM head) + the
        attention scores and weighted sum, 4 x layers x seq x heads x head_dim (full square, the
        convention of PaLM's MFU). Training is 3x forward (backward = 2x forward).
        """
        linear = self.num_layers * (
            self.attention_params_per_layer + self.mlp_params_per_layer
        ) + self.vocab_size * self.hidden_size
        attn = 4 * self.num_layers * seq_length * self.num_attention_heads * self.head_dim
        forward = 2 * linear + attn
        return {"seq_length": seq_length, "forward": forward, "train": 3 * forward}

    # ---- rotary embedding ---------------------------------------------------------------------
    def rope_inv_freq(self) -> torch.Tensor:
        """RoPE inverse frequencies ``[head_dim // 2]`` (fp32), with Llama-3 or linear scaling."""
        dim = self.head_dim
        inv_freq = 1.0 / (self.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        scaling = self.rope_scaling or {}
        rope_type = scaling.get("rope_type", "default")
        if rope_type == "linear":
            return inv_freq / float(scaling["factor"])
        if rope_type == "llama3":
            factor = float(scaling["factor"])
            low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
            old_context = float(scaling["original_max_position_embeddings"])
            wavelen = 2 * math.pi / inv_freq
            scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
            smooth = (old_context / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < old_context / high) & ~(wavelen > old_context / low)
            return torch.where(medium, smoothed, scaled)
        return inv_freq

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _first_set(*values):
    """The first value that is not None (a config's 0 is a value to check, not a missing one)."""
    return next(value for value in values if value is not None)


def _rope_from_hf(config: dict) -> tuple[float, Optional[dict]]:
    """(rope_theta, scaling) from either the transformers-5 ``rope_parameters`` or the older keys."""
    params = dict(config.get("rope_parameters") or {})
    legacy = dict(config.get("rope_scaling") or {})
    theta = _first_set(params.pop("rope_theta", None), config.get("rope_theta"), 10000.0)
    scaling = params or legacy
    if "type" in scaling and "rope_type" not in scaling:
        scaling["rope_type"] = scaling.pop("type")
    rope_type = scaling.get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise MinitronError(
            f"config.json: rope type {rope_type!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
        )
    if rope_type == "default":
        return float(theta), None
    scaling = {k: v for k, v in scaling.items() if k != "rope_theta"}
    if rope_type == "llama3":
        scaling.setdefault("original_max_position_embeddings", config.get("max_position_embeddings"))
        missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor") if k not in scaling]
        if missing:
            raise MinitronError(f"config.json: llama3 rope scaling lacks {missing}")
    return float(theta), scaling


def arch_from_hf_config(config: dict) -> ModelArch:
    """Build a :class:`ModelArch` from the dict of a Hugging Face ``config.json``."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        archs = config.get("architectures")
        raise MinitronError(
            f"config.json: unsupported architecture model_type={model_type!r} ({archs}); "
            f"minitron supports Llama-family models: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    try:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        if heads < 1:
            raise MinitronError(f"config.json: num_attention_heads={heads}: must be >= 1")
        arch_fields = dict(
            model_type=model_type,
            num_layers=int(config["num_hidden_layers"]),
            hidden_size=hidden,
            ffn_hidden_size=int(config["intermediate_size"]),
            num_attention_heads=heads,
            num_query_groups=int(_first_set(config.get("num_key_value_heads"), heads)),
            head_dim=int(_first_set(config.get("head_dim"), hidden // heads)),
            vocab_size=int(config["vocab_size"]),
            max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
        )
    except KeyError as missing:
        raise MinitronError(f"config.json: required field {missing} is missing") from None
    except (TypeError, ValueError) as err:
        raise MinitronError(f"config.json: a size is not an integer ({err})") from None
    if config.get("hidden_act", "silu") != "silu":
        raise MinitronError(f"config.json: hidden_act={config['hidden_act']!r} is not supported (only silu)")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise MinitronError("config.json: attention_bias/mlp_bias on the output or MLP projections is not supported")
    theta, scaling = _rope_from_hf(config)
    sliding = config.get("sliding_window") if config.get("use_sliding_window", True) else None
    try:
        rms_norm_eps, sliding = float(config.get("rms_norm_eps", 1e-5)), int(sliding) if sliding else None
    except (TypeError, ValueError) as err:
        raise MinitronError(f"config.json: rms_norm_eps or sliding_window is not a number ({err})") from None
    return ModelArch(
        **arch_fields,
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=rms_norm_eps,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=(model_type == "qwen2"),
        sliding_window=sliding,
    )


def hf_config_from_arch(arch: ModelArch, base: dict, kept_layers: Optional[list] = None) -> dict:
    """The ``config.json`` dict of ``arch``: ``base`` (the source model's config) with its sizes replaced.

    Per-layer lists (Qwen2's ``layer_types``) keep the entries of ``kept_layers`` (source indices;
    default: the first ``arch.num_layers``).
    """
    config = dict(base)
    if isinstance(config.get("layer_types"), list):
        kept = kept_layers if kept_layers is not None else range(arch.num_layers)
        config["layer_types"] = [config["layer_types"][i] for i in kept]
    config.update(
        num_hidden_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_query_groups,
        head_dim=arch.head_dim,
        vocab_size=arch.vocab_size,
        tie_word_embeddings=arch.tie_word_embeddings,
    )
    return config


def read_hf_config(model_dir: Path) -> dict:
    """Read and parse ``model_dir/config.json`` with one clear error for each way it can be wrong."""
    path = Path(model_dir) / "config.json"
    if not Path(model_dir).is_dir():
        raise MinitronError(f"model.path={model_dir}: no such directory")
    if not path.is_file():
        raise MinitronError(f"model.path={model_dir}: no config.json (expected a Hugging Face model directory)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MinitronError(f"{path}: malformed JSON ({err})") from None
    if not isinstance(config, dict):
        raise MinitronError(f"{path}: malformed config (expected a JSON object)")
    return config


def load_arch(model_dir: Path) -> ModelArch:
    """The architecture of the Hugging Face model in ``model_dir``."""
    return arch_from_hf_config(read_hf_config(model_dir))


def arch_summary(arch: ModelArch, seq_length: int) -> dict[str, Any]:
    """The figures `minitron info` prints: architecture, parameter counts, FLOPs per token."""
    return {
        "architecture": arch.to_dict(),
        "params": arch.params,
        "embedding_params": arch.embedding_params,
        "non_embedding_params": arch.non_embedding_params,
        "flops_per_token": arch.flops_per_token(seq_length),
    }
