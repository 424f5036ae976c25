"""Source photos and masks from a user's folder: find them, load them safely, and name their output folders.

Every problem with one file becomes a `SourceError` whose message is a short reason a user can act on, so a run
records `skipped: <reason>` for that file and goes on; problems with the folder as a whole are `UsageError`s.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from silhouette_lightning.core.classes import resolve_voc_class, voc_name
from silhouette_lightning.core.errors import SourceError, UsageError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

# Formats people have in photo folders that Pillow cannot decode: say so instead of a bare "not an image".
_UNSUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    {".heic", ".heif", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".raf", ".rw2", ".raw", ".svg", ".pdf"}
)

# Folders that archive tools and operating systems leave behind; they never hold a user's subjects.
_JUNK_FOLDERS: frozenset[str] = frozenset({"__MACOSX"})

# Transparent pixels need some colour before the segmenter sees them. Mid-gray is near the ImageNet mean, which the
# segmenter's normalisation maps to about zero, so it reads as "nothing there"; white or black would merge with a
# white or black subject (a cut-out of a black dog on black) and erase the very silhouette we want.
_MATTE = 0.5

_MAX_NAME = 120
_HASH_CHARS = 12
_SAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_CLEAN_KEY = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
_HASHED_NAME = re.compile(rf"-[0-9a-f]{{{_HASH_CHARS}}}$")

# Image.MAX_IMAGE_PIXELS is process-global; the lock keeps two loading threads from restoring each other's value.
_PIL_LIMIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Source:
    """One file found in the data folder.

    `key` is the path relative to the data folder in POSIX form with its extension (`dog/rex.jpg`): the source's
    identity in results and seeds. `subject` is a VOC class name, or None to let the segmenter decide.
    """

    key: str
    path: Path
    subject: str | None
    problem: str | None = None  # why the file is skipped, when known from its name alone


def shown(text: str | os.PathLike) -> str:
    """A file name as text that can be printed and written to UTF-8 files: bytes that are not UTF-8 (which
    Python keeps as surrogates) become `\\xff` escapes."""
    return os.fspath(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _named_source(key: str, path: Path, subject: str | None) -> Source:
    """A Source; a name that is not UTF-8 cannot be a key (seeds, CSV rows, folder names), so it gets an escaped
    key and a reason to skip it."""
    readable = shown(key)
    if readable == key:
        return Source(key, path, subject)
    return Source(readable, path, subject, "file name is not valid UTF-8; rename it")


# ----------------------------------------------------------------------------------------------------- discovery


def _visible(entry: os.DirEntry[str]) -> bool:
    """False for hidden names (".DS_Store", ".git") and archive debris ("__MACOSX")."""
    return not entry.name.startswith(".") and entry.name not in _JUNK_FOLDERS


def _is_linked_folder_inside(entry: os.DirEntry[str], root: Path) -> bool:
    """True for a symlink to a folder inside the data folder: its files are found through the real folder."""
    if not entry.is_symlink():
        return False
    try:
        target = Path(entry.path).resolve()
    except (OSError, RuntimeError):  # a link loop: leave it to the loader to report
        return False
    return target.is_dir() and target.is_relative_to(root)


def _walk_files(folder: Path, key_prefix: str, root: Path) -> Iterator[tuple[str, Path]]:
    """Yield (key, path) for every visible non-folder entry below `folder`, without following folder links.

    A folder that cannot be listed is yielded itself, so it is reported as skipped instead of vanishing silently.
    """
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if _visible(e)), key=lambda e: e.name)
    except OSError:
        yield key_prefix, folder
        return
    for entry in entries:
        key = f"{key_prefix}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_files(Path(entry.path), key, root)
        elif not _is_linked_folder_inside(entry, root):
            yield key, Path(entry.path)


def discover_sources(data_dir: Path, *, subject: str | None = None) -> list[Source]:
    """List every file in `data_dir`, sorted by key, with its subject.

    Files directly in `data_dir` get `subject` (None = decide later). Each top-level folder is a subject named after
    a VOC class ("dog", "cats", "tv"), and every file below it, however deep, has that subject; a given `subject`
    overrides folder names. Hidden files and folders are skipped; everything else is listed, non-images and links
    that leave the folder too, so that loading reports each one with a reason.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise UsageError(f"data folder {data_dir} does not exist")
    if not data_dir.is_dir():
        raise UsageError(f"data folder {data_dir} is not a folder; put the photo in a folder and give that")
    root = data_dir.resolve()
    forced = voc_name(resolve_voc_class(subject)) if subject is not None else None
    try:
        with os.scandir(data_dir) as it:
            top = sorted((e for e in it if _visible(e)), key=lambda e: e.name)
    except OSError as exc:
        raise UsageError(f"cannot read data folder {data_dir}: {exc.strerror or exc}") from exc

    sources: list[Source] = []
    unknown: list[str] = []
    for entry in top:
        if entry.is_dir(follow_symlinks=False):
            files = list(_walk_files(Path(entry.path), entry.name, root))
            if not files:
                continue
            folder_subject = forced
            if folder_subject is None:
                try:
                    folder_subject = voc_name(resolve_voc_class(entry.name))
                except UsageError as exc:
                    unknown.append(f"folder {data_dir / entry.name}: {exc}")
                    continue
            sources.extend(_named_source(key, path, folder_subject) for key, path in files)
        elif not _is_linked_folder_inside(entry, root):
            sources.append(_named_source(entry.name, Path(entry.path), forced))
    if unknown:
        raise UsageError(
            "subject folders must be named after a VOC class, or give one subject for all files (--subject):\n"
            + "\n".join(unknown)
        )
    if not sources:
        raise UsageError(
            f"data folder {data_dir} holds no files; put photos in it, "
            f"or folders named by subject: {data_dir}/dog/*.jpg"
        )
    return sorted(sources, key=lambda s: s.key)


