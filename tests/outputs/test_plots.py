"""Convergence plots: they are written as real PNGs, for one run and for overlaid variants."""

import numpy as np
from PIL import Image
from test_convergence import synthetic_records

from silhouette_lightning.outputs.convergence import convergence_stats
from silhouette_lightning.outputs.plots import plot_curves, write_plots


def _is_picture(path, min_size=300):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= min_size
        return np.asarray(image.convert("L"), dtype=float).std() > 10  # not a blank page


def test_write_plots_makes_three_pictures(tmp_path):
    rows = convergence_stats(synthetic_records(), [0.5, 0.75, 0.9])
    paths = write_plots(tmp_path, rows)
    assert set(paths) == {"curves", "success", "heatmap"}
    for path in paths.values():
        assert path.parent == tmp_path / "plots"
        assert _is_picture(path)


def test_curves_overlay_variants(tmp_path):
    a = convergence_stats(synthetic_records(0))
    b = convergence_stats(synthetic_records(1))
    single = plot_curves(a, tmp_path / "a.png")
    both = plot_curves({"variant a": a, "variant b": b}, tmp_path / "ab.png")
    assert _is_picture(both)
    red = np.array([0xD6, 0x27, 0x28])  # the second variant's colour

    def red_share(path):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=int)
        return (np.abs(pixels - red).sum(-1) < 30).mean()

    assert red_share(single) == 0
    assert red_share(both) > 0.001, "the second variant is not drawn"


def test_no_statistics_no_plots(tmp_path):
    assert write_plots(tmp_path, []) == {}
    assert not (tmp_path / "plots").exists()
