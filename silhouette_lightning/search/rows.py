"""The row table: the state of every row of a chunk, one trajectory per row, and what a finished row hands over.

A chunk has G rows (batch x world size); every rank holds the whole table, so every rank takes the same decisions.
What decides the refill lives on the host (`index`, `step`, `group`, ...: plain lists, no wait for the device);
what the step computes lives on the device (best so far, histories, frames, the end codes). Rows are loaded when
a trajectory starts (`load`), updated after every scoring (`track`, `end_early`), and release their trajectory's
`TrajectoryResult` when it ends (`results`, `release`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from silhouette_lightning.search.feed import RowStart
from silhouette_lightning.search.options import SearchOptions
from silhouette_lightning.search.stopping import ENDED, PRUNED, early_stop, prune


def frame_steps(steps: int, frames: int) -> list[int]:
    """The steps whose latents are kept for pictures: evenly spaced, always the first and last."""
    if frames <= 1:
        return [steps]
    return sorted({round(i * steps / (frames - 1)) for i in range(frames)})


@dataclass
class StepReport:
    """What one step did to the rows, for the callbacks (pictures, timing): how many trajectories it loaded and
    which rows finished."""

    loaded: int = 0
    finished: list[int] = dataclasses.field(default_factory=list)


@dataclass
class TrajectoryResult:
    """The results of N finished trajectories, on the CPU: what the writer turns into records.

    `index` [N] their positions in the plan, `group` [N] their (source, class) group ids; best latent `best_z`
    [N, Z], its IoU, loss and step; `stopped_at` (non-finite at that step, -1 none), `ended_at` / `ended_by`
    (early stop or pruning); `frames` [N, F, Z] the latents at `frame_steps`; `iou_history` / `loss_history`
    [N, steps + 1]; `seed` the seed of each starting latent; `seconds` [N] float64 each one's share of the wall
    time; with `--class-lr`, `best_class` [N, K] and `frames_class` [N, F, K]. `best_frames` [N, F, Z] (and
    `best_frames_class` [N, F, K]): the best-so-far latent at each frame step, which the held-out judge scores
    (engine/writer.py, outputs/runtime.py).
    """

    index: Tensor
    group: Tensor
    best_z: Tensor
    best_iou: Tensor
    best_loss: Tensor
    best_step: Tensor
    stopped_at: Tensor
    frames: Tensor
    frame_steps: list[int]
    iou_history: Tensor
    loss_history: Tensor
    seed: Tensor
    ended_at: Tensor
    ended_by: list[str]
    seconds: Tensor
    best_class: Tensor | None = None
    frames_class: Tensor | None = None
    best_frames: Tensor | None = None
    best_frames_class: Tensor | None = None

    def __len__(self) -> int:
        return len(self.index)

    def select(self, positions: list[int] | Tensor) -> TrajectoryResult:
        """The results at `positions`, in that order."""
        at = torch.as_tensor(positions, dtype=torch.long)
        return self._map(lambda v: v[at], lambda v: [v[i] for i in at.tolist()])

    def cat(self, other: TrajectoryResult | None) -> TrajectoryResult:
        """These results followed by `other`'s (`None`: these alone)."""
        if other is None:
            return self
        joined = {}
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            joined[f.name] = (
                theirs
                if f.name == "frame_steps"
                else None
                if mine is None
                else torch.cat([mine, theirs])
                if isinstance(mine, Tensor)
                else mine + theirs
            )
        return TrajectoryResult(**joined)

    def _map(self, tensor_fn, list_fn) -> TrajectoryResult:
        values = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            values[f.name] = (
                v if f.name == "frame_steps" or v is None else tensor_fn(v) if isinstance(v, Tensor) else list_fn(v)
            )
        return TrajectoryResult(**values)


def join(first: TrajectoryResult | None, second: TrajectoryResult) -> TrajectoryResult:
    """Two sets of results as one (`first` may be None)."""
    return second if first is None else first.cat(second)