# ------------------------------------------------------------------------------------------------------- loading


def check_inside(path: Path, data_dir: Path) -> None:
    """Raise SourceError when `path` resolves (through symbolic links) to somewhere outside `data_dir`."""
    try:
        target = Path(path).resolve()
    except (OSError, RuntimeError) as exc:  # Python 3.11 raises RuntimeError for a link loop
        raise SourceError("symbolic link loop") from exc
    if not target.is_relative_to(Path(data_dir).resolve()):
        raise SourceError("symbolic link outside the data folder")


def _check_file(path: Path) -> None:
    """Reject what is not a readable, non-empty regular file before Pillow touches it (a FIFO would block)."""
    if not path.exists():
        raise SourceError("broken symbolic link" if path.is_symlink() else "file not found")
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise SourceError("folder cannot be read: permission denied")
        raise SourceError("is a folder, not a file")
    if not path.is_file():
        raise SourceError("not a regular file")
    if path.stat().st_size == 0:
        raise SourceError("empty file")


def _megapixels(pixels: int) -> str:
    """400000000 -> "400", 40000 -> "0.04": short, and never in exponent notation."""
    value = pixels / 1e6
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _exception_text(exc: BaseException) -> str:
    """Pillow's message, or the exception's type when it has none."""
    return str(exc).strip() or type(exc).__name__


