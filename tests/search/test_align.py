"""search/align.py: boxes, transforms, warps forward and back, bounds, the frame box and its cache."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from silhouette_lightning.search.align import (
    FRAME_BOX,
    AlignBounds,
    Transform,
    align_targets,
    box_transform,
    cached_frame_box,
    check_align_options,
    check_frame_box,
    clamp_transform,
    from_unconstrained,
    measure_frame_box,
    subject_box,
    to_unconstrained,
    warp,
    warp_maps,
)
from silhouette_lightning.search.metrics import silhouette_iou


def square(size: int, top: int, left: int, side: int, rows: int = 1) -> torch.Tensor:
    m = torch.zeros(rows, size, size)
    m[:, top : top + side, left : left + side] = 1.0
    return m


def silhouette(size: int = 64) -> torch.Tensor:
    """An asymmetric shape [S, S]: an ellipse body with a head on its upper right, roughly centred."""
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    y, x = y / size, x / size
    body = ((y - 0.55) / 0.22) ** 2 + ((x - 0.45) / 0.32) ** 2 < 1
    head = ((y - 0.3) / 0.12) ** 2 + ((x - 0.72) / 0.12) ** 2 < 1
    return (body | head).float()


def test_subject_box_known_answers():
    maps = torch.zeros(3, 8, 8)
    maps[0, 2:6, 2:6] = 1  # the middle half
    maps[1, 0:2, 4:8] = 0.9  # top right, 2 rows x 4 columns
    boxes = subject_box(maps)  # row 2 empty
    assert boxes.shape == (3, 4) and boxes.dtype == torch.float32
    assert boxes[0].tolist() == [0.5, 0.5, 0.5, 0.5]
    assert boxes[1].tolist() == [0.125, 0.75, 0.25, 0.5]
    assert boxes[2].tolist() == [0.5, 0.5, 1.0, 1.0]
    assert subject_box(maps, threshold=0.95)[1].tolist() == [0.5, 0.5, 1.0, 1.0]  # 0.9 is below that threshold
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        subject_box(torch.zeros(8, 8))


def test_box_transform_maps_the_source_box_onto_the_frame_box():
    source = torch.tensor([[0.25, 0.7, 0.3, 0.2], [0.5, 0.5, 1.0, 1.0]])
    frame = torch.tensor(FRAME_BOX)
    stretched = box_transform(source, frame, keep_aspect=False)
    assert torch.allclose(stretched.map_box(source), frame.expand(2, 4), atol=1e-6)
    kept = box_transform(source, frame)  # one scale: the source box fits inside the frame box, same centre
    assert torch.equal(kept.sy, kept.sx)
    landed = kept.map_box(source)
    assert torch.allclose(landed[:, :2], frame[:2].expand(2, 2), atol=1e-6)
    assert (landed[:, 2:] <= frame[2:] + 1e-6).all() and torch.isclose(landed[:, 2:], frame[2:]).any(1).all()
    flipped = box_transform(source, frame, flip=torch.tensor([True, False]), keep_aspect=False)
    assert torch.allclose(flipped.map_box(source), frame.expand(2, 4), atol=1e-6)


def test_the_identity_comes_back_bit_for_bit():
    x = torch.randn(3, 2, 9, 7)
    assert warp(x, Transform.identity(3)) is x
    assert warp(x, Transform.identity(3), inverse=True) is x
    mixed = Transform(
        torch.tensor([1.0, 0.5, 1.0]), torch.tensor([1.0, 0.5, 1.0]), torch.tensor([0.0, 0.1, 0.0]), torch.zeros(3)
    )
    out = warp(x, mixed)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2]) and not torch.equal(out[1], x[1])


def test_a_square_goes_forward_and_back_onto_its_pixels():
    target = square(32, top=20, left=4, side=8)  # bottom left
    t = box_transform(subject_box(target), torch.tensor([0.5, 0.5, 0.5, 0.5]))  # onto the middle half
    assert t.sy.item() == pytest.approx(2.0) and t.tx.item() == pytest.approx(1.0)
    forward = warp_maps(target, t)
    expected = square(32, top=8, left=8, side=16)
    assert torch.equal(forward > 0.5, expected > 0.5)
    assert subject_box(forward).tolist() == [[0.5, 0.5, 0.5, 0.5]]
    back = warp_maps(forward, t, inverse=True)
    assert torch.equal(back > 0.5, target > 0.5)

    shifted = Transform(torch.ones(1), torch.ones(1), torch.tensor([-3 / 16]), torch.tensor([2 / 16]))  # -3, +2 px
    moved = warp_maps(target, shifted)
    assert torch.allclose(moved, torch.roll(target, (-3, 2), (1, 2)), atol=1e-5)
    assert torch.allclose(warp_maps(moved, shifted, inverse=True), target, atol=1e-5)


def test_the_grid_is_affine_grids_and_the_warp_is_per_row():
    t = Transform(
        torch.tensor([0.7, 1.6]),
        torch.tensor([0.9, 1.2]),
        torch.tensor([0.2, -0.3]),
        torch.tensor([-0.1, 0.4]),
        torch.tensor([False, True]),
    )
    x = torch.rand(2, 3, 12, 10)
    theirs = F.grid_sample(x, F.affine_grid(t.theta(), [2, 3, 12, 10], align_corners=False), align_corners=False)
    assert torch.allclose(warp(x, t), theirs, atol=1e-5)
    alone = warp(x[1:], t.rows_of([1]))
    assert torch.equal(warp(x, t)[1:], alone)
    assert Transform.from_stacked(t.stack()).stack().equal(t.stack())


def test_flip_forward_and_back():
    target = square(16, top=2, left=1, side=4)
    flip = Transform(torch.ones(1), torch.ones(1), torch.zeros(1), torch.zeros(1), torch.tensor([True]))
    assert torch.allclose(warp_maps(target, flip), target.flip(2), atol=1e-6)
    assert torch.allclose(warp_maps(warp_maps(target, flip), flip, inverse=True), target, atol=1e-6)


def test_the_warp_is_differentiable_in_the_transform():
    target = silhouette(32)[None]
    raw = torch.zeros(1, 4, requires_grad=True)
    t = from_unconstrained(raw, AlignBounds((0.5, 2.0), 1.0))
    loss = warp_maps(target, t).sum()
    loss.backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0 and torch.isfinite(raw.grad).all()


def test_alignment_recovers_a_scaled_and_shifted_copy():
    """A target that is the silhouette at half size, moved to a corner: the box transform puts it back on the
    silhouette (IoU near 1), where the raw target overlaps it little."""
    shape = silhouette(64)[None]  # [1, 64, 64]
    small = Transform(torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([0.45]), torch.tensor([-0.5]))
    target = warp_maps(shape, small)
    before = silhouette_iou(target, shape).item()
    aligned = warp_maps(target, box_transform(subject_box(target), subject_box(shape)))
    after = silhouette_iou(aligned, shape).item()
    assert before < 0.2 and after > 0.9, (before, after)
    # and the generated image (here: the silhouette itself) maps back onto the target in its own frame
    t = box_transform(subject_box(target), subject_box(shape))
    assert silhouette_iou(warp_maps(shape, t, inverse=True), target).item() > 0.9


def test_refinement_parameters_stay_inside_their_bounds_and_round_trip():
    bounds = AlignBounds((0.5, 2.0), 0.8)
    t = Transform(
        torch.tensor([0.7, 1.0, 5.0]),
        torch.tensor([1.9, 0.6, 0.1]),
        torch.tensor([0.3, 0.0, 3.0]),
        torch.tensor([-0.7, 0.1, -9.0]),
    )
    raw = to_unconstrained(t, bounds)
    back = from_unconstrained(raw, bounds)
    clamped = clamp_transform(t, bounds)
    for a, b in zip(back.stack()[:, :4].T, clamped.stack()[:, :4].T, strict=True):
        assert torch.allclose(a, b, atol=1e-3)  # on a bound: _EDGE inside it
    wild = from_unconstrained(torch.tensor([[-1e4, 1e4, -1e4, 1e4]]), bounds)
    assert 0.5 <= wild.sy.item() <= 2.0 and 0.5 <= wild.sx.item() <= 2.0 and abs(wild.tx.item()) <= 0.8 + 1e-6
    fixed = AlignBounds((1.0, 1.0), 0.0)
    assert to_unconstrained(t, fixed).abs().sum() == 0
    assert from_unconstrained(torch.randn(3, 4), fixed).is_identity().all()
    tied = from_unconstrained(torch.tensor([[0.3, -2.0, 0.0, 0.0]]), bounds, keep_aspect=True)
    assert torch.equal(tied.sy, tied.sx)


def test_adam_refines_the_transform_per_row():
    """Two rows, each a scaled copy of the silhouette at its own size: Adam on the unconstrained parameters (with
    its own learning rate) raises each row's overlap, and a row's path does not depend on the other row."""
    shape = silhouette(32)[None].expand(2, 32, 32)
    truth = Transform(
        torch.tensor([0.8, 1.3]), torch.tensor([0.8, 1.3]), torch.tensor([0.1, -0.1]), torch.tensor([0.0, 0.1])
    )
    target = warp_maps(shape, truth)
    bounds = AlignBounds((0.5, 2.0), 1.0)

    def refine(rows):
        raw = to_unconstrained(Transform.identity(len(rows)), bounds).requires_grad_(True)
        opt = torch.optim.Adam([raw], lr=0.05)
        for _ in range(60):
            t = from_unconstrained(raw, bounds)
            loss = (warp_maps(shape[rows], t) - target[rows]).pow(2).flatten(1).mean(1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return from_unconstrained(raw.detach(), bounds)

    start = silhouette_iou(shape, target)
    t = refine([0, 1])
    end = silhouette_iou(warp_maps(shape, t), target)
    assert (end > start + 0.1).all() and (end > 0.85).all(), (start, end)
    alone = refine([1])
    assert torch.allclose(alone.sy, t.sy[1:], atol=1e-5)


def test_check_align_options_messages():
    assert check_align_options((0.5, 2.0), 0.05) == []
    assert check_align_options((1.0, 1.0), 0.0, shift_bound=0.0, frame_box=FRAME_BOX) == []
    bad = check_align_options((1.2, 2.0), -1.0, shift_bound=3.0, threshold=1.0, frame_box=(0.5, 0.5, 0.0, 1.0))
    assert len(bad) == 5 and all("\n" not in m for m in bad)
    assert bad[0] == "align scale bounds must satisfy 0 < lo <= 1 <= hi, got (1.2, 2)"
    assert "learning rate" in bad[1] and "shift bound" in bad[2] and "threshold" in bad[3] and "frame box" in bad[4]
    assert "0 < lo <= 1 <= hi" in check_align_options((0.0, 2.0), 0.1)[0]
    assert "0 < lo <= 1 <= hi" in check_align_options((0.5, math.inf), 0.1)[0]
    assert "two numbers" in check_align_options((0.5,), 0.1)[0]
    assert "learning rate" in check_align_options((0.5, 2), math.nan)[0]
    assert check_frame_box([0.5, 0.5, 1.0]) and check_frame_box(None) and not check_frame_box(FRAME_BOX)


def test_measure_frame_box_is_seeded_and_independent_of_the_batch():
    calls = []

    def generate(classes, seeds):
        calls.append(len(seeds))
        out = torch.zeros(len(seeds), 3, 16, 16)
        for k, s in enumerate(seeds.tolist()):
            g = torch.Generator().manual_seed(s)
            top, left = (int(v) for v in torch.randint(0, 8, (2,), generator=g))
            out[k, :, top : top + 8, left : left + 8] = 1 if classes[k] != 99 else 0  # class 99: nothing found
        return out

    def segment(images, classes):
        return images[:, 0]

    a = measure_frame_box(generate, segment, [1, 2], n=5, seed=7, batch=3)
    b = measure_frame_box(generate, segment, [1, 2], n=5, seed=7, batch=16)
    assert torch.equal(a, b) and a.shape == (4,) and a[2].item() == 0.5 and a[3].item() == 0.5
    assert not torch.equal(a, measure_frame_box(generate, segment, [1, 2], n=5, seed=8))
    with_empty = measure_frame_box(generate, segment, [1, 2, 99], n=5, seed=7)
    assert torch.allclose(with_empty, a)  # empty maps are left out of the mean
    assert torch.allclose(measure_frame_box(generate, segment, [99], n=2, seed=7), torch.tensor(FRAME_BOX))


def test_cached_frame_box(tmp_path):
    measured = []

    def measure():
        measured.append(1)
        return torch.tensor([0.52, 0.49, 0.8, 0.7])

    first = cached_frame_box(tmp_path, "biggan-deep-128/207", measure)
    again = cached_frame_box(tmp_path, "biggan-deep-128/207", measure)
    assert torch.equal(first, again) and len(measured) == 1 and first.dtype == torch.float32
    (path,) = tmp_path.glob("frame_box-*.json")
    assert json.loads(path.read_text())["key"] == "biggan-deep-128/207"
    cached_frame_box(tmp_path, "biggan-deep-128/208", measure)
    assert len(measured) == 2 and len(list(tmp_path.glob("frame_box-*.json"))) == 2
    path.write_text("{not json")
    assert torch.equal(cached_frame_box(tmp_path, "biggan-deep-128/207", measure), first) and len(measured) == 3
    with pytest.raises(ValueError, match="frame box"):
        cached_frame_box(tmp_path, "bad", lambda: torch.tensor([0.5, 0.5, 0.0, 1.0]))


def test_align_targets_puts_each_subject_on_the_frame_box():
    targets = torch.cat([square(32, 2, 3, 6), square(32, 10, 16, 12), torch.zeros(1, 32, 32)])
    frame = torch.tensor([0.5, 0.5, 0.5, 0.5])
    aligned, t = align_targets(targets, frame)
    assert aligned.shape == targets.shape and t.rows == 3
    assert torch.allclose(subject_box(aligned[:2]), frame.expand(2, 4), atol=1 / 32)
    assert torch.equal(aligned[2], targets[2])  # an empty target stays empty
    clamped, tc = align_targets(targets, frame, bounds=AlignBounds((0.5, 2.0), 1.0))
    assert tc.sy[0].item() == 2.0 and t.sy[0].item() == pytest.approx(8 / 3)  # 16 px box from 6 px: clamped
    per_row = align_targets(targets[:2], torch.stack([frame, torch.tensor([0.4, 0.6, 0.25, 0.25])]))[0]
    assert torch.allclose(subject_box(per_row[1:]), torch.tensor([[0.4, 0.6, 0.25, 0.25]]), atol=1 / 32)


def test_align_bounds_are_checked():
    with pytest.raises(ValueError, match="0 < lo <= 1 <= hi"):
        AlignBounds((1.5, 2.0))
    with pytest.raises(ValueError, match="shift bound"):
        AlignBounds((0.5, 2.0), -1.0)


def blob(centres: torch.Tensor, size: int = 24, radius: float = 0.25) -> torch.Tensor:
    """A toy differentiable "generator + segmenter": latents [B, 2] -> soft disc maps [B, S, S] centred there."""
    y, x = torch.meshgrid(
        (torch.arange(size) + 0.5) / size * 2 - 1, (torch.arange(size) + 0.5) / size * 2 - 1, indexing="ij"
    )
    d2 = (y - centres[:, 0, None, None]) ** 2 + (x - centres[:, 1, None, None]) ** 2
    return torch.sigmoid((radius**2 - d2) * 40)


def test_a_per_row_step_with_latent_and_transform_in_one_row_adam():
    """The integration sketch: z [B, 2] and the transform's raw parameters [B, 4] in one RowAdam (two groups, two
    learning rates); the loss compares the generated map with the target warped into the generator's frame by
    the row's own transform. A row's path is bit for bit the same alone or in a batch (one thread, CPU)."""
    from silhouette_lightning.search.row_adam import RowAdam

    targets = torch.stack([square(24, 2, 2, 8)[0], square(24, 12, 10, 10)[0], silhouette(24)])
    bounds = AlignBounds((0.5, 2.0), 1.0)

    def search(rows: list[int], steps: int = 15):
        aligned, start = align_targets(targets[rows], bounds=bounds)
        z = torch.nn.Parameter(torch.zeros(len(rows), 2))
        raw = torch.nn.Parameter(to_unconstrained(start, bounds))
        opt = RowAdam([{"params": [z]}, {"params": [raw], "lr": 0.02}], lr=0.1, betas=(0.5, 0.99))
        for _ in range(steps):
            t = from_unconstrained(raw, bounds, keep_aspect=True)
            loss = (blob(z) - warp_maps(targets[rows], t)).pow(2).flatten(1).mean(1)  # [B]
            opt.zero_grad()
            loss.sum().backward()  # a sum over rows, never a mean: each row's gradient is its own
            opt.step()
        return z.detach(), raw.detach(), aligned

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit identity across batch shapes holds at one intra-op thread (DESIGN.md)
    try:
        z_all, raw_all, _ = search([0, 1, 2])
        z_one, raw_one, _ = search([1])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(z_all[1:2], z_one) and torch.equal(raw_all[1:2], raw_one)
    assert raw_all[:, 0].ne(to_unconstrained(align_targets(targets, bounds=bounds)[1], bounds)[:, 0]).all()
