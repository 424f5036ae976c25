"""Measure `outputs.runtime.FORWARD_COST`: the time of a forward-only scoring pass (what best-of-N candidate
scoring runs) over the time of a forward + backward latent step (what one unit of the runtime statistics is).

    python scripts/forward_cost.py            # tiny random models (seconds)
    python scripts/forward_cost.py --full     # also random-weight biggan-deep-128 + deeplabv3_resnet101 (minutes)

The scoring path: generator(z, one-hot, truncation) -> [0, 1] -> segmenter ensemble -> mean of the logits (a
stand-in for the loss: its cost is negligible next to the networks). Weights are random: the cost of a pass does
not depend on the weights' values. Prints the FLOPs of each (torch.utils.flop_counter, one trajectory) and the
median of `--repeats` timings of each,
with their ratios. The networks are frozen: the backward pass computes input gradients only.
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


def count_flops(generator, ensemble, batch: int) -> tuple[int, int]:
    """(forward-only FLOPs, forward + backward FLOPs) of one batch, by torch.utils.flop_counter: the ratio
    does not depend on the machine or its load."""
    from torch.utils.flop_counter import FlopCounterMode

    config = generator.config
    z = torch.randn(batch, config.z_dim) * 0.4
    classes = F.one_hot(torch.arange(batch) % config.num_classes, config.num_classes).float()

    def score(latent):
        return ensemble((generator(latent, classes, 0.4) + 1) / 2).mean()

    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        score(z)
    latent = z.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as step:
        score(latent).backward()
    return forward.get_total_flops(), step.get_total_flops()


def main() -> None:
    from silhouette_lightning.models.biggan import build_random_generator, tiny_biggan_config
    from silhouette_lightning.models.segmenters import SegmenterEnsemble, load_segmenter
    from silhouette_lightning.models.tiny import decisive_ensemble

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each (0: FLOPs only)")
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
                f"biggan-deep-128 + deeplabv3_resnet101:0.6,fcn_resnet101:0.4 at 256 px "
                f"(the defaults, random weights), "
                f"batch {args.batch}",
                lambda: (
                    build_random_generator("biggan-deep-128", power_iterations=1),
                    SegmenterEnsemble(
                        [load_segmenter(name, pretrained=False) for name in ("deeplabv3_resnet101", "fcn_resnet101")],
                        [0.6, 0.4],
                        256,
                    ),
                ),
                args.batch,
            )
        )
    for name, build, batch in cases:
        generator, ensemble = build()
        flops_forward, flops_step = count_flops(generator, ensemble, 1)
        print(
            f"{name}: per trajectory, forward {flops_forward / 1e9:.3g} GFLOP, forward+backward "
            f"{flops_step / 1e9:.3g} GFLOP, ratio {flops_forward / flops_step:.3f}",
            flush=True,
        )
        if args.repeats > 0:
            forward, step = measure(generator, ensemble, batch, args.repeats)
            print(
                f"{name}: forward {forward * 1e3:.1f} ms, forward+backward {step * 1e3:.1f} ms, "
                f"ratio {forward / step:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
