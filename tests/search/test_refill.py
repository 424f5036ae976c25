"""Per-row Adam and the refill queue (row_adam.py, refill.py) on their own."""

from __future__ import annotations

import random

import pytest
import torch

from silhouette_lightning.search.refill import RowQueue, most_ticks, pack_units, queue_units
from silhouette_lightning.search.row_adam import RowAdam

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_row_adam_gives_each_row_torch_adam_as_if_it_ran_alone(device):
    """Rows start and stop at different ticks (refilled rows); each equals torch.optim.Adam on that row alone
    (on CUDA both take torch's foreach path, on the CPU its single-tensor one)."""
    rows, dim, ticks = 5, 7, 12
    spans = [(0, 12), (0, 4), (3, 9), (5, 12), (9, 11)]  # (first tick, end tick) of each row's trajectory
    grads = torch.randn(ticks, rows, dim, generator=torch.Generator().manual_seed(0)).to(device)
    starts = torch.randn(rows, dim, generator=torch.Generator().manual_seed(1)).to(device)
    z = torch.nn.Parameter(torch.zeros(rows, dim, device=device))
    optimizer = RowAdam([z], lr=0.1, betas=(0.5, 0.99))
    for tick in range(ticks):
        starting = [r for r, (a, _) in enumerate(spans) if a == tick]
        with torch.no_grad():
            for r in starting:
                z[r] = starts[r]
        optimizer.reset_rows(starting)
        z.grad = grads[tick].clone()
        optimizer.update_rows = [r for r, (a, b) in enumerate(spans) if a <= tick < b]
        optimizer.step()
    for r, (a, b) in enumerate(spans):
        alone = torch.nn.Parameter(starts[r].clone())
        reference = torch.optim.Adam([alone], lr=0.1, betas=(0.5, 0.99))
        for tick in range(a, b):
            alone.grad = grads[tick, r].clone()
            reference.step()
        assert torch.equal(z[r], alone.detach()), r
    assert optimizer.row_steps == [b - a for a, b in spans]


def test_row_adam_leaves_rows_outside_update_rows_untouched():
    z = torch.nn.Parameter(torch.ones(3, 2))
    optimizer = RowAdam([z], lr=1.0)
    z.grad = torch.ones(3, 2)
    optimizer.update_rows = [1]
    optimizer.step()
    assert (
        torch.equal(z[0], torch.ones(2)) and torch.equal(z[2], torch.ones(2)) and not torch.equal(z[1], torch.ones(2))
    )
    with pytest.raises(ValueError, match="rows"):
        RowAdam([torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4, 2))])


def test_queue_hands_out_whole_units_in_order():
    queue = RowQueue([[0, 1], [2], [3, 4, 5]], rows=4)
    assert queue.take(3) == [0, 1, 2]
    assert queue.take(2) == [], "the next group needs 3 rows: it waits, nothing overtakes it"
    assert len(queue) == 3 and queue
    assert queue.take(4) == [3, 4, 5]
    assert not queue and queue.take(4) == []
    with pytest.raises(ValueError, match="does not fit"):
        RowQueue([[0, 1, 2]], rows=2)


def _refilled_ticks(units, lengths, rows):
    """Ticks a greedy in-order refill takes when trajectory i runs `lengths[i]` ticks (the module's schedule)."""
    queue, running, tick = RowQueue(units, rows), {}, 0  # running: trajectory -> ticks left
    while queue or running:
        for index in queue.take(rows - len(running)):
            running[index] = lengths[index]
        tick += 1
        running = {i: left - 1 for i, left in running.items() if left > 1}
    return tick


@pytest.mark.parametrize("whole", [False, True])
def test_most_ticks_bounds_every_refilled_schedule(whole):
    rng = random.Random(0)
    for _ in range(200):
        steps, rows = rng.randint(1, 6), rng.randint(2, 8)
        groups = [g for g in range(rng.randint(1, 8)) for _ in range(rng.randint(1, rows))]
        units = queue_units(groups, list(range(len(groups))), whole_groups=whole)
        lengths = [rng.randint(1, steps + 1) for _ in groups]
        bound = most_ticks(units, rows, steps)
        assert _refilled_ticks(units, lengths, rows) <= bound
        full = [steps + 1] * len(groups)  # nothing ends early: the bound is exact
        assert _refilled_ticks(units, full, rows) == bound == len(pack_units(units, rows)) * (steps + 1)


def test_image_panels_follow_every_and_rows_ending_without_a_panel_per_step():
    from types import SimpleNamespace

    from silhouette_lightning.engine.panels import ImagePanels

    def module(steps=25, ended=()):
        return SimpleNamespace(batch_size=4, steps=steps, report=SimpleNamespace(finished=list(ended)))

    panels = ImagePanels(5, data_dir=None, max_pixels=10**6)
    ended_every_step = [panels.due(t, module(ended=[1])) for t in range(1, 12)]
    assert ended_every_step == [True, False, False, False, True, False, False, False, False, True, False]
    assert not panels.due(12, module(ended=[6])), "rank zero's rows only"
    assert panels.due(15, module()), "every 5 steps"
    short = ImagePanels(5, data_dir=None, max_pixels=10**6)
    assert short.due(0, module(steps=3)) and not short.due(2, module(steps=3))
    assert short.due(3, module(steps=3, ended=[0])), "a 4-step trajectory's final best shows"
