"""Pruning surgery: a plan applied to HF tensors gives exactly the hand-sliced model."""

import dataclasses
import json

import pytest
import torch

from minitron.errors import MinitronError
from minitron.models.checkpoint import open_model
from minitron.prune.plan import PruneTargets, plan_pruning
from minitron.prune.scores import ImportanceScores
from minitron.prune.surgery import write_pruned_hf


def random_scores(arch, seed=0) -> ImportanceScores:
    gen = torch.Generator().manual_seed(seed)
    L = arch.num_layers
    return ImportanceScores(
        hidden=torch.rand(arch.hidden_size, generator=gen), ffn=torch.rand(L, arch.ffn_hidden_size, generator=gen),
        heads=torch.rand(L, arch.num_attention_heads, generator=gen),
        groups=torch.rand(L, arch.num_query_groups, generator=gen), block_influence=torch.rand(L, generator=gen),
        layer_loss=torch.rand(L, generator=gen), window_loss={k: torch.rand(L - k + 1, generator=gen) for k in (1, 2)},
    )  # fmt: skip


def prune_to(tmp_path, model_dir, targets, scores=None):
    source = open_model(model_dir)
    plan = plan_pruning(source.arch, scores or random_scores(source.arch), targets)
    out = tmp_path / "student"
    out.mkdir()
    write_pruned_hf(source, plan, out)
    return plan, out


def logits(model_dir, tokens):
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(tokens).logits


TOKENS = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("family", ["qwen2", "smollm2"])
def test_pruning_to_original_sizes_is_the_identity(family, tiny_models, tmp_path):
    from safetensors.torch import load_file

    plan, out = prune_to(tmp_path, tiny_models[family], PruneTargets())
    source, student = load_file(tiny_models[family] / "model.safetensors"), load_file(out / "model.safetensors")
    assert sorted(source) == sorted(student)
    assert all(torch.equal(source[k], student[k]) for k in source)
    assert torch.equal(logits(tiny_models[family], TOKENS), logits(out, TOKENS))


