"""Silhouette losses: how far a segmenter ensemble's subject map is from a target map, per trajectory.

Every function returns one loss per trajectory (`[B]`), never a batch mean: the caller sums them, so that
each trajectory's gradient does not depend on how many others share its batch (DESIGN.md, invariant 1).
Losses are computed in float32 with autocast off, whatever the caller's precision: CUDA autocast refuses
`binary_cross_entropy`, and a bf16 loss would round each trajectory's small differences away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from silhouette_lightning.core.names import LOSSES
from silhouette_lightning.models.ensemble import ENSEMBLE_MODES, ensemble_probs, float32_region, subject_channel

__all__ = ["ENSEMBLE_MODES", "LOSSES", "ensemble_probs", "map_loss", "trajectory_loss"]
_EPS = 1e-6


def map_loss(probs: Tensor, target: Tensor, channel: Tensor, loss: str = "mse") -> Tensor:
    """Loss between class probabilities `probs` [B, C, H, W] and target maps `target` [B, H, W] in [0, 1]
    on each trajectory's subject `channel` [B] (long), as the mean over pixels: returns [B].

    "mse" (the paper's best) uses the subject channel only; "bce" likewise with binary cross-entropy;
    "bce_bg" adds the BCE of the background channel against `1 - target` (appendix C: it fits the
    background); "ce" is cross-entropy over all classes with the thresholded target as labels (subject or
    background); "soft_ce" is cross-entropy against the soft two-class target (t on subject, 1-t on
    background).

    >>> p = torch.zeros(1, 3, 2, 2); p[:, 2] = 1.0
    >>> map_loss(p, torch.ones(1, 2, 2), torch.tensor([2])).item()
    0.0
    """
    with float32_region(probs):
        return _map_loss(probs.float(), target.float(), channel, loss)


def _map_loss(probs: Tensor, target: Tensor, channel: Tensor, loss: str) -> Tensor:
    """`map_loss` on float32 inputs, autocast already off."""
    subject = subject_channel(probs, channel)  # [B, H, W]
    background = probs[:, 0]  # [B, H, W]
    if loss == "mse":
        per_pixel = (subject - target) ** 2
    elif loss == "bce":
        per_pixel = F.binary_cross_entropy(subject.clamp(_EPS, 1 - _EPS), target, reduction="none")
    elif loss == "bce_bg":
        per_pixel = F.binary_cross_entropy(
            subject.clamp(_EPS, 1 - _EPS), target, reduction="none"
        ) + F.binary_cross_entropy(background.clamp(_EPS, 1 - _EPS), 1 - target, reduction="none")
    elif loss == "ce":
        labels = torch.where(target > 0.5, channel.view(-1, 1, 1), torch.zeros_like(channel).view(-1, 1, 1))
        per_pixel = F.nll_loss(probs.clamp_min(_EPS).log(), labels, reduction="none")
    elif loss == "soft_ce":
        per_pixel = -(target * subject.clamp_min(_EPS).log() + (1 - target) * background.clamp_min(_EPS).log())
    else:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    return per_pixel.flatten(1).mean(1)  # [B]


def trajectory_loss(
    member_logits: Tensor,
    weights: Tensor,
    target: Tensor,
    channel: Tensor,
    *,
    loss: str = "mse",
    mode: str = "probs",
) -> Tensor:
    """The optimized quantity of each trajectory, [B]: `map_loss` of the ensemble map, or, in mode
    "losses", the weighted mean of each member's `map_loss`. Float32, outside autocast."""
    with float32_region(member_logits):
        return _trajectory_loss(member_logits.float(), weights.float(), target.float(), channel, loss, mode)


def _trajectory_loss(member_logits: Tensor, weights: Tensor, target: Tensor, channel: Tensor, loss: str, mode: str):
    """`trajectory_loss` on float32 inputs, autocast already off."""
    if mode == "losses":
        per_member = torch.stack([map_loss(logits.softmax(1), target, channel, loss) for logits in member_logits])
        return (weights.to(per_member.dtype).view(-1, 1) * per_member).sum(0)
    return map_loss(ensemble_probs(member_logits, weights, mode), target, channel, loss)
