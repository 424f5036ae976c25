"""How long a run will take, said once, early: the upper bound of chunk steps before the first step, and a time
after the first few steps have been timed (the first ones include warm-up and compiling, so they are not used).
"""

from __future__ import annotations

import sys
import time

from lightning.pytorch import Callback
from tqdm import tqdm

WARM_UP = 2  # steps not timed (first-call costs: allocation, compiling, caches)
TIMED = 4  # steps timed after them; their mean is the estimate's step time (panels and writes included)


def duration(seconds: float) -> str:
    """`42 s`, `12 min`, `3 h 05 min`, `2.4 days`: a rough figure for a human.

    >>> duration(42.4), duration(725), duration(11100), duration(3 * 86400 + 9000)
    ('42 s', '12 min', '3 h 05 min', '3.1 days')
    """
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours} h {minutes:02d} min"
    return f"{seconds / 86400:.1f} days"


class RunEstimate(Callback):
    """Logs, at the start of fitting, the most chunk steps the run can take, and after `WARM_UP + TIMED` steps
    the time that bound means at the measured step time (early stop and pruning end runs sooner)."""

    def __init__(self, log) -> None:
        self._log = log
        self._times: list[float] = []
        self._total = 0

    def _say(self, message: str) -> None:
        with tqdm.external_write_mode(file=sys.stderr):  # the progress bar is cleared, then redrawn under it
            self._log(message)

    def on_train_start(self, trainer, pl_module) -> None:
        feeder = pl_module.feeder
        self._total, self._times = feeder.ticks, []
        trajectories = len(feeder.queue)
        if trajectories:
            self._say(
                f"{trajectories} trajectories in chunks of {pl_module.z.shape[0]} rows: at most {self._total} "
                f"chunk steps; a time estimate follows the first {WARM_UP + TIMED} steps"
            )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if len(self._times) <= WARM_UP + TIMED:
            self._times.append(time.perf_counter())
        if len(self._times) == WARM_UP + TIMED + 1:
            step = (self._times[-1] - self._times[WARM_UP]) / TIMED
            left = self._total - batch_idx
            self._say(
                f"estimate: {step:.2f} s per chunk step, at most {duration(left * step)} for the "
                f"{left} steps left (early stop and pruning end sooner)"
            )
            self._times.append(step)  # said once