def _open_header(path: Path) -> Image.Image:
    """Image.open with Pillow's own pixel limit lifted: _opened applies --max-pixels itself, with a clearer message.

    Without lifting it, Pillow would refuse images between its default limit and a larger --max-pixels.
    """
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@contextlib.contextmanager
def _opened(path: Path, *, max_pixels: int, min_side: int, data_dir: Path | None) -> Iterator[Image.Image]:
    """Open, size-check (from the header, before decoding), fully decode and upright one image file."""
    path = Path(path)
    if data_dir is not None:
        check_inside(path, data_dir)
    _check_file(path)
    try:
        img = _open_header(path)
    except UnidentifiedImageError as exc:
        suffix = path.suffix.lower()
        if suffix in _UNSUPPORTED_SUFFIXES:
            raise SourceError(f"not an image file this tool can read ({suffix}); convert it to JPEG or PNG") from exc
        raise SourceError("not an image file") from exc
    except PermissionError as exc:
        raise SourceError("cannot read file: permission denied") from exc
    except Exception as exc:  # plugins raise OSError, SyntaxError, ValueError, struct.error on bad headers
        raise SourceError(f"truncated or corrupt image: {_exception_text(exc)}") from exc

    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise SourceError(
                f"image is {width}x{height} px = {_megapixels(width * height)} Mpx, "
                f"over the limit of {_megapixels(max_pixels)} Mpx (--max-pixels)"
            )
        if min(width, height) < min_side:
            raise SourceError(f"image is {width}x{height} px; at least {min_side} px per side needed")
        # load() decodes now, so a cut-off file fails here (ImageFile.LOAD_TRUNCATED_IMAGES stays False) and
        # not later as a half-gray picture.
        try:
            img.load()
        except MemoryError as exc:
            raise SourceError("not enough memory to decode the image") from exc
        except Image.DecompressionBombError as exc:  # a frame bigger than the header said (Pillow checks some)
            raise SourceError(f"image frame over Pillow's pixel limit: {_exception_text(exc)}") from exc
        except Exception as exc:
            raise SourceError(f"truncated or corrupt image: {_exception_text(exc)}") from exc
        try:
            upright = ImageOps.exif_transpose(img)
        except Exception:  # a broken EXIF block should not cost a good picture: use it as stored
            upright = img
        try:
            yield upright
        except SourceError:
            raise
        except (ValueError, OSError, TypeError) as exc:  # a mode Pillow cannot convert
            raise SourceError(f"unsupported image ({img.mode}): {_exception_text(exc)}") from exc


def _scale_gray(img: Image.Image) -> np.ndarray:
    """Single-channel image of any depth -> [H, W] float32 in [0, 1], using the depth's full range."""
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    values = np.asarray(img)
    if values.dtype.kind in "ui" and values.min() >= 0 and values.max() <= 65535:
        # 16-bit data (also when Pillow hands it over as 32-bit "I"): divide by 65535, not 255, or all is white.
        return values.astype(np.float32) / 65535.0
    values = np.nan_to_num(values.astype(np.float32))
    if values.dtype.kind == "f" and values.min() >= 0.0 and values.max() <= 1.0:
        return values
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.clip(values, 0.0, 1.0)


def _is_gray(img: Image.Image) -> bool:
    """Single-channel modes without alpha: bilevel, 8-bit and the 16/32-bit integer and float ones."""
    return img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;")


def _with_plain_alpha(img: Image.Image) -> Image.Image:
    """Palette and premultiplied modes -> RGBA when they carry transparency, else the image unchanged."""
    if img.mode == "P":
        return img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("PA", "RGBa", "La", "LA") or (img.mode in ("L", "RGB") and "transparency" in img.info):
        return img.convert("RGBA")
    return img


def load_rgb(
    path: Path,
    *,
    max_pixels: int = 50_000_000,
    min_side: int = 16,
    data_dir: Path | None = None,
) -> torch.Tensor:
    """Load a photo as a float tensor [3, H, W] in [0, 1], upright as its EXIF says.

    Transparent parts are shown on mid-gray; grayscale of any depth, palette, CMYK and 1-bit images become RGB.
    Raises SourceError with a short reason for anything that is not a usable picture. Given `data_dir`, a path
    that leads outside it through a symbolic link is refused.
    """
    with _opened(path, max_pixels=max_pixels, min_side=min_side, data_dir=data_dir) as img:
        img = _with_plain_alpha(img)
        if img.mode == "RGBA":
            rgba = np.asarray(img, dtype=np.float32) / 255.0  # [H, W, 4]
            alpha = rgba[..., 3:]
            rgb = rgba[..., :3] * alpha + _MATTE * (1.0 - alpha)
        elif _is_gray(img):
            rgb = np.repeat(_scale_gray(img)[..., None], 3, axis=-1)
        else:
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))  # [3, H, W]


