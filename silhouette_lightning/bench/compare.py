"""A benchmark's comparison, built from each variant's own convergence outputs: `compare.csv` / `compare.md` (one
row per variant and class), `compare_curves.png` (best-so-far IoU over steps, one colour per variant) and
`compare.html` (one self-contained page); in recovery mode also `recovery.csv` / `.json` / `_curves.png`."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import torch
import yaml

from silhouette_lightning.core.files import atomic_write_bytes, atomic_write_text
from silhouette_lightning.outputs.records import write_csv

ALL = "all"


def _settings(run_dir: Path) -> dict:
    """A variant's resolved settings (`config.yaml`)."""
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}


def _read_convergence(run_dir: Path) -> dict:
    """A variant's `convergence.json` (written at the end of its run; made now from its records if missing)."""
    path = Path(run_dir) / "convergence.json"
    if not path.exists():
        from silhouette_lightning.outputs.convergence import DEFAULT_THRESHOLDS, write_convergence
        from silhouette_lightning.outputs.records import load_records

        thresholds = _settings(run_dir).get("thresholds", DEFAULT_THRESHOLDS)
        write_convergence(run_dir, load_records(run_dir).values(), thresholds)
    if not path.exists():
        return {"thresholds": [], "scopes": []}
    return json.loads(path.read_text())


def comparison_rows(variants: list[tuple], documents: list[dict]) -> tuple[list[dict], list[str]]:
    """One row per variant and class (and `all` classes first), from each variant's convergence document; the
    numbers are copied, never recomputed. Returns (rows, columns)."""
    thresholds = sorted({t for d in documents for t in d["thresholds"]})
    columns = ["variant", "class", "class_name", "trajectories", "pairs", "mean_best_iou", "pair_mean_best_iou"]
    for prefix in ("success_rate", "pair_success_rate", "steps_to", "pair_steps_to"):
        suffix = "_median" if "steps" in prefix else ""
        columns += [f"{prefix}@{t:g}{suffix}" for t in thresholds]
    columns += ["seconds_mean", "seconds_total"]
    rows = []
    for (variant, _), document in zip(variants, documents, strict=True):
        for scope in document["scopes"]:
            if scope["subject"] != ALL:
                continue
            summary, curves = scope["summary"], scope["curves"]
            row = {"variant": variant.label, "class": scope["class"], "class_name": scope["class_name"]}
            row |= {k: summary.get(k) for k in columns if k in summary}
            row["mean_best_iou"] = curves["best_iou_mean"][-1]
            row["pair_mean_best_iou"] = curves["pair_best_iou_mean"][-1]
            rows.append(row)
    return rows, columns


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict], thresholds: list[float]) -> str:
    """The readable subset of the comparison: per variant and class, IoU, success and speed."""
    head = ["variant", "class", "pairs", "mean best IoU", "best-of-restarts IoU"]
    head += [f"success ≥{t:g}" for t in thresholds] + [f"median steps to {t:g}" for t in thresholds]
    head += ["s / trajectory"]
    keys = ["variant", None, "pairs", "mean_best_iou", "pair_mean_best_iou"]
    keys += [f"success_rate@{t:g}" for t in thresholds] + [f"steps_to@{t:g}_median" for t in thresholds]
    keys += ["seconds_mean"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(" --- " if i < 2 else " ---: " for i in range(len(head))) + "|",
    ]
    for row in rows:
        name = "all classes" if row["class"] == ALL else f"{row['class']} {row['class_name']}"
        cells = [name if k is None else _cell(row.get(k)) for k in keys]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def curves_figure(root: Path, variants: list[tuple]) -> Path:
    """`compare_curves.png`: best-so-far IoU (mean, 10-90% band) over steps, one colour per variant; panels: all
    classes, then each class (plots.plot_curves with the variants overlaid)."""
    from silhouette_lightning.outputs.convergence import read_convergence
    from silhouette_lightning.outputs.plots import plot_curves

    stats = {variant.label: read_convergence(run_dir) for variant, run_dir in variants}
    return plot_curves(stats, Path(root) / "compare_curves.png", title="Best-so-far IoU per variant and class")


# ----------------------------------------------------------------------------------------------------- recovery


def recovery_rows(variants: list[tuple]) -> list[dict]:
    """Per variant, transform and start kind (`z_s`, `random`): trajectories, mean IoU at step 0, mean final
    best IoU, mean distance of the start and of the found latent to `z_s`, and the mean IoU and best-so-far IoU
    curves over steps. From each variant's records and plan."""
    from silhouette_lightning.bench.recovery import START_KINDS, case_latents, latent_distance, start_kind
    from silhouette_lightning.inputs.plan import read_plan
    from silhouette_lightning.inputs.trajectories import initial_latents
    from silhouette_lightning.outputs.convergence import best_so_far
    from silhouette_lightning.outputs.records import load_records

    rows = []
    for variant, run_dir in variants:
        plan = read_plan(run_dir)
        truncation = float(_settings(run_dir)["truncation"])
        known = case_latents(plan)
        cases = {c["key"]: c for c in plan.extra["cases"]}
        groups: dict[tuple, list[dict]] = {}
        for record in load_records(run_dir).values():
            case = cases[record["source"]]
            groups.setdefault((case["shift"], case["rotation"], start_kind(record["restart"])), []).append(record)
        order = [(c["shift"], c["rotation"]) for c in plan.extra["cases"]]
        for (shift, rotation, kind), records in sorted(
            groups.items(), key=lambda g: (order.index(g[0][:2]), START_KINDS.index(g[0][2]))
        ):
            iou = torch.stack([r["iou_history"].double() for r in records])  # [N, steps + 1]
            best = torch.stack([best_so_far(r["iou_history"], int(r["stopped_at"])) for r in records])
            z_s = [known[r["source"]] for r in records]
            starts = [z if r["restart"] == 0 else initial_latents([r["seed"]], len(z), truncation)[0]
                      for r, z in zip(records, z_s, strict=True)]  # fmt: skip
            rows.append({
                "variant": variant.label, "shift": shift, "rotation": rotation, "start": kind,
                "trajectories": len(records), "iou_step0_mean": float(iou[:, 0].mean()),
                "best_iou_mean": float(best[:, -1].mean()),
                "start_distance_mean": sum(latent_distance(s, z) for s, z in zip(starts, z_s, strict=True)) / len(records),
                "found_distance_mean": sum(latent_distance(r["best_z"], z) for r, z in zip(records, z_s, strict=True))
                / len(records),
                "iou_curve": iou.mean(0).tolist(), "best_iou_curve": best.mean(0).tolist(),
            })  # fmt: skip
    return rows


