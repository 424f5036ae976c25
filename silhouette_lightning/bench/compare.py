"""A benchmark's comparison, built from each variant's own convergence outputs: `compare.csv` / `compare.md` (one
row per variant and class), `compare_curves.png` (best-so-far IoU over steps, one colour per variant) and
`compare.html` (one self-contained page); in recovery mode also `recovery.csv` / `.json` / `_curves.png`.
The runtime section (outputs/runtime.py, from each variant's trajectory records): ERT and success rate per target
IoU with bootstrap intervals, the mean best IoU at fixed budgets, paired per-class differences against the first
variant (`compare_runtime.csv`, `compare_differences.csv`), the runtime ECDF and ERT figures (`runtime_ecdf.png`,
`runtime_ert.png`), in compare.md and compare.html."""

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


# Settings that say where a variant is written or how it is shown, not what it computes
_NOT_COMPARED = {
    "out",
    "name",
    "save_images",
    "image_every",
    "log_every",
    "blend",
    "verbose",
    "data",
    "default_classes",
}


def differing_settings(variants: list[tuple]) -> tuple[list[str], list[dict]]:
    """The effective settings (each variant's config.yaml) whose values are not the same for every variant:
    (the keys, one row per variant). A comparison's variants must differ in what their labels say, and only in
    that: this shows it (e.g. a bundled file's `starts: 0` against the default best-of-32)."""
    settings = [
        (variant.label, _settings(run_dir)) for variant, run_dir in variants if Path(run_dir, "config.yaml").exists()
    ]
    keys = sorted({k for _, s in settings for k in s} - _NOT_COMPARED)
    differ = [k for k in keys if len({repr(s.get(k)) for _, s in settings}) > 1]
    return differ, [{"variant": label, **{k: s.get(k) for k in differ}} for label, s in settings]


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


# ------------------------------------------------------------------------------------------------------ runtime


def variant_runs(run_dir: Path, *, judge: str = "optimized", forward_cost: float | None = None) -> list[dict]:
    """A variant's runs for the runtime statistics (outputs/runtime.py), from its records, with its own share of
    best-of-N candidate scoring (`starts` and `restarts` of its config.yaml; `forward_cost`: runtime.FORWARD_COST
    by default). `judge="heldout"` needs the held-out IoUs of its results.csv (see runtime.runs)."""
    from silhouette_lightning.outputs import runtime
    from silhouette_lightning.outputs.records import load_records, read_results

    settings = _settings(run_dir)
    cost = runtime.FORWARD_COST if forward_cost is None else forward_cost
    start = runtime.start_units(int(settings.get("starts") or 0), int(settings.get("restarts") or 1), cost)
    heldout = None
    if judge == runtime.HELDOUT:
        heldout = runtime.heldout_values(read_results(run_dir)) if (Path(run_dir) / "results.csv").exists() else {}
    return runtime.runs(load_records(run_dir).values(), judge=judge, heldout=heldout, start=start)


RUNTIME_COLUMNS = ["variant", "class", "class_name", "statistic", "target", "value", "low", "high"]
DIFFERENCE_COLUMNS = [
    "variant",
    "baseline",
    "class",
    "class_name",
    "statistic",
    "target",
    "pairs",
    "a",
    "b",
    "difference",
    "low",
    "high",
    "excludes_zero",
]


