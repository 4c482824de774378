"""Distributed start-up: process groups (NCCL on GPU, gloo on CPU) and Megatron's parallel state."""

from minitron.parallel.setup import ParallelContext, setup_distributed, teardown_distributed

__all__ = ["ParallelContext", "setup_distributed", "teardown_distributed"]
