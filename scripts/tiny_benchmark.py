"""`train.py benchmark` on tiny random models, for machines without pretrained weights (tests, the README picture).

    python scripts/tiny_benchmark.py --data data/samples --masks --subject dog --classes 1,3 --compare appendix_c \
        --seg-size 32 --accelerator cpu

Takes every `train.py benchmark` flag; the generator is a tiny random BigGAN (32 px, 10 classes) and the segmenters
two tiny random "decisive" dog segmenters (silhouette_lightning/models/tiny.py), built the same way in every process:
with
`--devices 2 --strategy ddp` Lightning starts this file again for each rank, and every rank must hold the same models.
A variant's generator and segmenters settings are recorded but not loaded. Nothing here has learned anything: the
numbers show that the benchmark works, not how BigGAN behaves.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]  # this checkout's package, not an installed one


def main(argv: list[str] | None = None) -> int:
    from silhouette_lightning.bench.benchmark import parse_args, run_benchmark
    from silhouette_lightning.core.errors import UsageError
    from silhouette_lightning.models.biggan import build_random_generator, tiny_biggan_config
    from silhouette_lightning.models.tiny import decisive_ensemble

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--heldout" not in argv:
        argv += ["--heldout", "none"]  # no tiny stand-in for the held-out segmenter's weights
    try:
        settings, variants, base = parse_args(argv)
        size = next((layer["seg_size"] for layer in reversed(base) if layer.get("seg_size")), 32)
        run_benchmark(
            settings,
            variants,
            base,
            generator=build_random_generator(tiny_biggan_config(), seed=0),
            ensemble=decisive_ensemble(size),
            enable_progress_bar=False,
        )
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
