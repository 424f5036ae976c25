"""The paper's recovery experiment (section 4, figure 5): can the search find a known latent again?

For a known latent `z_s` of class `c`, the generated image `G(z_s, c)` is shifted right by k pixels and rotated
counter-clockwise by theta degrees at the generator's resolution; the ensemble's subject map of that image is the
target. The search starts from `z_s` and from random latents; it should reach a high IoU, and with no transform
the start `z_s` is itself a perfect answer (IoU 1 at step 0). Here it runs through the normal pipeline (module,
records, results), as generated sources: `RecoveryData` replaces the sources of `--data`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from lightning.pytorch import Trainer
from torch import Tensor
from torch.utils.data import DataLoader

from silhouette_lightning.config.settings import SwapConfig, views
from silhouette_lightning.core.classes import imagenet_name
from silhouette_lightning.core.errors import SourceError
from silhouette_lightning.core.files import atomic_save_image, atomic_torch_save
from silhouette_lightning.engine.data import PlanFeeder, SwapData, Ticks
from silhouette_lightning.engine.module import SilhouetteSwap
from silhouette_lightning.inputs.plan import PlanFile, read_plan, write_plan
from silhouette_lightning.inputs.target_maps import PreparedSource, segment_photo, target_path
from silhouette_lightning.inputs.trajectories import Trajectory, initial_latents, trajectory_seed
from silhouette_lightning.models.images import images as generator_images
from silhouette_lightning.outputs import pictures
from silhouette_lightning.search.feed import RowStart
from silhouette_lightning.search.refill import RowQueue
from silhouette_lightning.search.rows import TrajectoryResult

START_KINDS = ("z_s", "random")  # restart 0 starts at the known latent, the others at random latents


def transform_image(images: Tensor, *, shift_px: int = 0, rotate_deg: float = 0.0) -> Tensor:
    """Rotate counter-clockwise by `rotate_deg` about the centre, then shift right by `shift_px`, in one bilinear
    resampling; uncovered pixels are black. `[B, 3, R, R] -> [B, 3, R, R]`; no transform returns the input."""
    if not shift_px and not rotate_deg:
        return images
    # TF.affine turns clockwise for positive angles (TF.rotate the other way): negate for counter-clockwise
    return TF.affine(
        images,
        angle=-float(rotate_deg),
        translate=[int(shift_px), 0],
        scale=1.0,
        shear=[0.0, 0.0],
        interpolation=TF.InterpolationMode.BILINEAR,
        fill=0.0,
    )


def generate(generator, z: Tensor, class_ids: Tensor, truncation: float) -> Tensor:
    """`G(z, c)` in [0, 1] (unclamped), exactly as the module generates: `[B, Z], [B] -> [B, 3, R, R]`."""
    one_hot = F.one_hot(class_ids, generator.config.num_classes).to(z.dtype)  # [B, K]
    return generator_images(generator, z, one_hot, truncation)


@dataclass(frozen=True)
class RecoveryCase:
    """One target: known latent number `latent` of `class_id`, shifted by `shift` px and rotated by `rotation`°."""

    class_id: int
    latent: int
    shift: int
    rotation: float

    @property
    def base_key(self) -> str:
        """The known latent's name: `<class>_<name>/z<latent>`; its random starts are shared by its transforms."""
        name = re.sub(r"[^A-Za-z0-9]+", "_", imagenet_name(self.class_id)).strip("_") or "class"
        return f"{self.class_id}_{name}/z{self.latent}"

    @property
    def key(self) -> str:
        """The case's source key (and the file name of its transformed image under `sources/`)."""
        return f"{self.base_key}/shift{self.shift}_rot{self.rotation:g}.png"

    @property
    def transform(self) -> str:
        """`shift 8 px, rotate 15°`-style label shared by every class and latent."""
        return f"shift {self.shift} px, rotate {self.rotation:g}°"


def recovery_cases(
    class_ids: list[int], *, latents: int, shifts: list[int], rotations: list[float]
) -> list[RecoveryCase]:
    """Every (class, known latent, shift, rotation), in that order."""
    return [
        RecoveryCase(c, j, int(k), float(t))
        for c in class_ids
        for j in range(latents)
        for k in shifts
        for t in rotations
    ]


def known_latent(run_seed: int, case: RecoveryCase, z_dim: int, truncation: float) -> Tensor:
    """`z_s` `[Z]` of a case: drawn like a starting latent, from a seed of (run seed, class, latent number)."""
    seed = trajectory_seed(run_seed, f"recovery/{case.base_key}", case.class_id, -1)
    return initial_latents([seed], z_dim, truncation)[0]


