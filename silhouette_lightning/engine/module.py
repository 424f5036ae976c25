"""The LightningModule: a chunk of BigGAN latents, the only trainable parameter, pulled toward target maps.

Data flow of one step (one batch = one Adam step for every trajectory of the chunk, each at its own step):
  free rows refilled with pending trajectories (search/refill.py) -> z [G, Z] -> this rank's rows [B, Z]
  -> G(z, class) [B, 3, R, R] -> ensemble logits [M, B, C, S, S] -> per-trajectory loss [B] and IoU [B]
  (search/objective.py) -> gathered to [G] on every rank -> best-so-far per trajectory (search/rows.py).

This module wires the search core to Lightning: the parameters, the optimizer, the gathers and the backward, the
logging. What a latent scores is `search.objective.Objective`; the state of every row and what a finished row
hands over is `search.rows.RowTable`; best-of-N starts are `search.starts.BestOfN`; early stop and pruning are
`search.stopping`.

Many devices, one answer (DESIGN.md): every rank holds the whole chunk `z` [G, Z] (G = batch x world size)
and computes the loss of its own B rows only, so each row's gradient comes from exactly one rank. DDP's
all-reduce sums the ranks' gradients without dividing by the world size (`distributed.SummingDDPStrategy`),
which gives every row its true gradient bit for bit for any world size; DESIGN.md's alternative, scaling the
loss by the world size against DDP's average, is exact only for powers of two. Losses are summed over
trajectories, never averaged, and Adam is elementwise with a step count per row (row_adam.py), so a row's
update does not depend on the others nor on when its trajectory started.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from silhouette_lightning.core.classes import VOC_CLASSES
from silhouette_lightning.engine.distributed import check_summing
from silhouette_lightning.inputs.trajectories import initial_latents
from silhouette_lightning.search.feed import Feeder
from silhouette_lightning.search.metrics import MeanIoU
from silhouette_lightning.search.objective import Objective
from silhouette_lightning.search.options import AdamOptions, ObjectiveOptions, RowOptions, SearchOptions
from silhouette_lightning.search.row_adam import RowAdam
from silhouette_lightning.search.rows import HandOver, RowTable, StepReport, TrajectoryResult, frame_steps
from silhouette_lightning.search.starts import BestOfN

__all__ = ["SilhouetteSwap", "frame_steps"]


class SilhouetteSwap(LightningModule):
    """Optimizes a chunk of rows, one trajectory each, refilled as trajectories end (refill.py); after a step in
    which trajectories ended, `take_finished()` returns their `TrajectoryResult` (the writer takes them).

    `feeder` (a `search.feed.Feeder`, set by the data module or `recovery.recover`) hands out pending trajectories.
    """

    def __init__(
        self,
        generator: nn.Module,
        ensemble: nn.Module,
        *,
        rows: RowOptions,
        objective: ObjectiveOptions,
        adam: AdamOptions,
        search: SearchOptions | None = None,
        log_every: int = 1,
        hparams: dict | None = None,
    ) -> None:
        """The typed views come from `SwapConfig.views()` (every default is written there). `log_every`: the
        step's scalars are logged on every N-th step and the last (the steps where a Trainer made with
        `log_every_n_steps=N` writes them; they change no result)."""
        super().__init__()
        if hparams:
            self.save_hyperparameters(hparams)  # shown in TensorBoard; the networks are not hyperparameters
        self.automatic_optimization = False
        self.generator = generator  # frozen by its loader
        self.ensemble = ensemble  # frozen by its loader
        self.batch_size, self.steps = rows.batch_size, rows.steps
        self.lr, self.betas = adam.lr, tuple(adam.betas)
        self.truncation = objective.truncation
        self.frame_steps = frame_steps(rows.steps, rows.frames)
        self.z_dim = generator.config.z_dim
        self.num_classes = generator.config.num_classes
        self.search = search or SearchOptions.plain()
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.log_every = int(log_every)
        self.objective = Objective(generator, ensemble, objective)
        self.iou_metric = MeanIoU()
        self.feeder: Feeder | None = None  # set before fit: where the rows' trajectories come from
        self.rows: RowTable | None = None  # allocated at the first step
        self.shown: dict[str, Tensor] = {}  # the last logged step's mean IoU and best-so-far, for the progress bar
        self.report = StepReport()  # what the last step loaded and finished
        self.z = nn.Parameter(torch.zeros(rows.batch_size, self.z_dim))  # resized to the global chunk in setup
        # --class-lr: the class vector of each row is a parameter too ([G, K]), else the fixed one-hot
        self.class_vector: nn.Parameter | None = None

    def setup(self, stage: str) -> None:
        """Size the chunk to batch x world size (known only now); DDP wraps the module after this."""
        check_summing(self.trainer.strategy, self.trainer.world_size)
        chunk = self.batch_size * self.trainer.world_size
        self.z = nn.Parameter(torch.zeros(chunk, self.z_dim, device=self.z.device))
        if self.search.class_lr > 0:
            self.class_vector = nn.Parameter(torch.zeros(chunk, self.num_classes, device=self.z.device))

    def configure_optimizers(self):
        """Adam as in the paper, with a step count per row (row_adam.py): rows refilled with new trajectories
        start their own Adam. The class vectors, when optimized, are a second parameter group with their own
        learning rate (the same rows)."""
        groups = [{"params": [self.z], "lr": self.lr}]
        if self.class_vector is not None:
            groups.append({"params": [self.class_vector], "lr": self.search.class_lr})
        return RowAdam(groups, lr=self.lr, betas=self.betas)

    # ------------------------------------------------------------------ the objective, for callbacks and tools

    def generate(self, z: Tensor, class_ids: Tensor, class_vectors: Tensor | None = None) -> Tensor:
        """Images in [0, 1]: `[B, Z], [B] -> [B, 3, R, R]` (`Objective.generate`)."""
        return self.objective.generate(z, class_ids, class_vectors)

    def subject_maps(self, logits: Tensor, channels: Tensor) -> Tensor:
        """The ensemble's probability of each trajectory's subject: `[M, B, C, S, S], [B] -> [B, S, S]`."""
        return self.objective.subject_maps(logits, channels)

    def score(
        self,
        z: Tensor,
        class_ids: Tensor,
        channels: Tensor,
        targets: Tensor,
        class_vectors: Tensor | None = None,
        *,
        compiled: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """(loss [B], IoU [B]) of latents against target maps (`Objective.score`)."""
        return self.objective.score(z, class_ids, channels, targets, class_vectors, compiled=compiled)

    def render(self, z: Tensor, class_ids: Tensor, channels: Tensor, class_vectors: Tensor | None = None):
        """Images `[N, 3, R, R]` and subject maps `[N, S, S]`, float32 on the CPU (`Objective.render`)."""
        return self.objective.render(z, class_ids, channels, class_vectors, device=self.z.device)

    # ------------------------------------------------------------------ rows: loading and releasing trajectories

    def _init_rows(self) -> None:
        """Every row of the chunk empty, with its state allocated on the module's device."""
        class_dim = self.num_classes if self.class_vector is not None else None
        self.rows = RowTable(
            chunk=self.z.shape[0],
            batch=self.batch_size,
            z_dim=self.z_dim,
            steps=self.steps,
            frame_steps=self.frame_steps,
            target_size=self.feeder.target_size,
            class_dim=class_dim,
            device=self.z.device,
        )
        self.hand_over = HandOver(whole_groups=self.search.prune_after is not None)
        self.best_of_n = BestOfN(self.search.restarts, self.z_dim, self.truncation)
        self._ticks_run = 0
        self._last_tick = time.perf_counter()

    def _refill(self) -> None:
        """Give the free rows (lowest first) to the next pending trajectories (refill.RowQueue)."""
        free = self.rows.free()
        taken = self.feeder.queue.take(len(free)) if free and self.feeder.queue else []
        self.report.loaded = len(taken)
        if taken:
            self._load_rows(free[: len(taken)], taken)

    @torch.no_grad()
    def _load_rows(self, rows: list[int], indices: list[int]) -> None:
        """Start trajectories `indices` in `rows`: starting latent, one-hot class vector, fresh Adam and state."""
        rank = self.trainer.global_rank
        start = self.feeder.load(indices, self.rows.own(rows, rank))
        seeds = start.seeds
        if start.z0 is None and start.candidates is not None:  # best-of-N (search/starts.py)
            seeds = self.best_of_n.seeds(
                start,
                self._score_candidates,
                like=self.z,
                world=self.trainer.world_size,
                rank=rank,
                reduce_sum=self._reduce_sum,
            )
        # z0 (optional): explicit starting latents, for the recovery experiment
        z0 = start.z0 if start.z0 is not None else initial_latents(seeds.tolist(), self.z_dim, self.truncation)
        at = torch.tensor(rows, device=self.z.device)
        self.z[at] = z0.to(self.z)
        if self.class_vector is not None:
            self.class_vector[at] = F.one_hot(start.class_id, self.num_classes).to(self.class_vector)
        self.optimizers().optimizer.reset_rows(rows)
        self.rows.load(rows, indices, start, seeds, self.z, self.class_vector, rank)

    def _score_candidates(self, z: Tensor, class_ids: Tensor, channels: Tensor, targets: Tensor):
        """Best-of-N's candidate pieces, scored with the plain networks (shapes of their own: no compile)."""
        return self.score(z, class_ids, channels, targets, compiled=False)

    def _reduce_sum(self, values: Tensor) -> Tensor:
        return self.trainer.strategy.reduce(values, reduce_op="sum")

    # ------------------------------------------------------------------ one step

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """One latent step for every row of the chunk, each at its own trajectory's step: free rows are refilled
        first; a row at its trajectory's last step only scores; finished rows hand their results over."""
        if int(batch["tick"]) == 0 or self.rows is None:
            self._init_rows()
        self._ticks_run += 1
        self._refill()
        table, rank, chunk = self.rows, self.trainer.global_rank, self.z.shape[0]
        rows = slice(rank * self.batch_size, (rank + 1) * self.batch_size)
        stepping = table.stepping()  # host lists, the same on every rank: which rows take an Adam step
        row_step = torch.tensor(table.step, device=self.z.device)  # [G]
        class_rows = self.class_vector[rows] if self.class_vector is not None else None
        with torch.set_grad_enabled(bool(stepping)):
            loss, iou = self.score(self.z[rows], table.class_ids[rows], table.channels[rows], table.targets, class_rows)
        finite = torch.isfinite(loss) & torch.isfinite(self.z[rows].detach()).all(1)
        if class_rows is not None:
            finite &= torch.isfinite(class_rows.detach()).all(1)
        all_loss = self._gather(loss.detach())  # [G]
        all_iou = self._gather(iou)  # [G]
        all_finite = self._gather(finite.float()).bool()  # [G]
        table.track(row_step, all_loss, all_iou, all_finite, self.z.detach(), self._class_detached())
        table.end_early(row_step, self.search)
        alive = table.alive.tolist()  # the step's one wait for the device: which rows go on

        if stepping:  # every rank takes this branch together (DDP's all-reduce runs in backward)
            moving = [r for r in stepping if alive[r]]  # the others stay as they are
            update = torch.zeros(chunk, dtype=torch.bool, device=self.z.device)
            update[torch.tensor(moving, dtype=torch.long, device=self.z.device)] = True
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(torch.where(update[rows], loss, 0.0).sum())  # summed across ranks, not averaged
            optimizer.optimizer.update_rows = moving
            optimizer.step()

        if self._ticks_run % self.log_every == 0 or self._is_last_step(alive):
            self._log_step(all_loss, all_iou, alive)
        self._finish_rows(alive)

    def _is_last_step(self, alive: list[bool]) -> bool:
        """Whether every trajectory ends with this step (`_finish_rows` will stop the run): Lightning writes the
        logged scalars on that step whatever `log_every` says, so they must be this step's."""
        return not self.feeder.queue and len(self.rows.ending(alive)) == len(self.rows.occupied())

    def _class_detached(self) -> Tensor | None:
        return self.class_vector.detach() if self.class_vector is not None else None

    def _finish_rows(self, alive: list[bool]) -> None:
        """Rows whose trajectory ended (last step, early stop, pruning, non-finite) hand over their results and
        are free for the next step; the others move to their next step. Sets `trainer.should_stop` when
        nothing is left to run."""
        table, now = self.rows, time.perf_counter()
        finishing = table.advance(alive, now - self._last_tick)
        self._last_tick = now
        self.report.finished = finishing
        if finishing:
            table.fill_after_end(finishing, self.z.detach(), self._class_detached())
            results = table.results(finishing)
            table.release(finishing, results, self.search.prune_after)
            self.hand_over.add(results, table)
        if not table.occupied() and not self.feeder.queue:
            self.trainer.should_stop = True  # every trajectory is done (the ticks are only an upper bound)

    def has_finished(self) -> bool:
        """Whether results are waiting for the writer."""
        return self.rows is not None and self.hand_over.ready is not None

    def take_finished(self) -> TrajectoryResult | None:
        """The results handed over since the last take (None: none)."""
        return self.hand_over.take() if self.rows is not None else None

    def on_train_epoch_end(self) -> None:
        """The ticks are an upper bound on the steps a run takes: running out of them with work left is a bug
        (unless the Trainer was told to stop earlier: `limit_train_batches`, `max_steps`, ...)."""
        left = self.rows is not None and (bool(self.rows.occupied()) or self.feeder.queue)
        if left and self._ticks_run >= getattr(self.feeder, "ticks", float("inf")):
            raise RuntimeError("internal error: the run ran out of latent steps with trajectories left to run")

    def _gather(self, values: Tensor) -> Tensor:
        """Every rank's `[B]` values, in rank order: `[G]` (identity on one device)."""
        if self.trainer.world_size == 1:
            return values
        return self.all_gather(values).reshape(-1)

    # ------------------------------------------------------------------ logging

    def _log_step(self, loss: Tensor, iou: Tensor, alive: list[bool]) -> None:
        """The step's scalars over the live trajectories (index tensors from host lists: no wait for the device).

        Not `prog_bar`: Lightning converts progress-bar values to floats on every step, logged or not, one device
        wait each; the bar (progress.py) reads `shown` instead, once per logged step."""
        occupied = self.rows.occupied()
        live = [r for r in occupied if alive[r]]
        if not live:
            return
        at = torch.tensor(live, device=self.z.device)
        iou_now = self.iou_metric(iou[at])  # this step's mean (the metric's forward)
        best = self.rows.group_best_mean(occupied)
        self.log("train/iou", self.iou_metric, on_step=True, on_epoch=False)
        self.log("train/loss", loss[at].mean(), on_step=True, on_epoch=False)
        self.log("train/iou_best", best, on_step=True, on_epoch=False)
        self.shown = {"iou": iou_now, "best": best}  # a new dict per logged step: the bar converts it once
        for channel in sorted({self.rows.channel[r] for r in live}):  # train/iou/<subject>
            rows = torch.tensor([r for r in live if self.rows.channel[r] == channel], device=iou.device)
            self.log(f"train/iou/{VOC_CLASSES[channel]}", iou[rows].mean(), on_step=True, on_epoch=False)
