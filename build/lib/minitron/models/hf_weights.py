"""The one place where Hugging Face tensor names and layouts meet Megatron-Core's.

Megatron-Core ``GPTModel`` parameter (full, TP=1 layout)       Hugging Face Llama tensors
---------------------------------------------------------      -----------------------------------------
embedding.word_embeddings.weight        [vocab, hidden]        model.embed_tokens.weight
decoder.layers.i.input_layernorm.weight [hidden]               model.layers.i.input_layernorm.weight
  (TE spec: ...self_attention.linear_qkv.layer_norm_weight)
decoder.layers.i.self_attention.linear_qkv.weight              q_proj [heads*d, hidden],
  [(heads + 2*groups) * d, hidden], per query group            k_proj [groups*d, hidden],
  g: [q heads of g (heads/groups * d rows), k_g (d), v_g (d)]   v_proj [groups*d, hidden]
decoder.layers.i.self_attention.linear_qkv.bias (Qwen2)        q/k/v_proj.bias, same interleaving
decoder.layers.i.self_attention.linear_proj.weight             o_proj [hidden, heads*d]
decoder.layers.i.pre_mlp_layernorm.weight                      post_attention_layernorm.weight
  (TE spec: ...mlp.linear_fc1.layer_norm_weight)
decoder.layers.i.mlp.linear_fc1.weight  [2*ffn, hidden]        cat(gate_proj, up_proj) on rows
decoder.layers.i.mlp.linear_fc2.weight  [hidden, ffn]          down_proj
decoder.final_layernorm.weight                                 model.norm.weight
output_layer.weight                     [vocab, hidden]        lm_head.weight (the embedding if tied)

Tensor parallelism splits a full tensor along the parameter's ``partition_dim`` into TP equal chunks
(QKV chunks hold whole query groups); the SwiGLU ``linear_fc1`` is the exception: each rank holds
``[gate_r; up_r]``, its chunk of the gate rows followed by its chunk of the up rows.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import torch

from minitron.models.arch import ModelArch

_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


@dataclasses.dataclass(frozen=True)
class WeightMapping:
    """How one Megatron parameter is made from, and turned back into, Hugging Face tensors."""

    hf_names: tuple[str, ...]
    to_megatron: Callable[[list[torch.Tensor]], torch.Tensor]  # HF tensors -> full Megatron tensor
    to_hf: Callable[[torch.Tensor], list[torch.Tensor]]  # full Megatron tensor -> HF tensors


def _identity(name: str) -> WeightMapping:
    return WeightMapping((name,), lambda tensors: tensors[0], lambda full: [full])


def _qkv(arch: ModelArch, prefix: str, suffix: str) -> WeightMapping:
    groups, d = arch.num_query_groups, arch.head_dim
    q_rows = arch.num_attention_heads // groups * d

    def to_megatron(tensors):
        q, k, v = (t.reshape(groups, -1, *t.shape[1:]) for t in tensors)
        return torch.cat([q, k, v], dim=1).reshape(-1, *tensors[0].shape[1:])

    def to_hf(full):
        grouped = full.reshape(groups, q_rows + 2 * d, *full.shape[1:])
        q, k, v = torch.split(grouped, [q_rows, d, d], dim=1)
        return [t.reshape(-1, *full.shape[1:]) for t in (q, k, v)]

    names = tuple(f"{prefix}.self_attn.{p}_proj.{suffix}" for p in "qkv")
    return WeightMapping(names, to_megatron, to_hf)


def _gate_up(prefix: str) -> WeightMapping:
    names = (f"{prefix}.mlp.gate_proj.weight", f"{prefix}.mlp.up_proj.weight")
    return WeightMapping(names, lambda tensors: torch.cat(tensors, dim=0), lambda full: list(full.chunk(2, dim=0)))


def layer_mapping(arch: ModelArch, layer: int, rest: str) -> WeightMapping:
    """Mapping of parameter ``rest`` (name inside a layer) of global layer ``layer``."""
    prefix = f"model.layers.{layer}"
    table = {
        "input_layernorm.weight": lambda: _identity(f"{prefix}.input_layernorm.weight"),
        "self_attention.linear_qkv.layer_norm_weight": lambda: _identity(f"{prefix}.input_layernorm.weight"),
        "self_attention.linear_qkv.weight": lambda: _qkv(arch, prefix, "weight"),
        "self_attention.linear_qkv.bias": lambda: _qkv(arch, prefix, "bias"),
        "self_attention.linear_proj.weight": lambda: _identity(f"{prefix}.self_attn.o_proj.weight"),
        "pre_mlp_layernorm.weight": lambda: _identity(f"{prefix}.post_attention_layernorm.weight"),
        "mlp.linear_fc1.layer_norm_weight": lambda: _identity(f"{prefix}.post_attention_layernorm.weight"),
        "mlp.linear_fc1.weight": lambda: _gate_up(prefix),
        "mlp.linear_fc2.weight": lambda: _identity(f"{prefix}.mlp.down_proj.weight"),
    }
    if rest not in table:
        raise KeyError(f"no Hugging Face mapping for layer parameter {rest!r}")
    return table[rest]()


def parameter_mapping(model, arch: ModelArch, name: str) -> WeightMapping:
    """Mapping of the parameter ``name`` of this rank's ``GPTModel`` shard (layer indices are local)."""
    match = _LAYER.match(name)
    if match:
        local, rest = int(match.group(1)), match.group(2)
        global_layer = model.decoder.layers[local].layer_number - 1
        return layer_mapping(arch, global_layer, rest)
    if name == "embedding.word_embeddings.weight":
        return _identity("model.embed_tokens.weight")
    if name == "decoder.final_layernorm.weight":
        return _identity("model.norm.weight")
    if name == "output_layer.weight":
        return _identity("model.embed_tokens.weight" if arch.tie_word_embeddings else "lm_head.weight")
    raise KeyError(f"no Hugging Face mapping for parameter {name!r}")


