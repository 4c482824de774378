"""Distillation losses: logit KL on vocab-parallel logits, hidden-state losses, and how they combine.

Logit losses take the student's and the teacher's logits ``[..., vocab/tp]`` (this TP rank's slice of the
vocabulary: ``[b, s, v/tp]`` as the GPT model returns them, or ``[s, b, v/tp]``) and return one value per
token ``[...]``, identical on every TP rank; the vocabulary is never gathered (see
:mod:`minitron.distill.vocab_parallel` for why the student's gradient is exact under TP). With
``q = softmax(teacher / T)`` and ``p = softmax(student / T)``:

    forward_kl   KL(q || p) = sum_v q_v (log q_v - log p_v)     the Minitron default (T = 1, logits only)
    reverse_kl   KL(p || q) = sum_v p_v (log p_v - log q_v)
    topk         KL(q_K || p_K), both renormalised over K, the teacher's ``k`` most likely entries of the
                 whole vocabulary (per token)

There is no ``T**2`` factor (as in Megatron's ModelOpt distillation plugin): at the default T = 1 it does
not matter; with T > 1 and a language-model loss mixed in, raise ``lm_loss_weight`` accordingly.

Hidden-state losses compare a student layer's output ``[s, b, h_student]``, projected to the teacher's
width when it differs, with a teacher layer's output ``[s, b, h_teacher]``: ``cosine`` (1 - cosine
similarity) or ``mse`` (mean squared error over the hidden dimension), per token ``[s, b]``.

:func:`combine` sums them over a micro-batch's counted tokens: logit loss, plus the hidden loss (mean
over pairs) rescaled to the logit loss's magnitude (``x L_logit.detach() / L_hidden.detach()``, the
paper's alpha), plus ``lm_loss_weight`` x the language-model cross-entropy.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from minitron.config.distill import HIDDEN_LOSSES, LOGIT_LOSSES
from minitron.distill import vocab_parallel
from minitron.distill.vocab_parallel import at_least_fp32, log_softmax, masked_fill_inf, sum_over_tp


def _kl(log_target: torch.Tensor, log_other: torch.Tensor, group, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-token ``sum_v exp(log_target) (log_target - log_other)`` over the whole vocabulary (or ``keep``)."""
    terms = log_target.exp() * (log_target - log_other)
    if keep is not None:  # outside it both are -inf: 0 log 0 = 0
        terms = torch.where(keep, terms, torch.zeros((), dtype=terms.dtype, device=terms.device))
    return sum_over_tp(terms.sum(dim=-1), group)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
               group=None, inplace: bool = False) -> torch.Tensor:  # fmt: skip
    """KL(teacher || student) per token ``[...]`` of vocab-parallel logits ``[..., vocab/tp]``.

    A fused autograd function (:func:`minitron.distill.vocab_parallel.forward_kl`): one tensor kept for the
    backward pass, the gradient, instead of a graph of log-softmaxes. ``inplace``: the gradient overwrites
    ``student_logits`` (fp32), which must not be used afterwards.
    """
    return vocab_parallel.forward_kl(student_logits, teacher_logits, temperature, group, inplace)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
               group=None) -> torch.Tensor:  # fmt: skip
    """KL(student || teacher) per token ``[...]``."""
    log_p = log_softmax(student_logits, temperature, group)
    with torch.no_grad():
        log_q = log_softmax(teacher_logits, temperature, group)
    return _kl(log_p, log_q, group)


def topk_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, k: int, temperature: float = 1.0,
            group=None) -> torch.Tensor:  # fmt: skip
    """KL(teacher || student) per token over the teacher's top ``k`` vocabulary entries, both renormalised."""
    keep = vocab_parallel.global_topk_mask(teacher_logits, k, group)
    log_p = log_softmax(masked_fill_inf(student_logits, keep), temperature, group)
    with torch.no_grad():
        log_q = log_softmax(masked_fill_inf(teacher_logits, keep), temperature, group)
    return _kl(log_q, log_p, group, keep)


def logit_loss(kind: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
               topk: Optional[int] = None, group=None, inplace: bool = False) -> torch.Tensor:  # fmt: skip
    """The ``kind`` (one of :data:`LOGIT_LOSSES`) logit loss per token; ``inplace`` lets ``forward_kl`` reuse
    the student's logits for their gradient (they must not be used afterwards)."""
    if kind == "forward_kl":
        return forward_kl(student_logits, teacher_logits, temperature, group, inplace)
    if kind == "reverse_kl":
        return reverse_kl(student_logits, teacher_logits, temperature, group)
    if kind == "topk":
        return topk_kl(student_logits, teacher_logits, topk, temperature, group)
    raise ValueError(f"unknown logit loss {kind!r}; one of {LOGIT_LOSSES}")


def hidden_loss(kind: str, student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Per-token ``[...]`` loss between hidden states ``[..., h]`` of equal width (project the student first)."""
    student_hidden, teacher_hidden = at_least_fp32(student_hidden), at_least_fp32(teacher_hidden)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(student_hidden, teacher_hidden, dim=-1)
    if kind == "mse":
        return (student_hidden - teacher_hidden).pow(2).mean(dim=-1)
    raise ValueError(f"unknown hidden-state loss {kind!r}; one of {HIDDEN_LOSSES}")


def make_projection(student_hidden_size: int, teacher_hidden_size: int, seed: int,
                    dtype: torch.dtype = torch.float32, device=None) -> torch.nn.Linear:  # fmt: skip
    """Learned ``h_student -> h_teacher`` map (no bias), initialised N(0, 0.02) from ``seed`` alone.

    Seeded by itself so that every TP rank and every layout starts from the same weights.
    """
    projection = torch.nn.Linear(student_hidden_size, teacher_hidden_size, bias=False, dtype=dtype, device=device)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = torch.randn(projection.weight.shape, generator=generator, dtype=torch.float32) * 0.02
        projection.weight.copy_(weight)
    return projection


def combine(loss_mask: torch.Tensor, logit_per_token: torch.Tensor,
            hidden_per_token: Sequence[torch.Tensor] = (), lm_per_token: Optional[torch.Tensor] = None,
            lm_loss_weight: float = 0.0) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """Masked sums over one micro-batch: ``(total, parts)``, ``parts`` the detached sums of each term.

    All per-token inputs have the shape of ``loss_mask``. ``total = logit + hidden * (logit / hidden)
    [detached ratio] + lm_loss_weight * lm``; ``parts`` has ``kd`` and, when present, ``hidden`` and
    ``lm`` (unscaled).
    """
    mask = loss_mask.to(logit_per_token.device, torch.float32)
    logit = (logit_per_token.float() * mask).sum()
    total, parts = logit, {"kd": logit.detach()}
    if hidden_per_token:
        hidden = sum((h.float() * mask).sum() for h in hidden_per_token) / len(hidden_per_token)
        total = total + hidden * (logit.detach() / hidden.detach().clamp_min(torch.finfo(torch.float32).tiny))
        parts["hidden"] = hidden.detach()
    if lm_per_token is not None:
        lm = (lm_per_token.float() * mask).sum()
        total = total + lm_loss_weight * lm
        parts["lm"] = lm.detach()
    return total, parts