def runtime_comparison(
    variants: list[tuple], targets=None, *, judge: str = "optimized", resamples: int | None = None, seed: int = 0
) -> dict:
    """The runtime statistics of every variant: {"targets", "judge", "stats": rows (runtime.runtime_stats with a
    "variant" column), "ecdf": {label: runtime_ecdf rows on one budget grid for all}, "ert": {label: {target:
    (ert, low, high)}} of all classes, "differences": rows (runtime.paired_differences of each variant against the
    first, with "variant" and "baseline"), "fixed": {label: runtime.fixed_budget rows at budgets shared by all}}."""
    from silhouette_lightning.outputs import runtime

    targets = [float(t) for t in (runtime.DEFAULT_TARGETS if targets is None else targets)]
    resamples = runtime.RESAMPLES if resamples is None else resamples
    every = {variant.label: variant_runs(run_dir, judge=judge) for variant, run_dir in variants}
    every = {label: runs for label, runs in every.items() if runs}
    out = {"targets": targets, "judge": judge, "stats": [], "ecdf": {}, "ert": {}, "differences": [], "fixed": {}}
    out["runs_of"] = "trajectories"
    if not every:
        return out
    everything = [r for runs in every.values() for r in runs]
    if any(r["curve"] is None for r in everything):  # held-out IoU per pair only (records of earlier versions)
        out["runs_of"] = "pairs"
    grid, budgets = runtime.budget_grid(everything), runtime.fixed_budgets(everything)
    for label, runs in every.items():
        rows = runtime.runtime_stats(runs, targets, resamples=resamples, seed=seed)
        out["stats"] += [{"variant": label} | row for row in rows]
        out["ecdf"][label] = runtime.runtime_ecdf(runs, targets, grid)
        out["ert"][label] = runtime.by_class(rows, "ert").get(ALL, {})
        out["fixed"][label] = runtime.fixed_budget(runs, budgets)
    (baseline, first), *others = every.items()
    for label, runs in others:
        rows = runtime.paired_differences(first, runs, targets, resamples=resamples, seed=seed)
        out["differences"] += [{"variant": label, "baseline": baseline} | row for row in rows]
    return out


