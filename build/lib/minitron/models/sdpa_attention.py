"""Core attention through ``torch.nn.functional.scaled_dot_product_attention``.

Megatron-Core's local ``DotProductAttention`` materialises the ``[b, heads, s, s]`` score matrix
(baddbmm, masked softmax, bmm) and repeats K/V for grouped-query attention. Without Transformer
Engine (CPU, or a GPU image without TE) this module is its drop-in replacement in the local layer
spec: PyTorch's fused kernels (flash / memory-efficient on GPU, the flash CPU kernel on CPU) with
native GQA, the same math (softmax(q k^T / sqrt(d)) v, causal).

Shapes (Megatron's): query ``[sq, b, heads/tp, d]``, key/value ``[sk, b, groups/tp, d]``,
output ``[sq, b, heads/tp * d]``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule


class SDPAttention(MegatronModule):
    """Causal (or padding-masked) attention with PyTorch SDPA; no parameters."""

    def __init__(
        self,
        config,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: Optional[float] = None,
        softmax_scale: Optional[float] = None,
        cp_comm_type: Optional[str] = None,
        pg_collection=None,
    ):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("SDPAttention does not support context parallelism (use Transformer Engine)")
        if getattr(config, "window_size", None) is not None:
            raise ValueError("SDPAttention does not implement sliding-window attention")
        self.attn_mask_type = attn_mask_type
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        self.softmax_scale = softmax_scale or 1.0 / math.sqrt(config.kv_channels)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias: Optional[torch.Tensor] = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("SDPAttention supports neither packed sequences nor attention bias")
        mask_type = attn_mask_type or self.attn_mask_type
        # [s, b, n, d] -> [b, n, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        if attention_mask is None:
            mask, causal = None, mask_type == AttnMaskType.causal
        else:  # an explicit mask (already causal where it should be); Megatron's True = masked out
            mask, causal = ~attention_mask, False
        context = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
            scale=self.softmax_scale,
            enable_gqa=q.shape[1] != k.shape[1],
        )
        # [b, n, sq, d] -> [sq, b, n * d]
        return context.permute(2, 0, 1, 3).reshape(context.shape[2], context.shape[0], -1)
