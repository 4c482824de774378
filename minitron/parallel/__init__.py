"""Distributed start-up: process groups (NCCL on GPU, gloo on CPU) and Megatron's parallel state."""

from minitron.parallel.setup import ParallelContext, output_lock, setup_distributed, teardown_distributed

__all__ = ["ParallelContext", "output_lock", "setup_distributed", "teardown_distributed"]
