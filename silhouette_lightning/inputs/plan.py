"""The plan on disk (`plan.pt`): what a run does, written once by one process and read by every rank, by resume,
and by the benchmark. The one reader and writer of its schema.

Schema (a dict readable with `torch.load(weights_only=True)`): `trajectories` (`Trajectory` fields, in result
order), `sources` (every source key, in data order), `skipped` (`PreparedSource` fields of the sources left out),
`class_ids` (per subject, the classes its sources are swapped to), and, for the recovery experiment only,
`starts` (`index` [K] long, `z` [K, Z]: the known latents of restart 0) and `cases`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from silhouette_lightning.core.files import atomic_torch_save
from silhouette_lightning.inputs.target_maps import PreparedSource
from silhouette_lightning.inputs.trajectories import Trajectory

PLAN_FILE = "plan.pt"


@dataclass
class PlanFile:
    """The contents of `plan.pt`; `extra` holds the recovery experiment's `starts` and `cases`."""

    trajectories: list[Trajectory]
    sources: list[str]
    skipped: list[PreparedSource]
    class_ids: dict[str, list[int]]
    extra: dict = field(default_factory=dict)


def plan_path(run_dir: Path) -> Path:
    """Where a run folder keeps its plan."""
    return Path(run_dir) / PLAN_FILE


def write_plan(run_dir: Path, plan: PlanFile) -> Path:
    """Write `plan` into `run_dir` atomically (a reader never sees half a plan)."""
    data = {
        "trajectories": [asdict(t) for t in plan.trajectories],
        "sources": list(plan.sources),
        "skipped": [asdict(p) for p in plan.skipped],
        "class_ids": plan.class_ids,
    } | plan.extra
    return atomic_torch_save(data, plan_path(run_dir))


def read_plan(run_dir: Path) -> PlanFile:
    """The plan of `run_dir` (FileNotFoundError when it has none)."""
    data = torch.load(plan_path(run_dir), weights_only=True)
    known = ("trajectories", "sources", "skipped", "class_ids")
    return PlanFile(
        trajectories=[Trajectory(**t) for t in data["trajectories"]],
        sources=data["sources"],
        skipped=[PreparedSource(**p) for p in data["skipped"]],
        class_ids=data["class_ids"],
        extra={k: v for k, v in data.items() if k not in known},
    )
