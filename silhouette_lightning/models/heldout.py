"""Held-out IoU: a result's best image scored by a VOC segmenter that the search never optimized against.

The optimized IoU is measured by the very ensemble whose gradients shaped the latent, so it is an upper bound
that adversarial fitting can inflate. The held-out IoU uses the same definition (subject probability > 0.5
against the same target map > 0.5) with an independent torchvision segmenter, as published mask-fidelity
numbers do; the gap between the two shows how much of the fit only that ensemble sees.
"""

from __future__ import annotations

from silhouette_lightning.core.errors import WeightsError
from silhouette_lightning.core.names import DEFAULT_HELDOUT, HELDOUT_NONE, heldout_problem
from silhouette_lightning.models.segmenters import (
    SegmenterEnsemble,
    load_segmenter,
)

NONE = HELDOUT_NONE  # `--heldout none`: no held-out score
__all__ = ["DEFAULT_HELDOUT", "NONE", "heldout_problem", "load_heldout"]


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
