"""Runtime statistics of a run's trajectories, the way optimizer benchmarks (COCO/BBOB, IOHprofiler) report
them: how much search a target IoU costs, not only whether it is reached. Pure functions of the trajectory
records on disk (`records.load_records`); nothing here runs a model.

Units: one unit is one latent step, a forward and backward pass of the scoring path (generator, segmenters,
loss). A trajectory that has run t steps (t = 0 is the score of its start) has spent `start + t + 1` units,
where `start` is its share of best-of-N candidate scoring (`start_units`: N candidates x `forward_cost` / R
restarts; 0 when best-of-N is off). A trajectory that ended early (pruning, early stop: `ended_at`) or turned
non-finite (`stopped_at`) spent its units up to that step and no more.

Definitions, for a target IoU T:
- runtime to T of a run: the units spent when its best-so-far IoU (convergence.best_so_far) first reaches T;
  inf if it never does. A run succeeds at T when its runtime is finite.
- ERT (expected running time, aRT in COCO) of a set of runs: the units spent by all runs (a successful run up
  to its success, an unsuccessful one all of its units) over the number of successes; inf when none succeeds.
  It is the expected cost of reaching T by restarting independent runs until one does.
- runtime ECDF: for a set of targets, the fraction of (run, target) pairs whose runtime is <= each budget (a
  budget equal to a runtime counts as reached).
- fixed-budget view: the mean best-so-far IoU of the runs at a budget of B units (the dual of the runtime).
- bootstrap intervals: percentile intervals from `resamples` resamples of the (source, class) pairs with
  replacement (the runs of a pair move together: restarts of one silhouette and class are not independent).
  With B resamples and level 1 - a, the interval is the (floor(a/2 B) + 1)-th and the ceil((1 - a/2) B)-th of
  the sorted resampled values. ERT intervals may reach inf (resamples without a success).
- paired difference of two variants run on the same pairs: the statistic of variant b minus that of a, both on
  the same resampled pairs; an interval that excludes zero is a difference the pairs' sampling cannot explain.

The judge (`runs(judge=...)`): "optimized" judges by the IoU the search optimized, known at every step (the
`iou_history`), one run per trajectory. "heldout" judges by the held-out segmenter's IoU (models/heldout.py) of
the same answer: at each frame step (search/rows.py `frame_steps`, `--frames` of them, first and last included)
the writer scores each trajectory's best-so-far latent (chosen by the optimized IoU, as the search's answer is)
with the held-out model (the record's `heldout_history`), not at every step. A run's held-out curve at step t is
the score at the last frame step <= t (unknown before the first), and at its last step the score of its final
answer; so under "heldout" a runtime is counted at the first frame step that reaches T (up to steps / (frames -
1) units late), and the curve need not rise (the optimized choice can score lower on the held-out model).
Records without `heldout_history` (runs of earlier versions) fall back to the pair's final held-out IoU
(results.csv's `heldout_iou`): a pair is then one run that spends the units of all its restarts and reaches T,
if at all, at the end of its budget, on another scale than the per-trajectory runs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from silhouette_lightning.core.classes import imagenet_name
from silhouette_lightning.outputs.convergence import ALL, best_so_far

OPTIMIZED, HELDOUT = "optimized", "heldout"
JUDGES = (OPTIMIZED, HELDOUT)
DEFAULT_TARGETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# Forward-only cost of a candidate's score over a forward + backward latent step: 0.5, from FLOPs counted by
# scripts/forward_cost.py (torch.utils.flop_counter, one trajectory, random weights): biggan-deep-128 + the default
# deeplabv3_resnet101:0.6,fcn_resnet101:0.4 at 256 px, forward 251 GFLOP, forward + backward 504 GFLOP (the
# figure of docs/benchmark.md), ratio 0.499; the tiny test models 0.497. The networks are frozen, so the backward
# pass computes input gradients only, about one forward, not the two of training (the usual 1/3 estimate counts
# weight gradients too). Timed on 2 shared CPU cores the ratio was 0.48, 0.34 and 0.47 at batch 2, 4 and 8 (noisy);
# not timed on a GPU, where kernels and batch sizes may move it: pass the measured value there.
FORWARD_COST = 0.5
RESAMPLES = 1000  # bootstrap resamples: the 2.5% and 97.5% points rest on 25 values each
LEVEL = 0.95
SEED = 0
Pair = tuple[str, int]  # (source key, class id)


def start_units(starts: int, restarts: int, forward_cost: float = FORWARD_COST) -> float:
    """Each trajectory's share of best-of-N candidate scoring: N x `forward_cost` / R units; 0 when `starts`
    is at most `restarts` (best-of-N off, as the settings read it)."""
    return starts * forward_cost / restarts if starts > restarts else 0.0


def last_step(record: dict) -> int:
    """The last step a trajectory ran: where it ended early or turned non-finite, else its last step."""
    steps = len(record["iou_history"]) - 1
    ends = [int(record.get(k, -1)) for k in ("ended_at", "stopped_at")]
    return min([steps, *(e for e in ends if e >= 0)])


def spent_units(record: dict, start: float = 0.0) -> float:
    """Units a trajectory spent in all: `start + last_step + 1`."""
    return start + last_step(record) + 1


def _reaches(curve: Tensor, target: float) -> Tensor:
    """Where a best-so-far curve reaches `target`, compared in float32, the precision of the stored histories
    (an IoU of 0.9 is stored as 0.89999998; as a float64 it would miss a target of 0.9)."""
    return curve.float() >= target


def runtime_to_target(record: dict, target: float, start: float = 0.0) -> float:
    """Units spent when the trajectory's best-so-far IoU first reaches `target` (`start + t + 1` at the first
    such step t); inf if it never does."""
    curve = optimized_curve(record)
    hits = torch.nonzero(_reaches(curve, target))
    return start + int(hits[0]) + 1 if len(hits) else math.inf


def heldout_values(results: Iterable[dict]) -> dict[Pair, float]:
    """{(source, class id): held-out IoU} of the results.csv rows (`records.read_results`) that have one."""
    return {
        (r["source"], int(r["class_id"])): float(r["heldout_iou"])
        for r in results
        if r.get("heldout_iou") not in (None, "") and r.get("status", "ok") == "ok"
    }


def runs(
    records: Iterable[dict], *, judge: str = OPTIMIZED, heldout: Mapping[Pair, float] | None = None, start: float = 0.0
) -> list[dict]:
    """The runs the statistics count, from trajectory records (those with an `iou_history`).

    `judge`: "optimized" (one run per trajectory, judged by its optimized IoU at every step) or "heldout" (one
    run per trajectory, judged at its frame steps by the held-out IoU of its best so far, `heldout_history`;
    records without one: one run per (source, class) pair in `heldout`, judged by its final held-out IoU; see
    the module docstring). `start`: each trajectory's `start_units`.
    Each run: {"source", "class_id", "pair", "spent": units, "final": its IoU at the end, "curve": best-so-far
    IoU per step (a float64 tensor up to its last step; None under "heldout"), "start"}.
    """
    if judge not in JUDGES:
        raise ValueError(f"judge must be one of {', '.join(JUDGES)}, got {judge!r}")
    records = [r for r in records if r.get("iou_history") is not None]
    per_step = judge == OPTIMIZED or (records and all(r.get("heldout_history") is not None for r in records))
    if per_step:  # one run per trajectory, its curve known at every step (optimized) or every frame step
        curve_of = optimized_curve if judge == OPTIMIZED else heldout_curve
        return [_trajectory_run(r, curve_of(r), start) for r in records]
    if heldout is None:
        raise ValueError('judge="heldout" needs the held-out IoU of each pair (heldout_values(read_results(run)))')
    spent: dict[Pair, float] = defaultdict(float)
    for r in records:
        spent[(r["source"], int(r["class_id"]))] += spent_units(r, start)
    return [
        {
            "source": p[0],
            "class_id": p[1],
            "pair": p,
            "spent": units,
            "final": float(heldout[p]),
            "curve": None,
            "start": start,
        }
        for p, units in spent.items()
        if p in heldout
    ]


def optimized_curve(record: dict) -> Tensor:
    """A trajectory's best-so-far optimized IoU per step, up to its last step."""
    return best_so_far(record["iou_history"], int(record["stopped_at"]))[: last_step(record) + 1]


