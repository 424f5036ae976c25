"""Host syncs per latent step, counted on the CPU by instrumenting the tensor calls that wait for a device.

On a GPU each of `tolist`, `item`, `cpu`, `bool(t)`, ... on a device tensor blocks the host until the device has
caught up (what `torch.cuda.set_sync_debug_mode` reports); on the CPU they cost nothing but can still be counted.
A steady-state step (no row loaded, none finished) should wait once: for which rows go on (issue 20).
"""

from __future__ import annotations

import collections
import traceback
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from silhouette_lightning.config.settings import SwapConfig
from silhouette_lightning.run.job import run
from silhouette_lightning.search import rows

SYNCING = ("tolist", "item", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__")
# torch.optim's functional Adam reads its step count with `.item()`; that count is a CPU tensor by torch's design
# (not `capturable`): no device wait.
CPU_BY_DESIGN = ("torch/optim/optimizer.py",)


class SyncCounter(Callback):
    """Counts the syncing calls from one batch start to the next, per step, with where each came from."""

    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.host: list[torch.Tensor] = []  # what `to_host` returned: host copies, read without a wait
        self.host_ids: set[int] = set()  # their ids (the list keeps them alive, so no id is reused)
        self.in_to_host = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.append({"calls": collections.Counter()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps[-1]["loaded"] = pl_module.report.loaded
        self.steps[-1]["finished"] = len(pl_module.report.finished)

    def record(self, name: str) -> None:
        if not self.steps:
            return
        frame = traceback.extract_stack(limit=3)[0]
        site = f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
        if not site.startswith(CPU_BY_DESIGN):
            self.steps[-1]["calls"][f"{name} {site}"] += 1


@pytest.fixture
def counted(monkeypatch):
    counter = SyncCounter()
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            if id(self) not in counter.host_ids:
                counter.record(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):  # a blocking copy to the host waits; `non_blocking` ones wait in `to_host`
        target = [a for a in args if isinstance(a, (str, torch.device))] + [kwargs.get("device")]
        to_host_ = any(t is not None and torch.device(t).type == "cpu" for t in target)
        if to_host_ and not kwargs.get("non_blocking") and not counter.in_to_host:
            counter.record("to")
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    original_to_host = rows.to_host

    def to_host(tensors):  # its one synchronize
        counter.record("to_host")
        counter.in_to_host = True  # its copies are the one wait counted here (on a GPU they do not block)
        try:
            host = original_to_host(tensors)
        finally:
            counter.in_to_host = False
        counter.host += host
        counter.host_ids |= {id(t) for t in host}
        return host

    monkeypatch.setattr(rows, "to_host", to_host)
    return counter


def tiny_run(tmp_path: Path, mask_folder: Path, counter: SyncCounter, generator, ensemble, **settings) -> None:
    config = SwapConfig(
        data=str(mask_folder),
        masks=True,
        classes=[1],
        restarts=2,
        starts=0,
        steps=8,
        batch_size=4,
        seg_size=32,
        heldout="none",
        save_images="none",
        image_every=0,
        frames=2,
        out=str(tmp_path / "out"),
        name="syncs",
        accelerator="cpu",
        precision="32-true",
        compile="none",
        pretrained=False,
        **settings,
    )
    run(config, generator=generator, ensemble=ensemble, callbacks=[counter], log=lambda *a: None)


def steady(counter: SyncCounter) -> list[tuple[int, collections.Counter]]:
    """(step, calls) of the steps that neither loaded nor finished a row."""
    return [(i, s["calls"]) for i, s in enumerate(counter.steps) if s["loaded"] == 0 and s["finished"] == 0]


def test_a_steady_step_waits_for_the_device_once(tmp_path, mask_folder, tiny_generator, ensemble, counted, capsys):
    """With the progress bar shown (the default), a steady step that logs nothing waits once: for `alive`."""
    tiny_run(tmp_path, mask_folder, counted, tiny_generator, ensemble, log_every=4)
    assert "swapping" in capsys.readouterr().err  # the bar was on
    logged = {i for i in range(len(counted.steps)) if (i + 1) % 4 == 0}
    quiet = [(i, calls) for i, calls in steady(counted) if i not in logged]
    assert len(quiet) >= 6
    for i, calls in quiet:
        assert list(calls.elements()) == [next(iter(calls))] and "engine/module.py" in next(iter(calls)), (i, calls)
    # a logged step waits more (Lightning converts each logged scalar), but only then
    loud = [sum(calls.values()) for i, calls in steady(counted) if i in logged]
    assert loud and min(loud) > 1


def test_logging_every_step_waits_every_step(tmp_path, mask_folder, tiny_generator, ensemble, counted):
    """The counter sees the logging's waits (the test above can fail): at --log-every 1 every steady step has
    more than the one."""
    tiny_run(tmp_path, mask_folder, counted, tiny_generator, ensemble, log_every=1)
    assert all(sum(calls.values()) > 1 for _, calls in steady(counted)[1:])


def test_finished_rows_come_to_the_host_with_one_wait(tmp_path, mask_folder, tiny_generator, ensemble, counted):
    """A step that finishes rows copies their results with one wait (`rows.to_host`), not one per tensor."""
    tiny_run(tmp_path, mask_folder, counted, tiny_generator, ensemble, log_every=100)
    finishing = [s["calls"] for s in counted.steps[:-1] if s["finished"] and not s["loaded"]]  # the last: writer's end
    assert finishing
    for calls in finishing:
        from_results = {site: n for site, n in calls.items() if "search/rows.py" in site}
        assert list(from_results.values()) == [1] and "to_host" in next(iter(from_results)), calls
