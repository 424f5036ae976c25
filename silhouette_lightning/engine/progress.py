"""The progress bar in the tool's terms: trajectories done of those this run has to do, with the running IoU.

Lightning's bar counts "Epoch 0: 1/130" chunk steps against an upper bound (every trajectory running all its
steps); an epoch means nothing here, and with early stop or pruning the run ends well before that bound.
"""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} trajectories [{elapsed}<{remaining}{postfix}]"


class TrajectoryProgress(TQDMProgressBar):
    """`swapping: 12/48 trajectories [00:31, iou=0.712, best=0.843]` on rank zero: trajectories finished of those
    left to run, the mean IoU of the running ones and the mean best-so-far IoU of their (source, class) pairs."""

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._done = 0
        self._shown, self._postfix = None, {}

    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(
            desc="swapping",
            bar_format=BAR,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stderr,
            smoothing=0,
        )

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._done = 0
        self.train_progress_bar.reset(total=len(pl_module.feeder.queue) or None)  # nothing is taken yet

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        self._done += len(pl_module.report.finished)
        if bar is None or bar.disable:
            return
        bar.n = self._done
        if pl_module.shown is not self._shown:  # a logged step (--log-every): one wait for the device, not each step
            self._shown = pl_module.shown
            self._postfix = {k: f"{float(v):.3f}" for k, v in self._shown.items()}
        bar.set_postfix(self._postfix, refresh=False)
        bar.refresh()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.n = self._done
            bar.refresh()