def runtime_tables(runtime_: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The page tables of `runtime_comparison`, as (header, rows of cells): "ert" and "success" (per variant, all
    classes, one column per target, value [95% interval]), "ert_by_class" (the same ERT per variant and class),
    "differences" (per variant against the first, per
    class: mean best IoU and success rates, b - a [interval], `*` where the interval excludes zero) and "fixed"
    (per variant, the mean best-so-far IoU after each of a few budgets; – before any score)."""
    from silhouette_lightning.outputs.runtime import format_interval

    targets = runtime_.get("targets", [])
    stats = runtime_["stats"]
    labels = list(dict.fromkeys(r["variant"] for r in stats))
    tables = {}
    for name, statistic, digits in (("ert", "ert", None), ("success", "success_rate", 2)):
        header = ["variant", runtime_["runs_of"]]
        header += [f"{'ERT' if name == 'ert' else 'success'} @ {t:g}" for t in targets]
        rows = []
        for label in labels:
            mine = {(r["statistic"], r["target"]): r for r in stats if r["variant"] == label and r["class"] == ALL}
            cells = [label, str(mine[("runs", None)]["value"])]
            for t in targets:
                r = mine[(statistic, t)]
                cells.append(format_interval(r["value"], r["low"], r["high"], digits))
            rows.append(cells)
        tables[name] = (header, rows)
    header = ["variant \u2212 baseline", "class", "pairs", "\u0394 mean best IoU"] + [
        f"\u0394 success @ {t:g}" for t in targets
    ]
    grouped: dict[tuple, dict] = {}
    for r in runtime_["differences"]:
        grouped.setdefault((r["variant"], r["baseline"], r["class"], r["class_name"]), {})[
            r["statistic"], r["target"]
        ] = r
    rows = []
    for (label, baseline, c, class_name), cells_of in grouped.items():
        cells = [
            f"{label} \u2212 {baseline}",
            "all classes" if c == ALL else f"{c} {class_name}",
            str(next(iter(cells_of.values()))["pairs"]),
        ]
        for key in [("mean_best_iou", None)] + [("success_rate", t) for t in targets]:
            r = cells_of[key]
            cells.append(
                format_interval(r["difference"], r["low"], r["high"], 3 if key[1] is None else 2, signed=True)
                + (" *" if r["excludes_zero"] else "")
            )
        rows.append(cells)
    tables["differences"] = (header, rows)
    header = ["variant", "class", runtime_["runs_of"]]
    header += [f"ERT @ {t:g}" for t in targets]
    rows = []
    for label in labels:
        mine = {(r["class"], r["statistic"], r["target"]): r for r in stats if r["variant"] == label}
        names = {r["class"]: r["class_name"] for r in stats if r["variant"] == label}
        for c in (c for c in names if c != ALL):
            rows.append(
                [label, f"{c} {names[c]}", str(mine[(c, "runs", None)]["value"])]
                + [format_interval(*(mine[(c, "ert", t)][k] for k in ("value", "low", "high"))) for t in targets]
            )
    tables["ert_by_class"] = (header, rows)
    fixed = runtime_.get("fixed", {})
    budgets = [r["budget"] for r in next(iter(fixed.values()), [])]
    header = ["variant"] + [f"best IoU @ {b:.3g} units" for b in budgets]
    rows = [
        [label] + ["\u2013" if r["mean_best_iou"] is None else f"{r['mean_best_iou']:.3f}" for r in these]
        for label, these in fixed.items()
    ]
    tables["fixed"] = (header, rows)
    return tables


RUNTIME_NOTE = (
    "Runtime in units of one latent step (a forward and backward pass of the scoring path); each trajectory also "
    "pays its share of best-of-N candidate scoring (N candidates \u00d7 forward cost {cost:.2g} / R restarts). "
    "ERT: units spent by all trajectories (up to success, or all their units) over the number that reach the "
    "target; \u221e: none does. Intervals: 95% percentile bootstrap over (source, class) pairs, {resamples} resamples. "
    "Differences: variant minus baseline on the same pairs, resampled jointly; * marks an interval that excludes zero. "
    "Judged by the {judge} IoU{how}."
)
JUDGED = {
    ("optimized", "trajectories"): " at every step",
    ("heldout", "trajectories"): " of each trajectory's best so far, scored at its frame steps only (not every step:"
    " a runtime counts from the first frame step at or past the target)",
    ("heldout", "pairs"): " of each pair's final answer only (records without per-step held-out scores): a pair is"
    " one run that spends all its restarts' units",
}


def runtime_note(runtime_: dict, resamples: int) -> str:
    """The note above the runtime tables: units, intervals, and how the judge's IoU was known."""
    from silhouette_lightning.outputs.runtime import FORWARD_COST

    how = JUDGED.get((runtime_["judge"], runtime_.get("runs_of", "trajectories")), "")
    return RUNTIME_NOTE.format(cost=FORWARD_COST, resamples=resamples, judge=runtime_["judge"], how=how)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " if i < 1 else " ---: " for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def runtime_markdown(runtime_: dict, *, resamples: int) -> str:
    """The runtime section of compare.md: ERT and success per target, paired differences."""

    if not runtime_["stats"]:
        return ""
    tables = runtime_tables(runtime_)
    parts = [
        "\n## Runtime\n\n",
        runtime_note(runtime_, resamples) + "\n",
        "\n### ERT per target (units)\n\n" + _markdown(*tables["ert"]),
        "\n### Success rate per target\n\n" + _markdown(*tables["success"]),
        "\n### Mean best IoU at fixed budgets\n\n" + _markdown(*tables["fixed"]),
    ]
    if tables["differences"][1]:
        parts.append("\n### Paired differences against the first variant\n\n" + _markdown(*tables["differences"]))
    return "".join(parts)


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
            starts = [
                z if r["restart"] == 0 else initial_latents([r["seed"]], len(z), truncation)[0]
                for r, z in zip(records, z_s, strict=True)
            ]
            rows.append(
                {
                    "variant": variant.label,
                    "shift": shift,
                    "rotation": rotation,
                    "start": kind,
                    "trajectories": len(records),
                    "iou_step0_mean": float(iou[:, 0].mean()),
                    "best_iou_mean": float(best[:, -1].mean()),
                    "start_distance_mean": sum(latent_distance(s, z) for s, z in zip(starts, z_s, strict=True))
                    / len(records),
                    "found_distance_mean": sum(
                        latent_distance(r["best_z"], z) for r, z in zip(records, z_s, strict=True)
                    )
                    / len(records),
                    "iou_curve": iou.mean(0).tolist(),
                    "best_iou_curve": best.mean(0).tolist(),
                }
            )
    return rows


RECOVERY_COLUMNS = [
    "variant",
    "shift",
    "rotation",
    "start",
    "trajectories",
    "iou_step0_mean",
    "best_iou_mean",
    "start_distance_mean",
    "found_distance_mean",
]


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
            ax.plot(
                row["iou_curve"], color=colours(i % 10), lw=1.8, ls="-" if row["start"] == "z_s" else "--", label=label
            )
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


def _head(column: str) -> str:
    """A header cell that may wrap after `_` and `@` (`pair_success_rate@0.75`): wide tables fit the page."""
    return html.escape(column).replace("_", "_<wbr>").replace("@", "@<wbr>")


def _html_table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{_head(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


KEY_COLUMNS = ("variant", "class", "class_name")  # repeated in each part of a split table
PART_COLUMNS = 9  # value columns per part: the parts fit a 1000-px page without sideways scrolling


def _split_tables(rows: list[dict], columns: list[str]) -> str:
    """A wide table as several narrower ones, each with the key columns first, so nothing scrolls sideways."""
    keys = [c for c in columns if c in KEY_COLUMNS]
    values = [c for c in columns if c not in KEY_COLUMNS]
    parts = [values[i : i + PART_COLUMNS] for i in range(0, len(values), PART_COLUMNS)] or [[]]
    return "".join(_html_table(rows, keys + part) for part in parts)


def _interval_cell(text: str) -> str:
    """A `value [low, high]` cell on two lines, the interval smaller; bold where it ends with `*` (excludes zero)."""
    value, _, interval = text.partition(" [")
    marked = interval.endswith(" *")
    interval = interval.removesuffix(" *")
    inner = html.escape(value) + (f"<br><span class='ci'>[{html.escape(interval)}</span>" if interval else "")
    return f"<td class='sig'>{inner}</td>" if marked else f"<td>{inner}</td>"


def _cells_table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """An HTML table of `runtime_tables` cells: the first `text_columns` left-aligned, the others intervals."""
    head = "".join(
        f"<th class='text'>{_head(c)}</th>" if i < text_columns else f"<th>{_head(c)}</th>"
        for i, c in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='text'>{html.escape(c)}</td>" if i < text_columns else _interval_cell(c)
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def runtime_html(runtime_: dict, figures: dict[str, bytes], *, resamples: int) -> str:
    """The runtime section of compare.html: note, ERT and success tables, ECDF and ERT figures, differences."""

    if not runtime_["stats"]:
        return ""
    tables = runtime_tables(runtime_)
    note = runtime_note(runtime_, resamples)
    parts = [
        "<h2>Runtime to target IoU</h2>",
        f"<p class='note'>{html.escape(note)}</p>",
        "<h3>ERT per target (units, all classes)</h3>",
        _cells_table(*tables["ert"]),
        "<h3>Success rate per target (all classes)</h3>",
        _cells_table(*tables["success"]),
        "<h3>Mean best IoU at fixed budgets (all classes)</h3>",
        _cells_table(*tables["fixed"]),
    ]
    parts.append(
        f"<details><summary>ERT per target and class ({len(tables['ert_by_class'][1])} rows)</summary>"
        f"{_cells_table(*tables['ert_by_class'], text_columns=2)}</details>"
    )
    if "ecdf" in figures:
        parts.append(_img(figures["ecdf"], "runtime ECDF per variant"))
    if "ert" in figures:
        parts.append(_img(figures["ert"], "ERT per target per variant"))
    if tables["differences"][1]:
        parts += [
            "<h3>Paired differences against the first variant</h3>",
            "<p class='note'>Per class, on the (source, class) pairs both variants ran: variant minus "
            "baseline, 95% interval below; bold: the interval excludes zero.</p>",
            _cells_table(*tables["differences"], text_columns=2),
        ]
    return "".join(parts)


def _differences_html(variants: list[tuple]) -> str:
    keys, rows = differing_settings(variants)
    if not keys:
        return "<p>The variants' settings are the same except for their labels.</p>" if len(variants) > 1 else ""
    return "<h2>Settings that differ between the variants</h2>" + _html_table(rows, ["variant", *keys])


def differences_markdown(variants: list[tuple]) -> str:
    """compare.md's table of the settings that differ between the variants (empty when none do)."""
    keys, rows = differing_settings(variants)
    if not keys:
        return ""
    head = "| variant | " + " | ".join(keys) + " |\n| --- |" + " --- |" * len(keys) + "\n"
    body = "".join("| " + " | ".join(str(r[k]) for k in ["variant", *keys]) + " |\n" for r in rows)
    return "\n## Settings that differ between the variants\n\n" + head + body


def compare_page(
    root: Path,
    variants: list[tuple],
    rows: list[dict],
    columns: list[str],
    curves_png: bytes,
    recovery: tuple[list[dict], bytes] | None,
    runtime_section: str = "",
) -> str:
    """`compare.html`: plots embedded, tables, and links to each variant's own files (only files that exist);
    `runtime_section`: the HTML of `runtime_html`."""
    links = []
    for variant, run_dir in variants:
        targets = [
            name
            for name in ("report.html", "results.csv", "convergence.csv", "contact_sheet.png", "config.yaml")
            if (Path(run_dir) / name).exists()
        ]
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
        _differences_html(variants),
        "<h2>Best-so-far IoU over steps</h2>"
        + (_img(curves_png, "best-so-far IoU over steps per variant") if curves_png else "<p>no results yet</p>"),
        "<h2>Per variant and class</h2>" + _split_tables(rows, columns),
        runtime_section,
    ]
    if recovery is not None:
        recovery_rows_, png = recovery
        sections += [
            "<h2>Recovery: per transform</h2>" + _img(png, "recovery IoU over steps per transform"),
            _html_table(recovery_rows_, RECOVERY_COLUMNS),
        ]
    # Wide tables stay inside the page: headers wrap (after _ and @), and a table still wider than the page
    # scrolls in its own box, at most 80% of the window high so that its scroll bar is in view, header on top.
    style = (
        "body{font-family:sans-serif;margin:2em auto;padding:0 1em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}"
        "th{background:#eee;position:sticky;top:0;min-width:4em}"
        "td.text,th.text{text-align:left}td.text{white-space:nowrap}td.sig{font-weight:bold;background:#fff4d6}"
        ".ci{font-size:11px;color:#555;white-space:nowrap;font-weight:normal}"
        "img{max-width:100%}.wide{overflow:auto;max-width:100%;max-height:80vh;margin:0.5em 0}"
        ".note{color:#444;max-width:60em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Benchmark {html.escape(root.name)}</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n"
    )


def write_comparison(
    root: Path,
    variants: list[tuple],
    *,
    mode: str = "swap",
    judge: str = "optimized",
    targets=None,
    resamples: int | None = None,
) -> dict[str, Path]:
    """Write every comparison file into the benchmark folder `root`; `variants`: (Variant, run folder) pairs.
    The runtime section (`runtime_comparison` at `targets`, runtime.DEFAULT_TARGETS by default, judged by
    `judge`, with `resamples` bootstrap resamples) adds
    `compare_runtime.csv`, `compare_differences.csv`, `runtime_ecdf.png` and `runtime_ert.png`."""
    from silhouette_lightning.outputs import runtime
    from silhouette_lightning.outputs.runtime_plots import ECDF_FILE, ERT_FILE, plot_ecdf, plot_ert

    root = Path(root)
    documents = [_read_convergence(run_dir) for _, run_dir in variants]
    rows, columns = comparison_rows(variants, documents)
    thresholds = sorted({t for d in documents for t in d["thresholds"]})
    written = {"csv": write_csv(root / "compare.csv", columns, rows)}
    resamples = runtime.RESAMPLES if resamples is None else resamples
    runtime_ = runtime_comparison(variants, targets, judge=judge, resamples=resamples) if rows else {"stats": []}
    figures = {}
    if runtime_["stats"]:
        written["runtime_csv"] = write_csv(root / "compare_runtime.csv", RUNTIME_COLUMNS, runtime_["stats"])
        written["differences_csv"] = write_csv(
            root / "compare_differences.csv", DIFFERENCE_COLUMNS, runtime_["differences"]
        )
        written["ecdf_png"] = plot_ecdf(runtime_["ecdf"], root / ECDF_FILE, targets=runtime_["targets"])
        written["ert_png"] = plot_ert(runtime_["ert"], root / ERT_FILE)
        figures = {"ecdf": written["ecdf_png"].read_bytes(), "ert": written["ert_png"].read_bytes()}
    markdown = (
        markdown_table(rows, thresholds)
        + differences_markdown(variants)
        + (runtime_markdown(runtime_, resamples=resamples) if runtime_["stats"] else "")
    )
    written["md"] = atomic_write_text(root / "compare.md", markdown)
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
        root / "compare.html",
        compare_page(
            root,
            variants,
            rows,
            columns,
            curves,
            recovery,
            runtime_html(runtime_, figures, resamples=resamples) if runtime_["stats"] else "",
        ),
    )
    return written
