"""The paper's recovery experiment (section 4, figure 5): can the search find a known latent again?

The target is the silhouette of `G(z*)` itself, optionally shifted or rotated; the search starts from z*
(or from z* plus noise) and should reach a high IoU. With no transform and a perturbed start, it is a
known-answer test of the whole optimization.
"""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF
from lightning.pytorch import Trainer
from torch import Tensor

from silhouette_lightning.module import SilhouetteSwap


def transform_map(target: Tensor, *, shift_px: int = 0, rotate_deg: float = 0.0) -> Tensor:
    """Shift right by `shift_px` and rotate counter-clockwise by `rotate_deg`: `[B, S, S] -> [B, S, S]`."""
    out = target.unsqueeze(1)
    if rotate_deg:
        out = TF.rotate(out, rotate_deg, interpolation=TF.InterpolationMode.BILINEAR)
    if shift_px:
        out = TF.affine(out, angle=0.0, translate=[shift_px, 0], scale=1.0, shear=[0.0])
    return out.squeeze(1)


@torch.no_grad()
def subject_map_of(module: SilhouetteSwap, z: Tensor, class_ids: Tensor, channels: Tensor) -> Tensor:
    """The ensemble's subject map `[B, S, S]` of `G(z)`."""
    return module.subject_maps(module.ensemble(module.generate(z, class_ids)), channels)


def recover(
    generator,
    ensemble,
    z_star: Tensor,
    class_ids: Tensor,
    channels: Tensor,
    *,
    start: Tensor | None = None,
    shift_px: int = 0,
    rotate_deg: float = 0.0,
    steps: int = 25,
    lr: float = 0.1,
    betas: tuple[float, float] = (0.5, 0.99),
    truncation: float = 0.4,
    loss: str = "mse",
    **trainer_kwargs,
) -> dict:
    """Optimize from `start` (default z*) toward the (transformed) silhouette of `G(z*)`.

    `z_star` [B, Z], `class_ids` [B], `channels` [B] (VOC subject channel per row). Returns the chunk
    results of `SilhouetteSwap` (best IoU, best latent, IoU of every step, ...) plus the target maps.
    """
    batch = len(z_star)
    module = SilhouetteSwap(generator, ensemble, batch_size=batch, steps=steps, lr=lr, betas=betas,
                            truncation=truncation, loss=loss)  # fmt: skip
    targets = transform_map(subject_map_of(module, z_star, class_ids, channels), shift_px=shift_px,
                            rotate_deg=rotate_deg)  # fmt: skip
    first = {
        "chunk": 0, "step": 0, "index": torch.arange(batch), "seeds": torch.zeros(batch, dtype=torch.long),
        "z0": (z_star if start is None else start).clone(), "class_id": class_ids, "channel": channels,
        "group": torch.arange(batch), "targets": targets,
    }  # fmt: skip
    items = [first] + [{"chunk": 0, "step": s} for s in range(1, steps + 1)]
    loader = torch.utils.data.DataLoader(items, batch_size=None)
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer = Trainer(**(defaults | trainer_kwargs))
    trainer.fit(module, train_dataloaders=loader)
    results = module.finished_chunk
    results["targets"] = targets
    return results