def _trajectory_run(record: dict, curve: Tensor, start: float) -> dict:
    """One trajectory as a run of `runs`, judged by `curve`."""
    pair = (record["source"], int(record["class_id"]))
    return {
        "source": pair[0],
        "class_id": pair[1],
        "pair": pair,
        "spent": spent_units(record, start),
        "final": float(curve[-1]),
        "curve": curve,
        "start": start,
    }


def heldout_curve(record: dict) -> Tensor:
    """A trajectory's held-out curve per step up to its last step (float64; NaN before its first frame step):
    the `heldout_history` score of the last frame step <= t, and at the last step that of its final answer
    (after its last step a trajectory's best so far is frozen, so its last frame holds its answer)."""
    last = last_step(record)
    curve = torch.full((last + 1,), math.nan, dtype=torch.float64)
    scores = torch.as_tensor(record["heldout_history"], dtype=torch.float64)
    for step, score in zip(record["frame_steps"], scores.tolist(), strict=True):
        if step <= last:
            curve[step:] = score
    curve[last] = scores[-1]
    return curve


def run_runtime(run: dict, target: float) -> float:
    """Runtime to `target` of one run of `runs` (see `runtime_to_target`; under "heldout": its whole spend if
    its held-out IoU reaches the target, else inf)."""
    if run["curve"] is None:
        return run["spent"] if bool(_reaches(torch.tensor(run["final"]), target)) else math.inf
    hits = torch.nonzero(_reaches(run["curve"], target))
    return run["start"] + int(hits[0]) + 1 if len(hits) else math.inf


