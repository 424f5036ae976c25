"""The real-size networks (random weights: no downloads here) through a whole run: shapes, memory, speed
paths that tiny models cannot show."""

import pytest
from conftest import draw_mask, read_csv

from silhouette_lightning.config.settings import build_config
from silhouette_lightning.models.biggan import build_random_generator
from silhouette_lightning.models.segmenters import load_ensemble
from silhouette_lightning.run.job import run


@pytest.mark.slow
def test_biggan_deep_128_with_the_paper_ensemble(tmp_path):
    draw_mask(tmp_path / "data" / "dog" / "a.png", (8, 10, 40, 40))
    config = build_config(
        {
            "data": str(tmp_path / "data"),
            "masks": True,
            "classes": "207",
            "restarts": 2,
            "steps": 2,
            "batch_size": 2,
            "seg_size": 128,
            "out": str(tmp_path / "runs"),
            "name": "real",
            "accelerator": "cpu",
            "frames": 2,
            "pretrained": False,
        }
    )
    generator = build_random_generator("biggan-deep-128")
    ensemble = load_ensemble(config.segmenters, size=config.seg_size, pretrained=False)
    run_dir = run(config, generator=generator, ensemble=ensemble, enable_progress_bar=False)
    (row,) = read_csv(run_dir / "results.csv")
    assert row["status"] == "ok" and row["class_name"] == "golden retriever"
    from PIL import Image

    assert Image.open(run_dir / row["output_dir"] / "best.png").size == (128, 128)
