"""Captions drawn on pictures, in DejaVu Sans (shipped with matplotlib, a dependency: it covers Greek, Cyrillic and
most accented names), else Pillow's embedded default font (which draws boxes for non-Latin letters).

Layout constants used by the size formulas of the grid docstrings:
- `GAP` (2 px): the gray gutter between (and around) the cells of a grid.
- `CAPTION_HEIGHT` (16 px): the height of one caption bar.
"""

from __future__ import annotations

import functools

from PIL import Image, ImageDraw, ImageFont

GAP = 2
CAPTION_HEIGHT = 16
_FONT_SIZE = 12  # Aileron size when FreeType is there; the bitmap fallback is about 11 px tall anyway
_GUTTER = (96, 96, 96)  # mid gray: tells white subject masks apart from the background between cells
_EMPTY = (160, 160, 160)  # lighter gray for "no result" cells
_BAR = (24, 24, 24)
_TEXT = (240, 240, 240)


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans at `_FONT_SIZE` from matplotlib's fonts; else Pillow's embedded Aileron with FreeType, else its
    bitmap font."""
    try:
        from matplotlib import font_manager

        path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=False)
        return ImageFont.truetype(path, _FONT_SIZE)
    except (ImportError, ValueError, OSError):
        pass
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