def load_mask(
    path: Path,
    *,
    max_pixels: int = 50_000_000,
    min_side: int = 16,
    data_dir: Path | None = None,
) -> tuple[torch.Tensor, bool]:
    """Load a silhouette mask (white subject on black) as [H, W] float in {0, 1}, and whether it was thresholded.

    A mask with alpha and one flat colour is read from its alpha; otherwise transparent parts count as background
    and the brightest channel decides (so a red-on-black mask works). Values other than exactly 0 and full scale
    are thresholded at half the range, and the second item is True. An all-background mask raises SourceError.
    """
    with _opened(path, max_pixels=max_pixels, min_side=min_side, data_dir=data_dir) as img:
        img = _with_plain_alpha(img)
        if img.mode == "RGBA":
            rgba = np.asarray(img)  # [H, W, 4] uint8
            alpha = rgba[..., 3].astype(np.float32) / 255.0
            if (rgba[..., :3] == rgba[0, 0, :3]).all():
                values = alpha
            else:
                values = rgba[..., :3].max(axis=-1).astype(np.float32) / 255.0 * alpha
        elif _is_gray(img):
            values = _scale_gray(img)
        else:
            values = np.asarray(img.convert("RGB")).max(axis=-1).astype(np.float32) / 255.0
    thresholded = not bool(np.all((values == 0.0) | (values == 1.0)))
    mask = (values >= 0.5).astype(np.float32)  # [H, W]
    if not mask.any():
        raise SourceError("mask is empty: no subject pixels (the subject must be white on black)")
    return torch.from_numpy(mask), thresholded


# ---------------------------------------------------------------------------------------------------- freshness


def file_stamp(path: Path) -> dict:
    """What tells whether a file changed: size, modification time and a SHA-256 of its bytes."""
    stat = Path(path).stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def same_file(path: Path, stamp: dict) -> bool:
    """Whether `path` still holds what `stamp` was taken of: same size and time, else same bytes."""
    try:
        stat = Path(path).stat()
        if (stat.st_size, stat.st_mtime_ns) == (stamp["size"], stamp["mtime_ns"]):
            return True
        return stat.st_size == stamp["size"] and file_stamp(path)["sha256"] == stamp["sha256"]
    except OSError:
        return False


# -------------------------------------------------------------------------------------------------- output names


def _is_clean_key(key: str) -> bool:
    """True when `key` maps to a folder name by "/" -> "__" alone and that mapping can be undone.

    With no "__" in the key and no "_" right after a "/", each run of underscores in the name reads back one way
    ("_", "/" or "_/"). Keys that end like a hashed name are excluded, so a clean name never equals a hashed one.
    """
    return (
        _CLEAN_KEY.fullmatch(key) is not None
        and "__" not in key
        and "/_" not in key
        and not key.startswith((".", "-"))
        and _HASHED_NAME.search(key) is None
        and len(key) + key.count("/") <= _MAX_NAME
    )


def source_folder(key: str) -> str:
    """The `swaps/` folder name of a source: `output_name` with its file suffix's dot as "_" (`dog/rex.jpg` ->
    `dog__rex_jpg`), so that a folder does not look like a picture. Still different for different keys: every key
    ends in an image suffix, and "_" + suffix cannot be the tail of another key's name with another suffix."""
    name = output_name(key)
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}_{suffix}" if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES else name


def output_name(key: str) -> str:
    """A folder name for a source key: readable, safe as one path component, and different for different keys.

    `dog/rex.jpg` -> `dog__rex.jpg`. Keys with other characters, or too long, keep a readable part (accents
    dropped, unsafe characters as "_", at most 120 characters in all) and end in "-" plus 12 hex digits of the
    key's SHA-1. The result never contains "/", never starts with "." or "-", so joined to the output folder it
    stays inside it.
    """
    if _is_clean_key(key):
        return key.replace("/", "__")
    decomposed = unicodedata.normalize("NFKD", key)
    readable = "".join(ch for ch in decomposed if not unicodedata.combining(ch))  # "café" -> "cafe"
    readable = _SAFE_NAME_CHARS.sub("_", readable.replace("/", "__"))
    if not readable or readable.startswith((".", "-")):
        readable = "_" + readable
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{readable[: _MAX_NAME - _HASH_CHARS - 1]}-{digest}"
