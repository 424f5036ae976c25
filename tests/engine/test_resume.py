"""Resuming as users do it: after changing the folder, with equivalent flags, on a finished run, twice at once."""

import os
import shutil

import pytest
import torch
from conftest import draw_mask, interrupted_after_first_chunk, read_csv

from silhouette_lightning.cli import main
from silhouette_lightning.outputs.records import records_dir


def _args(cli_args, *extra, **kwargs):
    """One class, best pictures only: the smallest run that still writes every kind of output."""
    args = cli_args("--save-images", "best", "--image-every", "0", *extra, **kwargs)
    args[args.index("--classes") + 1] = "1"
    return args


def test_changed_source_is_redone_and_removed_source_leaves_the_table(cli_args, mask_folder, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(mask_folder, data)
    assert main(_args(cli_args, data=data)) == 0
    run = tmp_path / "out" / "run"
    before = {r["source"]: r for r in read_csv(run / "results.csv")}
    old_target = (run / before["dog/b.png"]["output_dir"] / "target.png").read_bytes()

    # new content for b.png (and a new mtime, as any copy or edit gives); c.png removed; a.png only touched
    draw_mask(data / "dog" / "b.png", (20, 2, 46, 20))
    stat = os.stat(data / "dog" / "b.png")
    os.utime(data / "dog" / "b.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    (data / "dog" / "c.png").unlink()
    stat = os.stat(data / "dog" / "a.png")
    os.utime(data / "dog" / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    capsys.readouterr()
    assert main(_args(cli_args, data=data)) == 0
    err = capsys.readouterr().err
    assert "dog/b.png" in err and "changed" in err

    fresh = tmp_path / "fresh"
    shutil.copytree(data, fresh)
    assert main(_args(cli_args, name="fresh", data=fresh)) == 0
    after = read_csv(run / "results.csv")
    assert [r["source"] for r in after] == ["dog/a.png", "dog/b.png"], "a removed source left the table"
    assert after == read_csv(tmp_path / "out" / "fresh" / "results.csv"), "the changed source was not redone"
    assert after[0] == before["dog/a.png"]
    assert (run / after[1]["output_dir"] / "target.png").read_bytes() != old_target
    for name in ("target.png", "best.png", "mask.png"):
        redone = (run / after[1]["output_dir"] / name).read_bytes()
        assert redone == (tmp_path / "out" / "fresh" / after[1]["output_dir"] / name).read_bytes(), name
    sources = [r["source"] for p in records_dir(run).glob("part-*.pt") for r in torch.load(p, weights_only=True)]
    assert sources.count("dog/a.png") == 2, "a.png (touched, same content) was redone"
    assert sources.count("dog/b.png") == 2, "b.png's old records were kept"


def test_same_folder_and_classes_written_differently_resume(cli_args, mask_folder, tmp_path, monkeypatch, capsys):
    def args(data, classes):
        a = _args(cli_args, "--save-images", "none", data=data)
        a[a.index("--classes") + 1] = classes
        return a

    assert main(args(mask_folder, "1,3")) == 0
    table = read_csv(tmp_path / "out" / "run" / "results.csv")
    monkeypatch.chdir(mask_folder.parent)
    for data, classes in (("./masks", "3,1"), ("masks/", "tiger shark,1"), ("masks/dog/..", "1,3,1")):
        assert main(args(data, classes)) == 0, capsys.readouterr().err
        assert "other settings" not in capsys.readouterr().err
        assert sorted(map(str, read_csv(tmp_path / "out" / "run" / "results.csv"))) == sorted(map(str, table))
    assert main([*args("masks/dog", "1,3"), "--subject", "dog"]) == 2, "another data folder is another run"
    assert "other settings" in capsys.readouterr().err


def test_rerun_of_a_finished_run_says_so_without_lightning_warnings(cli_args, capsys):
    assert main(_args(cli_args)) == 0
    capsys.readouterr()
    assert main(_args(cli_args)) == 0
    err = capsys.readouterr().err
    assert "all 3 (source, class) pairs already done" in err
    for noise in ("No training batches", "zero", "Warning", "warn"):
        assert noise not in err, noise


def test_resumed_run_counts_pairs_and_continues_tensorboard_steps(cli_args, tmp_path, monkeypatch, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = _args(cli_args, "--save-images", "none", "--log-every", "1")
    args[args.index("--batch-size") + 1] = "2"  # 3 chunks of one (source, class) pair each
    with interrupted_after_first_chunk(monkeypatch), pytest.raises(SystemExit):
        main(args)
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 of 3 (source, class) pairs already done, 2 to go" in err, err

    files = sorted((tmp_path / "out" / "run" / "tensorboard").glob("events.out.tfevents.*"))
    steps = []
    for path in files:
        events = EventAccumulator(str(path)).Reload()
        if "train/loss" in events.Tags()["scalars"]:
            steps.append([e.step for e in events.Scalars("train/loss")])
    killed, resumed = steps
    assert killed and max(killed) < 4, "the killed run got through one chunk: 3 steps + 1 scoring step"
    assert resumed == list(range(4, 12)), "the resumed run's steps go on from the killed run's"


def test_second_run_on_a_folder_in_use_fails_at_once_and_names_the_first(cli_args, tmp_path, monkeypatch, capsys):
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from silhouette_lightning.run import job as run_module

    run_dir = tmp_path / "out" / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from silhouette_lightning.core.run_lock import run_folder_lock\n"
            f"with run_folder_lock({str(run_dir)!r}):\n    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout.readline() == "held\n"

        def no_load(*args, **kwargs):
            raise AssertionError("weights were loaded for a run that cannot start")

        with monkeypatch.context() as patched:
            patched.setattr(run_module, "load_generator", no_load)
            assert main(_args(cli_args)) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid} on {socket.gethostname()}" in err and "--name" in err and "Traceback" not in err
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder's lock file stays, and must not block
        holder.wait()
    assert (run_dir / ".lock").exists()
    assert main(_args(cli_args, "--save-images", "none")) == 0


def test_full_disk_says_which_file_keeps_results_and_resumes(cli_args, tmp_path, monkeypatch, capsys):
    import errno

    from silhouette_lightning.core import files

    args = _args(cli_args, "--save-images", "none")
    args[args.index("--batch-size") + 1] = "2"  # 3 chunks of one (source, class) pair each
    original, written = files._write_synced, []

    def disk_full_at_second_records_file(fd, data, path):
        if path.name.startswith("part-"):
            written.append(path)
            if len(written) == 2:
                os.close(fd)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(fd, data, path)

    with monkeypatch.context() as patched:
        patched.setattr(files, "_write_synced", disk_full_at_second_records_file)
        assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "stopped:" not in err
    [line] = [line for line in err.splitlines() if "No space left on device" in line]
    assert str(written[1]) in line and "finished results are kept" in line and "same command" in line
    assert [r["status"] for r in read_csv(tmp_path / "out" / "run" / "results.csv")] == ["ok"]

    assert main(args) == 0
    assert "1 of 3 (source, class) pairs already done, 2 to go" in capsys.readouterr().err
    assert [r["status"] for r in read_csv(tmp_path / "out" / "run" / "results.csv")] == ["ok"] * 3
