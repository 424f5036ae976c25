"""`report.html`: one self-contained page per run (plots and contact sheet embedded, tables, links to outputs)."""

from __future__ import annotations

import base64
import csv
import html
import math
from pathlib import Path
from urllib.parse import quote

import yaml

from silhouette_lightning.core.files import atomic_write_text
from silhouette_lightning.outputs.convergence import ALL, by_scope, read_convergence
from silhouette_lightning.outputs.plots import PLOT_FILES

CAPTIONS = {
    "curves": "Best-so-far IoU over the optimization steps: mean over trajectories, band from the 10% to the 90% "
    "quantile. First panel: all classes; then classes from the fastest to converge.",
    "success": "Share of (source, class) pairs whose best restart reaches each IoU threshold, per class.",
    "heatmap": "Mean over sources of the best IoU of the best restart, per class and source subject.",
}
SETTINGS = ["data", "generator", "segmenters", "ensemble", "loss", "restarts", "steps", "lr", "truncation",
            "seg_size", "seed", "thresholds", "precision", "devices"]  # fmt: skip
STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; } .muted { color: #777; } code { background: #f3f3f3; }
.scroll { max-height: 40em; overflow: auto; }
"""


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(path: Path, alt: str, caption: str) -> str:
    return (f'<figure><img src="{_data_uri(path)}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip


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
        final = {k: [v for v in e["curves"].get(k, []) if v is not None] for k in ("best_iou_mean",
                                                                                  "pair_best_iou_mean")}  # fmt: skip
        row = {"class": "all classes" if c == ALL else f"{c} {e['class_name']}",
               "trajectories": _number(s.get("trajectories")), "pairs": _number(s.get("pairs")),
               "mean best IoU": _number(final["best_iou_mean"][-1] if final["best_iou_mean"] else None),
               "mean best IoU of best restarts": _number(final["pair_best_iou_mean"][-1]
                                                         if final["pair_best_iou_mean"] else None),
               "seconds / trajectory": _number(s.get("seconds_mean"), 2)}  # fmt: skip
        for t in thresholds:
            row[f"pairs \u2265 {t:g}"] = _number(s.get(f"pair_success_rate@{t:g}"))
            row[f"median steps to {t:g}"] = _number(s.get(f"pair_steps_to@{t:g}_median"), 1)
        rows.append(row)
    return columns, rows


def build_report(run_dir: Path, stats: list[dict] | None = None) -> str:
    """The HTML of a run's report, from the files in `run_dir` (and `stats`, else its convergence.csv)."""
    run_dir = Path(run_dir)
    if stats is None:
        stats = read_convergence(run_dir) if (run_dir / "convergence.csv").exists() else []
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    results = _read_csv(run_dir / "results.csv")
    classes = _read_csv(run_dir / "classes.csv")
    ok = [r for r in results if r.get("status") == "ok"]
    parts = [f"<h1>Silhouette swap: {html.escape(run_dir.name)}</h1>"]

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
    summary = {"(source, class) pairs": len(ok), "failed pairs": len(failed), "skipped sources": len(skipped),
               "sources": len({r["source"] for r in ok}), "classes": len({r["class_id"] for r in ok}),
               "mean best IoU": _number(mean_iou)}  # fmt: skip
    heldout = [float(r["heldout_iou"]) for r in ok if r.get("heldout_iou")]
    if heldout:
        summary["mean held-out IoU"] = _number(sum(heldout) / len(heldout))
    parts.append(_table(list(summary), [summary], text_columns=set()))

    by_scope_stats = by_scope(stats) if stats else {}
    if stats:
        parts.append("<h2>Convergence</h2>")
        overall = by_scope_stats.get((ALL, ALL), {}).get("summary", {})
        if "seconds_total" in overall:
            parts.append(f'<p class="muted">{overall["trajectories"]} trajectories, '
                         f"{overall['seconds_total']:.1f} s of optimization in all.</p>")  # fmt: skip
        for kind in ("curves", "success", "heatmap"):
            path = run_dir / "plots" / PLOT_FILES[kind]
            if path.exists():
                parts.append(_figure(path, kind, CAPTIONS[kind]))
        columns, rows = convergence_table(stats)
        parts.append(_table(columns, rows, text_columns={"class"}))
        parts.append('<p class="muted">Every statistic per class, subject and step: '
                     f"{_link(run_dir, 'convergence.csv')}.</p>")  # fmt: skip

    if classes:
        parts.append("<h2>Per class</h2>")
        parts.append(_table(list(classes[0]), classes, text_columns={"class_name"}))

    sheets = sorted(run_dir.glob("contact_sheet*.png"))  # one file, or pages contact_sheet_001.png, ...
    if sheets:
        parts.append("<h2>Contact sheet</h2>")
    for sheet in sheets:
        parts.append(_figure(sheet, "contact sheet", "Rows: sources (photo or mask, target silhouette; skipped ones "
                             "with their reason); columns: classes; each cell the best image with its IoU."))  # fmt: skip

    if results:
        parts.append("<h2>Every (source, class)</h2>")
        columns = ["source", "subject", "class_id", "class_name", "best_iou", "best_restart", "best_step", "status",
                   "output"]  # fmt: skip
        if any(r.get("heldout_iou") for r in results):  # scored by a segmenter the search never saw
            columns.insert(5, "heldout_iou")
        linked = [r | {"output": _link(run_dir, r.get("output_dir", ""), "folder") if r.get("output_dir") else ""}
                  for r in results]  # fmt: skip
        table = _table(columns, linked, text_columns={"source", "subject", "class_name", "status", "output"},
                       raw={"output"})  # fmt: skip
        parts.append(f'<div class="scroll">{table}</div>')

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(run_dir.name)}: silhouette swap report</title><style>{STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")  # fmt: skip


def write_report(run_dir: Path, stats: list[dict] | None = None) -> Path:
    """Write `run_dir/report.html` (see `build_report`)."""
    return atomic_write_text(Path(run_dir) / "report.html", build_report(run_dir, stats))
