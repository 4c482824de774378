"""Depth importance helpers: block influence, and dropping layers of a live model for a forward pass.

Block influence (ShortGPT's BI, as ModelOpt scores layers) of a layer is ``1 - cos(x_in, x_out)``
of its input and output hidden states ``[seq, batch, hidden]``, averaged over all tokens: a layer
that barely turns the residual stream matters little.

Loss-based depth metrics need the model's loss with some layers left out. :func:`dropped_layers`
does that without rebuilding anything: inside the ``with`` block the chosen ``TransformerLayer``
modules of this rank's shard return their input unchanged (their computation is skipped), on every
pipeline stage at once since each stage looks up its own layers by global number; on exit they are
restored. Layers held by other stages are simply not found here, which is what PP needs.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F


def local_layers(model) -> dict[int, torch.nn.Module]:
    """0-based global layer index -> ``TransformerLayer`` for the layers of this rank's pipeline stage."""
    return {layer.layer_number - 1: layer for layer in model.decoder.layers}


def block_influence_sum(layer_input: torch.Tensor, layer_output: torch.Tensor) -> torch.Tensor:
    """Sum over tokens of ``1 - cos(input, output)`` (cosine over the hidden dimension), fp64 scalar."""
    cos = F.cosine_similarity(layer_input.float(), layer_output.float(), dim=-1)
    return (1.0 - cos).double().sum()


def _identity_forward(hidden_states=None, *args, context=None, **kwargs):
    # the TransformerLayer contract: (output hidden states [s, b, h], cross-attention context);
    # a copy, so that a stage whose layers are all dropped never sends or returns its own input tensor
    return hidden_states.clone(), context


@contextlib.contextmanager
def dropped_layers(model, layers: Iterable[int]) -> Iterator[None]:
    """Within the block, the given 0-based global layers (those on this stage) act as identities."""
    chosen = [module for index, module in local_layers(model).items() if index in set(layers)]
    for module in chosen:
        module.forward = _identity_forward  # an instance attribute shadows the class's forward
    try:
        yield
    finally:
        for module in chosen:
            del module.forward


def window_starts(num_layers: int, window: int) -> range:
    """First layers of every run of ``window`` consecutive layers: ``0 .. num_layers - window``."""
    return range(num_layers - window + 1)
