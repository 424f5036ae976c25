"""Small files that imitate what users keep in photo folders, good and bad, made on the spot (no downloads).

Every photo is a bright blob on a dark background, so segmenter tests can use the good ones too.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# The expected reasons assume this limit (load_rgb(..., max_pixels=CORPUS_MAX_PIXELS)): the 64x48 photos fit and
# "huge.png" (200x200) does not, without allocating anything big.
CORPUS_MAX_PIXELS = 10_000
WIDTH, HEIGHT = 64, 48


def blob_photo(width: int = WIDTH, height: int = HEIGHT, *, seed: int = 0) -> Image.Image:
    """An RGB picture: a warm bright ellipse on a dark blue-gray background, with mild noise.

    The noise keeps the encoded files from compressing to almost nothing, so cutting one in half cuts the pixel
    data rather than the header.
    """
    img = Image.new("RGB", (width, height), (20, 22, 35))
    ImageDraw.Draw(img).ellipse(
        (width * 0.25, height * 0.2, width * 0.75, height * 0.8), fill=(235, 215, 190), outline=None
    )
    noise = np.random.default_rng(seed).integers(-12, 13, size=(height, width, 3))
    pixels = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def blob_mask(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """The blob of blob_photo as a two-valued "L" mask: 255 subject, 0 background."""
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).ellipse((width * 0.25, height * 0.2, width * 0.75, height * 0.8), fill=255)
    return img


def _encoded(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    """The bytes of `img` saved in `fmt`."""
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height gray pixels while its data is a few bytes: a decompression bomb."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _gray16(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """A 16-bit grayscale ("I;16") left-to-right ramp over the whole 0-65535 range, brighter inside the blob."""
    ramp = np.linspace(0, 65535, width, dtype=np.float64)[None, :].repeat(height, axis=0)
    blob = np.asarray(blob_mask(width, height)) > 0
    values = np.where(blob, np.maximum(ramp, 50_000), ramp * 0.3)
    return Image.fromarray(values.astype(np.uint16))


def make_bad_corpus(folder: Path) -> dict[str, str]:
    """Write one file per case into `folder` and return {file name: reason substring that load_rgb gives, or "ok"}.

    Reasons assume load_rgb(path, max_pixels=CORPUS_MAX_PIXELS) and the default min_side of 16.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photo = blob_photo()
    good_jpg = _encoded(photo, "JPEG", quality=95)
    good_png = _encoded(photo, "PNG")

    rgba = photo.convert("RGBA")
    rgba.putalpha(blob_mask())
    palette = photo.quantize(colors=16)
    palette_transparent = palette.copy()
    palette_transparent.info["transparency"] = 0
    gray_alpha = photo.convert("LA")
    rotated = photo.copy()
    ImageDraw.Draw(rotated).rectangle((0, 0, 9, 9), fill=(255, 0, 0))  # a marker that shows which way is up
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the upright picture is 48 wide, 64 tall
    frames = [blob_photo(seed=s).quantize(colors=32) for s in range(3)]
    soft_mask = Image.fromarray(
        (np.asarray(blob_mask(), dtype=np.float32) * np.linspace(0.3, 1.0, WIDTH)[None, :]).astype(np.uint8), "L"
    )
    ramp_f = np.linspace(-3.0, 7.0, WIDTH * HEIGHT, dtype=np.float32).reshape(HEIGHT, WIDTH)

    files: dict[str, tuple[bytes, str]] = {
        "good.jpg": (good_jpg, "ok"),
        "good.png": (good_png, "ok"),
        "png_named.jpg": (good_png, "ok"),
        "PHOTO.JPEG": (good_jpg, "ok"),
        "good.webp": (_encoded(photo, "WEBP", quality=90), "ok"),
        "good.bmp": (_encoded(photo, "BMP"), "ok"),
        "notes.txt": (b"shopping list: milk, eggs\n", "not an image file"),
        "text.jpg": (b"this is not really a JPEG\n" * 10, "not an image file"),
        "IMG_0001.HEIC": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "convert it to JPEG or PNG"),
        "empty.png": (b"", "empty file"),
        "truncated.jpg": (good_jpg[: len(good_jpg) // 2], "truncated or corrupt image"),
        "truncated.png": (good_png[: len(good_png) // 2], "truncated or corrupt image"),
        "rgba.png": (_encoded(rgba, "PNG"), "ok"),
        "palette.png": (_encoded(palette, "PNG"), "ok"),
        "palette_transparent.png": (_encoded(palette_transparent, "PNG", transparency=0), "ok"),
        "gray.png": (_encoded(photo.convert("L"), "PNG"), "ok"),
        "gray_alpha.png": (_encoded(gray_alpha, "PNG"), "ok"),
        "gray16.png": (_encoded(_gray16(), "PNG"), "ok"),
        "float.tif": (_encoded(Image.fromarray(ramp_f, "F"), "TIFF"), "ok"),
        "bilevel.png": (_encoded(blob_mask().convert("1"), "PNG"), "ok"),
        "cmyk.jpg": (_encoded(photo.convert("CMYK"), "JPEG", quality=95), "ok"),
        "exif_rotated.jpg": (_encoded(rotated, "JPEG", quality=95, exif=exif), "ok"),
        "animated.gif": (_encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100), "ok"),
        "mask_soft.png": (_encoded(soft_mask, "PNG"), "ok"),
        "tiny.png": (_encoded(Image.new("RGB", (1, 1), (255, 255, 255)), "PNG"), "image is 1x1 px; at least 16 px"),
        "huge.png": (
            _encoded(blob_photo(200, 200), "PNG"),
            "image is 200x200 px = 0.04 Mpx, over the limit of 0.01 Mpx (--max-pixels)",
        ),
        "bomb.png": (_bomb_png(100_000, 100_000), "image is 100000x100000 px = 10000 Mpx, over the limit"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: expected for name, (_, expected) in files.items()}


def make_mask_corpus(folder: Path) -> dict[str, str]:
    """Write masks into `folder`; return {file name: "ok" (two-valued), "thresholded", or a load_mask reason}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mask = blob_mask()
    on = np.asarray(mask) > 0

    black_with_alpha = Image.new("RGBA", mask.size, (0, 0, 0, 0))
    black_with_alpha.putalpha(mask)  # the shape lives only in alpha: RGB is one flat colour
    white_on_transparent = Image.fromarray(np.where(on[..., None], 255, 0).astype(np.uint8).repeat(4, axis=-1), "RGBA")
    red = np.zeros((*on.shape, 3), dtype=np.uint8)
    red[on] = (255, 0, 0)
    soft = (np.asarray(mask, dtype=np.float32) * np.linspace(0.3, 1.0, WIDTH)[None, :]).astype(np.uint8)

    files: dict[str, tuple[Image.Image, str, str]] = {
        "mask_binary.png": (mask, "PNG", "ok"),
        "mask_bilevel.png": (mask.convert("1"), "PNG", "ok"),
        "mask_16bit.png": (Image.fromarray(on.astype(np.uint16) * 65535), "PNG", "ok"),
        "mask_alpha.png": (black_with_alpha, "PNG", "ok"),
        "mask_white_on_transparent.png": (white_on_transparent, "PNG", "ok"),
        "mask_red.png": (Image.fromarray(red, "RGB"), "PNG", "ok"),
        "mask_soft.png": (Image.fromarray(soft, "L"), "PNG", "thresholded"),
        "mask_jpeg.jpg": (mask, "JPEG", "thresholded"),
        "mask_empty.png": (Image.new("L", mask.size, 0), "PNG", "mask is empty: no subject pixels"),
        "mask_dim.png": (Image.new("L", mask.size, 40), "PNG", "mask is empty: no subject pixels"),
    }
    for name, (img, fmt, _) in files.items():
        img.save(folder / name, fmt)
    return {name: expected for name, (_, _, expected) in files.items()}
