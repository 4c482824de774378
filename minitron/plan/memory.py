"""Per-rank memory and time of a training stage, from the architecture and the layout alone (``minitron plan``).

Memory of the fullest rank, in bytes: the parts are summed per pipeline stage (the first holds the embedding and the
most micro-batches in flight, the last the LM head and the logits/loss tensors) and the stage with the larger total
is reported (``pipeline_stage``), with its parts:

  weights       params on the rank x the parameter dtype's bytes
  gradients     params x 4: Megatron DDP's main_grad buffer is fp32 (grad_reduce_in_fp32)
  optimizer     params x (8: Adam's two fp32 moments + 4: fp32 main weights when params are bf16/fp16),
                divided by DP with the distributed optimizer
  activations   what autograd keeps per micro-batch for the backward pass, times the micro-batches in flight on
                the stage in 1F1B (min(PP - stage, micro-batches): up to PP on the first, one on the last) --
                Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"): the
                tensors outside the TP-split regions (norms and the linear layers' inputs) are divided by TP only
                with sequence parallelism; selective recompute drops the attention core's saves; full recompute
                keeps each recomputed layer's input only, plus one layer's saves while it is recomputed
  logits/loss   the last stage's vocabulary-sized tensors of one micro-batch (none on other stages): the
                cross-entropy's saved softmax (fp32) and the logits (train); for distillation both models' logits,
                the KL's gradient (fp32; written over the student's logits when those are fp32) and the chunked
                KL's temporaries, capped at their 1 GiB budget (minitron.distill.vocab_parallel)
  teacher       distillation: the teacher's weights on the rank (no gradients, no optimizer state) and one of its
                layers' working set (it runs without autograd)

The per-layer inventory (:func:`layer_saved_elements`) lists every tensor autograd keeps in one Llama block; it is
checked against the tensors a forward pass actually saves on CPU (tests/training/test_plan_memory.py). Transformer Engine
(GPU) fuses the norms into the next linear layer and its flash attention keeps q, k, v, the output and the
log-sum-exp: the ``fused`` inventory.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from minitron.models.arch import ModelArch
from minitron.distill.vocab_parallel import KL_TEMPORARIES, TEMPORARIES_BUDGET_BYTES

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a plan is made for."""

    tp: int = 1  # tensor-parallel size
    pp: int = 1  # pipeline-parallel size
    dp: int = 1  # data-parallel size
    micro_batch_size: int = 1  # sequences per forward/backward pass on one rank
    global_batch_size: int = 8  # sequences per optimizer step over all DP ranks
    seq_length: int = 4096  # tokens per sequence
    dtype: str = "bfloat16"  # parameter and activation dtype
    sequence_parallel: bool = False  # norms and linear inputs split over TP along the sequence
    recompute: str = "none"  # none | selective | full
    recompute_method: Optional[str] = None  # full: uniform | block
    recompute_num_layers: Optional[int] = None  # full: layers per group (uniform) or recomputed per stage (block)
    distributed_optimizer: bool = False  # optimizer state and fp32 main weights sharded over DP
    fused: bool = True  # Transformer Engine kernels (GPU) rather than Megatron's local spec (CPU)

    @property
    def num_micro_batches(self) -> int:
        return max(self.global_batch_size // (self.micro_batch_size * self.dp), 1)

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp


def stage_params(arch: ModelArch, tp: int, pp: int, stage: int) -> int:
    """Parameters of pipeline ``stage``'s TP shard (the largest TP rank: replicated norms count fully)."""
    layers = arch.num_layers // pp
    q, kv = arch.num_attention_heads * arch.head_dim, 2 * arch.num_query_groups * arch.head_dim
    attention = (arch.hidden_size * (q + kv) + (q + kv if arch.qkv_bias else 0) + q * arch.hidden_size) // tp
    mlp = 3 * arch.hidden_size * arch.ffn_hidden_size // tp
    params = layers * (attention + mlp + 2 * arch.hidden_size)
    table = arch.vocab_size * arch.hidden_size // tp
    if stage == 0:
        params += table
    if stage == pp - 1:
        params += arch.hidden_size  # final norm
        if not arch.tie_word_embeddings or pp > 1:  # an untied head, or the tied copy on the last stage
            params += table
    return params


def layer_saved_elements(arch: ModelArch, layout: Layout) -> float:
    """Elements autograd keeps per token for one transformer layer on one TP rank (no recomputation)."""
    h, f, a = arch.hidden_size, arch.ffn_hidden_size, arch.num_attention_heads
    ad, gd = a * arch.head_dim, arch.num_query_groups * arch.head_dim
    tp = layout.tp
    # outside the TP regions: two norms (input and normalised output: 2h + 1 each) and the qkv / fc1 inputs (h each)
    outside = 2 * (2 * h + 1) + 2 * h
    if layout.fused:  # flash attention: q, k, v, output, log-sum-exp; proj input = output; fc1 out, swiglu out
        attention = 2 * ad + 2 * gd + a
        mlp = 3 * f  # fused SwiGLU keeps its input (fc1's output, 2f); fc2 keeps its input (f)
    else:  # local spec + SDPA (CPU): q, out, k and v three times each, lse; fc1 out, silu out, product, fc2 input
        attention = 2 * ad + 6 * gd + a
        mlp = 5 * f
    if layout.recompute == "selective":
        attention -= a  # the attention core is rerun: its log-sum-exp is not kept (its inputs and output are)
    inside = (attention + mlp) / tp
    return (outside / tp if layout.sequence_parallel else outside) + inside


def activation_bytes(arch: ModelArch, layout: Layout, stage: int = 0) -> dict:
    """Activations of pipeline ``stage`` (1F1B: ``min(PP - stage, micro-batches)`` in flight), in bytes."""
    e = DTYPE_BYTES[layout.dtype]
    tokens = layout.micro_batch_size * layout.seq_length
    layers = arch.num_layers // layout.pp
    per_layer = layer_saved_elements(arch, layout) * tokens * e
    layer_input = tokens * arch.hidden_size * e / (layout.tp if layout.sequence_parallel else 1)
    if layout.recompute == "full":
        recomputed = layers if layout.recompute_method == "uniform" else (layout.recompute_num_layers or layers)
        kept = (layers - recomputed) * per_layer + recomputed * layer_input + (per_layer if recomputed else 0)
    else:
        kept = layers * per_layer
    in_flight = min(layout.pp - stage, layout.num_micro_batches)
    return {"per_micro_batch": kept, "in_flight": in_flight, "total": kept * in_flight}


def logits_bytes(arch: ModelArch, layout: Layout, teacher: Optional[ModelArch] = None) -> int:
    """The last stage's vocabulary-sized tensors of one micro-batch (and the final norm and head input)."""
    e = DTYPE_BYTES[layout.dtype]
    tokens = layout.micro_batch_size * layout.seq_length
    vocab = arch.vocab_size // layout.tp
    head_inputs = tokens * (3 * arch.hidden_size + 1) * e / (layout.tp if layout.sequence_parallel else 1)
    if teacher is None:
        return int(head_inputs + tokens * vocab * (4 + e))  # softmax kept by the cross-entropy (fp32) + the logits
    kl_temporaries = min(TEMPORARIES_BUDGET_BYTES, KL_TEMPORARIES * 4 * tokens * vocab)
    gradient = 4 if e != 4 else 0  # the KL's fp32 gradient is written over fp32 student logits (inplace)
    return int(head_inputs + tokens * vocab * (2 * e + gradient) + kl_temporaries)


def stage_memory(arch: ModelArch, layout: Layout, stage: int, teacher: Optional[ModelArch] = None) -> dict:
    """Per-rank bytes of each part and their total on pipeline ``stage``: only the last stage has the logits/loss
    tensors, the first the most micro-batches in flight."""
    e = DTYPE_BYTES[layout.dtype]
    params = stage_params(arch, layout.tp, layout.pp, stage)
    optimizer_per_param = 8 + (4 if layout.dtype != "float32" else 0)
    shards = layout.dp if layout.distributed_optimizer else 1
    acts = activation_bytes(arch, layout, stage)
    parts = {
        "weights": params * e,
        "gradients": params * 4,
        "optimizer": params * optimizer_per_param / shards,
        "activations": acts["total"],
        "logits_loss": logits_bytes(arch, layout, teacher) if stage == layout.pp - 1 else 0,
    }
    if teacher is not None:
        teacher_params = stage_params(teacher, layout.tp, layout.pp, stage)
        working = layer_saved_elements(teacher, Layout(**{**dataclasses.asdict(layout), "recompute": "none"}))
        parts["teacher"] = teacher_params * e + working * layout.micro_batch_size * layout.seq_length * e
    parts = {k: int(v) for k, v in parts.items()}
    return {"params_per_rank": params, "parts": parts, "total": sum(parts.values()),
            "micro_batches_in_flight": acts["in_flight"], "pipeline_stage": stage}  # fmt: skip


def plan_memory(arch: ModelArch, layout: Layout, teacher: Optional[ModelArch] = None) -> dict:
    """Per-rank bytes of each part and their total, for the fullest pipeline stage (the first or the last: the
    stages between hold fewer micro-batches in flight than the first and no embedding, no logits)."""
    stages = [stage_memory(arch, layout, stage, teacher) for stage in sorted({0, layout.pp - 1})]
    return max(stages, key=lambda plan: plan["total"])


def plan_flops(arch: ModelArch, layout: Layout, teacher: Optional[ModelArch] = None, mfu: float = 0.4,
               peak_tflops: float = 989.0) -> dict:  # fmt: skip
    """Model FLOPs per optimizer step (training 3x forward; a teacher's forward for distillation; recomputation
    is not counted, as MFU does not) and the step time at ``mfu`` of ``peak_tflops`` per device."""
    tokens = layout.global_batch_size * layout.seq_length
    flops = arch.flops_per_token(layout.seq_length)["train"] * tokens
    if teacher is not None:
        flops += teacher.flops_per_token(layout.seq_length)["forward"] * tokens
    seconds = flops / (layout.world_size * peak_tflops * 1e12 * mfu)
    return {"flops_per_step": flops, "step_seconds": seconds, "tokens_per_s": tokens / seconds, "mfu": mfu,
            "peak_tflops": peak_tflops}  # fmt: skip
