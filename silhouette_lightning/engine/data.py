"""Sources -> target maps -> trajectories -> batches: the run's LightningDataModule.

`prepare_data` (one process) segments every source once into a cached target map and writes the plan:
the trajectories still to run (finished ones are skipped on resume). Every rank then reads the same plan and
iterates the same ticks (one latent step of the whole chunk each); the module takes pending trajectories
from the same `PlanFeeder` queue into its rows as they free up (refill.py), so every rank agrees on them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from silhouette_lightning.core.classes import VOC_CLASSES
from silhouette_lightning.inputs.plan import PlanFile, plan_path, read_plan, write_plan
from silhouette_lightning.inputs.sources import Source
from silhouette_lightning.inputs.target_maps import (
    PreparedSource,
    changed_sources,
    load_target,
    prepare_targets,
    target_path,
)
from silhouette_lightning.inputs.trajectories import Trajectory, enumerate_trajectories, trajectory_seed
from silhouette_lightning.outputs.records import drop_records, group_dir, load_records
from silhouette_lightning.search.feed import Candidates, RowStart
from silhouette_lightning.search.refill import RowQueue, most_ticks, queue_units


class Ticks(Dataset):
    """Items `{"tick": n}`: one latent step of the whole chunk each. There are `most_ticks` of them, an upper
    bound; the module stops the run when its last trajectory is done (refill.py)."""

    def __init__(self, ticks: int) -> None:
        self.ticks = ticks

    def __len__(self) -> int:
        return self.ticks

    def __getitem__(self, i: int) -> dict:
        return {"tick": i}


class PlanFeeder:
    """The pending trajectories of a plan, for the module's rows: `queue` (refill.RowQueue) says which start
    next, `load` reads what they start from (seeds, classes, subjects, groups, this rank's target maps, and
    with best-of-N every loaded group's candidate seeds and target)."""

    def __init__(
        self,
        trajectories: list[Trajectory],
        pending: list[int],
        targets_dir: Path,
        *,
        rows: int,
        steps: int,
        whole_groups: bool = False,
        starts: int = 0,
        run_seed: int = 0,
    ) -> None:
        self.trajectories, self.targets_dir = trajectories, Path(targets_dir)
        self.candidates, self.run_seed = starts, run_seed  # best-of-N: candidate starts per group (0: off)
        self.group_id: dict[tuple[str, int], int] = {}  # every group of the plan, numbered in plan order
        for t in trajectories:
            self.group_id.setdefault(t.group, len(self.group_id))
        units = queue_units([trajectories[i].group for i in pending], pending, whole_groups=whole_groups)
        self.queue = RowQueue(units, rows)
        self.ticks = most_ticks(units, rows, steps) if pending else 0
        first = load_target(self.targets_dir, trajectories[pending[0]].source_key) if pending else torch.zeros(1, 1)
        self.target_size = tuple(first.shape)

    def load(self, indices: list[int], own: list[bool]) -> RowStart:
        """Starting data of trajectories `indices`; target maps only where `own` (this rank's rows)."""
        trajs = [self.trajectories[i] for i in indices]
        loaded: dict[str, torch.Tensor] = {}  # a source's map serves all its classes and restarts: read it once

        def target(key: str) -> torch.Tensor:
            if key not in loaded:
                loaded[key] = load_target(self.targets_dir, key)
            return loaded[key]

        mine = [target(t.source_key) for t, o in zip(trajs, own, strict=True) if o]
        start = RowStart(
            index=torch.tensor(indices),
            seeds=torch.tensor([t.seed for t in trajs], dtype=torch.long),
            restart=torch.tensor([t.restart for t in trajs]),
            class_id=torch.tensor([t.class_id for t in trajs]),
            channel=torch.tensor([VOC_CLASSES.index(t.subject) for t in trajs]),
            group=torch.tensor([self.group_id[t.group] for t in trajs]),
            targets=torch.stack(mine) if mine else torch.zeros(0, *self.target_size),  # [own rows, S, S]
        )
        if self.candidates:  # best-of-N: every loaded group's candidate seeds and target (any rank may score one)
            first_of: dict[tuple[str, int], Trajectory] = {}
            for t in trajs:
                first_of.setdefault(t.group, t)
            members = list(first_of.values())  # the loaded groups, in order
            position = {t.group: i for i, t in enumerate(members)}
            start.candidates = Candidates(
                seeds=torch.tensor(
                    [
                        [trajectory_seed(self.run_seed, t.source_key, t.class_id, n) for n in range(self.candidates)]
                        for t in members
                    ],
                    dtype=torch.long,
                ),
                group_id=torch.tensor([self.group_id[t.group] for t in members]),
                class_id=torch.tensor([t.class_id for t in members]),
                channel=torch.tensor([VOC_CLASSES.index(t.subject) for t in members]),
                targets=torch.stack([target(t.source_key) for t in members]),  # [groups, S, S]
                load_group=torch.tensor([position[t.group] for t in trajs]),  # [n]
            )
        return start


LARGE_PLAN = 100_000  # trajectories from which planning is announced


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

    def __init__(
        self,
        *,
        sources: list[Source],
        classes_for,
        ensemble,
        run_dir: Path,
        masks: bool,
        seg_size: int,
        ensemble_mode: str,
        restarts: int,
        steps: int,
        seed: int,
        max_pixels: int,
        data_dir: Path,
        fit: str = "pad",
        log=print,
    ) -> None:
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
        return plan_path(self.run_dir)

    def prepare_data(self) -> None:
        """One process: segment every source (cached), decide subjects and classes, save the plan."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.ensemble.to(device)
        self.forget_changed_sources()
        prepared = prepare_targets(
            self.sources,
            self.ensemble,
            self.targets_dir,
            masks=self.masks,
            size=self.seg_size,
            mode=self.ensemble_mode,
            max_pixels=self.max_pixels,
            fit=self.fit,
            data_dir=self.data_dir,
            log=self.log,
        )
        subjects = sorted({p.subject for p in prepared if p.ok})
        class_ids = {subject: self.classes_for(subject) for subject in subjects}
        without = "skipped: no classes to swap a {} to (configs/classes.yaml has none); pass --classes"
        prepared = [
            p if not p.ok or class_ids[p.subject] else replace(p, status=without.format(p.subject)) for p in prepared
        ]
        class_ids = {subject: ids for subject, ids in class_ids.items() if ids}
        ok = [p for p in prepared if p.ok]
        count = sum(len(class_ids[p.subject]) for p in ok) * self.restarts
        if count >= LARGE_PLAN:  # planning itself takes a while and memory: say so before it starts
            self.log(f"planning {count} trajectories ({len(ok)} source(s) x classes x {self.restarts} restarts)")
        trajectories = enumerate_trajectories(
            [(p.key, p.subject, class_ids[p.subject]) for p in ok], self.restarts, self.seed
        )
        write_plan(
            self.run_dir,
            PlanFile(trajectories, [s.key for s in self.sources], [p for p in prepared if not p.ok], class_ids),
        )

    def forget_changed_sources(self) -> None:
        """Sources whose files changed since their results were made are redone: drop their records and
        pictures, then their target map (last, so that a crash in between still finds them changed)."""
        changed = changed_sources(self.sources, self.targets_dir)
        if not changed:
            return
        self.log(
            f"{len(changed)} source file(s) changed since their results were made; redoing them: "
            f"{', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}"
        )
        drop_records(self.run_dir, changed)
        for key in changed:
            shutil.rmtree(group_dir(self.run_dir, key, 0).parent, ignore_errors=True)
            target_path(self.targets_dir, key).unlink(missing_ok=True)

    def setup(self, stage: str) -> None:
        """Every rank: read the plan and leave out trajectories that earlier runs finished."""
        saved = read_plan(self.run_dir)
        self.plan = Plan(
            trajectories=saved.trajectories,
            skipped=saved.skipped,
            sources=saved.sources,
            class_ids=saved.class_ids,
            restarts=self.restarts,
            masks=self.masks,
            targets_dir=self.targets_dir,
        )
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
        if len(left) == len(pairs) and len(self.pending) == len(self.plan.trajectories):  # a fresh run
            self.log(
                f"to do: {len(pairs)} (source, class) pairs x {self.restarts} restarts = {len(self.pending)} "
                f"trajectories of up to {self.steps} steps"
            )
            return
        if not left:
            self.log(f"all {len(pairs)} (source, class) pairs already done; the tables are written again")
        else:
            self.log(
                f"resuming: {len(pairs) - len(left)} of {len(pairs)} (source, class) pairs already done, "
                f"{len(left)} to go"
            )

    def feeder(self, module) -> PlanFeeder:
        """The pending trajectories for `module`'s rows (whole groups when pruning compares them)."""
        search = module.search
        return PlanFeeder(
            self.plan.trajectories,
            self.pending,
            self.targets_dir,
            rows=module.z.shape[0],
            steps=self.steps,
            whole_groups=search.prune_after is not None,
            starts=search.starts,
            run_seed=self.seed,
        )

    def train_dataloader(self) -> DataLoader:
        """Ticks (one latent step of the chunk each); the module takes its trajectories from the feeder.
        `batch_size=None`: each item already is a whole step."""
        module = self.trainer.lightning_module
        module.feeder = self.feeder(module)
        return DataLoader(Ticks(module.feeder.ticks), batch_size=None, shuffle=False, num_workers=0)
