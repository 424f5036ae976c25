"""Writes results as trajectories finish (rank zero): records, per-(source, class) outputs and the CSV tables.

Resuming reads back what this wrote: a (source, class) is complete when all its restarts have records;
its pictures and latent are (re)written if missing, so an interrupted run loses at most the trajectories in flight.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_only

from silhouette_lightning.core.classes import VOC_CLASSES
from silhouette_lightning.core.errors import OutputError, SourceError
from silhouette_lightning.core.files import atomic_save_image
from silhouette_lightning.inputs.sources import load_rgb
from silhouette_lightning.inputs.target_maps import load_target
from silhouette_lightning.outputs import pictures
from silhouette_lightning.outputs.contact_sheets import write_contact_sheets
from silhouette_lightning.outputs.convergence import DEFAULT_THRESHOLDS, log_convergence, write_convergence
from silhouette_lightning.outputs.plots import write_plots
from silhouette_lightning.outputs.records import (
    CLASS_COLUMNS,
    RESULT_COLUMNS,
    best_record,
    class_table,
    group_dir,
    load_records,
    save_latent,
    summary_row,
    trajectory_records,
    write_csv,
    write_records,
)
from silhouette_lightning.outputs.report import write_report
from silhouette_lightning.search.metrics import heldout_iou

COMPOSITE_PX = 512  # composites and panels show the photo at most this long (README: What it writes)


def source_picture(data_dir: Path | None, key: str, *, masks: bool, max_pixels: int, longest: int = COMPOSITE_PX):
    """The source photo `[3, H, W]` (longest side at most `longest`) for composites and panels, or None
    for mask sources (there is no photo to put the subject into) and unreadable files."""
    if masks or data_dir is None:
        return None
    try:
        photo = load_rgb(Path(data_dir) / key, max_pixels=max_pixels, data_dir=data_dir)
    except SourceError:
        return None
    scale = longest / max(photo.shape[1:])
    if scale < 1:
        photo = pictures.resize_image(photo, (round(photo.shape[1] * scale), round(photo.shape[2] * scale)))
    return photo


class ResultWriter(Callback):
    """Turns finished trajectories into files; keeps `results.csv` current as (source, class) pairs complete."""

    def __init__(
        self,
        run_dir: Path,
        plan,
        *,
        generator_spec: str,
        truncation: float,
        save_images: str,
        data_dir: Path | None,
        max_pixels: int,
        blend: str = "soft",
        fit: str = "pad",
        thresholds: list[float] = DEFAULT_THRESHOLDS,
        heldout=None,
        heldout_name: str | None = None,
    ) -> None:
        """`heldout`: the held-out segmenter (heldout.py) that scores each best image, named `heldout_name`."""
        self.run_dir, self.plan = Path(run_dir), plan
        self.heldout, self.heldout_name = heldout, heldout_name
        self.generator_spec, self.truncation, self.save_images = generator_spec, truncation, save_images
        self.data_dir, self.max_pixels, self.blend, self.fit = data_dir, max_pixels, blend, fit
        self.thresholds = list(thresholds)
        self.records: dict = {}
        self.histories: dict = {}  # every finished trajectory without its latents: for convergence.csv
        self.complete: dict[tuple[str, int], dict] = {}  # group -> results.csv row
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="silhouette-writer")
        self._pending: list[Future] = []
        self._started = False

    def on_train_start(self, trainer, pl_module) -> None:
        """Read back earlier records; finish groups whose outputs a crash left unwritten."""
        self._started = True
        self.plan = trainer.datamodule.plan
        if trainer.is_global_zero:
            planned = {t.identity for t in self.plan.trajectories}  # not sources since removed from the folder
            self.records = {key: r for key, r in load_records(self.run_dir).items() if key in planned}
            self._keep_histories(self.records.values())
            self._update(pl_module, self._groups_of(self.records))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """After a step in which trajectories finished: record them and write what they complete."""
        finished = pl_module.take_finished()
        if finished is not None and trainer.is_global_zero:
            records = trajectory_records(finished, self.plan.trajectories)
            self._heldout_history(pl_module, records)
            write_records(self.run_dir, records)
            self._keep_histories(records)
            for r in records:
                self.records[(r["source"], r["class_id"], r["restart"])] = r
            new_rows = self._update(pl_module, {(r["source"], r["class_id"]) for r in records})
            self._log_heldout(trainer, new_rows)

    @rank_zero_only
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Ctrl-C (or a crash): everything finished is already on disk; say so and how to go on."""
        if self.plan is None:
            return
        try:  # keep what is finished; a second failure (the same full disk) must not hide the first
            self._drain()
            self._write_tables()
        except OSError:
            pass
        if isinstance(exception, OutputError):
            return  # the error's own line says which file and that finished results are kept
        done = len(self.complete)
        print(
            f"\nstopped: {done} (source, class) result(s) are saved in {self.run_dir / 'results.csv'}; run the same "
            "command again to resume where it stopped",
            file=sys.stderr,
            flush=True,
        )

    @rank_zero_only
    def on_train_end(self, trainer, pl_module) -> None:
        """The contact sheet and the convergence statistics of the whole run (resumed parts included)."""
        self._drain()
        self._write_tables()
        if self.save_images != "none" and (self.complete or self.plan.skipped):
            self._contact_sheet()
        heldout = {
            (r["source"], int(r["class_id"])): float(r["heldout_iou"])
            for r in self.complete.values()
            if r.get("heldout_iou")
        }
        rows = write_convergence(self.run_dir, self.histories.values(), self.thresholds, heldout)
        if rows and trainer.logger is not None:
            log_convergence(trainer.logger.experiment, rows)
        write_plots(self.run_dir, rows)
        write_report(self.run_dir, rows)

    def _keep_histories(self, records) -> None:
        """Keep what convergence statistics need of each record (its latents and frames are dropped)."""
        for r in records:
            light = {k: v for k, v in r.items() if k not in ("best_z", "frames", "best_frames", "best_frames_class")}
            self.histories[(r["source"], r["class_id"], r["restart"])] = light

    def on_fit_end(self, trainer, pl_module) -> None:
        """With nothing left to fit, training never starts: still finish what earlier runs left and write the
        tables (skipped sources, finished pairs)."""
        if not self._started and trainer.datamodule.plan is not None:
            self.on_train_start(trainer, pl_module)
            self.on_train_end(trainer, pl_module)

    @staticmethod
    def _groups_of(records: dict) -> set[tuple[str, int]]:
        return {(source, class_id) for source, class_id, _ in records}

    def _update(self, pl_module, groups: set[tuple[str, int]]) -> list[dict]:
        """Write outputs of the groups that are now complete, then the tables; returns their new rows."""
        by_group = defaultdict(list)
        new_rows: list[dict] = []
        for (source, class_id, _), record in self.records.items():
            if (source, class_id) in groups:
                by_group[(source, class_id)].append(record)
        for group, records in sorted(by_group.items()):
            if len(records) < self.plan.restarts or group in self.complete:
                continue
            records.sort(key=lambda r: r["restart"])
            row = summary_row(self.run_dir, records)
            if row["status"] == "ok":
                best = best_record([r for r in records if r["best_iou"] >= 0])
                score = self._heldout_score(pl_module, best)
                if score is not None:
                    row["heldout_iou"] = f"{score:.6f}"
                self._write_group(pl_module, best, score)
            self.complete[group] = row
            new_rows.append(row)
            for r in records:  # a complete group needs only its row from now on
                self.records.pop((r["source"], r["class_id"], r["restart"]))
        self._write_tables()
        return new_rows

    @torch.no_grad()
    def _heldout_score(self, pl_module, best: dict) -> float | None:
        """The held-out IoU of a group's best image (one image at a time, so no batch composition can change
        it); read back from its latent.pt when an earlier run already scored it with the same model."""
        if self.heldout is None:
            return None
        latent = group_dir(self.run_dir, best["source"], best["class_id"]) / "latent.pt"
        if latent.exists():
            saved = torch.load(latent, weights_only=True)
            if saved.get("heldout") == self.heldout_name and "heldout_iou" in saved:
                return float(saved["heldout_iou"])
        class_vector = best["best_class"][None] if "best_class" in best else None  # --class-lr
        return float(self._score_latents(pl_module, best["best_z"][None], class_vector, best)[0])

    def _score_latents(self, pl_module, z: torch.Tensor, class_vectors, where: dict) -> torch.Tensor:
        """Held-out IoUs `[n]` of the images of latents `z` [n, Z] (and class vectors [n, K]) of one trajectory or
        group `where` (its class, subject and source), generated in fp32 as `regenerate` makes them."""
        device = pl_module.device
        self.heldout.to(device)
        n = len(z)
        with torch.autocast(device.type, enabled=False):
            class_vectors = None if class_vectors is None else class_vectors.to(device).float()
            class_ids = torch.full((n,), where["class_id"], device=device)
            images = pl_module.generate(z.to(device).float(), class_ids, class_vectors).clamp(0, 1)
        channels = torch.full((n,), VOC_CLASSES.index(where["subject"]), device=device)
        target = load_target(self.plan.targets_dir, where["source"]).to(device)  # [S, S]
        return heldout_iou(self.heldout, images, channels, target.expand(n, *target.shape))

    @torch.no_grad()
    def _heldout_history(self, pl_module, records: list[dict]) -> None:
        """The held-out judge per step: each trajectory's best-so-far latent at its frame steps, scored by the
        held-out model (`heldout_history`, one IoU per frame step; `frames` generator and held-out passes per
        trajectory, not one per step). The frames of one trajectory are one batch, so the chunk's composition cannot
        change the scores. The best-so-far latents themselves are not kept on disk."""
        for r in records:
            best_frames, best_frames_class = r.pop("best_frames", None), r.pop("best_frames_class", None)
            if self.heldout is None or best_frames is None:
                continue
            r["heldout_history"] = self._score_latents(pl_module, best_frames, best_frames_class, r).float().cpu()
            r["heldout_model"] = self.heldout_name

    def _log_heldout(self, trainer, rows: list[dict]) -> None:
        """TensorBoard `results/iou_heldout` beside `results/iou_optimized`: means over newly finished pairs."""
        scored = [r for r in rows if r.get("heldout_iou")]
        if not scored or trainer.logger is None:
            return
        trainer.logger.log_metrics(
            {
                "results/iou_optimized": sum(float(r["best_iou"]) for r in scored) / len(scored),
                "results/iou_heldout": sum(float(r["heldout_iou"]) for r in scored) / len(scored),
            },
            step=trainer.global_step,
        )

    def _write_tables(self) -> None:
        rows = [self.complete[g] for g in sorted(self.complete, key=self.plan.group_order)]
        skipped = [{"source": s.key, "subject": s.subject or "", "status": s.status} for s in self.plan.skipped]
        write_csv(self.run_dir / "results.csv", RESULT_COLUMNS, sorted(rows + skipped, key=self.plan.row_order))
        write_csv(self.run_dir / "classes.csv", CLASS_COLUMNS, class_table(rows))

    @torch.no_grad()
    def _write_group(self, pl_module, best: dict, heldout_score: float | None) -> None:
        """Best image, masks, composite, strip, animation and latent of one (source, class).

        Rendering runs here (on the module's device); encoding and writing the files runs on a background
        thread so the optimization goes on meanwhile. The latent is written last: its presence marks the
        group's outputs complete (resuming re-writes groups without it).
        """
        out = group_dir(self.run_dir, best["source"], best["class_id"])
        if (out / "latent.pt").exists():
            return
        rendered = None
        if self.save_images != "none":
            zs = best["best_z"][None]
            if self.save_images == "all":
                zs = torch.cat([zs, best["frames"]])
            n = len(zs)
            class_vectors = None
            if "best_class" in best:
                class_vectors = best["best_class"][None]
                if self.save_images == "all":
                    class_vectors = torch.cat([class_vectors, best["frames_class"]])
            rendered = pl_module.render(
                zs,
                torch.full((n,), best["class_id"]),
                torch.full((n,), VOC_CLASSES.index(best["subject"])),
                class_vectors,
            )
        self._pending.append(self._pool.submit(self._save_group, out, best, rendered, heldout_score))
        for future in [f for f in self._pending if f.done()]:  # surface write errors early, forget finished work
            self._pending.remove(future)
            future.result()
        if len(self._pending) > 64:  # the writer fell behind: wait rather than hold ever more pictures
            self._pending.pop(0).result()

    def _save_group(self, out: Path, best: dict, rendered, heldout_score: float | None) -> None:
        """Encode and write one group's files (background thread), the latent last."""
        if rendered is not None:
            images, masks = rendered
            target = load_target(self.plan.targets_dir, best["source"])
            atomic_save_image(pictures.to_pil(images[0]), out / "best.png")
            atomic_save_image(pictures.to_pil((masks[0] > 0.5).float()), out / "mask.png")
            atomic_save_image(pictures.to_pil(target), out / "target.png")
            # the target silhouette tinted over the best image: where the subject fills it, and where not
            atomic_save_image(pictures.to_pil(pictures.mask_overlay(images[0], target)), out / "overlay.png")
            photo = self._photo(best["source"])
            if photo is not None:
                mixed = pictures.composite(photo, images[0], masks[0], poisson=self.blend == "poisson", fit=self.fit)
                atomic_save_image(pictures.to_pil(mixed), out / "composite.png")
            if self.save_images == "all":
                captions = [f"step {s}" for s in best["frame_steps"]]
                atomic_save_image(
                    pictures.strip(list(images[1:]), list(masks[1:]), captions, target=target), out / "strip.png"
                )
                pictures.progress_gif(
                    list(images[1:]), list(masks[1:]), target, out / "progress.gif", captions=captions
                )
        heldout = (self.heldout_name, heldout_score) if heldout_score is not None else None
        save_latent(out / "latent.pt", best, generator=self.generator_spec, truncation=self.truncation, heldout=heldout)

    def _drain(self) -> None:
        """Wait for every background write; re-raise the first failure."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def _photo(self, source_key: str):
        return source_picture(self.data_dir, source_key, masks=self.plan.masks, max_pixels=self.max_pixels)

    def _contact_sheet(self) -> None:
        """Rows = sources (photo or mask, target; skipped ones with their reason), columns = classes."""
        skipped = [{"source": s.key, "status": s.status} for s in self.plan.skipped]
        write_contact_sheets(self.run_dir, [*self.complete.values(), *skipped], self.plan, self._photo)
