"""The search space and its analytic rung: the enumeration equals a brute-force product of all sizes filtered by
the rules and the budget; every candidate's counts equal those of the model actually built from it."""

import itertools
import math

import pytest
import torch

from minitron.config.prune import BudgetTarget, SearchSettings
from minitron.errors import MinitronError
from minitron.models.checkpoint import open_model
from minitron.prune.search_space import check_budget, enumerate_candidates, feasible, source_candidate

SEARCH = SearchSettings(hidden_size_divisor=8, ffn_hidden_size_divisor=16, heads_per_group_divisor=1,
                        num_query_groups_divisor=1, num_layers_divisor=1, max_width_pruning=0.5,
                        max_query_groups_pruning=0.5, max_depth_pruning=0.5)  # fmt: skip


def closed_form_params(arch, hidden, ffn, heads, groups, layers):
    """Parameters of a Llama block stack written out here (the oracle): embeddings, per-layer q/k/v/o, biases,
    SwiGLU, two norms, the final norm."""
    d = arch.head_dim
    attention = hidden * heads * d * 2 + hidden * groups * d * 2 + ((heads + 2 * groups) * d if arch.qkv_bias else 0)
    per_layer = attention + 3 * hidden * ffn + 2 * hidden
    embedding = arch.vocab_size * hidden * (1 if arch.tie_word_embeddings else 2)
    return embedding, layers * per_layer + hidden


def brute_force(arch, search, budget_params, tolerance):
    """Every integer shape up to the source's, kept by the rules spelled out one by one, then by the budget."""
    per_group_src = arch.num_attention_heads // arch.num_query_groups
    rules = [(arch.hidden_size, search.hidden_size_divisor, search.max_width_pruning),
             (arch.ffn_hidden_size, search.ffn_hidden_size_divisor, search.max_width_pruning),
             (per_group_src, search.heads_per_group_divisor, search.max_width_pruning),
             (arch.num_query_groups, search.num_query_groups_divisor, search.max_query_groups_pruning),
             (arch.num_layers, search.num_layers_divisor, search.max_depth_pruning)]  # fmt: skip

    def allowed(value, rule):
        source, divisor, fraction = rule
        return (source - value) % divisor == 0 and value >= (1 - fraction) * source

    kept = set()
    for hidden, ffn, per_group, groups, layers in itertools.product(
        range(1, arch.hidden_size + 1), range(1, arch.ffn_hidden_size + 1), range(1, per_group_src + 1),
        range(1, arch.num_query_groups + 1), range(1, arch.num_layers + 1),
    ):  # fmt: skip
        if not all(allowed(v, r) for v, r in zip((hidden, ffn, per_group, groups, layers), rules)):
            continue
        heads = per_group * groups
        if hidden % heads:
            continue
        embedding, non_embedding = closed_form_params(arch, hidden, ffn, heads, groups, layers)
        if (1 - tolerance) * budget_params <= embedding + non_embedding <= budget_params:
            kept.add((hidden, ffn, heads, groups, layers))
    return kept


@pytest.mark.parametrize("family", ["llama31", "smollm2", "qwen2"])
def test_enumeration_equals_brute_force(family, tiny_models):
    arch = open_model(tiny_models[family]).arch
    source = closed_form_params(arch, arch.hidden_size, arch.ffn_hidden_size, arch.num_attention_heads,
                                arch.num_query_groups, arch.num_layers)  # fmt: skip
    budget = BudgetTarget(params=0.7 * sum(source), tolerance=0.1)
    found = {(c.hidden_size, c.ffn_hidden_size, c.num_attention_heads, c.num_query_groups, c.num_layers)
             for c in feasible(enumerate_candidates(arch, SEARCH, budget), source_candidate(arch, budget), budget)}  # fmt: skip
    expected = brute_force(arch, SEARCH, budget.params, budget.tolerance)
    assert found == expected and len(expected) > 10


@pytest.mark.parametrize("family", ["llama31", "smollm2", "qwen2"])
def test_every_candidate_counts_as_the_built_model(family, tiny_models):
    """Each candidate's params / non-embedding params equal the transformers model built from its shape (on the
    meta device: no memory), and its memory and FLOPs equal the closed forms."""
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = open_model(tiny_models[family]).arch
    budget = BudgetTarget(memory_gb=1.0, memory_batch_size=3, memory_seq_length=100)
    candidates = enumerate_candidates(arch, SEARCH, budget)
    assert len(candidates) > 50
    for c in candidates:
        config = AutoConfig.from_pretrained(tiny_models[family])
        config.update(dict(hidden_size=c.hidden_size, intermediate_size=c.ffn_hidden_size, num_hidden_layers=c.num_layers,
                           num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_query_groups,
                           head_dim=arch.head_dim))  # fmt: skip
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[: c.num_layers]
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        built = sum(p.numel() for p in model.parameters())  # tied weights are counted once
        embedding = model.get_input_embeddings().weight.numel()
        if not arch.tie_word_embeddings:
            embedding += model.get_output_embeddings().weight.numel()
        assert (c.params, c.non_embedding_params) == (built, built - embedding), c.name
        kv = 2 * c.num_layers * c.num_query_groups * arch.head_dim * 3 * 100
        assert c.memory_gb == 2 * (built + kv) / 1e9
        # ModelArch.flops_per_token's convention: 2 x every linear parameter (q/k/v biases included) + the LM head
        linear = built - embedding - c.num_layers * 2 * c.hidden_size - c.hidden_size + arch.vocab_size * c.hidden_size
        assert c.flops_per_token == 2 * linear + 4 * c.num_layers * 100 * c.num_attention_heads * arch.head_dim


def test_budget_refusals(tiny_models):
    arch = open_model(tiny_models["smollm2"]).arch
    with pytest.raises(MinitronError, match=r"prune.target.params=1e\+09 is not smaller than the model's"):
        check_budget(arch, SEARCH, BudgetTarget(params=1e9))
    with pytest.raises(MinitronError) as info:
        check_budget(arch, SEARCH, BudgetTarget(non_embedding_params=1000))
    message = str(info.value)
    assert "no candidate of the search space within [950, 1,000]" in message
    assert "hidden_size 48..96" in message and "num_layers 2..4" in message and "the closest is L2-" in message
    with pytest.raises(MinitronError, match="prune.search.hidden_size_divisor=7 does not divide the model's hidden_size=96"):
        check_budget(arch, SearchSettings(hidden_size_divisor=7), BudgetTarget(params=1000))
    chosen = check_budget(arch, SEARCH, BudgetTarget(non_embedding_params=0.5 * source_candidate(arch, BudgetTarget()).non_embedding_params))
    assert all(a.non_embedding_params >= b.non_embedding_params for a, b in zip(chosen, chosen[1:]))
    assert math.isclose(chosen[0].metric("speedup", chosen[0]), 1.0)
