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

    One batch is one latent step of a chunk (data.py); the last step of a chunk also hands the chunk's results
    to the writer, so its time includes picture writing. `created` is when the clock was made: pass a fresh
    clock to `run()` to include loading and target maps in `before_first_step_s`.
    """

    def __init__(self) -> None:
        self.created = time.perf_counter()
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.steps: list[int] = []  # the step of its chunk of every batch
        self.finished: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        _sync()
        self.starts.append(time.perf_counter())
        self.steps.append(int(batch["step"]))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync()
        self.ends.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        _sync()
        self.finished = time.perf_counter()

    def summary(self) -> dict:
        """Seconds: before the first step, median of a plain step (start to next start, chunk-end steps left
        out), whole run; and the count of steps."""
        plain = [b - a for a, b, step, nxt in zip(self.starts, self.starts[1:], self.steps, self.steps[1:], strict=False)
                 if nxt == step + 1 and step > 0]  # fmt: skip
        end = self.finished or (self.ends[-1] if self.ends else time.perf_counter())
        return {
            "before_first_step_s": (self.starts[0] - self.created) if self.starts else None,
            "median_step_s": statistics.median(plain) if plain else None,
            "total_s": end - self.created,
            "batches": len(self.starts),
        }
