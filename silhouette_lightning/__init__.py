"""silhouette-lightning: BigGAN subject swapping controlled by segmentation networks, on PyTorch Lightning."""

from silhouette_lightning.api import Swap, swap
from silhouette_lightning.outputs.records import regenerate

__all__ = ["Swap", "regenerate", "swap"]
__version__ = "0.1.0"  # the only place the version is written (pyproject.toml reads it)