def exported_parameters(model, arch: ModelArch) -> list[tuple[str, torch.nn.Parameter]]:
    """This rank's parameters that carry HF tensors, in export order (a tied LM head is skipped)."""
    params = []
    for name, param in model.named_parameters():
        if name == "output_layer.weight" and arch.tie_word_embeddings:
            continue  # the last stage's copy of the tied embedding; the first stage exports it
        params.append((name, param))
    return params


# ---- tensor-parallel sharding ---------------------------------------------------------------------


def is_glu_fc1(name: str) -> bool:
    return name.endswith("mlp.linear_fc1.weight")


def full_shape(name: str, param: torch.Tensor, tp: int) -> tuple[int, ...]:
    """Shape of the full (TP=1) tensor whose shard is ``param``."""
    shape = list(param.shape)
    if getattr(param, "tensor_model_parallel", False):
        shape[param.partition_dim] *= tp
    return tuple(shape)


def shard(name: str, param: torch.Tensor, full: torch.Tensor, tp_rank: int, tp: int) -> torch.Tensor:
    """This TP rank's piece of ``full`` for parameter ``param``."""
    if not getattr(param, "tensor_model_parallel", False) or tp == 1:
        return full
    dim = param.partition_dim
    if is_glu_fc1(name):
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(tp, dim=0)[tp_rank], up.chunk(tp, dim=0)[tp_rank]], dim=0)
    return full.chunk(tp, dim=dim)[tp_rank]


def unshard(name: str, param: torch.Tensor, pieces: list[torch.Tensor]) -> torch.Tensor:
    """The full tensor from every TP rank's piece (inverse of :func:`shard`)."""
    if len(pieces) == 1 or not getattr(param, "tensor_model_parallel", False):
        return pieces[0]
    if is_glu_fc1(name):
        halves = [p.chunk(2, dim=0) for p in pieces]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    return torch.cat(pieces, dim=param.partition_dim)
