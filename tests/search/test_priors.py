"""search/priors.py: ReNO's norm prior and the seeded per-row augmentation."""

from __future__ import annotations

import math

import pytest
import torch

from silhouette_lightning.search.priors import (
    apply_augment,
    augment,
    augment_params,
    norm_prior,
    norm_prior_mode,
)
from silhouette_lightning.search.stopping import prior_penalty


def test_norm_prior_known_answer_and_shape():
    z = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1, d = 2
    expected = [0.01 * (25 / 2 - math.log(5)), 0.01 * (1 / 2 - 0.0)]
    assert torch.allclose(norm_prior(z), torch.tensor(expected))
    assert norm_prior(torch.randn(7, 128)).shape == (7,)
    assert torch.isfinite(norm_prior(torch.zeros(1, 8))).all()
    with pytest.raises(ValueError, match=r"\[B, Z\]"):
        norm_prior(torch.zeros(8))


@pytest.mark.parametrize("d, sigma", [(128, 1.0), (8, 1.0), (128, 0.35)])
def test_norm_prior_is_smallest_at_sigma_sqrt_d_minus_1(d, sigma):
    direction = torch.nn.functional.normalize(torch.randn(1, d, generator=torch.Generator().manual_seed(0)), dim=1)
    radii = torch.linspace(0.05, 3, 2000, dtype=torch.float64) * norm_prior_mode(d, sigma)
    values = norm_prior(radii[:, None] * direction.double(), sigma=sigma)
    best = radii[values.argmin()].item()
    assert best == pytest.approx(sigma * math.sqrt(d - 1), rel=2e-3)
    # and gradient descent on z from either side goes to that radius, the direction kept
    for start in (0.3, 2.5):
        z = (start * norm_prior_mode(d, sigma) * direction).clone().requires_grad_(True)
        opt = torch.optim.SGD([z], lr=20.0 * sigma**2)
        for _ in range(300):
            opt.zero_grad()
            norm_prior(z, sigma=sigma).sum().backward()
            opt.step()
        assert z.norm().item() == pytest.approx(norm_prior_mode(d, sigma), rel=1e-3)
        assert torch.allclose(torch.nn.functional.normalize(z.detach(), dim=1), direction, atol=1e-5)


def test_the_two_priors_differ_inside_the_box():
    """The box penalty is 0 anywhere inside [-bound, bound]^Z; the norm prior still pulls a small latent out."""
    z = torch.full((1, 16), 0.1)
    assert prior_penalty(z, 0.8).item() == 0
    z.requires_grad_(True)
    norm_prior(z).sum().backward()
    assert (z.grad < 0).all()  # descent grows the norm


def test_augmentation_is_per_row_and_seeded():
    seeds = torch.tensor([11, 2**62 + 5, 7, 11], dtype=torch.long)
    steps = torch.tensor([0, 3, 3, 1])
    images = torch.rand(4, 3, 16, 12)
    out = augment(images, seeds, steps, max_shift_px=3, flip=True)
    assert out.shape == images.shape
    # row 1 alone, and row 1 in another batch composition: the identical augmentation
    alone = augment(images[1:2], seeds[1:2], steps[1:2], 3, True)
    assert torch.equal(alone, out[1:2])
    mixed = augment(
        torch.cat([torch.rand(2, 3, 16, 12), images[1:2]]),
        torch.tensor([5, 6, int(seeds[1])]),
        torch.tensor([9, 9, 3]),
        3,
        True,
    )
    assert torch.equal(mixed[2:], out[1:2])
    dy, dx, flipped = augment_params(seeds, steps, 3, True)
    assert dy.dtype == torch.long and flipped.dtype == torch.bool
    assert (dy.abs() <= 3).all() and (dx.abs() <= 3).all()
    again = augment_params(seeds, steps, 3, True)
    assert all(torch.equal(a, b) for a, b in zip((dy, dx, flipped), again, strict=True))
    one_step = augment_params(seeds, 3, 3, True)  # an int step: every row at step 3
    assert one_step[0][2] == dy[2] and one_step[0][1] == dy[1]
    no_flip = augment_params(seeds, steps, 0, False)
    assert not no_flip[2].any() and (no_flip[0] == 0).all() and (no_flip[1] == 0).all()
    assert torch.equal(augment(images, seeds, steps, 0, False), images)


def test_the_draws_vary_with_seed_and_step():
    seeds = torch.arange(400)
    dy, dx, flipped = augment_params(seeds, 0, 2, True)
    assert set(dy.tolist()) == set(range(-2, 3)) == set(dx.tolist())
    assert 120 < int(flipped.sum()) < 280
    later = augment_params(seeds, 1, 2, True)
    assert not torch.equal(dy, later[0])


def test_apply_augment_known_answers_and_inverse():
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).view(2, 1, 4, 5)
    dy, dx, flipped = torch.tensor([1, 0]), torch.tensor([-2, 0]), torch.tensor([False, True])
    rolled = apply_augment(x, dy, dx, flipped, mode="roll")
    assert torch.equal(rolled[0], torch.roll(x[0], (1, -2), (1, 2)))
    assert torch.equal(rolled[1], x[1].flip(2))
    assert torch.equal(apply_augment(rolled, dy, dx, flipped, inverse=True, mode="roll"), x)
    zeros = apply_augment(x, dy, dx, flipped, mode="zeros")
    assert torch.equal(zeros[0, 0, 0], torch.zeros(5)) and torch.equal(zeros[0, 0, 1:, :3], x[0, 0, :3, 2:])
    assert torch.equal(zeros[0, 0, :, 3:], torch.zeros(4, 2))
    rep = apply_augment(x, dy, dx, flipped)  # replicate: the edge pixels come in
    assert torch.equal(rep[0, 0, 0], rep[0, 0, 1]) and torch.equal(rep[0, 0, :, 4], rep[0, 0, :, 2])
    back = apply_augment(rep, dy, dx, flipped, inverse=True)
    assert torch.equal(back[0, 0, :3, 2:], x[0, 0, :3, 2:]) and torch.equal(back[1], x[1])  # exact inside
    both = apply_augment(x, torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([True, True]), mode="roll")
    assert torch.equal(both[1], torch.roll(x[1].flip(2), (1, 1), (1, 2)))
    with pytest.raises(ValueError, match="augment mode"):
        apply_augment(x, dy, dx, flipped, mode="reflect")


def test_augment_is_differentiable_in_the_images():
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    augment(images, torch.tensor([1, 2]), 0, 2, True).sum().backward()
    assert images.grad is not None and images.grad.sum() > 0
