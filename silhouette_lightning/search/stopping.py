"""Search options beyond the paper's plain restarts, as plain functions on per-trajectory tensors.

Every decision here looks only at one trajectory, or at the restarts of one (source, class) group, never at
the rest of a batch, so the one-answer invariant (DESIGN.md) holds with each option on:
- best-of-N starts (starts.py);
- a prior penalty on the part of z outside BigGAN's truncation region (`prior_penalty`);
- early stop of a trajectory at a target IoU or after `patience` steps without improvement (`early_stop`);
- restart pruning: after k steps, only the better half of each group's restarts goes on (`prune`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from silhouette_lightning.search.options import SearchOptions
from silhouette_lightning.search.starts import better_first

__all__ = ["ENDED", "PATIENCE", "PRUNED", "STOP_IOU", "SearchOptions", "early_stop", "prior_penalty", "prune"]

# Why a trajectory ended before the last step (records' "ended_by"; non-finite ones are `stopped_at` instead).
ENDED = {0: "", 1: "stop_iou", 2: "patience", 3: "pruned"}
STOP_IOU, PATIENCE, PRUNED = 1, 2, 3


def prior_penalty(z: Tensor, bound: float) -> Tensor:
    """Squared distance of each latent to the box `[-bound, bound]^Z`, summed over dimensions: `[B, Z] -> [B]`.

    BigGAN's latents are a normal truncated to [-2, 2] times the truncation (`trajectories.initial_latents`),
    so the region the generator was sampled in during training is `bound = 2 * truncation`; inside it the
    penalty is 0, outside it grows with `sum_i relu(|z_i| - bound)^2`.

    >>> round(prior_penalty(torch.tensor([[0.5, -1.0, 2.0]]), 0.8).item(), 4)
    1.48
    """
    return (z.abs() - bound).clamp_min(0).pow(2).sum(1)


def early_stop(
    best_iou: Tensor, best_step: Tensor, step: int, *, stop_iou: float | None, patience: int | None
) -> Tensor:
    """Why each trajectory stops at `step` (0: it goes on, else STOP_IOU or PATIENCE): `[G], [G] -> [G]` long.

    A trajectory stops when its best-so-far IoU reached `stop_iou`, or when its best is `patience` or more
    steps old. Looks at the row alone.
    """
    reason = torch.zeros_like(best_step)
    if patience is not None:
        reason = torch.where(step - best_step >= patience, PATIENCE, reason)
    if stop_iou is not None:
        reason = torch.where(best_iou >= stop_iou, STOP_IOU, reason)
    return reason


def prune(best_iou: Tensor, best_loss: Tensor, restart: Tensor, group: Tensor) -> Tensor:
    """Rows outside the better half (rounded up) of their group's restarts: `[G] x 4 -> [G]` bool.

    Ranked as the best restart is chosen (highest best-so-far IoU, ties to lower loss, then lower restart).
    Rows with `group < 0` (padding) are never pruned. Each group must lie wholly in the tensors given.

    >>> prune(torch.tensor([0.2, 0.9, 0.5, 0.1, 0.3]), torch.zeros(5), torch.tensor([0, 1, 2, 3, 0]),
    ...       torch.tensor([0, 0, 0, 0, -1])).tolist()
    [True, False, False, True, False]
    """
    iou, loss = best_iou.double().cpu().tolist(), best_loss.double().cpu().tolist()
    restarts, groups = restart.cpu().tolist(), group.cpu().tolist()
    out = [False] * len(groups)
    for g in sorted(set(groups) - {-1}):
        rows = [i for i, x in enumerate(groups) if x == g]
        order = better_first([iou[i] for i in rows], [loss[i] for i in rows], [restarts[i] for i in rows])
        for position in order[math.ceil(len(rows) / 2) :]:
            out[rows[position]] = True
    return torch.tensor(out, dtype=torch.bool, device=best_iou.device)
