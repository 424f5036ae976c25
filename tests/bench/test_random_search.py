"""`--compare random`: the random-search baseline spends exactly the budget of the variant it is compared with,
in latent-step units; a benchmark rerun on finished folders optimizes nothing; `--judge` picks the IoU judged."""

from __future__ import annotations

import pytest
from conftest import decisive_ensemble, read_csv, run_tiny, tiny_flags

from silhouette_lightning.cli import main as cli_main
from silhouette_lightning.outputs.records import load_records
from silhouette_lightning.outputs.runtime import FORWARD_COST, spent_units, start_units


def _pair_units(run_dir, starts: int, restarts: int) -> dict:
    """Units spent per (source, class) pair, from the records on disk (an independent sum)."""
    per_pair: dict = {}
    for (source, class_id, _), record in load_records(run_dir).items():
        spent = spent_units(record, start_units(starts, restarts, FORWARD_COST))
        per_pair[(source, class_id)] = per_pair.get((source, class_id), 0.0) + spent
    return per_pair


@pytest.mark.parametrize("starts", [0, 6])
def test_random_search_spends_exactly_the_budget_of_its_reference(tmp_path, mask_folder, tiny_generator, starts):
    """Reference: R = 2 restarts x (4 steps + 1) units (+ its own best-of-N); random search: N forward passes at
    FORWARD_COST and the R best scored once, nothing else."""
    flags = tiny_flags(tmp_path, mask_folder, "--starts", str(starts), "--compare", "loss=mse", "random")
    root = run_tiny(flags, tiny_generator, decisive_ensemble(), lambda *a: None)
    import yaml

    random_config = yaml.safe_load((root / "random" / "config.yaml").read_text())
    assert random_config["steps"] == 0 and random_config["starts"] > 2
    reference = _pair_units(root / "loss=mse", starts, 2)
    baseline = _pair_units(root / "random", random_config["starts"], 2)
    assert reference.keys() == baseline.keys() and len(reference) == 6
    for pair, units in reference.items():
        assert baseline[pair] == pytest.approx(units, abs=1e-9), pair
    assert all(int(r["best_step"]) == 0 for r in read_csv(root / "random" / "results.csv")), "no Adam step"
    assert "| random |" in (root / "compare.md").read_text()


def test_a_rerun_on_finished_folders_optimizes_nothing_and_judges_as_told(
    tmp_path, mask_folder, tiny_generator, capsys
):
    flags = tiny_flags(tmp_path, mask_folder, "--compare", "loss=mse", "random")
    logs: list[str] = []
    root = run_tiny(flags, tiny_generator, decisive_ensemble(), logs.append)
    assert sum("warm-up" in line and "charged to no variant" in line for line in logs) == 1
    parts = sorted(p.stat().st_mtime_ns for p in root.rglob("part-*.pt"))
    logs.clear()
    run_tiny([*flags, "--judge", "optimized"], tiny_generator, decisive_ensemble(), logs.append)
    assert sum("is complete" in line and "skipped" in line for line in logs) == 2
    assert not any("running" in line or "warm-up" in line for line in logs)
    assert sorted(p.stat().st_mtime_ns for p in root.rglob("part-*.pt")) == parts, "no trajectory ran again"
    assert "Judged by the optimized IoU" in (root / "compare.md").read_text()

    # `train.py report` rebuilds the same pages from the folder alone, judged as recorded in benchmark.yaml
    pages = ["compare.md", "compare.csv", "compare_runtime.csv", "compare.html", "loss=mse/report.html"]
    before = {page: (root / page).read_bytes() for page in pages}
    for page in pages:
        (root / page).unlink()
    assert cli_main(["report", str(root)]) == 0
    assert {page: (root / page).read_bytes() for page in pages} == before
    assert cli_main(["report", str(root), "--judge", "heldout"]) == 2  # these tiny runs have no held-out model
    assert "not every variant has held-out IoUs" in capsys.readouterr().err
    assert (root / "compare.md").read_bytes() == before["compare.md"], "a refused rebuild leaves the pages"
    assert sorted(p.stat().st_mtime_ns for p in root.rglob("part-*.pt")) == parts, "report optimizes nothing"


def test_the_heldout_judge_counts_each_trajectory_at_its_frame_steps(tmp_path, mask_folder, tiny_generator):
    """`--judge auto` with a held-out model: one run per trajectory (12, not 6 pairs), said on the page."""
    from conftest import ColorSegmenter

    from silhouette_lightning.models.segmenters import SegmenterEnsemble

    heldout = SegmenterEnsemble([ColorSegmenter(2)], [1.0], 32)
    flags = tiny_flags(tmp_path, mask_folder, "--heldout", "deeplabv3_mobilenet_v3_large", "--compare", "loss=mse")
    root = run_tiny(flags, tiny_generator, decisive_ensemble(), lambda *a: None, heldout_model=heldout)
    md = (root / "compare.md").read_text()
    assert "Judged by the heldout IoU of each trajectory's best so far, scored at its frame steps only" in md
    runs_ = {r["statistic"]: r["value"] for r in read_csv(root / "compare_runtime.csv") if r["class"] == "all"}
    assert runs_["runs"] == "12"  # 3 masks x 2 classes x 2 restarts
    records = load_records(root / "loss=mse").values()
    assert all(len(r["heldout_history"]) == len(r["frame_steps"]) for r in records)


def test_random_alone_and_bad_judges_are_refused(tmp_path, mask_folder, tiny_generator, capsys):
    from silhouette_lightning.bench.benchmark import main

    assert main(["--data", str(mask_folder), "--masks", "--compare", "random", "--out", str(tmp_path)]) == 2
    assert "baseline for another variant" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--judge", "best"])


def test_a_variant_that_replaces_a_typed_flag_says_so_and_the_page_shows_what_differs(
    tmp_path, mask_folder, tiny_generator
):
    """Issue 23: appendix files set `starts: 0`; with `--starts 4` typed, the override is said, and compare.md
    shows every effective setting that differs (here starts, loss), not only the labels."""
    from silhouette_lightning.bench.benchmark import overridden_flags
    from silhouette_lightning.bench.variants import Variant

    said = overridden_flags([Variant("mse", {"loss": "mse", "starts": 0}, "mse.yaml")], {"starts": 4, "loss": None})
    assert said == ["benchmark: variant mse (mse.yaml) sets starts: 0, replacing --starts 4 given on the command line"]
    logs: list[str] = []
    flags = tiny_flags(tmp_path, mask_folder, "--starts", "4", "--compare", "appendix_c", "loss=mse")
    root = run_tiny(flags, tiny_generator, decisive_ensemble(), logs.append)
    assert sum("replacing --starts 4" in line for line in logs) == 2
    md = (root / "compare.md").read_text()
    table = md.split("## Settings that differ between the variants")[1].split("##")[0]
    assert "| variant | loss | starts |" in table and "| loss=mse | mse | 4 |" in table and "| mse | mse | 0 |" in table
    assert "Settings that differ" in (root / "compare.html").read_text()
