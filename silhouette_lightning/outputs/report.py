"""`report.html`: one self-contained page per run (plots and contact sheet embedded, tables, links to outputs)."""

from __future__ import annotations

import base64
import csv
import html
import math
from pathlib import Path
from urllib.parse import quote

import yaml

from silhouette_lightning.core.classes import imagenet_name
from silhouette_lightning.core.files import atomic_write_text
from silhouette_lightning.outputs.convergence import ALL, by_scope, read_convergence
from silhouette_lightning.outputs.plots import PLOT_FILES
from silhouette_lightning.outputs.runtime_plots import ECDF_FILE, ERT_FILE

CAPTIONS = {
    "curves": "Best-so-far IoU over the optimization steps: mean over trajectories, band from the 10% to the 90% "
    "quantile. First panel: all classes; then classes from the fastest to converge.",
    "success": "Share of (source, class) pairs whose best restart reaches each IoU threshold, per class.",
    "heatmap": "Mean over sources of the best IoU of the best restart, per class and source subject.",
    "ecdf": "Runtime ECDF: the fraction of (trajectory, target IoU) pairs reached within each budget, in latent "
    "steps (each trajectory's share of best-of-N candidate scoring included).",
    "ert": "Expected running time to each target IoU (units spent by all trajectories over the number that reach "
    "it) with its 95% bootstrap interval over (source, class) pairs; a triangle on the top edge: none reaches it.",
}
RUNTIME_CLASSES = 6  # the runtime figures show each class too when a run has at most this many
SETTINGS = [
    "data",
    "generator",
    "segmenters",
    "ensemble",
    "loss",
    "restarts",
    "steps",
    "lr",
    "truncation",
    "seg_size",
    "seed",
    "thresholds",
    "precision",
    "devices",
]
STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.warning { background: #fff3cd; border: 1px solid #e0c36c; padding: 0.5em 0.8em; border-radius: 4px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; } .muted { color: #777; } code { background: #f3f3f3; }
.scroll { max-height: 40em; overflow: auto; } .wide { overflow-x: auto; max-width: 100%; }
.ci { font-size: 0.8em; color: #666; white-space: nowrap; }
"""


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(path: Path, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{_data_uri(path)}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _link(run_dir: Path, relative: str, text: str | None = None) -> str:
    """A relative link to a file or folder of the run, or plain text when it does not exist."""
    text = html.escape(text if text is not None else relative)
    if not relative or not (run_dir / relative).exists():
        return text
    href = quote(relative.replace("\\", "/")) + ("/" if (run_dir / relative).is_dir() else "")
    return f'<a href="{href}">{text}</a>'


def _cell(value, text_columns: set[str], column: str) -> str:
    cls = ' class="text"' if column in text_columns else ""
    return f"<td{cls}>{value}</td>"


def _table(columns: list[str], rows: list[dict], *, text_columns: set[str], raw: set[str] = frozenset()) -> str:
    """An HTML table; cells are escaped except the columns in `raw` (already HTML, e.g. links)."""
    head = "".join(f"<th{' class=text' if c in text_columns else ''}>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(
            _cell(row.get(c, "") if c in raw else html.escape(str(row.get(c, ""))), text_columns, c) for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _number(value, digits: int = 3) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "\u2013"
    return str(value) if isinstance(value, int) else f"{float(value):.{digits}f}"


def convergence_table(stats: list[dict]) -> tuple[list[str], list[dict]]:
    """Per class (first row: all classes): trajectories, mean best IoU (per trajectory, and of the best restart
    of each pair), the share of pairs whose best restart reaches each threshold and their median steps to it,
    seconds per trajectory."""
    scopes = by_scope(stats)  # all classes first, then by class id
    entries = [(c, e) for (c, s), e in scopes.items() if s == ALL]
    summary = scopes[(ALL, ALL)]["summary"] if (ALL, ALL) in scopes else {}
    thresholds = sorted(float(k.split("@")[1]) for k in summary if k.startswith("pair_success_rate@"))
    columns = ["class", "trajectories", "pairs", "mean best IoU", "mean best IoU of best restarts"]
    columns += [f"pairs \u2265 {t:g}" for t in thresholds] + [f"median steps to {t:g}" for t in thresholds]
    columns += ["seconds / trajectory"]
    rows = []
    for c, e in entries:
        s = e["summary"]
        final = {
            k: [v for v in e["curves"].get(k, []) if v is not None] for k in ("best_iou_mean", "pair_best_iou_mean")
        }
        row = {
            "class": "all classes" if c == ALL else f"{c} {e['class_name']}",
            "trajectories": _number(s.get("trajectories")),
            "pairs": _number(s.get("pairs")),
            "mean best IoU": _number(final["best_iou_mean"][-1] if final["best_iou_mean"] else None),
            "mean best IoU of best restarts": _number(
                final["pair_best_iou_mean"][-1] if final["pair_best_iou_mean"] else None
            ),
            "seconds / trajectory": _number(s.get("seconds_mean"), 2),
        }
        for t in thresholds:
            row[f"pairs \u2265 {t:g}"] = _number(s.get(f"pair_success_rate@{t:g}"))
            row[f"median steps to {t:g}"] = _number(s.get(f"pair_steps_to@{t:g}_median"), 1)
        rows.append(row)
    return columns, rows


def runtime_runs(run_dir: Path) -> list[dict]:
    """The run's trajectories for the runtime statistics (runtime.runs, optimized IoU), with their share of
    best-of-N candidate scoring from config.yaml's `starts` and `restarts` at runtime.FORWARD_COST."""
    from silhouette_lightning.outputs import runtime
    from silhouette_lightning.outputs.records import load_records

    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    config = config or {}
    start = runtime.start_units(int(config.get("starts") or 0), int(config.get("restarts") or 1))
    return runtime.runs(load_records(run_dir).values(), start=start)


def write_runtime_plots(run_dir: Path, runs: list[dict]) -> tuple[list[dict], dict[str, Path]]:
    """The runtime statistics of a run (runtime.runtime_stats rows) and its figures in `run_dir/plots/`:
    the runtime ECDF and ERT per target, for all classes and, with few classes, each class."""
    from silhouette_lightning.outputs import runtime
    from silhouette_lightning.outputs.runtime_plots import plot_ecdf, plot_ert

    if not runs:
        return [], {}
    rows = runtime.runtime_stats(runs)
    classes = sorted({r["class_id"] for r in runs})
    grid = runtime.budget_grid(runs)
    ecdf = {"all classes": runtime.runtime_ecdf(runs, budgets=grid)}
    erts = runtime.by_class(rows, "ert")
    ert = {"all classes": erts[ALL]}
    if 1 < len(classes) <= RUNTIME_CLASSES:
        for c in classes:
            label = f"{c} {imagenet_name(c)}"
            ecdf[label] = runtime.runtime_ecdf([r for r in runs if r["class_id"] == c], budgets=grid)
            ert[label] = erts[str(c)]
    folder = Path(run_dir) / "plots"
    return rows, {
        "ecdf": plot_ecdf(ecdf, folder / ECDF_FILE, targets=list(runtime.DEFAULT_TARGETS)),
        "ert": plot_ert(ert, folder / ERT_FILE),
    }


def runtime_table(rows: list[dict]) -> tuple[list[str], list[dict]]:
    """Per class (first row: all classes): trajectories, then ERT to each target, value [95% interval], in units
    of latent steps; the cells are HTML (the interval on its own line)."""
    from silhouette_lightning.outputs.runtime import by_class, format_interval

    erts, counts = by_class(rows, "ert"), by_class(rows, "runs")
    names = {r["class"]: r["class_name"] for r in rows}
    targets = sorted({t for per_target in erts.values() for t in per_target})
    columns = ["class", "trajectories"] + [f"ERT to {t:g}" for t in targets]
    table = []
    for c, per_target in erts.items():
        row = {
            "class": html.escape("all classes" if c == ALL else f"{c} {names[c]}"),
            "trajectories": str(counts[c][None][0]),
        }
        for t in targets:
            value, _, interval = format_interval(*per_target[t]).partition(" [")
            row[f"ERT to {t:g}"] = html.escape(value) + (
                f'<br><span class="ci">[{html.escape(interval)}</span>' if interval else ""
            )
        table.append(row)
    return columns, table


def build_report(run_dir: Path, stats: list[dict] | None = None, runtime_rows: list[dict] | None = None) -> str:
    """The HTML of a run's report, from the files in `run_dir` (and `stats`, else its convergence.csv;
    `runtime_rows`, else none: `write_report` computes them and the runtime figures)."""
    run_dir = Path(run_dir)
    if stats is None:
        stats = read_convergence(run_dir) if (run_dir / "convergence.csv").exists() else []
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    results = _read_csv(run_dir / "results.csv")
    classes = _read_csv(run_dir / "classes.csv")
    ok = [r for r in results if r.get("status") == "ok"]
    parts = [f"<h1>Silhouette swap: {html.escape(run_dir.name)}</h1>"]
    if config.get("pretrained") is False:
        parts.append(
            '<p class="warning"><strong>Random segmenter weights</strong> (<code>pretrained: false</code>): these '
            "numbers test the tool, they are not results of the method.</p>"
        )

    settings = {k: config[k] for k in SETTINGS if k in config}
    if settings:
        items = ", ".join(f"{html.escape(k)} <code>{html.escape(str(v))}</code>" for k, v in settings.items())
        parts.append(f'<p class="muted">{items}</p>')
    files = ["results.csv", "classes.csv", "convergence.csv", "convergence.json", "config.yaml", "tensorboard"]
    parts.append("<p>Files: " + " \u00b7 ".join(_link(run_dir, f) for f in files if (run_dir / f).exists()) + "</p>")

    parts.append("<h2>Results</h2>")
    failed = [r for r in results if r.get("status", "").startswith("failed")]
    skipped = [r for r in results if r.get("status", "").startswith("skipped")]
    mean_iou = sum(float(r["best_iou"]) for r in ok) / len(ok) if ok else None
    summary = {
        "(source, class) pairs": len(ok),
        "failed pairs": len(failed),
        "skipped sources": len(skipped),
        "sources": len({r["source"] for r in ok}),
        "classes": len({r["class_id"] for r in ok}),
        "mean best IoU": _number(mean_iou),
    }
    heldout = [float(r["heldout_iou"]) for r in ok if r.get("heldout_iou")]
    if heldout:
        summary["mean held-out IoU"] = _number(sum(heldout) / len(heldout))
    parts.append(_table(list(summary), [summary], text_columns=set()))

    by_scope_stats = by_scope(stats) if stats else {}
    if stats:
        parts.append("<h2>Convergence</h2>")
        overall = by_scope_stats.get((ALL, ALL), {}).get("summary", {})
        if "seconds_total" in overall:
            parts.append(
                f'<p class="muted">{overall["trajectories"]} trajectories, '
                f"{overall['seconds_total']:.1f} s of optimization in all.</p>"
            )
        for kind in ("curves", "success", "heatmap"):
            path = run_dir / "plots" / PLOT_FILES[kind]
            if path.exists():
                parts.append(_figure(path, kind, CAPTIONS[kind]))
        columns, rows = convergence_table(stats)
        parts.append(_table(columns, rows, text_columns={"class"}))
        parts.append(
            f'<p class="muted">Every statistic per class, subject and step: {_link(run_dir, "convergence.csv")}.</p>'
        )

    if runtime_rows:
        from silhouette_lightning.outputs.runtime import FORWARD_COST, RESAMPLES

        parts.append("<h2>Runtime to target IoU</h2>")
        parts.append(
            f'<p class="muted">Units: latent steps (a forward and backward pass of the scoring path); a '
            "trajectory that ran t steps spent t + 1, plus its share of best-of-N candidate scoring "
            f"(N \u00d7 {FORWARD_COST:.2g} / R). ERT: units spent by all trajectories, up to success or all "
            "of them, over the number that reach the target (\u221e: none). Intervals: 95% bootstrap over "
            f"(source, class) pairs, {RESAMPLES} resamples.</p>"
        )
        for kind in ("ecdf", "ert"):
            path = run_dir / "plots" / (ECDF_FILE if kind == "ecdf" else ERT_FILE)
            if path.exists():
                parts.append(_figure(path, kind, CAPTIONS[kind]))
        columns, rows = runtime_table(runtime_rows)
        table = _table(columns, rows, text_columns={"class"}, raw=set(columns))
        parts.append(f'<div class="wide scroll">{table}</div>')

    if classes:
        parts.append("<h2>Per class</h2>")
        parts.append(_table(list(classes[0]), classes, text_columns={"class_name"}))

    sheets = sorted(run_dir.glob("contact_sheet*.png"))  # one file, or pages contact_sheet_001.png, ...
    if sheets:
        parts.append("<h2>Contact sheet</h2>")
    for sheet in sheets:
        parts.append(
            _figure(
                sheet,
                "contact sheet",
                "Rows: sources (photo or mask, target silhouette; skipped ones "
                "with their reason); columns: classes; each cell the best image with its IoU.",
            )
        )

    if results:
        parts.append("<h2>Every (source, class)</h2>")
        columns = [
            "source",
            "subject",
            "class_id",
            "class_name",
            "best_iou",
            "best_restart",
            "best_step",
            "status",
            "output",
        ]
        if any(r.get("heldout_iou") for r in results):  # scored by a segmenter the search never saw
            columns.insert(5, "heldout_iou")
        linked = [
            r | {"output": _link(run_dir, r.get("output_dir", ""), "folder") if r.get("output_dir") else ""}
            for r in results
        ]
        table = _table(
            columns, linked, text_columns={"source", "subject", "class_name", "status", "output"}, raw={"output"}
        )
        parts.append(f'<div class="scroll">{table}</div>')

    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(run_dir.name)}: silhouette swap report</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )


