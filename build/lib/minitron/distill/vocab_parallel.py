"""Softmax pieces on vocab-parallel logits: each tensor-parallel rank holds ``[..., vocab / tp]``, never all.

Rank ``r`` of a TP group of size ``tp`` holds vocabulary entries ``[r * V/tp, (r + 1) * V/tp)`` of logits
shaped ``[..., vocab / tp]`` (``[s, b, v/tp]`` or ``[b, s, v/tp]``: only the last dimension is the
vocabulary). Per-token results come out as ``[...]``, equal on every rank of the group.

A loss over the vocabulary is written as a sum of rank-local partial sums, then summed over the group.
Two autograd-aware reductions make the student's gradient exact under TP, with every rank
back-propagating its own (identical) copy of the per-token loss:

* :func:`sum_over_tp` (forward: all-reduce sum; backward: identity) turns local partial sums into the
  replicated result; each rank's partial receives the loss gradient once.
* :func:`all_reduce_sum` (forward: all-reduce sum; backward: all-reduce sum) is for a total that the
  local partials consume, such as the softmax denominator: each rank's share of it receives the
  gradient of every rank's partial.

The max used to shift logits before ``exp`` is all-reduced without gradient (softmax does not depend on it).
These build :func:`log_softmax`, :func:`cross_entropy` and the reverse and top-k KLs of
:mod:`minitron.distill.losses` from ordinary autograd. The default loss, :func:`forward_kl`, is instead one
autograd function with its gradient written out (``(p - q) / T``): faster, and one saved tensor.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist


def tp_group():
    """This process's tensor-parallel group (None outside a Megatron world: one rank holds the vocabulary)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        return parallel_state.get_tensor_model_parallel_group()
    return None


def _size(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def _rank(group) -> int:
    return 0 if group is None else dist.get_rank(group)


class _SumIdentityBackward(torch.autograd.Function):
    """All-reduce sum in the forward pass; the gradient passes through unchanged."""

    @staticmethod
    def forward(ctx, tensor, group):
        tensor = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(tensor, group=group)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def sum_over_tp(partial: torch.Tensor, group) -> torch.Tensor:
    """Sum of every rank's ``partial``, for a result used alike on every rank (backward: identity)."""
    if _size(group) == 1:
        return partial
    return _SumIdentityBackward.apply(partial, group)


def all_reduce_sum(total_share: torch.Tensor, group) -> torch.Tensor:
    """Sum of every rank's share, for a total consumed by rank-local partials (backward: all-reduce sum)."""
    if _size(group) == 1:
        return total_share
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(total_share, group=group)


def all_reduce_max(tensor: torch.Tensor, group) -> torch.Tensor:
    """Element-wise max over the group (no gradient)."""
    tensor = tensor.detach().clone()
    if _size(group) > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group)
    return tensor


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in fp32, or fp64 when it is fp64 (bf16/fp16 logits are never reduced in their own precision)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def log_softmax(logits: torch.Tensor, temperature: float = 1.0, group=None) -> torch.Tensor:
    """Log-probabilities ``[..., vocab/tp]`` of ``softmax(logits / temperature)`` over the whole vocabulary.

    Computed in fp32 (fp64 for fp64 logits). Entries at ``-inf`` (masked out) get probability 0 and no gradient.
    """
    scaled = at_least_fp32(logits)
    if temperature != 1.0:
        scaled = scaled / temperature
    shift = all_reduce_max(scaled.amax(dim=-1, keepdim=True), group)
    sum_exp = torch.exp(scaled - shift).sum(dim=-1, keepdim=True)
    return scaled - (shift + all_reduce_sum(sum_exp, group).log())


TEMPORARIES_BUDGET_BYTES = 1 << 30
"""Default budget (1 GiB, on every device) of the temporaries of a computation over the vocabulary taken in token
chunks (:func:`token_chunks`). A tensor ``[tokens, vocab/tp]`` in fp32 is 4.2 GB at TP=1, 8192 tokens and a
128k vocabulary, and the forward KL in one slice holds five of them (~21 GB); in chunks only the outputs are
that large (the KL's gradient), the temporaries stay within the budget whatever the sequence length."""
KL_TEMPORARIES = 4  # [tokens, vocab] temporaries of one forward-KL chunk: scaled s and t, q, (t - s) * q


