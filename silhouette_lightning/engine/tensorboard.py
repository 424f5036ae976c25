"""TensorBoard steps that go on across resumed runs: a resumed run's curves continue the stopped run's."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from silhouette_lightning.core.files import atomic_write_text


class ContinuedTensorBoardLogger(TensorBoardLogger):
    """`OUT/NAME/tensorboard/`; every step is shifted by `step_offset`, the first step no earlier run used.

    Runs reserve their steps ahead (`reserve`) in `next_step.txt` before logging them, so a run killed
    at any point (even SIGKILL) leaves the next run a step after everything it logged.
    """

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir, name="tensorboard", version="", default_hp_metric=False)
        self.step_file = Path(run_dir) / "tensorboard" / "next_step.txt"
        try:
            self.step_offset = int(self.step_file.read_text())
        except (OSError, ValueError):
            self.step_offset = 0

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        """Lightning's step plus the offset."""
        super().log_metrics(metrics, None if step is None else step + self.step_offset)

    @rank_zero_only
    def reserve(self, end: int) -> None:
        """Note that this run logs (Lightning) steps below `end`."""
        atomic_write_text(self.step_file, str(self.step_offset + end))


class ReserveSteps(Callback):
    """Reserve steps ahead, `steps + 1` at a time (one trajectory's length), before logging any of them."""

    def __init__(self) -> None:
        self.reserved = 0  # batches of this run already reserved

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx >= self.reserved and isinstance(trainer.logger, ContinuedTensorBoardLogger):
            self.reserved = batch_idx + pl_module.steps + 1
            trainer.logger.reserve(self.reserved)
