"""Smoke test of an installed wheel, run by .ci/run from a folder outside the checkout with the wheel's Python.

Checks that the package imported is the installed one (not the checkout), that the bundled configs ship in it,
and runs one tiny swap through the real loaders: a tiny BigGAN saved and loaded as a generator folder, a
torchvision segmenter built with random weights (`pretrained: false`), no held-out model. Exit 0 when all hold.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path


def main() -> int:
    from PIL import Image, ImageDraw

    import silhouette_lightning
    from silhouette_lightning.config.settings import CONFIG_DIR, bundled_configs
    from silhouette_lightning.models.biggan import build_random_generator, save_generator, tiny_biggan_config

    where = Path(silhouette_lightning.__file__).resolve()
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert site in where.parents, f"imported {where}, not the installed wheel under {site}"
    assert CONFIG_DIR.is_relative_to(site), f"configs read from {CONFIG_DIR}, not from the wheel"
    assert {"paper", "fast_search"} <= set(bundled_configs()), bundled_configs()

    work = Path.cwd()
    save_generator(build_random_generator(tiny_biggan_config(), seed=0), work / "gen")
    mask = Image.new("L", (48, 48), 0)
    ImageDraw.Draw(mask).ellipse((10, 8, 38, 40), fill=255)
    (work / "masks" / "dog").mkdir(parents=True, exist_ok=True)
    mask.save(work / "masks" / "dog" / "a.png")
    (work / "tiny.yaml").write_text("pretrained: false\nheldout: none\nsegmenters: lraspp_mobilenet_v3_large\n")
    command = [
        str(Path(sys.executable).parent / "silhouette-swap"),
        "--config",
        str(work / "tiny.yaml"),
        "--data",
        str(work / "masks"),
        "--masks",
        "--generator",
        str(work / "gen"),
        "--classes",
        "1",
        "--restarts",
        "1",
        "--starts",
        "0",
        "--steps",
        "2",
        "--seg-size",
        "32",
        "--accelerator",
        "cpu",
        "--out",
        str(work / "runs"),
        "--name",
        "smoke",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = (work / "runs" / "smoke" / "results.csv").read_text().splitlines()
    assert len(results) == 2 and ",ok," in results[1], results
    print(f"wheel smoke: ok ({where.parent}; {len(bundled_configs())} bundled configs; one tiny swap)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
