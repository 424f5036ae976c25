"""Non-square photos (`--fit pad|crop|stretch`): the silhouette the generator must match keeps the photo's
proportions, and the composite puts the result back on the pixels it came from, unstretched."""

import pytest
import torch
from conftest import read_csv
from PIL import Image, ImageDraw
from torch import nn

from silhouette_lightning.inputs.framing import FITS, from_square, square_box, to_square
from silhouette_lightning.inputs.target_maps import mask_target, segment_photo
from silhouette_lightning.models.frozen import freeze
from silhouette_lightning.models.segmenters import SegmenterEnsemble
from silhouette_lightning.outputs.pictures import composite

DOG = 12


def circle_photo(height: int = 120, width: int = 160, radius: int = 30) -> torch.Tensor:
    """A 4:3 photo: a white disc (the subject) centred on black, `[3, H, W]`."""
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    disc = ((y - height / 2) ** 2 + (x - width / 2) ** 2 <= radius**2).float()
    return disc.expand(3, -1, -1).clone()


def box_ratio(mask: torch.Tensor) -> float:
    """Width / height of the bounding box of a `[H, W]` mask."""
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    return (cols.max() - cols.min() + 1).item() / (rows.max() - rows.min() + 1).item()


class BrightIsDog(nn.Module):
    """A stand-in segmenter that sees a dog wherever the image is bright: its map is the photo's silhouette."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # normalized [B, 3, H, W] -> [B, 21, H, W]
        logits = torch.zeros(x.shape[0], 21, *x.shape[2:])
        logits[:, DOG] = 10 * x[:, 0]  # white: +22, black: -21, mid-gray padding: +0.6 (below 0.5 after softmax)
        return logits


@pytest.fixture
def bright_ensemble():
    return freeze(SegmenterEnsemble([BrightIsDog()], [1.0], size=64))


@pytest.mark.parametrize("fit, expected", [("pad", 1.0), ("crop", 1.0), ("stretch", 0.75)])
def test_target_map_of_a_4x3_circle_is_round_unless_stretched(bright_ensemble, fit, expected):
    photo = circle_photo()
    target, subject = segment_photo(bright_ensemble, photo, mode="probs", subject="dog", fit=fit)
    assert subject == "dog" and target.shape == (64, 64)
    assert box_ratio(target > 0.5) == pytest.approx(expected, abs=0.05)
    mask = mask_target(photo[0], 64, fit=fit)
    assert box_ratio(mask > 0.5) == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("fit", FITS)
def test_composite_puts_the_subject_back_where_it_was_and_round(bright_ensemble, fit):
    """The generator's best possible answer (its mask equal to the target map) lands on the photo's disc, round."""
    photo = circle_photo()
    target, _ = segment_photo(bright_ensemble, photo, mode="probs", subject="dog", fit=fit)
    generated = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 64, 64)  # a red "subject" everywhere
    background = torch.zeros(3, 120, 160)
    mixed = composite(background, generated, target, feather=0.0, fit=fit)
    assert mixed.shape == (3, 120, 160)
    pasted = mixed[0] > 0.5  # [H, W]
    disc = photo[0] > 0.5
    assert box_ratio(pasted) == pytest.approx(1.0, abs=0.05), "the subject came out stretched"
    assert (pasted & disc).sum() / (pasted | disc).sum() > 0.93, "the subject moved"


def test_stretched_square_would_stretch_the_subject():
    """What the default avoids: a round generated subject, composited with `stretch`, comes out 4:3."""
    round_subject = circle_photo(64, 64, 20)[0]
    for fit, expected in (("pad", 1.0), ("crop", 1.0), ("stretch", 4 / 3)):
        mixed = composite(torch.zeros(3, 120, 160), torch.ones(3, 64, 64), round_subject, feather=0.0, fit=fit)
        assert box_ratio(mixed[0] > 0.5) == pytest.approx(expected, abs=0.05), fit


@pytest.mark.parametrize("height, width", [(30, 40), (40, 30), (31, 40), (40, 40), (7, 100)])
@pytest.mark.parametrize("fit", ["pad", "crop"])
def test_to_square_and_back_is_the_identity_on_the_photo(height, width, fit):
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(height * width))
    square = to_square(image, fit, fill=0.5)
    top, left, side = square_box(height, width, fit)
    assert square.shape == (3, side, side)
    back = from_square(square, height, width, fit)
    if fit == "pad":
        assert torch.equal(back, image)
        assert torch.equal(from_square(to_square(image[0], fit), height, width, fit), image[0])  # masks too
    else:  # crop: the centred square comes back exactly, the rest has no result
        assert torch.equal(
            back[:, top : top + side, left : left + side], image[:, top : top + side, left : left + side]
        )
        outside = torch.ones(height, width, dtype=torch.bool)
        outside[top : top + side, left : left + side] = False
        assert (back[:, outside] == 0).all()


def test_fit_is_a_result_setting_checked_before_the_run(tmp_path):
    from silhouette_lightning.config.settings import SwapConfig, build_config
    from silhouette_lightning.core.errors import UsageError
    from silhouette_lightning.run.job import prepare_run_dir

    assert build_config({}).fit == "pad" and "fit" not in SwapConfig.RUNTIME_ONLY
    settings = {"out": str(tmp_path), "name": "run"}
    prepare_run_dir(build_config(settings | {"fit": "crop"}))
    with pytest.raises(UsageError, match="fit: 'crop' -> 'pad'"):  # resuming with another fit is refused
        prepare_run_dir(build_config(settings))
    with pytest.raises(UsageError, match="--fit"):
        build_config({"fit": "squash"})


def test_a_4x3_photo_run_writes_a_composite_at_the_photos_size(cli_args, tmp_path, bright_ensemble, monkeypatch):
    """End to end with photos: target maps are square, composites have the photo's (scaled) proportions, and
    the target-map cache is keyed by the fit."""
    from silhouette_lightning.cli import main
    from silhouette_lightning.run import job as run_module

    monkeypatch.setattr(run_module, "load_ensemble", lambda spec, size, pretrained: bright_ensemble)

    data = tmp_path / "photos" / "dog"
    data.mkdir(parents=True)
    img = Image.new("RGB", (160, 120), (20, 20, 20))
    ImageDraw.Draw(img).ellipse((50, 30, 110, 90), fill=(240, 200, 160))
    img.save(data / "disc.png")
    args = cli_args("--save-images", "best", "--fit", "crop", data=tmp_path / "photos")
    args.remove("--masks")
    assert main(args) == 0
    run = tmp_path / "out" / "run"
    rows = read_csv(run / "results.csv")
    assert rows and all(r["status"] == "ok" for r in rows)
    out = run / rows[0]["output_dir"]
    assert Image.open(out / "composite.png").size == (160, 120)
    assert Image.open(out / "target.png").size == (64, 64)
    assert list((run / "targets").glob("crop/*.pt")), "the target-map cache is not keyed by --fit"
