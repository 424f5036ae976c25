"""Faults a new user hit (issue 23): each one refused with one line before any work, or handled, and tested."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest

from silhouette_lightning.cli import main
from silhouette_lightning.config.settings import SwapConfig
from silhouette_lightning.run.lightning import cpu_process_problem


def test_cpu_devices_beyond_the_cores_or_the_memory_are_refused():
    config = replace(SwapConfig(), accelerator="cpu", devices=64)
    assert "this machine has 2 cores: use --devices 2 or fewer" in cpu_process_problem(config, cores=2, memory_gb=23)
    assert cpu_process_problem(replace(config, devices=3), cores=2, memory_gb=23) is None  # an odd world size
    assert "at most 4" in cpu_process_problem(replace(config, devices=5), cores=2, memory_gb=23)
    assert "GB are available" in cpu_process_problem(replace(config, devices=8), cores=16, memory_gb=2.0)
    assert cpu_process_problem(replace(config, accelerator="gpu"), cores=2, memory_gb=1) is None  # not processes


def test_devices_64_on_the_cpu_exits_2_before_any_work(capsys, tmp_path):
    assert main(["--data", str(tmp_path), "--devices", "64", "--accelerator", "cpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--devices 64 on the CPU" in err
    assert not any(tmp_path.iterdir()), "nothing written"


def test_a_rank_started_by_rank_zero_dies_with_it(tmp_path):
    """No orphans: a child with LOCAL_RANK > 0 that called die_with_parent ends when its parent is SIGKILLed."""
    pid_file = tmp_path / "child.pid"
    parent = textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = (
            "import time; from silhouette_lightning.run.lightning import die_with_parent; die_with_parent(); "
            "open({str(pid_file)!r}, 'w').write(str(__import__('os').getpid())); time.sleep(120)"
        )
        subprocess.Popen([sys.executable, "-c", child], env=os.environ | {{"LOCAL_RANK": "1"}})
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its parent")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--classes", "tabbyy"], "did you mean: tabby"),
        (["--classes", "5000"], "out of range"),
        (["--data", "/nonexistent/folder"], "does not exist"),
    ],
)
def test_print_config_checks_what_it_prints(flags, message, capsys):
    assert main([*flags, "--print-config"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err


def test_yaml_exponents_read_as_text_say_how_to_write_them(tmp_path, capsys):
    path = tmp_path / "e.yaml"
    path.write_text("steps: 1e2\nlr: 1e-3\n")
    assert main(["--config", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "YAML reads 1e2 as text: write 100" in err and "write 0.001" in err and "without quotes" not in err


def test_a_variant_given_twice_says_so(capsys):
    from silhouette_lightning.bench.benchmark import main as benchmark_main

    assert benchmark_main(["--compare", "loss=mse", "loss=mse"]) == 2
    assert "loss=mse is given twice" in capsys.readouterr().err


def test_the_out_of_range_error_names_the_classes_of_this_datas_subjects():
    """A generator of 4 classes: only the dog's default classes are named, not every subject's."""
    from silhouette_lightning.config.checks import check_class_range, class_chooser

    config = replace(SwapConfig(), classes=None, default_classes={"dog": [1, 7], "cat": [281, 285]})
    chooser = class_chooser(config)
    with pytest.raises(Exception, match=r"\[7\]") as refused:
        check_class_range(chooser.ids_for({"dog"}), 4)
    assert "281" not in str(refused.value)
    assert chooser.ids_for(None) == [1, 7, 281, 285], "subjects unknown: every default"


def test_random_weights_are_said_on_the_report_and_the_work_before_it_starts(cli_args, tmp_path, capsys):
    assert main(cli_args("--save-images", "none", "--config", str(_random_weights(tmp_path)), name="random")) == 0
    err = capsys.readouterr().err
    assert "to do: 6 (source, class) pairs x 2 restarts = 12 trajectories of up to 3 steps" in err
    page = (tmp_path / "out" / "random" / "report.html").read_text()
    assert "Random segmenter weights" in page


def _random_weights(tmp_path):
    path = tmp_path / "random.yaml"
    path.write_text("pretrained: false\nheldout: none\n")
    return path


def test_captions_draw_non_latin_names_not_boxes():
    """Two different Greek (or Cyrillic) names of the same length draw differently: a font without those letters
    draws the same box for each."""
    from PIL import Image, ImageChops

    from silhouette_lightning.outputs.pictures.text import _font, label

    def drawn(text):
        return label(Image.new("RGB", (160, 40), (0, 0, 0)), text)

    assert _font().getname()[0] == "DejaVu Sans"
    for a, b in (("αβγδ", "ζηθλ"), ("кошка", "собак")):
        assert ImageChops.difference(drawn(a), drawn(b)).getbbox() is not None, (a, b)


def test_a_benchmark_offline_names_every_missing_file_and_writes_nothing(cli_args, tmp_path, monkeypatch, capsys):
    """Two variants with other segmenters, no network: one error naming the files of both, no benchmark.yaml."""
    from silhouette_lightning.models import fetch
    from silhouette_lightning.models.segmenters import segmenter_weights_path

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(fetch, "urlopen", offline)
    argv = ["benchmark", *cli_args(name="offline"), "--heldout", "none"]
    argv += ["--compare", "segmenters=fcn_resnet50", "segmenters=deeplabv3_resnet50"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for name in ("fcn_resnet50", "deeplabv3_resnet50"):
        assert segmenter_weights_path(name)[0].name in err, name
    assert not (tmp_path / "out" / "offline" / "benchmark.yaml").exists()


def test_fresh_replaces_a_run_folder_and_the_refusal_names_it(cli_args, tmp_path, capsys):
    """Issue 23: a folder a run left is resumed (same settings) or replaced with --fresh (a clear choice)."""
    assert main(cli_args("--save-images", "none", name="again")) == 0
    run = tmp_path / "out" / "again"
    before = sorted(p.name for p in (run / "trajectories").iterdir())
    assert main(cli_args("--save-images", "none", "--lr", "0.05", name="again")) == 2
    assert "--fresh to replace this one" in capsys.readouterr().err
    assert main(cli_args("--save-images", "none", "--lr", "0.05", "--fresh", name="again")) == 0
    assert "--fresh: emptied" in capsys.readouterr().err
    after = sorted(p.name for p in (run / "trajectories").iterdir())
    assert after and not set(after) & set(before), "every record was made again"
    assert "lr: 0.05" in (run / "config.yaml").read_text()


def test_fresh_never_empties_a_folder_that_holds_no_run(cli_args, tmp_path, capsys):
    keep = tmp_path / "out" / "mine" / "thesis.tex"
    keep.parent.mkdir(parents=True)
    keep.write_text("years of work")
    assert main(cli_args("--save-images", "none", "--fresh", name="mine")) == 2
    assert "not emptying it" in capsys.readouterr().err and keep.read_text() == "years of work"
