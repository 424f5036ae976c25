"""Sources -> target maps -> trajectories -> batches: the run's LightningDataModule.

`prepare_data` (one process) segments every source once into a cached target map and writes the plan:
the trajectories still to run (finished ones are skipped on resume). Every rank then reads the same plan
and iterates the same sequence of (chunk, step) items; item (c, 0) carries chunk c's trajectories and this
rank's target maps, the later steps of a chunk carry only their step number.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from silhouette_lightning.classes import VOC_CLASSES
from silhouette_lightning.files import atomic_torch_save
from silhouette_lightning.results import drop_records, group_dir, load_records
from silhouette_lightning.sources import Source
from silhouette_lightning.target_maps import (
    PreparedSource,
    changed_sources,
    load_target,
    prepare_targets,
    target_path,
)
from silhouette_lightning.trajectories import Trajectory, enumerate_trajectories, trajectory_seed


class ChunkSteps(Dataset):
    """Items `(chunk, step)` for `step` in 0..steps: the last step of a chunk scores without updating."""

    def __init__(
        self,
        trajectories: list[Trajectory],
        indices: list[int],
        targets_dir: Path,
        *,
        chunk: int,
        rank_rows: slice,
        steps: int,
        whole_groups: bool = False,
        starts: int = 0,
        run_seed: int = 0,
    ) -> None:
        self.trajectories, self.indices, self.targets_dir = trajectories, indices, Path(targets_dir)
        self.chunk, self.rank_rows, self.steps = chunk, rank_rows, steps
        self.candidates, self.run_seed = starts, run_seed  # best-of-N: candidate starts per group (0: off)
        if whole_groups:  # restart pruning compares a group's restarts: never split a group across chunks
            self.chunks = pack_groups([trajectories[i].group for i in indices], indices, chunk)
        else:
            self.chunks = [indices[c : c + chunk] for c in range(0, len(indices), chunk)]
        self.num_chunks = len(self.chunks)

    def __len__(self) -> int:
        return self.num_chunks * (self.steps + 1)

    def __getitem__(self, i: int) -> dict:
        chunk, step = divmod(i, self.steps + 1)
        if step > 0:
            return {"chunk": chunk, "step": step}
        rows = self.chunks[chunk]
        rows = rows + [-1] * (self.chunk - len(rows))  # padding rows: never scored, never written
        trajs = [self.trajectories[r] if r >= 0 else None for r in rows]
        groups: dict[tuple[str, int], int] = {}
        loaded: dict[str, torch.Tensor] = {}  # a source's map serves all its classes and restarts: read it once

        def target(key: str) -> torch.Tensor:
            if key not in loaded:
                loaded[key] = load_target(self.targets_dir, key)
            return loaded[key]

        first = target(next(t for t in trajs if t).source_key)
        targets = [target(t.source_key) if t else torch.zeros_like(first) for t in trajs[self.rank_rows]]
        item = {
            "chunk": chunk,
            "step": 0,
            "index": torch.tensor(rows),
            "seeds": torch.tensor([t.seed if t else 0 for t in trajs], dtype=torch.long),
            "restart": torch.tensor([t.restart if t else -1 for t in trajs]),
            "class_id": torch.tensor([t.class_id if t else 0 for t in trajs]),
            "channel": torch.tensor([VOC_CLASSES.index(t.subject) if t else 0 for t in trajs]),
            "group": torch.tensor([groups.setdefault(t.group, len(groups)) if t else -1 for t in trajs]),
            "targets": torch.stack(targets),  # [B, S, S]
        }
        if self.candidates:  # best-of-N: every group's candidate seeds and target (any rank may score any group)
            first_of = {t.group: t for t in reversed(trajs) if t}
            members = [first_of[g] for g in groups]  # in group id order
            item["candidate_seeds"] = torch.tensor(
                [[trajectory_seed(self.run_seed, t.source_key, t.class_id, n) for n in range(self.candidates)]
                 for t in members], dtype=torch.long)  # fmt: skip  # [groups, N]
            item["group_class"] = torch.tensor([t.class_id for t in members])  # [groups]
            item["group_channel"] = torch.tensor([VOC_CLASSES.index(t.subject) for t in members])  # [groups]
            item["group_targets"] = torch.stack([target(t.source_key) for t in members])  # [groups, S, S]
        return item


def pack_groups(groups: list, indices: list[int], chunk: int) -> list[list[int]]:
    """Consecutive trajectories of the same group go to the same chunk, chunks filled greedily in order.

    >>> pack_groups(["a", "a", "b", "b", "c", "c"], [0, 1, 2, 3, 4, 5], 5)
    [[0, 1, 2, 3], [4, 5]]
    """
    runs: list[list[int]] = []
    for position, index in enumerate(indices):
        if position and groups[position] == groups[position - 1]:
            runs[-1].append(index)
        else:
            runs.append([index])
    chunks: list[list[int]] = []
    for run in runs:
        if len(run) > chunk:
            raise ValueError(f"a group of {len(run)} trajectories does not fit a chunk of {chunk}")
        if not chunks or len(chunks[-1]) + len(run) > chunk:
            chunks.append([])
        chunks[-1].extend(run)
    return chunks


@dataclass
class Plan:
    """What a run does: every trajectory (in result order) and the sources it skips."""

    trajectories: list[Trajectory]
    skipped: list[PreparedSource]
    sources: list[str]  # every source key, in data order
    class_ids: dict[str, list[int]]  # per subject: the classes its sources are swapped to
    restarts: int
    masks: bool
    targets_dir: Path

    def source_order(self, key: str) -> int:
        """Position of a source in the data order."""
        return self._source_index[key]

    def class_order(self, class_id: int) -> tuple[int, int]:
        """Classes in the order they were asked for."""
        for i, ids in enumerate(self.class_ids.values()):
            if class_id in ids:
                return (i, ids.index(class_id))
        return (len(self.class_ids), class_id)

    def group_order(self, group: tuple[str, int]) -> tuple:
        """(source, class) pairs in data order, then class order."""
        return (self.source_order(group[0]), self.class_order(group[1]))

    def row_order(self, row: dict) -> tuple:
        """results.csv rows: by source, skipped sources first among theirs, then classes."""
        class_id = row.get("class_id")
        return (self.source_order(row["source"]), (-1, -1) if class_id in (None, "") else self.class_order(class_id))

    def __post_init__(self) -> None:
        self._source_index = {key: i for i, key in enumerate(self.sources)}


class SwapData(LightningDataModule):
    """Prepares target maps and the plan once, then serves (chunk, step) items to every rank."""

    def __init__(self, *, sources: list[Source], classes_for, ensemble, run_dir: Path, masks: bool, seg_size: int,
                 ensemble_mode: str, restarts: int, steps: int, seed: int, max_pixels: int, data_dir: Path,
                 fit: str = "pad", log=print) -> None:  # fmt: skip
        super().__init__()
        self.sources, self.classes_for, self.ensemble, self.run_dir = sources, classes_for, ensemble, Path(run_dir)
        self.masks, self.seg_size, self.ensemble_mode, self.max_pixels = masks, seg_size, ensemble_mode, max_pixels
        self.restarts, self.steps, self.seed, self.log = restarts, steps, seed, log
        self.data_dir = Path(data_dir)
        self.fit = fit
        self.targets_dir = self.run_dir / "targets" / fit  # target maps depend on --fit: cached apart
        self.plan: Plan | None = None
        self.pending: list[int] = []
        self.prepare_data_per_node = False  # the run folder is shared by every node: one process writes the plan

    @property
    def plan_path(self) -> Path:
        return self.run_dir / "plan.pt"

    def prepare_data(self) -> None:
        """One process: segment every source (cached), decide subjects and classes, save the plan."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.ensemble.to(device)
        self.forget_changed_sources()
        prepared = prepare_targets(self.sources, self.ensemble, self.targets_dir, masks=self.masks,
                                   size=self.seg_size, mode=self.ensemble_mode, max_pixels=self.max_pixels,
                                   fit=self.fit, data_dir=self.data_dir, log=self.log)  # fmt: skip
        subjects = sorted({p.subject for p in prepared if p.ok})
        class_ids = {subject: self.classes_for(subject) for subject in subjects}
        without = "skipped: no classes to swap a {} to (configs/classes.yaml has none); pass --classes"
        prepared = [p if not p.ok or class_ids[p.subject] else replace(p, status=without.format(p.subject))
                    for p in prepared]  # fmt: skip
        class_ids = {subject: ids for subject, ids in class_ids.items() if ids}
        ok = [p for p in prepared if p.ok]
        trajectories = enumerate_trajectories(
            [(p.key, p.subject, class_ids[p.subject]) for p in ok], self.restarts, self.seed
        )
        atomic_torch_save({
            "trajectories": [asdict(t) for t in trajectories], "sources": [s.key for s in self.sources],
            "skipped": [asdict(p) for p in prepared if not p.ok], "class_ids": class_ids,
        }, self.plan_path)  # fmt: skip

    def forget_changed_sources(self) -> None:
        """Sources whose files changed since their results were made are redone: drop their records and
        pictures, then their target map (last, so that a crash in between still finds them changed)."""
        changed = changed_sources(self.sources, self.targets_dir)
        if not changed:
            return
        self.log(f"{len(changed)} source file(s) changed since their results were made; redoing them: "
                 f"{', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}")  # fmt: skip
        drop_records(self.run_dir, changed)
        for key in changed:
            shutil.rmtree(group_dir(self.run_dir, key, 0).parent, ignore_errors=True)
            target_path(self.targets_dir, key).unlink(missing_ok=True)

    def setup(self, stage: str) -> None:
        """Every rank: read the plan and leave out trajectories that earlier runs finished."""
        data = torch.load(self.plan_path, weights_only=True)
        self.plan = Plan(
            trajectories=[Trajectory(**t) for t in data["trajectories"]],
            skipped=[PreparedSource(**p) for p in data["skipped"]],
            sources=data["sources"], class_ids=data["class_ids"], restarts=self.restarts, masks=self.masks,
            targets_dir=self.targets_dir,
        )  # fmt: skip
        done = load_records(self.run_dir).keys()
        self.pending = [i for i, t in enumerate(self.plan.trajectories) if t.identity not in done]
        if not self.pending:  # nothing to fit: no empty epoch (and none of Lightning's zero-length warnings)
            self.trainer.limit_train_batches = 0
        if self.trainer is None or self.trainer.is_global_zero:
            self._say_what_is_left()

    def _say_what_is_left(self) -> None:
        """On a re-run: how many (source, class) pairs earlier runs finished and how many remain."""
        pairs = {t.group for t in self.plan.trajectories}
        left = {self.plan.trajectories[i].group for i in self.pending}
        if len(left) == len(pairs) and len(self.pending) == len(self.plan.trajectories):
            return  # a fresh run
        if not left:
            self.log(f"all {len(pairs)} (source, class) pairs already done; the tables are written again")
        else:
            self.log(f"resuming: {len(pairs) - len(left)} of {len(pairs)} (source, class) pairs already done, "
                     f"{len(left)} to go")  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        """The (chunk, step) items; `batch_size=None`: each item already is a whole step's batch."""
        module = self.trainer.lightning_module
        rank, batch = self.trainer.global_rank, module.batch_size
        search = module.search
        dataset = ChunkSteps(self.plan.trajectories, self.pending, self.targets_dir, chunk=module.z.shape[0],
                             rank_rows=slice(rank * batch, (rank + 1) * batch), steps=self.steps,
                             whole_groups=search.prune_after is not None, starts=search.starts,
                             run_seed=self.seed)  # fmt: skip
        return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=0)
