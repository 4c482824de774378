"""Random-number-generator states of this process: captured into checkpoints, restored on resume.

Each rank has its own streams (Python ``random``, NumPy, torch CPU, and on GPU the CUDA generator and
Megatron's model-parallel RNG tracker), so a checkpoint stores one entry per global rank. They only
mean something in the layout that made them: on a resume into another TP/PP/DP layout they are not
restored (the data order does not depend on them; it comes from ``consumed_samples``).
"""

from __future__ import annotations

import random

import numpy as np
import torch


def capture() -> dict:
    """This process's RNG states."""
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

        states["cuda"] = torch.cuda.get_rng_state()
        states["tracker"] = get_cuda_rng_tracker().get_states()
    return states


def restore(states: dict) -> None:
    """Set this process's RNG states from :func:`capture`'s result."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and "cuda" in states:
        from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

        torch.cuda.set_rng_state(states["cuda"])
        get_cuda_rng_tracker().set_states(states["tracker"])


def sharded(rank: int, world_size: int, states: dict | None = None):
    """The states as a Megatron ``ShardedObject``: entry ``rank`` of ``world_size`` (one per process)."""
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return ShardedObject("rng_state", capture() if states is None else states, (world_size,), (rank,), replica_id=0)
