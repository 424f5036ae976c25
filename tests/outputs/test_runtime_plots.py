"""outputs/runtime_plots.py: the ECDF and ERT figures are written, non-empty and drawn from the statistics."""

import math
import re

import numpy as np
import pytest
from PIL import Image
from test_runtime_stats import A, B, C, record

from silhouette_lightning.outputs.runtime import by_class, runs, runtime_ecdf, runtime_stats
from silhouette_lightning.outputs.runtime_plots import plot_ecdf, plot_ert


def _colours(image) -> int:
    return len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))


def _variants():
    fast = runs([A, B, C])
    slow = runs([record("s1", 1, 0, [0.1, 0.2, 0.3, 0.5, 0.55]), record("s2", 1, 0, [0.1, 0.1, 0.1, 0.1, 0.1])])
    return {"fast": fast, "slow": slow}


def test_ecdf_figure_has_one_curve_per_variant(tmp_path):
    curves = {label: runtime_ecdf(r, [0.5, 0.9]) for label, r in _variants().items()}
    path = plot_ecdf(curves, tmp_path / "plots" / "ecdf.png", targets=[0.5, 0.9])
    image = Image.open(path)
    assert image.size[0] > 500 and image.size[1] > 300
    assert _colours(image) > 20  # drawn, not a blank canvas
    one = plot_ecdf({"fast": curves["fast"]}, tmp_path / "one.png")
    assert one.read_bytes() != path.read_bytes()


def test_ert_figure_draws_infinite_and_finite_values(tmp_path):
    erts = {
        label: by_class(runtime_stats(r, [0.3, 0.5, 0.9], resamples=50), "ert")["all"]
        for label, r in _variants().items()
    }
    assert math.isinf(erts["slow"][0.9][0]) and math.isfinite(erts["fast"][0.5][0])
    path = plot_ert(erts, tmp_path / "ert.png")
    image = Image.open(path)
    assert image.size[0] > 500 and _colours(image) > 20
    # the slow variant's infinite ERT at 0.9 is drawn (a triangle and a note): without it the figure differs
    finite = {"fast": erts["fast"], "slow": {t: e for t, e in erts["slow"].items() if t != 0.9}}
    assert plot_ert(finite, tmp_path / "finite.png").read_bytes() != path.read_bytes()


def _hand_ert(records, target, start):
    """ERT from the records by a plain loop: units spent to the first best-so-far >= target, else all."""
    spent = successes = 0
    for r in records:
        history = [float(v) for v in r["iou_history"].float()]
        ends = [e for e in (r["ended_at"], r["stopped_at"]) if e >= 0]
        last = min([len(history) - 1, *ends])
        best, hit = 0.0, None
        for t in range(last + 1):
            if r["stopped_at"] >= 0 and t >= r["stopped_at"]:
                break
            if math.isfinite(history[t]):
                best = max(best, history[t])
            if np.float32(best) >= np.float32(target) and hit is None:
                hit = t
        spent += start + (hit if hit is not None else last) + 1
        successes += hit is not None
    return spent / successes if successes else math.inf


def test_compare_and_report_pages_have_the_runtime_section(tmp_path, mask_folder, tiny_generator):
    from conftest import LinkParser, decisive_ensemble, read_csv, run_tiny, tiny_flags

    from silhouette_lightning.bench.compare import runtime_comparison, write_comparison
    from silhouette_lightning.bench.variants import Variant
    from silhouette_lightning.outputs.records import load_records
    from silhouette_lightning.outputs.runtime import FORWARD_COST

    argv = tiny_flags(tmp_path, mask_folder, "--compare", "loss=mse", "loss=bce_bg,lr=0.05")
    root = run_tiny(argv, tiny_generator, decisive_ensemble(), lambda line: None)
    page = (root / "compare.html").read_text()
    for heading in (
        "Runtime to target IoU",
        "ERT per target",
        "ERT per target and class",
        "Success rate per target",
        "Paired differences",
    ):
        assert heading in page, heading
    parser = LinkParser()
    parser.feed(page)
    assert len(parser.images) >= 3  # curves, ECDF, ERT
    for name in ("runtime_ecdf.png", "runtime_ert.png"):
        assert Image.open(root / name).size[0] > 500
    text = re.sub("<[^>]+>", "", page)  # the page's text (headers may hold <wbr> break points)
    assert "ERT @ 0.95" in text and "ERT @ 0.3" not in text  # the default targets
    # the numbers: ERT of all classes as a plain loop over each variant's records computes it (at targets that
    # 4 steps reach)
    variants = [(Variant(label, {}, "flags"), root / label) for label in ("loss=mse", "loss=bce_bg,lr=0.05")]
    write_comparison(root, variants, targets=[0.3, 0.5], resamples=200)
    assert "ERT @ 0.3" in re.sub("<[^>]+>", "", (root / "compare.html").read_text())
    rows = read_csv(root / "compare_runtime.csv")
    start = 32 * FORWARD_COST / 2  # best-of-32 starts (the default) over 2 restarts
    for label in ("loss=mse", "loss=bce_bg,lr=0.05"):
        records = list(load_records(root / label).values())
        for target in ("0.3", "0.5"):
            (row,) = [
                r
                for r in rows
                if r["variant"] == label and r["class"] == "all" and r["statistic"] == "ert" and r["target"] == target
            ]
            assert float(row["value"]) == pytest.approx(_hand_ert(records, float(target), start)), (label, target)
    finite = [float(r["value"]) for r in rows if r["statistic"] == "ert" and math.isfinite(float(r["value"]))]
    assert finite, "no target reached at all: the section would show only infinities"
    differences = read_csv(root / "compare_differences.csv")
    assert {(r["variant"], r["baseline"]) for r in differences} == {("loss=bce_bg,lr=0.05", "loss=mse")}
    assert [r["class"] for r in differences if r["statistic"] == "mean_best_iou"] == ["all", "1", "3"]
    # fixed budgets: at the largest, every trajectory has finished: the mean best IoU of compare.csv
    fixed = runtime_comparison(variants, [0.5], resamples=10)["fixed"]
    compared = {r["variant"]: float(r["mean_best_iou"]) for r in read_csv(root / "compare.csv") if r["class"] == "all"}
    for label, these in fixed.items():
        assert these[-1]["runs"] == 12 and these[-1]["mean_best_iou"] == pytest.approx(compared[label], abs=1e-6)
        assert these[0]["budget"] == start + 1 and these[0]["runs"] == 12  # the first score, after best-of-N
    assert "Mean best IoU at fixed budgets" in page
    # judged by held-out IoU: this benchmark ran without a held-out model, so there is nothing to count
    assert runtime_comparison(variants, judge="heldout", resamples=10)["stats"] == []
    md = (root / "compare.md").read_text()
    assert "## Runtime" in md and "| ERT @ 0.5 |" in md and "Δ mean best IoU" in md
    # each variant's report: the runtime figures and the ERT table
    report = (root / "loss=mse" / "report.html").read_text()
    assert "Runtime to target IoU" in report and "ERT to 0.5" in report
    assert (root / "loss=mse" / "plots" / "runtime_ecdf.png").stat().st_size > 1000


def test_ert_figure_says_when_nothing_is_reached(tmp_path):
    never = {"slow": {0.9: (math.inf, math.inf, math.inf)}}
    path = plot_ert(never, tmp_path / "never.png")
    assert _colours(Image.open(path)) > 20
    reached = plot_ert({"slow": {0.9: (20.0, 10.0, 40.0)}}, tmp_path / "reached.png")
    assert reached.read_bytes() != path.read_bytes()
