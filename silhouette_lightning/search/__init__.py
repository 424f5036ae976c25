"""The search core in plain PyTorch (no Lightning, no file I/O): the objective, the row table, Adam per row, refill,
starts, stopping, losses and metrics; alignment, CMA and priors."""
