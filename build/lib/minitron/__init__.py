"""minitron: compress Llama-family LLMs with NVIDIA's Minitron recipe on Megatron-Core."""

__version__ = "0.1.0"
