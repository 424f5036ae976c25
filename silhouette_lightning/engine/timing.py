"""Wall time of whole runs: a callback that timestamps every training step, and what the benchmark derives from it."""

from __future__ import annotations

import statistics
import time

import torch
from lightning.pytorch import Callback


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class StepClock(Callback):
    """Records `perf_counter` at the start of the run, at every training batch start and end, and at the end.

    One batch is one latent step of the chunk (data.py); a step that loads trajectories into rows, or after which
    trajectories finish (and their results go to the writer, pictures included), is not a plain step. `created` is
    when the clock was made: pass a fresh
    clock to `run()` to include loading and target maps in `before_first_step_s`.
    """

    def __init__(self) -> None:
        self.created = time.perf_counter()
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.plain: list[bool] = []  # per batch: no trajectory loaded or finished in it
        self.finished: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        _sync()
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync()
        self.ends.append(time.perf_counter())
        self.plain.append(not pl_module.report.loaded and not pl_module.report.finished)

    def on_train_end(self, trainer, pl_module) -> None:
        _sync()
        self.finished = time.perf_counter()

    def summary(self) -> dict:
        """Seconds: before the first step, median of a plain step (start to next start; steps that load or
        finish trajectories left out), whole run; and the count of steps."""
        plain = [b - a for a, b, ok in zip(self.starts, self.starts[1:], self.plain, strict=False) if ok]
        end = self.finished or (self.ends[-1] if self.ends else time.perf_counter())
        return {
            "before_first_step_s": (self.starts[0] - self.created) if self.starts else None,
            "median_step_s": statistics.median(plain) if plain else None,
            "total_s": end - self.created,
            "batches": len(self.starts),
        }