class RowTable:
    """Per-row state of a chunk of `chunk` rows; `batch` of them are this rank's (rows rank*batch ...).

    `class_dim`: the class vectors' size when they are optimized (`--class-lr`), else None.
    """

    def __init__(
        self,
        *,
        chunk: int,
        batch: int,
        z_dim: int,
        steps: int,
        frame_steps: list[int],
        target_size: tuple[int, ...],
        class_dim: int | None,
        device,
    ) -> None:
        self.steps, self.frame_steps, self.batch = steps, list(frame_steps), batch
        self.index = [-1] * chunk  # trajectory index of each row, -1 when empty (host: decides the refill)
        self.step = [0] * chunk  # the step of its own trajectory each row scores next
        self.group = [-1] * chunk  # group id of each row's trajectory
        self.channel = [0] * chunk  # VOC channel of each row's subject
        self.restart = [-1] * chunk  # restart number of each row's trajectory
        self.seconds = [0.0] * chunk  # wall time each row's trajectory has cost so far
        self.last_index = [-1] * chunk  # the trajectory each row ran last (kept when it finishes: pictures)
        # pruning: (best IoU, best loss, restart) of restarts that ended before their group's pruning step, by group
        # id; they still count in the ranking, as if frozen in their rows
        self.ended_before_pruning: dict[int, list[tuple[float, float, int]]] = {}
        longs = {"dtype": torch.long, "device": device}
        self.start_seeds = torch.zeros(chunk, **longs)  # [G]: the seed each row's starting latent is drawn from
        self.class_ids, self.channels = torch.zeros(chunk, **longs), torch.zeros(chunk, **longs)  # [G], [G]
        self.group_ids = torch.full((chunk,), -1, **longs)  # [G]: rows with the same id share (source, class)
        self.restarts = torch.full((chunk,), -1, **longs)  # [G], ranks restarts in pruning
        self.alive = torch.zeros(chunk, dtype=torch.bool, device=device)  # the row's trajectory still takes steps
        self.stopped_at = torch.full((chunk,), -1, **longs)  # non-finite at this step
        self.ended_at = torch.full((chunk,), -1, **longs)  # early stop or pruning
        self.ended_by = torch.zeros(chunk, **longs)  # stopping.ENDED code
        self.best_z = torch.zeros(chunk, z_dim, device=device)
        self.best_iou = torch.full((chunk,), -1.0, device=device)
        self.best_loss = torch.full((chunk,), float("inf"), device=device)
        self.best_step = torch.zeros(chunk, **longs)
        self.frames = torch.zeros(chunk, len(self.frame_steps), z_dim, device=device)
        self.best_frames = torch.zeros_like(self.frames)  # [G, F, Z]: best so far at each frame step
        self.iou_history = torch.zeros(chunk, steps + 1, device=device)  # IoU of every step, for curves
        self.loss_history = torch.zeros(chunk, steps + 1, device=device)  # loss of every step
        # frame slot of each step (-1: not a frame step), to keep frames without a host sync
        self.frame_slot = torch.full((steps + 1,), -1, **longs)
        self.frame_slot[torch.tensor(self.frame_steps)] = torch.arange(len(self.frame_steps), device=device)
        self.targets = torch.zeros(batch, *target_size, device=device)  # [B, S, S]: this rank's rows only
        self.best_class = self.frames_class = self.best_frames_class = None
        if class_dim is not None:
            self.best_class = torch.zeros(chunk, class_dim, device=device)  # [G, K]
            self.frames_class = torch.zeros(chunk, len(self.frame_steps), class_dim, device=device)
            self.best_frames_class = torch.zeros_like(self.frames_class)

    # ------------------------------------------------------------------ which rows are where (host lists)

    def free(self) -> list[int]:
        """The empty rows, lowest first."""
        return [row for row, index in enumerate(self.index) if index < 0]

    def occupied(self) -> list[int]:
        """The rows running a trajectory."""
        return [row for row, index in enumerate(self.index) if index >= 0]

    def ending(self, alive: list[bool]) -> list[int]:
        """The occupied rows whose trajectory ends with this step: not `alive` (early stop, pruning, non-finite),
        or at its last step."""
        return [r for r in self.occupied() if not alive[r] or self.step[r] == self.steps]

    def advance(self, alive: list[bool], seconds: float) -> list[int]:
        """After a step of `seconds` wall time, shared equally by the occupied rows: the rows that end (`ending`),
        while the others move to their next step."""
        occupied, ending = self.occupied(), self.ending(alive)
        ends = set(ending)
        share = seconds / max(len(occupied), 1)
        for r in occupied:
            self.seconds[r] += share
            if r not in ends:
                self.step[r] += 1
        return ending

    def stepping(self) -> list[int]:
        """The rows that take an Adam step after this scoring (before non-finite ones are known)."""
        return [r for r, index in enumerate(self.index) if index >= 0 and self.step[r] < self.steps]

    def busy_groups(self) -> set[int]:
        """The group ids that still have a trajectory running."""
        return {self.group[r] for r, index in enumerate(self.index) if index >= 0}

    def own(self, rows: list[int], rank: int) -> list[bool]:
        """Which of `rows` are rank `rank`'s."""
        return [rank * self.batch <= row < (rank + 1) * self.batch for row in rows]

    # ------------------------------------------------------------------ loading, tracking, ending

    @torch.no_grad()
    def load(
        self,
        rows: list[int],
        indices: list[int],
        start: RowStart,
        seeds: Tensor,
        z: Tensor,
        class_vector: Tensor | None,
        rank: int,
    ) -> None:
        """Start trajectories `indices` in `rows` (their latents `z` and class vectors already written there) from
        the feeder's `start`; `seeds` the seeds their starting latents came from."""
        device = z.device
        at = torch.tensor(rows, device=device)
        if class_vector is not None:
            self.best_class[at] = class_vector[at]
            self.frames_class[at] = self.best_frames_class[at] = 0
        for k, row in enumerate(rows):
            self.index[row], self.step[row], self.seconds[row] = indices[k], 0, 0.0
            self.last_index[row] = indices[k]
            self.group[row], self.channel[row] = int(start.group[k]), int(start.channel[k])
            self.restart[row] = int(start.restart[k])
        self.start_seeds[at] = seeds.to(device)
        self.class_ids[at], self.channels[at] = start.class_id.to(device), start.channel.to(device)
        self.group_ids[at], self.restarts[at] = start.group.to(device), start.restart.to(device)
        self.alive[at] = True
        self.stopped_at[at], self.ended_at[at], self.ended_by[at] = -1, -1, 0
        self.best_z[at] = z[at]
        self.best_iou[at], self.best_loss[at], self.best_step[at] = -1.0, float("inf"), 0
        self.frames[at], self.iou_history[at], self.loss_history[at] = 0.0, 0.0, 0.0
        self.best_frames[at] = 0.0
        mine = [row - rank * self.batch for row, m in zip(rows, self.own(rows, rank), strict=True) if m]
        if mine:
            self.targets[torch.tensor(mine, device=device)] = start.targets.to(self.targets)

    @torch.no_grad()
    def track(
        self, row_step: Tensor, loss: Tensor, iou: Tensor, finite: Tensor, z: Tensor, class_vector: Tensor | None
    ) -> None:
        """Best-so-far per trajectory (highest IoU, ties to lower loss); stop non-finite trajectories.
        `row_step` [G]: the step of its own trajectory each row is at; `z` [G, Z] the latents just scored."""
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
        self.best_z = torch.where(better[:, None], z, self.best_z)
        if class_vector is not None:
            self.best_class = torch.where(better[:, None], class_vector, self.best_class)
        slot = self.frame_slot[row_step]  # [G]: which frame this step is, -1 for none
        framed, at = (slot >= 0)[:, None], slot.clamp_min(0)
        self.frames[rows, at] = torch.where(framed, z, self.frames[rows, at])
        self.best_frames[rows, at] = torch.where(framed, self.best_z, self.best_frames[rows, at])
        if class_vector is not None:
            self.frames_class[rows, at] = torch.where(framed, class_vector, self.frames_class[rows, at])
            self.best_frames_class[rows, at] = torch.where(framed, self.best_class, self.best_frames_class[rows, at])

    @torch.no_grad()
    def end_early(self, row_step: Tensor, search: SearchOptions) -> None:
        """Early stop and pruning (stopping.py): the rows they end take no more steps; their best so far is their
        result. A row at its trajectory's last step has nothing left to stop."""
        s = search
        reason = torch.zeros_like(self.ended_by)
        if s.stop_iou is not None or s.patience is not None:
            reason = early_stop(self.best_iou, self.best_step, row_step, stop_iou=s.stop_iou, patience=s.patience)
        k = s.prune_after
        at_k = [r for r, index in enumerate(self.index) if index >= 0 and self.step[r] == k]
        if at_k:  # whole groups: they started together
            group = torch.full_like(self.group_ids, -1)
            at = torch.tensor(at_k, device=group.device)
            group[at] = self.group_ids[at]
            iou, loss, restart = self.best_iou, self.best_loss, self.restarts
            ended = [
                (g, *e)
                for g in dict.fromkeys(self.group[r] for r in at_k)
                for e in self.ended_before_pruning.pop(g, [])
            ]
            if ended:  # restarts that ended earlier are ranked too (they cannot be pruned: they already ended)
                extra = torch.tensor([e[1:3] for e in ended], dtype=iou.dtype, device=iou.device)  # [E, 2]
                iou, loss = torch.cat([iou, extra[:, 0]]), torch.cat([loss, extra[:, 1]])
                restart = torch.cat([restart, torch.tensor([e[3] for e in ended], device=restart.device)])
                group = torch.cat([group, torch.tensor([e[0] for e in ended], device=group.device)])
            pruned = prune(iou, loss, restart, group)[: len(self.index)]
            reason = torch.where(pruned & (reason == 0), PRUNED, reason)
        ending = self.alive & (reason > 0) & (row_step < self.steps)
        self.ended_at = torch.where(ending, row_step, self.ended_at)
        self.ended_by = torch.where(ending, reason, self.ended_by)
        self.alive &= ~ending

    @torch.no_grad()
    def fill_after_end(self, rows: list[int], z: Tensor, class_vector: Tensor | None) -> None:
        """A trajectory that ended at step t < steps stays where it was: its IoU, loss and frames after t are
        those of step t (what scoring its frozen latent would give)."""
        device = z.device
        at = torch.tensor(rows, device=device)
        end = torch.tensor([self.step[r] for r in rows], device=device)  # [n]
        after = torch.arange(self.steps + 1, device=device) > end[:, None]  # [n, steps + 1]
        for history in (self.iou_history, self.loss_history):
            history[at] = torch.where(after, history[at].gather(1, end[:, None]), history[at])
        later = torch.tensor(self.frame_steps, device=device) > end[:, None]  # [n, F]
        self.frames[at] = torch.where(later[..., None], z[at, None], self.frames[at])
        self.best_frames[at] = torch.where(later[..., None], self.best_z[at, None], self.best_frames[at])
        if class_vector is not None:
            self.frames_class[at] = torch.where(later[..., None], class_vector[at, None], self.frames_class[at])
            self.best_frames_class[at] = torch.where(
                later[..., None], self.best_class[at, None], self.best_frames_class[at]
            )

    def results(self, rows: list[int]) -> TrajectoryResult:
        """The results of the trajectories of finished `rows`, on the CPU (copied with one wait: `to_host`)."""
        keep = torch.tensor(rows, device=self.best_z.device)
        # TrajectoryResult's field -> this table's tensor (iou_history / loss_history: [N, steps + 1])
        fields = {
            **{name: getattr(self, name) for name in self._RESULT_TENSORS},
            "seed": self.start_seeds,
            **({name: getattr(self, name) for name in self._CLASS_TENSORS} if self.best_class is not None else {}),
        }
        host = dict(zip(fields, to_host([t[keep] for t in fields.values()]), strict=True))
        return TrajectoryResult(
            index=torch.tensor([self.index[r] for r in rows]),
            group=torch.tensor([self.group[r] for r in rows]),
            frame_steps=list(self.frame_steps),
            ended_by=[ENDED[code] for code in host.pop("ended_by").tolist()],
            seconds=torch.tensor([self.seconds[r] for r in rows], dtype=torch.float64),  # its share of each step
            **host,
        )

    _RESULT_TENSORS = (
        "best_z",
        "best_iou",
        "best_loss",
        "best_step",
        "stopped_at",
        "frames",
        "iou_history",
        "loss_history",
        "ended_at",
        "ended_by",
        "best_frames",
    )
    _CLASS_TENSORS = ("best_class", "frames_class", "best_frames_class")  # with --class-lr

    def release(self, rows: list[int], results: TrajectoryResult, prune_after: int | None) -> None:
        """Empty finished `rows`; a restart that ended before its group's pruning step keeps its rank there."""
        for i, r in enumerate(rows):
            if prune_after is not None and self.step[r] < prune_after:  # its group's pruning still has to rank it
                entry = (float(results.best_iou[i]), float(results.best_loss[i]), self.restart[r])
                self.ended_before_pruning.setdefault(self.group[r], []).append(entry)
            self.index[r] = -1
        self.alive[torch.tensor(rows, device=self.alive.device)] = False

    def group_best_mean(self, rows: list[int]) -> Tensor:
        """Mean over the (source, class) groups of `rows` of the best IoU so far among their restarts there
        (host lists and index tensors: no wait for the device)."""
        device = self.best_iou.device
        position = {g: i for i, g in enumerate(dict.fromkeys(self.group[r] for r in rows))}
        at = torch.tensor(rows, device=device)
        inverse = torch.tensor([position[self.group[r]] for r in rows], device=device)
        best = torch.full((len(position),), -1.0, device=device).scatter_reduce(
            0, inverse, self.best_iou[at], reduce="amax"
        )
        return best.clamp_min(0).mean()


