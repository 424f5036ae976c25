"""`train.py report FOLDER`: a run's statistics and pages rebuilt from its folder alone are the ones its end wrote,
bit for bit; folders that hold no run are refused by name, the others still rebuilt. (Benchmark folders:
tests/bench/test_random_search.py.)"""

from __future__ import annotations

from silhouette_lightning.cli import main

PAGES = ["convergence.csv", "convergence.json", "report.html", "plots/convergence_curves.png", "plots/runtime_ecdf.png"]


def test_a_run_folder_rebuilds_the_pages_its_end_wrote(cli_args, tmp_path, capsys):
    assert main(cli_args("--save-images", "none", name="done")) == 0
    run_dir = tmp_path / "out" / "done"
    before = {page: (run_dir / page).read_bytes() for page in PAGES}
    records = sorted(p.stat().st_mtime_ns for p in run_dir.rglob("part-*.pt"))
    for page in PAGES:
        (run_dir / page).unlink()
    capsys.readouterr()

    assert main(["report", str(run_dir), str(tmp_path / "out"), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert f"rebuilt: {run_dir / 'report.html'}" in err
    assert f"{tmp_path / 'out'} holds neither a run" in err and f"{tmp_path / 'missing'} is not a folder" in err
    assert {page: (run_dir / page).read_bytes() for page in PAGES} == before
    assert sorted(p.stat().st_mtime_ns for p in run_dir.rglob("part-*.pt")) == records, "nothing optimized"


def test_report_help_answers(capsys):
    import pytest

    with pytest.raises(SystemExit) as stop:
        main(["report", "--help"])
    assert stop.value.code == 0 and "Rebuild the statistics and pages" in capsys.readouterr().out
