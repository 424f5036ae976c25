"""The LightningModule: a chunk of BigGAN latents, the only trainable parameter, pulled toward target maps.

Data flow of one step (one batch = one Adam step for every trajectory of the chunk, each at its own step):
  free rows refilled with pending trajectories (refill.py) -> z [G, Z] -> this rank's rows [B, Z] -> G(z, class) [B, 3, R, R] -> ensemble logits [M, B, C, S, S]
  -> per-trajectory loss [B] and IoU [B] -> gathered to [G] on every rank -> best-so-far per trajectory.

Many devices, one answer (DESIGN.md): every rank holds the whole chunk `z` [G, Z] (G = batch x world size)
and computes the loss of its own B rows only, so each row's gradient comes from exactly one rank. DDP's
all-reduce sums the ranks' gradients without dividing by the world size (`distributed.SummingDDPStrategy`),
which gives every row its true gradient bit for bit for any world size; DESIGN.md's alternative, scaling the
loss by the world size against DDP's average, is exact only for powers of two. Losses are summed over
trajectories, never averaged, and Adam is elementwise with a step count per row (row_adam.py), so a row's
update does not depend on the others nor on when its trajectory started.

Search options (search.py; best-of-32 starts on by default, the others off) hook in at three places: loading
a trajectory into a row (best-of-N starts, the class vector reset to the one-hot), the loss (prior penalty), and
after each step's bookkeeping (early stop and pruning end trajectories as non-finite ones end; rows refilled).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from silhouette_lightning.core.classes import VOC_CLASSES
from silhouette_lightning.engine.distributed import check_summing
from silhouette_lightning.inputs.trajectories import TRUNCATION_BOUND, initial_latents
from silhouette_lightning.models.ensemble import ensemble_probs, subject_channel
from silhouette_lightning.search.losses import trajectory_loss
from silhouette_lightning.search.metrics import MeanIoU, silhouette_iou
from silhouette_lightning.search.row_adam import RowAdam
from silhouette_lightning.search.stopping import (
    ENDED,
    PRUNED,
    SearchOptions,
    early_stop,
    prior_penalty,
    prune,
    select_starts,
)

SCORE_BATCH = 64  # candidate starts scored per forward pass: fixed, so scores never depend on --batch-size


def frame_steps(steps: int, frames: int) -> list[int]:
    """The steps whose latents are kept for pictures: evenly spaced, always the first and last."""
    if frames <= 1:
        return [steps]
    return sorted({round(i * steps / (frames - 1)) for i in range(frames)})


class SilhouetteSwap(LightningModule):
    """Optimizes a chunk of rows, one trajectory each, refilled as trajectories end (refill.py); after a step in
    which trajectories ended, `finished_rows` holds their results (the writer takes them).

    `feeder` (set by the data module, or `recovery.recover`) hands out pending trajectories: `feeder.queue` is a
    `refill.RowQueue`, `feeder.load(indices, own)` their starting data, `feeder.target_size` the target maps' size.
    """

    def __init__(
        self,
        generator: nn.Module,
        ensemble: nn.Module,
        *,
        batch_size: int,
        steps: int = 25,
        lr: float = 0.1,
        betas: tuple[float, float] = (0.5, 0.99),
        truncation: float = 0.4,
        loss: str = "mse",
        ensemble_mode: str = "probs",
        frames: int = 6,
        hparams: dict | None = None,
        compile: str = "none",
        search: SearchOptions | None = None,
    ) -> None:
        super().__init__()
        if hparams:
            self.save_hyperparameters(hparams)  # shown in TensorBoard; the networks are not hyperparameters
        self.automatic_optimization = False
        self.generator = generator  # frozen by its loader
        self.ensemble = ensemble  # frozen by its loader
        self.batch_size, self.steps, self.lr, self.betas = batch_size, steps, lr, tuple(betas)
        self.truncation, self.loss_name, self.ensemble_mode = truncation, loss, ensemble_mode
        self.frame_steps = frame_steps(steps, frames)
        self.z_dim = generator.config.z_dim
        self.num_classes = generator.config.num_classes
        self.iou_metric = MeanIoU()
        self.finished_rows: dict | None = None
        self.feeder = None  # set before fit: where the rows' trajectories come from
        self.search = search or SearchOptions()
        self.z = nn.Parameter(torch.zeros(batch_size, self.z_dim))  # resized to the global chunk in setup
        # --class-lr: the class vector of each row is a parameter too ([G, K]), else the fixed one-hot
        self.class_vector: nn.Parameter | None = None
        # torch.compile for the training steps only (one shape: chunks are padded); pictures and target maps
        # use the plain modules. "ensemble": the segmenters; "all": the whole scoring step (generator, segmenters,
        # loss and IoU in one graph). Not registered submodules: they share the networks' weights.
        if compile not in ("none", "ensemble", "all"):
            raise ValueError(f"compile must be none, ensemble or all, got {compile!r}")
        object.__setattr__(
            self, "_segment", torch.compile(ensemble, dynamic=False) if compile == "ensemble" else ensemble
        )
        object.__setattr__(self, "_score", torch.compile(self._score_eager, dynamic=False) if compile == "all"
                           else self._score_eager)  # fmt: skip

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

    def generate(self, z: Tensor, class_ids: Tensor, class_vectors: Tensor | None = None) -> Tensor:
        """Images in [0, 1]: `[B, Z], [B] -> [B, 3, R, R]`; `class_vectors` [B, K] replace the one-hot classes."""
        if class_vectors is None:
            class_vectors = F.one_hot(class_ids, self.num_classes).to(z.dtype)  # [B, K]
        return (self.generator(z, class_vectors.to(z.dtype), self.truncation) + 1) / 2

    def subject_maps(self, logits: Tensor, channels: Tensor) -> Tensor:
        """The ensemble's probability of each trajectory's subject: `[M, B, C, S, S], [B] -> [B, S, S]`."""
        probs = ensemble_probs(logits, self.ensemble.weights, self.ensemble_mode)  # [B, C, S, S]
        return subject_channel(probs, channels)

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
        """(loss [B], IoU [B]) of latents `z` [B, Z] against target maps `[B, S, S]`; the loss includes the prior
        penalty (`--prior-weight`). `compiled=False` scores with the plain networks (best-of-N's candidate pieces:
        shapes of their own, which would each cost a compile)."""
        if compiled:
            loss, iou = self._score(z, class_ids, channels, targets, class_vectors)
        else:
            loss, iou = self._score_eager(z, class_ids, channels, targets, class_vectors, segment=self.ensemble)
        if self.search.prior_weight:
            loss = loss + self.search.prior_weight * self._prior(z)
        return loss, iou

    def _score_eager(
        self,
        z: Tensor,
        class_ids: Tensor,
        channels: Tensor,
        targets: Tensor,
        class_vectors: Tensor | None = None,
        segment: nn.Module | None = None,
    ) -> tuple[Tensor, Tensor]:
        logits = (segment or self._segment)(self.generate(z, class_ids, class_vectors))  # [M, B, C, S, S]
        weights = self.ensemble.weights
        loss = trajectory_loss(logits, weights, targets, channels, loss=self.loss_name, mode=self.ensemble_mode)
        iou = silhouette_iou(self.subject_maps(logits.detach(), channels), targets)
        return loss.float(), iou

    @torch.no_grad()
    def render(
        self, z: Tensor, class_ids: Tensor, channels: Tensor, class_vectors: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Images `[N, 3, R, R]` in [0, 1] and subject maps `[N, S, S]` of latents `[N, Z]`, in float32 on the
        CPU: what result pictures show (and what `regenerate` reproduces)."""
        device = self.z.device
        z, class_ids, channels = z.to(device).float(), class_ids.to(device), channels.to(device)
        if class_vectors is not None:
            class_vectors = class_vectors.to(device).float()
        with torch.autocast(device.type, enabled=False):
            images = self.generate(z, class_ids, class_vectors)  # [N, 3, R, R]
            maps = self.subject_maps(self.ensemble(images), channels)  # [N, S, S]
        return images.clamp(0, 1).cpu(), maps.float().cpu()

    # ------------------------------------------------------------------ rows: loading and releasing trajectories

    def _init_rows(self) -> None:
        """Every row of the chunk empty, with its state allocated on the module's device."""
        chunk, device = self.z.shape[0], self.z.device
        self.row_index = [-1] * chunk  # trajectory index of each row, -1 when empty (host: decides the refill)
        self.row_step = [0] * chunk  # the step of its own trajectory each row scores next
        self.row_group = [-1] * chunk  # group id of each row's trajectory
        self.row_channel = [0] * chunk  # VOC channel of each row's subject
        self.row_restart = [-1] * chunk  # restart number of each row's trajectory
        self.seconds = [0.0] * chunk  # wall time each row's trajectory has cost so far
        self._held: list[dict] = []  # results waiting for the rest of their group (pruning)
        # pruning: (best IoU, best loss, restart) of restarts that ended before their group's pruning step, by group
        # id; they still count in the ranking, as if frozen in their rows
        self._ended_before_pruning: dict[int, list[tuple[float, float, int]]] = {}
        self._chosen: dict[int, Tensor] = {}  # best-of-N: each recently loaded group's chosen candidates [R]
        self._ticks_run = 0
        self._last_tick = time.perf_counter()
        self.last_index = [-1] * chunk  # the trajectory each row ran last (kept when it finishes: pictures)
        self.last_loaded, self.finished_now = 0, []  # trajectories loaded and rows finished at this step
        zeros = {"dtype": torch.long, "device": device}
        self.start_seeds = torch.zeros(chunk, **zeros)  # [G]: the seed each row's starting latent is drawn from
        self.class_ids, self.channels = torch.zeros(chunk, **zeros), torch.zeros(chunk, **zeros)  # [G], [G]
        self.group_ids = torch.full((chunk,), -1, **zeros)  # [G]: rows with the same id share (source, class)
        self.restarts = torch.full((chunk,), -1, **zeros)  # [G], ranks restarts in pruning
        self.alive = torch.zeros(chunk, dtype=torch.bool, device=device)  # the row's trajectory still takes steps
        self.stopped_at = torch.full((chunk,), -1, **zeros)  # non-finite at this step
        self.ended_at = torch.full((chunk,), -1, **zeros)  # early stop or pruning
        self.ended_by = torch.zeros(chunk, **zeros)  # search.ENDED code
        self.best_z = torch.zeros(chunk, self.z_dim, device=device)
        self.best_iou = torch.full((chunk,), -1.0, device=device)
        self.best_loss = torch.full((chunk,), float("inf"), device=device)
        self.best_step = torch.zeros(chunk, **zeros)
        self.frames = torch.zeros(chunk, len(self.frame_steps), self.z_dim, device=device)
        self.iou_history = torch.zeros(chunk, self.steps + 1, device=device)  # IoU of every step, for curves
        self.loss_history = torch.zeros(chunk, self.steps + 1, device=device)  # loss of every step
        # frame slot of each step (-1: not a frame step), to keep frames without a host sync
        self.frame_slot = torch.full((self.steps + 1,), -1, **zeros)
        self.frame_slot[torch.tensor(self.frame_steps)] = torch.arange(len(self.frame_steps), device=device)
        size = self.feeder.target_size
        self.targets = torch.zeros(self.batch_size, *size, device=device)  # [B, S, S]: this rank's rows only
        if self.class_vector is not None:
            self.best_class = torch.zeros(chunk, self.num_classes, device=device)  # [G, K]
            self.frames_class = torch.zeros(chunk, len(self.frame_steps), self.num_classes, device=device)

    def _refill(self) -> None:
        """Give the free rows (lowest first) to the next pending trajectories (refill.RowQueue)."""
        free = [row for row, index in enumerate(self.row_index) if index < 0]
        taken = self.feeder.queue.take(len(free)) if free and self.feeder.queue else []
        self.last_loaded = len(taken)
        if taken:
            self._load_rows(free[: len(taken)], taken)

    @torch.no_grad()
    def _load_rows(self, rows: list[int], indices: list[int]) -> None:
        """Start trajectories `indices` in `rows`: starting latent, one-hot class vector, fresh Adam and state."""
        rank, batch = self.trainer.global_rank, self.batch_size
        own = [rank * batch <= row < (rank + 1) * batch for row in rows]
        data = self.feeder.load(indices, own)
        seeds = data["seeds"]
        if "z0" not in data and "candidate_seeds" in data:  # best-of-N (search.starts)
            seeds = self._best_starts(data)
        # "z0" (optional): explicit starting latents, for the recovery experiment
        z0 = data["z0"] if "z0" in data else initial_latents(seeds.tolist(), self.z_dim, self.truncation)
        device = self.z.device
        at = torch.tensor(rows, device=device)
        self.z[at] = z0.to(self.z)
        if self.class_vector is not None:
            self.class_vector[at] = F.one_hot(data["class_id"], self.num_classes).to(self.class_vector)
            self.best_class[at] = self.class_vector[at]
            self.frames_class[at] = 0
        self.optimizers().optimizer.reset_rows(rows)
        for k, row in enumerate(rows):
            self.row_index[row], self.row_step[row], self.seconds[row] = indices[k], 0, 0.0
            self.last_index[row] = indices[k]
            self.row_group[row], self.row_channel[row] = int(data["group"][k]), int(data["channel"][k])
            self.row_restart[row] = int(data["restart"][k])
        self.start_seeds[at] = seeds.to(device)
        self.class_ids[at], self.channels[at] = data["class_id"].to(device), data["channel"].to(device)
        self.group_ids[at], self.restarts[at] = data["group"].to(device), data["restart"].to(device)
        self.alive[at] = True
        self.stopped_at[at], self.ended_at[at], self.ended_by[at] = -1, -1, 0
        self.best_z[at] = self.z[at]
        self.best_iou[at], self.best_loss[at], self.best_step[at] = -1.0, float("inf"), 0
        self.frames[at], self.iou_history[at], self.loss_history[at] = 0.0, 0.0, 0.0
        mine = [row - rank * batch for row, m in zip(rows, own, strict=True) if m]
        if mine:
            self.targets[torch.tensor(mine, device=device)] = data["targets"].to(self.targets)

    @torch.no_grad()
    def _best_starts(self, data: dict) -> Tensor:
        """Best-of-N: score every loaded group's N candidate starts (forward passes only) and give restart r of
        each group the r-th of its best R candidates (in candidate order); returns each loaded row's seed.

        Each group's candidates are scored alone, in fixed pieces of SCORE_BATCH, so its scores do not depend on
        the batch size or the other groups; with many devices, the groups to score are dealt to the ranks in turn
        and the scores summed over ranks (zeros elsewhere), so every rank selects from the same numbers. A group
        whose restarts load over several steps (rows freed one by one) is scored once, at its first load.
        """
        seeds = data["candidate_seeds"]  # [n_groups, N]
        n_groups, n = seeds.shape
        world, rank = self.trainer.world_size, self.trainer.global_rank
        device = self.z.device
        ids = data["group_id"].tolist()  # [n_groups]: the loaded groups' ids
        todo = [g for g in range(n_groups) if ids[g] not in self._chosen]  # a group split over loads: scored once
        iou = torch.zeros(n_groups, n, device=device)
        loss = torch.zeros(n_groups, n, device=device)
        for g in todo[rank::world]:
            z = initial_latents(seeds[g].tolist(), self.z_dim, self.truncation).to(self.z)  # [N, Z]
            for start in range(0, n, SCORE_BATCH):
                piece = z[start : start + SCORE_BATCH]
                m = len(piece)
                piece_loss, piece_iou = self.score(piece, data["group_class"][g].expand(m).to(device),
                                                   data["group_channel"][g].expand(m).to(device),
                                                   data["group_targets"][g].expand(m, -1, -1).to(device),
                                                   compiled=False)  # fmt: skip
                loss[g, start : start + m], iou[g, start : start + m] = piece_loss, piece_iou.float()
        if world > 1 and todo:
            iou = self.trainer.strategy.reduce(iou, reduce_op="sum")
            loss = self.trainer.strategy.reduce(loss, reduce_op="sum")
        chosen = select_starts(iou, loss, self.search.restarts)  # [n_groups, R], on the CPU
        # only the groups of this load are kept: groups are consecutive in the queue, so a group split over loads
        # is the last of one load and the first of the next
        self._chosen = {gid: self._chosen.get(gid, chosen[g]) for g, gid in enumerate(ids)}
        chosen = torch.stack([self._chosen[gid] for gid in ids])
        group, restart = data["load_group"], data["restart"]  # [n]: position of each row's group in this load
        picked = chosen[group, restart.clamp(0, self.search.restarts - 1)]  # [n]
        return seeds[group, picked]

    def _prior(self, z: Tensor) -> Tensor:
        """The prior penalty of latents `[B, Z] -> [B]` (search.prior_penalty at this truncation)."""
        return prior_penalty(z.float(), TRUNCATION_BOUND * self.truncation)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """One latent step for every row of the chunk, each at its own trajectory's step: free rows are refilled
        first; a row at its trajectory's last step only scores; finished rows hand their results over."""
        if int(batch["tick"]) == 0 or not hasattr(self, "row_index"):
            self._init_rows()
        self._ticks_run += 1
        self._refill()
        rank, chunk = self.trainer.global_rank, self.z.shape[0]
        rows = slice(rank * self.batch_size, (rank + 1) * self.batch_size)
        # host lists, the same on every rank: which rows take an Adam step (before non-finite ones are known)
        stepping = [r for r in range(chunk) if self.row_index[r] >= 0 and self.row_step[r] < self.steps]
        row_step = torch.tensor(self.row_step, device=self.z.device)  # [G]
        class_rows = self.class_vector[rows] if self.class_vector is not None else None
        with torch.set_grad_enabled(bool(stepping)):
            loss, iou = self.score(self.z[rows], self.class_ids[rows], self.channels[rows], self.targets, class_rows)
        finite = torch.isfinite(loss) & torch.isfinite(self.z[rows].detach()).all(1)
        if class_rows is not None:
            finite &= torch.isfinite(class_rows.detach()).all(1)
        all_loss = self._gather(loss.detach())  # [G]
        all_iou = self._gather(iou)  # [G]
        all_finite = self._gather(finite.float()).bool()  # [G]
        self._track(row_step, all_loss, all_iou, all_finite)
        self._end_early(row_step)
        alive = self.alive.tolist()  # the step's one wait for the device: which rows go on

        if stepping:  # every rank takes this branch together (DDP's all-reduce runs in backward)
            moving = [r for r in stepping if alive[r]]  # the others stay as they are
            update = torch.zeros(chunk, dtype=torch.bool, device=self.z.device)
            update[torch.tensor(moving, dtype=torch.long, device=self.z.device)] = True
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(torch.where(update[rows], loss, 0.0).sum())  # summed across ranks, not averaged
            optimizer.optimizer.update_rows = moving
            optimizer.step()

        occupied = [r for r in range(chunk) if self.row_index[r] >= 0]
        live = [r for r in occupied if alive[r]]
        if live:  # index tensors from host lists: logging waits for nothing
            at = torch.tensor(live, device=self.z.device)
            self.iou_metric(all_iou[at])
            self.log("train/iou", self.iou_metric, prog_bar=True, on_step=True, on_epoch=False)
            self.log("train/loss", all_loss[at].mean(), prog_bar=True, on_step=True, on_epoch=False)
            self.log("train/iou_best", self._group_best_mean(occupied), on_step=True, on_epoch=False)
            self._log_per_subject(all_iou, live)
        self._finish_rows(alive)

    def _finish_rows(self, alive: list[bool]) -> None:
        """Rows whose trajectory ended (last step, early stop, pruning, non-finite) hand over their results and
        are free for the next step; the others move to their next step. Sets `trainer.should_stop` when
        nothing is left to run."""
        now = time.perf_counter()
        occupied = [r for r, index in enumerate(self.row_index) if index >= 0]
        share = (now - self._last_tick) / max(len(occupied), 1)  # the rows share this step's wall time
        self._last_tick = now
        finishing = []
        for r in occupied:
            self.seconds[r] += share
            if not alive[r] or self.row_step[r] == self.steps:
                finishing.append(r)
            else:
                self.row_step[r] += 1
        self.finished_now = finishing
        if finishing:
            self._fill_after_end(finishing)
            results = self._row_results(finishing)
            k = self.search.prune_after
            for i, r in enumerate(finishing):
                if k is not None and self.row_step[r] < k:  # its group's pruning still has to rank it
                    entry = (float(results["best_iou"][i]), float(results["best_loss"][i]), self.row_restart[r])
                    self._ended_before_pruning.setdefault(self.row_group[r], []).append(entry)
                self.row_index[r] = -1
            released = torch.tensor(finishing, device=self.z.device)
            self.alive[released] = False
            self._hand_over(results)
        if not any(index >= 0 for index in self.row_index) and not self.feeder.queue:
            self.trainer.should_stop = True  # every trajectory is done (the ticks are only an upper bound)

    def _hand_over(self, results: dict) -> None:
        """Results go to `finished_rows` (the writer takes them); with pruning, those of a (source, class)
        wait until all its rows are done, so that records never hold half a pruned group (resume reruns whole
        groups, and pruning compares the whole group)."""
        if self.search.prune_after is None:
            self.finished_rows = join_results(self.finished_rows, results)
            return
        groups = results["group"].tolist()
        for group in dict.fromkeys(groups):
            self._held.append(select_results(results, [i for i, g in enumerate(groups) if g == group]))
        busy = {self.row_group[r] for r, index in enumerate(self.row_index) if index >= 0}
        for group in [g for g in self._ended_before_pruning if g not in busy]:  # every restart ended before pruning
            del self._ended_before_pruning[group]
        for held in [h for h in self._held if int(h["group"][0]) not in busy]:
            self.finished_rows = join_results(self.finished_rows, held)
        self._held = [h for h in self._held if int(h["group"][0]) in busy]

    @torch.no_grad()
    def _fill_after_end(self, rows: list[int]) -> None:
        """A trajectory that ended at step t < steps stays where it was: its IoU, loss and frames after t are
        those of step t (what scoring its frozen latent would give)."""
        at = torch.tensor(rows, device=self.z.device)
        end = torch.tensor([self.row_step[r] for r in rows], device=self.z.device)  # [n]
        after = torch.arange(self.steps + 1, device=self.z.device) > end[:, None]  # [n, steps + 1]
        for history in (self.iou_history, self.loss_history):
            history[at] = torch.where(after, history[at].gather(1, end[:, None]), history[at])
        later = torch.tensor(self.frame_steps, device=self.z.device) > end[:, None]  # [n, F]
        self.frames[at] = torch.where(later[..., None], self.z.detach()[at, None], self.frames[at])
        if self.class_vector is not None:
            self.frames_class[at] = torch.where(later[..., None], self.class_vector.detach()[at, None],
                                                self.frames_class[at])  # fmt: skip

    def on_train_epoch_end(self) -> None:
        """The ticks are an upper bound on the steps a run takes: running out of them with work left is a bug
        (unless the Trainer was told to stop earlier: `limit_train_batches`, `max_steps`, ...)."""
        left = hasattr(self, "row_index") and (any(i >= 0 for i in self.row_index) or self.feeder.queue)
        if left and self._ticks_run >= getattr(self.feeder, "ticks", float("inf")):
            raise RuntimeError("internal error: the run ran out of latent steps with trajectories left to run")

    def _gather(self, values: Tensor) -> Tensor:
        """Every rank's `[B]` values, in rank order: `[G]` (identity on one device)."""
        if self.trainer.world_size == 1:
            return values
        return self.all_gather(values).reshape(-1)

    @torch.no_grad()
    def _track(self, row_step: Tensor, loss: Tensor, iou: Tensor, finite: Tensor) -> None:
        """Best-so-far per trajectory (highest IoU, ties to lower loss); stop non-finite trajectories.
        `row_step` [G]: the step of its own trajectory each row is at."""
        rows = torch.arange(len(row_step), device=row_step.device)
        iou, loss = iou.float(), loss.float()  # indexed writes need the buffers' dtype (autocast may give others)
        self.iou_history[rows, row_step] = iou
        self.loss_history[rows, row_step] = loss
        newly_dead = self.alive & ~finite
        self.stopped_at = torch.where(newly_dead, row_step, self.stopped_at)
        self.alive &= finite
        better = self.alive & ((iou > self.best_iou) | ((iou == self.best_iou) & (loss < self.best_loss)))
        self.best_iou = torch.where(better, iou, self.best_iou)
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.best_step = torch.where(better, row_step, self.best_step)
        self.best_z = torch.where(better[:, None], self.z.detach(), self.best_z)
        if self.class_vector is not None:
            self.best_class = torch.where(better[:, None], self.class_vector.detach(), self.best_class)
        slot = self.frame_slot[row_step]  # [G]: which frame this step is, -1 for none
        framed, at = (slot >= 0)[:, None], slot.clamp_min(0)
        self.frames[rows, at] = torch.where(framed, self.z.detach(), self.frames[rows, at])
        if self.class_vector is not None:
            self.frames_class[rows, at] = torch.where(framed, self.class_vector.detach(), self.frames_class[rows, at])

    @torch.no_grad()
    def _end_early(self, row_step: Tensor) -> None:
        """Early stop and pruning (search.py): the rows they end take no more steps; their best so far is their
        result. A row at its trajectory's last step has nothing left to stop."""
        s = self.search
        reason = torch.zeros_like(self.ended_by)
        if s.stop_iou is not None or s.patience is not None:
            reason = early_stop(self.best_iou, self.best_step, row_step, stop_iou=s.stop_iou, patience=s.patience)
        k = s.prune_after
        at_k = [r for r, index in enumerate(self.row_index) if index >= 0 and self.row_step[r] == k]
        if at_k:  # whole groups: they started together
            group = torch.full_like(self.group_ids, -1)
            at = torch.tensor(at_k, device=group.device)
            group[at] = self.group_ids[at]
            iou, loss, restart = self.best_iou, self.best_loss, self.restarts
            ended = [(g, *e) for g in dict.fromkeys(self.row_group[r] for r in at_k)
                     for e in self._ended_before_pruning.pop(g, [])]  # fmt: skip
            if ended:  # restarts that ended earlier are ranked too (they cannot be pruned: they already ended)
                extra = torch.tensor([e[1:3] for e in ended], dtype=iou.dtype, device=iou.device)  # [E, 2]
                iou, loss = torch.cat([iou, extra[:, 0]]), torch.cat([loss, extra[:, 1]])
                restart = torch.cat([restart, torch.tensor([e[3] for e in ended], device=restart.device)])
                group = torch.cat([group, torch.tensor([e[0] for e in ended], device=group.device)])
            pruned = prune(iou, loss, restart, group)[: len(self.row_index)]
            reason = torch.where(pruned & (reason == 0), PRUNED, reason)
        ending = self.alive & (reason > 0) & (row_step < self.steps)
        self.ended_at = torch.where(ending, row_step, self.ended_at)
        self.ended_by = torch.where(ending, reason, self.ended_by)
        self.alive &= ~ending

    def _group_best_mean(self, rows: list[int]) -> Tensor:
        """Mean over the (source, class) groups of `rows` of the best IoU so far among their restarts there
        (host lists and index tensors: no wait for the device)."""
        position = {g: i for i, g in enumerate(dict.fromkeys(self.row_group[r] for r in rows))}
        at = torch.tensor(rows, device=self.z.device)
        inverse = torch.tensor([position[self.row_group[r]] for r in rows], device=self.z.device)
        best = torch.full((len(position),), -1.0, device=self.z.device).scatter_reduce(
            0, inverse, self.best_iou[at], reduce="amax"
        )
        return best.clamp_min(0).mean()

    def _log_per_subject(self, iou: Tensor, live: list[int]) -> None:
        """`train/iou/<subject>`: mean IoU of the live trajectories of each subject class in the chunk."""
        for channel in sorted({self.row_channel[r] for r in live}):
            rows = torch.tensor([r for r in live if self.row_channel[r] == channel], device=iou.device)
            self.log(f"train/iou/{VOC_CLASSES[channel]}", iou[rows].mean(), on_step=True, on_epoch=False)

    def _row_results(self, rows: list[int]) -> dict:
        """Per-trajectory results of finished `rows`, on the CPU."""
        keep = torch.tensor(rows, device=self.z.device)
        return {
            "index": torch.tensor([self.row_index[r] for r in rows]),
            "group": torch.tensor([self.row_group[r] for r in rows]),
            "best_z": self.best_z[keep].cpu(),
            "best_iou": self.best_iou[keep].cpu(),
            "best_loss": self.best_loss[keep].cpu(),
            "best_step": self.best_step[keep].cpu(),
            "stopped_at": self.stopped_at[keep].cpu(),
            "frames": self.frames[keep].cpu(),
            "frame_steps": list(self.frame_steps),
            "iou_history": self.iou_history[keep].cpu(),  # [N, steps + 1]
            "loss_history": self.loss_history[keep].cpu(),  # [N, steps + 1]
            "seed": self.start_seeds[keep].cpu(),
            "ended_at": self.ended_at[keep].cpu(),
            "ended_by": [ENDED[int(code)] for code in self.ended_by[keep].tolist()],
            "seconds": torch.tensor([self.seconds[r] for r in rows], dtype=torch.float64),  # its share of each step
        } | self._class_results(keep)

    def _class_results(self, keep: Tensor) -> dict:
        """With --class-lr: the best class vector of each trajectory `[N, K]` and those of its frames."""
        if self.class_vector is None:
            return {}
        return {"best_class": self.best_class[keep].cpu(), "frames_class": self.frames_class[keep].cpu()}


def join_results(first: dict | None, second: dict) -> dict:
    """Two sets of row results as one (tensors concatenated, lists joined; `frame_steps` is shared)."""
    if first is None:
        return second
    joined = {}
    for key, value in second.items():
        if key == "frame_steps":
            joined[key] = value
        elif isinstance(value, Tensor):
            joined[key] = torch.cat([first[key], value])
        else:
            joined[key] = first[key] + value
    return joined


def select_results(results: dict, positions: list[int]) -> dict:
    """The rows `positions` of a set of row results."""
    at = torch.tensor(positions, dtype=torch.long)
    return {key: value if key == "frame_steps" else value[at] if isinstance(value, Tensor)
            else [value[i] for i in positions] for key, value in results.items()}  # fmt: skip
