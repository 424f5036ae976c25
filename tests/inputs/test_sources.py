"""Tests for silhouette_lightning.inputs.sources: finding files, loading every kind of good and bad file, output
names."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus import CORPUS_MAX_PIXELS, HEIGHT, WIDTH, blob_mask, make_bad_corpus, make_mask_corpus
from PIL import Image, ImageFile

from silhouette_lightning.core.errors import SourceError, UsageError
from silhouette_lightning.inputs import sources
from silhouette_lightning.inputs.sources import Source, discover_sources, load_mask, load_rgb, output_name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_bad_corpus(folder)


@pytest.fixture(scope="module")
def masks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("masks")
    return folder, make_mask_corpus(folder)


def _case_names(maker: Callable[[Path], dict[str, str]]) -> list[str]:
    """The file names a corpus maker writes, for parametrize (written once into a throwaway folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        return sorted(maker(Path(tmp)))


PHOTO_CASES = _case_names(make_bad_corpus)
MASK_CASES = _case_names(make_mask_corpus)


# --------------------------------------------------------------------------------------------------- load_rgb


@pytest.mark.parametrize("name", PHOTO_CASES)
def test_load_rgb_gives_each_corpus_file_its_reason(corpus: tuple[Path, dict[str, str]], name: str) -> None:
    folder, expected = corpus
    if expected[name] != "ok":
        with pytest.raises(SourceError) as info:
            load_rgb(folder / name, max_pixels=CORPUS_MAX_PIXELS)
        assert expected[name] in str(info.value)
        return
    image = load_rgb(folder / name, max_pixels=CORPUS_MAX_PIXELS)
    assert image.dtype == torch.float32
    assert image.shape == ((3, WIDTH, HEIGHT) if name == "exif_rotated.jpg" else (3, HEIGHT, WIDTH))
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    # the blob in the middle is brighter than the background corner, whatever the file's mode
    h, w = image.shape[1:]
    assert image[:, h // 2, w // 2].mean() > image[:, 1, 1].mean() + 0.2, name


def test_load_rgb_16_bit_gray_keeps_its_range(corpus: tuple[Path, dict[str, str]]) -> None:
    folder, _ = corpus
    image = load_rgb(folder / "gray16.png", max_pixels=CORPUS_MAX_PIXELS)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    assert float(image.min()) == 0.0
    # read as 8-bit, every value above 255 would clip to white; scaled properly the blob is 50000/65535
    assert float(image.max()) == pytest.approx(50_000 / 65535, abs=1e-4)
    assert float((image == 1.0).float().mean()) == 0.0
    assert len(torch.unique(image[0, 0])) > WIDTH // 2


def test_load_rgb_honours_exif_orientation(corpus: tuple[Path, dict[str, str]]) -> None:
    folder, _ = corpus
    image = load_rgb(folder / "exif_rotated.jpg", max_pixels=CORPUS_MAX_PIXELS)  # [3, 64, 48]
    # orientation 6 turns the picture a quarter clockwise: the red marker stored top-left shows top-right
    top_right, top_left = image[:, 1:8, -8:-1].mean(dim=(1, 2)), image[:, 1:8, 1:8].mean(dim=(1, 2))
    assert top_right[0] > 0.8 and top_right[1] < 0.3
    assert top_left[0] < 0.3


def test_load_rgb_puts_transparency_on_mid_gray(corpus: tuple[Path, dict[str, str]]) -> None:
    folder, _ = corpus
    rgba = load_rgb(folder / "rgba.png", max_pixels=CORPUS_MAX_PIXELS)
    assert torch.allclose(rgba[:, 0, 0], torch.full((3,), 0.5))  # alpha 0 outside the blob
    assert rgba[:, HEIGHT // 2, WIDTH // 2].mean() > 0.8
    palette = load_rgb(folder / "palette_transparent.png", max_pixels=CORPUS_MAX_PIXELS)
    with Image.open(folder / "palette_transparent.png") as img:
        transparent = torch.from_numpy(np.asarray(img) == 0)
    assert transparent.any()
    assert torch.all(palette[:, transparent] == 0.5)


def test_load_rgb_scales_float_and_bilevel_images(corpus: tuple[Path, dict[str, str]]) -> None:
    folder, _ = corpus
    floats = load_rgb(folder / "float.tif", max_pixels=CORPUS_MAX_PIXELS)
    assert float(floats.min()) == 0.0 and float(floats.max()) == 1.0
    bilevel = load_rgb(folder / "bilevel.png", max_pixels=CORPUS_MAX_PIXELS)
    assert set(torch.unique(bilevel).tolist()) == {0.0, 1.0}


def test_pixel_limit_default_refuses_a_bomb_from_its_header(corpus: tuple[Path, dict[str, str]]) -> None:
    folder, _ = corpus
    # 10^10 pixels would need 10 GB to decode; the header alone must be enough to refuse it
    with pytest.raises(SourceError, match=re.escape("= 10000 Mpx, over the limit of 50 Mpx (--max-pixels)")):
        load_rgb(folder / "bomb.png")


def test_pillow_limit_is_ours_and_restored(
    corpus: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = corpus
    # Pillow alone would refuse this 64x48 image under such a limit; --max-pixels decides instead
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert load_rgb(folder / "good.png").shape == (3, HEIGHT, WIDTH)
    assert Image.MAX_IMAGE_PIXELS == 1000
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_min_side_is_configurable(corpus: tuple[Path, dict[str, str]]) -> None:
    folder, _ = corpus
    with pytest.raises(SourceError, match=r"^image is 64x48 px; at least 50 px per side needed$"):
        load_rgb(folder / "good.png", min_side=50)
    assert load_rgb(folder / "tiny.png", min_side=1).shape == (3, 1, 1)


def test_load_rgb_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="^file not found$"):
        load_rgb(tmp_path / "gone.jpg")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(SourceError, match="is a folder, not a file"):
        load_rgb(tmp_path / "folder.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")  # opening a FIFO would block the run forever
    with pytest.raises(SourceError, match="^not a regular file$"):
        load_rgb(tmp_path / "pipe.jpg")
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(SourceError, match="^broken symbolic link$"):
        load_rgb(tmp_path / "broken.jpg")


def test_links_out_of_the_data_folder_are_refused(tmp_path: Path, corpus: tuple[Path, dict[str, str]]) -> None:
    folder, _ = corpus
    data = tmp_path / "data"
    data.mkdir()
    (data / "outside.jpg").symlink_to(folder / "good.jpg")
    (data / "real.jpg").write_bytes((folder / "good.jpg").read_bytes())
    (data / "inside.jpg").symlink_to(data / "real.jpg")
    with pytest.raises(SourceError, match="^symbolic link outside the data folder$"):
        load_rgb(data / "outside.jpg", data_dir=data)
    with pytest.raises(SourceError, match="^symbolic link outside the data folder$"):
        load_mask(data / "outside.jpg", data_dir=data)
    assert load_rgb(data / "inside.jpg", data_dir=data).shape == (3, HEIGHT, WIDTH)
    (data / "loop.jpg").symlink_to(data / "loop.jpg")
    with pytest.raises(SourceError, match="symbolic link loop"):
        load_rgb(data / "loop.jpg", data_dir=data)


# -------------------------------------------------------------------------------------------------- load_mask


@pytest.mark.parametrize("name", MASK_CASES)
def test_load_mask_corpus(masks: tuple[Path, dict[str, str]], name: str) -> None:
    folder, expected = masks
    if expected[name] not in ("ok", "thresholded"):
        with pytest.raises(SourceError) as info:
            load_mask(folder / name)
        assert expected[name] in str(info.value)
        return
    mask, thresholded = load_mask(folder / name)
    assert thresholded == (expected[name] == "thresholded")
    assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == torch.float32
    assert set(torch.unique(mask).tolist()) == {0.0, 1.0}
    reference = torch.from_numpy(np.asarray(blob_mask()) > 0)
    if name == "mask_soft.png":  # the dim left part of the blob falls under half the range
        assert mask.bool().logical_and(~reference).sum() == 0 and 0 < mask.sum() < reference.sum()
    else:
        assert torch.equal(mask.bool(), reference)


@pytest.mark.parametrize("name", ["truncated.png", "text.jpg", "empty.png", "tiny.png"])
def test_load_mask_gives_the_same_reasons_as_load_rgb(corpus: tuple[Path, dict[str, str]], name: str) -> None:
    folder, expected = corpus
    with pytest.raises(SourceError) as info:
        load_mask(folder / name, max_pixels=CORPUS_MAX_PIXELS)
    assert expected[name] in str(info.value)


def test_load_mask_honours_exif(tmp_path: Path) -> None:
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (0, 0, 20, 10))  # subject in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    mask.save(tmp_path / "m.png", exif=exif)
    loaded, thresholded = load_mask(tmp_path / "m.png")
    assert loaded.shape == (64, 48) and not thresholded
    assert loaded[:20, -10:].all() and loaded.sum() == 200  # now top-right, 10 wide and 20 tall


# -------------------------------------------------------------------------------------------------- discovery


def _touch(root: Path, *relative: str) -> None:
    for rel in relative:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def _layout(sources_found: list[Source]) -> list[tuple[str, str | None]]:
    return [(s.key, s.subject) for s in sources_found]


def test_missing_or_wrong_data_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="data folder .*nope does not exist"):
        discover_sources(tmp_path / "nope")
    _touch(tmp_path, "photo.jpg")
    with pytest.raises(UsageError, match="is not a folder"):
        discover_sources(tmp_path / "photo.jpg")


def test_empty_data_folder_says_what_to_put_there(tmp_path: Path) -> None:
    _touch(tmp_path, ".DS_Store", ".hidden/dog.jpg", "__MACOSX/._dog.jpg")
    (tmp_path / "dog").mkdir()
    with pytest.raises(
        UsageError, match=r"holds no files; put photos in it, or folders named by subject: .*/dog/\*\.jpg"
    ):
        discover_sources(tmp_path)


def test_flat_layout(tmp_path: Path) -> None:
    _touch(tmp_path, "b.png", "a.jpg", "a.png", "notes.txt", ".DS_Store", "._a.jpg")
    found = discover_sources(tmp_path)
    assert _layout(found) == [("a.jpg", None), ("a.png", None), ("b.png", None), ("notes.txt", None)]
    assert found[0].path == tmp_path / "a.jpg"
    assert {s.subject for s in discover_sources(tmp_path, subject="Dogs")} == {"dog"}


def test_per_class_layout_uses_canonical_voc_names(tmp_path: Path) -> None:
    _touch(tmp_path, "dog/x.jpg", "cats/x.jpg", "tv/a.png", "Potted Plant/p.jpg", "dog/.thumbs/x.jpg")
    assert _layout(discover_sources(tmp_path)) == [
        ("Potted Plant/p.jpg", "pottedplant"),
        ("cats/x.jpg", "cat"),
        ("dog/x.jpg", "dog"),
        ("tv/a.png", "tvmonitor"),
    ]


def test_nested_folders_inherit_the_class_folder_subject(tmp_path: Path) -> None:
    _touch(tmp_path, "dog/2023/summer/beach.jpg", "dog/2023/park.jpg", "dog/top.jpg", "dog/__MACOSX/._top.jpg")
    assert _layout(discover_sources(tmp_path)) == [
        ("dog/2023/park.jpg", "dog"),
        ("dog/2023/summer/beach.jpg", "dog"),
        ("dog/top.jpg", "dog"),
    ]


def test_mixed_layout(tmp_path: Path) -> None:
    _touch(tmp_path, "loose.jpg", "bird/b.jpg")
    assert _layout(discover_sources(tmp_path)) == [("bird/b.jpg", "bird"), ("loose.jpg", None)]
    assert _layout(discover_sources(tmp_path, subject="cat")) == [("bird/b.jpg", "cat"), ("loose.jpg", "cat")]


def test_unknown_class_folders_are_all_named_with_hints(tmp_path: Path) -> None:
    _touch(tmp_path, "dgo/a.jpg", "kitten/b.jpg", "dog/c.jpg")
    with pytest.raises(UsageError) as info:
        discover_sources(tmp_path)
    message = str(info.value)
    assert "dgo" in message and "did you mean: dog" in message and "kitten" in message and "--subject" in message
    # a given subject overrides folder names, so the same folder is fine then
    assert {s.subject for s in discover_sources(tmp_path, subject="dog")} == {"dog"}


def test_unknown_subject_argument(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg")
    with pytest.raises(UsageError, match="unknown VOC class 'dgo'"):
        discover_sources(tmp_path, subject="dgo")


def test_empty_folder_with_any_name_is_ignored(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg")
    (tmp_path / "misc" / "empty").mkdir(parents=True)
    assert _layout(discover_sources(tmp_path)) == [("a.jpg", None)]


def test_symbolic_links_in_the_data_folder(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    _touch(data, "dog/a.jpg")
    _touch(elsewhere, "secret.jpg", "cat/c.jpg")
    (data / "dog" / "leak.jpg").symlink_to(elsewhere / "secret.jpg")
    (data / "dog" / "again").symlink_to(data / "dog")  # a folder loop: must not recurse forever
    (data / "cat").symlink_to(elsewhere / "cat")
    found = {s.key: s for s in discover_sources(data)}
    assert sorted(found) == ["cat", "dog/a.jpg", "dog/leak.jpg"]
    for key in ("cat", "dog/leak.jpg"):  # listed, so that the run reports them as skipped
        with pytest.raises(SourceError, match="^symbolic link outside the data folder$"):
            load_rgb(found[key].path, data_dir=data)


def test_unreadable_subfolder_is_reported_not_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path, "dog/ok.jpg", "dog/locked/x.jpg")
    real_scandir = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    found = discover_sources(tmp_path)
    assert _layout(found) == [("dog/locked", "dog"), ("dog/ok.jpg", "dog")]
    with pytest.raises(SourceError, match="folder"):
        load_rgb(found[0].path)


def test_keys_keep_extensions_and_folders_apart(tmp_path: Path) -> None:
    _touch(tmp_path, "dog/x.jpg", "cat/x.jpg", "x.jpg", "x.png")
    keys = [s.key for s in discover_sources(tmp_path)]
    assert keys == ["cat/x.jpg", "dog/x.jpg", "x.jpg", "x.png"]
    assert len({output_name(k) for k in keys}) == 4


# ------------------------------------------------------------------------------------------------ output names

HOSTILE_KEYS = [
    ".",
    "..",
    "../../etc/passwd",
    "/etc/passwd",
    "dog/../../x.jpg",
    ".hidden.jpg",
    "-rf.jpg",
    "--help",
    "a\\b.jpg",
    "a b.jpg",
    "",
    "café/été.jpg",
    "日本の犬.jpg",
    "emoji 🐶.png",
    "bad\udcffbyte.jpg",
    "new\nline.jpg",
    "x" * 500 + ".jpg",
    "d/" * 100 + "x.jpg",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_output_name_is_one_safe_component(tmp_path: Path, key: str) -> None:
    name = output_name(key)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name), name
    assert len(name) <= 120
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert output_name(key) == name  # the same key always gets the same folder


def test_output_name_is_readable() -> None:
    assert output_name("dog/rex.jpg") == "dog__rex.jpg"
    assert output_name("IMG_0001.JPG") == "IMG_0001.JPG"
    assert output_name("dog/2023/a-b.c.jpg") == "dog__2023__a-b.c.jpg"
    assert re.fullmatch(r"cafe__ete\.jpg-[0-9a-f]{12}", output_name("café/été.jpg"))
    assert re.fullmatch(r"a_b\.jpg-[0-9a-f]{12}", output_name("a b.jpg"))


def test_output_names_never_collide() -> None:
    keys = [
        "a/b.jpg",
        "a__b.jpg",
        "a_/b.jpg",
        "a/_b.jpg",
        "a___b.jpg",
        "a_b.jpg",
        "a b.jpg",
        "a?b.jpg",
        "café.jpg",
        "cafe.jpg",
        "x" * 300,
        "x" * 301,
        "x" * 119 + "/y",
        "x" * 119 + "__y",
    ]
    # a name that already looks hashed must not equal the hashed name of another key
    keys.append(output_name("a b.jpg"))
    keys += HOSTILE_KEYS
    names = [output_name(k) for k in keys]
    assert len(set(names)) == len(set(keys))


def test_source_folders_do_not_end_like_pictures_and_stay_distinct():
    from silhouette_lightning.inputs.sources import source_folder

    assert source_folder("dog/rex.jpg") == "dog__rex_jpg"
    assert source_folder("dog/dog_sitting.png") == "dog__dog_sitting_png"
    keys = ["a.png", "a.jpg", "a_png.png", "a.PNG", "a b.png", "x/a.png", "x__a.png"]
    assert len({source_folder(k) for k in keys}) == len(keys)
