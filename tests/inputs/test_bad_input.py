"""Bad input through the CLI: every bad file gets its reason and status, good files still get results,
and nothing prints a traceback. Numerical faults stay inside their trajectory."""

from pathlib import Path

import pytest
import torch
from conftest import draw_mask, read_csv
from corpus import CORPUS_MAX_PIXELS, make_bad_corpus, make_mask_corpus
from torch import nn

from silhouette_lightning.bench.recovery import recover
from silhouette_lightning.cli import main
from silhouette_lightning.models.frozen import freeze
from silhouette_lightning.models.segmenters import IMAGENET_MEAN, IMAGENET_STD, SegmenterEnsemble
from silhouette_lightning.outputs.records import summary_row
from silhouette_lightning.run import job as run_module


class BrightIsDog(nn.Module):
    """A segmenter that calls bright pixels "dog" (VOC 12): the corpus photos are bright blobs on dark."""

    def forward(self, x):
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        brightness = (x * std + mean).mean(1)  # [B, H, W]
        logits = torch.zeros(x.shape[0], 21, *x.shape[2:])
        logits[:, 12] = (brightness - 0.5) * 20
        return logits


@pytest.fixture
def blob_segmenters(monkeypatch):
    ensemble = freeze(SegmenterEnsemble([BrightIsDog()], [1.0], 32))
    monkeypatch.setattr(run_module, "load_ensemble", lambda spec, size, pretrained: ensemble)


def test_bad_photo_corpus(cli_args, tmp_path, blob_segmenters, capsys):
    corpus = tmp_path / "corpus"
    expected = make_bad_corpus(corpus)
    args = cli_args("--save-images", "best", "--max-pixels", str(CORPUS_MAX_PIXELS), data=corpus)
    args.remove("--masks")
    args[args.index("--seg-size") + 1] = "32"
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    rows = read_csv(tmp_path / "out" / "run" / "results.csv")
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    assert set(by_source) == set(expected), "every file gets a row"
    for name, reason in expected.items():
        statuses = [r["status"] for r in by_source[name]]
        if reason == "ok":
            assert statuses == ["ok", "ok"], (name, statuses)
            assert (tmp_path / "out" / "run" / by_source[name][0]["output_dir"] / "composite.png").exists()
        else:
            assert len(statuses) == 1 and statuses[0].startswith("skipped: ") and reason in statuses[0], (
                name,
                statuses,
            )
            assert f"{name}: " in err, f"no message names {name}"


def test_mask_corpus_thresholds_and_skips(cli_args, tmp_path, capsys):
    corpus = tmp_path / "masks" / "dog"
    expected = make_mask_corpus(corpus)
    assert main(cli_args("--save-images", "none", data=corpus.parent)) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    rows = read_csv(tmp_path / "out" / "run" / "results.csv")
    for name, reason in expected.items():
        statuses = {r["status"] for r in rows if r["source"] == f"dog/{name}"}
        if reason in ("ok", "thresholded"):
            assert statuses == {"ok"}, (name, statuses)
        else:
            assert len(statuses) == 1 and reason in statuses.pop(), name
    if "thresholded" in expected.values():
        assert err.count("thresholded") == 1, "the threshold note is said once"


