"""Importance estimation on the sharded Megatron model (any TP/PP/DP): forward hooks + aggregation.

:func:`estimate_importance` runs the calibration windows forward (``torch.no_grad``, through
Megatron's pipeline schedules) with hooks on this rank's layers, then a few more forward passes with
layers dropped, and returns the global :class:`~minitron.prune.scores.ImportanceScores`, the same on
every rank and equal to a TP=1, PP=1 run. What is hooked (Megatron layout ``[seq, batch, features]``):

=======================  ===========================================  =====================================
scores                   hooked tensor                                per rank
=======================  ===========================================  =====================================
``hidden [h]``           output of ``input_layernorm`` and            replicated over TP: TP rank 0 counts
                         ``pre_mlp_layernorm`` of every layer;        them; each hook aggregated, then
                         each hook scored, then summed over hooks     summed over the 2 x layers hooks
``ffn [L, ffn]``         input of ``mlp.linear_fc2`` (after SwiGLU)   rank r holds neurons r*ffn/tp..
``heads [L, H]``         input of ``self_attention.linear_proj``      rank r holds heads r*H/tp.. (whole
                         ``[.., heads * head_dim]``: channel scores,  query groups), in HF order
                         then L2 over head_dim; groups: L2 of heads
``block_influence [L]``  ``TransformerLayer`` input vs output         replicated over TP
=======================  ===========================================  =====================================

Each rank folds its samples (``windows[dp_rank::dp]``) into reducible statistics placed at their
global coordinates (layer, unit), zero elsewhere; one all-reduce over the world then combines data
parallel ranks (sum or max), pipeline stages (disjoint layers) and tensor-parallel shards (disjoint
units) at once, and the statistics are finalised (square root for L2) only after that.

The loss metrics reuse :func:`minitron.eval.heldout.megatron_heldout_loss` (mean next-token
cross-entropy over the windows) with layers dropped by :func:`minitron.prune.depth.dropped_layers`.
Only the local layer spec is supported: Transformer Engine's fuses the norms into the next linear.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import torch

from minitron.config.prune import DEPTH_METRICS
from minitron.errors import MinitronError
from minitron.eval.heldout import megatron_heldout_loss
from minitron.models.arch import ModelArch
from minitron.prune import depth
from minitron.prune.aggregation import Aggregation, group_scores, head_scores
from minitron.prune.scores import ImportanceScores


class _ActivationHooks:
    """Forward hooks on this rank's layers that fold activations into global-coordinate statistics."""

    def __init__(self, model, arch: ModelArch, aggregation: Aggregation):
        from megatron.core import parallel_state
        from megatron.core.transformer.identity_op import IdentityOp

        self.aggregation = aggregation
        device = next(model.parameters()).device
        layers = arch.num_layers
        stats = dict(dtype=torch.float64, device=device)
        self.hidden = torch.zeros(layers, 2, arch.hidden_size, **stats)  # [layer, (attention norm, MLP norm), h]
        self.ffn = torch.zeros(layers, arch.ffn_hidden_size, **stats)
        self.proj = torch.zeros(layers, arch.num_attention_heads * arch.head_dim, **stats)
        self.block_influence = torch.zeros(layers, **stats)  # sum over tokens of 1 - cos
        self.tp_rank = parallel_state.get_tensor_model_parallel_rank()
        replicated_here = self.tp_rank == 0  # TP ranks see identical norm outputs and hidden states
        self.handles = []
        for index, layer in depth.local_layers(model).items():
            if isinstance(layer.input_layernorm, IdentityOp) or isinstance(layer.pre_mlp_layernorm, IdentityOp):
                self.remove()
                raise NotImplementedError(
                    "importance estimation hooks the outputs of input_layernorm and pre_mlp_layernorm, which "
                    "Transformer Engine's layer spec fuses into linear_qkv/linear_fc1; build the model with the "
                    "local spec: minitron.models.megatron_gpt.build_gpt_model(..., attention='sdpa')"
                )
            if replicated_here:
                self.handles += [
                    layer.input_layernorm.register_forward_hook(self._norm_hook(index, 0)),
                    layer.pre_mlp_layernorm.register_forward_hook(self._norm_hook(index, 1)),
                    layer.register_forward_hook(self._layer_hook(index), with_kwargs=True),
                ]
            for module, statistic in ((layer.mlp.linear_fc2, self.ffn), (layer.self_attention.linear_proj, self.proj)):
                hook = self._sharded_input_hook(statistic, index)
                self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def _norm_hook(self, index: int, which: int):
        def hook(module, args, output):
            self.aggregation.accumulate(self.hidden[index, which], self.aggregation.per_sample(output))

        return hook

    def _sharded_input_hook(self, statistic: torch.Tensor, index: int):
        def hook(module, args, kwargs):
            activation = args[0] if args else kwargs["input_"]
            width = activation.shape[-1]  # this rank's contiguous chunk of the units
            shard = statistic[index, self.tp_rank * width : (self.tp_rank + 1) * width]
            self.aggregation.accumulate(shard, self.aggregation.per_sample(activation))

        return hook

    def _layer_hook(self, index: int):
        def hook(module, args, kwargs, output):
            layer_input = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            self.block_influence[index] += depth.block_influence_sum(layer_input, output[0])

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def reduce(self) -> None:
        """Combine every rank's statistics (all ranks call this)."""
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            for statistic in (self.hidden, self.ffn, self.proj):
                torch.distributed.all_reduce(statistic, op=self.aggregation.reduce_op)
            torch.distributed.all_reduce(self.block_influence)


