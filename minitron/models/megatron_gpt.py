"""Build a Megatron-Core ``GPTModel`` from a :class:`~minitron.models.arch.ModelArch`.

The layer spec is Transformer Engine's when TE imports (GPU images), Megatron-Core's local spec
otherwise (CPU). Must be called after :func:`minitron.parallel.setup_distributed`; the model is this
rank's shard of the TP x PP layout.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util

import torch
import torch.nn.functional as F

from minitron.errors import MinitronError
from minitron.models.arch import ModelArch


def have_transformer_engine() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None and torch.cuda.is_available()


def check_parallel_layout(arch: ModelArch, tp: int, pp: int, role: str = "model") -> None:
    """Raise a clear error when ``arch`` (of the ``role``: model, teacher, student) cannot be split into ``tp`` x ``pp`` shards."""
    for field, value in (
        ("num_attention_heads", arch.num_attention_heads),
        ("num_query_groups", arch.num_query_groups),
        ("ffn_hidden_size", arch.ffn_hidden_size),
        ("vocab_size", arch.vocab_size),
    ):
        if value % tp:
            raise MinitronError(
                f"parallel.tp={tp} does not divide the {role}'s {field}={value}; choose a tp that divides it"
            )
    if arch.num_layers % pp:
        raise MinitronError(
            f"parallel.pp={pp} does not divide the {role}'s num_layers={arch.num_layers}; choose a pp that divides it"
        )


def check_sequence_length(arch: ModelArch, field: str, seq_length: int, role: str = "model") -> None:
    """Raise a clear error naming ``field`` when ``seq_length`` is longer than ``arch`` (the ``role``'s) can attend."""
    if seq_length > arch.max_position_embeddings:
        raise MinitronError(
            f"{field}={seq_length} exceeds the {role}'s max_position_embeddings="
            f"{arch.max_position_embeddings}; use {field}<={arch.max_position_embeddings}"
        )
    if arch.sliding_window and seq_length > arch.sliding_window:
        raise MinitronError(
            f"{field}={seq_length} exceeds the {role}'s sliding_window={arch.sliding_window}, "
            f"which minitron does not implement; use {field}<=sliding_window"
        )


def transformer_config(arch: ModelArch, tp: int = 1, pp: int = 1, dtype: torch.dtype = torch.float32, scale=None,
                       initialize: bool = True):  # fmt: skip
    """Megatron-Core ``TransformerConfig`` for ``arch`` in the given layout and parameter dtype, with the
    sequence parallelism, recomputation and fusions of ``scale`` (a resolved
    :class:`~minitron.parallel.scale.ScaleLayout`; None: all off). ``initialize``: draw random weights; False
    leaves them uninitialised, for a model whose weights are loaded right after."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    from minitron.parallel.scale import ScaleLayout

    check_parallel_layout(arch, tp, pp)
    return TransformerConfig(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        kv_channels=arch.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=arch.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=arch.qkv_bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu_initialization=not torch.cuda.is_available(),
        perform_initialization=initialize,
        masked_softmax_fusion=False,  # unused: core attention is TE's or PyTorch SDPA (sdpa_attention)
        **(scale or ScaleLayout()).transformer_config_fields(),
    )


class _SequenceParallelRMSNorm:
    """torch ``RMSNorm`` whose weight is flagged ``sequence_parallel`` (Megatron then all-reduces its gradient
    over TP ranks, each of which saw a slice of the sequence); Megatron's own torch-norm wrapper refuses
    sequence parallelism. Used only when sequence parallelism is on and Apex/TE norms are not."""

    def __new__(cls, config, hidden_size: int, eps: float = 1e-5, **unused):
        norm = torch.nn.RMSNorm(hidden_size, eps=eps)
        norm.weight.sequence_parallel = config.sequence_parallel
        return norm


def layer_spec(attention: str = "auto", sequence_parallel: bool = False, num_layers: int = 0):
    """The transformer layer spec.

    ``attention="auto"``: Transformer Engine's spec when TE is usable (fused kernels throughout),
    else Megatron-Core's local spec with its core attention replaced by PyTorch SDPA
    (:mod:`minitron.models.sdpa_attention`); ``"local"``: the unmodified local spec. With
    ``sequence_parallel`` and torch norms (no Apex), the local spec's norms are sequence-parallel ones
    and the result is the block spec of this stage's ``num_layers`` layers (it carries the final norm too).
    """
    from megatron.core.models.gpt import gpt_layer_specs

    if attention == "auto" and have_transformer_engine():
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec()
    spec = gpt_layer_specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    if attention != "local":
        from minitron.models.sdpa_attention import SDPAttention

        spec.submodules.self_attention.submodules.core_attention = SDPAttention
    if sequence_parallel and not gpt_layer_specs.HAVE_APEX:
        from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

        spec.submodules.input_layernorm = _SequenceParallelRMSNorm
        spec.submodules.pre_mlp_layernorm = _SequenceParallelRMSNorm
        return TransformerBlockSubmodules(layer_specs=[spec] * num_layers, layer_norm=_SequenceParallelRMSNorm)
    return spec


class _BatchMajorOutputLayer:
    """Mixin for the LM head: when asked for logits, compute them batch-major.

    ``GPTModel`` returns logits as ``logits[s, b, v].transpose(0, 1).contiguous()``: a full copy of
    the largest tensor of the forward pass (400 MB for 4 x 512 tokens of a 49k vocabulary in fp32,
    a fifth of SmolLM2-135M's CPU forward time). With ``batch_major`` set, this layer multiplies the
    ``[b, s, h]`` view of its input instead and returns the ``[s, b, v]`` view of a contiguous
    ``[b, s, v]`` result, which makes that final ``.contiguous()`` free. Same values, same shapes.
    """

    batch_major = False
    kept_positions = None  # (rows [n], positions [n]): logits of these tokens only, as [n, 1, vocab/tp]

    def forward(self, input_, weight=None, runtime_gather_output=None):
        if self.kept_positions is not None and not self.sequence_parallel:
            rows, positions = (index.to(input_.device) for index in self.kept_positions)
            return super().forward(input_[positions, rows].unsqueeze(1), weight=weight,
                                   runtime_gather_output=runtime_gather_output)  # fmt: skip
        if not self.batch_major or self.sequence_parallel:
            return super().forward(input_, weight=weight, runtime_gather_output=runtime_gather_output)
        output, bias = super().forward(input_.transpose(0, 1), weight=weight, runtime_gather_output=runtime_gather_output)
        return output.transpose(0, 1), bias


@functools.lru_cache(maxsize=None)
def _gpt_model_class():  # built lazily: megatron.core is imported only when a model is built
    from megatron.core.models.gpt.gpt_model import GPTModel

    class MinitronGPTModel(GPTModel):
        """``GPTModel`` whose logits (a call without labels) come out without a transposing copy."""

        def forward(self, *args, **kwargs):
            labels = kwargs.get("labels", args[4] if len(args) > 4 else None)
            head = getattr(self, "output_layer", None) if self.post_process else None
            if head is None:
                return super().forward(*args, **kwargs)
            head.batch_major = labels is None
            try:
                return super().forward(*args, **kwargs)
            finally:
                head.batch_major = False

    return MinitronGPTModel


@contextlib.contextmanager
def logits_only_at(model, rows: torch.Tensor, positions: torch.Tensor):
    """Within the block, a call without labels computes the LM head only at tokens ``(rows[i], positions[i])``
    of the ``[b, s]`` input and returns their logits as ``[1, n, vocab / tp]`` (in that order): scoring a few
    continuation tokens then skips the head's matmul and the ``[b, s, vocab]`` tensor everywhere else."""
    head = getattr(model, "output_layer", None) if model.post_process else None
    if head is not None:
        if head.sequence_parallel:
            raise ValueError("logits_only_at does not support sequence parallelism")
        head.kept_positions = (rows, positions)
    try:
        yield
    finally:
        if head is not None:
            head.kept_positions = None


@functools.lru_cache(maxsize=None)
def _batch_major_class(head_class: type) -> type:
    return type(f"BatchMajor{head_class.__name__}", (_BatchMajorOutputLayer, head_class), {})


def _use_batch_major_head(model) -> None:
    model.output_layer.__class__ = _batch_major_class(type(model.output_layer))


def build_gpt_model(
    arch: ModelArch, tp: int = 1, pp: int = 1, dtype: torch.dtype = torch.float32, attention: str = "auto", scale=None,
    initialize: bool = True,
):
    """This rank's ``GPTModel`` shard for ``arch``; weights are randomly initialised (``initialize=False``: left
    uninitialised, to be loaded). ``scale``: the resolved :class:`~minitron.parallel.scale.ScaleLayout` of a
    training run (None: everything off).

    Rotary frequencies are set from ``arch.rope_inv_freq()`` so Llama-3 scaling with any of its
    parameters matches Hugging Face exactly (Megatron hard-codes some of them).
    """
    from megatron.core import parallel_state

    config = transformer_config(arch, tp, pp, dtype, scale, initialize)
    model = _gpt_model_class()(
        config=config,
        transformer_layer_spec=layer_spec(attention, config.sequence_parallel, arch.num_layers // pp),
        vocab_size=arch.vocab_size,
        max_sequence_length=arch.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=arch.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=arch.rope_theta,
        parallel_output=True,
    )
    model.rotary_pos_emb.inv_freq = arch.rope_inv_freq().to(model.rotary_pos_emb.inv_freq.device)
    if model.post_process:
        _use_batch_major_head(model)
    if torch.cuda.is_available():
        model.cuda(torch.cuda.current_device())
    return model
