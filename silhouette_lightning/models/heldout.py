"""Held-out IoU: a result's best image scored by a VOC segmenter that the search never optimized against.

The optimized IoU is measured by the very ensemble whose gradients shaped the latent, so it is an upper bound
that adversarial fitting can inflate. The held-out IoU uses the same definition (subject probability > 0.5
against the same target map > 0.5) with an independent torchvision segmenter, as published mask-fidelity
numbers do; the gap between the two shows how much of the fit only that ensemble sees.
"""

from __future__ import annotations

from silhouette_lightning.core.errors import UsageError, WeightsError
from silhouette_lightning.models.segmenters import (
    SEGMENTER_NAMES,
    SegmenterEnsemble,
    load_segmenter,
    parse_ensemble_spec,
)

NONE = "none"  # `--heldout none`: no held-out score
DEFAULT_HELDOUT = "deeplabv3_mobilenet_v3_large"  # the smallest VOC segmenter outside the paper's ensemble


def heldout_problem(name: str, segmenters: str) -> str | None:
    """Why `name` cannot be the held-out model of the ensemble `segmenters`, or None when it can."""
    if name == NONE:
        return None
    if name not in SEGMENTER_NAMES:
        return f"--heldout must be none or one of {', '.join(SEGMENTER_NAMES)}, got {name!r}"
    try:
        members = [member for member, _ in parse_ensemble_spec(segmenters)]
    except UsageError:
        return None  # the ensemble's own error is reported on its own
    if name in members:
        return (
            f"--heldout {name} is a member of the ensemble (--segmenters {segmenters}): a held-out score needs a "
            "model the search does not optimize against; choose another --heldout, or none"
        )
    return None


def load_heldout(name: str, *, size: int, pretrained: bool = True) -> SegmenterEnsemble | None:
    """The held-out segmenter as a one-member ensemble (the ensemble's own preprocessing), or None for `none`.

    Weights come from the same torch.hub checkpoint folder as the ensemble's (downloaded if absent); batch
    norms are not folded, so its maps are exactly torchvision's model's.

    Raises:
        UsageError: an unknown name.
        WeightsError: the weights are missing and cannot be downloaded, or corrupt (the message says so).
    """
    if name == NONE:
        return None
    try:
        segmenter = load_segmenter(name, pretrained=pretrained)
    except WeightsError as e:
        raise WeightsError(f"held-out segmenter (--heldout {name}): {e} Or pass --heldout none.") from e
    return SegmenterEnsemble([segmenter], [1.0], size)
