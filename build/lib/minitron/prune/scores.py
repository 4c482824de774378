"""Importance scores: what estimation produces and pruning consumes, saved next to the student.

All unit indices follow Hugging Face order: head ``h`` of a layer is rows ``h*d:(h+1)*d`` of
``q_proj`` and belongs to query group ``h // (heads / groups)``; neuron ``i`` is row ``i`` of
``gate_proj``/``up_proj``; channel ``c`` is column ``c`` of the embedding table. Layers are 0-based.

Width scores use the aggregation named in ``meta["aggregation"]`` (default: L2 over the batch of the
mean over the sequence of ``|x|``, the paper's best). Depth scores are three metrics; for each,
*higher means more important*:

- ``block_influence[L]``: ``1 - cos(input, output)`` of each layer, mean over tokens;
- ``layer_loss[L]``: LM loss with that layer alone dropped, minus the full model's loss;
- ``window_loss[k][L - k + 1]``: LM loss with layers ``i .. i+k-1`` dropped (lower = better to drop),
  for the window sizes ``k`` that were asked for.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from minitron.errors import MinitronError

SCORES_FILE = "importance.safetensors"
META_FILE = "importance.json"
OLD_NAMES = {"bi": "block_influence"}  # depth metric names in older importance.json files


@dataclasses.dataclass
class ImportanceScores:
    hidden: torch.Tensor  # [hidden_size] embedding channels, summed over all pre-attention/pre-MLP norms
    ffn: torch.Tensor  # [num_layers, ffn_hidden_size] MLP neurons (input of down_proj), per layer
    heads: torch.Tensor  # [num_layers, num_attention_heads] L2 over head_dim of the o_proj input
    groups: torch.Tensor  # [num_layers, num_query_groups] scored from their heads (L2 of head scores)
    block_influence: torch.Tensor  # [num_layers] 1 - cos(layer input, layer output), mean over tokens
    layer_loss: Optional[torch.Tensor] = None  # [num_layers] LM-loss increase when dropped alone
    window_loss: dict = dataclasses.field(default_factory=dict)  # {k: [num_layers - k + 1]} LM loss
    base_loss: Optional[float] = None  # LM loss of the full model on the calibration data
    meta: dict = dataclasses.field(default_factory=dict)  # calibration data, aggregation, architecture

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = ("hidden", "ffn", "heads", "groups", "block_influence")
        tensors = {name: getattr(self, name).contiguous().float() for name in names}
        if self.layer_loss is not None:
            tensors["layer_loss"] = self.layer_loss.contiguous().float()
        for k, values in self.window_loss.items():
            tensors[f"window_loss.{k}"] = values.contiguous().float()
        save_file(tensors, str(directory / SCORES_FILE))
        (directory / META_FILE).write_text(json.dumps({"base_loss": self.base_loss, **self.meta}, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "ImportanceScores":
        directory = Path(directory)
        if not (directory / SCORES_FILE).is_file() or not (directory / META_FILE).is_file():
            raise MinitronError(f"{directory}: no importance scores ({SCORES_FILE} and {META_FILE})")
        try:
            tensors = load_file(str(directory / SCORES_FILE))
            meta = json.loads((directory / META_FILE).read_text())
        except Exception as err:
            raise MinitronError(f"{directory}: corrupt importance scores ({err})") from None
        window = {int(name.split(".")[1]): t for name, t in tensors.items() if name.startswith("window_loss.")}
        if "layer_bi" in tensors:  # written before block influence had one name everywhere
            tensors["block_influence"] = tensors.pop("layer_bi")
            meta["depth_metrics"] = [OLD_NAMES.get(m, m) for m in meta.get("depth_metrics", [])]
        return cls(
            hidden=tensors["hidden"], ffn=tensors["ffn"], heads=tensors["heads"], groups=tensors["groups"],
            block_influence=tensors["block_influence"], layer_loss=tensors.get("layer_loss"), window_loss=window,
            base_loss=meta.pop("base_loss", None), meta=meta,
        )  # fmt: skip
