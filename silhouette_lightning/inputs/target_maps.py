"""Target maps: each source's subject silhouette, segmented once and cached on disk.

A photo's target map is the ensemble's subject-class probability map, computed with exactly the
preprocessing the generated images get; a mask file's target map is the mask itself, resized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from silhouette_lightning.core.classes import VOC_CLASSES, resolve_voc_class
from silhouette_lightning.core.errors import SourceError
from silhouette_lightning.core.files import atomic_torch_save
from silhouette_lightning.inputs.framing import to_square
from silhouette_lightning.inputs.sources import Source, file_stamp, load_mask, load_rgb, output_name, same_file, shown
from silhouette_lightning.models.ensemble import ensemble_probs

# Padding of non-square photos: near the ImageNet mean, so the segmenters see "nothing there" (as sources.py's matte).
_PAD_GRAY = 0.5


@dataclass(frozen=True)
class PreparedSource:
    """A source after segmentation: its subject and cached target map, or why it was skipped."""

    key: str
    subject: str | None
    status: str  # "ok" or "skipped: <reason>"

    @property
    def ok(self) -> bool:
        """Whether the source takes part in the optimization."""
        return self.status == "ok"


def target_path(cache_dir: Path, key: str) -> Path:
    """Where the target map of source `key` is cached."""
    return Path(cache_dir) / f"{output_name(key)}.pt"


@torch.no_grad()
def segment_photo(ensemble, photo: Tensor, *, mode: str, subject: str | None, fit: str = "pad") -> tuple[Tensor, str]:
    """The ensemble's map of one photo `[3, H, W]` in [0, 1] -> (target map `[S, S]`, subject name).

    A non-square photo is made square by `fit` first (`framing.to_square`; padding is mid-gray, which the
    segmenters read as background). With no subject given, the subject is the non-background VOC class
    covering the most pixels.
    """
    device = next(ensemble.buffers()).device
    square = to_square(photo, fit, fill=_PAD_GRAY)  # [3, side, side]
    logits = ensemble(square.unsqueeze(0).to(device))  # [M, 1, C, S, S]
    probs = ensemble_probs(logits, ensemble.weights, mode)[0]  # [C, S, S]
    if subject is None:
        counts = torch.bincount(probs.argmax(0).flatten(), minlength=probs.shape[0])
        counts[0] = 0
        if counts.max() == 0:
            raise SourceError("no subject found: the segmenters see only background")
        index = int(counts.argmax())
    else:
        index = resolve_voc_class(subject)
    return probs[index].float().cpu(), VOC_CLASSES[index]


def mask_target(mask: Tensor, size: int, *, fit: str = "pad") -> Tensor:
    """A binary mask `[H, W]` -> target map `[size, size]`: made square by `fit` (padded with background),
    area-resized, then thresholded back to {0, 1}."""
    square = to_square(mask.float(), fit, fill=0.0)  # [side, side]
    resized = F.interpolate(square[None, None], size=(size, size), mode="bilinear", antialias=True)
    return (resized[0, 0] > 0.5).float()


def prepare_targets(
    sources: list[Source],
    ensemble,
    cache_dir: Path,
    *,
    masks: bool,
    size: int,
    mode: str,
    max_pixels: int,
    fit: str = "pad",
    data_dir: Path | None = None,
    log=print,
) -> list[PreparedSource]:
    """Segment every source once (or read its cached map) and report each as ok or skipped.

    `cache_dir` must be particular to everything a map depends on but the source (`SwapData` keys it by `fit`).

    A bad file never stops the run: its reason is logged with its name and recorded as its status.
    """
    prepared = []
    thresholded = []
    for source in sources:
        path = target_path(cache_dir, source.key)
        if path.exists() and source.problem is None:
            cached = torch.load(path, weights_only=True)
            prepared.append(PreparedSource(source.key, cached["subject"], "ok"))
            continue
        try:
            if source.problem is not None:
                raise SourceError(source.problem)
            stamp = file_stamp(source.path) if source.path.is_file() else None  # before reading: never newer
            if masks:
                mask, was_thresholded = load_mask(source.path, max_pixels=max_pixels, data_dir=data_dir)
                if was_thresholded:
                    thresholded.append(source.key)
                target = mask_target(mask, size, fit=fit)
                subject = VOC_CLASSES[resolve_voc_class(source.subject)]
            else:
                photo = load_rgb(source.path, max_pixels=max_pixels, data_dir=data_dir)
                target, subject = segment_photo(ensemble, photo, mode=mode, subject=source.subject, fit=fit)
            if not (target > 0.5).any():
                given = masks or source.subject is not None
                raise SourceError(
                    f"no {subject} found: the target map is empty"
                    if given
                    else f"the segmenters detected {subject} as the subject, but its map is empty after "
                    "thresholding; pass --subject NAME"
                )
        except SourceError as e:
            log(f"skipped {shown(source.path)}: {e}")
            prepared.append(PreparedSource(source.key, source.subject, f"skipped: {e}"))
            continue
        atomic_torch_save({"target": target.half(), "subject": subject, "stamp": stamp}, path)
        prepared.append(PreparedSource(source.key, subject, "ok"))
    if thresholded:
        log(f"{len(thresholded)} mask file(s) were not two-valued and were thresholded at 0.5, e.g. {thresholded[0]}")
    return prepared


def changed_sources(sources: list[Source], cache_dir: Path) -> list[str]:
    """Keys of the sources whose cached target map was made from other file content (replaced, edited).

    A file whose time changed but whose bytes did not (touched, copied) keeps its map; its new time is noted so
    that the next run does not read its bytes again. Maps cached without a stamp count as current.
    """
    changed = []
    for source in sources:
        path = target_path(cache_dir, source.key)
        if source.problem is not None or not path.exists():
            continue
        cached = torch.load(path, weights_only=True, mmap=True)  # mmap: the stamp without reading the map
        stamp = cached.get("stamp")
        if stamp is None:
            continue
        if not same_file(source.path, stamp):
            changed.append(source.key)
        elif Path(source.path).stat().st_mtime_ns != stamp["mtime_ns"]:
            fresh = {"target": cached["target"].clone(), "subject": cached["subject"], "stamp": file_stamp(source.path)}
            atomic_torch_save(fresh, path)
    return changed


def load_target(cache_dir: Path, key: str) -> Tensor:
    """The cached target map `[S, S]` (float32) of source `key`."""
    return torch.load(target_path(cache_dir, key), weights_only=True)["target"].float()
