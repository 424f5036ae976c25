"""Convergence statistics of a run: how often and how fast each class reaches each IoU threshold, per class
and per source subject, computed from the per-step IoU and loss histories kept in the trajectory records.

Definitions (the same for every scope: all, a class, a subject, a class x subject):
- best-so-far IoU of a trajectory at step t: the highest IoU it had at steps 0..t while finite (a trajectory
  stopped as non-finite at step k keeps its best of steps < k; one stopped at step 0 counts as 0).
- a trajectory *succeeds* at threshold T if its best-so-far IoU reaches T by the last step; a (source, class)
  *pair* succeeds if its best restart does (best-of-restarts). Both rates are reported.
- steps to T: the first step at which best-so-far IoU >= T (0: the start already fits), over the trajectories
  (or pairs) that reach it; reported as median (mean of the two middle values for an even count), mean and count.
- quantiles (10/50/90) of best-so-far IoU at each step: linear interpolation between order statistics.
- seconds: each trajectory's share of its chunk's wall time (the chunk's time over its real rows).
- heldout_iou_mean: mean held-out IoU (heldout.py) of the scope's pairs that have one, with heldout_iou_count;
  its optimized counterpart is the last step's pair_best_iou_mean.

Rows (`convergence_stats`) are long format: class, class_name, subject, step (None for statistics that are not
per step), statistic, value. `convergence.csv` holds them; `convergence.json` holds the same numbers by scope.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from silhouette_lightning.core.classes import imagenet_name
from silhouette_lightning.core.files import atomic_write_text

ALL = "all"
COLUMNS = ["class", "class_name", "subject", "step", "statistic", "value"]
DEFAULT_THRESHOLDS = (0.5, 0.75, 0.9)
QUANTILES = (0.1, 0.5, 0.9)
Scope = tuple[str, str]  # (class id or "all", subject or "all")


def threshold_name(statistic: str, threshold: float) -> str:
    """`success_rate@0.75`: the name of a statistic at a threshold."""
    return f"{statistic}@{threshold:g}"


def best_so_far(iou_history: Tensor, stopped_at: int) -> Tensor:
    """Best-so-far IoU `[steps + 1]` of one trajectory's IoU history `[steps + 1]` (see the module docstring)."""
    iou = torch.as_tensor(iou_history, dtype=torch.float64)
    valid = torch.isfinite(iou)
    if stopped_at >= 0:
        valid[stopped_at:] = False
    return torch.where(valid, iou, 0.0).clamp_min(0.0).cummax(0).values


def first_steps_at(curves: Tensor, threshold: float) -> list[int]:
    """The first step at which each best-so-far curve `[N, steps + 1]` reaches `threshold`, for those that do."""
    hits = curves >= threshold  # [N, steps + 1]
    return hits.int().argmax(1)[hits.any(1)].tolist()


def _with_history(records: Iterable[dict]) -> list[dict]:
    """Records that carry per-step histories (runs made before histories were kept have none)."""
    return [r for r in records if r.get("iou_history") is not None]


def _scopes(record: dict) -> list[Scope]:
    c, s = str(record["class_id"]), str(record["subject"])
    return [(ALL, ALL), (c, ALL), (ALL, s), (c, s)]


def _scope_order(scope: Scope) -> tuple:
    """all/all first, then per class (by id), per subject, class x subject."""
    c, s = scope
    return ((c != ALL) + 2 * (s != ALL), int(c) if c != ALL else -1, s)


def _steps_summary(name: str, steps: list[int]) -> list[tuple[str, float]]:
    """count, median and mean of steps-to-threshold (median and mean only when something reached it)."""
    out = [(f"{name}_count", len(steps))]
    if steps:
        out += [(f"{name}_median", float(statistics.median(steps))), (f"{name}_mean", sum(steps) / len(steps))]
    return out


