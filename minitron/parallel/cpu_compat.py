"""Megatron-Core without CUDA, and without Apex/Transformer Engine: the compatibility layer, in one place.

Megatron-Core 0.16 assumes CUDA in a few places. On a machine without a GPU, :func:`apply` patches
exactly those places so that the same code runs over gloo in fp32 (what we measured is in
``shared/docs/design.md``, "Megatron-Core on CPU"). :func:`minitron.parallel.setup_distributed` calls
:func:`apply` in every process; the CPU patches (:data:`CPU_PATCHES`) are applied only when
``torch.cuda.is_available()`` is false, never on a GPU machine.

Each patch checks that the thing it patches still exists and raises :class:`CpuCompatError` naming it
when it does not, so a Megatron-Core upgrade that moves one of them fails loudly (and the tests in
``tests/parallel/test_cpu_compat.py`` fail) instead of silently running CUDA code paths.

CPU patches:
  current_device   ``torch.cuda.current_device()`` -> ``"cpu"`` (Megatron passes it as ``device=``).
  synchronize      ``torch.cuda.synchronize()`` -> no-op.
  tensor_cuda      ``Tensor.cuda()`` -> identity (tied embeddings under PP call it).
  rng_fork         the CUDA RNG tracker's ``fork()`` -> a null context (it reads CUDA RNG states).
  rng_states       activation recomputation's RNG save/restore (``_get_all_rng_states`` /
                   ``_set_all_rng_states``) -> the CPU generator's state only (it reads CUDA RNG states).
  cuda_factories   modules that create tensors with a hard-coded ``device="cuda"`` see a ``torch``
                   whose factory functions map that device to CPU (see ``CUDA_FACTORY_MODULES``).
  tensor_type      ``Tensor.type()`` answers ``torch.cuda.FloatTensor`` for CPU tensors, to callers in
                   ``megatron.core`` only (the optimizer checks parameter types by that string).

Without Apex and Transformer Engine (no FusedAdam to import: :func:`torch_adamw_fallback`, on a GPU
machine as on CPU) Megatron-Core's optimizer falls back to ``torch.optim.AdamW``, and the distributed
optimizer's checkpoint load then needs three fixes (:data:`TORCH_ADAMW_PATCHES`; probe P4-P6, measured
with ``fully_reshardable``):
  distopt_init_state  ``sharded_state_dict(is_loading=True)`` on a fresh optimizer: create the Adam
                      state (and AdamW's ``step``) first; ``state_dict()`` asserts one common step.
  distopt_copy_state  copying loaded tensors into the live state: skip AdamW's ``step`` (the checkpoint
                      holds it in ``param_groups``, not per tensor) and copy under ``no_grad`` (the
                      fp32 main params are views of leaves that require grad).
  distopt_untie_step  after ``load_state_dict`` every parameter's state shares one ``step`` tensor,
                      which AdamW increments in place once per parameter: give each its own copy
                      (else Adam's bias correction is wrong after a resume).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types

import torch


class CpuCompatError(RuntimeError):
    """A patch target is gone: Megatron-Core changed, and this layer must be updated."""


# Modules that build tensors with a hard-coded device="cuda" on paths we use.
CUDA_FACTORY_MODULES = (
    "megatron.core.pipeline_parallel.schedules",  # total_num_tokens in every schedule
    "megatron.core.transformer.utils",  # causal mask when attention_mask is None
    "megatron.core.tensor_parallel.data",  # broadcast_data
    "megatron.core.utils",  # local_multi_tensor_l2_norm
    "megatron.core.optimizer.optimizer",  # found_inf, _scale
    "megatron.core.optimizer.clip_grads",  # grad norm buffers
)
_FACTORIES = (
    "zeros", "ones", "empty", "full", "tensor", "arange", "randn", "rand",
    "zeros_like", "ones_like", "empty_like", "full_like",
)  # fmt: skip

_applied: dict[str, str] = {}


def _is_cuda(device) -> bool:
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, torch.device) and device.type == "cuda"


class _CpuTorch(types.ModuleType):
    """Stands in for ``torch`` inside one Megatron module: factories map ``device="cuda"`` to CPU."""

    def __getattr__(self, name):
        return getattr(torch, name)


def _cpu_factory(factory):
    def make(*args, device=None, **kwargs):
        return factory(*args, device="cpu" if _is_cuda(device) else device, **kwargs)

    return make


_CPU_TORCH = _CpuTorch("torch")
for _name in _FACTORIES:
    setattr(_CPU_TORCH, _name, _cpu_factory(getattr(torch, _name)))


def _patch_cuda_factories() -> str:
    patched = []
    for name in CUDA_FACTORY_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "torch", None) is _CPU_TORCH:
            patched.append(name)
            continue
        if getattr(module, "torch", None) is not torch:
            raise CpuCompatError(f"cuda_factories: {name} no longer imports torch as a module global")
        module.torch = _CPU_TORCH
        patched.append(name)
    return f"{len(patched)} modules"


def _patch_rng_fork() -> str:
    from megatron.core.tensor_parallel import random as mcore_random

    trackers = [
        cls
        for cls in vars(mcore_random).values()
        if isinstance(cls, type) and "RNGStatesTracker" in cls.__name__ and hasattr(cls, "fork")
    ]
    if not trackers:
        raise CpuCompatError("rng_fork: no RNG states tracker with fork() in megatron.core.tensor_parallel.random")
    for cls in trackers:
        cls.fork = lambda self, name=None: contextlib.nullcontext()
    return ", ".join(cls.__name__ for cls in trackers)


def _patch_rng_states() -> str:
    from megatron.core.tensor_parallel import random as mcore_random

    for name in ("_get_all_rng_states", "_set_all_rng_states"):
        if not callable(getattr(mcore_random, name, None)):
            raise CpuCompatError(f"rng_states: megatron.core.tensor_parallel.random.{name} is gone")
    mcore_random._get_all_rng_states = lambda: (torch.get_rng_state(),)
    mcore_random._set_all_rng_states = lambda cpu_rng_state, *unused: torch.set_rng_state(cpu_rng_state)
    return "_get_all_rng_states, _set_all_rng_states"


def _megatron_type(original):
    def tensor_type(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None and not kwargs:
            name = original(self)
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if self.device.type == "cpu" and caller.startswith("megatron.core") and name.startswith("torch."):
                return "torch.cuda." + name[len("torch.") :]
            return name
        return original(self, dtype, non_blocking, **kwargs)

    tensor_type._minitron_original = original
    return tensor_type


def _patch_tensor_type() -> str:
    if not hasattr(torch.Tensor.type, "_minitron_original"):
        torch.Tensor.type = _megatron_type(torch.Tensor.type)
    return "Tensor.type"


def _patch_torch_cuda() -> str:
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda *args, **kwargs: None
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    return "current_device, synchronize, Tensor.cuda"


def _distributed_optimizer(method: str, patch: str):
    """The ``DistributedOptimizer`` class, after checking that ``method`` (the patch target) exists."""
    from megatron.core.optimizer import distrib_optimizer

    cls = getattr(distrib_optimizer, "DistributedOptimizer", None)
    if cls is None or not callable(getattr(cls, method, None)):
        raise CpuCompatError(f"{patch}: megatron.core.optimizer.distrib_optimizer.DistributedOptimizer.{method} gone")
    return cls


def _replace_method(cls, method: str, make) -> None:
    """Replace ``cls.method`` by ``make(original)`` once (idempotent across calls)."""
    original = getattr(cls, method)
    if not hasattr(original, "_minitron_original"):
        replacement = make(original)
        replacement._minitron_original = original
        setattr(cls, method, replacement)


def _patch_distopt_init_state() -> str:
    cls = _distributed_optimizer("sharded_state_dict", "distopt_init_state")

    def make(original):
        def sharded_state_dict(self, model_sharded_state_dict=None, is_loading=False, *args, **kwargs):
            init_state_fn = getattr(self, "init_state_fn", None)
            if is_loading and len(self.optimizer.state) == 0 and init_state_fn is not None:
                init_state_fn(self.optimizer, self.config)
                for state in self.optimizer.state.values():
                    state.setdefault("step", torch.tensor(0.0))
            if model_sharded_state_dict is None:
                model_sharded_state_dict = {}
            return original(self, model_sharded_state_dict, is_loading, *args, **kwargs)

        return sharded_state_dict

    _replace_method(cls, "sharded_state_dict", make)
    return "DistributedOptimizer.sharded_state_dict"


def _patch_distopt_copy_state() -> str:
    cls = _distributed_optimizer("_set_main_param_and_optimizer_states", "distopt_copy_state")

    def make(original):
        def set_states(self, model_param, tensors):
            if self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
                return original(self, model_param, tensors)
            group_index, group_order = self.model_param_group_index_map[model_param]
            main_param = self.optimizer.param_groups[group_index]["params"][group_order]
            with torch.no_grad():
                main_param.copy_(tensors["param"])
                for key, live in self.optimizer.state[main_param].items():
                    if key != "step":
                        live.copy_(tensors[key])

        return set_states

    _replace_method(cls, "_set_main_param_and_optimizer_states", make)
    return "DistributedOptimizer._set_main_param_and_optimizer_states"


def _patch_distopt_untie_step() -> str:
    cls = _distributed_optimizer("load_state_dict", "distopt_untie_step")

    def make(original):
        def load_state_dict(self, state_dict):
            with torch.no_grad():
                original(self, state_dict)
            for state in self.optimizer.state.values():
                if isinstance(state.get("step"), torch.Tensor):
                    state["step"] = state["step"].clone()

        return load_state_dict

    _replace_method(cls, "load_state_dict", make)
    return "DistributedOptimizer.load_state_dict"


def torch_adamw_fallback() -> bool:
    """True when Megatron-Core's optimizers are torch's Adam/AdamW: neither Transformer Engine's nor Apex's
    ``FusedAdam`` imports. Read from ``HAVE_APEX_OR_TE`` of ``megatron.core.optimizer.distrib_optimizer``, the
    flag on which the distributed optimizer's (de)serialisation of ``step`` branches (it is set by the same
    imports as ``USING_PYTORCH_OPTIMIZER`` of ``megatron.core.optimizer``, which picks the optimizer class)."""
    from megatron.core.optimizer import distrib_optimizer

    have_fused_adam = getattr(distrib_optimizer, "HAVE_APEX_OR_TE", None)
    if not isinstance(have_fused_adam, bool):
        raise CpuCompatError(
            "torch_adamw_fallback: megatron.core.optimizer.distrib_optimizer.HAVE_APEX_OR_TE gone; "
            "find how this Megatron-Core chooses between FusedAdam and torch's AdamW"
        )
    return not have_fused_adam


CPU_PATCHES = {
    "torch_cuda": _patch_torch_cuda,
    "rng_fork": _patch_rng_fork,
    "rng_states": _patch_rng_states,
    "cuda_factories": _patch_cuda_factories,
    "tensor_type": _patch_tensor_type,
}
TORCH_ADAMW_PATCHES = {
    "distopt_init_state": _patch_distopt_init_state,
    "distopt_copy_state": _patch_distopt_copy_state,
    "distopt_untie_step": _patch_distopt_untie_step,
}
PATCHES = {**CPU_PATCHES, **TORCH_ADAMW_PATCHES}


def needed() -> dict:
    """The patches this process needs: the CPU ones without a GPU, the torch-AdamW ones on its fallback."""
    patches = {} if torch.cuda.is_available() else dict(CPU_PATCHES)
    if torch_adamw_fallback():
        patches.update(TORCH_ADAMW_PATCHES)
    return patches


def apply() -> dict[str, str]:
    """Apply every :func:`needed` patch once (idempotent); returns {patch: what it patched}."""
    for name, patch in needed().items():
        if name not in _applied:
            _applied[name] = patch()
    return dict(_applied)


def applied() -> dict[str, str]:
    """The patches applied in this process."""
    return dict(_applied)
