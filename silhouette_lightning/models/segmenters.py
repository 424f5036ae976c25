"""Frozen torchvision segmenters with the 21 Pascal VOC labels, and their weighted ensemble.

Weights live where torchvision keeps them (`torch.hub.get_dir()/checkpoints/<file name of the URL>`), so a
file fetched once by torchvision, or copied there by hand, is used without network access. The download
and the loading are done here rather than through `get_model(weights=...)` because torch.hub's download
has no timeout and its errors do not say where the file belongs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models import get_model, get_model_weights, list_models

from silhouette_lightning.core.errors import UsageError, WeightsError
from silhouette_lightning.core.names import SEGMENTER_NAMES, parse_ensemble_spec
from silhouette_lightning.models.fetch import DownloadError, download_file
from silhouette_lightning.models.frozen import fold_batch_norms, freeze

VOC_CATEGORIES: tuple[str, ...] = tuple(
    torchvision.models.segmentation.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"]
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torch.hub's naming convention: `name-<first hex digits of the SHA-256>.pth`.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


def voc_segmenter_names() -> tuple[str, ...]:
    """Every torchvision segmentation model whose pretrained weights carry the VOC labels (what
    `core.names.SEGMENTER_NAMES` lists without importing torchvision; tests check they agree)."""
    names = []
    for name in list_models(module=torchvision.models.segmentation):
        weights = getattr(get_model_weights(name), "COCO_WITH_VOC_LABELS_V1", None)
        if weights is not None and tuple(weights.meta["categories"]) == VOC_CATEGORIES:
            names.append(name)
    return tuple(sorted(names))


__all__ = ["SEGMENTER_NAMES", "parse_ensemble_spec"]  # re-exported from core/names.py


class SegmenterLogits(nn.Module):
    """A torchvision segmentation model that returns its main head's logits instead of a dict."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """Normalized images [B, 3, H, W] -> VOC logits [B, 21, H, W] (torchvision upsamples to the input size)."""
        return self.model(x)["out"]


def segmenter_weights_path(name: str) -> tuple[Path, str]:
    """(where torch.hub expects the pretrained file of `name`, the URL it comes from)."""
    url = _weights_enum(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path), url


def load_segmenter(name: str, *, pretrained: bool = True) -> SegmenterLogits:
    """A frozen VOC segmenter by torchvision name (see `SEGMENTER_NAMES`), without its auxiliary head.

    With `pretrained`, the COCO-with-VOC-labels weights are read from torch.hub's checkpoint folder,
    downloaded there first if absent. Without, the weights are random (for tests).

    Raises:
        UsageError: `name` is not in `SEGMENTER_NAMES`.
        WeightsError: the file is absent and cannot be downloaded, or it is corrupt.
    """
    if name not in SEGMENTER_NAMES:
        raise UsageError(f"unknown segmenter {name!r}: give one of {', '.join(SEGMENTER_NAMES)}")
    # The auxiliary head only serves training losses: build without it (same main path as the
    # pretrained model) and drop its keys from the checkpoint. LR-ASPP has none and rejects aux_loss=True.
    model = get_model(name, weights=None, weights_backbone=None, num_classes=len(VOC_CATEGORIES), aux_loss=False)
    if pretrained:
        path = _ensure_weights_file(name)
        state_dict = _read_state_dict(path)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("aux_classifier.")}
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{path} does not fit {name} ({exc}): delete it so that it is downloaded again") from exc
    return freeze(SegmenterLogits(model))


def preprocess(x01: Tensor, size: int) -> Tensor:
    """Images in [0, 1] [B, 3, H, W] -> resized to [B, 3, size, size] and normalized with ImageNet's statistics.

    The same transform for source photos and generated images, so that both reach the segmenters alike.
    Down-sizing anti-aliases (as torchvision's presets for these weights do): a large photo point-sampled
    to `size` would give an aliased target map. Up-sizing (a 128 px BigGAN image to 256 px) is plain
    bilinear, where anti-aliasing has nothing to remove.
    """
    height, width = x01.shape[-2:]
    if (height, width) != (size, size):
        shrinks = height > size or width > size
        x01 = F.interpolate(x01, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinks)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 - mean) / std  # [B, 3, size, size]


class SegmenterEnsemble(nn.Module):
    """Frozen segmenters run on the same preprocessed images; their weights (summing to 1) are the buffer
    `weights` [M]. How the member outputs are combined (probabilities, logits, losses) is the caller's choice."""

    def __init__(self, segmenters: Sequence[nn.Module], weights: Sequence[float], size: int) -> None:
        super().__init__()
        if len(segmenters) == 0 or len(segmenters) != len(weights):
            raise UsageError(f"an ensemble needs one weight per segmenter, got {len(segmenters)} and {len(weights)}")
        w = torch.tensor([float(v) for v in weights], dtype=torch.float32)
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise UsageError(f"segmenter weights must be >= 0 with a positive sum, got {list(weights)}")
        if size <= 0:
            raise UsageError(f"segmenter input size must be positive, got {size}")
        self.members = nn.ModuleList(segmenters)
        self.register_buffer("weights", w / w.sum())  # [M]
        self.size = int(size)
        freeze(self)

    def forward(self, x01: Tensor) -> Tensor:
        """Images in [0, 1] [B, 3, H, W] -> stacked member logits [M, B, 21, size, size]."""
        x = preprocess(x01, self.size)  # [B, 3, size, size]
        return torch.stack([member(x) for member in self.members])


def load_ensemble(spec: str, *, size: int, pretrained: bool = True) -> SegmenterEnsemble:
    """Load the segmenters of `spec` (see `parse_ensemble_spec`) as a frozen ensemble with input size `size`,
    batch norms folded into their convolutions (faster, same maps up to float rounding)."""
    items = parse_ensemble_spec(spec)
    members = [fold_batch_norms(load_segmenter(name, pretrained=pretrained)) for name, _ in items]
    return SegmenterEnsemble(members, [weight for _, weight in items], size)


def _weights_enum(name: str) -> torchvision.models.WeightsEnum:
    """The COCO-with-VOC-labels weights entry of `name`."""
    return get_model_weights(name).COCO_WITH_VOC_LABELS_V1


def _ensure_weights_file(name: str) -> Path:
    """The checkpoint of `name` in torch.hub's folder, downloaded (hash-checked) if absent."""
    path, url = segmenter_weights_path(name)
    if path.is_file():
        return path
    match = _HASH_IN_NAME.search(path.name)
    try:
        download_file(url, path, sha256_prefix=match.group(1) if match else None)
    except DownloadError as exc:
        raise WeightsError(
            f"segmenter {name!r}: {path.name} is missing from {path.parent} and could not be downloaded ({exc}). "
            f"Download {url} into {path.parent} (keep the file name), or set TORCH_HOME to a folder whose "
            f"hub/checkpoints holds it, then run again."
        ) from exc
    return path


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """torch.load a checkpoint as plain tensors, as a WeightsError when it cannot be read."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and EOF errors all mean a bad file here
        raise WeightsError(
            f"cannot read {path} ({exc}); it is truncated or corrupt: delete it so that it is downloaded again"
        ) from exc
    if not isinstance(state_dict, dict):
        raise WeightsError(f"{path} holds a {type(state_dict).__name__}, not a state dict: delete it")
    return state_dict
