"""Peak memory of a whole run versus the number of sources (tiny models, CPU): does it grow with the data?

    python scripts/memory.py --sources 10 1000

Each size runs in a fresh process (peak RSS is per process); prints a table for the README.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(sources: int, workdir: Path) -> dict:
    """Run `sources` mask sources x 2 classes x 2 restarts on tiny models in this process; report peak RSS."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import draw_mask, tiny_ensemble

    from silhouette_lightning.config.settings import build_config
    from silhouette_lightning.models.biggan import build_random_generator, tiny_biggan_config
    from silhouette_lightning.run.job import run

    data = workdir / "data"
    for i in range(sources):
        draw_mask(data / "dog" / f"{i:05d}.png", (4 + i % 9, 6, 40, 44 - i % 7))
    config = build_config(
        {
            "data": str(data),
            "masks": True,
            "classes": "1,2",
            "restarts": 2,
            "steps": 3,
            "batch_size": 64,
            "seg_size": 32,
            "out": str(workdir / "runs"),
            "name": "m",
            "accelerator": "cpu",
            "save_images": "none",
            "image_every": 0,
            "heldout": "none",
        }
    )
    start = time.perf_counter()
    run(
        config,
        generator=build_random_generator(tiny_biggan_config()),
        ensemble=tiny_ensemble(32),
        enable_progress_bar=False,
        log=lambda *a: None,
    )
    return {
        "sources": sources,
        "trajectories": sources * 4,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.one is not None:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one_run(args.one, Path(tmp))))
        return
    print("| sources | trajectories | peak RSS (MiB) | seconds |\n| ---: | ---: | ---: | ---: |")
    for n in args.sources:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['sources']} | {r['trajectories']} | {r['peak_rss_mib']} | {r['seconds']} |", flush=True)


if __name__ == "__main__":
    main()
