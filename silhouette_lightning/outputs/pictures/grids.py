"""Grids of cells: the progress strip of one search, the contact sheet of a run, TensorBoard panels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from silhouette_lightning.outputs.pictures.tensors import _as_image, _as_mask, _fit, _mask_rgb, resize_image, to_pil
from silhouette_lightning.outputs.pictures.text import _EMPTY, _GUTTER, CAPTION_HEIGHT, GAP, _draw_caption, label


def _canvas(width: int, height: int, color: tuple[int, int, int] = _GUTTER) -> Image.Image:
    """A blank RGB image."""
    return Image.new("RGB", (width, height), color)


def _target_tile(target: Tensor, size: tuple[int, int]) -> Image.Image:
    """The target mask as an RGB cell of `size` (height, width), labelled "target" when there is room."""
    tile = to_pil(resize_image(_as_mask(target, "target"), size)).convert("RGB")
    # On a tiny cell the bar would hide the mask itself.
    return label(tile, "target", position="inside") if size[0] >= 3 * CAPTION_HEIGHT else tile


def strip(
    frames: Sequence[Tensor],
    masks: Sequence[Tensor] | None = None,
    captions: Sequence[str] | None = None,
    *,
    target: Tensor | None = None,
) -> Image.Image:
    """Frames left to right, their masks in a row below; the target mask first in the mask row if given.

    Every cell has the first frame's size (H, W); other frames and all masks are resized to it. With a
    target, the frame row starts with an empty gray cell above it, and the target cell reads "target"
    (when H >= 3 * CAPTION_HEIGHT).
    Captions (one per frame) go in one bar under the frame row.

    Size (width, height) of the returned RGB image, with N = len(frames),
    cols = N + (1 if target is given else 0), rows = 1 + (1 if masks or target is given else 0):

        width  = cols * W + (cols + 1) * GAP
        height = rows * H + (rows + 1) * GAP + (CAPTION_HEIGHT if captions else 0)
    """
    if not frames:
        raise ValueError("strip needs at least one frame")
    if masks is not None and len(masks) != len(frames):
        raise ValueError(f"strip got {len(frames)} frames but {len(masks)} masks")
    if captions is not None and len(captions) != len(frames):
        raise ValueError(f"strip got {len(frames)} frames but {len(captions)} captions")
    first = _as_image(frames[0], "frames[0]")
    height, width = first.shape[-2:]
    offset = 1 if target is not None else 0
    cols = len(frames) + offset
    has_mask_row = masks is not None or target is not None
    rows = 2 if has_mask_row else 1
    caption_h = CAPTION_HEIGHT if captions is not None else 0
    out = _canvas(cols * width + (cols + 1) * GAP, rows * height + (rows + 1) * GAP + caption_h)

    def x_of(col: int) -> int:
        return GAP + col * (width + GAP)

    for i, frame in enumerate(frames):
        tile = resize_image(_as_image(frame, f"frames[{i}]"), (height, width))
        out.paste(to_pil(tile), (x_of(i + offset), GAP))
        if captions is not None:
            left, top = x_of(i + offset), GAP + height
            _draw_caption(out, (left, top, left + width, top + caption_h), captions[i])
    if has_mask_row:
        mask_top = 2 * GAP + height + caption_h
        if target is not None:
            out.paste(_target_tile(target, (height, width)), (x_of(0), mask_top))
        for i, mask in enumerate(masks or []):
            tile = resize_image(_as_mask(mask, f"masks[{i}]"), (height, width))
            out.paste(to_pil(tile).convert("RGB"), (x_of(i + offset), mask_top))
    return out


def contact_sheet(
    row_headers: Sequence[tuple[Tensor, Tensor] | None],
    cells: Sequence[Sequence[tuple[Tensor, str] | str | None]],
    column_titles: Sequence[str],
    *,
    cell_size: int = 128,
    row_titles: Sequence[str] | None = None,
    row_notes: Sequence[str | None] | None = None,
) -> Image.Image:
    """One picture of a whole run: rows are sources, columns are classes.

    Each row starts with its source photo [3, H, W] and target mask [H, W] (`row_headers[r]`), then one
    cell per class: `cells[r][c]` = (best image [3, h, w], text), the text written on the image
    (e.g. "IoU 0.83"), a text alone on an empty gray cell (e.g. "failed"), or None for an empty gray cell.
    A row header of None (e.g. a skipped source) gives gray source and target cells. Images are letterboxed
    (aspect kept) into cell_size x cell_size squares. A title bar on top names the columns "source",
    "target", *column_titles; `row_titles[r]` (e.g. the file name) is written on the source photo, and
    `row_notes[r]` (e.g. why a source was skipped), when not None, on a bar across the row's class cells (and
    its target cell when its header is None).

    Size (width, height) with C = len(column_titles) + 2 and R = len(row_headers):

        width  = C * cell_size + (C + 1) * GAP
        height = CAPTION_HEIGHT + R * cell_size + (R + 1) * GAP
    """
    if cell_size < 1:
        raise ValueError(f"cell_size must be positive, got {cell_size}")
    if len(cells) != len(row_headers):
        raise ValueError(f"contact_sheet got {len(row_headers)} row headers but {len(cells)} rows of cells")
    if row_titles is not None and len(row_titles) != len(row_headers):
        raise ValueError(f"contact_sheet got {len(row_headers)} rows but {len(row_titles)} row titles")
    if row_notes is not None and len(row_notes) != len(row_headers):
        raise ValueError(f"contact_sheet got {len(row_headers)} rows but {len(row_notes)} row notes")
    for r, row in enumerate(cells):
        if len(row) != len(column_titles):
            raise ValueError(f"contact_sheet row {r} has {len(row)} cells for {len(column_titles)} columns")
    cols, rows = len(column_titles) + 2, len(row_headers)
    out = _canvas(cols * cell_size + (cols + 1) * GAP, CAPTION_HEIGHT + rows * cell_size + (rows + 1) * GAP)
    square = (cell_size, cell_size)

    def x_of(col: int) -> int:
        return GAP + col * (cell_size + GAP)

    _draw_caption(out, (0, 0, out.width, CAPTION_HEIGHT), "")
    for c, title in enumerate(["source", "target", *column_titles]):
        _draw_caption(out, (x_of(c), 0, x_of(c) + cell_size, CAPTION_HEIGHT), title, bar=False)
    empty = _canvas(cell_size, cell_size, _EMPTY)
    for r, (header, row) in enumerate(zip(row_headers, cells, strict=True)):
        y = CAPTION_HEIGHT + GAP + r * (cell_size + GAP)
        if header is None:
            photo_tile, target_tile = empty, empty
        else:
            photo, target = header
            photo_tile = to_pil(_fit(_as_image(photo, f"row_headers[{r}] photo"), square))
            target_tile = to_pil(_fit(_mask_rgb(_as_mask(target, f"row_headers[{r}] target")), square))
        if row_titles is not None:
            photo_tile = label(photo_tile, row_titles[r], position="inside")
        out.paste(photo_tile, (x_of(0), y))
        out.paste(target_tile, (x_of(1), y))
        for c, cell in enumerate(row):
            if cell is None or isinstance(cell, str):
                out.paste(label(empty, cell, position="inside") if cell else empty, (x_of(c + 2), y))
                continue
            image, text = cell
            tile = to_pil(_fit(_as_image(image, f"cells[{r}][{c}]"), square))
            out.paste(label(tile, text, position="inside") if text else tile, (x_of(c + 2), y))
        if row_notes is not None and row_notes[r]:
            middle = y + (cell_size - CAPTION_HEIGHT) // 2
            left = x_of(1) if header is None else x_of(2)  # a skipped source's empty target cell takes text too
            _draw_caption(out, (left, middle, x_of(cols - 1) + cell_size, middle + CAPTION_HEIGHT), row_notes[r])
    return out


PANEL_CAPTIONS = ("source", "target", "image", "map", "composite")


def tensorboard_panel(
    source: Tensor,
    target: Tensor,
    best: Tensor,
    best_mask: Tensor,
    composite: Tensor,
    *,
    size: int = 128,
    captions: Sequence[str] | None = PANEL_CAPTIONS,
) -> Tensor:
    """[source | target | current best | its mask | composite] as one float image in [0, 1]: [3, size, 5 * size],
    with a caption bar naming each part on top ([3, CAPTION_HEIGHT + size, 5 * size]) unless `captions` is None.

    Each part is letterboxed (aspect kept, gray padding) into a size x size square; masks are shown in
    gray. Feed it to `SummaryWriter.add_image(tag, panel, step)` (CHW, [0, 1]).
    """
    square = (size, size)
    parts = [
        _fit(_as_image(source, "source"), square),
        _fit(_mask_rgb(_as_mask(target, "target")), square),
        _fit(_as_image(best, "best"), square),
        _fit(_mask_rgb(_as_mask(best_mask, "best_mask")), square),
        _fit(_as_image(composite, "composite"), square),
    ]
    panel = torch.cat(parts, dim=2).clamp(0, 1)  # [3, size, 5 * size]
    if captions is None:
        return panel
    if len(captions) != len(parts):
        raise ValueError(f"tensorboard_panel needs {len(parts)} captions, got {len(captions)}")
    bar = _canvas(panel.shape[2], CAPTION_HEIGHT)
    for i, text in enumerate(captions):
        _draw_caption(bar, (i * size, 0, (i + 1) * size, CAPTION_HEIGHT), text)
    bar_tensor = torch.from_numpy(np.array(bar)).permute(2, 0, 1).float() / 255  # [3, CAPTION_HEIGHT, 5 * size]
    return torch.cat([bar_tensor, panel], dim=1)  # [3, CAPTION_HEIGHT + size, 5 * size]
