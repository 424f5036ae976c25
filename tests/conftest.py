"""Tiny frozen networks and data for fast CPU tests of the real code paths."""

from __future__ import annotations

import contextlib
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from silhouette_lightning.models.biggan import build_random_generator, save_generator, tiny_biggan_config
from silhouette_lightning.models.heldout import DEFAULT_HELDOUT
from silhouette_lightning.models.tiny import (  # noqa: F401 (tests import them from here)
    ColorSegmenter,
    DecisiveSegmenter,
    decisive_ensemble,
    heldout_segmenter_state,
    tiny_ensemble,
)

warnings.filterwarnings("ignore", message=".*modules in eval mode.*")


@pytest.fixture
def tiny_generator():
    return build_random_generator(tiny_biggan_config(), seed=0)


@pytest.fixture
def ensemble():
    return tiny_ensemble()


@pytest.fixture
def generator_dir(tmp_path, tiny_generator) -> Path:
    """A tiny BigGAN saved as config.json + pytorch_model.bin: loads through the real `--generator DIR` path."""
    return save_generator(tiny_generator, tmp_path / "tiny-biggan")


def draw_mask(path: Path, box: tuple[int, int, int, int], size: int = 48) -> Path:
    """A white ellipse silhouette on black."""
    from PIL import ImageDraw

    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).ellipse(box, fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


@pytest.fixture
def mask_folder(tmp_path) -> Path:
    """Three dog silhouettes (an odd number, for sharding tests) in a folder-per-subject layout."""
    root = tmp_path / "masks"
    draw_mask(root / "dog" / "a.png", (8, 10, 40, 40))
    draw_mask(root / "dog" / "b.png", (4, 4, 30, 44))
    draw_mask(root / "dog" / "c.png", (16, 6, 44, 30))
    return root


@pytest.fixture(scope="session")
def heldout_checkpoint(tmp_path_factory) -> Path:
    """The held-out segmenter's checkpoint, made once per session (see `heldout_segmenter_state`)."""
    path = tmp_path_factory.mktemp("heldout") / "deeplabv3_mobilenet_v3_large.pth"
    torch.save(heldout_segmenter_state(), path)
    return path


@pytest.fixture
def torch_home(tmp_path, monkeypatch, heldout_checkpoint) -> Path:
    """A TORCH_HOME holding a (randomly initialized) lraspp_mobilenet_v3_large VOC checkpoint under its
    published file name, and the default held-out model's (`heldout_checkpoint`): the real `--segmenters`
    and `--heldout` loading paths run offline on them."""
    from torchvision.models import get_model

    from silhouette_lightning.models.segmenters import segmenter_weights_path

    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    path, _ = segmenter_weights_path("lraspp_mobilenet_v3_large")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(
        get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=21).state_dict(), path
    )
    heldout_path, _ = segmenter_weights_path(DEFAULT_HELDOUT)
    heldout_path.symlink_to(heldout_checkpoint)
    return home


@pytest.fixture
def cli_args(tmp_path, generator_dir, torch_home, mask_folder):
    """Flags for a complete tiny run through the real loaders (generator folder, torchvision checkpoint).

    `--starts 0` (the paper's random starts) unless `default_search=True`: the default best-of-32 is tested on its
    own (test_cli.py's end-to-end run, test_fast_path.py's default command, test_search.py, test_ddp.py); in the
    other runs its candidate scoring would only add CI time."""

    def args(*extra: str, name: str = "run", data: Path | None = None, default_search: bool = False) -> list[str]:
        return [
            "--data",
            str(data or mask_folder),
            "--masks",
            "--classes",
            "1,goldfish,3",
            "--restarts",
            "2",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--generator",
            str(generator_dir),
            "--segmenters",
            "lraspp_mobilenet_v3_large:1",
            "--seg-size",
            "64",
            "--out",
            str(tmp_path / "out"),
            "--name",
            name,
            "--accelerator",
            "cpu",
            "--frames",
            "3",
            *([] if default_search else ["--starts", "0"]),
            *extra,
        ]

    return args


@contextlib.contextmanager
def interrupted_after_first_chunk(monkeypatch):
    """Within the block, a run stops as on Ctrl-C (KeyboardInterrupt) right after its first chunk is written."""
    from silhouette_lightning.engine import writer

    original = writer.ResultWriter.on_train_batch_end

    def interrupt(self, trainer, pl_module, *rest):
        done = pl_module.has_finished()
        original(self, trainer, pl_module, *rest)
        if done:
            raise KeyboardInterrupt

    monkeypatch.setattr(writer.ResultWriter, "on_train_batch_end", interrupt)
    try:
        yield
    finally:
        monkeypatch.setattr(writer.ResultWriter, "on_train_batch_end", original)


def read_csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ tiny benchmarks (tests/bench, tests/outputs)


class LinkParser(HTMLParser):
    """The `src` of every image and the `href` of every link of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])
        assert tag not in ("script", "link", "iframe"), f"an external resource: <{tag}>"


def tiny_flags(tmp_path, mask_folder, *extra, name="bench"):
    """A small benchmark on in-memory tiny models: 3 masks x 2 classes x 2 restarts, 4 steps."""
    return [
        "--data",
        str(mask_folder),
        "--masks",
        "--classes",
        "1,3",
        "--restarts",
        "2",
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--seg-size",
        "32",
        "--out",
        str(tmp_path / "out"),
        "--name",
        name,
        "--accelerator",
        "cpu",
        "--save-images",
        "none",
        "--image-every",
        "0",
        "--heldout",
        "none",
        *extra,
    ]


def run_tiny(argv, generator, ensemble, log, heldout_model=None):
    """`train.py benchmark ARGV` in this process on the given (tiny) models."""
    from silhouette_lightning.bench.benchmark import parse_args, run_benchmark

    settings, variants, base = parse_args(argv)
    return run_benchmark(
        settings,
        variants,
        base,
        generator=generator,
        ensemble=ensemble,
        heldout_model=heldout_model,
        log=log,
        enable_progress_bar=False,
    )
