"""Latent priors and seeded input augmentation for the search (ReNO, Eyring et al. 2024; DiffAugment-style shifts).

Two priors keep a latent where the generator was trained; both are per row, `[B, Z] -> [B]`, to be summed
into a trajectory's loss with a weight:

- `stopping.prior_penalty(z, bound)` (the existing one): squared distance to the box `[-bound, bound]^Z`, zero
  inside BigGAN's truncation region. It only acts on coordinates that leave the box.
- `norm_prior(z)` (here, ReNO's): `weight * (||z||^2 / (2 sigma^2) - (d - 1) log ||z||)`, the negative log
  density of the norm of a `N(0, sigma^2 I)` latent (a chi distribution). It acts on the radius alone, pulling
  `||z||` toward `sigma * sqrt(d - 1)` from either side, whatever the direction. For BigGAN's latents, a normal
  truncated to [-2, 2] times the truncation, the matching sigma is about `0.88 * truncation` (the truncated
  normal's standard deviation is 0.880); ReNO's `sigma = 1` is for untruncated noise.

`augment` shifts and flips the generator's images before the segmenters, so that the latent is not tuned to
one pixel grid (an adversarial fit of the segmenters): the parameters of row b at step k come from
(seeds[b], step[b]) alone, through a hash, never from a shared random stream, so a row's augmentation does not
depend on its batch neighbours, the batch size or the device count (DESIGN.md, invariant 1).
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor


def norm_prior(z: Tensor, weight: float = 0.01, sigma: float = 1.0) -> Tensor:
    """ReNO's norm prior per row: `[B, Z] -> [B]`, `weight * (||z||^2 / (2 sigma^2) - (Z - 1) log ||z||)`.

    Its minimum over `||z||` is at `sigma * sqrt(Z - 1)` (the mode of the chi distribution of a normal latent's
    norm); it grows like `||z||^2` outside and like `-log ||z||` toward 0 (the norm is clamped at 1e-12 so 0
    gives a large finite value). Per row and elementwise, so a row's value and gradient depend on that row only.

    >>> z = torch.zeros(1, 5); z[0, 0] = 2.0  # ||z|| = sqrt(Z - 1)
    >>> round(norm_prior(z, weight=1.0).item(), 4)
    -0.7726
    """
    if z.dim() != 2:
        raise ValueError(f"norm_prior expects latents [B, Z], got shape {tuple(z.shape)}")
    d = z.shape[1]
    norm_sq = z.pow(2).sum(1)
    log_norm = 0.5 * norm_sq.clamp_min(1e-24).log()
    return weight * (norm_sq / (2 * sigma**2) - (d - 1) * log_norm)


def norm_prior_mode(z_dim: int, sigma: float = 1.0) -> float:
    """Where `norm_prior` is smallest: `sigma * sqrt(z_dim - 1)`."""
    return sigma * math.sqrt(z_dim - 1)


# ----------------------------------------------------------------------------------------------- augmentation

AUGMENT_MODES = ("replicate", "zeros", "roll")


def augment_params(seeds: Tensor, step: Tensor | int, max_shift_px: int, flip: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row augmentation parameters:
    `seeds [B] long, step [B] long (or an int) -> (dy [B] long, dx [B] long, flipped [B] bool)`.

    `dy, dx` are integers in `[-max_shift_px, max_shift_px]`, `flipped` is a fair coin when `flip` (else all
    False). Row b's values are a hash (BLAKE2b) of `(seeds[b], step[b])` alone: the same trajectory at the same
    step gets the same augmentation in any batch, on any device, in any process.
    """
    if max_shift_px < 0:
        raise ValueError(f"max_shift_px must be >= 0, got {max_shift_px}")
    seeds = torch.as_tensor(seeds)
    steps = torch.as_tensor(step, dtype=torch.long, device=seeds.device).expand(seeds.shape[0])
    dy, dx, flipped = [], [], []
    span = 2 * max_shift_px + 1
    for s, k in zip(seeds.tolist(), steps.tolist(), strict=True):
        digest = hashlib.blake2b(f"augment\x1f{int(s)}\x1f{int(k)}".encode(), digest_size=24).digest()
        a, b, c = (int.from_bytes(digest[i : i + 8], "little") for i in (0, 8, 16))
        dy.append(a % span - max_shift_px)
        dx.append(b % span - max_shift_px)
        flipped.append(flip and bool(c & 1))
    device = seeds.device
    return (
        torch.tensor(dy, dtype=torch.long, device=device),
        torch.tensor(dx, dtype=torch.long, device=device),
        torch.tensor(flipped, dtype=torch.bool, device=device),
    )


