"""The notebook API takes the CLI's values: generator names or folders, one class, the same `out` twice; and
latents record the generator that was really used."""

import pytest
import torch
from conftest import draw_mask

from silhouette_lightning import swap
from silhouette_lightning.core.errors import UsageError
from silhouette_lightning.outputs.records import regenerate

TINY = {"restarts": 2, "steps": 2, "seg_size": 32, "accelerator": "cpu", "save_images": "none", "heldout": "none"}


def test_generator_folder_single_class_and_the_same_out_twice(tmp_path, generator_dir, ensemble, monkeypatch):
    path = draw_mask(tmp_path / "dog.png", (8, 10, 40, 40))
    monkeypatch.chdir(generator_dir.parent)  # a relative folder is stored resolved
    first = swap(
        path,
        "goldfish",
        subject="dog",
        mask=True,
        generator=generator_dir.name,
        ensemble=ensemble,
        out=tmp_path / "runs",
        **TINY,
    )
    assert [r.class_id for r in first] == [1]
    assert first[0].latent["generator"] == str(generator_dir.resolve())
    monkeypatch.chdir(tmp_path)
    again = swap(
        path,
        "goldfish",
        subject="dog",
        mask=True,
        generator=str(generator_dir),
        ensemble=ensemble,
        out=tmp_path / "runs",
        **TINY,
    )
    assert [(r.class_id, r.iou) for r in again] == [(r.class_id, r.iou) for r in first]
    assert torch.equal(again[0].image, first[0].image)
    # the latent reloads its generator from anywhere
    assert torch.equal(regenerate(first[0].latent), first[0].image)
    one = swap(
        path,
        1,
        subject="dog",
        mask=True,
        generator=str(generator_dir),
        ensemble=ensemble,
        out=tmp_path / "runs",
        **TINY,
    )
    assert [r.class_id for r in one] == [1]


def test_a_loaded_generator_object_is_not_recorded_as_a_published_one(tmp_path, tiny_generator, ensemble):
    path = draw_mask(tmp_path / "dog.png", (8, 10, 40, 40))
    (result,) = swap(
        path, [1], subject="dog", mask=True, generator=tiny_generator, ensemble=ensemble, out=tmp_path / "runs", **TINY
    )
    assert result.latent["generator"] == "unknown"
    with pytest.raises(UsageError, match="which one is unknown"):
        regenerate(result.latent)
    assert torch.equal(regenerate(result.latent, tiny_generator), result.image)
