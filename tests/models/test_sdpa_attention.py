"""SDPA core attention equals Megatron-Core's local DotProductAttention on the same weights."""

import torch

from minitron.models.arch import load_arch


def test_sdpa_equals_local_attention(tiny_models, megatron_world):
    from minitron.eval.forward import full_logits
    from minitron.models.megatron_gpt import build_gpt_model

    arch = load_arch(tiny_models["odd"])  # GQA with 2 heads per group
    sdpa = build_gpt_model(arch, attention="auto").eval()
    local = build_gpt_model(arch, attention="local").eval()
    local.load_state_dict(sdpa.state_dict())
    assert type(sdpa.decoder.layers[0].self_attention.core_attention).__name__ == "SDPAttention"
    assert type(local.decoder.layers[0].self_attention.core_attention).__name__ == "DotProductAttention"
    tokens = torch.randint(0, arch.vocab_size, (2, 33), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(full_logits(sdpa, tokens), full_logits(local, tokens), rtol=0, atol=1e-5)
    # an explicit causal mask (Megatron convention: True = masked) gives the same result
    device = next(sdpa.parameters()).device
    tokens = tokens.to(device)
    positions = torch.arange(33, device=device).unsqueeze(0).expand(2, -1)
    mask = torch.triu(torch.ones(1, 1, 33, 33, dtype=torch.bool, device=device), diagonal=1)
    with torch.no_grad():
        torch.testing.assert_close(sdpa(tokens, positions, mask), sdpa(tokens, positions, None), rtol=0, atol=1e-6)
