"""Preference losses of one batch of pairs, as pure functions of sequence log-probs (no model, no TP).

Notation (per pair, ``[pairs]`` tensors): ``d_c = logp_policy(chosen) - logp_ref(chosen)``,
``d_r`` the same for the rejected answer, ``h = d_c - d_r``; with rewards, ``g = eta * (r_c - r_r)``.
A sequence log-prob is the sum (or, with ``align.average_logps``, the mean) of the per-token log-probs
of the answer tokens only. Each loss returns the per-pair loss ``[pairs]``; the caller sums over pairs and
divides by the global number of pairs (invariant to micro-batching and data parallelism):

- ``dpo``:        -log sigmoid(beta h)                                   (Rafailov et al. 2023)
- ``ipo``:        (h - 1 / (2 beta))^2                                   (Azar et al. 2023; not length-normalised)
- ``rpo_sq``:     (beta h - g)^2                                         (NeMo-Aligner's RPO variants)
- ``rpo_bwd_kl``: KL(Bern(sigmoid(g)) || Bern(sigmoid(beta h)))
- ``rpo_fwd_kl``: KL(Bern(sigmoid(beta h)) || Bern(sigmoid(g)))

plus ``sft_weight * (-logp_policy(chosen))`` per pair when ``sft_weight > 0`` (the "SFT term" of DPO
with an SFT loss, NeMo-Aligner's ``sft_loss_weight``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minitron.config.align import PREFERENCE_LOSSES  # noqa: F401  (declared once, in the schema)


def bernoulli_kl(p_logit: torch.Tensor, q_logit: torch.Tensor) -> torch.Tensor:
    """KL(Bern(sigmoid(p_logit)) || Bern(sigmoid(q_logit))), elementwise, stable in log space."""
    p = torch.sigmoid(p_logit)
    return p * (F.logsigmoid(p_logit) - F.logsigmoid(q_logit)) + (1 - p) * (
        F.logsigmoid(-p_logit) - F.logsigmoid(-q_logit)
    )


def preference_loss(name: str, h: torch.Tensor, beta: float, g: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair loss ``[pairs]`` of the log-ratio difference ``h`` ``[pairs]`` (and reward gap ``g`` for RPO)."""
    if name == "dpo":
        return -F.logsigmoid(beta * h)
    if name == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2
    if g is None:
        g = torch.zeros_like(h)
    if name == "rpo_sq":
        return (beta * h - g) ** 2
    if name == "rpo_bwd_kl":
        return bernoulli_kl(g, beta * h)
    if name == "rpo_fwd_kl":
        return bernoulli_kl(beta * h, g)
    raise ValueError(f"unknown preference loss {name!r}; use one of {', '.join(PREFERENCE_LOSSES)}")


def pair_losses(name: str, policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                ref_rejected: torch.Tensor, beta: float, eta: float = 1.0, reward_chosen: torch.Tensor | None = None,
                reward_rejected: torch.Tensor | None = None, sft_weight: float = 0.0) -> dict:  # fmt: skip
    """Per-pair tensors ``[pairs]`` of one batch: ``loss`` (what is optimised), ``preference``, ``sft`` and the
    reported rewards (``beta * d``, TRL's names without the prefix): ``chosen``, ``rejected``, ``margin``,
    ``accuracy`` (strict ``r_c > r_r``)."""
    d_c, d_r = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    h = d_c - d_r
    g = None
    if reward_chosen is not None and reward_rejected is not None:
        g = eta * (reward_chosen - reward_rejected).to(h.dtype)
    preference = preference_loss(name, h, beta, g)
    sft = -policy_chosen
    loss = preference + sft_weight * sft if sft_weight else preference
    chosen, rejected = (beta * d_c).detach(), (beta * d_r).detach()
    return {
        "loss": loss,
        "preference": preference.detach(),
        "sft": sft.detach(),
        "chosen": chosen,
        "rejected": rejected,
        "margin": chosen - rejected,
        "accuracy": (chosen > rejected).to(h.dtype),
    }


def sequence_logps(token_logps: torch.Tensor, loss_mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Sum (or mean) over answer tokens of per-token log-probs ``[n, s]`` where ``loss_mask`` ``[n, s]`` is 1: ``[n]``."""
    mask = loss_mask.to(token_logps.dtype)
    total = (token_logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total
