"""Each preference loss equals its closed form on hand-made log-probs."""

import math

import pytest
import torch
import torch.nn.functional as F

from minitron.align import losses


def _pairs(h, d_r=0.0):
    """Log-probs whose log-ratio difference is ``h`` (reference = 0; rejected log-ratio ``d_r``)."""
    h = torch.tensor(h, dtype=torch.float64)
    zeros = torch.zeros_like(h)
    return h + d_r, zeros + d_r, zeros, zeros


def test_dpo_closed_form_torchtune_case():
    # beta 0.1, h = [0, 10, 20] -> -log sigmoid([0, 1, 2])
    out = losses.pair_losses("dpo", *_pairs([0.0, 10.0, 20.0]), beta=0.1)
    expected = [-math.log(1 / (1 + math.exp(-x))) for x in (0.0, 1.0, 2.0)]
    assert out["loss"].tolist() == pytest.approx(expected, abs=1e-12)
    assert out["loss"][0].item() == pytest.approx(math.log(2), abs=1e-15)
    assert out["chosen"].tolist() == pytest.approx([0.0, 1.0, 2.0], abs=1e-12)
    assert out["accuracy"].tolist() == [0.0, 1.0, 1.0]  # strict: a tie is not a win


def test_ipo_closed_form():
    out = losses.pair_losses("ipo", *_pairs([0.0, 10.0, -2.0]), beta=0.1)  # 1/(2 beta) = 5
    assert out["loss"].tolist() == pytest.approx([25.0, 25.0, 49.0], abs=1e-12)


@pytest.mark.parametrize("rewards", [(1.0, 0.0), (0.0, 0.0), (0.3, 2.0)])
def test_rpo_variants_closed_form(rewards):
    beta, eta = 0.2, 1.5
    h = [0.0, 10.0, -4.0]
    r_c = torch.full((3,), rewards[0], dtype=torch.float64)
    r_r = torch.full((3,), rewards[1], dtype=torch.float64)
    g = eta * (rewards[0] - rewards[1])
    for name in ("rpo_sq", "rpo_bwd_kl", "rpo_fwd_kl"):
        out = losses.pair_losses(name, *_pairs(h, d_r=-0.7), beta=beta, eta=eta, reward_chosen=r_c,
                                 reward_rejected=r_r)  # fmt: skip
        expected = []
        for hx in h:
            a = beta * hx
            if name == "rpo_sq":
                expected.append((a - g) ** 2)
            else:
                p_logit, q_logit = (g, a) if name == "rpo_bwd_kl" else (a, g)
                p, q = 1 / (1 + math.exp(-p_logit)), 1 / (1 + math.exp(-q_logit))
                expected.append(p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)))
        assert out["loss"].tolist() == pytest.approx(expected, abs=1e-12), name
    # at g = beta h every RPO loss is 0
    zero = losses.pair_losses("rpo_bwd_kl", *_pairs([5.0]), beta=beta, eta=1.0,
                              reward_chosen=torch.tensor([1.0], dtype=torch.float64),
                              reward_rejected=torch.tensor([0.0], dtype=torch.float64))  # fmt: skip
    assert zero["loss"].item() == pytest.approx(0.0, abs=1e-15)


def test_sft_term_and_average_logps():
    token_logps = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-0.5, -0.5, -9.0, -9.0]], dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]])
    assert losses.sequence_logps(token_logps, mask).tolist() == [-5.0, -1.0]
    assert losses.sequence_logps(token_logps, mask, average=True).tolist() == [-2.5, -0.5]
    chosen, rejected = torch.tensor([-5.0], dtype=torch.float64), torch.tensor([-7.0], dtype=torch.float64)
    out = losses.pair_losses("dpo", chosen, rejected, chosen.clone(), rejected.clone(), beta=0.1, sft_weight=0.5)
    assert out["loss"].item() == pytest.approx(math.log(2) + 0.5 * 5.0, abs=1e-12)


def test_dpo_gradient_matches_closed_form():
    # d/dh [-log sigmoid(beta h)] = -beta sigmoid(-beta h)
    h = torch.tensor([0.0, 3.0], dtype=torch.float64, requires_grad=True)
    losses.preference_loss("dpo", h, 0.5).sum().backward()
    assert h.grad.tolist() == pytest.approx((-0.5 * torch.sigmoid(-0.5 * h.detach())).tolist(), abs=1e-15)


def test_unknown_loss():
    with pytest.raises(ValueError, match="dpo, ipo"):
        losses.preference_loss("kto", torch.zeros(1), 0.1)


def test_bernoulli_kl_matches_torch():
    a, b = torch.tensor([0.3, -2.0]), torch.tensor([1.0, 0.5])
    p, q = torch.sigmoid(a), torch.sigmoid(b)
    reference = F.kl_div(torch.stack([q, 1 - q]).log(), torch.stack([p, 1 - p]), reduction="none").sum(0)
    assert torch.allclose(losses.bernoulli_kl(a, b), reference, atol=1e-6)