def runtimes(runs_: list[dict], targets: Iterable[float], chunk: int = 4096) -> Tensor:
    """Runtime of each run to each target, `[N, T]` float64 (inf: never); `run_runtime` for many at once (the
    curves padded with -inf to one length, `chunk` runs at a time)."""
    targets_ = torch.tensor([float(t) for t in targets], dtype=torch.float32)
    out = torch.full((len(runs_), len(targets_)), math.inf, dtype=torch.float64)
    spent = torch.tensor([r["spent"] for r in runs_], dtype=torch.float64)
    start = torch.tensor([r["start"] for r in runs_], dtype=torch.float64)
    ended = [i for i, r in enumerate(runs_) if r["curve"] is None]  # under "heldout": known at the end
    if ended:
        final = torch.tensor([runs_[i]["final"] for i in ended], dtype=torch.float32)
        out[ended] = torch.where(final[:, None] >= targets_, spent[ended, None], math.inf)
    curved = [i for i, r in enumerate(runs_) if r["curve"] is not None]
    for at in range(0, len(curved), chunk):
        rows = curved[at : at + chunk]
        curves = pad_sequence([runs_[i]["curve"].float() for i in rows], batch_first=True, padding_value=-math.inf)
        hits = curves[:, :, None] >= targets_  # [n, steps, T]
        first = hits.int().argmax(1).double() + start[rows, None] + 1  # [n, T]
        out[rows] = torch.where(hits.any(1), first, math.inf)
    return out


def ert(runs_: list[dict], target: float) -> float:
    """Expected running time to `target`: units spent by all runs (up to success, or all of them) over the
    number of successes; inf when none succeeds (or there are no runs)."""
    times = [run_runtime(r, target) for r in runs_]
    successes = sum(math.isfinite(t) for t in times)
    if not successes:
        return math.inf
    return sum(min(t, r["spent"]) for t, r in zip(times, runs_, strict=True)) / successes


def ert_by_pair(runs_: list[dict], targets: Iterable[float] = DEFAULT_TARGETS) -> list[dict]:
    """ERT of each (source, class) pair over its own runs (its restarts), per target: rows {"source",
    "class_id", "target", "runs", "successes", "ert"}, pairs in first-seen order."""
    by_pair: dict[Pair, list[dict]] = defaultdict(list)
    for r in runs_:
        by_pair[r["pair"]].append(r)
    return [
        {
            "source": p[0],
            "class_id": p[1],
            "target": float(t),
            "runs": len(members),
            "successes": sum(math.isfinite(run_runtime(r, t)) for r in members),
            "ert": ert(members, t),
        }
        for p, members in by_pair.items()
        for t in targets
    ]


