"""The recovery benchmark (paper, section 4, figure 5) through the normal pipeline, on tiny models."""

import json

import pytest
import torch
from conftest import decisive_ensemble, read_csv
from PIL import Image

from silhouette_lightning.bench.benchmark import parse_args, run_benchmark
from silhouette_lightning.outputs.convergence import best_so_far
from silhouette_lightning.outputs.records import load_records


def recovery_flags(tmp_path, *extra, name="rec"):
    return [
        "--recovery",
        "--classes",
        "1,4",
        "--restarts",
        "3",
        "--steps",
        "10",
        "--shifts",
        "0,4",
        "--rotations",
        "0,20",
        "--batch-size",
        "8",
        "--seg-size",
        "32",
        "--out",
        str(tmp_path / "out"),
        "--name",
        name,
        "--accelerator",
        "cpu",
        "--save-images",
        "best",
        "--image-every",
        "0",
        "--heldout",
        "none",
        *extra,
    ]


def run_tiny(argv, generator, ensemble, log=lambda *a: None, **kwargs):
    settings, variants, base = parse_args(argv)
    return run_benchmark(
        settings, variants, base, generator=generator, ensemble=ensemble, log=log, enable_progress_bar=False, **kwargs
    )


def test_recovery_reports_per_transform(tmp_path, tiny_generator):
    root = run_tiny(recovery_flags(tmp_path), tiny_generator, decisive_ensemble())
    run = root / "base"
    assert (run / "config.yaml").read_text().count("loss: bce_bg") == 1  # the paper's figure 5 loss by default
    assert "starts: 0\n" in (run / "config.yaml").read_text()  # what ran: restart 0 from z_s, the others random
    rows = read_csv(root / "recovery.csv")
    transforms = [(r["shift"], r["rotation"], r["start"]) for r in rows]
    assert transforms == [(s, r, k) for s in ("0", "4") for r in ("0.0", "20.0") for k in ("z_s", "random")]
    by = {(r["shift"], r["rotation"], r["start"]): r for r in rows}
    # No transform, starting at z_s: the start is the answer.
    assert float(by[("0", "0.0", "z_s")]["iou_step0_mean"]) == 1.0
    assert float(by[("0", "0.0", "z_s")]["start_distance_mean"]) == 0.0
    assert all(float(r["start_distance_mean"]) > 0 for r in rows if r["start"] == "random")
    # From random starts the search climbs: best-so-far IoU at the last step above the first, on average.
    curves = json.loads((root / "recovery.json").read_text())
    random_rows = [r for r in curves if r["start"] == "random"]
    assert sum(r["best_iou_curve"][-1] - r["best_iou_curve"][0] for r in random_rows) / len(random_rows) > 0.05

    # Every number recomputed here from the records and the plan.
    plan = torch.load(run / "plan.pt", weights_only=True)  # the file itself, not the package's reader
    cases = {c["key"]: c for c in plan["cases"]}
    z_s = {
        plan["trajectories"][i]["source_key"]: z
        for i, z in zip(plan["starts"]["index"].tolist(), plan["starts"]["z"], strict=True)
    }
    records = list(load_records(run).values())
    assert len(records) == 2 * 1 * 4 * 3  # classes x latents x transforms x restarts
    for (shift, rotation, start), row in by.items():
        mine = [
            r
            for r in records
            if (
                str(cases[r["source"]]["shift"]),
                str(cases[r["source"]]["rotation"]),
                "z_s" if r["restart"] == 0 else "random",
            )
            == (shift, rotation, start)
        ]
        assert int(row["trajectories"]) == len(mine) == (2 if start == "z_s" else 4)
        best = [float(best_so_far(r["iou_history"], r["stopped_at"])[-1]) for r in mine]
        assert float(row["best_iou_mean"]) == pytest.approx(sum(best) / len(best), abs=1e-6)
        assert float(row["iou_step0_mean"]) == pytest.approx(sum(float(r["iou_history"][0]) for r in mine) / len(mine))
        found = [float((r["best_z"] - z_s[r["source"]]).norm()) for r in mine]
        assert float(row["found_distance_mean"]) == pytest.approx(sum(found) / len(found), rel=1e-5)

    # The normal outputs of a run are there, and the transformed images the targets came from.
    assert (run / "results.csv").exists() and (run / "convergence.json").exists()
    image = Image.open(run / "sources" / "1_goldfish" / "z0" / "shift4_rot20.png")
    assert image.size == (32, 32)
    for name in ("recovery_curves.png", "compare_curves.png"):
        assert Image.open(root / name).size[0] > 300
    assert "Recovery" in (root / "compare.html").read_text()


def test_recovery_from_the_command_line_with_any_generator(tmp_path, generator_dir, torch_home, capsys):
    """`train.py benchmark --recovery --generator DIR`: the real loaders, no pretrained weights."""
    from silhouette_lightning.cli import main

    args = [
        "benchmark",
        "--recovery",
        "--generator",
        str(generator_dir),
        "--segmenters",
        "deeplabv3_mobilenet_v3_large:1",
        "--heldout",
        "none",
        "--classes",
        "7,8",
        "--restarts",
        "2",
        "--steps",
        "2",
        "--shifts",
        "0,3",
        "--rotations",
        "0",
        "--seg-size",
        "48",
        "--out",
        str(tmp_path / "out"),
        "--name",
        "cli",
        "--accelerator",
        "cpu",
        "--save-images",
        "none",
        "--image-every",
        "0",
    ]
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    rows = {(r["shift"], r["start"]): r for r in read_csv(tmp_path / "out" / "cli" / "recovery.csv")}
    assert set(rows) == {("0", "z_s"), ("0", "random"), ("3", "z_s"), ("3", "random")}
    assert float(rows[("0", "z_s")]["iou_step0_mean"]) == 1.0
    assert "compare.html" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "x"], "leave out --data"),
        (["--latents", "0"], "--latents"),
        (["--rotations", "400"], "rotations"),
        (["--shifts", "0,0"], "twice"),
        (["--starts", "16"], "do not apply to --recovery"),
    ],
)
def test_bad_recovery_settings_exit_2(tmp_path, extra, message, capsys):
    from silhouette_lightning.cli import main

    assert main(["benchmark", *recovery_flags(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_transform_flags_only_with_recovery(tmp_path, mask_folder, capsys):
    from silhouette_lightning.cli import main

    assert main(["benchmark", "--data", str(mask_folder), "--shifts", "0,4", "--out", str(tmp_path)]) == 2
    assert "only apply to --recovery" in capsys.readouterr().err
