"""Best IoU reached versus latent steps spent: the paper's search (best of 8 restarts) against each search option
(search/starts.py, search/stopping.py) alone and combined, on known-answer silhouettes of tiny models (CPU; no
pretrained weights needed).

Targets: the subject silhouettes of `G(z*, class 1)` for known latents `z*` (so an answer with IoU 1 exists), as
mask files, searched like any mask source. Latent steps spent by a (source, class): the optimizer steps its restarts
took (a trajectory ended by early stop or pruning at step e took e), plus, with best-of-N, the N candidate forward
passes counted as 1/3 step each (a step is a forward and a backward pass, about three forwards). Wall time: the
steps of the whole chunk the run took (each one fixed-shape batch of `--batch-size` rows, whatever the rows do, so
on one machine its time is proportional to them), and the run's seconds from the first step to the last.

    python scripts/search_benchmark.py --out docs          # docs/search_curves.png, docs/search_table.md
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

FORWARD_SHARE = 1 / 3  # cost of a forward-only candidate score, in latent steps (forward + backward)
SUBJECT = "sofa"  # the VOC channel the tiny colour segmenters see most in the tiny BigGAN's images

VARIANTS = {  # name: settings on top of the paper's (restarts 8, random starts, steps 25, lr 0.1); most telling first
    "paper (best of 8)": {},
    "best-of-32 -> 4": {"starts": 32, "restarts": 4},
    "combined (configs/fast_search.yaml)": {"starts": 32, "stop_iou": 0.95, "patience": 5, "prune_after": 5},
    "early stop (0.95, patience 5)": {"stop_iou": 0.95, "patience": 5},
    "prune after 5": {"prune_after": 5},
    "plain, 4 restarts": {"restarts": 4},
    "best-of-32 -> 8 (the default)": {"starts": 32},
    "class lr 0.01": {"class_lr": 0.01},
    "prior weight 1": {"prior_weight": 1.0},
}


def make_targets(folder: Path, generator, ensemble, count: int, class_id: int = 1) -> None:
    """`count` silhouettes of G(z*, class) with a subject covering at least 5% of the image, as PNG masks."""
    from PIL import Image

    from silhouette_lightning.config.settings import SwapConfig, views
    from silhouette_lightning.core.classes import VOC_CLASSES
    from silhouette_lightning.engine.module import SilhouetteSwap
    from silhouette_lightning.inputs.trajectories import initial_latents, trajectory_seed

    module = SilhouetteSwap(generator, ensemble, **views(SwapConfig(), batch_size=1))
    z_star = initial_latents(
        [trajectory_seed(12345, "target", class_id, i) for i in range(8 * count)], generator.config.z_dim, 0.4
    )
    with torch.no_grad():
        maps = module.subject_maps(
            ensemble(module.generate(z_star, torch.full((len(z_star),), class_id))),
            torch.full((len(z_star),), VOC_CLASSES.index(SUBJECT)),
        )
    masks = maps > 0.5  # [8 * count, S, S]
    chosen = [i for i in range(len(masks)) if masks[i].float().mean() >= 0.05][:count]
    folder.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(chosen):
        Image.fromarray(masks[i].to(torch.uint8).numpy() * 255).save(folder / f"target{k:02d}.png")


def group_curves(records: list[dict], steps: int, starts: int) -> tuple[list[float], list[float]]:
    """Mean over (source, class) groups of (latent steps spent, best IoU reached) after each step 0..steps."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["source"], r["class_id"]), []).append(r)
    spent = torch.zeros(steps + 1, dtype=torch.float64)
    best = torch.zeros(steps + 1, dtype=torch.float64)
    for members in groups.values():
        for s in range(steps + 1):
            cost, top = starts * FORWARD_SHARE, 0.0
            for r in members:
                ends = [e for e in (r.get("ended_at", -1), r["stopped_at"]) if e >= 0]
                end = min(ends) if ends else steps
                taken = min(s, end)
                cost += taken
                top = max(top, float(torch.as_tensor(r["iou_history"])[: taken + 1].max()))
            spent[s] += cost
            best[s] += top
    return (spent / len(groups)).tolist(), (best / len(groups)).tolist()


