"""The LightningModule: a chunk of BigGAN latents, the only trainable parameter, pulled toward target maps.

Data flow of one step (one batch = one Adam step for every trajectory of the chunk):
  z [G, Z] -> this rank's rows [B, Z] -> G(z, class) [B, 3, R, R] -> ensemble logits [M, B, C, S, S]
  -> per-trajectory loss [B] and IoU [B] -> gathered to [G] on every rank -> best-so-far per trajectory.

Many devices, one answer (DESIGN.md): every rank holds the whole chunk `z` [G, Z] (G = batch x world size)
and computes the loss of its own B rows only, so each row's gradient comes from exactly one rank. DDP's
all-reduce sums the ranks' gradients without dividing by the world size (`distributed.SummingDDPStrategy`),
which gives every row its true gradient bit for bit for any world size; DESIGN.md's alternative, scaling the
loss by the world size against DDP's average, is exact only for powers of two. Losses are summed over
trajectories, never averaged, and Adam is elementwise, so a row's update does not depend on the others.

Search options (search.py; all off by default) hook in at three places: the start of a chunk (best-of-N
starts, the class vector reset to the one-hot), the loss (prior penalty), and after each step's bookkeeping
(early stop and pruning freeze rows exactly as non-finite rows are frozen).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from silhouette_lightning.classes import VOC_CLASSES
from silhouette_lightning.distributed import check_summing
from silhouette_lightning.losses import ensemble_probs, trajectory_loss
from silhouette_lightning.metrics import MeanIoU, silhouette_iou
from silhouette_lightning.search import ENDED, PRUNED, SearchOptions, early_stop, prior_penalty, prune, select_starts
from silhouette_lightning.trajectories import TRUNCATION_BOUND, initial_latents

SCORE_BATCH = 64  # candidate starts scored per forward pass: fixed, so scores never depend on --batch-size


def frame_steps(steps: int, frames: int) -> list[int]:
    """The steps whose latents are kept for pictures: evenly spaced, always the first and last."""
    if frames <= 1:
        return [steps]
    return sorted({round(i * steps / (frames - 1)) for i in range(frames)})


class SilhouetteSwap(LightningModule):
    """Optimizes chunks of latents; after the last step of a chunk, `finished_chunk` holds its results."""

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
        self.finished_chunk: dict | None = None
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
        """Adam as in the paper; one Adam over [G, Z] is G independent Adams (elementwise). The class vectors,
        when optimized, are a second parameter group with their own learning rate."""
        groups = [{"params": [self.z], "lr": self.lr}]
        if self.class_vector is not None:
            groups.append({"params": [self.class_vector], "lr": self.search.class_lr})
        return torch.optim.Adam(groups, lr=self.lr, betas=self.betas)

    def generate(self, z: Tensor, class_ids: Tensor, class_vectors: Tensor | None = None) -> Tensor:
        """Images in [0, 1]: `[B, Z], [B] -> [B, 3, R, R]`; `class_vectors` [B, K] replace the one-hot classes."""
        if class_vectors is None:
            class_vectors = F.one_hot(class_ids, self.num_classes).to(z.dtype)  # [B, K]
        return (self.generator(z, class_vectors.to(z.dtype), self.truncation) + 1) / 2

    def subject_maps(self, logits: Tensor, channels: Tensor) -> Tensor:
        """The ensemble's probability of each trajectory's subject: `[M, B, C, S, S], [B] -> [B, S, S]`."""
        probs = ensemble_probs(logits, self.ensemble.weights, self.ensemble_mode)  # [B, C, S, S]
        return probs.gather(1, channels.view(-1, 1, 1, 1).expand(-1, 1, *probs.shape[2:])).squeeze(1)

    def score(
        self, z: Tensor, class_ids: Tensor, channels: Tensor, targets: Tensor, class_vectors: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(loss [B], IoU [B]) of latents `z` [B, Z] against target maps `[B, S, S]`."""
        return self._score(z, class_ids, channels, targets, class_vectors)

    def _score_eager(
        self, z: Tensor, class_ids: Tensor, channels: Tensor, targets: Tensor, class_vectors: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        logits = self._segment(self.generate(z, class_ids, class_vectors))  # [M, B, C, S, S]
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

    def _start_chunk(self, batch: dict) -> None:
        """Re-seed `z` in place (same Parameter: DDP and the optimizer keep it) and reset all state."""
        chunk = self.z.shape[0]
        self.start_seeds = batch["seeds"]  # [G]: the seed each row's starting latent is drawn from
        if "z0" not in batch and "candidate_seeds" in batch:  # best-of-N (search.starts)
            self.start_seeds = self._best_starts(batch)
        # "z0" (optional): explicit starting latents, for the recovery experiment
        z0 = batch["z0"] if "z0" in batch else initial_latents(self.start_seeds.tolist(), self.z_dim, self.truncation)
        with torch.no_grad():
            self.z.copy_(z0.to(self.z))
            if self.class_vector is not None:
                self.class_vector.copy_(F.one_hot(batch["class_id"], self.num_classes).to(self.class_vector))
        self.optimizers().optimizer.state.clear()
        device = self.z.device
        self.chunk_index = batch["index"]  # [G] trajectory index, -1 for padding
        self.class_ids, self.channels = batch["class_id"], batch["channel"]  # [G], [G]
        self.group_ids = batch["group"]  # [G]: rows with the same id share (source, class)
        self.restarts = batch["restart"] if "restart" in batch else self.chunk_index  # [G], ranks restarts in pruning
        self.targets = batch["targets"]  # [B, S, S]: this rank's rows only
        self.valid = self.chunk_index >= 0
        self.alive = self.valid.clone()
        self.stopped_at = torch.full((chunk,), -1, dtype=torch.long, device=device)  # non-finite at this step
        self.ended_at = torch.full((chunk,), -1, dtype=torch.long, device=device)  # early stop or pruning
        self.ended_by = torch.zeros(chunk, dtype=torch.long, device=device)  # search.ENDED code
        self.best_z = self.z.detach().clone()
        self.best_iou = torch.full((chunk,), -1.0, device=device)
        self.best_loss = torch.full((chunk,), float("inf"), device=device)
        self.best_step = torch.zeros(chunk, dtype=torch.long, device=device)
        self.frames = torch.zeros(chunk, len(self.frame_steps), self.z_dim, device=device)
        self.iou_history = torch.zeros(self.steps + 1, chunk, device=device)  # IoU of every step, for curves
        self.loss_history = torch.zeros(self.steps + 1, chunk, device=device)  # loss of every step
        self.chunk_started = time.perf_counter()
        if self.class_vector is not None:
            self.best_class = self.class_vector.detach().clone()  # [G, K]
            self.frames_class = torch.zeros(chunk, len(self.frame_steps), self.num_classes, device=device)

    @torch.no_grad()
    def _best_starts(self, batch: dict) -> Tensor:
        """Best-of-N: score every group's N candidate starts (forward passes only) and give restart r of each
        group the r-th of its best R candidates (in candidate order); returns each row's seed `[G]`.

        Each group's candidates are scored alone, in fixed pieces of SCORE_BATCH, so its scores do not depend on
        the batch size or the other groups; with many devices, group g is scored by rank g % world and the
        scores are summed over ranks (zeros elsewhere), so every rank selects from the same numbers.
        """
        seeds = batch["candidate_seeds"]  # [n_groups, N]
        n_groups, n = seeds.shape
        world, rank = self.trainer.world_size, self.trainer.global_rank
        device = self.z.device
        iou = torch.zeros(n_groups, n, device=device)
        loss = torch.zeros(n_groups, n, device=device)
        for g in range(rank, n_groups, world):
            z = initial_latents(seeds[g].tolist(), self.z_dim, self.truncation).to(self.z)  # [N, Z]
            for start in range(0, n, SCORE_BATCH):
                piece = z[start : start + SCORE_BATCH]
                m = len(piece)
                piece_loss, piece_iou = self.score(piece, batch["group_class"][g].expand(m),
                                                   batch["group_channel"][g].expand(m),
                                                   batch["group_targets"][g].expand(m, -1, -1))  # fmt: skip
                if self.search.prior_weight:
                    piece_loss = piece_loss + self.search.prior_weight * self._prior(piece)
                loss[g, start : start + m], iou[g, start : start + m] = piece_loss, piece_iou.float()
        if world > 1:
            iou = self.trainer.strategy.reduce(iou, reduce_op="sum")
            loss = self.trainer.strategy.reduce(loss, reduce_op="sum")
        chosen = select_starts(iou, loss, self.search.restarts)  # [n_groups, R], on the CPU
        group, restart = batch["group"], batch["restart"]
        valid = group >= 0
        picked = chosen[group.clamp_min(0), restart.clamp_min(0).clamp_max(self.search.restarts - 1)]  # [G]
        return torch.where(valid, seeds[group.clamp_min(0), picked], batch["seeds"])

    def _prior(self, z: Tensor) -> Tensor:
        """The prior penalty of latents `[B, Z] -> [B]` (search.prior_penalty at this truncation)."""
        return prior_penalty(z.float(), TRUNCATION_BOUND * self.truncation)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """One Adam step for every trajectory of the chunk (the last step only scores)."""
        step = int(batch["step"])
        if step == 0:
            self._start_chunk(batch)
        rank = self.trainer.global_rank
        rows = slice(rank * self.batch_size, (rank + 1) * self.batch_size)
        class_rows = self.class_vector[rows] if self.class_vector is not None else None
        with torch.set_grad_enabled(step < self.steps):
            loss, iou = self.score(self.z[rows], self.class_ids[rows], self.channels[rows], self.targets, class_rows)
            if self.search.prior_weight:
                loss = loss + self.search.prior_weight * self._prior(self.z[rows])
        finite = torch.isfinite(loss) & torch.isfinite(self.z[rows].detach()).all(1)
        if class_rows is not None:
            finite &= torch.isfinite(class_rows.detach()).all(1)
        all_loss = self._gather(loss.detach())  # [G]
        all_iou = self._gather(iou)  # [G]
        all_finite = self._gather(finite.float()).bool()  # [G]
        self._track(step, all_loss, all_iou, all_finite)
        if step < self.steps:
            self._end_early(step)

        if step < self.steps:
            live = self.alive[rows]
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(torch.where(live, loss, 0.0).sum())  # summed across ranks, not averaged
            with torch.no_grad():  # stopped or padding rows: restored after the step, whatever Adam does
                frozen = (~self.alive)[:, None]  # [G, 1]; masks instead of indexing: no GPU sync
                params = [p for p in (self.z, self.class_vector) if p is not None]
                kept = [p.detach().clone() for p in params]
                for p in params:
                    p.grad.masked_fill_(frozen, 0.0)
                optimizer.step()
                for p, before in zip(params, kept, strict=True):
                    p.copy_(torch.where(frozen, before, p))

        rows_live = self.valid & self.alive
        if rows_live.any():
            self.iou_metric(all_iou[rows_live])
            self.log("train/iou", self.iou_metric, prog_bar=True, on_step=True, on_epoch=False)
            self.log("train/loss", all_loss[rows_live].mean(), prog_bar=True, on_step=True, on_epoch=False)
            self.log("train/iou_best", self._group_best_mean(), on_step=True, on_epoch=False)
            self._log_per_subject(all_iou)
        if step == self.steps:
            self.finished_chunk = self._chunk_results()

    def _gather(self, values: Tensor) -> Tensor:
        """Every rank's `[B]` values, in rank order: `[G]` (identity on one device)."""
        if self.trainer.world_size == 1:
            return values
        return self.all_gather(values).reshape(-1)

    @torch.no_grad()
    def _track(self, step: int, loss: Tensor, iou: Tensor, finite: Tensor) -> None:
        """Best-so-far per trajectory (highest IoU, ties to lower loss); stop non-finite trajectories."""
        self.iou_history[step] = iou
        self.loss_history[step] = loss
        newly_dead = self.alive & ~finite
        self.stopped_at[newly_dead] = step
        self.alive &= finite
        better = self.alive & ((iou > self.best_iou) | ((iou == self.best_iou) & (loss < self.best_loss)))
        self.best_iou = torch.where(better, iou, self.best_iou)
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.best_step = torch.where(better, step, self.best_step)
        self.best_z = torch.where(better[:, None], self.z.detach(), self.best_z)
        if self.class_vector is not None:
            self.best_class = torch.where(better[:, None], self.class_vector.detach(), self.best_class)
        if step in self.frame_steps:
            self.frames[:, self.frame_steps.index(step)] = self.z.detach()
            if self.class_vector is not None:
                self.frames_class[:, self.frame_steps.index(step)] = self.class_vector.detach()

    @torch.no_grad()
    def _end_early(self, step: int) -> None:
        """Early stop and pruning (search.py): the rows they end are frozen from this step on, like non-finite
        ones; their best so far is their result."""
        s = self.search
        reason = torch.zeros_like(self.ended_by)
        if s.stop_iou is not None or s.patience is not None:
            reason = early_stop(self.best_iou, self.best_step, step, stop_iou=s.stop_iou, patience=s.patience)
        if s.prune_after == step:
            pruned = prune(self.best_iou, self.best_loss, self.restarts, torch.where(self.valid, self.group_ids, -1))
            reason = torch.where(pruned & (reason == 0), PRUNED, reason)
        ending = self.alive & (reason > 0)
        self.ended_at = torch.where(ending, step, self.ended_at)
        self.ended_by = torch.where(ending, reason, self.ended_by)
        self.alive &= ~ending

    def _group_best_mean(self) -> Tensor:
        """Mean over this chunk's (source, class) groups of the best IoU so far among their restarts."""
        group = self.group_ids  # [G], set by the data (same id = same source and class)
        valid = self.valid & (self.best_iou >= 0)
        if not valid.any():
            return torch.tensor(0.0, device=self.z.device)
        ids, inverse = torch.unique(group[valid], return_inverse=True)
        best = torch.full((len(ids),), -1.0, device=self.z.device).scatter_reduce(
            0, inverse, self.best_iou[valid], reduce="amax"
        )
        return best.mean()

    def _log_per_subject(self, iou: Tensor) -> None:
        """`train/iou/<subject>`: mean IoU of the live trajectories of each subject class in this chunk."""
        live = self.valid & self.alive
        for channel in torch.unique(self.channels[live]).tolist():
            rows = live & (self.channels == channel)
            self.log(f"train/iou/{VOC_CLASSES[channel]}", iou[rows].mean(), on_step=True, on_epoch=False)

    def _chunk_results(self) -> dict:
        """Per-trajectory results of the finished chunk, on the CPU, padding rows dropped."""
        keep = self.valid
        results = {
            "index": self.chunk_index[keep].cpu(),
            "best_z": self.best_z[keep].cpu(),
            "best_iou": self.best_iou[keep].cpu(),
            "best_loss": self.best_loss[keep].cpu(),
            "best_step": self.best_step[keep].cpu(),
            "stopped_at": self.stopped_at[keep].cpu(),
            "frames": self.frames[keep].cpu(),
            "frame_steps": list(self.frame_steps),
            "iou_history": self.iou_history[:, keep].T.cpu(),  # [N, steps + 1]
            "loss_history": self.loss_history[:, keep].T.cpu(),  # [N, steps + 1]
            "seed": self.start_seeds[keep].cpu(),
            "ended_at": self.ended_at[keep].cpu(),
            "ended_by": [ENDED[int(code)] for code in self.ended_by[keep].tolist()],
        } | self._class_results(keep)
        # Measured after the copies above (they wait for the device). The rows share the chunk's steps, so each
        # trajectory costs the chunk's wall time divided by its real (non-padding) rows.
        seconds = (time.perf_counter() - self.chunk_started) / max(len(results["index"]), 1)
        return results | {"seconds": seconds}

    def _class_results(self, keep: Tensor) -> dict:
        """With --class-lr: the best class vector of each trajectory `[N, K]` and those of its frames."""
        if self.class_vector is None:
            return {}
        return {"best_class": self.best_class[keep].cpu(), "frames_class": self.frames_class[keep].cpu()}
