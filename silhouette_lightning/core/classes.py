"""Class names and ids: ImageNet (what BigGAN generates) and Pascal VOC (what the segmenter finds), from user text."""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Sequence
from pathlib import Path

from silhouette_lightning.core.errors import UsageError

# Copies of torchvision's weight metadata (ResNet50_Weights.IMAGENET1K_V2 and
# DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1 "categories"; tests/core/test_classes.py checks they are equal),
# so that class names are read without importing torch: the command line checks --classes at once.
IMAGENET_CLASSES: list[str] = (Path(__file__).parent / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
VOC_CLASSES: list[str] = [
    "__background__",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]

_VOC_BACKGROUND = "__background__"

# Words people use for the VOC classes, keyed by _voc_key(word).
_VOC_SYNONYMS: dict[str, str] = {
    "plant": "pottedplant",
    "tv": "tvmonitor",
    "television": "tvmonitor",
    "monitor": "tvmonitor",
    "motorcycle": "motorbike",
    "airplane": "aeroplane",
    "plane": "aeroplane",
    "table": "diningtable",
    "couch": "sofa",
    "settee": "sofa",
    "people": "person",
    "human": "person",
}


def _imagenet_key(name: str) -> str:
    """Lower-case, underscores as spaces, runs of white space collapsed."""
    return " ".join(name.replace("_", " ").split()).lower()


def _voc_key(name: str) -> str:
    """Lower-case with spaces, underscores and hyphens dropped ("Potted plant" -> "pottedplant")."""
    return "".join(ch for ch in name.lower() if ch not in " _-\t")


def _build_imagenet_index() -> dict[str, list[int]]:
    """Map each normalised ImageNet name to all ids that carry it (some names repeat)."""
    index: dict[str, list[int]] = {}
    for class_id, name in enumerate(IMAGENET_CLASSES):
        index.setdefault(_imagenet_key(name), []).append(class_id)
    return index


_IMAGENET_INDEX = _build_imagenet_index()


def _suggest(query: str, candidates: Sequence[str], *, limit: int = 8) -> list[str]:
    """Candidates that contain the query (or that it contains) first, then close spellings."""
    close = difflib.get_close_matches(query, candidates, n=5, cutoff=0.6)
    contains = [c for c in candidates if len(query) >= 3 and (query in c or (len(c) >= 3 and c in query))]
    contains.sort(key=lambda c: re.search(rf"\b{re.escape(query)}\b", c) is None)  # "tiger cat" before "polecat"
    seen: dict[str, None] = {}
    for c in [*contains, *close]:
        seen.setdefault(c, None)
    return list(seen)[:limit]


def parse_class_list(text: str) -> list[str]:
    """Split a CLI class list on commas, honouring double quotes: `207,"tabby",golden retriever` -> 3 items.

    Items are stripped of surrounding white space; empty items (a trailing comma) are dropped.
    """
    try:
        rows = list(csv.reader(io.StringIO(text), skipinitialspace=True))
    except csv.Error as exc:
        raise UsageError(f"cannot read the class list {text!r}: {exc}") from exc
    return [item.strip() for row in rows for item in row if item.strip()]


def class_items(value: str | int | Sequence[str | int]) -> list[str | int]:
    """The items of a `classes` setting: CLI text (`207,"tabby"`), a single id, or a list as is."""
    if isinstance(value, str):
        return list(parse_class_list(value))
    if isinstance(value, int):
        return [value]
    return list(value)


def _resolve_imagenet_one(item: str | int) -> int:
    """Turn one id or name into an ImageNet id, or raise UsageError saying what to write instead."""
    n = len(IMAGENET_CLASSES)
    if isinstance(item, bool):  # bool is an int subclass; True as "class 1" is surely a mistake
        raise UsageError(f"ImageNet class must be an id or a name, not {item!r}")
    if isinstance(item, int):
        if not 0 <= item < n:
            raise UsageError(f"ImageNet class id {item} is out of range; ids run from 0 to {n - 1}")
        return item
    text = str(item).strip()
    if not text:
        raise UsageError("empty ImageNet class name")
    if text.lstrip("+-").isdigit():
        return _resolve_imagenet_one(int(text))
    key = _imagenet_key(text)
    ids = _IMAGENET_INDEX.get(key)
    if ids is None:
        hint = _suggest(key, list(_IMAGENET_INDEX))
        if hint:
            names = ", ".join(IMAGENET_CLASSES[_IMAGENET_INDEX[h][0]] for h in hint)
            raise UsageError(f"unknown ImageNet class {text!r}; did you mean: {names}?")
        raise UsageError(f"unknown ImageNet class {text!r}; give an id from 0 to {n - 1} or an ImageNet class name")
    if len(ids) > 1:
        # Picking one silently could generate a sweater when the user wanted a dog ("cardigan").
        choices = " or ".join(f"{i} ({IMAGENET_CLASSES[i]})" for i in ids)
        raise UsageError(f"ImageNet class name {text!r} is ambiguous; use the id instead: {choices}")
    return ids[0]


def resolve_imagenet_classes(items: Sequence[str | int]) -> list[int]:
    """Turn ids ("207", 207) and names ("tabby", "Golden Retriever") into ImageNet ids, in order, without repeats.

    Names are matched case-insensitively; a name that several ids share is refused with the ids to use.

    >>> resolve_imagenet_classes(["golden retriever", 281, "207"])
    [207, 281]
    """
    result: list[int] = []
    for item in items:
        class_id = _resolve_imagenet_one(item)
        if class_id not in result:
            result.append(class_id)
    return result


def resolve_voc_class(name: str) -> int:
    """Turn a VOC class name or a common synonym ("dog", "TV", "potted plant", "dogs") into its index 1-20."""
    subjects = [c for c in VOC_CLASSES if c != _VOC_BACKGROUND]
    by_key = {_voc_key(c): i for i, c in enumerate(VOC_CLASSES) if c != _VOC_BACKGROUND}
    key = _voc_key(name)
    if key in {"background", _voc_key(_VOC_BACKGROUND)}:
        raise UsageError(f"{name!r} is not a subject; choose one of: {', '.join(subjects)}")
    # Folder names are often plural ("dogs", "buses"); try the word as given first so "bus" stays "bus".
    for candidate in (key, key[:-1] if key.endswith("s") else None, key[:-2] if key.endswith("es") else None):
        if candidate is None:
            continue
        if candidate in by_key:
            return by_key[candidate]
        if candidate in _VOC_SYNONYMS:
            return by_key[_VOC_SYNONYMS[candidate]]
    hint = [_VOC_SYNONYMS.get(h, h) for h in _suggest(key, [*by_key, *_VOC_SYNONYMS])]
    hint = list(dict.fromkeys(hint))
    guess = f"did you mean: {', '.join(hint)}? " if hint else ""
    raise UsageError(f"unknown VOC class {name!r}; {guess}subjects are: {', '.join(subjects)}")


def imagenet_name(class_id: int) -> str:
    """The ImageNet name of a BigGAN class id (207 -> "golden retriever")."""
    if not 0 <= class_id < len(IMAGENET_CLASSES):
        raise UsageError(f"ImageNet class id {class_id} is out of range; ids run from 0 to {len(IMAGENET_CLASSES) - 1}")
    return IMAGENET_CLASSES[class_id]


def voc_name(index: int) -> str:
    """The VOC name of a segmenter channel (12 -> "dog"; 0 is "__background__")."""
    if not 0 <= index < len(VOC_CLASSES):
        raise UsageError(f"VOC class index {index} is out of range; indices run from 0 to {len(VOC_CLASSES) - 1}")
    return VOC_CLASSES[index]
