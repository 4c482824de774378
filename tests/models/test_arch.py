"""Architecture description: parsing HF configs, exact parameter counts, FLOPs, RoPE frequencies."""

import pytest
import torch

from conftest import FAMILIES
from minitron.errors import MinitronError
from minitron.models.arch import arch_from_hf_config, load_arch


@pytest.mark.parametrize("family", list(FAMILIES))
def test_param_counts_equal_transformers(family, tiny_models):
    from transformers import AutoModelForCausalLM

    arch = load_arch(tiny_models[family])
    model = AutoModelForCausalLM.from_pretrained(tiny_models[family])
    assert arch.params == sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    if not arch.tie_word_embeddings:
        embedding += model.get_output_embeddings().weight.numel()
    assert arch.embedding_params == embedding
    assert arch.non_embedding_params == arch.params - embedding


def test_smollm2_135m_published_count():
    """SmolLM2-135M: 30 layers, 576 hidden, 9x64 heads in 3 groups, FFN 1536, tied 49152 vocab."""
    arch = arch_from_hf_config(dict(
        model_type="llama", num_hidden_layers=30, hidden_size=576, intermediate_size=1536, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
        max_position_embeddings=8192,
    ))  # fmt: skip
    assert arch.params == 134_515_008
    assert arch.embedding_params == 49152 * 576


def test_family_flags(tiny_models):
    assert load_arch(tiny_models["qwen2"]).qkv_bias
    assert load_arch(tiny_models["smollm2"]).tie_word_embeddings
    odd = load_arch(tiny_models["odd"])
    assert (odd.num_attention_heads, odd.num_query_groups, odd.head_dim) == (6, 3, 16)
    assert load_arch(tiny_models["llama31"]).rope_scaling["rope_type"] == "llama3"


def test_rope_frequencies_equal_transformers(tiny_models):
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for family in ("llama31", "smollm2"):
        config = AutoConfig.from_pretrained(tiny_models[family])
        rope_type = config.rope_parameters.get("rope_type", "default")
        if rope_type == "default":
            from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

            expected, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
        else:
            expected, _ = ROPE_INIT_FUNCTIONS[rope_type](config, None)
        torch.testing.assert_close(load_arch(tiny_models[family]).rope_inv_freq(), expected, rtol=0, atol=0)


def test_flops_per_token():
    arch = arch_from_hf_config(dict(
        model_type="llama", num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=100,
    ))  # fmt: skip
    attn_linear = 64 * (64 + 2 * 32) + 64 * 64  # q,k,v (head_dim 16, 2 groups) + o
    mlp = 3 * 64 * 128
    flops = arch.flops_per_token(seq_length=10)
    assert flops["forward"] == 2 * (2 * (attn_linear + mlp) + 100 * 64) + 4 * 2 * 10 * 4 * 16
    assert flops["train"] == 3 * flops["forward"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"model_type": "gpt2"}, "unsupported architecture"),
        ({"num_key_value_heads": 3}, "not divisible by num_query_groups"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn' is not supported"),
        ({"num_hidden_layers": None}, "num_hidden_layers"),
        ({"num_attention_heads": 0}, "config.json: num_attention_heads=0: must be >= 1"),
        ({"num_key_value_heads": 0}, "config.json: num_key_value_heads=0: must be >= 1"),
        ({"head_dim": 0}, "config.json: head_dim=0: must be >= 1"),
        ({"num_hidden_layers": 0}, "config.json: num_hidden_layers=0: must be >= 1"),
        ({"hidden_size": -64}, "config.json: hidden_size=-64: must be >= 1"),
        ({"intermediate_size": 0}, "config.json: intermediate_size=0: must be >= 1"),
        ({"vocab_size": 0}, "config.json: vocab_size=0: must be >= 1"),
        ({"head_dim": 15}, "config.json: head_dim=15: must be even"),
        ({"max_position_embeddings": -1}, "config.json: max_position_embeddings=-1: must be >= 1"),
        ({"rms_norm_eps": 0}, "config.json: rms_norm_eps=0.0: must be > 0"),
        ({"rope_theta": -1.0}, "config.json: rope_theta=-1.0: must be > 0"),
        ({"hidden_size": "wide"}, "config.json: a size is not an integer"),
        ({"rms_norm_eps": "tiny"}, "config.json: rms_norm_eps or sliding_window is not a number"),
    ],
)
def test_bad_configs(change, message):
    config = dict(model_type="llama", num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=100)  # fmt: skip
    config.update(change)
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(MinitronError) as err:
        arch_from_hf_config(config)
    assert message in str(err.value)


def test_malformed_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(MinitronError, match="malformed JSON"):
        load_arch(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(MinitronError, match="no config.json"):
        load_arch(tmp_path)
