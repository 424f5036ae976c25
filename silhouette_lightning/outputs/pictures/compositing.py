"""Composites: the generated subject placed into the source photo (soft-edged or Poisson), and mask tints."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from silhouette_lightning.inputs.framing import from_square
from silhouette_lightning.outputs.pictures.tensors import _as_image, _as_mask, resize_image


def _dilate(binary: Tensor, radius: int) -> Tensor:
    """Max filter over a (2r+1) square: [H, W] -> [H, W]."""
    x = binary[None, None]  # [1, 1, H, W]
    return F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)[0, 0]


def _erode(binary: Tensor, radius: int) -> Tensor:
    """Min filter over a (2r+1) square; pixels outside the image are ignored."""
    return -_dilate(-binary, radius)


def _gaussian_blur(mask: Tensor, sigma: float, radius: int) -> Tensor:
    """Separable Gaussian blur of a [H, W] map, kernel truncated at `radius`, edges replicated."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(mask[None, None], (radius, radius, radius, radius), mode="replicate")  # [1, 1, H+2r, W+2r]
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[0, 0]


def _soft_mask(binary: Tensor, feather: float) -> Tensor:
    """The blending weight of `composite`: a Gaussian-feathered edge, exact 0 and 1 away from it."""
    if feather <= 0:
        return binary.clone()
    radius = math.ceil(3 * feather)
    m = _gaussian_blur(binary, feather, radius).clamp(0, 1)
    # The truncated kernel already gives (nearly) 0 and 1 there; the clamp makes it exact, so the blur
    # never leaks a faint halo of the generated image into the photo or dims the subject's inside.
    m = torch.where(_erode(binary, radius) >= 1, torch.ones_like(m), m)
    return torch.where(_dilate(binary, radius) <= 0, torch.zeros_like(m), m)


def composite(
    source: Tensor,
    generated: Tensor,
    mask: Tensor,
    *,
    feather: float = 2.0,
    poisson: bool = False,
    fit: str = "stretch",
) -> Tensor:
    """Place the generated subject into the source photo; returns [3, H, W] at the source's size.

    source [3, H, W], generated [3, h, w] and its subject mask [h, w], all in [0, 1]. The generated
    image and the mask are placed back onto the photo's pixels as `fit` took the square from them
    (`framing.from_square`: the padded square cut back to the photo, the cropped square put back at its place,
    or the whole square resized to (H, W) for "stretch"), and the mask is binarized at 0.5 (`b`). Then

        out = m * gen + (1 - m) * src,  m = clamp(GaussianBlur_sigma=feather(b), 0, 1)
        with m = 1 where erode_r(b) = 1 and m = 0 where dilate_r(b) = 0,  r = ceil(3 * feather),

    erosion and dilation over a (2r + 1) square (the blur kernel's support). So only a band of r pixels
    on each side of the mask's edge is blended; pixels deeper inside are exactly the generated ones and
    pixels farther outside exactly the source's. `feather=0` is a hard cut (m = b).

    `poisson=True` instead blends the subject with OpenCV's Poisson editing (`cv2.seamlessClone`,
    NORMAL_CLONE), which also shifts the subject's colours toward the photo's lighting; `feather` is not
    used then, and pixels outside the mask stay the source's. It needs OpenCV
    (`pip install opencv-python-headless`).
    """
    src = _as_image(source, "source")
    height, width = src.shape[-2:]
    gen = from_square(_as_image(generated, "generated"), height, width, fit)  # [3, H, W]
    binary = (from_square(_as_mask(mask), height, width, fit) > 0.5).float()  # [H, W]; 0 outside a crop
    if feather < 0:
        raise ValueError(f"feather must be >= 0, got {feather}")
    if poisson:
        return _poisson(src, gen, binary)
    m = _soft_mask(binary, feather)[None]  # [1, H, W]
    return (m * gen + (1 - m) * src).clamp(0, 1)


def _poisson(src: Tensor, gen: Tensor, binary: Tensor) -> Tensor:
    """Poisson (seamless) cloning of `gen` into `src` where `binary` is 1, via OpenCV."""
    try:
        import cv2
        import numpy as np
    except ImportError as ex:
        raise ImportError(
            "composite(poisson=True) needs OpenCV: pip install opencv-python-headless "
            "(or use poisson=False for a feathered blend)"
        ) from ex
    if binary.sum() == 0:
        return src.clone()
    height, width = src.shape[-2:]

    def to_bgr(t: Tensor) -> np.ndarray:
        rgb = (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # [H, W, 3]
        return np.ascontiguousarray(rgb[:, :, ::-1])

    # seamlessClone fails when the mask touches the image border; a reflected margin avoids it.
    pad = 8
    src_bgr = cv2.copyMakeBorder(to_bgr(src), pad, pad, pad, pad, cv2.BORDER_REFLECT)
    gen_bgr = cv2.copyMakeBorder(to_bgr(gen), pad, pad, pad, pad, cv2.BORDER_REFLECT)
    mask_u8 = np.zeros((height + 2 * pad, width + 2 * pad), dtype=np.uint8)
    mask_u8[pad : pad + height, pad : pad + width] = (binary.numpy() > 0.5).astype(np.uint8) * 255
    x, y, w, h = cv2.boundingRect(mask_u8)
    # seamlessClone centres the mask's bounding box on `center`: this keeps the subject where it is.
    center = (x + w // 2, y + h // 2)
    out = cv2.seamlessClone(gen_bgr, src_bgr, mask_u8, center, cv2.NORMAL_CLONE)
    out = out[pad : pad + height, pad : pad + width, ::-1]  # [H, W, 3] RGB
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).float() / 255


def mask_overlay(
    image: Tensor, mask: Tensor, *, color: tuple[float, float, float] = (1.0, 0.2, 0.2), alpha: float = 0.45
) -> Tensor:
    """Tint the subject of `image` [3, H, W]: out = image * (1 - alpha*m) + color * alpha*m, [3, H, W].

    `mask` [h, w] is resized to the image size; it may be soft.
    """
    img = _as_image(image)
    m = resize_image(_as_mask(mask), tuple(img.shape[-2:])).clamp(0, 1)[None] * alpha  # [1, H, W]
    tint = torch.tensor(color, dtype=torch.float32).view(3, 1, 1)
    return (img * (1 - m) + tint * m).clamp(0, 1)
