"""Losses and IoU against independent references on seeded tiny inputs."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_jaccard_index

from silhouette_lightning.search.losses import LOSSES, ensemble_probs, map_loss, trajectory_loss
from silhouette_lightning.search.metrics import MeanIoU, silhouette_iou


def _probs(b=3, c=21, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, s, s, generator=g).softmax(1)


def test_iou_matches_set_reference_and_torchmetrics():
    g = torch.Generator().manual_seed(1)
    p, t = torch.rand(4, 9, 7, generator=g), torch.rand(4, 9, 7, generator=g)
    ours = silhouette_iou(p, t)
    for i in range(4):
        a = {(y, x) for y in range(9) for x in range(7) if p[i, y, x] > 0.5}
        b = {(y, x) for y in range(9) for x in range(7) if t[i, y, x] > 0.5}
        assert ours[i].item() == pytest.approx(len(a & b) / len(a | b))
        assert ours[i].item() == pytest.approx(binary_jaccard_index(p[i], (t[i] > 0.5).long()).item())


def test_iou_edge_cases():
    empty, full = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
    assert silhouette_iou(empty, empty).item() == 1.0
    assert silhouette_iou(full, empty).item() == 0.0
    assert silhouette_iou(full, full).item() == 1.0


def test_mean_iou_metric_accumulates():
    metric = MeanIoU()
    metric.update(torch.tensor([0.5, 1.0]))
    metric.update(torch.tensor([0.0]))
    assert metric.compute().item() == pytest.approx(0.5)


def test_mse_uses_only_the_subject_channel():
    probs, target = _probs(), torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2))
    channel = torch.tensor([12, 8, 3])
    expected = torch.stack([((probs[i, channel[i]] - target[i]) ** 2).mean() for i in range(3)])
    assert torch.allclose(map_loss(probs, target, channel, "mse"), expected)
    changed = probs.clone()
    changed[:, 0] += 0.3  # background changes: the paper's loss must not see it
    changed[:, 5] -= 0.1
    for i in range(3):
        changed[i, channel[i]] = probs[i, channel[i]]
    assert torch.allclose(map_loss(changed, target, channel, "mse"), expected)


def test_other_losses_against_numpy():
    probs, target = _probs(seed=3), (torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(4)) > 0.5).float()
    channel = torch.tensor([12, 12, 8])
    p, t = probs.double().numpy(), target.double().numpy()
    for i in range(3):
        k = channel[i].item()
        pk, p0 = p[i, k], p[i, 0]
        bce = -(t[i] * np.log(pk) + (1 - t[i]) * np.log(1 - pk)).mean()
        bce_bg = bce - ((1 - t[i]) * np.log(p0) + t[i] * np.log(1 - p0)).mean()
        labels = np.where(t[i] > 0.5, k, 0)
        ce = -np.log(np.take_along_axis(p[i], labels[None], 0)[0]).mean()
        soft = -(t[i] * np.log(pk) + (1 - t[i]) * np.log(p0)).mean()
        for name, ref in (("bce", bce), ("bce_bg", bce_bg), ("ce", ce), ("soft_ce", soft)):
            assert map_loss(probs, target, channel, name)[i].item() == pytest.approx(ref, rel=1e-4), name


def test_ensemble_modes():
    logits = torch.randn(2, 3, 21, 4, 4, generator=torch.Generator().manual_seed(5))
    w = torch.tensor([0.6, 0.4])
    assert torch.allclose(ensemble_probs(logits, w, "probs"), 0.6 * logits[0].softmax(1) + 0.4 * logits[1].softmax(1))
    assert torch.allclose(ensemble_probs(logits, w, "logits"), (0.6 * logits[0] + 0.4 * logits[1]).softmax(1))
    target, channel = torch.rand(3, 4, 4), torch.tensor([12, 8, 3])
    per_member = [map_loss(logits[m].softmax(1), target, channel) for m in range(2)]
    assert torch.allclose(
        trajectory_loss(logits, w, target, channel, mode="losses"), 0.6 * per_member[0] + 0.4 * per_member[1]
    )


@pytest.mark.parametrize("loss", LOSSES)
def test_losses_are_per_trajectory(loss):
    """Row i's loss and gradient do not depend on the other rows (invariant 1)."""
    logits = torch.randn(2, 4, 21, 6, 6, generator=torch.Generator().manual_seed(6), requires_grad=True)
    target, channel = torch.rand(4, 6, 6), torch.tensor([12, 8, 3, 12])
    full = trajectory_loss(logits, torch.tensor([0.5, 0.5]), target, channel, loss=loss)
    alone = trajectory_loss(logits[:, 1:2], torch.tensor([0.5, 0.5]), target[1:2], channel[1:2], loss=loss)
    assert full.shape == (4,)
    assert full[1].item() == pytest.approx(alone[0].item(), rel=1e-6)


