"""The search core in plain PyTorch: objective, per-row state, Adam per row, refill, starts, stopping (no Lightning, no file I/O)."""
