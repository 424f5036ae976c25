"""Figures of the runtime statistics (runtime.py), PNG, matplotlib without pyplot:
- `plot_ecdf`: the runtime ECDF, one curve per variant, log budget axis;
- `plot_ert`: ERT per target, one series per variant with its bootstrap interval, log ERT axis; an infinite ERT
  (no run reached the target) is drawn as a hollow triangle on the top edge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from silhouette_lightning.outputs.plots import COLOURS, _save

BUDGET_LABEL = "budget (latent steps, units)"
ECDF_FILE, ERT_FILE = "runtime_ecdf.png", "runtime_ert.png"


def _plain_log_ticks(axis) -> None:
    """A log axis labelled 1, 2, 5, 10, 20, 50, ... in plain numbers (not 2 x 10^1), other ticks unlabelled."""
    axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_ecdf(
    curves: Mapping[str, list[dict]], path: Path, *, targets: list[float] | None = None, title: str | None = None
) -> Path:
    """The runtime ECDF: per variant (`{label: runtime.runtime_ecdf rows}`, drawn in the given order), the
    fraction of (trajectory, target) pairs reached within each budget, as a step curve. `targets`: named in
    the title."""
    fig = Figure(figsize=(7.2, 4.4), dpi=120, layout="constrained")
    ax = fig.subplots()
    top = 1.0
    for i, (label, rows) in enumerate(curves.items()):
        budgets = [r["budget"] for r in rows]
        fractions = [0.0 if math.isnan(r["fraction"]) else r["fraction"] for r in rows]
        if not budgets:
            continue
        top = max(top, budgets[-1])
        ax.step(budgets, fractions, where="post", color=COLOURS[i % len(COLOURS)], lw=2, label=label or "all runs")
    ax.set_xscale("log")
    ax.set_xlim(1, top)
    _plain_log_ticks(ax.xaxis)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(BUDGET_LABEL)
    ax.set_ylabel("fraction of (trajectory, target) pairs reached")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=9, frameon=True)
    named = f"targets IoU {', '.join(f'{t:g}' for t in targets)}" if targets else ""
    ax.set_title(title or f"Runtime ECDF{': ' + named if named else ''}", fontsize=11)
    return _save(fig, path)


def plot_ert(erts: Mapping[str, Mapping[float, tuple]], path: Path, *, title: str | None = None) -> Path:
    """ERT per target IoU: per variant (`{label: {target: (ert, low, high)}}`, e.g. `runtime.by_class(rows,
    "ert")["all"]`), the point with its bootstrap interval, on a log axis. An infinite ERT is a hollow
    triangle on the top edge; an interval without an upper end runs to the top edge, dashed."""
    finite = [v for series in erts.values() for e in series.values() for v in e if v is not None and math.isfinite(v)]
    low_edge = min(finite, default=1.0) / 1.6
    top = max(finite, default=10.0) * 2.5
    targets = sorted({t for series in erts.values() for t in series})
    fig = Figure(figsize=(7.2, 4.4), dpi=120, layout="constrained")
    ax = fig.subplots()
    width = 0.24 / max(len(erts), 1)  # variants side by side, close to their target
    any_inf = False
    for i, (label, series) in enumerate(erts.items()):
        colour = COLOURS[i % len(COLOURS)]
        shift = (i - (len(erts) - 1) / 2) * width
        xs, ys = [], []
        for x, t in enumerate(targets):
            if t not in series:
                continue
            value, low, high = series[t]
            if math.isinf(value):
                any_inf = True
                ax.plot([x + shift], [top], marker="^", ms=9, mfc="none", mec=colour, mew=1.8, clip_on=False)
                continue
            xs.append(x + shift)
            ys.append(value)
            if low is not None and high is not None:
                ax.plot(
                    [x + shift] * 2, [low, min(high, top)], color=colour, lw=1.6, ls="--" if math.isinf(high) else "-"
                )
        ax.plot(xs, ys, color=colour, marker="o", lw=1.2, label=label or "all runs")
    ax.set_yscale("log")
    ax.set_ylim(low_edge, top)
    _plain_log_ticks(ax.yaxis)
    ax.set_xticks(range(len(targets)), [f"{t:g}" for t in targets])
    if not finite:  # nothing to scale the axis by
        ax.yaxis.set_major_formatter(NullFormatter())
        ax.text(
            0.5,
            0.5,
            "no run reached any of these targets",
            ha="center",
            va="center",
            fontsize=11,
            color="#555",
            transform=ax.transAxes,
        )
    note = "\n\u25b3 on the top edge: no run reached the target (ERT = \u221e)" if any_inf else ""
    ax.set_xlabel("target IoU" + note)
    ax.set_ylabel("ERT (latent steps, units)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=9)
    ax.set_title(title or "Expected running time to each target (95% bootstrap interval)", fontsize=11)
    return _save(fig, path)
