"""Silhouette IoU: a pure per-trajectory function, the held-out model's IoU, and a torchmetrics shell that syncs
across devices."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from silhouette_lightning.models.ensemble import subject_channel
from silhouette_lightning.models.segmenters import SegmenterEnsemble


def silhouette_iou(subject_map: Tensor, target_map: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU of the thresholded maps, per trajectory: `[B, H, W], [B, H, W] -> [B]`.

    `|(p > t) & (q > t)| / |(p > t) | (q > t)|`; two empty silhouettes agree fully (IoU 1).

    >>> a = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]); b = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    >>> silhouette_iou(a, b).tolist()
    [0.5]
    """
    pred = subject_map > threshold
    target = target_map > threshold
    intersection = (pred & target).flatten(1).sum(1).float()
    union = (pred | target).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))


@torch.no_grad()
def heldout_iou(heldout: SegmenterEnsemble, images: Tensor, channels: Tensor, targets: Tensor) -> Tensor:
    """IoU of the held-out model's subject map against the target maps, per image: `[B]`.

    `images` [B, 3, H, W] in [0, 1], `channels` [B] the VOC subject class of each image, `targets` [B, S, S].
    The subject map is the softmax probability of the subject class, at the held-out model's input size S.
    """
    logits = heldout(images.float())[0].float()  # [B, C, S, S]
    probs = logits.softmax(1)
    subject = subject_channel(probs, channels)  # [B, S, S]
    return silhouette_iou(subject, targets.to(subject))


class MeanIoU(Metric):
    """Mean of per-trajectory IoUs; `add_state(dist_reduce_fx="sum")` makes the cross-device mean exact."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("iou_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, iou: Tensor) -> None:
        """Add per-trajectory IoUs `[N]` (already computed, e.g. by `silhouette_iou`)."""
        iou = iou.detach().flatten()
        self.iou_sum += iou.double().sum()
        self.count += iou.numel()

    def compute(self) -> Tensor:
        """The mean IoU (0 when nothing was added)."""
        return (self.iou_sum / self.count.clamp_min(1)).float()
