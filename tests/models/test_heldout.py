"""The held-out IoU: each result's best image scored by a segmenter outside the ensemble, checked against an
independent computation with torchvision's own model."""

import pytest
import torch
import torch.nn.functional as F
from conftest import read_csv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision.models import get_model

from silhouette_lightning.cli import main
from silhouette_lightning.engine import writer
from silhouette_lightning.inputs.target_maps import target_path
from silhouette_lightning.outputs.records import load_records, regenerate

MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
DOG = 12  # VOC index


def independent_heldout_iou(checkpoint, latent_file, target_file, size: int) -> float:
    """The held-out IoU written out from scratch: torchvision's model, the saved latent, the cached target."""
    model = get_model(
        "deeplabv3_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=21, aux_loss=False
    ).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    image = regenerate(latent_file)[None]  # [1, 3, R, R] in [0, 1]
    x = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)
    with torch.no_grad():
        dog = model(x)["out"].softmax(1)[0, DOG] > 0.5  # [S, S]
    target = torch.load(target_file, weights_only=True)["target"].float() > 0.5
    return ((dog & target).sum() / (dog | target).sum()).item()


def test_heldout_iou_equals_an_independent_computation(cli_args, tmp_path, heldout_checkpoint):
    assert main(cli_args()) == 0
    run = tmp_path / "out" / "run"
    rows = read_csv(run / "results.csv")
    heldout = [float(r["heldout_iou"]) for r in rows]
    for row, score in zip(rows, heldout, strict=True):
        latent_file = run / row["output_dir"] / "latent.pt"
        expected = independent_heldout_iou(
            heldout_checkpoint, latent_file, target_path(run / "targets" / "pad", row["source"]), size=64
        )
        assert abs(score - expected) <= 1e-6, (row["source"], row["class_id"], score, expected)
        latent = torch.load(latent_file, weights_only=True)
        assert latent["heldout"] == "deeplabv3_mobilenet_v3_large" and abs(latent["heldout_iou"] - score) <= 1e-6
    # not a constant: the held-out model's maps follow the images, and it is not the optimized score
    assert len(set(heldout)) > 1 and any(0 < h < 1 for h in heldout)
    assert [r["heldout_iou"] for r in rows] != [r["best_iou"] for r in rows]

    classes = {r["class_id"]: r for r in read_csv(run / "classes.csv")}
    for class_id, row in classes.items():
        mine = [h for r, h in zip(rows, heldout, strict=True) if r["class_id"] == class_id]
        assert abs(float(row["mean_heldout_iou"]) - sum(mine) / len(mine)) <= 5e-5

    convergence = {
        (r["class"], r["subject"], r["statistic"]): float(r["value"])
        for r in read_csv(run / "convergence.csv")
        if r["step"] == ""
    }
    for class_id in classes:
        mine = [h for r, h in zip(rows, heldout, strict=True) if r["class_id"] == class_id]
        assert convergence[(class_id, "all", "heldout_iou_count")] == len(mine)
        assert convergence[(class_id, "all", "heldout_iou_mean")] == pytest.approx(sum(mine) / len(mine), abs=1e-5)
    assert convergence[("all", "all", "heldout_iou_mean")] == pytest.approx(sum(heldout) / len(heldout), abs=1e-5)

    # the held-out judge per step: every trajectory's best so far scored at its frame steps (the latents not kept)
    records = load_records(run)
    best = {(r["source"], int(r["class_id"])): float(r["heldout_iou"]) for r in rows}
    for (source, class_id, _), r in records.items():
        assert "best_frames" not in r and r["heldout_model"] == "deeplabv3_mobilenet_v3_large"
        scores = r["heldout_history"]
        assert len(scores) == len(r["frame_steps"]) and ((scores >= 0) & (scores <= 1)).all()
        for step, score in zip(r["frame_steps"], scores.tolist(), strict=True):
            if step >= r["best_step"]:  # the best so far there is the final answer
                assert score == pytest.approx(float(scores[-1]), abs=1e-6), (source, class_id, step)
    for (source, class_id), score in best.items():
        mine = [r for (s, c, _), r in records.items() if (s, c) == (source, class_id)]
        answer = max(mine, key=lambda r: (r["best_iou"], -r["best_loss"], -r["restart"]))
        assert float(answer["heldout_history"][-1]) == pytest.approx(score, abs=1e-5), (source, class_id)

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert {"results/iou_heldout", "results/iou_optimized"} <= set(events.Tags()["scalars"])
    logged = [e.value for e in events.Scalars("results/iou_heldout")]
    assert all(0 <= v <= 1 for v in logged) and logged


def test_resumed_run_reads_heldout_scores_back(cli_args, tmp_path, monkeypatch):
    args = cli_args("--save-images", "none", name="again")
    assert main(args) == 0
    first = read_csv(tmp_path / "out" / "again" / "results.csv")

    def no_scoring(*a, **k):
        raise AssertionError("a finished result was scored again")

    monkeypatch.setattr(writer, "heldout_iou", no_scoring)
    assert main(args) == 0
    assert read_csv(tmp_path / "out" / "again" / "results.csv") == first


def test_heldout_none_leaves_the_columns_empty(cli_args, tmp_path):
    assert main(cli_args("--heldout", "none", "--save-images", "none")) == 0
    run = tmp_path / "out" / "run"
    assert all(r["status"] == "ok" and r["heldout_iou"] == "" for r in read_csv(run / "results.csv"))
    assert all(r["mean_heldout_iou"] == "" for r in read_csv(run / "classes.csv"))


def test_heldout_model_in_the_ensemble_is_refused(cli_args, tmp_path, capsys):
    assert main(cli_args("--heldout", "lraspp_mobilenet_v3_large")) == 2
    err = capsys.readouterr().err
    assert "member of the ensemble" in err and "--heldout" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "run").exists()
    assert main(cli_args("--heldout", "segformer")) == 2
    assert "--heldout must be none or one of" in capsys.readouterr().err


def test_missing_heldout_weights_say_what_to_do(cli_args, torch_home, monkeypatch, capsys):
    from silhouette_lightning.models import fetch
    from silhouette_lightning.models.segmenters import segmenter_weights_path

    path, url = segmenter_weights_path("deeplabv3_mobilenet_v3_large")
    path.unlink()

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(fetch, "urlopen", offline)
    assert main(cli_args()) == 2
    err = capsys.readouterr().err
    assert "--heldout deeplabv3_mobilenet_v3_large" in err and path.name in err and url in err
    assert "--heldout none" in err and "Traceback" not in err