class RecoveryFeeder(PlanFeeder):
    """`PlanFeeder` whose rows start from explicit latents (`z0`): `z_s` where a trajectory has one."""

    def __init__(self, *args, starts: dict[int, Tensor], z_dim: int, truncation: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.starts, self.z_dim, self.truncation = starts, z_dim, truncation

    def load(self, indices: list[int], own: list[bool]) -> RowStart:
        start = super().load(indices, own)
        z0 = initial_latents(start.seeds.tolist(), self.z_dim, self.truncation)  # [n, Z]
        for row, index in enumerate(indices):
            if index in self.starts:
                z0[row] = self.starts[index]
        start.z0 = z0
        return start


class RecoveryData(SwapData):
    """Generated sources: one per `RecoveryCase`, its target the subject map of the transformed `G(z_s, c)`.

    Restart 0 of every case starts at `z_s`; restarts 1.. start at random latents that depend on the class and
    the known latent but not on the transform, so every transform of a latent is searched from the same starts.
    The transformed images are written to `sources/` (what composites and the contact sheet show).
    """

    def __init__(
        self,
        *,
        generator,
        ensemble,
        run_dir: Path,
        class_ids: list[int],
        subject: str | None,
        shifts: list[int],
        rotations: list[float],
        latents: int,
        restarts: int,
        steps: int,
        seed: int,
        truncation: float,
        seg_size: int,
        ensemble_mode: str,
        max_pixels: int,
        log=print,
    ) -> None:
        run_dir = Path(run_dir)
        super().__init__(
            sources=[],
            classes_for=lambda subject: class_ids,
            ensemble=ensemble,
            run_dir=run_dir,
            masks=False,
            seg_size=seg_size,
            ensemble_mode=ensemble_mode,
            restarts=restarts,
            steps=steps,
            seed=seed,
            max_pixels=max_pixels,
            data_dir=run_dir / "sources",
            log=log,
        )
        self.generator, self.subject, self.truncation = generator, subject, truncation
        self.cases = recovery_cases(class_ids, latents=latents, shifts=shifts, rotations=rotations)
        self.starts: dict[int, Tensor] = {}

    @torch.no_grad()
    def prepare_data(self) -> None:
        """One process: generate, transform and segment every case (cached), then write the plan."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.ensemble.to(device)
        self.generator.to(device)
        z_dim = self.generator.config.z_dim
        prepared, trajectories, starts, subjects = [], [], [], {}
        for case in self.cases:
            z_s = known_latent(self.seed, case, z_dim, self.truncation)
            try:
                subject = self._case_target(case, z_s, device, subjects)
            except SourceError as e:
                self.log(f"skipped recovery target {case.key}: {e}")
                prepared.append(PreparedSource(case.key, self.subject, f"skipped: {e}"))
                continue
            prepared.append(PreparedSource(case.key, subject, "ok"))
            for restart in range(self.restarts):
                seed = trajectory_seed(self.seed, f"recovery/{case.base_key}", case.class_id, restart)
                trajectories.append(Trajectory(case.key, subject, case.class_id, restart, seed))
                if restart == 0:
                    starts.append((len(trajectories) - 1, z_s))
        class_ids = {
            s: sorted({c.class_id for c in self.cases}, key=[c.class_id for c in self.cases].index)
            for s in sorted({p.subject for p in prepared if p.ok})
        }
        known = {
            "index": torch.tensor([i for i, _ in starts], dtype=torch.long),
            "z": torch.stack([z for _, z in starts]) if starts else torch.empty(0, z_dim),
        }
        write_plan(
            self.run_dir,
            PlanFile(
                trajectories,
                [c.key for c in self.cases],
                [p for p in prepared if not p.ok],
                class_ids,
                extra={"starts": known, "cases": [asdict(c) | {"key": c.key} for c in self.cases]},
            ),
        )

    def _case_target(self, case: RecoveryCase, z_s: Tensor, device, subjects: dict) -> str:
        """Write the case's target map (float32: no rounding near the 0.5 threshold) and its image; its subject."""
        path = target_path(self.targets_dir, case.key)
        if path.exists():
            return torch.load(path, weights_only=True)["subject"]
        image = generate(
            self.generator, z_s[None].to(device), torch.tensor([case.class_id], device=device), self.truncation
        )  # [1, 3, R, R]
        if case.base_key not in subjects:  # the subject is what the segmenters see in the untransformed image
            subjects[case.base_key] = segment_photo(
                self.ensemble, image[0], mode=self.ensemble_mode, subject=self.subject
            )[1]
        subject = subjects[case.base_key]
        moved = transform_image(image, shift_px=case.shift, rotate_deg=case.rotation)[0]  # [3, R, R]
        target, _ = segment_photo(self.ensemble, moved, mode=self.ensemble_mode, subject=subject)
        if not (target > 0.5).any():
            raise SourceError(f"no {subject} left in the transformed image")
        atomic_save_image(pictures.to_pil(moved.clamp(0, 1).cpu()), self.data_dir / case.key)
        atomic_torch_save({"target": target.float(), "subject": subject}, path)
        return subject

    def setup(self, stage: str) -> None:
        """Every rank: the plan (as for photos) and the known latents of restart 0."""
        super().setup(stage)
        known = read_plan(self.run_dir).extra["starts"]
        self.starts = dict(zip(known["index"].tolist(), known["z"], strict=True))

    def feeder(self, module) -> RecoveryFeeder:
        """The pending trajectories, with their starting latents (whole cases per group when pruning)."""
        return RecoveryFeeder(
            self.plan.trajectories,
            self.pending,
            self.targets_dir,
            rows=module.z.shape[0],
            steps=self.steps,
            whole_groups=module.search.prune_after is not None,
            starts=self.starts,
            z_dim=module.z_dim,
            truncation=module.truncation,
        )


def latent_distance(z: Tensor, z_s: Tensor) -> float:
    """`||z - z_s||`: how far the found latent is from the known one (Euclidean)."""
    return float(torch.linalg.vector_norm(z.float() - z_s.float()))


def case_latents(plan: PlanFile) -> dict[str, Tensor]:
    """Known latent `z_s` of every case key, read back from the plan's restart-0 starts."""
    known = plan.extra["starts"]
    return {plan.trajectories[i].source_key: z for i, z in zip(known["index"].tolist(), known["z"], strict=True)}


def start_kind(restart: int) -> str:
    """`z_s` for restart 0, `random` for the others."""
    return START_KINDS[0] if restart == 0 else START_KINDS[1]


# ------------------------------------------------------------------------------------- in-process known answer


@torch.no_grad()
def subject_map_of(module: SilhouetteSwap, images: Tensor, channels: Tensor) -> Tensor:
    """The ensemble's subject map `[B, S, S]` of images `[B, 3, R, R]`."""
    return module.subject_maps(module.ensemble(images), channels)


class TensorFeeder:
    """Trajectories given as tensors (rows 0..B-1 of one chunk), for `recover`: all start at once."""

    def __init__(self, *, z0: Tensor, class_ids: Tensor, channels: Tensor, targets: Tensor) -> None:
        self.z0, self.class_ids, self.channels, self.targets = z0, class_ids, channels, targets
        self.queue = RowQueue([[i] for i in range(len(z0))], len(z0))
        self.target_size = tuple(targets.shape[1:])

    def load(self, indices: list[int], own: list[bool]) -> RowStart:
        at = torch.tensor(indices, dtype=torch.long)
        mine = torch.tensor([i for i, o in zip(indices, own, strict=True) if o], dtype=torch.long)
        return RowStart(
            index=at,
            seeds=torch.zeros(len(at), dtype=torch.long),
            z0=self.z0[at],
            class_id=self.class_ids[at],
            channel=self.channels[at],
            group=at,
            restart=at,
            targets=self.targets[mine],
        )


def recover(
    generator,
    ensemble,
    z_star: Tensor,
    class_ids: Tensor,
    channels: Tensor,
    *,
    start: Tensor | None = None,
    shift_px: int = 0,
    rotate_deg: float = 0.0,
    settings: dict | None = None,
    **trainer_kwargs,
) -> TrajectoryResult:
    """One chunk in this process, without files: optimize from `start` (default z*) toward the silhouette of the
    image `G(z*)` shifted and rotated (`transform_image`). A known-answer harness for tests and notebooks.

    `z_star` [B, Z], `class_ids` [B], `channels` [B] (VOC subject channel per row). Returns the chunk's
    `TrajectoryResult` (best IoU, best latent, IoU of every step, ...), in row order. `settings`: `SwapConfig`
    fields over its defaults (`{"steps": 10, "lr": 0.05}`); the paper's plain search, whatever `starts` says.
    """
    config = replace(SwapConfig(), **(settings or {}))
    module = SilhouetteSwap(generator, ensemble, **views(config, batch_size=len(z_star)) | {"search": None})
    with torch.no_grad():
        images = transform_image(module.generate(z_star, class_ids), shift_px=shift_px, rotate_deg=rotate_deg)
    targets = subject_map_of(module, images, channels)
    module.feeder = TensorFeeder(
        z0=(z_star if start is None else start).clone(), class_ids=class_ids, channels=channels, targets=targets
    )
    loader = DataLoader(Ticks(config.steps + 1), batch_size=None)
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer = Trainer(**(defaults | trainer_kwargs))
    trainer.fit(module, train_dataloaders=loader)
    results = module.take_finished()
    return results.select(results.index.argsort())  # rows finish at different steps when some stop (non-finite)
