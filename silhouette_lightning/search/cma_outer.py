"""BasinCMA: CMA-ES over starting latents, each proposal refined by a few Adam steps (pix2latent, Huh et al. 2020).

One `BasinCMA` per (source, class): each generation `ask()` gives P proposals `[P, dim]`; the caller puts them in
P rows of its search, takes its usual per-row Adam steps from them (the "basin" search), and `tell`s the losses
of the refined latents. Two ways to tell (pix2latent's two variants):

- `"baldwinian"`: CMA gets the pre-Adam proposals with the refined losses: it learns where good basins start,
  its own distribution untouched by Adam's moves (pix2latent's default);
- `"lamarckian"`: CMA gets the refined latents themselves with their losses, as if it had sampled them (pycma
  clips those that are far outside its distribution, `check_points=None`).

The CMA state lives on the CPU in float64 (numpy, the maintained `cma` package); it is a few `dim x dim` matrices
per (source, class) and costs nothing next to a generator step. Randomness: each instance draws its normals
from a `numpy.random.Generator` of its own, seeded by the integer given (the caller derives it from the group's
trajectory seeds, e.g. `basin_seed`), never from numpy's global stream; so two instances with one seed give
identical proposals, whatever other instances, or numpy's global seed, do in between (DESIGN.md, invariant 1).
Nothing is printed and no file is written or read (verbosity off, no signals file).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import cma
import numpy as np
import torch
from torch import Tensor

MODES = ("baldwinian", "lamarckian")


def check_cma_options(dim: int, popsize: int, sigma0: float, mode: str = "baldwinian") -> list[str]:
    """One-line messages, one per invalid setting (empty: all valid): `dim` an int >= 1, `popsize` an int >= 2
    (CMA-ES ranks its samples; pycma's default for dimension d is `4 + 3 ln d`, 18 for d = 128), `sigma0` finite
    > 0 (the initial step size, in latent units: about the latents' spread, e.g. the truncation), `mode` one of
    `MODES`."""
    errors = []
    if not _int(dim) or dim < 1:
        errors.append(f"CMA dimension must be an integer >= 1, got {dim!r}")
    if not _int(popsize) or popsize < 2:
        errors.append(f"CMA population size must be an integer >= 2, got {popsize!r}")
    if not isinstance(sigma0, (int, float)) or isinstance(sigma0, bool) or not math.isfinite(sigma0) or sigma0 <= 0:
        errors.append(f"CMA initial step size sigma0 must be a finite number > 0, got {sigma0!r}")
    if mode not in MODES:
        errors.append(f"CMA mode must be one of {', '.join(MODES)}, got {mode!r}")
    return errors


def _int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def basin_seed(trajectory_seeds: Sequence[int]) -> int:
    """A 63-bit seed for one (source, class)'s BasinCMA from its trajectories' seeds, in order (BLAKE2b).

    The trajectory seeds depend on (run seed, source, class, restart) only, so this one does too.
    """
    text = "basin-cma\x1f" + "\x1f".join(str(int(s)) for s in trajectory_seeds)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


class _Normals:
    """`randn(*shape)` for pycma from a generator of our own; a deepcopy (pycma copies its options) keeps it."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)

    def __deepcopy__(self, memo) -> _Normals:
        return self


class BasinCMA:
    """CMA-ES over latents `[dim]` for one (source, class), told the losses of Adam-refined proposals.

    `dim`: the latent size (BigGAN's z_dim, or more if the class vector is searched too); `popsize` P: the
    proposals per generation (rows of the search); `sigma0`: the initial step size; `seed`: an int >= 0;
    `x0`: the initial mean `[dim]` (default 0, BigGAN's latent mean); `bounds`: optional `(lo, hi)` box for
    the proposals (pycma's boundary handling; e.g. `(-2 t, 2 t)` for truncation t).

    `ask() -> [P, dim]` then `tell(proposals, refined, losses)` with `refined [P, dim]` and `losses [P]` (lower is
    better; NaN and inf count as worse than any finite loss). `best_x` / `best_loss`: the best refined latent
    told so far (in both modes the answer is a refined latent, not a proposal).
    """

    def __init__(
        self,
        dim: int,
        popsize: int,
        sigma0: float,
        seed: int,
        mode: str = "baldwinian",
        x0: Tensor | Sequence[float] | None = None,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        errors = check_cma_options(dim, popsize, sigma0, mode)
        if not _int(seed) or seed < 0:
            errors.append(f"CMA seed must be an integer >= 0, got {seed!r}")
        if errors:
            raise ValueError("; ".join(errors))
        self.dim, self.popsize, self.mode, self.seed = int(dim), int(popsize), mode, int(seed)
        mean = np.zeros(self.dim) if x0 is None else np.asarray(torch.as_tensor(x0).double().cpu(), dtype=np.float64)
        if mean.shape != (self.dim,):
            raise ValueError(f"BasinCMA x0 must have shape [{self.dim}], got {list(mean.shape)}")
        options = cma.CMAOptions()
        options.set(
            {
                "popsize": self.popsize,
                "seed": np.nan,  # "do nothing": never touch numpy's global generator
                "randn": _Normals(np.random.default_rng(self.seed)),
                "verb_disp": 0,
                "verb_log": 0,
                "verbose": -9,
                "signals_filename": "",  # never read a cma_signals.in from the working directory
            }
        )
        if bounds is not None:
            options.set({"bounds": [float(bounds[0]), float(bounds[1])]})
        self.es = cma.CMAEvolutionStrategy(mean.tolist(), float(sigma0), options)
        self._asked: np.ndarray | None = None
        self.best_x: Tensor | None = None
        self.best_loss = math.inf

    @property
    def generation(self) -> int:
        """Generations told so far."""
        return int(self.es.countiter)

    def stop(self) -> dict:
        """pycma's termination conditions met so far (empty: go on); the caller usually just runs G generations."""
        return dict(self.es.stop())

    def ask(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The next generation's proposals, `[P, dim]` on the CPU (float32 by default; move them to the device).

        Asking twice without a `tell` in between is an error: the generation must be told first.
        """
        if self._asked is not None:
            raise RuntimeError("BasinCMA.ask() called twice without tell(): tell the last generation first")
        self._asked = np.asarray(self.es.ask(), dtype=np.float64)  # [P, dim]
        return torch.from_numpy(self._asked.copy()).to(dtype)

    def tell(self, proposals: Tensor, refined: Tensor, losses: Tensor) -> None:
        """Tell the generation's results: `proposals [P, dim]` (as asked), `refined [P, dim]`, `losses [P]`.

        Baldwinian: CMA is told the proposals exactly as it made them (its float64 values, `proposals` only
        checked against them), with the refined losses. Lamarckian: it is told `refined`. Non-finite losses
        become `max(finite) + 1` (or 1e30 if none is finite), so they rank last.
        """
        if self._asked is None:
            raise RuntimeError("BasinCMA.tell() without ask()")
        p, d = self._asked.shape
        proposals = torch.as_tensor(proposals).detach().double().cpu()
        refined = torch.as_tensor(refined).detach().double().cpu()
        losses = torch.as_tensor(losses).detach().double().cpu().reshape(-1)
        if proposals.shape != (p, d) or refined.shape != (p, d) or losses.shape != (p,):
            raise ValueError(
                f"BasinCMA.tell expects proposals and refined [{p}, {d}] and losses [{p}], got "
                f"{list(proposals.shape)}, {list(refined.shape)}, {list(losses.shape)}"
            )
        if not torch.allclose(proposals, torch.from_numpy(self._asked), rtol=1e-5, atol=1e-5):
            raise ValueError("BasinCMA.tell: proposals are not the ones the last ask() gave")
        values = losses.numpy().copy()
        finite = np.isfinite(values)
        if not finite.all():
            values[~finite] = values[finite].max() + 1 if finite.any() else 1e30
        told = self._asked if self.mode == "baldwinian" else refined.numpy()
        self.es.tell([row.copy() for row in told], values.tolist())
        self._asked = None
        best = int(np.argmin(values))
        if finite[best] and values[best] < self.best_loss:
            self.best_loss = float(values[best])
            self.best_x = refined[best].float().clone()

    @property
    def mean(self) -> Tensor:
        """CMA's current mean `[dim]` (float64)."""
        return torch.from_numpy(np.asarray(self.es.mean, dtype=np.float64).copy())

    @property
    def sigma(self) -> float:
        """CMA's current overall step size."""
        return float(self.es.sigma)
