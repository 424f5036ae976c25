"""The tool's vocabulary: the values its flags accept and how they parse, in a module that imports neither torch
nor torchvision (the command line checks them before anything heavy is imported, so `--help` and a refused flag
answer at once). The modules that act on a value re-export it."""

from __future__ import annotations

from silhouette_lightning.core.errors import UsageError

FITS = ("pad", "crop", "stretch")  # how a non-square source becomes the square the segmenters see
LOSSES = ("mse", "bce", "bce_bg", "ce", "soft_ce")  # the silhouette losses (search/losses.py)
ENSEMBLE_MODES = ("probs", "logits", "losses")  # how the ensemble's members combine (models/ensemble.py)
PRIORS = ("box", "norm")  # the latent priors `--prior-weight` weighs (search/objective.py, search/priors.py)
COMPILE_MODES = ("none", "ensemble", "all")  # what `torch.compile` wraps for the training steps
HELDOUT_NONE = "none"  # `--heldout none`: no held-out score
DEFAULT_HELDOUT = "deeplabv3_mobilenet_v3_large"  # the smallest VOC segmenter outside the paper's ensemble
# --strategy names known to give exact results without asking Lightning (single-process ones and Lightning's
# registered DDP variants; tests/engine/test_distributed.py checks them against its registry). Others are looked up
# there.
EXACT_STRATEGIES = ("auto", "single_device", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook") + tuple(
    f"{ddp}_find_unused_parameters_{flag}"
    for ddp in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
    for flag in ("false", "true")
)
# torchvision's segmentation models whose pretrained weights carry the VOC labels
# (`models.segmenters.voc_segmenter_names()`, checked equal in tests/models/test_model_loading.py)
SEGMENTER_NAMES = (
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet101",
    "deeplabv3_resnet50",
    "fcn_resnet101",
    "fcn_resnet50",
    "lraspp_mobilenet_v3_large",
)


def parse_ensemble_spec(spec: str) -> list[tuple[str, float]]:
    """`"deeplabv3_resnet101:0.6,fcn_resnet101:0.4"` -> [(name, weight), ...]; a missing weight is 1.

    Raises:
        UsageError: empty spec, empty item, unknown name, bad or negative weight, or a name given twice.
    """
    items = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise UsageError(
                f"segmenter list {spec!r} has an empty item; write e.g. 'deeplabv3_resnet101:0.6,fcn_resnet101:0.4'"
            )
        name, sep, weight_text = (part.strip() for part in item.partition(":"))
        if name not in SEGMENTER_NAMES:
            raise UsageError(f"unknown segmenter {name!r} in {spec!r}: give names from {', '.join(SEGMENTER_NAMES)}")
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            raise UsageError(f"segmenter weight {weight_text!r} in {spec!r} is not a number") from None
        if name in (n for n, _ in items):
            raise UsageError(f"segmenter {name!r} appears twice in {spec!r}")
        items.append((name, weight))
    return items


def heldout_problem(name: str, segmenters: str) -> str | None:
    """Why `name` cannot be the held-out model of the ensemble `segmenters`, or None when it can."""
    if name == HELDOUT_NONE:
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
