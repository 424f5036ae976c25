"""Tests for silhouette_lightning.outputs.pictures and the shipped sample masks (tiny tensors, CPU)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageFont
from PIL._util import DeferredError
from scipy import ndimage

from silhouette_lightning.outputs.pictures import (
    CAPTION_HEIGHT,
    GAP,
    composite,
    contact_sheet,
    label,
    mask_overlay,
    progress_gif,
    resize_image,
    strip,
    tensorboard_panel,
    to_pil,
)
from silhouette_lightning.outputs.pictures import text as picture_text

REPO = Path(__file__).resolve().parents[2]
SAMPLES = ["dog/dog_sitting.png", "dog/dog_standing.png", "cat/cat_sitting.png", "bird/bird_perched.png"]


def _square_mask(size: int, lo: int, hi: int) -> torch.Tensor:
    mask = torch.zeros(size, size)
    mask[lo:hi, lo:hi] = 1
    return mask


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ basics


def test_to_pil_modes_and_values() -> None:
    rgb = to_pil(torch.tensor([[[0.0, 1.0]], [[0.5, 2.0]], [[-1.0, 0.25]]]))  # [3, 1, 2]
    assert rgb.mode == "RGB" and rgb.size == (2, 1)
    assert rgb.getpixel((0, 0)) == (0, 128, 0) and rgb.getpixel((1, 0)) == (255, 255, 64)
    gray = to_pil(torch.tensor([[0.0, 1.0, 0.5]]))  # [1, 3] read as [H, W]
    assert gray.mode == "L" and gray.size == (3, 1) and gray.tobytes() == bytes([0, 255, 128])


def test_resize_image_keeps_rank() -> None:
    assert resize_image(_rand(3, 10, 12), (5, 7)).shape == (3, 5, 7)
    assert resize_image(_rand(10, 12), (20, 4)).shape == (20, 4)
    same = _rand(3, 4, 4)
    assert torch.equal(resize_image(same, (4, 4)), same)
    assert torch.allclose(resize_image(torch.full((3, 8, 8), 0.3), (3, 5)), torch.full((3, 3, 5), 0.3))


# ------------------------------------------------------------------------------------------ composite


def test_composite_exact_inside_and_outside_blended_at_edge() -> None:
    size, lo, hi, feather = 40, 12, 28, 2.0
    radius = math.ceil(3 * feather)
    src, gen = _rand(3, size, size, seed=1), _rand(3, size, size, seed=2)
    mask = _square_mask(size, lo, hi)
    out = composite(src, gen, mask, feather=feather)
    assert out.shape == src.shape

    square = ndimage.generate_binary_structure(2, 2)
    inside = torch.from_numpy(ndimage.binary_erosion(mask.numpy() > 0.5, square, iterations=radius))
    outside = ~torch.from_numpy(ndimage.binary_dilation(mask.numpy() > 0.5, square, iterations=radius))
    assert inside.any() and outside.any()
    assert torch.equal(out[:, inside], gen[:, inside])
    assert torch.equal(out[:, outside], src[:, outside])

    # A constant 0 photo and constant 1 subject make the output the blend weight itself.
    weight = composite(torch.zeros(3, size, size), torch.ones(3, size, size), mask, feather=feather)[0]
    row = weight[size // 2]
    assert 0 < row[lo - 1] < 0.5 < row[lo] < 1  # both sides of the edge are blended...
    assert torch.all(row[: lo - radius] == 0) and torch.all(row[lo + radius : size // 2] == 1)
    assert torch.all(row[:20].diff() >= 0)  # ...and the weight rises monotonically across it


def test_composite_feather_zero_is_a_hard_cut() -> None:
    src, gen = _rand(3, 24, 24, seed=3), _rand(3, 24, 24, seed=4)
    mask = _square_mask(24, 5, 17)
    out = composite(src, gen, mask, feather=0)
    assert torch.equal(out, torch.where(mask.bool(), gen, src))


def test_composite_resizes_generated_and_mask_to_the_source() -> None:
    src = _rand(3, 32, 48, seed=5)
    gen = torch.ones(3, 16, 16)
    mask = _square_mask(16, 4, 12)  # upsampled to rows 8..23 and columns 12..35 of the source
    out = composite(src, gen, mask, feather=1.0)
    assert out.shape == (3, 32, 48)
    assert torch.equal(out[:, 14:18, 18:30], torch.ones(3, 4, 12))
    assert torch.equal(out[:, :3], src[:, :3]) and torch.equal(out[:, :, :8], src[:, :, :8])


def test_composite_poisson_without_opencv_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(ImportError, match="pip install opencv-python-headless"):
        composite(torch.zeros(3, 8, 8), torch.ones(3, 8, 8), _square_mask(8, 2, 6), poisson=True)


def test_composite_poisson_with_opencv() -> None:
    pytest.importorskip("cv2")
    src = torch.full((3, 48, 48), 0.25)
    gen = _rand(3, 48, 48, seed=6)
    mask = _square_mask(48, 0, 30)  # touches the border, which plain seamlessClone rejects
    out = composite(src, gen, mask, poisson=True)
    assert out.shape == (3, 48, 48) and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out[:, 36:, 36:], src[:, 36:, 36:], atol=1 / 255)
    assert not torch.allclose(out[:, 5:25, 5:25], src[:, 5:25, 5:25], atol=0.02)


def test_mask_overlay_tints_only_the_subject() -> None:
    image = torch.zeros(3, 8, 8)
    out = mask_overlay(image, _square_mask(4, 0, 2), color=(1.0, 0.0, 0.0), alpha=0.5)
    assert out.shape == (3, 8, 8)
    assert torch.allclose(out[:, 1, 1], torch.tensor([0.5, 0.0, 0.0]))
    assert torch.equal(out[:, 7, 7], torch.zeros(3))


# ------------------------------------------------------------------------------------------ text


def _bright_pixels(img: Image.Image, box: tuple[int, int, int, int]) -> int:
    return sum(img.crop(box).convert("L").histogram()[151:])


@pytest.mark.parametrize("freetype", [True, False])
def test_label_adds_a_readable_bar(monkeypatch: pytest.MonkeyPatch, freetype: bool) -> None:
    if not freetype:
        # As on a Pillow without FreeType: load_default() falls back to the embedded bitmap font.
        monkeypatch.setattr(ImageFont, "core", DeferredError(ImportError("no FreeType")))
    picture_text._font.cache_clear()
    try:
        assert isinstance(picture_text._font(), ImageFont.FreeTypeFont) == freetype
        img = Image.new("RGB", (64, 40), (0, 0, 0))
        below = label(img, "IoU 0.83")
        assert below.size == (64, 40 + CAPTION_HEIGHT)
        assert _bright_pixels(below, (0, 40, 64, 40 + CAPTION_HEIGHT)) > 10  # the text is drawn
        assert _bright_pixels(below, (0, 0, 64, 40)) == 0  # the picture is untouched
        above = label(img, "IoU 0.83", position="above")
        assert above.size == below.size and _bright_pixels(above, (0, 0, 64, CAPTION_HEIGHT)) > 10
        inside = label(img, "a caption far too long to fit in sixty-four pixels", position="inside")
        assert inside.size == img.size and _bright_pixels(inside, (0, 40 - CAPTION_HEIGHT, 64, 40)) > 10
    finally:
        picture_text._font.cache_clear()
    with pytest.raises(ValueError, match="position"):
        label(img, "x", position="left")


# ------------------------------------------------------------------------------------------ layouts


def test_strip_size_formula_and_layout() -> None:
    h, w, n = 20, 24, 3
    frames = [torch.full((3, h, w), 0.1 * (i + 1)) for i in range(n)]
    frames[1] = torch.zeros(3, 40, 48)  # other sizes are resized to the first frame's
    masks = [torch.ones(10, 12) for _ in range(n)]
    target = torch.ones(h, w)
    img = strip(frames, masks, [f"step {i}" for i in range(n)], target=target)
    cols, rows = n + 1, 2
    assert img.size == (cols * w + (cols + 1) * GAP, rows * h + (rows + 1) * GAP + CAPTION_HEIGHT)
    mask_top = 2 * GAP + h + CAPTION_HEIGHT
    assert img.getpixel((GAP + w // 2, mask_top + 2)) == (255, 255, 255)  # target, first in the mask row
    assert img.getpixel((GAP + (w + GAP) + 3, GAP + 3)) == (26, 26, 26)  # frame 0 sits in column 1

    plain = strip(frames[:2])
    assert plain.size == (2 * w + 3 * GAP, h + 2 * GAP)
    with pytest.raises(ValueError, match="masks"):
        strip(frames, masks[:1])


def test_progress_gif_frames_and_size(tmp_path: Path) -> None:
    h, w, n = 16, 20, 4
    frames = [torch.full((3, h, w), i / n) for i in range(n)]
    masks = [_square_mask(8, 0, i + 1) for i in range(n)]
    path = progress_gif(frames, masks, torch.ones(h, w), tmp_path / "out" / "search.gif", duration_ms=150)
    assert path == tmp_path / "out" / "search.gif"
    assert [p.name for p in path.parent.iterdir()] == ["search.gif"]  # no temporary file left behind
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == n and gif.info.get("loop") == 0
        assert gif.size == (3 * w + 4 * GAP, h + 2 * GAP + CAPTION_HEIGHT)
        assert gif.info.get("duration") == 150
        gif.seek(n - 1)
        last = gif.convert("RGB")
    assert last.getpixel((2 * GAP + 2 * w + w // 2, GAP + 2)) == (255, 255, 255)  # the target cell

    captioned = progress_gif(frames, masks, torch.ones(h, w), tmp_path / "c.gif", captions=list("abcd"))
    with Image.open(captioned) as gif:
        assert gif.n_frames == n


def test_contact_sheet_size_formula_and_cells() -> None:
    cell = 32
    headers = [(_rand(3, 30, 40, seed=7), torch.ones(30, 40)), (_rand(3, 64, 32, seed=8), torch.zeros(64, 32))]
    red = torch.zeros(3, 16, 16)
    red[0] = 1
    cells = [[(red, "IoU 0.83"), None, (red, "")], [None, (red, "IoU 0.10"), (red, "IoU 0.50")]]
    img = contact_sheet(headers, cells, ["beagle", "tabby", "robin"], cell_size=cell, row_titles=["a", "b"])
    cols, rows = 3 + 2, 2
    assert img.size == (cols * cell + (cols + 1) * GAP, CAPTION_HEIGHT + rows * cell + (rows + 1) * GAP)

    def center(row: int, col: int) -> tuple[int, int]:
        return GAP + col * (cell + GAP) + cell // 2, CAPTION_HEIGHT + GAP + row * (cell + GAP) + 4

    assert img.getpixel(center(0, 2)) == (255, 0, 0)  # best image, first class
    assert img.getpixel(center(0, 3)) == picture_text._EMPTY  # None: empty gray cell
    assert img.getpixel(center(0, 1)) == (255, 255, 255)  # target mask
    assert img.getpixel(center(1, 1)) == (0, 0, 0)
    with pytest.raises(ValueError, match="columns"):
        contact_sheet(headers, [[None], [None]], ["a", "b"])


def test_tensorboard_panel_shape_and_order() -> None:
    size = 24
    panel = tensorboard_panel(
        torch.zeros(3, 40, 40),
        torch.ones(20, 30),
        torch.full((3, 16, 16), 0.5),
        torch.zeros(16, 16),
        torch.ones(3, 40, 40),
        size=size,
        captions=None,
    )
    assert panel.shape == (3, size, 5 * size) and panel.dtype == torch.float32
    assert panel.min() >= 0 and panel.max() <= 1
    middle = panel[:, size // 2, size // 2 :: size]  # [3, 5]: the centre pixel of each part
    assert torch.allclose(middle[0], torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0]))


def test_tensorboard_panel_captions_each_part() -> None:
    parts = (
        torch.zeros(3, 40, 40),
        torch.ones(20, 30),
        torch.full((3, 16, 16), 0.5),
        torch.zeros(16, 16),
        torch.ones(3, 40, 40),
    )
    plain = tensorboard_panel(*parts, size=64, captions=None)
    captioned = tensorboard_panel(*parts, size=64)
    assert captioned.shape == (3, CAPTION_HEIGHT + 64, 5 * 64)
    assert torch.equal(captioned[:, CAPTION_HEIGHT:], plain)
    bar = captioned[:, :CAPTION_HEIGHT]  # dark bars with light text over every part
    for i in range(5):
        part = bar[:, :, i * 64 : (i + 1) * 64]
        assert part.min() < 0.2 and part.max() > 0.8, i


# ------------------------------------------------------------------------------------------ samples


def _load_make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", REPO / "scripts" / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_masks_are_small_two_valued_silhouettes(name: str) -> None:
    path = REPO / "data" / "samples" / name
    assert path.is_file() and path.stat().st_size < 10_000
    with Image.open(path) as img:
        assert img.size == (256, 256)
        values = img.convert("L").histogram()
    assert {v for v, count in enumerate(values) if count} == {0, 255}
    assert 0.08 < values[255] / (256 * 256) < 0.5  # a subject, not a speck and not the background


def test_make_samples_recreates_the_shipped_files(tmp_path: Path) -> None:
    written = _load_make_samples().main(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(SAMPLES)
    for name in SAMPLES:  # pixels, not bytes: another zlib may compress the same picture differently
        with Image.open(tmp_path / name) as new, Image.open(REPO / "data" / "samples" / name) as shipped:
            assert new.convert("L").tobytes() == shipped.convert("L").tobytes(), name