def test_empty_data_folder_is_a_usage_error(cli_args, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(cli_args(data=tmp_path / "empty")) == 2
    err = capsys.readouterr().err
    assert "holds no files" in err and "Traceback" not in err


def test_unwritable_output_folder(cli_args, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = cli_args()
    args[args.index("--out") + 1] = str(blocker)
    assert main(args) == 2
    assert "output folder" in capsys.readouterr().err


class NanForClass(nn.Module):
    """Wraps a generator; images of class 3 turn NaN (a numerical fault in one trajectory)."""

    def __init__(self, generator):
        super().__init__()
        self.inner, self.config = generator, generator.config

    def forward(self, z, one_hot, truncation):
        out = self.inner(z, one_hot, truncation)
        return torch.where(one_hot[:, 3].view(-1, 1, 1, 1) > 0, torch.full_like(out, float("nan")), out)


def test_non_finite_trajectory_stops_alone(tiny_generator, ensemble):
    g = torch.Generator().manual_seed(0)
    z_star = torch.randn(4, 8, generator=g) * 0.4
    start = z_star + 0.3 * torch.randn(4, 8, generator=g)
    classes, channels = torch.tensor([1, 3, 5, 7]), torch.full((4,), 7)
    faulty = recover(
        NanForClass(tiny_generator),
        ensemble,
        z_star[[0, 2, 3]],
        classes[[0, 2, 3]],
        channels[:3],
        start=start[[0, 2, 3]],
        settings={"steps": 6},
    )  # targets from healthy rows only
    mixed = recover(
        NanForClass(tiny_generator),
        ensemble,
        torch.cat([z_star[:1], z_star[1:2], z_star[2:]]),
        classes,
        channels,
        start=start,
        settings={"steps": 6},
    )
    assert mixed.stopped_at.tolist() == [-1, 0, -1, -1]
    assert mixed.best_iou[1] == -1  # never had a valid score
    assert torch.isfinite(mixed.best_z).all()
    healthy = [0, 2, 3]
    assert torch.allclose(mixed.best_z[healthy], faulty.best_z, atol=1e-6), "a NaN row disturbed the others"
    record = {
        "source": "a",
        "subject": "dog",
        "class_id": 3,
        "restart": 0,
        "seed": 1,
        "best_iou": -1.0,
        "best_loss": float("inf"),
        "best_step": 0,
        "stopped_at": 0,
    }
    assert summary_row(Path("run"), [record])["status"].startswith("failed: ")


def test_file_name_not_utf8_is_skipped_and_good_files_keep_results(cli_args, mask_folder, tmp_path, capsys):
    import os

    bad = os.path.join(os.fsencode(mask_folder / "dog"), b"bad\xff\xfename.png")
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, (mask_folder / "dog" / "a.png").read_bytes())
    os.close(fd)
    assert main(cli_args("--save-images", "none")) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not valid UTF-8" in err
    rows = read_csv(tmp_path / "out" / "run" / "results.csv")
    bad_rows = [r for r in rows if r["source"].startswith("dog/bad")]
    assert len(bad_rows) == 1 and bad_rows[0]["status"].startswith("skipped: ") and "rename" in bad_rows[0]["status"]
    assert bad_rows[0]["source"] == "dog/bad\\xff\\xfename.png"
    good = {r["source"] for r in rows if r["status"] == "ok"}
    assert good == {"dog/a.png", "dog/b.png", "dog/c.png"}


def test_folder_where_every_file_is_bad_says_nothing_was_swapped(cli_args, tmp_path, capsys):
    data = tmp_path / "bad" / "dog"
    data.mkdir(parents=True)
    (data / "empty.png").write_bytes(b"")
    (data / "notes.png").write_text("not a picture")
    assert main(cli_args(data=data.parent)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nothing could be swapped" in err and "No training batches" not in err
    rows = read_csv(tmp_path / "out" / "run" / "results.csv")
    assert [(r["source"], r["status"]) for r in rows] == [
        ("dog/empty.png", "skipped: empty file"),
        ("dog/notes.png", "skipped: not an image file"),
    ]


def test_subject_without_classes_is_skipped_with_a_reason(cli_args, tmp_path, capsys):
    draw_mask(tmp_path / "people" / "person" / "a.png", (8, 10, 40, 40))
    (tmp_path / "dogs_only.yaml").write_text("default_classes: {dog: [1]}\n")
    args = cli_args("--config", str(tmp_path / "dogs_only.yaml"), data=tmp_path / "people")
    del args[args.index("--classes") : args.index("--classes") + 2]
    assert main(args) == 2
    assert "nothing could be swapped" in capsys.readouterr().err
    [row] = read_csv(tmp_path / "out" / "run" / "results.csv")
    assert row["source"] == "person/a.png" and row["status"].startswith("skipped: ") and "--classes" in row["status"]


def test_api_photo_without_subject_raises_a_clear_error(tmp_path, tiny_generator):
    from PIL import Image

    from silhouette_lightning import swap
    from silhouette_lightning.core.errors import UsageError

    black = Image.new("RGB", (48, 48))
    ensemble = freeze(SegmenterEnsemble([BrightIsDog()], [1.0], 32))
    with pytest.raises(UsageError, match="nothing could be swapped.*no subject found"):
        swap(
            black,
            [1],
            restarts=1,
            steps=1,
            seg_size=32,
            accelerator="cpu",
            generator=tiny_generator,
            ensemble=ensemble,
            heldout="none",
        )