def token_chunk_size(vocab: int, temporaries: int, element_bytes: int = 4,
                     budget_bytes: int = TEMPORARIES_BUDGET_BYTES) -> int:  # fmt: skip
    """Tokens per chunk such that ``temporaries`` tensors ``[tokens, vocab]`` of ``element_bytes`` per entry (4: fp32,
    8: fp64) fit in ``budget_bytes``; at least one token. ``vocab`` is this rank's share of the vocabulary."""
    return max(1, budget_bytes // (temporaries * element_bytes * vocab))


def token_chunks(num_tokens: int, vocab: int, temporaries: int, element_bytes: int = 4,
                 budget_bytes: int = TEMPORARIES_BUDGET_BYTES) -> list[slice]:  # fmt: skip
    """Consecutive slices covering ``range(num_tokens)`` of :func:`token_chunk_size` tokens (the last may be less)."""
    step = token_chunk_size(vocab, temporaries, element_bytes, budget_bytes)
    return [slice(start, min(start + step, num_tokens)) for start in range(0, num_tokens, step)]


def _global_logsumexp(local: torch.Tensor, group) -> torch.Tensor:
    """log(sum over ranks of exp(local)) per token, from each rank's log-sum-exp over its vocabulary slice."""
    if _size(group) == 1:
        return local
    shift = all_reduce_max(local, group)
    total = (local - shift).exp()
    dist.all_reduce(total, group=group)
    return shift + total.log()


class _ForwardKL(torch.autograd.Function):
    """Per-token KL(softmax(teacher / T) || softmax(student / T)); the student's gradient ``(p - q) / T`` is
    computed in the forward pass and kept (one vocabulary-sized tensor), as Megatron's cross-entropy does.

    With scaled logits ``s``, ``t`` and their log-partition functions ``lse`` over the whole vocabulary (from
    each rank's, all-reduced): ``KL = sum_v q_v (t_v - s_v) - lse_t + lse_s`` (the sum all-reduced). Every
    TP rank returns the same ``[...]``; the backward pass needs no communication. Tokens are processed in
    chunks (:func:`token_chunks`, on every device) so that temporaries stay within ``budget_bytes`` and the
    only vocabulary-sized allocation is the gradient; with ``inplace`` it is written over the student's logits
    instead (fp32, contiguous), as Megatron's cross-entropy does: they must not be used afterwards.
    """

    @staticmethod
    def forward(ctx, student, teacher, temperature, group, inplace, budget_bytes):
        vocab = student.shape[-1]
        dtype = torch.promote_types(student.dtype, torch.float32)
        s_all, t_all = student.reshape(-1, vocab), teacher.reshape(-1, vocab)
        chunks = token_chunks(s_all.shape[0], vocab, KL_TEMPORARIES, dtype.itemsize, budget_bytes)

        def scaled(logits, rows):
            chunk = logits[rows].to(dtype)
            return chunk if temperature == 1.0 else chunk / temperature

        lse = torch.empty(2, s_all.shape[0], dtype=dtype, device=student.device)  # student, teacher
        for rows in chunks:
            torch.logsumexp(scaled(s_all, rows), dim=-1, out=lse[0, rows])
            torch.logsumexp(scaled(t_all, rows), dim=-1, out=lse[1, rows])
        lse = _global_logsumexp(lse, group)
        if inplace and student.dtype == dtype and student.is_contiguous():
            grad = student.detach().view(s_all.shape)  # each chunk is read (below) before it is overwritten
        else:
            grad = torch.empty(s_all.shape, dtype=dtype, device=student.device)
        cross = torch.empty(s_all.shape[0], dtype=dtype, device=student.device)  # sum_v q_v (t_v - s_v)
        for rows in chunks:
            s, t = scaled(s_all, rows), scaled(t_all, rows)
            q = torch.sub(t, lse[1, rows, None]).exp_()
            torch.sum(torch.sub(t, s).mul_(q), dim=-1, out=cross[rows])
            torch.sub(s, lse[0, rows, None], out=grad[rows]).exp_().sub_(q)
        if _size(group) > 1:
            dist.all_reduce(cross, group=group)
        if temperature != 1.0:
            grad.div_(temperature)
        ctx.save_for_backward(grad)
        ctx.shape, ctx.student_dtype = student.shape, student.dtype
        return (cross - lse[1] + lse[0]).view(student.shape[:-1])

    @staticmethod
    def backward(ctx, grad_kl):
        (grad,) = ctx.saved_tensors
        grad.mul_(grad_kl.reshape(-1, 1).to(grad.dtype))  # in place, as Megatron's cross-entropy (one backward)
        return grad.view(ctx.shape).to(ctx.student_dtype), None, None, None, None, None


def forward_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0, group=None,
               inplace: bool = False, budget_bytes: int = TEMPORARIES_BUDGET_BYTES) -> torch.Tensor:  # fmt: skip
    """KL(teacher || student) per token ``[...]`` of vocab-parallel logits ``[..., vocab/tp]`` (no gradient to
    the teacher's). ``inplace``: overwrite ``student`` with its gradient (saves a logits-sized tensor).
    ``budget_bytes``: memory for the temporaries of each token chunk."""
    return _ForwardKL.apply(student, teacher.detach(), temperature, group, inplace, budget_bytes)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, group=None) -> torch.Tensor:
    """Per-token ``-log p(label)`` ``[...]`` of vocab-parallel ``logits`` and global ``labels`` ``[...]``.

    Does not modify ``logits`` (Megatron's fused version shifts them in place).
    """
    log_probs = log_softmax(logits, 1.0, group)
    local_size = log_probs.shape[-1]
    local = labels.to(log_probs.device, torch.int64) - _rank(group) * local_size
    inside = (local >= 0) & (local < local_size)
    picked = log_probs.gather(-1, local.clamp(0, local_size - 1).unsqueeze(-1)).squeeze(-1)
    return sum_over_tp(torch.where(inside, -picked, torch.zeros_like(picked)), group)


