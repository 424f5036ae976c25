"""Folding batch norms into convolutions keeps the segmenters' function (and removes every BN it can)."""

import pytest
import torch
from torch import nn

from silhouette_lightning.models.frozen import fold_batch_norms, freeze, is_frozen
from silhouette_lightning.models.segmenters import SEGMENTER_NAMES, load_segmenter


def _randomize_bn_stats(model: nn.Module, seed: int = 0) -> None:
    """Random BN statistics and affine parameters, so that folding is a real change to check."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "fcn_resnet50", "deeplabv3_resnet50"])
def test_folding_keeps_the_maps(name):
    torch.manual_seed(0)
    segmenter = load_segmenter(name, pretrained=False)
    _randomize_bn_stats(segmenter)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = segmenter(x)
        folded = fold_batch_norms(segmenter)
        after = folded(x)
    assert is_frozen(folded)
    remaining = [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not remaining, f"{len(remaining)} batch norms left unfolded in {name}"
    assert torch.allclose(before, after, rtol=1e-3, atol=1e-3 * before.abs().max().item())


def test_folding_refuses_train_mode():
    with pytest.raises(ValueError):
        fold_batch_norms(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    assert isinstance(fold_batch_norms(freeze(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))))[1], nn.Identity)


def test_every_segmenter_folds_completely():
    for name in SEGMENTER_NAMES:
        folded = fold_batch_norms(load_segmenter(name, pretrained=False))
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()), name
