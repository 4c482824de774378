"""Alignment on the training engine: chat/preference data, SFT and DPO/RPO losses, the frozen reference."""
