"""search/cma_outer.py: BasinCMA's seeding, its two modes, validation, and a toy basin search."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from silhouette_lightning.search.cma_outer import BasinCMA, basin_seed, check_cma_options

OPTIMUM = 3.0  # the toy quadratic's optimum: every coordinate at 3, far from the proposals' start at 0
SCALES = torch.linspace(0.3, 3.0, 8)  # an ill-conditioned bowl: a few Adam steps cannot finish it from far away


def toy_loss(x: torch.Tensor) -> torch.Tensor:
    """`[P, 8] -> [P]`: a shifted, anisotropic quadratic."""
    return (SCALES * (x - OPTIMUM)).pow(2).sum(1)


def refine(x: torch.Tensor, steps: int = 5, lr: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """A few Adam steps per row from each proposal (the basin search): `[P, 8] -> ([P, 8], [P])`."""
    x = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.99))
    for _ in range(steps):
        opt.zero_grad()
        toy_loss(x).sum().backward()
        opt.step()
    with torch.no_grad():
        return x.detach(), toy_loss(x)


def run(mode: str, seed: int = 3, generations: int = 15, popsize: int = 8) -> BasinCMA:
    search = BasinCMA(8, popsize, 1.0, seed, mode=mode)
    for _ in range(generations):
        proposals = search.ask()
        refined, losses = refine(proposals)
        search.tell(proposals, refined, losses)
    return search


@pytest.mark.parametrize("mode, margin", [("baldwinian", 0.1), ("lamarckian", 0.01)])
def test_basin_cma_beats_random_proposals_on_a_toy_quadratic(mode, margin):
    """15 generations of 8 proposals, each refined by 5 Adam steps, against 120 random proposals refined alike
    (measured at seed 3: best 1.3 Baldwinian, 0.08 Lamarckian, 84.7 random)."""
    search = run(mode)
    g = torch.Generator().manual_seed(3)
    _, random_losses = refine(torch.randn(15 * 8, 8, generator=g))  # the same budget, proposals from N(0, 1)
    assert search.best_loss < margin * random_losses.min().item(), (search.best_loss, random_losses.min().item())
    assert search.best_x.shape == (8,) and search.best_x.dtype == torch.float32
    assert torch.allclose(toy_loss(search.best_x[None]), torch.tensor([search.best_loss], dtype=torch.float32))
    assert search.generation == 15
    assert toy_loss(search.mean.float()[None]) < 0.2 * toy_loss(torch.zeros(1, 8))  # CMA's mean moved to the basin


def test_the_same_seed_gives_the_same_proposals_whatever_happens_in_between():
    a, b, other = BasinCMA(6, 5, 0.5, 42), BasinCMA(6, 5, 0.5, 42), BasinCMA(6, 5, 0.5, 43)
    first = a.ask()
    np.random.seed(0)  # numpy's global stream is not used
    np.random.standard_normal(100)
    other.ask()
    assert first.shape == (5, 6) and first.dtype == torch.float32
    assert torch.equal(first, b.ask())
    assert not torch.equal(first, BasinCMA(6, 5, 0.5, 43).ask())
    losses = first.pow(2).sum(1)
    a.tell(first, first, losses)
    b.tell(first, first, losses)
    assert torch.equal(a.ask(), b.ask())
    assert torch.equal(BasinCMA(6, 5, 0.5, 7, x0=torch.ones(6)).ask(), BasinCMA(6, 5, 0.5, 7, x0=[1.0] * 6).ask())


def test_the_two_modes_tell_different_points():
    """Baldwinian tells the proposals, Lamarckian the refined latents: same first ask, different second one."""
    bald, lam = BasinCMA(8, 8, 1.0, 5), BasinCMA(8, 8, 1.0, 5, mode="lamarckian")
    p = bald.ask()
    assert torch.equal(p, lam.ask())
    refined, losses = refine(p)
    bald.tell(p, refined, losses)
    lam.tell(p, refined, losses)
    assert not torch.allclose(bald.mean, lam.mean)
    # Lamarckian's mean moved toward the refined latents (closer to the optimum than the proposals)
    assert (lam.mean - OPTIMUM).norm() < (bald.mean - OPTIMUM).norm()


def test_tell_checks_its_arguments_and_ranks_non_finite_losses_last():
    search = BasinCMA(4, 4, 1.0, 0)
    with pytest.raises(RuntimeError, match="without ask"):
        search.tell(torch.zeros(4, 4), torch.zeros(4, 4), torch.zeros(4))
    p = search.ask()
    with pytest.raises(RuntimeError, match="twice"):
        search.ask()
    with pytest.raises(ValueError, match=r"\[4, 4\]"):
        search.tell(p, p[:3], torch.zeros(4))
    with pytest.raises(ValueError, match="not the ones"):
        search.tell(p + 1, p, torch.zeros(4))
    search.tell(p.double(), p, torch.tensor([math.nan, 2.0, math.inf, 1.0]))
    assert search.best_loss == 1.0 and torch.equal(search.best_x, p[3])
    everything_bad = BasinCMA(4, 4, 1.0, 0)
    q = everything_bad.ask()
    everything_bad.tell(q, q, torch.full((4,), math.nan))
    assert everything_bad.best_x is None and everything_bad.best_loss == math.inf
    assert search.stop() == {} and search.sigma > 0


def test_bounds_keep_the_proposals_inside():
    search = BasinCMA(5, 16, 3.0, 1, bounds=(-0.8, 0.8))
    p = search.ask()
    assert (p.abs() <= 0.8 + 1e-6).all()


def test_no_files_are_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run("baldwinian", generations=3)
    assert os.listdir(tmp_path) == []
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_validation_messages():
    assert check_cma_options(128, 18, 0.4) == []
    bad = check_cma_options(0, 1, -0.1, "darwinian")
    assert bad == [
        "CMA dimension must be an integer >= 1, got 0",
        "CMA population size must be an integer >= 2, got 1",
        "CMA initial step size sigma0 must be a finite number > 0, got -0.1",
        "CMA mode must be one of baldwinian, lamarckian, got 'darwinian'",
    ]
    assert check_cma_options(8, 4.0, math.inf)[0].startswith("CMA population size")
    assert "sigma0" in check_cma_options(8, 4, math.nan)[0]
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        BasinCMA(8, 4, 1.0, -1)
    with pytest.raises(ValueError, match="population size"):
        BasinCMA(8, True, 1.0, 0)
    with pytest.raises(ValueError, match=r"x0 must have shape \[8\]"):
        BasinCMA(8, 4, 1.0, 0, x0=torch.zeros(7))


def test_basin_seed():
    assert basin_seed([5, 6, 7]) == basin_seed([5, 6, 7]) != basin_seed([5, 7, 6])
    assert 0 <= basin_seed([2**63 - 1]) < 2**63