def apply_augment(
    x: Tensor, dy: Tensor, dx: Tensor, flipped: Tensor, inverse: bool = False, mode: str = "replicate"
) -> Tensor:
    """Flip (where `flipped`), then shift by `(dy, dx)` pixels, each row its own: `[B, C, H, W] -> [B, C, H, W]`.

    `out[b, :, i, j] = flipped_x[b, :, i - dy, j - dx]`: positive `dy` moves the content down, positive `dx`
    right. What comes in at the border: `mode="replicate"` the edge pixels (no seam for a segmenter),
    `"zeros"` zeros (pad and crop; for maps), `"roll"` the pixels that left on the other side (circular; its
    inverse is exact everywhere). `inverse=True` undoes the forward augmentation (shift back, then flip), exactly
    on the pixels that stayed inside the frame. A pure gather: a row's result is its own pixels, bit for bit,
    differentiable in `x`.
    """
    if mode not in AUGMENT_MODES:
        raise ValueError(f"augment mode must be one of {', '.join(AUGMENT_MODES)}, got {mode!r}")
    if x.dim() != 4:
        raise ValueError(f"augment expects [B, C, H, W], got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    device = x.device
    dy, dx, flipped = dy.to(device).view(b, 1, 1), dx.to(device).view(b, 1, 1), flipped.to(device).view(b, 1, 1)
    i = torch.arange(h, device=device).view(1, h, 1)
    j = torch.arange(w, device=device).view(1, 1, w)
    if inverse:  # out = flip(shift_back(x)): shift back first, then flip (a flip is its own inverse)
        j_flipped = torch.where(flipped, w - 1 - j, j)
        src_i, src_j = i + dy, j_flipped + dx
    else:  # out[i, j] = flip(x)[i - dy, j - dx]
        src_i, k = i - dy, j - dx
        src_j = k  # flipped below, after the border rule, so the flip is of the whole frame
    inside = (src_i >= 0) & (src_i < h) & (src_j >= 0) & (src_j < w)
    if mode == "roll":
        src_i, src_j = src_i % h, src_j % w
    else:
        src_i, src_j = src_i.clamp(0, h - 1), src_j.clamp(0, w - 1)
    if not inverse:
        src_j = torch.where(flipped, w - 1 - src_j, src_j)
    index = (src_i * w + src_j).expand(b, h, w).reshape(b, 1, h * w).expand(b, c, h * w)
    out = x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)
    if mode == "zeros":
        out = out * inside.expand(b, h, w)[:, None].to(out.dtype)
    return out


def augment(
    images: Tensor,
    seeds: Tensor,
    step: Tensor | int,
    max_shift_px: int,
    flip: bool,
    mode: str = "replicate",
    inverse: bool = False,
) -> Tensor:
    """Seeded random shifts and horizontal flips per row: `[B, C, H, W] -> [B, C, H, W]`.

    `seeds [B] long` (the trajectories' seeds), `step [B] long` (each row's own step count, or one int), shifts
    of at most `max_shift_px` pixels each way, a flip per row with probability 1/2 when `flip`. The same
    (seed, step) always gives the same augmentation (`augment_params`); `inverse=True` undoes it (for a subject
    map computed on the augmented image, so it lines up with the unaugmented target again; or augment the
    target forward with the same arguments and `mode="zeros"` instead). Maps at another resolution than the
    images need their own shift: call `augment_params` once and `apply_augment` with scaled `dy, dx`.
    """
    dy, dx, flipped = augment_params(seeds, step, max_shift_px, flip)
    return apply_augment(images, dy, dx, flipped, inverse=inverse, mode=mode)
