"""The scored objective of one latent step: generate, segment, loss and IoU per row, written once.

`Objective` holds the frozen networks and the settings that define what a latent scores: the image rule
`(G(z, class, truncation) + 1) / 2`, the ensemble's combination (`--ensemble-mode`), the loss, the prior penalty,
and what `--compile` wraps. Everything that generates an image or a subject map (the training step, best-of-N
candidates, pictures, the recovery experiment's targets) goes through it, so they cannot drift apart.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from silhouette_lightning.core.names import COMPILE_MODES, PRIORS
from silhouette_lightning.inputs.trajectories import TRUNCATION_BOUND
from silhouette_lightning.models.ensemble import ensemble_probs, subject_channel
from silhouette_lightning.models.images import images as generator_images
from silhouette_lightning.search.losses import trajectory_loss
from silhouette_lightning.search.metrics import silhouette_iou
from silhouette_lightning.search.options import ObjectiveOptions
from silhouette_lightning.search.priors import norm_prior, norm_prior_mode
from silhouette_lightning.search.stopping import prior_penalty

__all__ = ["COMPILE_MODES", "Objective"]


class Objective:
    """What a latent scores. `compile`: "ensemble" compiles the segmenters, "all" the whole scoring (generator,
    segmenters, loss and IoU in one graph), for the training steps only (one shape: chunks are padded); pictures,
    target maps and best-of-N candidates use the plain networks."""

    def __init__(self, generator: nn.Module, ensemble: nn.Module, options: ObjectiveOptions) -> None:
        truncation, loss, ensemble_mode = options.truncation, options.loss, options.ensemble_mode
        prior_weight, compile = options.prior_weight, options.compile
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be none, ensemble or all, got {compile!r}")
        self.generator, self.ensemble = generator, ensemble
        self.truncation, self.loss_name, self.ensemble_mode = truncation, loss, ensemble_mode
        self.prior_weight, self.prior_kind = prior_weight, options.prior
        if self.prior_kind not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior_kind!r}")
        # the norm prior's sigma, and its value at its mode radius (what it is shifted by), set once
        z_dim = generator.config.z_dim
        self._norm_sigma = NORM_SIGMA * truncation
        self._norm_floor = (z_dim - 1) * (0.5 - math.log(norm_prior_mode(z_dim, self._norm_sigma)))
        self.num_classes = generator.config.num_classes
        self._segment = torch.compile(ensemble, dynamic=False) if compile == "ensemble" else ensemble
        self._score = torch.compile(self._score_eager, dynamic=False) if compile == "all" else self._score_eager

    def generate(self, z: Tensor, class_ids: Tensor, class_vectors: Tensor | None = None) -> Tensor:
        """Images in [0, 1]: `[B, Z], [B] -> [B, 3, R, R]`; `class_vectors` [B, K] replace the one-hot classes."""
        if class_vectors is None:
            class_vectors = F.one_hot(class_ids, self.num_classes).to(z.dtype)  # [B, K]
        return generator_images(self.generator, z, class_vectors.to(z.dtype), self.truncation)

    def subject_maps(self, logits: Tensor, channels: Tensor) -> Tensor:
        """The ensemble's probability of each trajectory's subject: `[M, B, C, S, S], [B] -> [B, S, S]`."""
        probs = ensemble_probs(logits, self.ensemble.weights, self.ensemble_mode)  # [B, C, S, S]
        return subject_channel(probs, channels)

    def score(
        self,
        z: Tensor,
        class_ids: Tensor,
        channels: Tensor,
        targets: Tensor,
        class_vectors: Tensor | None = None,
        *,
        compiled: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """(loss [B], IoU [B]) of latents `z` [B, Z] against target maps `[B, S, S]`; the loss includes the prior
        penalty (`--prior-weight`). `compiled=False` scores with the plain networks (best-of-N's candidate pieces:
        shapes of their own, which would each cost a compile)."""
        if compiled:
            loss, iou = self._score(z, class_ids, channels, targets, class_vectors)
        else:
            loss, iou = self._score_eager(z, class_ids, channels, targets, class_vectors, segment=self.ensemble)
        if self.prior_weight:
            loss = loss + self.prior_weight * self.prior(z)
        return loss, iou

    def _score_eager(
        self,
        z: Tensor,
        class_ids: Tensor,
        channels: Tensor,
        targets: Tensor,
        class_vectors: Tensor | None = None,
        segment: nn.Module | None = None,
    ) -> tuple[Tensor, Tensor]:
        logits = (segment or self._segment)(self.generate(z, class_ids, class_vectors))  # [M, B, C, S, S]
        weights = self.ensemble.weights
        loss = trajectory_loss(logits, weights, targets, channels, loss=self.loss_name, mode=self.ensemble_mode)
        iou = silhouette_iou(self.subject_maps(logits.detach(), channels), targets)
        return loss.float(), iou

    def prior(self, z: Tensor) -> Tensor:
        """The prior penalty of latents `[B, Z] -> [B]`, 0 at best: "box" is `stopping.prior_penalty` at this
        truncation; "norm" is ReNO's `priors.norm_prior` with the sigma of a truncated BigGAN latent
        (`NORM_SIGMA * truncation`), less its minimum (a constant: the same gradient, a loss that stays >= 0)."""
        if self.prior_kind == "norm":
            return norm_prior(z.float(), weight=1.0, sigma=self._norm_sigma) - self._norm_floor
        return prior_penalty(z.float(), TRUNCATION_BOUND * self.truncation)

    @torch.no_grad()
    def render(
        self, z: Tensor, class_ids: Tensor, channels: Tensor, class_vectors: Tensor | None = None, *, device
    ) -> tuple[Tensor, Tensor]:
        """Images `[N, 3, R, R]` in [0, 1] and subject maps `[N, S, S]` of latents `[N, Z]`, computed on `device`
        in float32 and returned on the CPU: what result pictures show (and what `regenerate` reproduces)."""
        z, class_ids, channels = z.to(device).float(), class_ids.to(device), channels.to(device)
        if class_vectors is not None:
            class_vectors = class_vectors.to(device).float()
        with torch.autocast(device.type, enabled=False):
            images = self.generate(z, class_ids, class_vectors)  # [N, 3, R, R]
            maps = self.subject_maps(self.ensemble(images), channels)  # [N, S, S]
        return images.clamp(0, 1).cpu(), maps.float().cpu()


# The standard deviation of a standard normal truncated to [-2, 2] (BigGAN's truncated latents are such a normal
# times the truncation): sqrt(1 - 4 phi(2) / (Phi(2) - Phi(-2))).
NORM_SIGMA = 0.8796
