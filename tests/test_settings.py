"""Settings a user can get wrong, through the CLI: each is one line on stderr and exit code 2, found before the
run folder is touched, so the corrected command then runs in the same folder."""

import pytest
import torch
from conftest import read_csv

from silhouette_lightning.cli import main


def _with(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    "flag, value, message",
    [("--precision", "7", "precision"), ("--strategy", "foo", "strategy"), ("--devices", "0", "--devices"),
     ("--devices", "-1", "devices"), ("--seg-size", "100000", "--seg-size must be at most"),
     ("--accelerator", "foo", "accelerator")],
)  # fmt: skip
def test_lightning_settings_the_run_cannot_use(cli_args, tmp_path, flag, value, message, capsys):
    assert main(_with(cli_args(), flag, value)) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "out" / "run" / "config.yaml").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_accelerator_without_a_gpu(cli_args, tmp_path, capsys):
    assert main(_with(cli_args(), "--accelerator", "gpu")) == 2
    assert "no usable CUDA GPU" in _one_line_error(capsys)
    assert not (tmp_path / "out" / "run").exists()


def test_corrected_command_runs_in_the_same_folder(cli_args, tmp_path, capsys):
    assert main(cli_args("--precision", "7", "--save-images", "none")) == 2
    assert main(cli_args("--save-images", "none")) == 0
    assert all(r["status"] == "ok" for r in read_csv(tmp_path / "out" / "run" / "results.csv"))


def test_several_nodes_without_a_meeting_point_are_refused(cli_args, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MASTER_PORT", raising=False)
    assert main(cli_args("--num-nodes", "2")) == 2
    line = _one_line_error(capsys)
    assert "MASTER_ADDR" in line and "MASTER_PORT" in line and "NODE_RANK" in line
    assert not (tmp_path / "out" / "run").exists()


@pytest.mark.slow
def test_several_nodes_say_what_they_wait_for_and_time_out(cli_args, tmp_path):
    """Node 0 of 2 alone: it names the address it waits at, then gives up with a usage error (a subprocess, so
    that no process group is left behind in the test process)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": "0",
                        "SILHOUETTE_NODE_TIMEOUT": "2", "TORCH_HOME": os.environ["TORCH_HOME"]}  # fmt: skip
    code = "import sys; from silhouette_lightning.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, *cli_args("--num-nodes", "2")], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"waiting for every node to join at 127.0.0.1:{port}" in done.stderr
    assert "did not all join" in done.stderr and "Traceback" not in done.stderr
    print(done.stderr)
