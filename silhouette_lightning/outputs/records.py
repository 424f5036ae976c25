"""Results on disk: per-trajectory records (what resuming reads), the best restart per (source, class),
`results.csv`, the per-class convergence table, and latents that regenerate their image exactly."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from silhouette_lightning.core.classes import imagenet_name
from silhouette_lightning.core.errors import UsageError
from silhouette_lightning.core.files import atomic_torch_save, atomic_write_text
from silhouette_lightning.inputs.sources import output_name, source_folder
from silhouette_lightning.models.images import images as generator_images
from silhouette_lightning.search.rows import TrajectoryResult

RESULT_COLUMNS = [
    "source",
    "subject",
    "class_id",
    "class_name",
    "best_iou",
    "heldout_iou",
    "best_loss",
    "best_restart",
    "best_step",
    "seed",
    "restarts",
    "stopped_restarts",
    "status",
    "output_dir",
    "nearest_class",
]
CLASS_COLUMNS = [
    "class_id",
    "class_name",
    "pairs",
    "mean_best_iou",
    "mean_heldout_iou",
    "median_best_iou",
    "iou_at_least_0.5",
    "iou_at_least_0.8",
    "mean_best_step",
]

Identity = tuple[str, int, int]  # (source key, class id, restart)


def records_dir(run_dir: Path) -> Path:
    """Folder of per-chunk record files."""
    return Path(run_dir) / "trajectories"


def group_dir(run_dir: Path, source_key: str, class_id: int) -> Path:
    """`swaps/<source>/<class id>_<class name>/`: the outputs of one (source, class)."""
    class_name = imagenet_name(class_id).replace(" ", "_").replace("'", "")
    return Path(run_dir) / "swaps" / source_folder(source_key) / output_name(f"{class_id}_{class_name}")


def trajectory_records(finished: TrajectoryResult, trajectories: Sequence) -> list[dict]:
    """Finished trajectories' results -> one plain dict per trajectory, the record kept on disk (readable with
    `torch.load(weights_only=True)`); `trajectories` the plan's, indexed by `finished.index`."""
    records = []
    for i, index in enumerate(finished.index.tolist()):
        t = trajectories[index]
        record = {
            "source": t.source_key,
            "subject": t.subject,
            "class_id": t.class_id,
            "restart": t.restart,
            "seed": int(finished.seed[i]),  # best-of-N: the chosen start's
            "best_iou": float(finished.best_iou[i]),
            "best_loss": float(finished.best_loss[i]),
            "best_step": int(finished.best_step[i]),
            "stopped_at": int(finished.stopped_at[i]),
            "best_z": finished.best_z[i].clone(),
            "frames": finished.frames[i].clone(),
            "frame_steps": finished.frame_steps,
            "iou_history": finished.iou_history[i].float().clone(),
            "loss_history": finished.loss_history[i].float().clone(),
            "seconds": float(finished.seconds[i]),
            # early stop or pruning (stopping.py): the step it ended at, and why
            "ended_at": int(finished.ended_at[i]),
            "ended_by": finished.ended_by[i],
        }
        if finished.best_frames is not None:  # for the held-out judge; the writer drops them once scored
            record["best_frames"] = finished.best_frames[i].clone()
            if finished.best_frames_class is not None:
                record["best_frames_class"] = finished.best_frames_class[i].clone()
        if finished.best_class is not None:  # --class-lr: the optimized class vectors, and the nearest class
            best_class = finished.best_class[i].clone()
            record |= {
                "best_class": best_class,
                "frames_class": finished.frames_class[i].clone(),
                "nearest_class": int(best_class.argmax()),
            }
        records.append(record)
    return records


def write_records(run_dir: Path, records: list[dict]) -> Path:
    """Save finished trajectories (one file per chunk; a unique name, so ranks or reruns never clash)."""
    return atomic_torch_save(records, records_dir(run_dir) / f"part-{uuid.uuid4().hex}.pt")


def load_records(run_dir: Path) -> dict[Identity, dict]:
    """Every finished trajectory of a run folder, by identity (a trajectory run twice keeps one record)."""
    found: dict[Identity, dict] = {}
    for path in sorted(records_dir(run_dir).glob("part-*.pt")):
        for record in torch.load(path, weights_only=True):
            found.setdefault((record["source"], record["class_id"], record["restart"]), record)
    return found


def drop_records(run_dir: Path, source_keys: Iterable[str]) -> int:
    """Delete the records of these sources (their files changed); returns how many were dropped."""
    keys, dropped = set(source_keys), 0
    for path in sorted(records_dir(run_dir).glob("part-*.pt")):
        records = torch.load(path, weights_only=True)
        kept = [r for r in records if r["source"] not in keys]
        if len(kept) < len(records):
            dropped += len(records) - len(kept)
            if kept:
                atomic_torch_save(kept, path)
            else:
                path.unlink(missing_ok=True)
    return dropped


def best_record(records: Iterable[dict]) -> dict:
    """The best restart: highest IoU, ties to lower loss, then lower restart index."""
    return min(records, key=lambda r: (-r["best_iou"], r["best_loss"], r["restart"]))