class HandOver:
    """Finished results on their way to the writer. Without pruning they go at once; with it, those of a
    (source, class) wait until all its rows are done, so that records never hold half a pruned group (resume
    reruns whole groups, and pruning compares the whole group)."""

    def __init__(self, whole_groups: bool) -> None:
        self.whole_groups = whole_groups
        self.ready: TrajectoryResult | None = None  # what the writer takes next
        self._held: list[TrajectoryResult] = []

    def add(self, results: TrajectoryResult, table: RowTable) -> None:
        """Hand over `results`, just released from `table`."""
        if not self.whole_groups:
            self.ready = join(self.ready, results)
            return
        groups = results.group.tolist()
        for group in dict.fromkeys(groups):
            self._held.append(results.select([i for i, g in enumerate(groups) if g == group]))
        busy = table.busy_groups()
        for group in [g for g in table.ended_before_pruning if g not in busy]:  # every restart ended before pruning
            del table.ended_before_pruning[group]
        for held in [h for h in self._held if int(h.group[0]) not in busy]:
            self.ready = join(self.ready, held)
        self._held = [h for h in self._held if int(h.group[0]) in busy]

    def take(self) -> TrajectoryResult | None:
        """The results ready since the last take (None: none)."""
        ready, self.ready = self.ready, None
        return ready


def to_host(tensors: list[Tensor]) -> list[Tensor]:
    """CPU copies of `tensors` with one wait for the device instead of one per tensor.

    CUDA tensors are copied without blocking (into pinned memory), then each CUDA device's current stream is
    synchronized once, which the copies need before they are read (PyTorch's guide to `non_blocking`); tensors of
    other devices are copied as `.cpu()` would.
    CPU tensors come back as they are: the callers pass fresh tensors (index results), never a table's own.
    """
    host = [t.to("cpu", non_blocking=t.device.type == "cuda") for t in tensors]  # other devices: plain copies
    for device in {t.device for t in tensors if t.device.type == "cuda"}:
        torch.cuda.current_stream(device).synchronize()
    return host
