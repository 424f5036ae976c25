"""What a user sees and can repeat: the tool's own lines (no Lightning chatter unless --verbose), a progress bar in
trajectories, --version, and --deterministic runs that repeat bit for bit at the machine's default thread count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_csv

from silhouette_lightning import __version__
from silhouette_lightning.cli import main
from silhouette_lightning.engine import data as data_module
from silhouette_lightning.outputs.records import load_records

ROOT = Path(__file__).resolve().parents[2]
LIGHTNING_CHATTER = ("GPU available", "TPU available", "litlogger", "`Trainer.fit` stopped", "Epoch 0")


def test_a_run_says_the_tools_lines_only(cli_args, capfd, caplog, monkeypatch):
    """Lightning's messages go to its own stderr handler, or to the root logger's when one is set up before it is
    imported (pytest's, in a whole test session): both are looked at. A large plan is announced before planning
    (the bar lowered to this run's 12 trajectories), and every run says its bound and, after its first steps, its
    time."""
    monkeypatch.setattr(data_module, "LARGE_PLAN", 12)
    assert main(cli_args("--save-images", "none", name="quiet")) == 0
    out, err = capfd.readouterr()
    said = out + err + caplog.text
    assert not [c for c in LIGHTNING_CHATTER if c in said], said[-2000:]
    assert "run folder:" in err and "results:" in err and "report.html" in err
    bar = err.replace("\r", "\n")
    assert "swapping" in bar and "12/12 trajectories" in bar, bar[-1500:]  # 3 sources x 2 classes x 2 restarts
    assert "planning 12 trajectories (3 source(s) x classes x 2 restarts)" in err
    assert "12 trajectories in chunks of 4 rows: at most " in err, err[-2000:]
    estimate = [line for line in bar.splitlines() if "estimate: " in line]
    assert len(estimate) == 1 and " s per chunk step, at most " in estimate[0], estimate

    assert main(cli_args("--save-images", "none", "--verbose", name="verbose")) == 0
    out, err = capfd.readouterr()
    assert "GPU available" in out + err + caplog.text, "--verbose shows Lightning's own messages"


def test_version_answers_without_a_run(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip().endswith(__version__)


def _latents(run_dir: Path) -> dict:
    return {key: r["best_z"] for key, r in load_records(run_dir).items()}


def test_deterministic_runs_repeat_for_any_batch_size_at_the_default_thread_count(cli_args, tmp_path):
    """Without --deterministic, the thread count and batch shape change how CPU reductions round (README); with it,
    batch 4 and batch 7 write the same table and the same latents bit for bit, whatever threads torch has."""
    threads = torch.get_num_threads()
    b4 = cli_args("--save-images", "none", "--deterministic", name="b4")
    b7 = cli_args("--save-images", "none", "--deterministic", name="b7")
    b7[b7.index("--batch-size") + 1] = "7"
    assert main(b4) == 0 and main(b7) == 0
    assert torch.get_num_threads() == threads, "the thread count is restored after the run"
    out = tmp_path / "out"
    assert read_csv(out / "b4" / "results.csv") == read_csv(out / "b7" / "results.csv")
    four, seven = _latents(out / "b4"), _latents(out / "b7")
    assert four.keys() == seven.keys() and all(torch.equal(four[k], seven[k]) for k in four)
    assert "deterministic: true" in (out / "b4" / "config.yaml").read_text()


@pytest.mark.slow
def test_deterministic_runs_repeat_for_one_and_two_processes(cli_args, torch_home, tmp_path):
    """1 and 2 CPU processes with the machine's default threads (no OMP_NUM_THREADS): the same latents."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"TORCH_HOME": str(torch_home)}

    def train(*extra: str, name: str) -> str:
        args = [
            sys.executable,
            str(ROOT / "train.py"),
            *cli_args("--save-images", "none", "--deterministic", *extra, name=name),
        ]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    train("--devices", "1", name="one")
    err = train("--devices", "2", "--strategy", "ddp", name="two")
    assert err.count("run folder:") == 1 and err.count("results:") == 1, "rank 0's lines, once"
    assert "deprecated" not in err and "Warning" not in err, err[-2000:]
    one, two = _latents(tmp_path / "out" / "one"), _latents(tmp_path / "out" / "two")
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


def test_a_run_stopped_by_sigterm_exits_143_and_keeps_what_is_finished(cli_args, torch_home, tmp_path):
    """SLURM, `timeout` and `&&` chains must tell a stopped run from a finished one: 128 + SIGTERM."""
    import signal
    import time

    env = os.environ | {"TORCH_HOME": str(torch_home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = cli_args("--save-images", "none", "--steps", "40", "--batch-size", "2", name="term")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    records = tmp_path / "out" / "term" / "trajectories"
    deadline = time.monotonic() + 300
    while not (records.is_dir() and any(records.glob("part-*.pt"))) and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert "run the same command again to resume" in err
    assert 0 < len(read_csv(tmp_path / "out" / "term" / "results.csv")) < 6


def test_outputs_are_written_with_the_users_umask(cli_args, tmp_path):
    """results.csv, report.html and the pictures are readable by others under umask 022 (not mkstemp's 0600)."""
    old = os.umask(0o022)
    try:
        assert main(cli_args("--save-images", "best", name="perm")) == 0
    finally:
        os.umask(old)
    run = tmp_path / "out" / "perm"
    pictures = sorted(p for p in (run / "swaps").rglob("*.png") if p.is_file())
    assert not [p for p in (run / "swaps").rglob("*.png") if p.is_dir()], "no folder is named like a picture"
    files = [run / "results.csv", run / "report.html", *pictures[:3]]
    assert len(files) == 5 and all(f.stat().st_mode & 0o777 == 0o644 for f in files), [
        (f.name, oct(f.stat().st_mode & 0o777)) for f in files
    ]
