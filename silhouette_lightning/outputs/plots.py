"""Paper figures of a run's convergence statistics (PNG, matplotlib without pyplot: no display, no global state).

Every function takes the rows of `convergence.convergence_stats` (or of `convergence.read_convergence`):
- `plot_curves`: best-so-far IoU over the steps, one panel per class, mean line and 10-90% band; several
  labelled sets of rows (variants of a benchmark) are overlaid, one colour each.
- `plot_success`: success rate per class at each threshold, horizontal bars, classes sorted.
- `plot_heatmap`: mean best IoU (best of restarts) per class x subject.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from silhouette_lightning.outputs.convergence import ALL, by_scope

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
PLOT_FILES = {"curves": "convergence_curves.png", "success": "success_rates.png", "heatmap": "class_subject_iou.png"}


def _label(class_id: str, class_name: str, width: int = 24) -> str:
    text = "all classes" if class_id == ALL else f"{class_id} {class_name}"
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _final(curve: list) -> float:
    values = [v for v in curve if v is not None]
    return values[-1] if values else math.nan


def _area(curve: list) -> float:
    """Mean of a curve over its steps: ranks classes by how early and how high they converge."""
    values = [v for v in curve if v is not None]
    return sum(values) / len(values) if values else math.nan


def _thresholds(summary: dict, prefix: str) -> list[float]:
    return sorted(float(k.split("@")[1]) for k in summary if k.startswith(prefix + "@"))


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=fig.dpi, bbox_inches="tight")
    tmp.replace(path)  # atomic: a reader never sees half a PNG
    return path


def plot_curves(
    stats: list[dict] | Mapping[str, list[dict]], path: Path, *, title: str | None = None, columns: int = 6
) -> Path:
    """Best-so-far IoU over optimization steps: a panel for all classes, then one per class (sorted by final
    mean); in each, per variant, the mean over trajectories and the band between the 10% and 90% quantiles.

    `stats`: one run's rows, or `{label: rows}` to overlay variants (one colour each, in the given order).
    """
    variants = {"": stats} if not isinstance(stats, Mapping) else dict(stats)
    scoped = {label: by_scope(rows) for label, rows in variants.items()}
    classes: dict[str, str] = {}
    for scopes in scoped.values():
        classes |= {c: e["class_name"] for (c, s), e in scopes.items() if s == ALL}
    first = next(iter(scoped.values()))

    def order(c: str) -> tuple:
        """All classes first, then the fastest to converge (largest area under the mean curve)."""
        entry = first.get((c, ALL))
        area = _area(entry["curves"]["best_iou_mean"]) if entry else math.nan
        return (c != ALL, -area if not math.isnan(area) else 1, int(c) if c != ALL else -1)

    panels = sorted(classes, key=order)
    cols = min(columns, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(2.7 * cols + 0.6, 2.3 * rows_n + 1.0), dpi=120, layout="constrained")
    axes = fig.subplots(rows_n, cols, sharex=True, sharey=True, squeeze=False)
    handles = {}
    for ax, c in zip(axes.flat, panels, strict=False):
        for i, (label, scopes) in enumerate(scoped.items()):
            entry = scopes.get((c, ALL))
            if entry is None:
                continue
            colour = COLOURS[i % len(COLOURS)]
            curves = entry["curves"]
            steps = list(range(len(curves["best_iou_mean"])))
            (line,) = ax.plot(steps, curves["best_iou_mean"], color=colour, lw=1.8)
            ax.fill_between(steps, curves["best_iou_q10"], curves["best_iou_q90"], color=colour, alpha=0.2, lw=0)
            handles.setdefault(label or "mean best-so-far IoU", line)
        n = first.get((c, ALL), {}).get("summary", {}).get("trajectories")
        ax.set_title(
            _label(c, classes[c]) + (f"  (n={n})" if n is not None and len(scoped) == 1 else ""),
            fontsize=9,
            fontweight="bold" if c == ALL else "normal",
        )
        ax.set_ylim(-0.02, 1.02)  # a curve at 0 or 1 stays visible off the frame
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    for col in range(cols):  # step labels under the lowest panel of each column (the last row may be short)
        last_row = (len(panels) - 1) // cols
        lowest = axes[last_row if last_row * cols + col < len(panels) else last_row - 1, col]
        lowest.set_xlabel("optimization step")
        lowest.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("best-so-far IoU")
    from matplotlib.patches import Patch

    legend = [*handles.values(), Patch(color="grey", alpha=0.3)]
    names = [*handles.keys(), "10\u201390% of trajectories"]
    fig.legend(legend, names, loc="outside lower center", ncols=min(len(names), 5), frameon=False)
    fig.suptitle(title or "Best-so-far IoU over the optimization, per ImageNet class", fontsize=12)
    return _save(fig, path)


def plot_success(stats: list[dict], path: Path, *, kind: str = "pair", title: str | None = None) -> Path:
    """Success rate per class at each threshold (horizontal bars), classes sorted by their rates.

    `kind`: "pair" (a (source, class) succeeds if its best restart reaches the threshold) or "trajectory"."""
    prefix = "pair_success_rate" if kind == "pair" else "success_rate"
    scopes = {c: e for (c, s), e in by_scope(stats).items() if s == ALL and c != ALL}
    thresholds = _thresholds(next(iter(scopes.values()))["summary"], prefix) if scopes else []
    rates = {c: [e["summary"][f"{prefix}@{t:g}"] for t in thresholds] for c, e in scopes.items()}
    classes = sorted(rates, key=lambda c: (rates[c], -int(c)))  # bars go bottom-up: the best class on top
    height = 0.8 / max(len(thresholds), 1)
    fig = Figure(figsize=(8, 1.4 + 0.32 * len(classes) * max(1, len(thresholds) / 2)), dpi=120, layout="constrained")
    ax = fig.subplots()
    shades = ["#9ecae1", "#4292c6", "#08519c", "#08306b", "#041a3a"]  # darker: a higher bar
    for i, t in enumerate(thresholds):
        ys = [y + (i - (len(thresholds) - 1) / 2) * height for y in range(len(classes))]
        ax.barh(
            ys, [rates[c][i] for c in classes], height=height, color=shades[i % len(shades)], label=f"IoU \u2265 {t:g}"
        )
    ax.set_yticks(range(len(classes)), [_label(c, scopes[c]["class_name"], 32) for c in classes], fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(classes) - 0.4)
    ax.set_xlabel("success rate" + (" (best of restarts per source)" if kind == "pair" else " (per trajectory)"))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=9, title="threshold", title_fontsize=9)
    ax.set_title(title or "Share of silhouettes each class fits, by IoU threshold", fontsize=12)
    return _save(fig, path)


def plot_heatmap(stats: list[dict], path: Path, *, title: str | None = None) -> Path:
    """Mean best IoU (best of restarts, averaged over sources) of each class x subject; blank: not run."""
    scopes = by_scope(stats)
    subjects = sorted({s for (_, s) in scopes if s != ALL})
    overall = {c: _final(e["curves"]["pair_best_iou_mean"]) for (c, s), e in scopes.items() if s == ALL and c != ALL}
    classes = sorted(overall, key=lambda c: (-overall[c], int(c)))
    names = {c: scopes[(c, ALL)]["class_name"] for c in classes}
    grid = [
        [_final(scopes[(c, s)]["curves"]["pair_best_iou_mean"]) if (c, s) in scopes else math.nan for s in subjects]
        for c in classes
    ]
    fig = Figure(figsize=(3.2 + 0.9 * len(subjects), 1.6 + 0.3 * len(classes)), dpi=120, layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["viridis"].with_extremes(bad="#eeeeee")  # not run: light grey
    image = ax.imshow(grid, vmin=0, vmax=1, cmap=cmap, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(subjects)), subjects, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), [_label(c, names[c], 32) for c in classes], fontsize=9)
    ax.set_xlabel("source subject (VOC class)")
    ax.set_ylabel("ImageNet class")
    if len(classes) * len(subjects) <= 600:
        for y, row in enumerate(grid):
            for x, value in enumerate(row):
                if not math.isnan(value):
                    ax.text(
                        x,
                        y,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="black" if value > 0.6 else "white",
                    )
    fig.colorbar(image, ax=ax, label="mean best IoU (best of restarts)", shrink=0.8)
    ax.set_title(title or "Mean best IoU per class and subject", fontsize=12)
    return _save(fig, path)


def write_plots(run_dir: Path, stats: list[dict]) -> dict[str, Path]:
    """The three figures of one run in `run_dir/plots/`; returns {kind: path} (empty without statistics)."""
    if not stats:
        return {}
    folder = Path(run_dir) / "plots"
    return {
        "curves": plot_curves(stats, folder / PLOT_FILES["curves"]),
        "success": plot_success(stats, folder / PLOT_FILES["success"]),
        "heatmap": plot_heatmap(stats, folder / PLOT_FILES["heatmap"]),
    }
