"""Pictures for people: captions, composites, strips, progress GIFs, contact sheets and TensorBoard panels.

Everything here is a plain function on tensors in the project's conventions (images [3, H, W] and masks
[H, W], float in [0, 1]) and returns either a tensor or a PIL image. Layout constants, used by the size
formulas in the docstrings:

- `GAP` (2 px): the gray gutter between (and around) the cells of a grid.
- `CAPTION_HEIGHT` (16 px): the height of one caption bar.

Text uses Pillow's built-in default font (`ImageFont.load_default()`), which is embedded in Pillow, so no
font file has to be installed.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .files import atomic_save_image

__all__ = [
    "CAPTION_HEIGHT",
    "GAP",
    "composite",
    "contact_sheet",
    "label",
    "mask_overlay",
    "progress_gif",
    "resize_image",
    "strip",
    "tensorboard_panel",
    "to_pil",
]

GAP = 2
CAPTION_HEIGHT = 16
_FONT_SIZE = 12  # Aileron size when FreeType is there; the bitmap fallback is about 11 px tall anyway
_GUTTER = (96, 96, 96)  # mid gray: tells white subject masks apart from the background between cells
_EMPTY = (160, 160, 160)  # lighter gray for "no result" cells
_BAR = (24, 24, 24)
_TEXT = (240, 240, 240)


# --------------------------------------------------------------------------------------------- tensors


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


# --------------------------------------------------------------------------------------------- text


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's embedded default font: Aileron at `_FONT_SIZE` with FreeType, else the bitmap font."""
    font = ImageFont.load_default()
    if isinstance(font, ImageFont.FreeTypeFont):
        # The default size (10 px) is hard to read on a 128 px cell.
        font = ImageFont.load_default(size=_FONT_SIZE)
    return font


def _fit_text(draw: ImageDraw.ImageDraw, text: str, max_width: int) -> str:
    """Shorten `text` with ".." until it fits in `max_width` pixels."""
    font = _font()
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "..", font=font) > max_width:
        text = text[:-1]
    return text.rstrip() + ".." if text else ""


def _draw_caption(img: Image.Image, box: tuple[int, int, int, int], text: str, *, bar: bool = True) -> None:
    """Draw `text` centered in `box` (left, top, right, bottom) of `img`, on a dark bar if `bar`."""
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = box
    if bar:
        draw.rectangle((left, top, right - 1, bottom - 1), fill=_BAR)
    text = _fit_text(draw, text, max(0, right - left - 4))
    if not text:
        return
    font = _font()
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    x = left + (right - left - (x1 - x0)) // 2 - x0
    y = top + (bottom - top - (y1 - y0)) // 2 - y0
    draw.text((x, y), text, fill=_TEXT, font=font)


def label(img: Image.Image, text: str, *, position: str = "below") -> Image.Image:
    """Return a copy of `img` (converted to RGB) with `text` on a dark caption bar.

    position: "below" or "above" adds a bar of `CAPTION_HEIGHT` px, so the result is
    (W, H + CAPTION_HEIGHT); "inside" draws the bar over the bottom `CAPTION_HEIGHT` rows and keeps (W, H).
    Text that does not fit the width is shortened with "..". Uses Pillow's embedded default font, so it
    works with no font files installed.
    """
    img = img.convert("RGB")
    width, height = img.size
    if position == "inside":
        out = img.copy()
        _draw_caption(out, (0, max(0, height - CAPTION_HEIGHT), width, height), text)
        return out
    if position not in ("below", "above"):
        raise ValueError(f'position must be "below", "above" or "inside", got {position!r}')
    out = Image.new("RGB", (width, height + CAPTION_HEIGHT), _BAR)
    image_top = 0 if position == "below" else CAPTION_HEIGHT
    bar_top = height if position == "below" else 0
    out.paste(img, (0, image_top))
    _draw_caption(out, (0, bar_top, width, bar_top + CAPTION_HEIGHT), text)
    return out


# --------------------------------------------------------------------------------------------- composite


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
    source: Tensor, generated: Tensor, mask: Tensor, *, feather: float = 2.0, poisson: bool = False
) -> Tensor:
    """Place the generated subject into the source photo; returns [3, H, W] at the source's size.

    source [3, H, W], generated [3, h, w] and its subject mask [h, w], all in [0, 1]. The generated
    image and the mask are resized to (H, W) (bilinear) and the mask is binarized at 0.5 (`b`). Then

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
    gen = resize_image(_as_image(generated, "generated"), (height, width))  # [3, H, W]
    binary = (resize_image(_as_mask(mask), (height, width)) > 0.5).float()  # [H, W]
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


# --------------------------------------------------------------------------------------------- grids


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


def contact_sheet(
    row_headers: Sequence[tuple[Tensor, Tensor]],
    cells: Sequence[Sequence[tuple[Tensor, str] | None]],
    column_titles: Sequence[str],
    *,
    cell_size: int = 128,
    row_titles: Sequence[str] | None = None,
) -> Image.Image:
    """One picture of a whole run: rows are sources, columns are classes.

    Each row starts with its source photo [3, H, W] and target mask [H, W] (`row_headers[r]`), then one
    cell per class: `cells[r][c]` = (best image [3, h, w], text), the text written on the image
    (e.g. "IoU 0.83"), or None for an empty gray cell (e.g. a skipped source). Images are letterboxed
    (aspect kept) into cell_size x cell_size squares. A title bar on top names the columns "source",
    "target", *column_titles; `row_titles[r]` (e.g. the file name) is written on the source photo.

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
    for r, ((photo, target), row) in enumerate(zip(row_headers, cells, strict=True)):
        y = CAPTION_HEIGHT + GAP + r * (cell_size + GAP)
        photo_tile = to_pil(_fit(_as_image(photo, f"row_headers[{r}] photo"), square))
        if row_titles is not None:
            photo_tile = label(photo_tile, row_titles[r], position="inside")
        out.paste(photo_tile, (x_of(0), y))
        out.paste(to_pil(_fit(_mask_rgb(_as_mask(target, f"row_headers[{r}] target")), square)), (x_of(1), y))
        for c, cell in enumerate(row):
            if cell is None:
                out.paste(_canvas(cell_size, cell_size, _EMPTY), (x_of(c + 2), y))
                continue
            image, text = cell
            tile = to_pil(_fit(_as_image(image, f"cells[{r}][{c}]"), square))
            out.paste(label(tile, text, position="inside") if text else tile, (x_of(c + 2), y))
    return out


def tensorboard_panel(
    source: Tensor,
    target: Tensor,
    best: Tensor,
    best_mask: Tensor,
    composite: Tensor,
    *,
    size: int = 128,
) -> Tensor:
    """[source | target | current best | its mask | composite] as one [3, size, 5 * size] float image.

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
    return torch.cat(parts, dim=2).clamp(0, 1)  # [3, size, 5 * size]
