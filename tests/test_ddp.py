"""Many devices, one answer: 2 CPU processes (DDP over gloo) give the results of one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_csv

ROOT = Path(__file__).resolve().parent.parent


def _train(args: list[str], torch_home: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"TORCH_HOME": str(torch_home), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)  # fmt: skip


@pytest.mark.slow
def test_two_processes_give_the_answer_of_one(cli_args, torch_home, tmp_path):
    # 3 sources x 2 classes ("goldfish" is class 1 again) x 2 restarts = 12 trajectories: chunks of 2 x 4
    # leave a padded last chunk
    one = _train(cli_args("--save-images", "best", "--devices", "1", name="one"), torch_home)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _train(cli_args("--save-images", "best", "--devices", "2", "--strategy", "ddp", name="two"), torch_home)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "Starting with 2 processes" in two.stdout + two.stderr, "the run did not use two processes"

    rows_one = read_csv(tmp_path / "out" / "one" / "results.csv")
    rows_two = read_csv(tmp_path / "out" / "two" / "results.csv")
    assert len(rows_two) == 6 and len({(r["source"], r["class_id"]) for r in rows_two}) == 6  # none lost or repeated
    for a, b in zip(rows_one, rows_two, strict=True):
        assert (a["source"], a["class_id"], a["best_restart"], a["best_step"]) == (
            b["source"], b["class_id"], b["best_restart"], b["best_step"])  # fmt: skip
        assert float(a["best_iou"]) == pytest.approx(float(b["best_iou"]), abs=1e-5)
        assert float(a["best_loss"]) == pytest.approx(float(b["best_loss"]), rel=1e-4)
        za = torch.load(tmp_path / "out" / "one" / a["output_dir"] / "latent.pt", weights_only=True)["z"]
        zb = torch.load(tmp_path / "out" / "two" / b["output_dir"] / "latent.pt", weights_only=True)["z"]
        assert torch.allclose(za, zb, atol=1e-5)
    # every trajectory recorded exactly once
    from silhouette_lightning.results import records_dir

    records = [
        r for p in records_dir(tmp_path / "out" / "two").glob("part-*.pt") for r in torch.load(p, weights_only=True)
    ]
    identities = [(r["source"], r["class_id"], r["restart"]) for r in records]
    assert len(identities) == len(set(identities)) == 12


@pytest.mark.slow
def test_sigkill_then_resume_loses_nothing_finished(cli_args, torch_home, tmp_path):
    """A run killed with SIGKILL mid-way, started again, ends with the table of an uninterrupted run."""
    import signal
    import time

    from silhouette_lightning.results import records_dir

    def args(name):
        a = cli_args("--save-images", "none", "--image-every", "0", name=name)
        a[a.index("--batch-size") + 1] = "1"  # 12 chunks: plenty of points to be killed at
        a[a.index("--steps") + 1] = "12"
        return a

    whole = _train(args("whole"), torch_home)
    assert whole.returncode == 0, whole.stderr[-3000:]
    env = os.environ | {"TORCH_HOME": str(torch_home)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args("killed")], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    parts = records_dir(tmp_path / "out" / "killed")
    deadline = time.monotonic() + 300
    while not list(parts.glob("part-*.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(parts.glob("part-*.pt")))
    assert 1 <= finished < 12, f"the kill should land mid-run ({finished} of 12 chunks written)"
    resumed = _train(args("killed"), torch_home)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_csv(tmp_path / "out" / "killed" / "results.csv") == read_csv(tmp_path / "out" / "whole" / "results.csv")


@pytest.mark.slow
def test_search_options_give_the_same_answer_on_two_processes(cli_args, torch_home, tmp_path):
    """Best-of-N scoring split over ranks, early stop, pruning and class vectors: 2 processes equal 1."""
    flags = ["--save-images", "none", "--starts", "3", "--class-lr", "0.01", "--patience", "1", "--prune-after", "1",
             "--prior-weight", "1"]  # fmt: skip
    one = _train(cli_args(*flags, "--devices", "1", name="one"), torch_home)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _train(cli_args(*flags, "--devices", "2", "--strategy", "ddp", name="two"), torch_home)
    assert two.returncode == 0, two.stderr[-3000:]
    from silhouette_lightning.results import load_records

    a, b = load_records(tmp_path / "out" / "one"), load_records(tmp_path / "out" / "two")
    assert a.keys() == b.keys() and len(a) == 12
    for identity, ra in a.items():
        rb = b[identity]
        assert (ra["seed"], ra["best_step"], ra["ended_at"], ra["ended_by"], ra["nearest_class"]) == (
            rb["seed"], rb["best_step"], rb["ended_at"], rb["ended_by"], rb["nearest_class"])  # fmt: skip
        assert torch.allclose(ra["best_z"], rb["best_z"], atol=1e-5)
        assert ra["best_loss"] == pytest.approx(rb["best_loss"], rel=1e-4)
