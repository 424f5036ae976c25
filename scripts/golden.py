"""Golden tiny runs: record what a set of small CLI-equivalent runs write, then check that later code writes the same
bit for bit (refactors must not change behaviour).

    python scripts/golden.py record /tmp/golden.json   # before a change
    python scripts/golden.py check /tmp/golden.json    # after it: exit 1 and the first differences if any

Every run uses tiny random models (built the same way each time), one intra-op thread (CPU reductions round with the
thread count), and covers the plain search, best-of-N, class vectors, the prior, early stop, pruning with refills,
photos with composites, and the recovery benchmark with two variants. The digest holds results.csv, classes.csv,
convergence.csv (wall-clock statistics left out), every record's tensors and numbers (seconds left out), every
latent.pt and the bytes of every PNG under swaps/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

TIMING = ("seconds",)  # wall-clock numbers: never the same twice


def _tiny_models(size: int):
    from silhouette_lightning.models.biggan import build_random_generator, tiny_biggan_config
    from silhouette_lightning.models.tiny import decisive_ensemble

    return build_random_generator(tiny_biggan_config(), seed=0), decisive_ensemble(size)


def _photos(folder: Path) -> Path:
    """Two seeded colour photos (non-square: the fit and composite paths run)."""
    import torch
    from PIL import Image

    g = torch.Generator().manual_seed(7)
    for i, (h, w) in enumerate([(40, 56), (48, 36)]):
        pixels = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
        (folder / "dog").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / "dog" / f"photo{i}.png")
    return folder


SWAP_RUNS = {
    "plain": ["--starts", "0", "--restarts", "3", "--steps", "6", "--batch-size", "4"],
    "best_of_n": [
        "--starts",
        "12",
        "--restarts",
        "3",
        "--steps",
        "5",
        "--batch-size",
        "5",
        "--class-lr",
        "0.01",
        "--prior-weight",
        "0.1",
    ],
    "early_prune": [
        "--starts",
        "0",
        "--restarts",
        "4",
        "--steps",
        "6",
        "--batch-size",
        "6",
        "--stop-iou",
        "0.7",
        "--patience",
        "2",
        "--prune-after",
        "2",
    ],
}


def _run_all(out: Path) -> list[Path]:
    import torch

    torch.set_num_threads(1)
    from silhouette_lightning.cli import _parse
    from silhouette_lightning.run.job import run

    generator, ensemble = _tiny_models(32)
    common = [
        "--masks",
        "--classes",
        "1,3",
        "--seg-size",
        "32",
        "--accelerator",
        "cpu",
        "--frames",
        "3",
        "--heldout",
        "none",
        "--out",
        str(out),
        "--image-every",
        "2",
    ]
    done = []
    for name, extra in SWAP_RUNS.items():
        config, _ = _parse(["--data", str(ROOT / "data" / "samples"), *common, *extra, "--name", name])
        done.append(run(config, generator=generator, ensemble=ensemble, enable_progress_bar=False, log=lambda *a: None))
    photos = _photos(out / "photos-data")
    config, _ = _parse(
        [
            "--data",
            str(photos),
            *[c for c in common if c != "--masks"],
            "--starts",
            "0",
            "--restarts",
            "2",
            "--steps",
            "4",
            "--batch-size",
            "3",
            "--fit",
            "pad",
            "--name",
            "photos",
        ]
    )
    done.append(run(config, generator=generator, ensemble=ensemble, enable_progress_bar=False, log=lambda *a: None))
    from silhouette_lightning.bench import benchmark as bench

    settings, variants, base = bench.parse_args(
        [
            "--recovery",
            "--classes",
            "1",
            "--shifts",
            "0,3",
            "--rotations",
            "0",
            "--restarts",
            "2",
            "--steps",
            "4",
            "--batch-size",
            "4",
            "--starts",
            "0",
            "--seg-size",
            "32",
            "--accelerator",
            "cpu",
            "--heldout",
            "none",
            "--frames",
            "2",
            "--out",
            str(out),
            "--name",
            "recovery",
            "--compare",
            "loss=mse",
            "loss=bce_bg",
        ]
    )
    root = bench.run_benchmark(
        settings, variants, base, generator=generator, ensemble=ensemble, enable_progress_bar=False, log=lambda *a: None
    )
    done += [root / v.folder for v in variants]
    return done


def _tensor_digest(t) -> str:
    import torch

    t = t.detach().cpu().contiguous()
    return (
        f"{t.dtype}{list(t.shape)}:" + hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()[:16]
        if t.numel()
        else f"{t.dtype}{list(t.shape)}"
    )


def _value(v):
    import torch

    if isinstance(v, torch.Tensor):
        return _tensor_digest(v)
    if isinstance(v, dict):
        return {k: _value(x) for k, x in sorted(v.items()) if k not in TIMING}
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    return v


def _csv_without_timing(path: Path) -> list[str]:
    """The rows of a CSV file without wall-clock columns (`seconds_*`) or rows (`statistic` seconds_*)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        ",".join(f"{k}={v}" for k, v in row.items() if "seconds" not in k)
        for row in rows
        if "seconds" not in row.get("statistic", "")
    ]


def digest(run_dirs: list[Path], out: Path) -> dict:
    import torch

    result = {}
    for run_dir in run_dirs:
        entry: dict = {}
        for name in ("results.csv", "classes.csv"):
            if (run_dir / name).exists():
                entry[name] = (run_dir / name).read_text().splitlines()
        if (run_dir / "convergence.csv").exists():
            entry["convergence.csv"] = _csv_without_timing(run_dir / "convergence.csv")
        records = []
        for path in sorted((run_dir / "trajectories").glob("part-*.pt")):
            records += torch.load(path, weights_only=True)
        records.sort(key=lambda r: (r["source"], r["class_id"], r["restart"]))
        entry["records"] = [_value(r) for r in records]
        for path in sorted(p for p in (run_dir / "swaps").rglob("*") if p.is_file()):
            if path.suffix == ".pt":
                entry[str(path.relative_to(run_dir))] = _value(torch.load(path, weights_only=True))
            elif path.suffix in (".png", ".gif"):
                entry[str(path.relative_to(run_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        result[str(run_dir.relative_to(out))] = entry
    for name in ("compare.csv", "recovery.csv"):
        path = out / "recovery" / name
        if path.exists():
            result[f"recovery/{name}"] = _csv_without_timing(path)
    return result


def _differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = [f"{where}/{k}: only in the recording" for k in a if k not in b]
        diffs += [f"{where}/{k}: only now" for k in b if k not in a]
        for k in a:
            if k in b:
                diffs += _differences(a[k], b[k], f"{where}/{k}")
        return diffs
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items recorded, {len(b)} now"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} recorded, {b!r} now"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("record", "check"))
    p.add_argument("file", type=Path)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        now = digest(_run_all(out), out)
    if args.action == "record":
        args.file.write_text(json.dumps(now, indent=1))
        print(f"recorded {sum(len(v) for v in now.values())} entries in {args.file}")
        return 0
    recorded = json.loads(args.file.read_text())
    diffs = _differences(recorded, json.loads(json.dumps(now)))
    if diffs:
        print(f"{len(diffs)} difference(s); the first ones:\n" + "\n".join(diffs[:30]))
        return 1
    print(f"identical: {sum(len(v) for v in now.values())} entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
