"""The distributed optimizer's checkpoint-load fixes for torch's AdamW (:mod:`minitron.parallel.cpu_compat`) are
installed whenever Megatron-Core falls back to torch's AdamW (neither Transformer Engine's nor Apex's FusedAdam
imports), with or without a GPU; the CPU patches only without one. Resuming with them is exact: see
``tests/training/test_parallel.py::test_killed_run_resumes_bit_identically[dp2-distopt]``."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, clean_env
from minitron.parallel import cpu_compat

# a fresh process that sees a GPU (torch.cuda.is_available() -> True, nothing else changed) installs the patches
INSTALL_WITH_A_GPU = """
import json, torch
torch.cuda.is_available = lambda: True
from megatron.core.optimizer import distrib_optimizer
from minitron.parallel import cpu_compat
applied = cpu_compat.apply()
replaced = [m for m in ("sharded_state_dict", "_set_main_param_and_optimizer_states", "load_state_dict")
            if hasattr(getattr(distrib_optimizer.DistributedOptimizer, m), "_minitron_original")]
print(json.dumps({"applied": sorted(applied), "replaced": replaced, "fallback": not distrib_optimizer.HAVE_APEX_OR_TE,
                  "current_device_patched": torch.cuda.current_device.__name__ == "<lambda>"}))
"""


def test_this_megatron_falls_back_to_torch_adamw():
    from megatron.core import optimizer
    from megatron.core.optimizer import distrib_optimizer

    assert cpu_compat.torch_adamw_fallback() is (not distrib_optimizer.HAVE_APEX_OR_TE)
    if cpu_compat.torch_adamw_fallback():
        assert optimizer.Adam is __import__("torch").optim.AdamW  # what megatron.core.optimizer builds


def test_fixes_follow_the_fallback_not_the_gpu():
    result = subprocess.run([sys.executable, "-c", INSTALL_WITH_A_GPU], capture_output=True, text=True, check=False,
                            cwd=REPO, env=clean_env({"PYTHONPATH": str(REPO)}), timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["fallback"] is True  # this environment: no Transformer Engine, no Apex
    assert report["applied"] == sorted(cpu_compat.TORCH_ADAMW_PATCHES)  # and none of the CPU patches
    assert report["replaced"] == ["sharded_state_dict", "_set_main_param_and_optimizer_states", "load_state_dict"]
    assert report["current_device_patched"] is False


def test_a_moved_fallback_flag_fails_loudly(monkeypatch):
    from megatron.core.optimizer import distrib_optimizer

    monkeypatch.delattr(distrib_optimizer, "HAVE_APEX_OR_TE")
    with pytest.raises(cpu_compat.CpuCompatError, match="HAVE_APEX_OR_TE"):
        cpu_compat.torch_adamw_fallback()
