"""The command line end to end on tiny models, outputs read back as a user (and TensorBoard) would."""

import pytest
import torch
from conftest import read_csv
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision.transforms.functional import pil_to_tensor

from silhouette_lightning.cli import main
from silhouette_lightning.outputs.pictures import mask_overlay
from silhouette_lightning.outputs.records import regenerate


def test_end_to_end(cli_args, tmp_path, capsys):
    assert main(cli_args(default_search=True)) == 0  # best-of-32 starts, the default
    run = tmp_path / "out" / "run"
    rows = read_csv(run / "results.csv")
    assert [(r["source"], r["class_id"]) for r in rows] == [
        (s, c) for s in ("dog/a.png", "dog/b.png", "dog/c.png") for c in ("1", "3")
    ]
    assert all(r["status"] == "ok" and r["class_name"] in ("goldfish", "tiger shark") for r in rows)
    assert all(0 <= float(r["best_iou"]) <= 1 and r["best_restart"] in ("0", "1") for r in rows)
    assert (run / "config.yaml").exists() and (run / "classes.csv").exists() and (run / "contact_sheet.png").exists()

    out = run / rows[0]["output_dir"]
    for name in ("best.png", "mask.png", "target.png", "overlay.png", "strip.png", "progress.gif", "latent.pt"):
        assert (out / name).exists(), name
    assert Image.open(out / "best.png").size == (32, 32)
    overlay = pil_to_tensor(Image.open(out / "overlay.png")).float() / 255
    target = pil_to_tensor(Image.open(out / "target.png"))[0].float() / 255
    best = pil_to_tensor(Image.open(out / "best.png")).float() / 255
    assert (overlay - mask_overlay(best, target)).abs().max() <= 1.5 / 255
    assert Image.open(out / "target.png").size == (64, 64)
    # The saved latent regenerates the best image exactly (up to 8-bit rounding of the PNG).
    image = regenerate(out / "latent.pt")
    saved = pil_to_tensor(Image.open(out / "best.png")).float() / 255
    assert (image - saved).abs().max() <= 0.5 / 255 + 1e-6
    latent = torch.load(out / "latent.pt", weights_only=True)
    assert latent["class_id"] == 1 and latent["restart"] == int(rows[0]["best_restart"])

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/iou", "train/iou_best", "train/iou/dog"} <= tags
    # every 10th step and the last (--log-every's default)
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps and all((s + 1) % 10 == 0 for s in steps[:-1]), steps
    assert events.Tags()["images"], "no TensorBoard image panels"
    assert "results.csv" in capsys.readouterr().err


def test_unknown_class_is_an_error_before_any_work(cli_args, tmp_path, capsys):
    args = cli_args()
    args[args.index("1,goldfish,3")] = "1,goldfsh"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "goldfsh" in err and "goldfish" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "run").exists()


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--truncation", "1.5", "truncation"),
        ("--restarts", "0", "restarts"),
        ("--steps", "0", "steps"),
        ("--lr", "-1", "lr"),
        ("--segmenters", "lraspp_mobilenet_v3_large:0", "sum"),
        ("--log-every", "0", "--log-every"),
    ],
)
def test_out_of_range_settings_exit_2(cli_args, flag, value, message, capsys):
    args = cli_args()
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_log_every_thins_the_scalars_and_changes_no_result(cli_args, tmp_path):
    """--log-every 3 writes the same tags at every third step and the last, with the every-step run's values."""
    quiet = ("--save-images", "none", "--deterministic", "--image-every", "0")
    assert main(cli_args(*quiet, "--log-every", "1", name="every")) == 0
    assert main(cli_args(*quiet, "--log-every", "3", name="second")) == 0
    every, second = (tmp_path / "out" / name for name in ("every", "second"))
    assert read_csv(every / "results.csv") == read_csv(second / "results.csv")
    full = EventAccumulator(str(every / "tensorboard")).Reload()
    thin = EventAccumulator(str(second / "tensorboard")).Reload()
    assert set(thin.Tags()["scalars"]) == set(full.Tags()["scalars"]) >= {"train/loss", "train/iou", "train/iou_best"}
    for tag in ("train/loss", "train/iou", "train/iou_best"):
        steps = {e.step: e.value for e in full.Scalars(tag)}
        kept = {e.step: e.value for e in thin.Scalars(tag)}
        last = max(steps)
        assert last >= 6 and sorted(kept) == [s for s in sorted(steps) if (s + 1) % 3 == 0 or s == last], tag
        assert all(kept[s] == steps[s] for s in kept), tag


