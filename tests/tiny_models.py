"""Tiny random Hugging Face models of each supported family, made in the tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

# family -> config overrides; each exercises one feature of the mapping
FAMILIES = {
    # Llama 3.1 with its rope scaling (non-default factors, to catch hard-coded values)
    "llama31": dict(
        model_type="llama", hidden_size=64, intermediate_size=160, num_attention_heads=4,
        num_key_value_heads=2, rope_theta=500000.0, max_position_embeddings=256,
        rope_scaling=dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=2.0,
                          original_max_position_embeddings=32),
    ),
    # Qwen2: bias on q, k, v
    "qwen2": dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, rope_theta=1e6, max_position_embeddings=256),
    # SmolLM2-like: tied embeddings
    "smollm2": dict(model_type="llama", hidden_size=96, intermediate_size=256, num_attention_heads=6,
                    num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e5, max_position_embeddings=256),
    # odd sizes: 6 heads in 3 query groups, head_dim 16 != hidden/heads
    "odd": dict(model_type="mistral", hidden_size=72, intermediate_size=120, num_attention_heads=6,
                num_key_value_heads=3, head_dim=16, rope_theta=10000.0, max_position_embeddings=256,
                sliding_window=None, vocab_size=258),  # 258 = 2 x 3 x 43: splits at TP=2 and TP=3
}  # fmt: skip


def make_tiny_model(family: str, out_dir: Path, num_layers: int = 4, vocab_size: int = 256, seed: int = 0,
                    dtype: torch.dtype = torch.float32, **config) -> Path:
    """Save a random tiny HF model of ``family`` to ``out_dir`` (weights, config; no tokenizer); ``config``
    replaces entries of the family's config (e.g. ``num_attention_heads=16``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    overrides = {**FAMILIES[family], **config}
    model_type = overrides.pop("model_type")
    vocab_size = overrides.pop("vocab_size", vocab_size)
    config = AutoConfig.for_model(model_type, num_hidden_layers=num_layers, vocab_size=vocab_size,
                                  rms_norm_eps=1e-6, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():  # HF initialises norms to 1 and biases to 0: randomise them so the mapping is tested
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(out_dir)
    return Path(out_dir)


def save_char_tokenizer(out_dir: Path) -> None:
    """A character tokenizer of exactly 256 tokens (code points 0-255, others map to 0) as HF files."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(vocab={chr(i): i for i in range(256)}, unk_token=chr(0)))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=chr(10)).save_pretrained(out_dir)


def make_peaked_teacher(out_dir: Path, num_layers: int = 4, seed: int = 1) -> Path:
    """A SmolLM2-like teacher (hidden 96, tied embeddings, the 256-character tokenizer) with confident predictions.

    A random model predicts nearly uniformly; the embeddings are scaled x3 so that its next-token
    distributions are peaked and far from a random student's (KL clearly above zero)."""
    from transformers import AutoModelForCausalLM

    make_tiny_model("smollm2", out_dir, num_layers=num_layers, seed=seed)
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(3.0)
    model.save_pretrained(out_dir)
    save_char_tokenizer(out_dir)
    return Path(out_dir)
