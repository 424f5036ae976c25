"""Trajectories: one (source, class, restart) each, with a seed and a starting latent of its own.

A trajectory's seed depends on (run seed, source key, class id, restart) and nothing else, so its whole
optimization is the same whichever batch, chunk or device it lands in (DESIGN.md, invariant 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

TRUNCATION_BOUND = 2.0  # BigGAN samples z from a normal truncated to [-2, 2], scaled by the truncation


@dataclass(frozen=True)
class Trajectory:
    """One optimization run: source `source_key` swapped to ImageNet `class_id`, random restart `restart`."""

    source_key: str
    subject: str  # VOC class of the source's silhouette: its channel is the one optimized
    class_id: int
    restart: int
    seed: int

    @property
    def group(self) -> tuple[str, int]:
        """The (source, class) pair whose restarts compete for the best result."""
        return (self.source_key, self.class_id)

    @property
    def identity(self) -> tuple[str, int, int]:
        """(source, class, restart): how finished trajectories are recognized on resume."""
        return (self.source_key, self.class_id, self.restart)


def trajectory_seed(run_seed: int, source_key: str, class_id: int, restart: int) -> int:
    """A 63-bit seed from the trajectory's identity alone (stable across Python runs and machines).

    >>> trajectory_seed(0, "dog/a.png", 207, 0) == trajectory_seed(0, "dog/a.png", 207, 0)
    True
    """
    text = f"{run_seed}\x1f{source_key}\x1f{class_id}\x1f{restart}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & (2**63 - 1)


def enumerate_trajectories(
    sources: Iterable[tuple[str, str, Sequence[int]]], restarts: int, run_seed: int
) -> list[Trajectory]:
    """All trajectories of a run, ordered by source, class, restart; `sources` yields (key, subject,
    class ids to swap it to)."""
    return [
        Trajectory(key, subject, class_id, restart, trajectory_seed(run_seed, key, class_id, restart))
        for key, subject, class_ids in sources
        for class_id in class_ids
        for restart in range(restarts)
    ]


def initial_latents(seeds: Sequence[int], z_dim: int, truncation: float) -> Tensor:
    """Starting latents `[len(seeds), z_dim]`: BigGAN's truncated normal times the truncation, each row
    drawn from its own generator (rejection sampling keeps the exact truncated distribution)."""
    rows = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        z = torch.randn(z_dim, generator=generator)
        outside = z.abs() > TRUNCATION_BOUND
        while outside.any():
            z[outside] = torch.randn(int(outside.sum()), generator=generator)
            outside = z.abs() > TRUNCATION_BOUND
        rows.append(z * truncation)
    return torch.stack(rows) if rows else torch.empty(0, z_dim)
