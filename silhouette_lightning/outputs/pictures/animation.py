"""The progress animation of one search: a looping GIF of image, mask and target at each kept step."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from silhouette_lightning.core.files import atomic_save_image
from silhouette_lightning.outputs.pictures.grids import _canvas, _target_tile
from silhouette_lightning.outputs.pictures.tensors import _as_image, _as_mask, resize_image, to_pil
from silhouette_lightning.outputs.pictures.text import CAPTION_HEIGHT, GAP, _draw_caption


def progress_gif(
    frames: Sequence[Tensor],
    masks: Sequence[Tensor],
    target: Tensor,
    path: str | os.PathLike,
    *,
    duration_ms: int = 200,
    captions: Sequence[str] | None = None,
) -> Path:
    """Write an animated, looping GIF of a search: frame i shows [frames[i] | masks[i] | target].

    Like the paper's figures 1 and 8, the generated image, its segmentation map and the target map sit
    side by side, with the caption "step i" (or `captions[i]`) in a bar below. All cells take the first
    frame's size (H, W). Each GIF frame is (width, height) =
    (3 * W + 4 * GAP, H + 2 * GAP + CAPTION_HEIGHT). The file is written atomically; returns `path`.
    GIF merges consecutive identical frames, so with equal captions fewer frames may be stored.
    """
    if not frames:
        raise ValueError("progress_gif needs at least one frame")
    if len(masks) != len(frames):
        raise ValueError(f"progress_gif got {len(frames)} frames but {len(masks)} masks")
    if captions is not None and len(captions) != len(frames):
        raise ValueError(f"progress_gif got {len(frames)} frames but {len(captions)} captions")
    height, width = _as_image(frames[0], "frames[0]").shape[-2:]
    target_tile = _target_tile(target, (height, width))
    pictures = []
    for i, (frame, mask) in enumerate(zip(frames, masks, strict=True)):
        out = _canvas(3 * width + 4 * GAP, height + 2 * GAP + CAPTION_HEIGHT)
        out.paste(to_pil(resize_image(_as_image(frame, f"frames[{i}]"), (height, width))), (GAP, GAP))
        mask_tile = to_pil(resize_image(_as_mask(mask, f"masks[{i}]"), (height, width))).convert("RGB")
        out.paste(mask_tile, (2 * GAP + width, GAP))
        out.paste(target_tile, (3 * GAP + 2 * width, GAP))
        text = captions[i] if captions is not None else f"step {i}"
        _draw_caption(out, (0, height + GAP, out.width, height + GAP + CAPTION_HEIGHT), text)
        pictures.append(out)
    return atomic_save_image(
        pictures[0],
        path,
        save_all=True,
        append_images=pictures[1:],
        loop=0,
        duration=int(duration_ms),
    )
