"""Distillation losses in one process (the whole vocabulary on one rank), checked against hand computations.

The TP=2 vocab-parallel versions are compared with these in test_distill_parallel.py."""

import math

import pytest
import torch

from minitron.distill import losses, vocab_parallel

STUDENT = [[0.5, -1.0, 2.0, 0.0, 1.5, -0.5], [3.0, 0.1, -2.0, 0.7, 0.2, 1.0]]  # two tokens, vocabulary of 6
TEACHER = [[1.0, 0.0, 2.5, -1.0, 0.5, 0.0], [0.0, 2.0, -1.0, 1.0, 0.5, -0.3]]


def softmax(row, temperature=1.0):
    exps = [math.exp(x / temperature) for x in row]
    return [e / sum(exps) for e in exps]


def kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)


def logits(rows, requires_grad=False):
    return torch.tensor(rows, dtype=torch.float64).unsqueeze(1).requires_grad_(requires_grad)  # [s=2, b=1, v=6]


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "topk"])
def test_kl_of_the_teacher_with_itself_is_zero_with_zero_gradient(kind):
    teacher = torch.randn(3, 2, 50, generator=torch.Generator().manual_seed(0)) * 4
    student = teacher.clone().requires_grad_()
    per_token = losses.logit_loss(kind, student, teacher, temperature=1.0, topk=5)
    per_token.sum().backward()
    assert per_token.shape == (3, 2)
    assert per_token.abs().max() < 1e-6, per_token
    assert student.grad.abs().max() < 1e-7


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_forward_and_reverse_kl_against_hand_computation(temperature):
    for kind, expected in (
        ("forward_kl", [kl(softmax(t, temperature), softmax(s, temperature)) for s, t in zip(STUDENT, TEACHER)]),
        ("reverse_kl", [kl(softmax(s, temperature), softmax(t, temperature)) for s, t in zip(STUDENT, TEACHER)]),
    ):
        got = losses.logit_loss(kind, logits(STUDENT), logits(TEACHER), temperature)
        assert got.shape == (2, 1)
        assert got[:, 0].tolist() == pytest.approx(expected, abs=1e-12), kind


def test_forward_kl_gradient_is_p_minus_q_over_t():
    temperature = 2.0
    student = logits(STUDENT, requires_grad=True)
    losses.forward_kl(student, logits(TEACHER), temperature).sum().backward()
    for row, (s, t) in enumerate(zip(STUDENT, TEACHER)):
        expected = [(p - q) / temperature for p, q in zip(softmax(s, temperature), softmax(t, temperature))]
        assert student.grad[row, 0].tolist() == pytest.approx(expected, abs=1e-12)


def test_topk_kl_against_hand_computation():
    k = 3
    expected = []
    for s, t in zip(STUDENT, TEACHER):
        top = sorted(range(len(t)), key=lambda v: -t[v])[:k]  # the teacher's 3 most likely tokens
        expected.append(kl(softmax([t[v] for v in top]), softmax([s[v] for v in top])))
    got = losses.topk_kl(logits(STUDENT), logits(TEACHER), k)
    assert got[:, 0].tolist() == pytest.approx(expected, abs=1e-12)
    # with k = the whole vocabulary it is the forward KL
    full = losses.topk_kl(logits(STUDENT), logits(TEACHER), len(STUDENT[0]))
    assert torch.allclose(full, losses.forward_kl(logits(STUDENT), logits(TEACHER)), atol=1e-12)


def test_topk_student_gradient_stays_on_the_teachers_tokens():
    student = logits(STUDENT, requires_grad=True)
    losses.topk_kl(student, logits(TEACHER), 3).sum().backward()
    for row, t in enumerate(TEACHER):
        top = set(sorted(range(len(t)), key=lambda v: -t[v])[:3])
        grad = student.grad[row, 0].tolist()
        assert all(grad[v] == 0 for v in range(len(t)) if v not in top) and any(grad[v] != 0 for v in top)


def test_cross_entropy_does_not_touch_the_logits():
    student = logits(STUDENT)
    before = student.clone()
    labels = torch.tensor([[2], [0]])
    got = vocab_parallel.cross_entropy(student, labels)
    expected = [-math.log(softmax(STUDENT[0])[2]), -math.log(softmax(STUDENT[1])[0])]
    assert got[:, 0].tolist() == pytest.approx(expected, abs=1e-12) and torch.equal(student, before)


def test_hidden_losses():
    student = torch.tensor([[[1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]]], dtype=torch.float64)  # [s=2, b=1, h=3]
    teacher = torch.tensor([[[0.0, 2.0, 0.0]], [[2.0, 2.0, 0.0]]], dtype=torch.float64)
    assert losses.hidden_loss("cosine", student, teacher)[:, 0].tolist() == pytest.approx([1.0, 0.0])
    assert losses.hidden_loss("mse", student, teacher)[:, 0].tolist() == pytest.approx([5 / 3, 2 / 3])
    projection = losses.make_projection(3, 5, seed=7)
    again = losses.make_projection(3, 5, seed=7)
    assert projection.weight.shape == (5, 3) and projection.bias is None
    assert torch.equal(projection.weight, again.weight)  # the seed alone decides: every rank and layout agree


