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
    [
        ("--precision", "7", "precision"),
        ("--strategy", "foo", "strategy"),
        ("--devices", "0", "--devices"),
        ("--devices", "-1", "devices"),
        ("--seg-size", "100000", "--seg-size must be at most"),
        ("--accelerator", "foo", "accelerator"),
    ],
)
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
    env = os.environ | {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "NODE_RANK": "0",
        "SILHOUETTE_NODE_TIMEOUT": "2",
        "TORCH_HOME": os.environ["TORCH_HOME"],
    }
    code = "import sys; from silhouette_lightning.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, *cli_args("--num-nodes", "2")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert f"waiting for every node to join at 127.0.0.1:{port}" in done.stderr
    assert "did not all join" in done.stderr and "Traceback" not in done.stderr
    print(done.stderr)


@pytest.mark.parametrize(
    "line, expected",
    [
        ('truncation: "high"', "truncation must be a finite number, got 'high' (text)"),
        ("betas: 0.5", "betas must be a list of 2 finite numbers"),
        ('image_every: "x"', "image_every must be a whole number"),
        ("default_classes: [1, 2]", "default_classes must be a mapping of text to a list"),
        ('lr: "0.1"', "lr must be a finite number, got '0.1' (text); write numbers without quotes"),
        ("lr: .inf", "lr must be a finite number, got inf"),
        ("compile: maybe", "compile must be one of auto, none, ensemble, all"),
        ("pretrained: maybe", "pretrained must be true or false"),
    ],
)
def test_config_file_values_of_the_wrong_type(cli_args, tmp_path, line, expected, capsys):
    config = tmp_path / "settings.yaml"
    config.write_text(line + "\n")
    assert main(cli_args("--config", str(config))) == 2
    error = _one_line_error(capsys)
    assert expected in error and "must be positive" not in error
    assert not (tmp_path / "out" / "run").exists()


def test_non_utf8_config_file(cli_args, tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("subject: chien # \xe9t\xe9\n".encode("latin-1"))
    assert main(cli_args("--config", str(config))) == 2
    assert "not UTF-8" in _one_line_error(capsys)


def test_every_setting_is_type_checked():
    """Generic: a value of no setting's type is refused for every field, including ones added later."""
    import dataclasses

    from silhouette_lightning.config.settings import SwapConfig, validate
    from silhouette_lightning.core.errors import UsageError

    for f in dataclasses.fields(SwapConfig):
        with pytest.raises(UsageError, match=f"setting {f.name} must be "):
            validate(dataclasses.replace(SwapConfig(), **{f.name: object()}))


def test_numbers_are_kept_exact_and_whole_numbers_accepted_where_numbers_are_expected(tmp_path):
    from silhouette_lightning.config.settings import build_config

    config = build_config({"lr": 1, "betas": [0, 0.9]})
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.betas == (0.0, 0.9)


def test_non_finite_flags_are_refused(cli_args, capsys):
    for value in ("inf", "nan"):
        assert main(cli_args("--lr", value)) == 2
        assert "lr must be a finite number" in _one_line_error(capsys)


def test_a_pair_whose_restarts_all_stopped_is_failed(cli_args, tmp_path):
    """A finite but absurd --lr sends every latent to infinity after its first step: nothing usable was found."""
    assert main(cli_args("--lr", "1e30", "--save-images", "none")) == 0
    rows = read_csv(tmp_path / "out" / "run" / "results.csv")
    assert rows and all(r["stopped_restarts"] == r["restarts"] for r in rows), rows
    assert all(r["status"].startswith("failed: every restart") for r in rows), [r["status"] for r in rows]


def test_help_says_each_default_once(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # help wraps lines
    assert "(default: None)" not in text
    assert text.count("(default 8)") == 1 and "Adam learning rate (default 0.1)" in text
    flags = [word for word in text.split() if word.startswith("--")]
    for flag in set(flags):
        help_of_flag = text.split(f"{flag} ", 2)[-1].split(" --", 1)[0]
        assert help_of_flag.count("default") <= 1, (flag, help_of_flag)


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_a_class_list_naming_no_class_is_an_error(cli_args, tmp_path, value, capsys):
    assert main(_with(cli_args(), "--classes", value)) == 2
    assert "--classes names no class" in _one_line_error(capsys)
    assert not (tmp_path / "out" / "run").exists()


@pytest.mark.parametrize("name", ["../escaped", "a/b", "..", ".", "/tmp/elsewhere"])
def test_the_run_folder_stays_inside_out(cli_args, tmp_path, name, capsys):
    assert main(cli_args(name=name)) == 2
    assert "--name must be a folder name inside --out" in _one_line_error(capsys)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out").exists()


def test_every_missing_pretrained_file_is_named_in_one_message(cli_args, tmp_path, monkeypatch, capsys):
    """Offline, with an empty cache: the generator's two files and each segmenter's checkpoint, all at once."""
    import urllib.error

    from silhouette_lightning.models import fetch
    from silhouette_lightning.models.segmenters import segmenter_weights_path

    def offline(request, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(fetch, "urlopen", offline)
    monkeypatch.setenv("SILHOUETTE_CACHE", str(tmp_path / "cache"))
    args = _with(cli_args(), "--generator", "biggan-deep-128")
    args = _with(args, "--segmenters", "deeplabv3_resnet101:0.6,fcn_resnet101:0.4")
    assert main(_with(args, "--heldout", "fcn_resnet50")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "5 pretrained file(s) are missing" in err, err
    biggan = tmp_path / "cache" / "biggan" / "biggan-deep-128"
    wanted = [biggan / "config.json", biggan / "pytorch_model.bin"] + [
        segmenter_weights_path(name)[0] for name in ("deeplabv3_resnet101", "fcn_resnet101", "fcn_resnet50")
    ]
    for path in wanted:
        assert str(path) in err and not path.exists(), path
    assert not (tmp_path / "out" / "run" / "config.yaml").exists()  # (the folder's lock may be there)
