"""Apply a :class:`~minitron.prune.plan.PrunePlan` to Hugging Face tensors, one tensor at a time.

The student is written as a Hugging Face directory (safetensors through the streaming writer, the
source's config with the new sizes, the tokenizer files), so it loads in transformers and in
minitron at any TP/PP. Each source tensor is read, sliced with the kept indices and appended;
peak memory is about one tensor.

Slicing (HF layouts, ``d`` = head_dim; ``hid`` kept channels, ``ffn`` kept neurons, ``heads`` and
``groups`` kept heads and query groups of that layer):
    embed_tokens / lm_head [vocab, hidden]      -> [:, hid]
    *norm.weight [hidden]                       -> [hid]
    q_proj [heads*d, hidden] (+bias)            -> rows of kept heads, columns hid
    k_proj, v_proj [groups*d, hidden] (+bias)   -> rows of kept groups, columns hid
    o_proj [hidden, heads*d]                    -> rows hid, columns of kept heads
    gate_proj, up_proj [ffn, hidden]            -> rows ffn, columns hid
    down_proj [hidden, ffn]                     -> rows hid, columns ffn
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from minitron.models.checkpoint import ModelSource, copy_carried_files
from minitron.models.arch import hf_config_from_arch
from minitron.models.safetensors_io import SafetensorsReader, StreamingSafetensorsWriter
from minitron.prune.plan import PrunePlan


def _rows_of_units(units: torch.Tensor, width: int) -> torch.Tensor:
    """Row indices of ``units`` (heads or groups) each ``width`` rows tall."""
    return (units[:, None] * width + torch.arange(width)[None, :]).reshape(-1)


def pruned_tensors(source: ModelSource, plan: PrunePlan) -> Iterator[tuple[str, torch.Tensor]]:
    """``(student tensor name, tensor)`` in write order, each read from the source and sliced."""
    reader = SafetensorsReader(source.path)
    arch, hid, d = plan.source, plan.hidden, plan.source.head_dim
    yield "model.embed_tokens.weight", reader.get("model.embed_tokens.weight")[:, hid]
    for new, old in enumerate(plan.layers):
        src, dst = f"model.layers.{old}", f"model.layers.{new}"
        head_rows = _rows_of_units(plan.heads[new], d)
        group_rows = _rows_of_units(plan.groups[new], d)
        ffn = plan.ffn[new]
        yield f"{dst}.input_layernorm.weight", reader.get(f"{src}.input_layernorm.weight")[hid]
        yield f"{dst}.self_attn.q_proj.weight", reader.get(f"{src}.self_attn.q_proj.weight")[head_rows][:, hid]
        yield f"{dst}.self_attn.k_proj.weight", reader.get(f"{src}.self_attn.k_proj.weight")[group_rows][:, hid]
        yield f"{dst}.self_attn.v_proj.weight", reader.get(f"{src}.self_attn.v_proj.weight")[group_rows][:, hid]
        if arch.qkv_bias:
            yield f"{dst}.self_attn.q_proj.bias", reader.get(f"{src}.self_attn.q_proj.bias")[head_rows]
            yield f"{dst}.self_attn.k_proj.bias", reader.get(f"{src}.self_attn.k_proj.bias")[group_rows]
            yield f"{dst}.self_attn.v_proj.bias", reader.get(f"{src}.self_attn.v_proj.bias")[group_rows]
        yield f"{dst}.self_attn.o_proj.weight", reader.get(f"{src}.self_attn.o_proj.weight")[hid][:, head_rows]
        yield f"{dst}.post_attention_layernorm.weight", reader.get(f"{src}.post_attention_layernorm.weight")[hid]
        yield f"{dst}.mlp.gate_proj.weight", reader.get(f"{src}.mlp.gate_proj.weight")[ffn][:, hid]
        yield f"{dst}.mlp.up_proj.weight", reader.get(f"{src}.mlp.up_proj.weight")[ffn][:, hid]
        yield f"{dst}.mlp.down_proj.weight", reader.get(f"{src}.mlp.down_proj.weight")[hid][:, ffn]
    yield "model.norm.weight", reader.get("model.norm.weight")[hid]
    if not arch.tie_word_embeddings:
        yield "lm_head.weight", reader.get("lm_head.weight")[:, hid]


def _student_shapes(plan: PrunePlan) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of every student tensor, in the order :func:`pruned_tensors` yields them."""
    s = plan.student
    q, kv = s.num_attention_heads * s.head_dim, s.num_query_groups * s.head_dim
    specs = [("model.embed_tokens.weight", (s.vocab_size, s.hidden_size))]
    for layer in range(s.num_layers):
        p = f"model.layers.{layer}"
        specs += [(f"{p}.input_layernorm.weight", (s.hidden_size,)), (f"{p}.self_attn.q_proj.weight", (q, s.hidden_size)),
                  (f"{p}.self_attn.k_proj.weight", (kv, s.hidden_size)), (f"{p}.self_attn.v_proj.weight", (kv, s.hidden_size))]  # fmt: skip
        if s.qkv_bias:
            specs += [(f"{p}.self_attn.q_proj.bias", (q,)), (f"{p}.self_attn.k_proj.bias", (kv,)),
                      (f"{p}.self_attn.v_proj.bias", (kv,))]  # fmt: skip
        specs += [(f"{p}.self_attn.o_proj.weight", (s.hidden_size, q)), (f"{p}.post_attention_layernorm.weight", (s.hidden_size,)),
                  (f"{p}.mlp.gate_proj.weight", (s.ffn_hidden_size, s.hidden_size)),
                  (f"{p}.mlp.up_proj.weight", (s.ffn_hidden_size, s.hidden_size)),
                  (f"{p}.mlp.down_proj.weight", (s.hidden_size, s.ffn_hidden_size))]  # fmt: skip
    specs.append(("model.norm.weight", (s.hidden_size,)))
    if not s.tie_word_embeddings:
        specs.append(("lm_head.weight", (s.vocab_size, s.hidden_size)))
    return specs


def write_pruned_hf(source: ModelSource, plan: PrunePlan, out_dir: Path) -> None:
    """Write the student of ``plan`` as a Hugging Face directory into ``out_dir`` (must exist)."""
    import json

    out_dir = Path(out_dir)
    writer = StreamingSafetensorsWriter(out_dir / "model.safetensors", _student_shapes(plan), source.dtype)
    for name, tensor in pruned_tensors(source, plan):
        writer.write(name, tensor)
    writer.close()
    config = hf_config_from_arch(plan.student, source.hf_config, kept_layers=plan.layers)
    config.pop("quantization_config", None)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    copy_carried_files(source.carried_files, out_dir)
