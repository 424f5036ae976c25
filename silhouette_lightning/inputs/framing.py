"""How a non-square photo or mask becomes the square the networks see (`--fit`), and how a square result goes back.

BigGAN images and segmenter inputs are square. A 4:3 photo squashed to a square would give a squashed target
silhouette, which the generator would then match, and the composite would stretch its subject back out. So:

- `pad` (default): the photo is centred in a square of side max(H, W), the margins filled (mid-gray for photos,
  background for masks); the whole photo is seen, undistorted.
- `crop`: the centred square of side min(H, W); undistorted, but the subject must lie in the middle.
- `stretch`: the whole photo squashed to a square (the behaviour before this setting existed).

`to_square` and `from_square` share `square_box`, so a result placed back lands on the pixels it came from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from silhouette_lightning.core.names import FITS


def square_box(height: int, width: int, fit: str) -> tuple[int, int, int]:
    """(top, left, side): the square `fit` maps to the networks' input, in the image's pixel coordinates.

    For `pad` the square reaches beyond the image (top or left <= 0); for `crop` it lies inside. `stretch`
    has no such square.

    >>> square_box(3, 4, "pad"), square_box(3, 4, "crop")
    ((0, 0, 4), (0, 0, 3))
    >>> square_box(30, 40, "pad"), square_box(30, 40, "crop")
    ((-5, 0, 40), (0, 5, 30))
    """
    if fit == "pad":
        side = max(height, width)
        return -((side - height) // 2), -((side - width) // 2), side
    if fit == "crop":
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side
    raise ValueError(f"fit {fit!r} has no square box; choose pad or crop")


def to_square(image: Tensor, fit: str, *, fill: float = 0.0) -> Tensor:
    """`[C, H, W]` -> `[C, side, side]` by `fit` (pad with `fill`, or centre-crop); `stretch` returns the image
    as it is (the resize to the network's square does the squashing)."""
    _check(fit)
    height, width = image.shape[-2:]
    if fit == "stretch" or height == width:
        return image
    top, left, side = square_box(height, width, fit)
    if fit == "crop":
        return image[..., top : top + side, left : left + side]
    out = torch.full((*image.shape[:-2], side, side), fill, dtype=image.dtype, device=image.device)
    out[..., -top : -top + height, -left : -left + width] = image
    return out


def from_square(square: Tensor, height: int, width: int, fit: str) -> Tensor:
    """A square result `[C, s, s]` or `[s, s]` (image, mask) -> the same rank at the photo's `(height, width)`,
    on the pixels the square came from (float32 on the CPU). With `crop`, pixels outside the centred square
    have no result: they are 0 (a mask placed back there keeps the photo)."""
    _check(fit)
    if fit == "stretch" or height == width:
        return resize_image(square, (height, width))
    top, left, side = square_box(height, width, fit)
    scaled = resize_image(square, (side, side))  # [C, side, side] or [side, side]
    if fit == "pad":
        return scaled[..., -top : -top + height, -left : -left + width].clone()
    out = torch.zeros((*scaled.shape[:-2], height, width))
    out[..., top : top + side, left : left + side] = scaled
    return out


def _check(fit: str) -> None:
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")


def resize_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize an image [3, H, W] or a mask [H, W] to `size` = (height, width), bilinear with antialias.

    Returns the same rank as the input, float on the CPU; the input is returned as a copy when it
    already has that size.
    """
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (height, width), got {size}")
    t = image.detach().to("cpu", torch.float32)
    if t.dim() == 2:
        x = t[None, None]  # [1, 1, H, W]
    elif t.dim() == 3:
        x = t[None]  # [1, C, H, W]
    else:
        raise ValueError(f"resize_image takes [3, H, W] or [H, W], got {list(image.shape)}")
    if tuple(x.shape[-2:]) == (height, width):
        return t.clone()
    out = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0] if t.dim() == 2 else out[0]
