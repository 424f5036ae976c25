"""TensorBoard image panels while a run goes: source | target | current best | its mask | composite."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_only

from silhouette_lightning.engine.writer import source_picture
from silhouette_lightning.outputs import pictures
from silhouette_lightning.search.starts import better_first


class ImagePanels(Callback):
    """Every `every` steps, one panel per (source, class) of the first `groups` in rank zero's rows."""

    def __init__(
        self, every: int, *, data_dir: Path | None, max_pixels: int, groups: int = 4, size: int = 128, fit: str = "pad"
    ):
        self.every, self.data_dir, self.max_pixels, self.groups, self.size = every, data_dir, max_pixels, groups, size
        self.fit = fit
        self._photos: dict[str, torch.Tensor | None] = {}
        self._last = -(10**9)  # the step panels were last logged at

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Log the panels every `every` steps, and at a step where one of rank zero's trajectories ends (its final
        best), at most once per `every` steps (or per trajectory length, if shorter) as rows keep ending."""
        if trainer.logger is None or not self.due(int(batch["tick"]), pl_module):
            return
        plan, table = trainer.datamodule.plan, pl_module.rows
        chosen = self.best_rows(table, pl_module.report.finished, pl_module.batch_size)
        if not chosen:
            return
        at = torch.tensor(chosen)
        class_vectors = table.best_class[at] if table.best_class is not None else None
        images, maps = pl_module.render(table.best_z[at], table.class_ids[at], table.channels[at], class_vectors)
        for i, row in enumerate(chosen):
            trajectory = plan.trajectories[table.last_index[row]]
            target = table.targets[row].float().cpu()
            photo = self._photo(trajectory.source_key, plan.masks)
            background = photo if photo is not None else target.expand(3, -1, -1)
            composite = pictures.composite(background, images[i], maps[i], fit=self.fit)
            panel = pictures.tensorboard_panel(background, target, images[i], maps[i], composite, size=self.size)
            tag = f"swaps/{trajectory.source_key}/{trajectory.class_id}"
            step = trainer.global_step + getattr(trainer.logger, "step_offset", 0)  # continued on resume
            trainer.logger.experiment.add_image(tag, panel, step)

    def best_rows(self, table, finished: list[int], batch_size: int) -> list[int]:
        """The best row of each of the first `groups` (source, class) groups in rank zero's rows, ranked as the
        best restart is chosen everywhere (starts.better_first: IoU, then loss, then restart). A row that finished
        this step still holds its trajectory's state until the next."""
        members: dict[int, list[int]] = {}
        for row in range(min(batch_size, len(table.index))):
            if table.index[row] < 0 and row not in finished:
                continue
            group = table.group[row]
            if group in members or len(members) < self.groups:
                members.setdefault(group, []).append(row)
        iou, loss = table.best_iou.tolist(), table.best_loss.tolist()
        best = []
        for rows in members.values():
            order = better_first([iou[r] for r in rows], [loss[r] for r in rows], [table.restart[r] for r in rows])
            best.append(rows[order[0]])
        return best

    def due(self, tick: int, pl_module) -> bool:
        """Whether panels are logged at this step (and if so, note it)."""
        if not self.every:
            return False
        own_ended = any(row < pl_module.batch_size for row in pl_module.report.finished)
        if tick % self.every and not (own_ended and tick - self._last >= min(self.every, pl_module.steps)):
            return False
        self._last = tick
        return True

    def _photo(self, key: str, masks: bool):
        if key not in self._photos:
            self._photos[key] = source_picture(self.data_dir, key, masks=masks, max_pixels=self.max_pixels)
        return self._photos[key]
