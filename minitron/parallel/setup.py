"""Start torch.distributed and Megatron-Core's model-parallel state for a TP x PP x DP layout.

Under ``torchrun`` the rendezvous comes from its environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``...); a plain ``python``/``minitron`` run is a world of one process. On GPU the backend
is NCCL with one device per local rank; without a GPU it is gloo. The compatibility layer
(:mod:`minitron.parallel.cpu_compat`) applies what this process needs: its CPU patches without a GPU, its
distributed-optimizer fixes wherever Megatron-Core falls back to torch's AdamW.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import socket
from typing import Iterator, Optional

import torch

from minitron.errors import MinitronError


@dataclasses.dataclass(frozen=True)
class ParallelContext:
    """Where this process sits in the layout."""

    tp: int  # tensor-parallel size
    pp: int  # pipeline-parallel size
    dp: int  # data-parallel size (world / (tp * pp))
    rank: int  # global rank
    world_size: int
    device: torch.device  # cuda:<local_rank> or cpu

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (a one-node rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_parallel_size(world_size: int, tp: int, pp: int) -> int:
    """``world_size / (tp * pp)``; refuses a layout that does not fit ``world_size`` processes."""
    if tp < 1 or pp < 1:
        raise MinitronError(f"parallel.tp={tp}, parallel.pp={pp}: both must be >= 1")
    if world_size % (tp * pp):
        hint = (
            f"run under `torchrun --nproc-per-node {tp * pp}` (or a multiple of it for data parallelism)"
            if world_size < tp * pp
            else f"use a number of processes divisible by {tp * pp}"
        )
        raise MinitronError(
            f"parallel.tp={tp} x parallel.pp={pp} needs a multiple of {tp * pp} processes, "
            f"but there are {world_size}: {hint}"
        )
    return world_size // (tp * pp)


def setup_distributed(tp: int = 1, pp: int = 1, seed: int = 1234) -> ParallelContext:
    """Initialise the process group and Megatron's parallel state; idempotent within a process."""
    from megatron.core import parallel_state

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    dp = data_parallel_size(world_size, tp, pp)
    use_gpu = torch.cuda.is_available()
    if not torch.distributed.is_initialized():
        if use_gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        launched = "RANK" in os.environ and "MASTER_ADDR" in os.environ  # torchrun, Slurm wrapper
        torch.distributed.init_process_group(
            backend="nccl" if use_gpu else "gloo",
            timeout=datetime.timedelta(minutes=30),
            # a plain one-process run: a private rendezvous that leaves the environment untouched
            **({} if launched else dict(init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)),
        )
    from minitron.parallel import cpu_compat

    cpu_compat.apply()  # CPU patches without a GPU; the torch-AdamW checkpoint fixes with or without one
    if parallel_state.model_parallel_is_initialized():
        if (
            parallel_state.get_tensor_model_parallel_world_size() != tp
            or parallel_state.get_pipeline_model_parallel_world_size() != pp
        ):
            parallel_state.destroy_model_parallel()
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp
        )
    if use_gpu:
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(seed)
    torch.manual_seed(seed)
    return ParallelContext(
        tp=tp,
        pp=pp,
        dp=dp,
        rank=torch.distributed.get_rank(),
        world_size=world_size,
        device=torch.device("cuda", torch.cuda.current_device()) if use_gpu else torch.device("cpu"),
    )


def teardown_distributed() -> None:
    """Destroy Megatron's parallel state and the process group (end of a command)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def output_lock(output, name: Optional[str] = None) -> Iterator[None]:
    """Hold :func:`minitron.fsutil.output_lock` on ``output`` for the block, for all ranks of this world.

    Rank 0 alone takes the lock (one writer per output, however many processes it has); whether it got it is
    broadcast, so that when another writer holds it every rank raises the same MinitronError (rank 0 prints
    it) and none goes on. Call after :func:`setup_distributed`, on every rank; without a process group this
    is the plain lock."""
    from minitron import fsutil

    distributed = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    is_main = not distributed or torch.distributed.get_rank() == 0
    with contextlib.ExitStack() as stack:
        failure = None
        if is_main:
            try:
                stack.enter_context(fsutil.output_lock(output, name))
            except Exception as err:  # a refusal, or the disk refusing the lock file: every rank stops
                failure = err
        if distributed:
            what = name or f"output={output}"
            message = [None if failure is None else f"{what}: rank 0 could not lock it ({failure})"]
            torch.distributed.broadcast_object_list(message, src=0)
            if failure is None and message[0] is not None:
                raise MinitronError(message[0])
        if failure is not None:
            raise failure
        yield
