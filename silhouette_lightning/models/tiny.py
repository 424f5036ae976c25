"""Tiny segmenters for tests, the golden runs and the CPU benchmarks: built the same way in every process, so
runs with them are comparable across processes and machines. Not used by the tool itself."""

from __future__ import annotations

import torch
from torch import nn

from silhouette_lightning.models.frozen import freeze
from silhouette_lightning.models.segmenters import SegmenterEnsemble


class ColorSegmenter(nn.Module):
    """A tiny VOC-labelled segmenter: per-pixel classes from colour, so its maps move with the image."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 21, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.tanh(self.conv1(x)))  # [B, 21, H, W]


def tiny_ensemble(size: int = 32, weights=(0.6, 0.4)) -> SegmenterEnsemble:
    """Two colour segmenters, ensembled like the paper's pair."""
    return freeze(SegmenterEnsemble([ColorSegmenter(0), ColorSegmenter(1)], list(weights), size))


class DecisiveSegmenter(nn.Module):
    """A tiny segmenter that sees only background or `subject` (VOC channel), decided by colour with confident
    logits: about half of a tiny BigGAN image is subject, so IoUs against masks span the whole range."""

    def __init__(self, seed: int = 0, subject: int = 12) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 1, 1)
        self.subject = subject
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv2(torch.tanh(self.conv1(x)))  # [B, 1, H, W]
        s = 4 * (s - s.mean((2, 3), keepdim=True)) / (s.std((2, 3), keepdim=True) + 1e-3)  # centred: half subject
        logits = torch.full((x.shape[0], 21, *x.shape[2:]), -10.0, dtype=s.dtype, device=s.device)
        return torch.cat([-s, logits[:, 1 : self.subject], s, logits[:, self.subject + 1 :]], 1)  # [B, 21, H, W]


def decisive_ensemble(size: int = 32) -> SegmenterEnsemble:
    """Two decisive dog segmenters, ensembled 0.6 : 0.4 like the paper's pair."""
    return freeze(SegmenterEnsemble([DecisiveSegmenter(0), DecisiveSegmenter(3)], [0.6, 0.4], size))


def heldout_segmenter_state(seed: int = 0) -> dict:
    """A deeplabv3_mobilenet_v3_large (the default `--heldout`) state dict whose dog map follows the image.

    Freshly initialized, its features vanish in eval mode and every map is constant. So: batch-norm statistics
    from one train-mode pass on noise, then a head that scores only background and dog, its dog logit scaled
    and centred on noise images, so that on tiny BigGAN images the dog area ranges from none to all.
    """
    from torchvision.models import get_model

    torch.manual_seed(seed)
    model = get_model(
        "deeplabv3_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=21, aux_loss=False
    )
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one pass sets the statistics
            m.reset_running_stats()
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 48, 48, generator=g) * 4 - 2)
        model.eval()
        head = model.classifier[-1]  # 1x1 conv -> 21 VOC logits
        head.weight.zero_()
        head.bias.fill_(-20.0)
        head.bias[0] = 0.0
        head.weight[12, :, 0, 0] = torch.randn(head.in_channels, generator=g)
        dog = model(torch.rand(4, 3, 48, 48, generator=g) * 4 - 2)["out"][:, 12]  # [4, 48, 48]
        scale = dog.std() / 4
        head.weight[12] /= scale
        head.bias[12] = -dog.median() / scale
    return model.state_dict()