def test_missing_data_folder(cli_args, tmp_path, capsys):
    assert main(cli_args(data=tmp_path / "nowhere")) == 2
    assert "nowhere" in capsys.readouterr().err


def test_results_do_not_depend_on_batch_size_or_other_sources(cli_args, mask_folder, tmp_path):
    """Under --deterministic (one intra-op thread): at the default thread count the tables agree only closely."""
    assert main(cli_args("--save-images", "none", "--deterministic", name="b4")) == 0
    args = cli_args("--save-images", "none", "--deterministic", name="b3")
    args[args.index("--batch-size") + 1] = "3"
    assert main(args) == 0
    # one source alone, in a folder of its own
    alone = tmp_path / "alone"
    (alone / "dog").mkdir(parents=True)
    (alone / "dog" / "b.png").write_bytes((mask_folder / "dog" / "b.png").read_bytes())
    assert main(cli_args("--save-images", "none", "--deterministic", name="alone", data=alone)) == 0
    b4 = read_csv(tmp_path / "out" / "b4" / "results.csv")
    b3 = read_csv(tmp_path / "out" / "b3" / "results.csv")
    only = read_csv(tmp_path / "out" / "alone" / "results.csv")
    assert b4 == b3
    assert [r for r in b4 if r["source"] == "dog/b.png"] == only


def test_resume_after_interrupt_gives_the_same_table(cli_args, tmp_path, monkeypatch, capsys):
    assert main(cli_args("--save-images", "none", name="whole")) == 0
    whole = read_csv(tmp_path / "out" / "whole" / "results.csv")

    from silhouette_lightning.engine import writer

    original = writer.ResultWriter.on_train_batch_end
    chunks = []

    def interrupt_after_first_chunk(self, trainer, pl_module, *args):
        done = pl_module.has_finished()
        original(self, trainer, pl_module, *args)
        chunks.append(done)
        if done:
            raise KeyboardInterrupt

    monkeypatch.setattr(writer.ResultWriter, "on_train_batch_end", interrupt_after_first_chunk)
    with pytest.raises(SystemExit) as stopped:
        main(cli_args("--save-images", "none", name="resumed"))
    assert stopped.value.code == 130, "Ctrl-C: 128 + SIGINT, not a finished run's 0"
    assert "run the same command again to resume" in capsys.readouterr().err
    partial = read_csv(tmp_path / "out" / "resumed" / "results.csv")
    assert 0 < len(partial) < len(whole)
    monkeypatch.setattr(writer.ResultWriter, "on_train_batch_end", original)
    assert main(cli_args("--save-images", "none", name="resumed")) == 0
    assert read_csv(tmp_path / "out" / "resumed" / "results.csv") == whole


def test_resume_refuses_other_settings(cli_args, capsys):
    assert main(cli_args("--save-images", "none", name="same")) == 0
    args = cli_args("--save-images", "none", name="same")
    args[args.index("--steps") + 1] = "4"
    assert main(args) == 2
    assert "--name" in capsys.readouterr().err


def test_poisson_blend_without_opencv_says_what_to_install(cli_args, capsys):
    try:
        import cv2  # noqa: F401

        pytest.skip("OpenCV is installed here")
    except ImportError:
        pass
    assert main(cli_args("--blend", "poisson")) == 2
    assert "opencv-python-headless" in capsys.readouterr().err


def test_class_typo_fails_before_any_weights_load(cli_args, monkeypatch, capsys):
    """A misspelled class must not wait for (or trigger) a weights download."""
    from silhouette_lightning.run import job as run_module

    def no_load(*args, **kwargs):
        raise AssertionError("weights were loaded before the class names were checked")

    monkeypatch.setattr(run_module, "load_generator", no_load)
    args = cli_args()
    args[args.index("1,goldfish,3")] = "golden retrevier"
    assert main(args) == 2
    assert "golden retriever" in capsys.readouterr().err
