"""The CPU compatibility layer: every patch finds its target in this Megatron-Core, and the code
paths it exists for run on CPU. A Megatron-Core upgrade that moves a target fails here, loudly."""

import importlib

import pytest
import torch

from minitron.parallel import cpu_compat

if torch.cuda.is_available():
    pytest.skip("the CPU compatibility layer is applied only on machines without a GPU", allow_module_level=True)


def test_every_patch_applies(megatron_world):
    applied = cpu_compat.applied()
    assert set(applied) == set(cpu_compat.PATCHES), applied
    assert torch.cuda.current_device() == "cpu"


@pytest.mark.parametrize("module_name", cpu_compat.CUDA_FACTORY_MODULES)
def test_cuda_factory_modules_still_hard_code_cuda_and_are_redirected(module_name, megatron_world):
    """Each listed module still creates tensors with device="cuda" (else drop it from the list) and
    now sees the CPU-mapping torch."""
    module = importlib.import_module(module_name)
    source = open(module.__file__).read()
    assert 'device="cuda"' in source or "device='cuda'" in source, f"{module_name} no longer hard-codes cuda"
    assert module.torch.zeros(2, device="cuda").device.type == "cpu"
    assert module.torch.float32 is torch.float32  # everything else is torch itself


def test_missing_target_fails_loudly(monkeypatch):
    monkeypatch.setattr(cpu_compat, "CUDA_FACTORY_MODULES", ("json",))  # no module-global torch
    with pytest.raises(cpu_compat.CpuCompatError, match="json no longer imports torch"):
        cpu_compat._patch_cuda_factories()


def test_rng_tracker_fork_is_a_null_context(megatron_world):
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    before = torch.get_rng_state()
    with get_cuda_rng_tracker().fork():
        pass
    assert torch.equal(before, torch.get_rng_state())


def test_tensor_type_reports_cuda_to_megatron_only(megatron_world):
    tensor = torch.zeros(2)
    assert tensor.type() == "torch.FloatTensor"  # callers outside megatron.core see the truth
    namespace = {"__name__": "megatron.core.optimizer.fake", "tensor": tensor}
    exec("result = tensor.type()", namespace)
    assert namespace["result"] == "torch.cuda.FloatTensor"
    assert tensor.type(torch.float64).dtype == torch.float64


def test_causal_mask_without_attention_mask_on_cpu(megatron_world):
    """transformer.utils builds the default causal mask with device='cuda'."""
    from megatron.core.transformer.utils import get_default_causal_mask

    mask = get_default_causal_mask(4)
    assert mask.device.type == "cpu" and mask.dtype == torch.bool
    assert torch.equal(mask, torch.triu(torch.ones(4, 4), diagonal=1).bool())


def test_no_cpu_patch_is_needed_on_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not set(cpu_compat.needed()) & set(cpu_compat.CPU_PATCHES)