RECOVERY_COLUMNS = ["variant", "shift", "rotation", "start", "trajectories", "iou_step0_mean", "best_iou_mean",
                    "start_distance_mean", "found_distance_mean"]  # fmt: skip


def recovery_figure(rows: list[dict]) -> bytes:
    """PNG: mean IoU over steps per transform (colour), solid from `z_s`, dashed from random starts; one panel
    per variant."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no display, no global state

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    transforms = list(dict.fromkeys((r["shift"], r["rotation"]) for r in rows))
    fig = Figure(figsize=(4.6 * len(variants) + 2.2, 3.4), layout="constrained")
    axes = fig.subplots(1, len(variants), squeeze=False, sharey=True)
    colours = colormaps["tab10"]
    for ax, variant in zip(axes[0], variants, strict=True):
        for row in (r for r in rows if r["variant"] == variant):
            i = transforms.index((row["shift"], row["rotation"]))
            label = f"shift {row['shift']}, rot {row['rotation']:g}° ({row['start']})"
            ax.plot(row["iou_curve"], color=colours(i % 10), lw=1.8, ls="-" if row["start"] == "z_s" else "--",
                    label=label)  # fmt: skip
        ax.set_title(variant, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("IoU (mean over trajectories)")
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Recovery: IoU over steps per transform; solid from z_s, dashed from random starts", fontsize=11)
    return _figure_png(fig)


# --------------------------------------------------------------------------------------------------------- page


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _html_table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def compare_page(root: Path, variants: list[tuple], rows: list[dict], columns: list[str], curves_png: bytes,
                 recovery: tuple[list[dict], bytes] | None) -> str:  # fmt: skip
    """`compare.html`: plots embedded, tables, and links to each variant's own files (only files that exist)."""
    links = []
    for variant, run_dir in variants:
        targets = [name for name in ("report.html", "results.csv", "convergence.csv", "contact_sheet.png", "config.yaml")
                   if (Path(run_dir) / name).exists()]  # fmt: skip
        parts = [f'<a href="{html.escape(Path(run_dir).name)}/{name}">{name}</a>' for name in targets]
        links.append(
            f"<li><b>{html.escape(variant.label)}</b> ({html.escape(variant.source)}): {', '.join(parts)}</li>"
        )
    sections = [
        f"<h1>Benchmark {html.escape(root.name)}</h1>",
        f"<p>{len(variants)} variant(s), the same sources, classes and seeds. Numbers are copied from each variant's "
        "<code>convergence.json</code>; success and steps are per trajectory (best-so-far IoU), "
        "<code>pair_</code> columns per (source, class) with its best restart.</p>",
        "<h2>Variants</h2><ul>" + "".join(links) + "</ul>",
        "<h2>Best-so-far IoU over steps</h2>"
        + (_img(curves_png, "best-so-far IoU over steps per variant") if curves_png else "<p>no results yet</p>"),
        "<h2>Per variant and class</h2>" + _html_table(rows, columns),
    ]
    if recovery is not None:
        recovery_rows_, png = recovery
        sections += ["<h2>Recovery: per transform</h2>" + _img(png, "recovery IoU over steps per transform"),
                     _html_table(recovery_rows_, RECOVERY_COLUMNS)]  # fmt: skip
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}img{max-width:100%}"
             ".wide{overflow-x:auto}")  # fmt: skip
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Benchmark {html.escape(root.name)}</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n")  # fmt: skip


def write_comparison(root: Path, variants: list[tuple], *, mode: str = "swap") -> dict[str, Path]:
    """Write every comparison file into the benchmark folder `root`; `variants`: (Variant, run folder) pairs."""
    root = Path(root)
    documents = [_read_convergence(run_dir) for _, run_dir in variants]
    rows, columns = comparison_rows(variants, documents)
    thresholds = sorted({t for d in documents for t in d["thresholds"]})
    written = {"csv": write_csv(root / "compare.csv", columns, rows)}
    written["md"] = atomic_write_text(root / "compare.md", markdown_table(rows, thresholds))
    curves = b""
    if rows:
        written["png"] = curves_figure(root, variants)
        curves = written["png"].read_bytes()
    recovery = None
    if mode == "recovery":
        rec = recovery_rows(variants)
        write_csv(root / "recovery.csv", RECOVERY_COLUMNS, rec)
        atomic_write_text(root / "recovery.json", json.dumps(rec, indent=1) + "\n")
        png = recovery_figure(rec)
        written["recovery_png"] = atomic_write_bytes(root / "recovery_curves.png", png)
        recovery = (rec, png)
    written["html"] = atomic_write_text(
        root / "compare.html", compare_page(root, variants, rows, columns, curves, recovery)
    )
    return written
