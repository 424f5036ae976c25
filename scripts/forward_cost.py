"""Measure `outputs.runtime.FORWARD_COST`: the time of a forward-only scoring pass (what best-of-N candidate
scoring runs) over the time of a forward + backward latent step (what one unit of the runtime statistics is).

    python scripts/forward_cost.py            # tiny random models (seconds)
    python scripts/forward_cost.py --full     # also random-weight biggan-deep-128 + deeplabv3_resnet101 (minutes)

The scoring path: generator(z, one-hot, truncation) -> [0, 1] -> segmenter ensemble -> mean of the logits (a
stand-in for the loss: its cost is negligible next to the networks). Weights are random: the cost of a pass does
not depend on the weights' values. Prints the median of `--repeats` timings of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(generator, ensemble, batch: int, repeats: int) -> tuple[float, float]:
    """(forward-only seconds, forward + backward seconds) of one batch of the scoring path."""
    config = generator.config
    z = torch.randn(batch, config.z_dim) * 0.4
    classes = F.one_hot(torch.arange(batch) % config.num_classes, config.num_classes).float()

    def score(latent):
        image = (generator(latent, classes, 0.4) + 1) / 2
        return ensemble(image).mean()

    def forward():
        with torch.no_grad():
            score(z)

    def step():
        latent = z.clone().requires_grad_(True)
        score(latent).backward()

    return _timed(forward, repeats), _timed(step, repeats)


def main() -> None:
    from silhouette_lightning.models.biggan import build_random_generator, tiny_biggan_config
    from silhouette_lightning.models.segmenters import SegmenterEnsemble, load_segmenter
    from silhouette_lightning.models.tiny import decisive_ensemble

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2, help="batch of the full-size models")
    args = parser.parse_args()
    torch.manual_seed(0)
    cases = [
        (
            "tiny (32 px BigGAN, two tiny segmenters at 32 px), batch 16",
            lambda: (build_random_generator(tiny_biggan_config()), decisive_ensemble(32)),
            16,
        )
    ]
    if args.full:
        cases.append(
            (
                f"biggan-deep-128 + deeplabv3_resnet101 at 256 px (random weights), batch {args.batch}",
                lambda: (
                    build_random_generator("biggan-deep-128", power_iterations=1),
                    SegmenterEnsemble([load_segmenter("deeplabv3_resnet101", pretrained=False)], [1.0], 256),
                ),
                args.batch,
            )
        )
    for name, build, batch in cases:
        generator, ensemble = build()
        forward, step = measure(generator, ensemble, batch, args.repeats)
        print(
            f"{name}: forward {forward * 1e3:.1f} ms, forward+backward {step * 1e3:.1f} ms, ratio {forward / step:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
