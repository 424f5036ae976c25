"""The optimization itself: it converges on a known answer, touches only the latents, and gives each
trajectory the same result whatever else shares its batch."""

import pytest
import torch

from silhouette_lightning.bench.recovery import recover, transform_image
from silhouette_lightning.config.settings import SwapConfig, views
from silhouette_lightning.engine.module import SilhouetteSwap, frame_steps
from silhouette_lightning.inputs.trajectories import enumerate_trajectories, initial_latents, trajectory_seed
from silhouette_lightning.models.frozen import is_frozen
from silhouette_lightning.search.losses import ensemble_probs


@pytest.fixture
def known_answer(tiny_generator, ensemble):
    """Six latents z*, their classes, the VOC channel most present in their images, and perturbed starts."""
    g = torch.Generator().manual_seed(0)
    z_star = torch.randn(6, 8, generator=g).clamp(-2, 2) * 0.4
    classes = torch.arange(1, 7)
    module = SilhouetteSwap(tiny_generator, ensemble, **views(SwapConfig(), batch_size=6))
    with torch.no_grad():
        probs = ensemble_probs(ensemble(module.generate(z_star, classes)), ensemble.weights)
    counts = torch.bincount(probs.argmax(1).flatten(), minlength=21)
    channel = int(counts[1:].argmax()) + 1
    start = z_star + 0.3 * torch.randn(6, 8, generator=g)
    return z_star, classes, torch.full((6,), channel), start


def test_known_answer_is_recovered(tiny_generator, ensemble, known_answer):
    z_star, classes, channels, start = known_answer
    result = recover(
        tiny_generator, ensemble, z_star, classes, channels, start=start, settings={"steps": 25, "lr": 0.1}
    )
    initial = result.iou_history[:, 0]
    assert initial.mean() < 0.5, "the start must be a real search, not the answer"
    assert result.best_iou.mean() > 0.85
    assert (result.best_iou >= initial).all()
    # The same search with a broken optimizer (no update) stays where it started: the bar above discriminates.
    frozen = recover(tiny_generator, ensemble, z_star, classes, channels, start=start, settings={"steps": 5, "lr": 0.0})
    assert torch.equal(frozen.iou_history[:, -1], initial)
    assert frozen.best_iou.mean() < 0.85


def test_only_latents_are_trained_and_networks_stay_frozen(tiny_generator, ensemble, known_answer):
    z_star, classes, channels, start = known_answer
    recover(tiny_generator, ensemble, z_star, classes, channels, start=start, settings={"steps": 3})
    for net in (tiny_generator, ensemble):
        assert is_frozen(net)
        assert not any(m.training for m in net.modules()), "a frozen network left eval mode during fit"
        assert all(p.grad is None for p in net.parameters())
    # BigGAN's spectral-norm vectors change in train mode: they must be untouched by the fit.
    before = {k: v.clone() for k, v in tiny_generator.state_dict().items()}
    recover(tiny_generator, ensemble, z_star, classes, channels, start=start, settings={"steps": 3})
    assert all(torch.equal(before[k], v) for k, v in tiny_generator.state_dict().items())


def test_trajectory_result_does_not_depend_on_its_batch(tiny_generator, ensemble, known_answer):
    """Row 2 optimized among six equals row 2 optimized alone (DESIGN.md, invariant 1)."""
    z_star, classes, channels, start = known_answer
    together = recover(tiny_generator, ensemble, z_star, classes, channels, start=start, settings={"steps": 8})
    alone = recover(
        tiny_generator, ensemble, z_star[2:3], classes[2:3], channels[2:3], start=start[2:3], settings={"steps": 8}
    )
    assert torch.allclose(together.best_z[2], alone.best_z[0], atol=1e-5)
    assert torch.allclose(together.iou_history[2], alone.iou_history[0])
    assert together.best_step[2] == alone.best_step[0]


def test_recovery_of_a_shifted_image_runs(tiny_generator, ensemble, known_answer):
    """The paper's figure 5 setting: start at z*, the generated image shifted; the search must move."""
    z_star, classes, channels, _ = known_answer
    result = recover(tiny_generator, ensemble, z_star, classes, channels, shift_px=3, settings={"steps": 10})
    assert result.iou_history.shape == (6, 11)
    assert not torch.equal(result.best_z, z_star)
    still = recover(tiny_generator, ensemble, z_star, classes, channels, settings={"steps": 1})
    assert torch.equal(still.iou_history[:, 0], torch.ones(6)), "no transform: z* itself fits at step 0"


def test_transform_image_shifts_right_and_rotates_counter_clockwise():
    image = torch.zeros(1, 3, 9, 9)
    image[0, :, 2:5, 1:3] = 1
    shifted = transform_image(image, shift_px=2)
    assert torch.allclose(shifted[0, :, 2:5, 3:5], torch.ones(3, 3, 2))
    assert shifted[0, :, :, :3].abs().sum() < 1e-5
    assert transform_image(image) is image  # no transform, no resampling
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 8] = 1  # right of the centre
    turned = transform_image(dot, rotate_deg=90).round()
    assert turned[0, 0, 0, 4] == 1 and turned.sum() == 1  # counter-clockwise: now above the centre


def test_seeds_and_latents_depend_only_on_identity():
    a = enumerate_trajectories([("x.png", "dog", [1, 2]), ("y.png", "cat", [3])], restarts=2, run_seed=7)
    b = enumerate_trajectories([("y.png", "cat", [3])], restarts=2, run_seed=7)
    assert [t.seed for t in a[4:]] == [t.seed for t in b]
    assert len({t.seed for t in a}) == len(a)
    assert trajectory_seed(7, "x.png", 1, 0) != trajectory_seed(8, "x.png", 1, 0)
    z = initial_latents([t.seed for t in a], 16, truncation=0.5)
    assert torch.equal(z[4:], initial_latents([t.seed for t in b], 16, 0.5))
    assert z.abs().max() <= 2 * 0.5


def test_frame_steps_cover_first_and_last():
    assert frame_steps(25, 6) == [0, 5, 10, 15, 20, 25]
    assert frame_steps(3, 6) == [0, 1, 2, 3]
    assert frame_steps(25, 1) == [25]


@pytest.mark.slow
def test_compiled_ensemble_gives_the_same_search(tmp_path, cli_args):
    """--compile (torch.compile of the segmenters) runs on the CPU too and finds the same results."""
    from conftest import read_csv

    from silhouette_lightning.cli import main

    assert main(cli_args("--save-images", "none", name="plain")) == 0
    assert main(cli_args("--save-images", "none", "--compile", name="compiled")) == 0
    plain = read_csv(tmp_path / "out" / "plain" / "results.csv")
    compiled = read_csv(tmp_path / "out" / "compiled" / "results.csv")
    for a, b in zip(plain, compiled, strict=True):
        assert (a["source"], a["class_id"], a["best_restart"], a["best_step"]) == (
            b["source"],
            b["class_id"],
            b["best_restart"],
            b["best_step"],
        )
        assert float(a["best_loss"]) == pytest.approx(float(b["best_loss"]), rel=1e-3)