def hand_sliced_reference(source_dir, plan):
    """The student built in the test from the source's transformers modules and the kept indices."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source = AutoModelForCausalLM.from_pretrained(source_dir, dtype=torch.float32)
    s = plan.student
    config = AutoConfig.from_pretrained(source_dir)
    config.update(dict(hidden_size=s.hidden_size, intermediate_size=s.ffn_hidden_size, num_hidden_layers=s.num_layers,
                       num_attention_heads=s.num_attention_heads, num_key_value_heads=s.num_query_groups,
                       head_dim=s.head_dim))  # fmt: skip
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in plan.layers]
    student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    d, hid = s.head_dim, plan.hidden
    with torch.no_grad():
        student.model.embed_tokens.weight.copy_(source.model.embed_tokens.weight[:, hid])
        student.model.norm.weight.copy_(source.model.norm.weight[hid])
        if not s.tie_word_embeddings:
            student.lm_head.weight.copy_(source.lm_head.weight[:, hid])
        for j, i in enumerate(plan.layers):
            a, b = source.model.layers[i], student.model.layers[j]
            q = torch.cat([a.self_attn.q_proj.weight[h * d:(h + 1) * d] for h in plan.heads[j].tolist()])
            k = torch.cat([a.self_attn.k_proj.weight[g * d:(g + 1) * d] for g in plan.groups[j].tolist()])
            v = torch.cat([a.self_attn.v_proj.weight[g * d:(g + 1) * d] for g in plan.groups[j].tolist()])
            b.self_attn.q_proj.weight.copy_(q[:, hid])
            b.self_attn.k_proj.weight.copy_(k[:, hid])
            b.self_attn.v_proj.weight.copy_(v[:, hid])
            if a.self_attn.q_proj.bias is not None:
                b.self_attn.q_proj.bias.copy_(torch.cat([a.self_attn.q_proj.bias[h * d:(h + 1) * d] for h in plan.heads[j].tolist()]))
                b.self_attn.k_proj.bias.copy_(torch.cat([a.self_attn.k_proj.bias[g * d:(g + 1) * d] for g in plan.groups[j].tolist()]))
                b.self_attn.v_proj.bias.copy_(torch.cat([a.self_attn.v_proj.bias[g * d:(g + 1) * d] for g in plan.groups[j].tolist()]))
            o = torch.cat([a.self_attn.o_proj.weight[:, h * d:(h + 1) * d] for h in plan.heads[j].tolist()], dim=1)
            b.self_attn.o_proj.weight.copy_(o[hid])
            b.input_layernorm.weight.copy_(a.input_layernorm.weight[hid])
            b.post_attention_layernorm.weight.copy_(a.post_attention_layernorm.weight[hid])
            b.mlp.gate_proj.weight.copy_(a.mlp.gate_proj.weight[plan.ffn[j]][:, hid])
            b.mlp.up_proj.weight.copy_(a.mlp.up_proj.weight[plan.ffn[j]][:, hid])
            b.mlp.down_proj.weight.copy_(a.mlp.down_proj.weight[hid][:, plan.ffn[j]])
    return student


@pytest.mark.parametrize(
    "family,targets",
    [
        ("odd", PruneTargets(hidden_size=48, ffn_hidden_size=64, num_attention_heads=4, num_query_groups=2, num_layers=3)),
        ("qwen2", PruneTargets(hidden_size=48, ffn_hidden_size=96, num_attention_heads=2, drop_layers=[1, 2])),
        ("smollm2", PruneTargets(hidden_size=72, num_attention_heads=4, num_layers=2, depth_metric="block_influence")),
    ],
)
def test_pruned_model_equals_hand_sliced_reference(family, targets, tiny_models, tmp_path):
    plan, out = prune_to(tmp_path, tiny_models[family], targets)
    reference = hand_sliced_reference(tiny_models[family], plan)
    with torch.no_grad():
        expected = reference(TOKENS).logits
    torch.testing.assert_close(logits(out, TOKENS), expected, rtol=0, atol=1e-5)
    # exact parameter count, and the architecture written to config.json
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(out)
    assert plan.student.params == sum(p.numel() for p in student.parameters())
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (plan.student.hidden_size, plan.student.num_layers)


def test_student_runs_in_minitron_like_in_transformers(tiny_models, tmp_path, megatron_world):
    from minitron.eval.forward import full_logits
    from minitron.models.checkpoint import load_model

    _, out = prune_to(tmp_path, tiny_models["odd"], PruneTargets(hidden_size=48, num_attention_heads=3, num_layers=2))
    model = load_model(open_model(out), 1, 1, torch.float32).eval()
    torch.testing.assert_close(full_logits(model, TOKENS), logits(out, TOKENS), rtol=0, atol=1e-4)


def test_heads_ranked_within_groups_and_layers_by_window(tiny_models):
    arch = open_model(tiny_models["odd"]).arch  # 6 heads in 3 groups, 4 layers
    scores = random_scores(arch)
    scores.heads[0] = torch.tensor([0.1, 0.9, 0.8, 0.2, 0.5, 0.4])
    scores.window_loss[2] = torch.tensor([3.0, 1.0, 2.0])  # dropping layers 1-2 hurts least
    plan = plan_pruning(arch, scores, PruneTargets(num_attention_heads=3, num_layers=2))
    assert plan.layers == [0, 3]
    assert plan.heads[0].tolist() == [1, 2, 4]  # the best head of each group, in group order


@pytest.mark.parametrize(
    "targets,message",
    [
        (dict(hidden_size=100), "prune.hidden_size=100 is larger than the source's hidden_size=72"),
        (dict(num_attention_heads=4), "prune.num_attention_heads=4 is not divisible by num_query_groups=3"),
        (dict(hidden_size=50), "prune.hidden_size=50 is not a multiple of num_attention_heads=6"),
        (dict(drop_layers=[7]), "prune.drop_layers: unknown layer index 7"),
        (dict(num_layers=1), "no contiguous-window losses for 3 layers"),
        (dict(ranking="best"), "prune.ranking='best'"),  # refused by the schema itself
    ],
)
def test_bad_targets(targets, message, tiny_models):
    arch = open_model(tiny_models["odd"]).arch
    with pytest.raises(MinitronError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        plan_pruning(arch, random_scores(arch), PruneTargets(**targets))


def test_sizes_not_divisible_by_tp(tiny_models):
    arch = open_model(tiny_models["odd"]).arch
    with pytest.raises(MinitronError, match=r"prune\.num_query_groups=3 is not divisible by parallel\.tp=2"):
        plan_pruning(arch, random_scores(arch), PruneTargets(), tp=2)


def test_random_ranking_is_seeded(tiny_models):
    arch = open_model(tiny_models["odd"]).arch
    scores = random_scores(arch)
    a = plan_pruning(arch, scores, PruneTargets(ffn_hidden_size=60, ranking="random", seed=1))
    b = plan_pruning(arch, scores, PruneTargets(ffn_hidden_size=60, ranking="random", seed=1))
    c = plan_pruning(arch, scores, PruneTargets(ffn_hidden_size=60, ranking="random", seed=2))
    imp = plan_pruning(arch, scores, PruneTargets(ffn_hidden_size=60))
    assert torch.equal(a.ffn[0], b.ffn[0]) and not torch.equal(a.ffn[0], c.ffn[0])
    assert not torch.equal(a.ffn[0], imp.ffn[0])
    assert dataclasses.asdict(a.student) == dataclasses.asdict(imp.student)
