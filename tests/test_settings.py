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
