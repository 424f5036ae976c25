"""Many devices, one answer: 2 and 3 CPU processes (DDP over gloo) give the results of one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_csv

ROOT = Path(__file__).resolve().parents[2]


def _train(args: list[str], torch_home: Path) -> subprocess.CompletedProcess:
    # One intra-op thread in every run: Lightning gives each DDP process cores / processes threads, and a CPU
    # kernel's parallel reductions round differently with another thread count (1e-8 in z, not what is tested)
    env = os.environ | {"TORCH_HOME": str(torch_home), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_many_processes_give_the_answer_of_one(cli_args, torch_home, tmp_path, world):
    """Bit for bit: each row's gradient comes from one rank and is summed, never scaled and divided (with 3
    processes, `x * 3 / 3` differs from x by a rounding that Adam amplifies to 1e-2 in z within a few steps)."""
    # 3 sources x 2 classes ("goldfish" is class 1 again) x 2 restarts = 12 trajectories: with 2 processes,
    # chunks of 2 x 4 leave a padded last chunk; with 3, one chunk of 3 x 4
    one = _train(cli_args("--save-images", "best", "--devices", "1", name="one"), torch_home)
    assert one.returncode == 0, one.stderr[-3000:]
    many = _train(
        cli_args("--save-images", "best", "--devices", str(world), "--strategy", "ddp", "--verbose", name="many"),
        torch_home,
    )
    assert many.returncode == 0, many.stderr[-3000:]
    assert f"Starting with {world} processes" in many.stdout + many.stderr, f"the run did not use {world} processes"

    rows_one = read_csv(tmp_path / "out" / "one" / "results.csv")
    rows_many = read_csv(tmp_path / "out" / "many" / "results.csv")
    assert len(rows_many) == 6 and len({(r["source"], r["class_id"]) for r in rows_many}) == 6  # none lost or repeated
    for a, b in zip(rows_one, rows_many, strict=True):
        assert (a["source"], a["class_id"], a["best_restart"], a["best_step"], a["best_iou"]) == (
            b["source"],
            b["class_id"],
            b["best_restart"],
            b["best_step"],
            b["best_iou"],
        )
        assert float(a["best_loss"]) == pytest.approx(float(b["best_loss"]), rel=1e-6)
    # every trajectory recorded exactly once, with the latent of the one-process run
    from silhouette_lightning.outputs.records import records_dir

    def records(name):
        parts = records_dir(tmp_path / "out" / name).glob("part-*.pt")
        return [r for p in parts for r in torch.load(p, weights_only=True)]

    by_identity = {(r["source"], r["class_id"], r["restart"]): r for r in records("one")}
    identities = [(r["source"], r["class_id"], r["restart"]) for r in records("many")]
    assert len(identities) == len(set(identities)) == 12
    for r in records("many"):
        alone = by_identity[(r["source"], r["class_id"], r["restart"])]
        assert r["best_iou"] == alone["best_iou"] and r["best_step"] == alone["best_step"]
        assert torch.equal(r["best_z"], alone["best_z"]), (r["best_z"] - alone["best_z"]).abs().max()
        assert torch.equal(r["frames"], alone["frames"]), (r["frames"] - alone["frames"]).abs().max()
    # the same convergence statistics (wall-clock seconds aside), from histories gathered over both ranks
    from silhouette_lightning.outputs.convergence import read_convergence

    def timeless(run):
        return {
            (r["class"], r["subject"], r["step"], r["statistic"]): r["value"]
            for r in read_convergence(tmp_path / "out" / run)
            if not r["statistic"].startswith("seconds")
        }

    assert timeless("many") == pytest.approx(timeless("one"), abs=1e-5)
    assert (tmp_path / "out" / "many" / "report.html").exists()


@pytest.mark.slow
def test_sigkill_then_resume_loses_nothing_finished(cli_args, torch_home, tmp_path):
    """A run killed with SIGKILL mid-way, started again, ends with the table of an uninterrupted run."""
    import signal
    import time

    from silhouette_lightning.outputs.records import records_dir

    def args(name):
        a = cli_args("--save-images", "none", "--image-every", "0", name=name)
        a[a.index("--batch-size") + 1] = "1"  # 12 chunks: plenty of points to be killed at
        a[a.index("--steps") + 1] = "12"
        return a

    whole = _train(args("whole"), torch_home)
    assert whole.returncode == 0, whole.stderr[-3000:]
    env = os.environ | {"TORCH_HOME": str(torch_home)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args("killed")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
    flags = [
        "--save-images",
        "none",
        "--starts",
        "3",
        "--class-lr",
        "0.01",
        "--patience",
        "1",
        "--prune-after",
        "1",
        "--prior-weight",
        "1",
    ]
    one = _train(cli_args(*flags, "--devices", "1", name="one"), torch_home)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _train(cli_args(*flags, "--devices", "2", "--strategy", "ddp", name="two"), torch_home)
    assert two.returncode == 0, two.stderr[-3000:]
    from silhouette_lightning.outputs.records import load_records

    a, b = load_records(tmp_path / "out" / "one"), load_records(tmp_path / "out" / "two")
    assert a.keys() == b.keys() and len(a) == 12
    for identity, ra in a.items():
        rb = b[identity]
        assert (ra["seed"], ra["best_step"], ra["ended_at"], ra["ended_by"], ra["nearest_class"]) == (
            rb["seed"],
            rb["best_step"],
            rb["ended_at"],
            rb["ended_by"],
            rb["nearest_class"],
        )
        assert torch.allclose(ra["best_z"], rb["best_z"], atol=1e-5)
        assert ra["best_loss"] == pytest.approx(rb["best_loss"], rel=1e-4)
