"""silhouette-lightning: BigGAN subject swapping controlled by segmentation networks, on PyTorch Lightning.

`Swap`, `swap` and `regenerate` are imported on first use, so that `import silhouette_lightning` (and the command
line's `--help`) does not import torch and Lightning.
"""

__all__ = ["Swap", "regenerate", "swap"]
__version__ = "0.1.0"  # the only place the version is written (pyproject.toml reads it)

_LAZY = {
    "Swap": "silhouette_lightning.api",
    "swap": "silhouette_lightning.api",
    "regenerate": "silhouette_lightning.outputs.records",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'silhouette_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
