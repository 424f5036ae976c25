"""A one-call Python API for notebooks: one image (or path) and some classes in, best swaps out."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from silhouette_lightning.config import build_config
from silhouette_lightning.results import regenerate


@dataclass
class Swap:
    """The best result of one class: image `[3, R, R]` and its silhouette `[S, S]` in [0, 1], IoU and latent;
    `heldout_iou`: the held-out segmenter's IoU of the same image (None with `heldout="none"`)."""

    class_id: int
    class_name: str
    image: Tensor
    mask: Tensor
    iou: float
    latent: dict
    heldout_iou: float | None = None


def swap(
    image: str | Path | Image.Image | Tensor,
    classes: list[str | int],
    *,
    subject: str | None = None,
    mask: bool = False,
    out: str | Path | None = None,
    generator=None,
    ensemble=None,
    heldout_model=None,
    **settings,
) -> list[Swap]:
    """Swap the subject of one image for each of `classes`; the best of `restarts` per class.

    `image`: a path, a PIL image or a `[3, H, W]` tensor in [0, 1]; `mask=True` if it is a silhouette.
    `settings`: any `train.py` setting (`restarts=4`, `steps=25`, `accelerator="gpu"`, ...). Files go to
    `out` (default: a temporary folder). `generator`/`ensemble`/`heldout_model`: already loaded networks to reuse.
    """
    from silhouette_lightning.run import run

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        if isinstance(image, (str, Path)):
            source = data / Path(image).name
            source.write_bytes(Path(image).read_bytes())
        else:
            pil = image if isinstance(image, Image.Image) else _to_pil(image)
            source = data / "image.png"
            pil.save(source)
        config = build_config(
            {"data": str(data), "masks": mask, "subject": subject, "classes": list(classes),
             "out": str(out or Path(tmp) / "runs"), "name": "swap", "image_every": 0} | settings
        )  # fmt: skip
        run_dir = run(config, generator=generator, ensemble=ensemble, heldout_model=heldout_model,
                      enable_progress_bar=False)  # fmt: skip
        return _read_results(run_dir, generator)


def _to_pil(image: Tensor) -> Image.Image:
    from silhouette_lightning.pictures import to_pil

    return to_pil(image)


def _read_results(run_dir: Path, generator) -> list[Swap]:
    """Best image (regenerated from its latent), silhouette and IoU of every class of the run."""
    from silhouette_lightning.results import read_results

    swaps = []
    for row in read_results(run_dir):
        if row["status"] != "ok":
            continue
        folder = run_dir / row["output_dir"]
        latent = torch.load(folder / "latent.pt", weights_only=True)
        mask_file = folder / "mask.png"
        mask = pil_to_tensor(Image.open(mask_file))[0].float() / 255 if mask_file.exists() else torch.empty(0)
        heldout = float(row["heldout_iou"]) if row.get("heldout_iou") else None
        swaps.append(Swap(int(row["class_id"]), row["class_name"], regenerate(latent, generator), mask,
                          float(row["best_iou"]), latent, heldout))  # fmt: skip
    return swaps