def budget_grid(runs_: list[dict], points: int = 50) -> list[float]:
    """`points` log-spaced budgets from 1 unit to the largest spend of the runs (both included)."""
    top = max((r["spent"] for r in runs_), default=1.0)
    if top <= 1:
        return [1.0]
    return torch.logspace(0, math.log10(top), points, dtype=torch.float64).tolist()[:-1] + [float(top)]


def runtime_ecdf(
    runs_: list[dict], targets: Iterable[float] = DEFAULT_TARGETS, budgets: Iterable[float] | None = None
) -> list[dict]:
    """The runtime ECDF: rows {"budget", "fraction"}, the fraction of (run, target) pairs whose runtime is at
    most the budget (`budget_grid` by default)."""
    targets = [float(t) for t in targets]
    budgets = budget_grid(runs_) if budgets is None else [float(b) for b in budgets]
    times = runtimes(runs_, targets).reshape(-1)
    if not len(times):
        return [{"budget": b, "fraction": math.nan} for b in budgets]
    return [{"budget": b, "fraction": float((times <= b).double().mean())} for b in budgets]


def fixed_budgets(runs_: list[dict]) -> list[float]:
    """A few budgets for the fixed-budget view: the first at which a run has a score (its start + 1; under
    "heldout", the smallest spend), then 1, 2, 5, 10, 20, ... units beyond it, and the largest spend."""
    if not runs_:
        return []
    first = min(r["start"] + 1 if r["curve"] is not None else r["spent"] for r in runs_)
    top = max(r["spent"] for r in runs_)
    series = [m * 10**k for k in range(12) for m in (1, 2, 5) if first < m * 10**k < top]
    return sorted({float(first), *map(float, series), float(top)})


def best_at_budget(run: dict, budget: float) -> float | None:
    """A run's best-so-far IoU after `budget` units; None before its first score (or, under "heldout", before
    its whole spend: its IoU is known only at the end)."""
    if run["curve"] is None:
        return run["final"] if budget >= run["spent"] else None
    step = math.floor(budget - run["start"]) - 1
    value = None if step < 0 else float(run["curve"][min(step, len(run["curve"]) - 1)])
    return None if value is None or math.isnan(value) else value  # NaN: before a held-out curve's first frame


def fixed_budget(runs_: list[dict], budgets: Iterable[float] | None = None) -> list[dict]:
    """Best IoU at fixed budgets: rows {"budget", "runs" (with a value there), "mean_best_iou" (None: none)}."""
    rows = []
    for b in fixed_budgets(runs_) if budgets is None else budgets:
        values = [v for v in (best_at_budget(r, b) for r in runs_) if v is not None]
        rows.append(
            {"budget": float(b), "runs": len(values), "mean_best_iou": sum(values) / len(values) if values else None}
        )
    return rows


# ----------------------------------------------------------------------------------------------------- bootstrap


def _pair_sums(runs_: list[dict], targets: list[float], pairs: list[Pair]) -> dict[str, Tensor]:
    """Per pair: runs `[P]`, sum of final IoUs `[P]`, successes `[P, T]`, units spent up to success or all `[P, T]`:
    every statistic is a ratio of sums of these, so a resample is a weighted sum."""
    index = {p: i for i, p in enumerate(pairs)}
    n, final = torch.zeros(len(pairs), dtype=torch.float64), torch.zeros(len(pairs), dtype=torch.float64)
    succ = torch.zeros(len(pairs), len(targets), dtype=torch.float64)
    units = torch.zeros(len(pairs), len(targets), dtype=torch.float64)
    times = runtimes(runs_, targets)  # [N, T]
    spent = torch.tensor([r["spent"] for r in runs_], dtype=torch.float64)
    at = torch.tensor([index[r["pair"]] for r in runs_], dtype=torch.long)
    n.index_add_(0, at, torch.ones(len(runs_), dtype=torch.float64))
    final.index_add_(0, at, torch.tensor([r["final"] for r in runs_], dtype=torch.float64))
    succ.index_add_(0, at, torch.isfinite(times).double())
    units.index_add_(0, at, torch.minimum(times, spent[:, None]))
    return {"n": n, "final": final, "succ": succ, "units": units}