def summary_row(run_dir: Path, records: list[dict]) -> dict:
    """The results.csv row of one complete (source, class) group."""
    alive = [r for r in records if r["best_iou"] >= 0]
    stopped = sum(r["stopped_at"] >= 0 for r in records)
    first = records[0]
    row = {
        "source": first["source"],
        "subject": first["subject"],
        "class_id": first["class_id"],
        "class_name": imagenet_name(first["class_id"]),
        "restarts": len(records),
        "stopped_restarts": stopped,
        "output_dir": str(group_dir(run_dir, first["source"], first["class_id"]).relative_to(run_dir)),
    }
    if not alive or stopped == len(records):  # its best is at most a pre-divergence image: not a result
        return row | {"status": "failed: every restart turned non-finite (try a lower --lr)"}
    best = best_record(alive)
    return row | {
        "best_iou": f"{best['best_iou']:.6f}",
        "best_loss": f"{best['best_loss']:.6g}",
        "best_restart": best["restart"],
        "best_step": best["best_step"],
        "seed": best["seed"],
        "status": "ok",
        "nearest_class": best.get("nearest_class", ""),  # --class-lr: argmax of the optimized class vector
    }


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    """Atomic CSV write with a header row."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def class_table(rows: list[dict]) -> list[dict]:
    """Per-class convergence: how well each ImageNet class fits the silhouettes it was given.

    `mean_heldout_iou` is the mean held-out IoU (see heldout.py) of the class's pairs, empty when not scored.
    """
    by_class: dict[int, list[dict]] = {}
    for row in rows:
        if row.get("status") == "ok":
            by_class.setdefault(int(row["class_id"]), []).append(row)
    table = []
    for class_id, group in sorted(by_class.items()):
        ious = torch.tensor([float(r["best_iou"]) for r in group])
        heldout = [float(r["heldout_iou"]) for r in group if r.get("heldout_iou") not in (None, "")]
        table.append(
            {
                "class_id": class_id,
                "class_name": imagenet_name(class_id),
                "pairs": len(group),
                "mean_best_iou": f"{ious.mean():.4f}",
                "median_best_iou": f"{ious.median():.4f}",
                "mean_heldout_iou": f"{sum(heldout) / len(heldout):.4f}" if heldout else "",
                "iou_at_least_0.5": f"{(ious >= 0.5).float().mean():.4f}",
                "iou_at_least_0.8": f"{(ious >= 0.8).float().mean():.4f}",
                "mean_best_step": f"{sum(int(r['best_step']) for r in group) / len(group):.2f}",
            }
        )
    return sorted(table, key=lambda r: -float(r["mean_best_iou"]))


def save_latent(
    path: Path, record: dict, *, generator: str, truncation: float, heldout: tuple[str, float] | None = None
) -> Path:
    """Write what regenerates the best image exactly: latent, class, truncation and generator; with `heldout`
    (model name, IoU), also its held-out score, which a resumed run reads back instead of recomputing."""
    latent = {
        "z": record["best_z"].float(),
        "class_id": int(record["class_id"]),
        "truncation": float(truncation),
        "generator": str(generator),
        "source": record["source"],
        "restart": int(record["restart"]),
        "step": int(record["best_step"]),
        "iou": float(record["best_iou"]),
        "seed": int(record["seed"]),
    }
    if "best_class" in record:  # found with --class-lr: the optimized class vector replaces the one-hot
        latent["class_vector"] = record["best_class"].float()
    if heldout is not None:
        latent |= {"heldout": heldout[0], "heldout_iou": float(heldout[1])}
    return atomic_torch_save(latent, path)


@torch.no_grad()
def regenerate(latent: str | Path | dict, generator=None) -> Tensor:
    """The image `[3, R, R]` in [0, 1] that a saved latent (`latent.pt` of a result) stands for.

    `generator`: a loaded BigGAN; by default the one named in the file is loaded (and cached).

    >>> # image = regenerate("runs/samples-biggan-deep-128/swaps/dog__a.png/207_golden_retriever/latent.pt")
    """
    from silhouette_lightning.models.biggan import UNKNOWN_ORIGIN, load_generator

    data = latent if isinstance(latent, dict) else torch.load(latent, weights_only=True)
    if generator is None and data["generator"] == UNKNOWN_ORIGIN:
        raise UsageError(
            f"{latent if not isinstance(latent, dict) else 'this latent'} was made with a generator passed as an "
            "object, not loaded from a name or folder, so which one is unknown: pass it, regenerate(latent, generator)"
        )
    generator = generator if generator is not None else load_generator(data["generator"])
    device = next(generator.parameters()).device
    z = data["z"].to(device).view(1, -1)
    if "class_vector" in data:  # found with --class-lr
        class_vector = data["class_vector"].to(device).float().view(1, -1)
    else:
        class_vector = F.one_hot(torch.tensor([data["class_id"]], device=device), generator.config.num_classes).float()
    return generator_images(generator, z, class_vector, data["truncation"])[0].clamp(0, 1).cpu()


def read_results(run_dir: Path) -> list[dict]:
    """The rows of a run's `results.csv`."""
    with open(Path(run_dir) / "results.csv", newline="") as f:
        return list(csv.DictReader(f))
