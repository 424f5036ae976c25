"""Image and mask tensors for pictures: shape checks, PIL conversion, resizing and letterboxing.

Conventions of every picture module: images are [3, H, W] and masks [H, W], float in [0, 1].
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor

from silhouette_lightning.inputs.framing import resize_image


def _as_image(image: Tensor, name: str = "image") -> Tensor:
    """Detached float CPU copy of a [3, H, W] image, or a clear error."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"{name} must have shape [3, H, W], got {list(image.shape)}")
    return image.detach().to("cpu", torch.float32)


def _as_mask(mask: Tensor, name: str = "mask") -> Tensor:
    """Detached float CPU copy of a [H, W] mask ([1, H, W] is accepted), or a clear error."""
    if mask.dim() == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2:
        raise ValueError(f"{name} must have shape [H, W], got {list(mask.shape)}")
    return mask.detach().to("cpu", torch.float32)


def _mask_rgb(mask: Tensor) -> Tensor:
    """[H, W] mask -> [3, H, W] gray image."""
    return mask.unsqueeze(0).expand(3, -1, -1)


def to_pil(image: Tensor) -> Image.Image:
    """Convert a float tensor in [0, 1] to a PIL image: [3, H, W] -> "RGB", [H, W] -> "L".

    Values are clamped to [0, 1] and rounded to 8 bits; the tensor may live on any device and may
    require grad.
    """
    t = image.detach().to("cpu", torch.float32)
    if t.dim() == 3 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        return Image.fromarray((t.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), mode="L")
    t = _as_image(t)
    array = (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()  # [H, W, 3]
    return Image.fromarray(array, mode="RGB")


def _fit(image: Tensor, size: tuple[int, int], fill: float = 0.38) -> Tensor:
    """Letterbox [3, H, W] into `size` (height, width): keep the aspect ratio, pad with gray, centered."""
    height, width = size
    h, w = image.shape[-2:]
    scale = min(height / h, width / w)
    new_h, new_w = max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale)))
    resized = resize_image(image, (new_h, new_w))
    if (new_h, new_w) == (height, width):
        return resized
    out = torch.full((3, height, width), fill)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[:, top : top + new_h, left : left + new_w] = resized
    return out
