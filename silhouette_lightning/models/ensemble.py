"""How the ensemble's members combine into one class-probability map, and each trajectory's subject channel of it.

Plain tensor functions shared by the target maps (inputs), the losses and the scoring (search) and the held-out
score, so the combination rule and the channel gather are written once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from silhouette_lightning.core.names import ENSEMBLE_MODES

__all__ = ["ENSEMBLE_MODES", "ensemble_probs", "float32_region", "subject_channel"]


def float32_region(t: Tensor):
    """A context with autocast off on `t`'s device: what runs in it keeps its inputs' float32."""
    return torch.autocast(t.device.type, enabled=False)


def ensemble_probs(member_logits: Tensor, weights: Tensor, mode: str = "probs") -> Tensor:
    """Combine segmenter outputs into one class-probability map.

    `member_logits`: [M, B, C, H, W]; `weights`: [M], summing to 1. Mode "probs" (the paper's ensemble)
    is the weighted mean of the members' softmaxes; "logits" (appendix A) is the softmax of the weighted
    mean of the logits; "losses" averages losses instead of maps, and its map is the "probs" one. Combined
    in float32 with autocast off, as target maps are, so that both sides of the loss are weighted alike.

    >>> logits = torch.zeros(2, 1, 3, 4, 4)
    >>> ensemble_probs(logits, torch.tensor([0.5, 0.5])).sum(1).allclose(torch.ones(1, 4, 4))
    True
    """
    with float32_region(member_logits):  # in bf16, 0.6 would become 0.6016 and maps would sum to 1.004
        logits, w = member_logits.float(), weights.float().view(-1, 1, 1, 1, 1)
        if mode == "logits":
            return (w * logits).sum(0).softmax(1)  # [B, C, H, W]
        if mode in ("probs", "losses"):
            return (w * logits.softmax(2)).sum(0)  # [B, C, H, W]
    raise ValueError(f"unknown ensemble mode {mode!r}; choose one of {ENSEMBLE_MODES}")


def subject_channel(probs: Tensor, channels: Tensor) -> Tensor:
    """Each trajectory's subject channel of `probs` [B, C, H, W]: `[B, H, W]`; `channels` [B] long."""
    return probs.gather(1, channels.view(-1, 1, 1, 1).expand(-1, 1, *probs.shape[2:])).squeeze(1)
