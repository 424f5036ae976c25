"""The scored objective of one latent step: what `--compile` may wrap."""

from __future__ import annotations

COMPILE_MODES = ("none", "ensemble", "all")  # what `torch.compile` wraps for the training steps