def _scope_rows(
    records: list[dict], curves: Tensor, thresholds: list[float], heldout: dict[tuple[str, int], float] | None = None
) -> list[tuple[int | None, str, float]]:
    """(step, statistic, value) of one scope: its records and their best-so-far curves `[N, steps + 1]`."""
    rows: list[tuple[int | None, str, float]] = []
    pairs: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        pairs[(r["source"], r["class_id"])].append(i)
    pair_curves = torch.stack([curves[rows_of].max(0).values for rows_of in pairs.values()])  # [P, steps + 1]
    rows += [(None, "trajectories", len(records)), (None, "pairs", len(pairs))]
    for t in thresholds:
        rows.append((None, threshold_name("success_rate", t), float((curves[:, -1] >= t).double().mean())))
        rows.append((None, threshold_name("pair_success_rate", t), float((pair_curves[:, -1] >= t).double().mean())))
    for t in thresholds:
        for name, these in (("steps_to", curves), ("pair_steps_to", pair_curves)):
            reached = first_steps_at(these, t)
            rows += [(None, stat, value) for stat, value in _steps_summary(threshold_name(name, t), reached)]
    seconds = [r["seconds"] for r in records if r.get("seconds") is not None]
    if seconds:
        rows += [(None, "seconds_mean", sum(seconds) / len(seconds)), (None, "seconds_total", sum(seconds))]
    scored = [heldout[pair] for pair in pairs if heldout and pair in heldout]
    if scored:
        rows += [(None, "heldout_iou_mean", sum(scored) / len(scored)), (None, "heldout_iou_count", len(scored))]
    quantiles = torch.quantile(curves, torch.tensor(QUANTILES, dtype=curves.dtype), dim=0)  # [3, steps + 1]
    losses = torch.stack([torch.as_tensor(r["loss_history"], dtype=torch.float64) for r in records])  # [N, S + 1]
    stopped = torch.tensor([r["stopped_at"] if r["stopped_at"] >= 0 else curves.shape[1] for r in records])  # [N]
    for step in range(curves.shape[1]):
        rows.append((step, "best_iou_mean", float(curves[:, step].mean())))
        for q, values in zip(QUANTILES, quantiles, strict=True):
            rows.append((step, f"best_iou_q{round(q * 100)}", float(values[step])))
        rows.append((step, "pair_best_iou_mean", float(pair_curves[:, step].mean())))
        live = losses[step < stopped, step]  # the trajectories still searching at this step
        finite = live[torch.isfinite(live)]
        if len(finite):
            rows.append((step, "loss_mean", float(finite.mean())))
    return rows


