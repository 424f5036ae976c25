"""Resuming as users do it: after changing the folder, with equivalent flags, on a finished run, twice at once."""

import os
import shutil

import torch
from conftest import draw_mask, read_csv

from silhouette_lightning.cli import main
from silhouette_lightning.results import records_dir


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
