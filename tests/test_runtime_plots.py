"""outputs/runtime_plots.py: the ECDF and ERT figures are written, non-empty and drawn from the statistics."""

import math

import numpy as np
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
    erts = {label: by_class(runtime_stats(r, [0.3, 0.5, 0.9], resamples=50), "ert")["all"]
            for label, r in _variants().items()}  # fmt: skip
    assert math.isinf(erts["slow"][0.9][0]) and math.isfinite(erts["fast"][0.5][0])
    path = plot_ert(erts, tmp_path / "ert.png")
    image = Image.open(path)
    assert image.size[0] > 500 and _colours(image) > 20
    # the slow variant's infinite ERT at 0.9 is drawn (a triangle and a note): without it the figure differs
    finite = {"fast": erts["fast"], "slow": {t: e for t, e in erts["slow"].items() if t != 0.9}}
    assert plot_ert(finite, tmp_path / "finite.png").read_bytes() != path.read_bytes()