def convergence_stats(
    records: Iterable[dict],
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    heldout: dict[tuple[str, int], float] | None = None,
) -> list[dict]:
    """Long-format rows of every statistic, for all trajectories, per class, per subject and per class x subject.

    `records`: trajectory records (`results.load_records(run_dir).values()`); those without an `iou_history`
    are left out. `heldout`: the held-out IoU of each (source, class id) pair that has one. Each row:
    `{"class", "class_name", "subject", "step", "statistic", "value"}`, `class` an
    ImageNet id as text or "all", `step` an int for per-step statistics else None.
    """
    records = _with_history(records)
    thresholds = [float(t) for t in thresholds]
    if not records:
        return []
    curves = [best_so_far(r["iou_history"], int(r["stopped_at"])) for r in records]
    if len({len(c) for c in curves}) > 1:
        raise ValueError("trajectory records have histories of different lengths (runs with different --steps)")
    members: dict[Scope, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        for scope in _scopes(r):
            members[scope].append(i)
    stacked = torch.stack(curves)  # [N, steps + 1]
    rows = []
    for scope in sorted(members, key=_scope_order):
        c, s = scope
        class_name = imagenet_name(int(c)) if c != ALL else ALL
        idx = members[scope]
        for step, statistic, value in _scope_rows([records[i] for i in idx], stacked[idx], thresholds, heldout):
            rows.append(
                {
                    "class": c,
                    "class_name": class_name,
                    "subject": s,
                    "step": step,
                    "statistic": statistic,
                    "value": value,
                }
            )
    return rows


def by_scope(rows: Iterable[dict]) -> dict[Scope, dict]:
    """Rows regrouped per (class, subject): `{"class_name", "summary": {stat: value}, "curves": {stat: [..]}}`."""
    scopes: dict[Scope, dict] = {}
    for row in rows:
        entry = scopes.setdefault(
            (row["class"], row["subject"]),
            {"class_name": row["class_name"], "summary": {}, "curves": defaultdict(dict)},
        )
        if row["step"] is None:
            entry["summary"][row["statistic"]] = row["value"]
        else:
            entry["curves"][row["statistic"]][int(row["step"])] = row["value"]
    for entry in scopes.values():  # step -> value maps to lists (a missing step, e.g. no finite loss: None)
        curves = entry["curves"]
        last = max((max(v) for v in curves.values()), default=-1)
        entry["curves"] = {k: [v.get(step) for step in range(last + 1)] for k, v in curves.items()}
    return scopes


def _format(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def write_convergence(
    run_dir: Path,
    records: Iterable[dict],
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    heldout: dict[tuple[str, int], float] | None = None,
):
    """Write `convergence.csv` and `convergence.json` into `run_dir`; returns the rows (empty: nothing written)."""
    thresholds = [float(t) for t in thresholds]
    rows = convergence_stats(records, thresholds, heldout)
    if not rows:
        return rows
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r["class"],
                r["class_name"],
                r["subject"],
                "" if r["step"] is None else r["step"],
                r["statistic"],
                _format(r["value"]),
            ]
        )
    atomic_write_text(Path(run_dir) / "convergence.csv", buffer.getvalue())
    scopes = [
        {"class": c, "class_name": e["class_name"], "subject": s, "summary": e["summary"], "curves": e["curves"]}
        for (c, s), e in by_scope(rows).items()
    ]
    document = {"thresholds": thresholds, "quantiles": list(QUANTILES), "scopes": scopes}
    atomic_write_text(Path(run_dir) / "convergence.json", json.dumps(document, indent=1) + "\n")
    return rows


def read_convergence(run_dir: Path) -> list[dict]:
    """The rows of a run's `convergence.csv` (typed as `convergence_stats` returns them)."""
    rows = []
    with open(Path(run_dir) / "convergence.csv", newline="") as f:
        for row in csv.DictReader(f):
            value = float(row["value"])
            is_count = row["statistic"] in ("trajectories", "pairs") or row["statistic"].endswith("_count")
            rows.append(
                row | {"step": int(row["step"]) if row["step"] else None, "value": int(value) if is_count else value}
            )
    return rows


def scope_tag(class_id: str, class_name: str, subject: str) -> str:
    """A TensorBoard tag part for a scope: `all`, `207_golden_retriever`, `subject_dog`, `207_..._dog`."""
    parts = [] if class_id == ALL else [f"{class_id}_{class_name}"]
    parts += [] if subject == ALL else [f"subject_{subject}"]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "/".join(parts) or ALL)


def log_convergence(experiment, rows: Iterable[dict]) -> int:
    """Write the curves to a TensorBoard `SummaryWriter`: `convergence/<scope>/<statistic>` against the step
    of the search, and each summary statistic as one scalar (at step 0). Scopes: all, per class, per subject.
    Returns the number of scalars written."""
    written = 0
    for (c, s), entry in by_scope(rows).items():
        if c != ALL and s != ALL:  # class x subject: in convergence.csv, too many panels for TensorBoard
            continue
        tag = f"convergence/{scope_tag(c, entry['class_name'], s)}"
        for statistic, curve in entry["curves"].items():
            for step, value in enumerate(curve):
                if value is not None and math.isfinite(value):
                    experiment.add_scalar(f"{tag}/{statistic}", value, step)
                    written += 1
        for statistic, value in entry["summary"].items():
            experiment.add_scalar(f"{tag}/{statistic}", value, 0)
            written += 1
    experiment.flush()
    return written
