"""Where a chunk's rows get their trajectories: the `Feeder` interface and what it hands over (`RowStart`).

Three feeders implement it: the plan's (`engine.data.PlanFeeder`, a run's trajectories), the recovery
experiment's (`bench.recovery.RecoveryFeeder`, the plan's with known starting latents) and plain tensors
(`bench.recovery.TensorFeeder`, for `recover`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from silhouette_lightning.search.refill import RowQueue


@dataclass
class Candidates:
    """Best-of-N: every loaded (source, class) group's N candidate starts, any rank may score one.

    `seeds` [groups, N]; `group_id`, `class_id`, `channel` [groups]; `targets` [groups, S, S]; `load_group` [n] the
    position of each loaded row's group among them.
    """

    seeds: Tensor
    group_id: Tensor
    class_id: Tensor
    channel: Tensor
    targets: Tensor
    load_group: Tensor


@dataclass
class RowStart:
    """The starting data of n trajectories loaded into rows: `index` [n] their plan positions, `seeds` [n] the seeds
    of their starting latents, `restart`, `class_id`, `channel` (VOC subject channel), `group` (group id) [n], and
    `targets` [own rows, S, S] the target maps of this rank's rows only. `z0` [n, Z]: explicit starting latents
    (recovery), else drawn from the seeds; `candidates`: best-of-N's, else None."""

    index: Tensor
    seeds: Tensor
    restart: Tensor
    class_id: Tensor
    channel: Tensor
    group: Tensor
    targets: Tensor
    z0: Tensor | None = None
    candidates: Candidates | None = None


class Feeder(Protocol):
    """Hands out pending trajectories: `queue` says which start next (refill.RowQueue), `load` their starting
    data, `target_size` the target maps' size; `ticks` (optional) bounds the steps a run takes."""

    queue: RowQueue
    target_size: tuple[int, ...]

    def load(self, indices: list[int], own: list[bool]) -> RowStart:
        """Starting data of trajectories `indices`; target maps only where `own` (this rank's rows)."""
        ...
