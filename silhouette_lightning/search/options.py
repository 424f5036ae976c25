"""Typed views of a run's settings, as the search core takes them: what a latent scores, Adam, the rows, the search.

No defaults here: every default is written once, in `config.settings.SwapConfig`, whose `views()` builds these
(`SwapConfig().views(batch_size=4)` gives the defaults; `SearchOptions.plain(restarts)` is the paper's plain
search, for harnesses that take none). Plain dataclasses without torch, so the config layer imports them freely.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectiveOptions:
    """What a latent scores (search/objective.py)."""

    truncation: float  # BigGAN truncation
    loss: str  # silhouette loss on the subject channel (search/losses.py)
    ensemble_mode: str  # how the members combine (models/ensemble.py)
    prior_weight: float  # weight of the prior penalty in the loss; 0: off
    prior: str  # which prior: box (stopping.prior_penalty) or norm (priors.norm_prior)
    compile: str  # what torch.compile wraps: none, ensemble, all


@dataclass(frozen=True)
class AdamOptions:
    """The per-row Adam (search/row_adam.py)."""

    lr: float
    betas: tuple[float, float]


@dataclass(frozen=True)
class RowOptions:
    """The chunk: rows per device, steps per trajectory, latents kept per trajectory for pictures."""

    batch_size: int
    steps: int
    frames: int


@dataclass(frozen=True)
class SearchOptions:
    """The search beyond the paper's plain restarts (starts.py, stopping.py)."""

    restarts: int  # R: restarts per (source, class)
    starts: int  # N > R candidate starts scored per (source, class); 0: off (restart r starts at seed r)
    class_lr: float  # learning rate of the class vector; 0: the one-hot class, not optimized
    prior_weight: float  # weight of `prior_penalty` in the optimized loss
    stop_iou: float | None  # a trajectory stops when its best IoU reaches this
    patience: int | None  # a trajectory stops after this many steps without a better IoU
    prune_after: int | None  # after this many steps, only the better half of each group's restarts goes on

    @classmethod
    def plain(cls, restarts: int = 1) -> SearchOptions:
        """The paper's plain search: random starts, every restart runs all its steps."""
        return cls(restarts, 0, 0.0, 0.0, None, None, None)
