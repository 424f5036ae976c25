"""Best-of-N starts, and the one ranking of restarts: highest IoU, ties to lower loss, then lower restart.

Best-of-N scores N candidate starting latents per (source, class) group (forward passes only) and starts the R
restarts from the best R. Each group's candidates are scored alone, in fixed pieces of SCORE_BATCH, so its scores
do not depend on the batch size or the other groups (DESIGN.md's one-answer invariant).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from silhouette_lightning.inputs.trajectories import initial_latents
from silhouette_lightning.search.feed import RowStart

SCORE_BATCH = 64  # candidate starts scored per forward pass: fixed, so scores never depend on --batch-size


def better_first(iou: list[float], loss: list[float], index: list[int]) -> list[int]:
    """Positions sorted best first: highest IoU, ties to lower loss (NaN counts as worst), then lower index.

    >>> better_first([0.5, 0.9, 0.9], [0.1, 0.3, 0.2], [0, 1, 2])
    [2, 1, 0]
    """

    def key(i: int) -> tuple:
        return (-iou[i], math.inf if math.isnan(loss[i]) else loss[i], index[i])

    return sorted(range(len(iou)), key=key)


def select_starts(iou: Tensor, loss: Tensor, keep: int) -> Tensor:
    """The `keep` best of N scored candidates of each group, in candidate order: `[G, N], [G, N] -> [G, keep]`.

    Kept in candidate order (not rank order) so that with N = keep every candidate is kept where it was:
    restart r starts from candidate r, exactly the plain search.

    >>> select_starts(torch.tensor([[0.1, 0.7, 0.5, 0.7]]), torch.tensor([[0.0, 0.2, 0.1, 0.1]]), 2).tolist()
    [[1, 3]]
    """
    iou, loss = iou.detach().double().cpu(), loss.detach().double().cpu()
    rows = []
    for group_iou, group_loss in zip(iou.tolist(), loss.tolist(), strict=True):
        order = better_first(group_iou, group_loss, list(range(len(group_iou))))
        rows.append(sorted(order[:keep]))
    return torch.tensor(rows, dtype=torch.long).view(len(rows), keep)


class BestOfN:
    """Chooses the starting seeds of loaded restarts from their group's N candidates (`restarts` = R per group).

    A group whose restarts load over several steps (rows freed one by one) is scored once, at its first load:
    its choice is kept until the next load that does not include it.
    """

    def __init__(self, restarts: int, z_dim: int, truncation: float) -> None:
        self.restarts, self.z_dim, self.truncation = restarts, z_dim, truncation
        self._chosen: dict[int, Tensor] = {}  # each recently loaded group's chosen candidates [R]

    @torch.no_grad()
    def seeds(
        self,
        start: RowStart,
        score: Callable,
        *,
        like: Tensor,
        world: int = 1,
        rank: int = 0,
        reduce_sum: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Give restart r of each loaded group the r-th of its best R candidates (in candidate order); returns
        each loaded row's seed.

        `start`: the feeder's load, with its `candidates`; `score(z, class_ids, channels, targets)` -> (loss, IoU);
        `like` a tensor with the latents' dtype and device. With many devices, the groups to score are dealt
        to the ranks in turn and the scores summed over ranks (`reduce_sum`; zeros elsewhere), so every rank
        selects from the same numbers.
        """
        candidates = start.candidates
        seeds = candidates.seeds  # [n_groups, N]
        n_groups, n = seeds.shape
        device = like.device
        ids = candidates.group_id.tolist()  # [n_groups]: the loaded groups' ids
        todo = [g for g in range(n_groups) if ids[g] not in self._chosen]  # a group split over loads: scored once
        iou = torch.zeros(n_groups, n, device=device)
        loss = torch.zeros(n_groups, n, device=device)
        for g in todo[rank::world]:
            z = initial_latents(seeds[g].tolist(), self.z_dim, self.truncation).to(like)  # [N, Z]
            for first in range(0, n, SCORE_BATCH):
                piece = z[first : first + SCORE_BATCH]
                m = len(piece)
                piece_loss, piece_iou = score(
                    piece,
                    candidates.class_id[g].expand(m).to(device),
                    candidates.channel[g].expand(m).to(device),
                    candidates.targets[g].expand(m, -1, -1).to(device),
                )
                loss[g, first : first + m], iou[g, first : first + m] = piece_loss, piece_iou.float()
        if world > 1 and todo:
            iou, loss = reduce_sum(iou), reduce_sum(loss)
        chosen = select_starts(iou, loss, self.restarts)  # [n_groups, R], on the CPU
        # only the groups of this load are kept: groups are consecutive in the queue, so a group split over loads
        # is the last of one load and the first of the next
        self._chosen = {gid: self._chosen.get(gid, chosen[g]) for g, gid in enumerate(ids)}
        chosen = torch.stack([self._chosen[gid] for gid in ids])
        group, restart = candidates.load_group, start.restart  # [n]: position of each row's group in this load
        picked = chosen[group, restart.clamp(0, self.restarts - 1)]  # [n]
        return seeds[group, picked]
