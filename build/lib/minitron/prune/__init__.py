"""Importance estimation and structured pruning (width and depth) of Llama-family models."""