def steps_to_reach(spent: list[float], best: list[float], level: float) -> float | None:
    """The first point of a curve at or above `level` (None: never)."""
    for x, y in zip(spent, best, strict=True):
        if y >= level - 1e-9:
            return x
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for search_curves.png and search_table.md")
    p.add_argument("--work", type=Path, default=Path("/tmp/search-benchmark"), help="folder for the runs")
    p.add_argument("--targets", type=int, default=6, help="known-answer silhouettes")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="rows per chunk (default: the CPU default); below all trajectories at once, so rows that "
        "early stop or pruning free are refilled",
    )
    args = p.parse_args(argv)

    from silhouette_lightning.config.settings import build_config
    from silhouette_lightning.engine.timing import StepClock
    from silhouette_lightning.models.biggan import build_random_generator, tiny_biggan_config
    from silhouette_lightning.models.tiny import tiny_ensemble
    from silhouette_lightning.outputs.records import load_records
    from silhouette_lightning.run.job import run

    generator, ensemble = build_random_generator(tiny_biggan_config(), seed=0), tiny_ensemble(32)
    data = args.work / "targets"
    make_targets(data / SUBJECT, generator, ensemble, args.targets)
    rows, curves = [], {}
    for name, settings in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        values = dict(
            data=str(data),
            masks=True,
            classes=[1],
            restarts=8,
            starts=0,
            steps=args.steps,
            seg_size=32,
            batch_size=args.batch_size,
            accelerator="cpu",
            save_images="none",
            image_every=0,
            frames=2,
            heldout="none",
            out=str(args.work / "runs"),
            name=re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_"),
        )
        config = build_config(values | settings)
        clock = StepClock()
        run_dir = run(
            config,
            generator=generator,
            ensemble=ensemble,
            log=lambda *a: None,
            enable_progress_bar=False,
            callbacks=[clock],
        )
        records = list(load_records(run_dir).values())
        timing = clock.summary()
        seconds = timing["total_s"] - timing["before_first_step_s"]
        spent, best = group_curves(records, args.steps, config.starts)
        curves[name] = (spent, best)
        rows.append((name, spent[-1], best[-1], timing["batches"], seconds))
        print(
            f"{name}: {spent[-1]:.1f} latent steps per pair, mean best IoU {best[-1]:.4f}, "
            f"{timing['batches']} chunk steps, {seconds:.1f} s",
            flush=True,
        )
        write_outputs(args.out, rows, curves, len(list((data / SUBJECT).glob("*.png"))))  # after each: partial is kept
    return 0


def write_outputs(out: Path, rows: list, curves: dict, targets: int) -> None:
    """search_table.md and search_curves.png of the variants run so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paper_best = curves["paper (best of 8)"][1][-1] if "paper (best of 8)" in curves else None
    lines = [
        "| search | latent steps per pair | mean best IoU | steps to the paper's final IoU | chunk steps (run) "
        "| CPU seconds (run) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, spent, best, ticks, seconds in rows:
        reach = steps_to_reach(*curves[name], paper_best) if paper_best is not None else None
        lines.append(
            f"| {name} | {spent:.1f} | {best:.4f} | {'never' if reach is None else f'{reach:.1f}'} | "
            f"{ticks} | {seconds:.1f} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_table.md").write_text("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for name, (spent, best) in curves.items():
        ax.plot(spent, best, marker=".", label=name, linewidth=2.5 if name.startswith("paper") else 1.2)
    if paper_best is not None:
        ax.axhline(paper_best, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("latent steps spent per (source, class)")
    ax.set_ylabel("mean best IoU reached")
    ax.set_title(f"Search options on {targets} known-answer silhouettes (tiny random-weight models, CPU)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "search_curves.png")
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
