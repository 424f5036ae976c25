"""What a user adopting the package relies on: licence, one version, the console command, the printed config."""

import json
import os
import runpy
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from conftest import read_csv

import silhouette_lightning
from silhouette_lightning.cli import config_from_args, main, prog_name

ROOT = Path(__file__).resolve().parent.parent


def test_licence_is_mit_in_the_file_and_the_metadata():
    from setuptools.config.pyprojecttoml import read_configuration

    project = read_configuration(ROOT / "pyproject.toml")["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_version_is_written_once_and_packaging_reads_it():
    from setuptools.config.pyprojecttoml import read_configuration

    project = read_configuration(ROOT / "pyproject.toml")["project"]  # expands the dynamic version
    assert "version" in project["dynamic"]
    assert project["version"] == silhouette_lightning.__version__


def test_installed_metadata_has_the_same_version():
    try:
        dist = metadata.distribution("silhouette-lightning")
        origin = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    except metadata.PackageNotFoundError:
        pytest.skip("the package is not installed")
    if origin != ROOT.as_uri():
        pytest.skip(f"the installed package comes from {origin or 'an archive'}, not this checkout")
    assert dist.version == silhouette_lightning.__version__


def console_command() -> list[str]:
    """The installed `silhouette-swap` script, or (not installed) the same entry point with that argv[0]."""
    script = Path(sys.executable).parent / "silhouette-swap"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from silhouette_lightning.cli import main; sys.exit(main())"]


def checkout_env(**extra: str) -> dict[str, str]:
    """The environment for a child process that imports this checkout's package (not another install's)."""
    return os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def test_help_names_the_command_it_runs_as(monkeypatch, capsys):
    assert prog_name("/home/me/.venv/bin/silhouette-swap") == "silhouette-swap"
    assert prog_name("train.py") == prog_name("/src/silhouette-lightning/train.py") == "train.py"
    monkeypatch.setattr(sys, "argv", ["/home/me/.venv/bin/silhouette-swap", "--help"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: silhouette-swap ")
    # the real script, as a user types it
    done = subprocess.run(
        [*console_command(), "--help"], env=checkout_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: silhouette-swap "), done.stderr


def test_console_command_runs_the_same_job_as_train_py(cli_args, tmp_path, torch_home, monkeypatch):
    script_args = cli_args("--save-images", "none", "--image-every", "0", name="train_py")
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py"), *script_args])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
    assert exit_.value.code == 0

    command_args = cli_args("--save-images", "none", "--image-every", "0", name="command")
    done = subprocess.run(
        [*console_command(), *command_args],
        env=checkout_env(TORCH_HOME=str(torch_home)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    by_script = read_csv(tmp_path / "out" / "train_py" / "results.csv")
    assert by_script and all(r["status"] == "ok" for r in by_script)
    assert read_csv(tmp_path / "out" / "command" / "results.csv") == by_script


def test_printed_config_loads_back_to_the_same_settings(tmp_path, capsys):
    args = [
        "--config",
        "paper",
        "--restarts",
        "3",
        "--classes",
        '207,"tabby"',
        "--name",
        "a: b #c",
        "--devices",
        "auto",
        "--heldout",
        "none",
        "--lr",
        "0.05",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(["--print-config", *args]) == 0
    printed = capsys.readouterr().out
    assert not (tmp_path / "out").exists(), "--print-config must not start the run"
    settings = yaml.safe_load(printed)
    assert settings["restarts"] == 3 and settings["lr"] == 0.05 and settings["name"] == "a: b #c"
    assert settings["segmenters"] == "deeplabv3_resnet101:0.6,fcn_resnet101:0.4"  # from the paper file
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    assert config_from_args(["--config", str(saved)]) == config_from_args(args)
    assert main(["--print-config", "--config", str(saved)]) == 0
    assert capsys.readouterr().out == printed


def test_print_config_checks_the_settings(capsys):
    assert main(["--print-config", "--truncation", "2"]) == 2
    captured = capsys.readouterr()
    assert "truncation" in captured.err and captured.out == ""


def test_importing_the_run_module_leaves_warning_filters_alone():
    """The expected-warning filters hold while a run runs, not process-wide from an import."""
    import subprocess

    code = (
        "import warnings; import silhouette_lightning.run.job as r; "
        "ours = [f for f in warnings.filters if f[1] is not None and f[1].pattern in r.EXPECTED_WARNINGS]; "
        "assert not ours, ours"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