def resolve_window_sizes(arch: ModelArch, depth_metrics: Sequence[str], window_sizes: Optional[Sequence[int]]) -> tuple:
    """The sorted run lengths for ``window_loss`` (None: ``num_layers // 2``); () when it is not asked for."""
    unknown = [m for m in depth_metrics if m not in DEPTH_METRICS]
    if unknown:
        raise MinitronError(f"importance.depth_metrics: unknown {unknown}; use any of {', '.join(DEPTH_METRICS)}")
    if "window_loss" not in depth_metrics:
        return ()
    sizes = (arch.num_layers // 2,) if window_sizes is None else tuple(sorted(set(int(k) for k in window_sizes)))
    for k in sizes:
        if not 1 <= k < arch.num_layers:
            raise MinitronError(
                f"importance.window_sizes: {k} is not between 1 and num_layers - 1 = {arch.num_layers - 1}"
            )
    return sizes


def estimate_importance(
    model,
    arch: ModelArch,
    windows: torch.Tensor,
    micro_batch_size: int,
    aggregation=("l2", "mean"),
    depth_metrics: Sequence[str] = DEPTH_METRICS,
    window_sizes: Optional[Sequence[int]] = None,
    loss_num_samples: Optional[int] = None,
    progress: bool = True,
) -> ImportanceScores:
    """Global importance scores of ``model`` (this rank's shard of ``arch``) on ``windows`` ``[n, L]``.

    Every rank passes the same ``windows``; data-parallel rank ``r`` runs ``windows[r::dp]``.
    ``aggregation``: ``(batch, seq)`` reductions (see :mod:`minitron.prune.aggregation`).
    ``depth_metrics``: block influence (``block_influence``, always computed: it comes with the first pass),
    ``layer_loss`` (one pass per layer) and ``window_loss`` (one pass per run of ``k`` consecutive
    layers for each ``k`` in ``window_sizes``; None: ``num_layers // 2``, the paper's depth cut).
    ``loss_num_samples``: compute the loss metrics (and ``base_loss``) on the first N windows only
    (None: all). Cost: one pass over all windows, then ``layers + sum_k (layers - k + 1)`` passes over
    the loss windows (a run asked for twice, as by ``layer_loss`` and ``k = 1``, runs once), each
    skipping the computation of its dropped layers. ``model`` is the unwrapped ``GPTModel`` built
    with the local layer spec; it is left as it was found (hooks removed, layers restored).
    """
    from megatron.core import parallel_state
    from tqdm import tqdm

    start = time.perf_counter()
    aggregation = Aggregation.parse(aggregation)
    depth_metrics = tuple(depth_metrics)
    window_sizes = resolve_window_sizes(arch, depth_metrics, window_sizes)
    if windows.dim() != 2 or windows.dtype != torch.int64 or len(windows) == 0:
        given = f"{windows.dtype} {tuple(windows.shape)}"
        raise ValueError(f"windows: expected non-empty int64 [num_windows, seq_length], got {given}")
    if loss_num_samples is not None and loss_num_samples < 1:
        raise MinitronError(f"importance.loss_num_samples={loss_num_samples}: must be >= 1 or null")
    num_samples, seq_length = windows.shape
    loss_count = num_samples if loss_num_samples is None else min(loss_num_samples, num_samples)
    loss_windows = windows[:loss_count]

    dropped_runs = []  # tuples of layers to drop, in pass order
    if "layer_loss" in depth_metrics:
        dropped_runs += [(layer,) for layer in range(arch.num_layers)]
    for k in window_sizes:
        dropped_runs += [tuple(range(i, i + k)) for i in depth.window_starts(arch.num_layers, k)]
    distinct_runs = list(dict.fromkeys(dropped_runs))
    main = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    bar = tqdm(total=1 + len(distinct_runs), desc="importance", unit="pass", disable=not (progress and main))

    # pass 1: activations and block influence, with the full model's loss on the loss windows
    hooks = _ActivationHooks(model, arch, aggregation)
    try:
        base = megatron_heldout_loss(model, loss_windows, micro_batch_size, progress=False)
        calibration = base
        if loss_count < num_samples:  # the rest of the calibration windows, for the width scores only
            rest = megatron_heldout_loss(model, windows[loss_count:], micro_batch_size, progress=False)
            tokens = base["tokens"] + rest["tokens"]
            calibration = {"loss": (base["loss"] * base["tokens"] + rest["loss"] * rest["tokens"]) / tokens}
    finally:
        hooks.remove()
    hooks.reduce()
    bar.update(1)
    width_seconds = time.perf_counter() - start

    # passes 2...: the loss with layers dropped
    losses = {}
    for layers in distinct_runs:
        with depth.dropped_layers(model, layers):
            losses[layers] = megatron_heldout_loss(model, loss_windows, micro_batch_size, progress=False)["loss"]
        bar.update(1)
    bar.close()

    channel_scores = aggregation.finalize(hooks.proj, num_samples)
    heads = head_scores(channel_scores, arch.num_attention_heads)
    scores = ImportanceScores(
        hidden=aggregation.finalize(hooks.hidden, num_samples).sum(dim=(0, 1)).float().cpu(),
        ffn=aggregation.finalize(hooks.ffn, num_samples).float().cpu(),
        heads=heads.float().cpu(),
        groups=group_scores(heads, arch.num_query_groups).float().cpu(),
        block_influence=(hooks.block_influence / (num_samples * seq_length)).float().cpu(),
        base_loss=base["loss"],
    )
    if "layer_loss" in depth_metrics:
        scores.layer_loss = torch.tensor([losses[(layer,)] - base["loss"] for layer in range(arch.num_layers)])
    for k in window_sizes:
        starts = depth.window_starts(arch.num_layers, k)
        scores.window_loss[k] = torch.tensor([losses[tuple(range(i, i + k))] for i in starts])
    scores.meta = {
        "aggregation": aggregation.to_dict(),
        "num_samples": num_samples,
        "seq_length": seq_length,
        "loss_num_samples": loss_count,
        "calibration_loss": calibration["loss"],
        "depth_metrics": list(depth_metrics),
        "window_sizes": list(window_sizes),
        "micro_batch_size": micro_batch_size,
        "parallel": {
            "tp": parallel_state.get_tensor_model_parallel_world_size(),
            "pp": parallel_state.get_pipeline_model_parallel_world_size(),
            "dp": parallel_state.get_data_parallel_world_size(),
        },
        "forward_passes": 1 + len(distinct_runs),  # over the calibration windows, then the loss windows
        "arch": arch.to_dict(),
        "seconds": {"activations": round(width_seconds, 3), "total": round(time.perf_counter() - start, 3)},
    }
    return scores