# ---------------------------------------------------------------- losses under mixed precision


def _score_under_autocast(tiny_generator, ensemble, loss, device="cpu"):
    """`SilhouetteSwap.score` of 3 latents under bf16 autocast, as a bf16-mixed training step runs it."""
    from silhouette_lightning.config.settings import SwapConfig, views
    from silhouette_lightning.engine.module import SilhouetteSwap

    module = SilhouetteSwap(tiny_generator, ensemble, **views(SwapConfig(loss=loss), batch_size=3)).to(device)
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(3, 8, generator=g) * 0.4).to(device).requires_grad_(True)
    targets = (torch.rand(3, 32, 32, generator=g) > 0.5).float().to(device)
    classes, channels = torch.tensor([1, 2, 3], device=device), torch.tensor([7, 8, 12], device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss_values, iou = module.score(z, classes, channels, targets)
        loss_values.sum().backward()
    return loss_values, iou, z.grad


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_runs_in_float32_outside_autocast(tiny_generator, ensemble, loss, monkeypatch):
    """CUDA autocast refuses binary_cross_entropy; on the CPU, prove the loss never sees autocast at all."""
    import silhouette_lightning.search.losses as losses

    seen = []
    real = losses.map_loss

    def spy(probs, target, channel, loss="mse"):
        seen.append((torch.is_autocast_enabled("cpu"), probs.dtype, target.dtype))
        return real(probs, target, channel, loss)

    monkeypatch.setattr(losses, "map_loss", spy)
    loss_values, iou, grad = _score_under_autocast(tiny_generator, ensemble, loss)
    assert seen and all(s == (False, torch.float32, torch.float32) for s in seen), seen
    assert loss_values.dtype == torch.float32 and torch.isfinite(loss_values).all()
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("loss", ["bce", "bce_bg"])
def test_bce_under_cpu_autocast_is_the_float32_loss_of_the_same_logits(loss):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 21, 8, 8, generator=g).bfloat16()  # what bf16 segmenters hand over
    target, channel, weights = torch.rand(3, 8, 8, generator=g), torch.tensor([7, 8, 12]), torch.tensor([0.6, 0.4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = trajectory_loss(logits, weights, target, channel, loss=loss)
    reference = trajectory_loss(logits.float(), weights, target, channel, loss=loss)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, reference)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_runs_under_cuda_autocast(tiny_generator, ensemble, loss):
    """The README's GPU advice (bf16-mixed) with every loss: CUDA autocast raises on binary_cross_entropy."""
    loss_values, iou, grad = _score_under_autocast(tiny_generator, ensemble, loss, device="cuda")
    assert loss_values.dtype == torch.float32 and torch.isfinite(loss_values).all()
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["probs", "logits", "losses"])
def test_ensemble_of_bf16_logits_is_combined_in_float32(mode):
    """bf16 segmenter outputs: the weights stay exactly 0.6 / 0.4 (bf16 makes 0.6016) and maps sum to 1."""
    logits = torch.full((2, 1, 21, 4, 4), -100.0)
    logits[0, :, 3], logits[1, :, 5] = 100.0, 100.0  # member 0 is sure of class 3, member 1 of class 5
    weights = torch.tensor([0.6, 0.4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probs = ensemble_probs(logits.bfloat16(), weights, mode)
    assert probs.dtype == torch.float32
    if mode != "logits":
        assert torch.equal(probs[:, 3], torch.full((1, 4, 4), 0.6))
        assert torch.equal(probs[:, 5], torch.full((1, 4, 4), 0.4))
    noisy = torch.randn(2, 3, 21, 8, 8, generator=torch.Generator().manual_seed(0)).mul(4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sums = ensemble_probs(noisy, weights, mode).sum(1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-6, rtol=0)


def test_target_map_of_a_bf16_ensemble_is_combined_in_float32(ensemble):
    """A target map segmented under bf16 autocast weighs the members exactly as the loss side does."""
    from silhouette_lightning.inputs.target_maps import segment_photo

    photo = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        target, subject = segment_photo(ensemble, photo, mode="probs", subject="dog")
        logits = ensemble(photo[None])  # bf16, as the segmenters gave it
    expected = sum(w * logits[i].float().softmax(1)[0, 12] for i, w in enumerate([0.6, 0.4]))
    assert logits.dtype == torch.bfloat16 and target.dtype == torch.float32
    torch.testing.assert_close(target, expected, atol=1e-6, rtol=0)
