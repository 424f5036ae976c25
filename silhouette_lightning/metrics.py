"""Silhouette IoU: a pure per-trajectory function and a torchmetrics shell that syncs across devices."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


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