def global_topk_mask(logits: torch.Tensor, k: int, group=None) -> torch.Tensor:
    """Bool ``[..., vocab/tp]``: True at this rank's entries among the ``k`` largest logits of the vocabulary.

    Each rank proposes its local top-``min(k, vocab/tp)``; the proposals are gathered (``k * tp`` values
    per token, never the vocabulary) and the global top ``k`` chosen from them.
    """
    with torch.no_grad():
        local_size = logits.shape[-1]
        values, indices = logits.topk(min(k, local_size), dim=-1)
        indices = indices + _rank(group) * local_size  # global vocabulary ids
        if _size(group) > 1:
            values, indices = (_all_gather_last_dim(t.contiguous(), group) for t in (values, indices))
        chosen = indices.gather(-1, values.topk(k, dim=-1).indices)  # [..., k] global ids
        local = chosen - _rank(group) * local_size
        local = torch.where((local >= 0) & (local < local_size), local, torch.full_like(local, local_size))
        mask = torch.zeros(*logits.shape[:-1], local_size + 1, dtype=torch.bool, device=logits.device)
        mask.scatter_(-1, local, True)  # ids of other ranks land in the extra last column
        return mask[..., :local_size]


def _all_gather_last_dim(tensor: torch.Tensor, group) -> torch.Tensor:
    pieces = [torch.empty_like(tensor) for _ in range(_size(group))]
    dist.all_gather(pieces, tensor, group=group)
    return torch.cat(pieces, dim=-1)


def masked_fill_inf(logits: torch.Tensor, keep: Optional[torch.Tensor]) -> torch.Tensor:
    """``logits`` with the entries outside ``keep`` set to ``-inf`` (no gradient there); ``keep=None``: all."""
    if keep is None:
        return logits
    logits = at_least_fp32(logits)
    return torch.where(keep, logits, torch.full((), float("-inf"), dtype=logits.dtype, device=logits.device))
