"""The one freezing idiom for pretrained networks: inference mode and no parameter gradients."""

from __future__ import annotations

from typing import TypeVar

from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def freeze(module: ModuleT) -> ModuleT:
    """Put `module` in eval mode with `requires_grad=False` on every parameter, in place, and return it.

    Eval mode matters as much as the gradients: BigGAN's spectral norm updates its own buffers on every
    train-mode forward, and batch norm layers would use batch statistics.
    """
    return module.eval().requires_grad_(False)


def is_frozen(module: nn.Module) -> bool:
    """True when `module` and all its submodules are in eval mode and no parameter requires a gradient."""
    return all(not m.training for m in module.modules()) and not any(p.requires_grad for p in module.parameters())