def test_combine_rescales_the_hidden_loss_to_the_logit_loss():
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    logit = torch.tensor([[2.0, 100.0, 4.0]], requires_grad=True)
    hidden = torch.tensor([[0.5, 100.0, 0.25]], requires_grad=True)
    lm = torch.tensor([[1.0, 100.0, 3.0]], requires_grad=True)
    total, parts = losses.combine(mask, logit, [hidden], lm, lm_loss_weight=0.5)
    assert float(parts["kd"]) == 6.0 and float(parts["hidden"]) == 0.75 and float(parts["lm"]) == 4.0
    assert float(total) == pytest.approx(6.0 + 6.0 + 0.5 * 4.0)  # hidden x (6 / 0.75)
    total.backward()
    assert hidden.grad.tolist() == [[8.0, 0.0, 8.0]] and logit.grad.tolist() == [[1.0, 0.0, 1.0]]
    assert lm.grad.tolist() == [[0.5, 0.0, 0.5]]
    only_kd, parts = losses.combine(mask, logit, ())
    assert float(only_kd) == 6.0 and set(parts) == {"kd"}


def test_inplace_kl_after_cross_entropy_gives_the_same_gradients():
    """The distillation model computes the CE first, then lets the KL overwrite the logits with its gradient."""
    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 4, 40, generator=generator), torch.randn(2, 4, 40, generator=generator)
    labels = torch.randint(0, 40, (2, 4), generator=generator)
    results = []
    for inplace in (False, True):
        leaf = student.clone().requires_grad_()
        logits = leaf * 1.0  # a non-leaf, as the model's output
        ce = vocab_parallel.cross_entropy(logits, labels)
        kl = losses.forward_kl(logits, teacher, 1.5, inplace=inplace)
        (kl.sum() + 0.3 * ce.sum()).backward()
        results.append((kl.detach(), ce.detach(), leaf.grad))
        assert torch.equal(logits, student) != inplace  # overwritten only in place
    for expected, got in zip(*results):
        assert torch.allclose(expected, got, atol=1e-6, rtol=0)


def test_token_chunks_bound_the_temporaries_whatever_the_device():
    """At TP=1, 8192 tokens and Llama 3's vocabulary of 128256, one fp32 [tokens, vocab] tensor is 4.2 GB: the
    chunk size comes from the byte budget alone (no device in the rule), so a GPU gets chunks as a CPU does."""
    vocab, tokens, temporaries = 128256, 8192, vocab_parallel.KL_TEMPORARIES
    assert vocab_parallel.TEMPORARIES_BUDGET_BYTES == 1 << 30
    size = vocab_parallel.token_chunk_size(vocab, temporaries)
    assert size == (1 << 30) // (temporaries * 4 * vocab) == 523
    chunks = vocab_parallel.token_chunks(tokens, vocab, temporaries)
    assert len(chunks) == 16 and [c.start for c in chunks] == list(range(0, tokens, 523)) and chunks[-1].stop == tokens
    assert vocab_parallel.token_chunk_size(vocab, temporaries, element_bytes=8) == 261  # fp64 logits
    assert vocab_parallel.token_chunk_size(vocab, temporaries, budget_bytes=1) == 1  # at least one token
    assert len(vocab_parallel.token_chunks(10, 64, 1, budget_bytes=1 << 40)) == 1


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_forward_kl_in_many_chunks_equals_one_slice(temperature):
    generator = torch.Generator().manual_seed(5)
    student, teacher = torch.randn(7, 3, 64, generator=generator) * 3, torch.randn(7, 3, 64, generator=generator) * 3
    budget = 2 * vocab_parallel.KL_TEMPORARIES * 4 * 64  # two tokens a chunk
    assert len(vocab_parallel.token_chunks(21, 64, vocab_parallel.KL_TEMPORARIES, budget_bytes=budget)) == 11
    results = []
    for budget_bytes in (1 << 40, budget):  # one slice, then 11 chunks
        leaf = student.clone().requires_grad_()
        kl = vocab_parallel.forward_kl(leaf * 1.0, teacher, temperature, budget_bytes=budget_bytes)
        (kl * torch.linspace(0.5, 2.0, 21).view(7, 3)).sum().backward()
        results.append((kl.detach(), leaf.grad))
    (one_kl, one_grad), (chunked_kl, chunked_grad) = results
    assert one_kl.min() > 0.1  # far from zero: a real comparison
    assert torch.allclose(chunked_kl, one_kl, atol=1e-6, rtol=0)
    assert torch.allclose(chunked_grad, one_grad, atol=1e-6, rtol=0)
