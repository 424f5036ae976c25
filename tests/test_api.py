"""The notebook API: one image in, best swaps out."""

import torch
from conftest import ColorSegmenter, draw_mask

from silhouette_lightning import swap
from silhouette_lightning.models.segmenters import SegmenterEnsemble


def test_swap_one_mask(tmp_path, tiny_generator, ensemble):
    path = draw_mask(tmp_path / "dog.png", (8, 10, 40, 40))
    heldout = SegmenterEnsemble([ColorSegmenter(2)], [1.0], 32)
    results = swap(
        path,
        [1, "tiger shark"],
        subject="dog",
        mask=True,
        restarts=2,
        steps=3,
        seg_size=32,
        accelerator="cpu",
        generator=tiny_generator,
        ensemble=ensemble,
        heldout_model=heldout,
        out=tmp_path / "runs",
    )
    assert [r.class_id for r in results] == [1, 3]
    for r in results:
        assert r.image.shape == (3, 32, 32) and r.mask.shape == (32, 32)
        assert 0 <= r.iou <= 1 and 0 <= r.heldout_iou <= 1
        assert r.latent["z"].shape == (8,) and r.latent["class_id"] == r.class_id
        assert torch.isfinite(r.image).all()
