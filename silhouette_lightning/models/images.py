"""BigGAN's image rule, written once (no import of the BigGAN package: cheap to import anywhere)."""

from __future__ import annotations

from torch import Tensor


def images(generator, z: Tensor, class_vectors: Tensor, truncation: float) -> Tensor:
    """BigGAN's images in [0, 1] (unclamped): `(G(z, class, truncation) + 1) / 2`, `[B, Z], [B, K] -> [B, 3, R, R]`.
    The one image rule: the search, best-of-N, pictures, `regenerate` and the recovery targets all call it."""
    return (generator(z, class_vectors, truncation) + 1) / 2
