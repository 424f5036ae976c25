"""Which trajectory each row of the chunk runs: pending trajectories fill the rows that free up, in plan order.

A chunk is `G` rows (batch x world size). A row holds one trajectory from its step 0 to its last step, or until
it ends early (early stop, pruning, a non-finite loss: stopping.py); its row is then free, and the next pending
trajectories take the free rows at the next latent step, so the chunk stays full while trajectories leave it.
Each row's Adam is its own (row_adam.py) and every decision looks at one row or one group, so a trajectory's
result does not depend on its row or on when it started: refilling changes the wall time, not the answers.

Restart pruning compares a (source, class)'s restarts at the same step, so with it the queue hands out whole
groups (consecutive pending trajectories of one group) and a group waits until it fits in the free rows; a restart
that ended before the pruning step has left its row but still counts in that ranking (the row table keeps its
best: search/rows.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


def queue_units(groups: Sequence, indices: Sequence[int], *, whole_groups: bool) -> list[list[int]]:
    """What the queue hands out: each trajectory alone, or runs of consecutive trajectories of the same group.

    >>> queue_units(["a", "a", "b"], [0, 1, 2], whole_groups=True)
    [[0, 1], [2]]
    >>> queue_units(["a", "a", "b"], [0, 1, 2], whole_groups=False)
    [[0], [1], [2]]
    """
    units: list[list[int]] = []
    for position, index in enumerate(indices):
        if whole_groups and position and groups[position] == groups[position - 1]:
            units[-1].append(index)
        else:
            units.append([index])
    return units


def pack_units(units: Sequence[Sequence[int]], rows: int) -> list[list[int]]:
    """Units packed into chunks of `rows` in order, a new chunk when the next unit does not fit (never split).

    >>> pack_units([[0, 1], [2, 3], [4, 5]], 5)
    [[0, 1, 2, 3], [4, 5]]
    """
    chunks: list[list[int]] = []
    for unit in units:
        if len(unit) > rows:
            raise ValueError(f"a group of {len(unit)} trajectories does not fit a chunk of {rows}")
        if not chunks or len(chunks[-1]) + len(unit) > rows:
            chunks.append([])
        chunks[-1].extend(unit)
    return chunks


def most_ticks(units: Sequence[Sequence[int]], rows: int, steps: int) -> int:
    """An upper bound on the latent steps (ticks) a run takes: the chunks of `pack_units`, each `steps + 1` ticks.

    Exact when no trajectory ends early. Refilling never starts a unit later than that chunked schedule (the
    queue is in order and a trajectory's length does not depend on where it runs), so this bounds it.
    """
    return len(pack_units(units, rows)) * (steps + 1)


class RowQueue:
    """Pending units in plan order; `take(free)` hands out the next units that fit in `free` rows."""

    def __init__(self, units: Sequence[Sequence[int]], rows: int) -> None:
        for unit in units:
            if len(unit) > rows:
                raise ValueError(f"a group of {len(unit)} trajectories does not fit a chunk of {rows}")
        self.units = deque(list(u) for u in units)

    def __bool__(self) -> bool:
        return bool(self.units)

    def __len__(self) -> int:
        return sum(len(u) for u in self.units)

    def take(self, free: int) -> list[int]:
        """Trajectory indices for at most `free` rows: whole units, in order, stopping at the first that does
        not fit (a later smaller one never overtakes it: every rank and every batch size agrees on the order)."""
        taken: list[int] = []
        while self.units and len(taken) + len(self.units[0]) <= free:
            taken.extend(self.units.popleft())
        return taken