def _statistics(sums: dict[str, Tensor], weights: Tensor) -> dict[str, Tensor]:
    """Statistics `[B]` / `[B, T]` of resamples given as pair counts `weights` `[B, P]`."""
    n, succ, units = weights @ sums["n"], weights @ sums["succ"], weights @ sums["units"]
    ratio = torch.where(succ > 0, units / succ.clamp_min(1), torch.full_like(units, math.inf))
    return {"mean_best_iou": weights @ sums["final"] / n, "success_rate": succ / n[:, None], "ert": ratio}


def _resample_weights(pairs: int, resamples: int, seed: int) -> Tensor:
    """`[resamples, pairs]`: how often each pair is drawn in each resample (seeded: the same for every call)."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(pairs, (resamples, pairs), generator=generator)
    return torch.zeros(resamples, pairs, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones_like(draws, dtype=torch.float64)
    )


def percentile_interval(values: Tensor, level: float = LEVEL) -> tuple[Tensor, Tensor]:
    """(low, high) percentile interval over the first dimension (see the module docstring); inf-safe."""
    ordered = values.sort(0).values
    count, alpha = len(ordered), 1 - level
    low = min(math.floor(alpha / 2 * count), count - 1)
    high = max(min(math.ceil((1 - alpha / 2) * count) - 1, count - 1), 0)
    return ordered[low], ordered[high]


def bootstrap(
    runs_: list[dict],
    targets: Iterable[float] = DEFAULT_TARGETS,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> dict[str, tuple]:
    """Point estimates and bootstrap intervals, resampling (source, class) pairs: {"mean_best_iou": (value, low,
    high), "success_rate": (values [T], lows [T], highs [T]), "ert": (...)} as floats / lists of floats."""
    targets = [float(t) for t in targets]
    pairs = list(dict.fromkeys(r["pair"] for r in runs_))
    if not pairs:
        raise ValueError("no runs to bootstrap")
    sums = _pair_sums(runs_, targets, pairs)
    point = _statistics(sums, torch.ones(1, len(pairs), dtype=torch.float64))
    resampled = _statistics(sums, _resample_weights(len(pairs), resamples, seed))
    out = {}
    for name, values in resampled.items():
        low, high = percentile_interval(values, level)
        out[name] = (point[name][0].tolist(), low.tolist(), high.tolist())
    return out


def _scopes(runs_: list[dict]) -> list[tuple[str, list[dict]]]:
    """("all", every run), then (class id, its runs) by class id."""
    by_class: dict[int, list[dict]] = defaultdict(list)
    for r in runs_:
        by_class[r["class_id"]].append(r)
    return [(ALL, runs_)] + [(str(c), by_class[c]) for c in sorted(by_class)]


def runtime_stats(
    runs_: list[dict],
    targets: Iterable[float] = DEFAULT_TARGETS,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> list[dict]:
    """Long-format rows for all runs, then per class: {"class", "class_name", "statistic", "target" (None if
    not per target), "value", "low", "high" (None: no interval)}. Statistics: runs, pairs, mean_best_iou;
    per target: successes, success_rate, ert (intervals: `bootstrap`)."""
    targets = [float(t) for t in targets]
    rows = []
    for c, members in _scopes(runs_):
        if not members:
            continue
        name = ALL if c == ALL else imagenet_name(int(c))
        stats = bootstrap(members, targets, resamples=resamples, seed=seed, level=level)
        times = runtimes(members, targets)  # [N, T]

        def row(statistic, target, value, low=None, high=None, c=c, name=name):
            return {
                "class": c,
                "class_name": name,
                "statistic": statistic,
                "target": target,
                "value": value,
                "low": low,
                "high": high,
            }

        rows += [
            row("runs", None, len(members)),
            row("pairs", None, len({r["pair"] for r in members})),
            row("mean_best_iou", None, *stats["mean_best_iou"]),
        ]
        for j, t in enumerate(targets):
            rows.append(row("successes", t, int(torch.isfinite(times[:, j]).sum())))
            for statistic in ("success_rate", "ert"):
                value, low, high = stats[statistic]
                rows.append(row(statistic, t, value[j], low[j], high[j]))
    return rows


def _item(x: Tensor, j: int) -> float:
    """Entry j of a statistic `[1]`, `[]`, `[1, T]` or `[T]` (j = 0 for the per-run ones)."""
    return float(x.reshape(-1)[j])


def paired_difference(
    runs_a: list[dict],
    runs_b: list[dict],
    targets: Iterable[float] = DEFAULT_TARGETS,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> list[dict]:
    """Variant b minus variant a on the pairs both ran, resampling those pairs jointly: rows {"statistic",
    "target", "pairs", "a", "b", "difference", "low", "high", "excludes_zero"} for mean_best_iou and, per
    target, success_rate. (ERT differences are left out: with inf on either side they have no interval.)"""
    targets = [float(t) for t in targets]
    shared = set(r["pair"] for r in runs_a) & set(r["pair"] for r in runs_b)
    pairs = [p for p in dict.fromkeys(r["pair"] for r in runs_a) if p in shared]
    if not pairs:
        return []
    weights = _resample_weights(len(pairs), resamples, seed)
    ones = torch.ones(1, len(pairs), dtype=torch.float64)
    stats = {}
    for side, these in (("a", runs_a), ("b", runs_b)):
        sums = _pair_sums([r for r in these if r["pair"] in shared], targets, pairs)
        stats[side] = (_statistics(sums, ones), _statistics(sums, weights))
    rows = []
    for statistic, columns in (("mean_best_iou", [None]), ("success_rate", targets)):
        (a, a_resampled), (b, b_resampled) = ((s[0][statistic], s[1][statistic]) for s in (stats["a"], stats["b"]))
        low, high = percentile_interval(b_resampled - a_resampled, level)  # [] or [T]
        for j, t in enumerate(columns):
            lo, hi = _item(low, j), _item(high, j)
            rows.append(
                {
                    "statistic": statistic,
                    "target": t,
                    "pairs": len(pairs),
                    "a": _item(a, j),
                    "b": _item(b, j),
                    "difference": _item(b - a, j),
                    "low": lo,
                    "high": hi,
                    "excludes_zero": lo > 0 or hi < 0,
                }
            )
    return rows


def paired_differences(
    runs_a: list[dict],
    runs_b: list[dict],
    targets: Iterable[float] = DEFAULT_TARGETS,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> list[dict]:
    """`paired_difference` for all classes, then per class: each row with "class" and "class_name" first."""
    rows = []
    for c, members in _scopes(runs_a):
        others = runs_b if c == ALL else [r for r in runs_b if str(r["class_id"]) == c]
        name = ALL if c == ALL else imagenet_name(int(c))
        rows += [
            {"class": c, "class_name": name} | row
            for row in paired_difference(members, others, targets, resamples=resamples, seed=seed, level=level)
        ]
    return rows


def by_class(rows: Iterable[dict], statistic: str) -> dict[str, dict]:
    """`runtime_stats` rows of one statistic regrouped: {class: {target: (value, low, high)}}."""
    out: dict[str, dict] = defaultdict(dict)
    for row in rows:
        if row["statistic"] == statistic:
            out[row["class"]][row["target"]] = (row["value"], row["low"], row["high"])
    return dict(out)


def format_units(value: float | None) -> str:
    """Units for a page: 3 significant digits, inf as ∞."""
    if value is None:
        return ""
    return "\u221e" if math.isinf(value) else f"{value:.3g}"


def format_interval(value, low, high, digits: int | None = None, *, signed: bool = False) -> str:
    """`12.3 [9.1, ∞]`: a value and its interval for a page (`format_units`, or `digits` fixed decimals, with
    the sign when `signed`); the value alone when there is no interval or it is the value itself."""

    def show(v):
        return format_units(v) if digits is None else f"{v:{'+' if signed else ''}.{digits}f}"

    if low is None or show(low) == show(value) == show(high):
        return show(value)
    return f"{show(value)} [{show(low)}, {show(high)}]"
