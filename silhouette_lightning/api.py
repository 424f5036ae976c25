"""A one-call Python API for notebooks: one image (or path) and some classes in, best swaps out."""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from silhouette_lightning.config.settings import build_config
from silhouette_lightning.outputs.records import regenerate


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
    classes: str | int | list[str | int],
    *,
    subject: str | None = None,
    mask: bool = False,
    out: str | Path | None = None,
    generator=None,
    ensemble=None,
    heldout_model=None,
    **settings,
) -> list[Swap]:
    """Swap the subject of one image for each of `classes` (one name or id, or a list); the best of `restarts`
    per class.

    `image`: a path, a PIL image or a `[3, H, W]` tensor in [0, 1]; `mask=True` if it is a silhouette.
    `settings`: any `train.py` setting (`restarts=4`, `steps=25`, `accelerator="gpu"`, ...). Files go to
    `out` (default: a temporary folder), in a run folder named after the image and the settings, so the same
    call again returns the saved results (and finishes an interrupted one). `generator`: a published name or a
    folder as `--generator` takes, or an already loaded BigGAN; `ensemble`/`heldout_model`: loaded networks.
    """
    from silhouette_lightning.models.biggan import generator_origin
    from silhouette_lightning.run.job import run

    if isinstance(generator, (str, Path)):
        settings["generator"], generator = (
            str(Path(generator).resolve()) if Path(generator).is_dir() else generator,
            None,
        )
    class_list = [classes] if isinstance(classes, (str, int)) else list(classes)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(image, (str, Path)):
            name, content = Path(image).name, Path(image).read_bytes()
        else:
            buffer = io.BytesIO()
            (image if isinstance(image, Image.Image) else _to_pil(image)).save(buffer, format="PNG")
            name, content = "image.png", buffer.getvalue()
        layer = {"masks": mask, "subject": subject, "classes": class_list, "image_every": 0} | settings
        loaded = {"loaded generator": generator_origin(generator)} if generator is not None else {}
        run_name = layer.pop("name", None) or _run_name(name, content, layer | loaded)
        root = Path(out) if out is not None else Path(tmp) / "runs"
        data = root / "sources" / run_name  # kept next to the run: the same call finds the same source again
        data.mkdir(parents=True, exist_ok=True)
        source = data / name
        if not source.is_file() or source.read_bytes() != content:
            source.write_bytes(content)
        config = build_config(layer | {"data": str(data), "out": str(root), "name": run_name})
        run_dir = run(
            config, generator=generator, ensemble=ensemble, heldout_model=heldout_model, enable_progress_bar=False
        )
        if generator is None:
            from silhouette_lightning.models.biggan import load_generator

            generator = load_generator(config.generator)
        return _read_results(run_dir, generator)


def _run_name(file_name: str, content: bytes, settings: dict) -> str:
    """`swap-<stem>-<hash of the image and the settings>`: one run folder per distinct call."""
    key = hashlib.sha256(content + repr(sorted((k, repr(v)) for k, v in settings.items())).encode()).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(file_name).stem)[:40].strip("._-") or "image"
    return f"swap-{stem}-{key[:10]}"


def _to_pil(image: Tensor) -> Image.Image:
    from silhouette_lightning.outputs.pictures import to_pil

    return to_pil(image)


def _read_results(run_dir: Path, generator) -> list[Swap]:
    """Best image (regenerated from its latent), silhouette and IoU of every class of the run."""
    from silhouette_lightning.outputs.records import read_results

    swaps = []
    for row in read_results(run_dir):
        if row["status"] != "ok":
            continue
        folder = run_dir / row["output_dir"]
        latent = torch.load(folder / "latent.pt", weights_only=True)
        mask_file = folder / "mask.png"
        mask = pil_to_tensor(Image.open(mask_file))[0].float() / 255 if mask_file.exists() else torch.empty(0)
        heldout = float(row["heldout_iou"]) if row.get("heldout_iou") else None
        swaps.append(
            Swap(
                int(row["class_id"]),
                row["class_name"],
                regenerate(latent, generator),
                mask,
                float(row["best_iou"]),
                latent,
                heldout,
            )
        )
    return swaps
