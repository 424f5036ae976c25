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


def fold_batch_norms(module: ModuleT) -> ModuleT:
    """Fold each eval-mode batch norm into the convolution before it, in place (the BN becomes Identity).

    In eval mode a batch norm is an affine map per channel, so conv-then-BN is one convolution with scaled
    weights and a bias: the same function up to float rounding, without the element-wise pass that took
    ~17% of a latent step's GPU time (docs/benchmark.md). Only pairs known to run back to back are folded:
    consecutive items of an `nn.Sequential`, and torchvision ResNet's `convK` / `bnK` attributes.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if module.training:
        raise ValueError("fold_batch_norms needs an eval-mode module (train-mode batch norm uses batch statistics)")
    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            pairs = [(str(i), str(i + 1)) for i in range(len(parent) - 1)]
        else:
            pairs = [(n, "bn" + n[4:]) for n, _ in parent.named_children() if n.startswith("conv") and n[4:].isdigit()]
        for conv_name, bn_name in pairs:
            conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats
                and bn.num_features == conv.out_channels
            ):
                fused = fuse_conv_bn_eval(conv, bn).eval().requires_grad_(conv.weight.requires_grad)
                setattr(parent, conv_name, fused)
                setattr(parent, bn_name, nn.Identity().eval())
    return module


def bake_spectral_norm(module: ModuleT) -> ModuleT:
    """Remove every spectral-norm hook of a frozen module, in place, keeping the normalized weight W / sigma.

    In eval mode spectral norm recomputes the same W / sigma (no power iteration) before every forward: for a
    frozen generator that is ~100 small kernels per step for nothing (docs/benchmark.md: it matters for
    host-bound small batches, and lets `torch.compile` see plain convolutions). The state dict changes (one
    `weight` instead of `weight_orig`, `weight_u`, `weight_v`): bake after loading, never before saving.
    """
    from torch.nn.utils import remove_spectral_norm
    from torch.nn.utils.spectral_norm import SpectralNorm

    if module.training:
        raise ValueError("bake_spectral_norm needs an eval-mode module (train mode updates sigma every forward)")
    for sub in module.modules():
        if any(isinstance(hook, SpectralNorm) for hook in sub._forward_pre_hooks.values()):
            remove_spectral_norm(sub)
    return module.requires_grad_(False)