def write_report(run_dir: Path, stats: list[dict] | None = None) -> Path:
    """Write `run_dir/report.html` (see `build_report`), and the runtime figures it shows (`write_runtime_plots`)."""
    runtime_rows, _ = write_runtime_plots(run_dir, runtime_runs(run_dir))
    return atomic_write_text(Path(run_dir) / "report.html", build_report(run_dir, stats, runtime_rows))


def rebuild_pages(run_dir: Path) -> Path:
    """Rebuild a finished (or stopped) run's statistics and pages from its folder alone, as its end did:
    convergence.csv/.json from its records (held-out IoU from results.csv), the plots, the runtime figures and
    report.html. Nothing is optimized; the tables and pictures of the swaps are left as they are."""
    from silhouette_lightning.outputs.convergence import DEFAULT_THRESHOLDS, write_convergence
    from silhouette_lightning.outputs.plots import write_plots
    from silhouette_lightning.outputs.records import load_records, read_results
    from silhouette_lightning.outputs.runtime import heldout_values

    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    thresholds = (config or {}).get("thresholds") or DEFAULT_THRESHOLDS
    heldout = heldout_values(read_results(run_dir)) if (run_dir / "results.csv").exists() else {}
    rows = write_convergence(run_dir, load_records(run_dir).values(), thresholds, heldout)
    write_plots(run_dir, rows)
    return write_report(run_dir, rows)
