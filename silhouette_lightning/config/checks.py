"""Checks of a run's settings against the world, before any work and without torch: every class name resolved
(with suggestions for a typo), every class id inside the generator's range, the data folder there. The run does
them first; `--print-config` does them too, so that what it prints can run."""

from __future__ import annotations

import json
from pathlib import Path

from silhouette_lightning.config.settings import SwapConfig
from silhouette_lightning.core.classes import class_items, resolve_imagenet_classes, resolve_voc_class
from silhouette_lightning.core.errors import UsageError

PRETRAINED_CLASSES = 1000  # every pretrained BigGAN generates the ImageNet classes


def class_chooser(config: SwapConfig):
    """`subject -> class ids`: the --classes list for every subject, else the subject's defaults.

    Every name is resolved now, before any work (even before the weights load), so that a typo fails at once
    with suggestions. `classes_for.all_ids` lists every id the run may ask the generator for.
    """
    items = config.classes
    explicit = None
    if items is not None:  # validate refused an empty list: None alone means "the subject's defaults"
        explicit = resolve_imagenet_classes(class_items(items))
    defaults = {
        resolve_voc_class(subject): resolve_imagenet_classes(names) for subject, names in config.default_classes.items()
    }

    def classes_for(subject: str) -> list[int]:
        if explicit:
            return explicit
        return defaults.get(resolve_voc_class(subject)) or []

    def ids_for(subjects: set[str | None] | None = None) -> list[int]:
        """Every class id the run may ask the generator for: of `subjects` when all are known, else of all."""
        if explicit or subjects is None or None in subjects:
            return sorted(set(explicit or [i for ids in defaults.values() for i in ids]))
        return sorted({i for s in subjects for i in classes_for(s)})

    classes_for.all_ids = ids_for()
    classes_for.ids_for = ids_for
    return classes_for


def check_class_range(class_ids: list[int], num_classes: int) -> None:
    """Class ids must exist in the loaded generator (a custom `--generator DIR` may have fewer than 1000)."""
    too_big = [i for i in class_ids if i >= num_classes]
    if too_big:
        raise UsageError(f"class ids {too_big} are beyond this generator's {num_classes} classes; pass --classes")


def generator_classes(generator: str) -> int | None:
    """How many classes the generator `--generator` names (a pretrained name, or a folder's config.json), without
    loading it; None when that cannot be told yet (the folder does not exist: the run's loader says why)."""
    folder = Path(generator).expanduser()
    if (folder / "config.json").is_file():
        try:
            return int(json.loads((folder / "config.json").read_text())["num_classes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return PRETRAINED_CLASSES if generator.startswith("biggan-deep-") else None


def check_before_work(config: SwapConfig) -> None:
    """The settings' checks against the world that need no network, no model and no torch (`--print-config`)."""
    classes_for = class_chooser(config)
    if config.data and not Path(config.data).is_dir():
        what = "does not exist" if not Path(config.data).exists() else "is not a folder"
        raise UsageError(f"data folder {config.data} {what}: pass --data DIR (photos, or masks with --masks)")
    subjects = _data_subjects(config)
    num_classes = generator_classes(config.generator)
    if num_classes is not None:
        check_class_range(classes_for.ids_for(subjects), num_classes)


def _data_subjects(config: SwapConfig) -> set[str | None] | None:
    """The subjects of the data folder as far as its layout tells (`--subject`, or one folder per subject);
    None for a flat folder of photos whose subjects are only known once segmented."""
    if config.subject:
        return {config.subject}
    if not config.data:
        return None
    folders = {p.name for p in Path(config.data).iterdir() if p.is_dir()} if Path(config.data).is_dir() else set()
    known = set()
    for name in folders:
        try:
            known.add(resolve_voc_class(name))
        except UsageError:
            return None
    return known or None
