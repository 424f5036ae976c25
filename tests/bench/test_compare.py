"""`train.py benchmark --compare`: variants as separate resumable runs, one side-by-side table from their outputs."""

import json

import pytest
from conftest import LinkParser, decisive_ensemble, read_csv, run_tiny, tiny_flags
from PIL import Image

from silhouette_lightning.bench.variants import Variant, parse_key_values, parse_variants
from silhouette_lightning.cli import main


def bench_args(cli_args, *extra, name="bench"):
    return ["benchmark", *cli_args("--save-images", "best", "--image-every", "0", name=name), *extra]


def test_compare_writes_one_row_set_per_variant_from_their_own_outputs(tmp_path, mask_folder, tiny_generator):
    ensemble = decisive_ensemble()
    logs = []
    argv = tiny_flags(tmp_path, mask_folder, "--compare", "loss=mse", "loss=bce_bg,lr=0.05")
    root = run_tiny(argv, tiny_generator, ensemble, logs.append)
    assert root == tmp_path / "out" / "bench"
    rows = read_csv(root / "compare.csv")
    assert {r["variant"] for r in rows} == {"loss=mse", "loss=bce_bg,lr=0.05"}
    for label in ("loss=mse", "loss=bce_bg,lr=0.05"):
        run = root / label
        mine = [r for r in rows if r["variant"] == label]
        assert [r["class"] for r in mine] == ["all", "1", "3"]  # one row set per variant: all classes, then each
        scopes = {
            s["class"]: s for s in json.loads((run / "convergence.json").read_text())["scopes"] if s["subject"] == "all"
        }
        for row in mine:
            scope = scopes[row["class"]]
            assert float(row["mean_best_iou"]) == pytest.approx(scope["curves"]["best_iou_mean"][-1], abs=1e-12)
            assert float(row["pair_mean_best_iou"]) == pytest.approx(scope["curves"]["pair_best_iou_mean"][-1])
            compared = [k for k in scope["summary"] if k in row]
            assert {"trajectories", "success_rate@0.5", "seconds_mean"} <= set(compared)
            for key in compared:
                assert float(row[key]) == pytest.approx(scope["summary"][key], abs=1e-12), key
        # ... and with the separate run's results.csv: the mean best-of-restarts IoU of its pairs
        results = read_csv(run / "results.csv")
        pair_mean = sum(float(r["best_iou"]) for r in results) / len(results)
        assert 0 < pair_mean < 1, "a degenerate run would make every comparison equal"
        assert float(mine[0]["pair_mean_best_iou"]) == pytest.approx(pair_mean, abs=1e-5)
    a, b = (
        [r for r in rows if r["variant"] == v and r["class"] == "all"][0] for v in ("loss=mse", "loss=bce_bg,lr=0.05")
    )
    assert a["mean_best_iou"] != b["mean_best_iou"], "two different settings gave the same numbers"
    md = (root / "compare.md").read_text()
    assert md.split("\n## ")[0].count("| loss=mse |") == 3 and "success ≥0.5" in md  # the first table
    import re

    html_page = (root / "compare.html").read_text()
    widths = [head.count("<th") for head in re.findall(r"<thead>(.*?)</thead>", html_page, flags=re.S)]
    assert widths and max(widths) <= 3 + 9, f"a table too wide for the page: {widths} columns"
    assert Image.open(root / "compare_curves.png").size[0] > 300
    # The page: every picture embedded, every link a file of the benchmark.
    page = LinkParser()
    page.feed((root / "compare.html").read_text())
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert len(page.links) >= 4 and all((root / link).is_file() for link in page.links), page.links
    assert {"loss=mse/results.csv", "loss=mse/report.html"} <= set(page.links)

    # Re-running skips the finished variants and writes the same table.
    before = (root / "compare.csv").read_text()
    logs.clear()
    run_tiny(argv, tiny_generator, ensemble, logs.append)
    assert sum("is complete" in line for line in logs) == 2, logs
    assert (root / "compare.csv").read_text() == before


def test_bundled_folder_expands_to_its_files():
    labels = [v.label for v in parse_variants(["appendix_a"])]
    assert labels == ["deeplabv3", "ensemble", "logits", "losses"]
    by_label = {v.label: v.layer for v in parse_variants(["appendix_a", "appendix_c"])}
    assert by_label["ensemble"] == {
        "segmenters": "deeplabv3_resnet101:0.6,fcn_resnet101:0.4",
        "ensemble": "probs",
        "starts": 0,
    }
    assert by_label["logits"]["ensemble"] == "logits" and by_label["losses"]["ensemble"] == "losses"
    assert by_label["deeplabv3"]["segmenters"] == "deeplabv3_resnet101:1"
    assert by_label["mse"] == {"loss": "mse", "starts": 0} and by_label["bce_bg"] == {"loss": "bce_bg", "starts": 0}
    assert all(layer["starts"] == 0 for layer in by_label.values()), "the paper's experiments: its random starts"


def test_key_values_keep_commas_inside_values():
    assert parse_key_values("segmenters=a:0.6,b:0.4,lr=1e-3,betas=[0.9, 0.99]") == {
        "segmenters": "a:0.6,b:0.4",
        "lr": 0.001,
        "betas": [0.9, 0.99],
    }
    assert parse_variants(["loss=mse,lr=0.05"])[0] == Variant("loss=mse,lr=0.05", {"loss": "mse", "lr": 0.05}, "flags")


@pytest.mark.parametrize(
    "compare, message",
    [
        (["steps=7"], "changes steps"),
        (["loss=nope"], "--loss must be one of"),
        (["colour=red"], "unknown setting"),
        (["loss=mse", "loss=mse"], "is given twice"),
        (["nothing-here"], "not a file"),
        (["name=x"], "sets name"),
    ],
)
def test_bad_variants_exit_2_before_any_work(cli_args, tmp_path, capsys, compare, message):
    assert main(bench_args(cli_args, "--compare", *compare)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "bench").exists()


def test_help_lists_the_benchmark_flags(capsys):
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    out = capsys.readouterr().out
    assert "train.py benchmark" in out and "--compare" in out and "--shifts" in out and "appendix_a" in out
