"""Alignment of a target map to the generator's frame, and back (as in pix2latent, Huh et al. 2020).

BigGAN puts a class's subject roughly in one place and at one size: a source photo whose subject is small and
off-centre asks the generator for a silhouette it rarely makes. pix2latent therefore moves and scales the
target so that its subject's bounding box lands on the generator's mean box, searches there, and maps the
generated image back into the source's frame. The pieces, all per row (trajectory) and free of batch coupling:

- `subject_box(maps) -> [B, 4]`: the subject's bounding box (centre y, centre x, height, width) as fractions;
- `FRAME_BOX`, `measure_frame_box`, `cached_frame_box`: the generator's mean box (pix2latent's BigGAN numbers, or
  measured from the generator's own samples and the ensemble's maps, cached as a small JSON per key);
- `Transform` (per-row scale, translation, optional horizontal flip) and `box_transform(source_box, frame_box)`,
  the transform that maps the source's box onto the frame box;
- `warp(x, transform, inverse=False)`: source -> frame (`inverse=False`) or frame -> source (`inverse=True`),
  through `grid_sample`, differentiable in the transform's parameters;
- `check_align_options`, `AlignBounds`, `to_unconstrained` / `from_unconstrained`: validation, and the bounded
  parametrization Adam refines (one unconstrained `[B, 4]` tensor, its own learning rate).

Coordinates. A transform acts on normalized coordinates `u = 2 f - 1 in [-1, 1]` per axis (f the fraction of
the frame from the top or left edge), the convention of `affine_grid(align_corners=False)`: -1 and 1 are the
outer edges of the border pixels. A point `p` of the source goes to `q = s * (m * p) + t` in the frame, per axis,
with `m = -1` on x for a flipped row and 1 otherwise. The maps are assumed square (or at least of one aspect in
both frames): scales are per axis in normalized units.

Tensor layout for callers: a Transform holds `sy, sx, ty, tx` as float tensors `[B]` and `flip` as a bool tensor
`[B]` (or None: no row is flipped); `Transform.stack()` gives them as one `[B, 5]` tensor for a per-row buffer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from silhouette_lightning.core.files import atomic_write_text
from silhouette_lightning.inputs.trajectories import trajectory_seed

# pix2latent's BigGAN statistics (Huh et al. 2020, as given in issue 19): the mean subject box of BigGAN's
# samples, centre (y, x) = (137/255, 127/255), size (height, width) = (213/255, 210/255), as fractions.
FRAME_BOX = (137 / 255, 127 / 255, 213 / 255, 210 / 255)
FULL_BOX = (0.5, 0.5, 1.0, 1.0)  # the box of an empty map: the whole frame


def frame_box_tensor(box: Sequence[float] | Tensor = FRAME_BOX, device=None, dtype=torch.float32) -> Tensor:
    """A frame box as a float tensor `[4]` (centre y, centre x, height, width; fractions of the frame)."""
    return torch.as_tensor(box, dtype=dtype, device=device).reshape(4)


def subject_box(maps: Tensor, threshold: float = 0.5) -> Tensor:
    """The bounding box of each map's subject (pixels above `threshold`): `[B, H, W] -> [B, 4]`.

    Each row is (centre y, centre x, height, width) as fractions of the frame, pixel `i` covering
    `[i / H, (i + 1) / H]`: a subject filling pixels 2..5 of 8 rows has height 0.5 and centre 0.5. An empty map
    gives the full frame (0.5, 0.5, 1, 1), so that its transform is the identity. Not differentiable (a box of a
    thresholded map); computed once per source, never per step.
    """
    if maps.dim() != 3:
        raise ValueError(f"subject_box expects maps [B, H, W], got shape {tuple(maps.shape)}")
    _, h, w = maps.shape
    mask = maps > threshold
    rows, cols = mask.any(2), mask.any(1)  # [B, H], [B, W]

    def extent(hit: Tensor, n: int) -> tuple[Tensor, Tensor]:
        index = torch.arange(n, device=hit.device)
        first = torch.where(hit, index, n).amin(1)
        end = torch.where(hit, index + 1, 0).amax(1)
        return first.double(), end.double()

    top, bottom = extent(rows, h)
    left, right = extent(cols, w)
    box = torch.stack([(top + bottom) / (2 * h), (left + right) / (2 * w), (bottom - top) / h, (right - left) / w], 1)
    empty = ~rows.any(1)
    full = torch.tensor(FULL_BOX, dtype=box.dtype, device=box.device)
    return torch.where(empty[:, None], full, box).float()


@dataclass(frozen=True)
class Transform:
    """Per-row similarity transforms: scale `sy, sx`, translation `ty, tx` (normalized units), optional x flip.

    All fields are tensors `[B]` on one device (`flip` bool, or None for no flip anywhere). A source point `p`
    goes to `q = s * (m * p) + t` in the frame (`m = -1` on x where `flip`), so `t` is where the source's centre
    lands and `s > 1` enlarges. Gradients flow through `sy, sx, ty, tx` into `warp`.
    """

    sy: Tensor
    sx: Tensor
    ty: Tensor
    tx: Tensor
    flip: Tensor | None = None

    @classmethod
    def identity(cls, rows: int, device=None, dtype=torch.float32) -> Transform:
        """The identity for `rows` rows."""
        one = torch.ones(rows, device=device, dtype=dtype)
        zero = torch.zeros(rows, device=device, dtype=dtype)
        return cls(one, one.clone(), zero, zero.clone(), None)

    @classmethod
    def from_stacked(cls, stacked: Tensor) -> Transform:
        """From `stack()`'s `[B, 5]` tensor (sy, sx, ty, tx, flip as 0/1)."""
        flip = stacked[:, 4] > 0.5
        return cls(stacked[:, 0], stacked[:, 1], stacked[:, 2], stacked[:, 3], flip if bool(flip.any()) else None)

    def stack(self) -> Tensor:
        """The transform as one tensor `[B, 5]`: sy, sx, ty, tx, flip (0 or 1); for a per-row buffer or a record."""
        flip = self.sign_x().lt(0).to(self.sy.dtype)
        return torch.stack([self.sy, self.sx, self.ty, self.tx, flip], 1)

    @property
    def rows(self) -> int:
        return self.sy.shape[0]

    def sign_x(self) -> Tensor:
        """`m` per row: -1 where flipped, 1 elsewhere, `[B]` in the transform's dtype."""
        one = torch.ones_like(self.sx)
        return one if self.flip is None else torch.where(self.flip, -one, one)

    def inverse(self) -> Transform:
        """The inverse transform: `p = (1 / s) * (m * q) - m * t / s`, the same flip flag."""
        m = self.sign_x()
        return Transform(1 / self.sy, 1 / self.sx, -self.ty / self.sy, -m * self.tx / self.sx, self.flip)

    def is_identity(self) -> Tensor:
        """Which rows are exactly the identity: bool `[B]` (used to pass those rows through `warp` untouched)."""
        same = (self.sy == 1) & (self.sx == 1) & (self.ty == 0) & (self.tx == 0)
        return same if self.flip is None else same & ~self.flip

    def requires_grad(self) -> bool:
        return any(v.requires_grad for v in (self.sy, self.sx, self.ty, self.tx))

    def rows_of(self, index: Tensor | Sequence[int]) -> Transform:
        """The transforms of the rows `index` (a long tensor or a list)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.sy.device)
        flip = None if self.flip is None else self.flip[index]
        return Transform(self.sy[index], self.sx[index], self.ty[index], self.tx[index], flip)

    def map_box(self, box: Tensor) -> Tensor:
        """Where boxes `[B, 4]` (fractions) land under the transform: `[B, 4]` (a flip mirrors the centre)."""
        cy, cx = 2 * box[:, 0] - 1, 2 * box[:, 1] - 1
        qy = self.sy * cy + self.ty
        qx = self.sx * (self.sign_x() * cx) + self.tx
        return torch.stack([(qy + 1) / 2, (qx + 1) / 2, self.sy.abs() * box[:, 2], self.sx.abs() * box[:, 3]], 1)

    def theta(self) -> Tensor:
        """`affine_grid`'s matrices `[B, 2, 3]` for the forward warp (output frame -> input source coordinates)."""
        inv = self.inverse()
        m = inv.sign_x()
        zero = torch.zeros_like(inv.sx)
        row_x = torch.stack([inv.sx * m, zero, inv.tx], 1)
        row_y = torch.stack([zero, inv.sy, inv.ty], 1)
        return torch.stack([row_x, row_y], 1)


def box_transform(
    source_box: Tensor,
    frame_box: Tensor | Sequence[float] = FRAME_BOX,
    flip: Tensor | None = None,
    keep_aspect: bool = True,
) -> Transform:
    """The transform that maps each source box onto the frame box: `[B, 4], [4] or [B, 4] -> Transform [B]`.

    `keep_aspect` (default): one scale for both axes, the largest that fits the source box inside the frame box
    (`min(h_f / h_s, w_f / w_s)`), so the silhouette's shape is not distorted; the centres coincide. Otherwise the
    box is stretched onto the frame box per axis. `flip` (bool `[B]`) mirrors those rows first, keeping their
    box on the frame box. An empty map's full-frame box gives scale `frame / 1`, i.e. near the identity.
    """
    source_box = source_box.float()
    frame = torch.as_tensor(frame_box, dtype=source_box.dtype, device=source_box.device)
    frame = frame.reshape(-1, 4).expand_as(source_box)
    sy = frame[:, 2] / source_box[:, 2].clamp_min(1e-6)
    sx = frame[:, 3] / source_box[:, 3].clamp_min(1e-6)
    if keep_aspect:
        sy = sx = torch.minimum(sy, sx)
    m = torch.ones_like(sx) if flip is None else torch.where(flip, -1.0, 1.0).to(sx)
    ty = (2 * frame[:, 0] - 1) - sy * (2 * source_box[:, 0] - 1)
    tx = (2 * frame[:, 1] - 1) - sx * (m * (2 * source_box[:, 1] - 1))
    return Transform(sy, sx.clone(), ty, tx, flip)


def _grid(transform: Transform, h: int, w: int, dtype, device, inverse: bool) -> Tensor:
    """The sampling grid `[B, H, W, 2]` (x, y): for each output pixel `q`, the input point it reads.

    A forward warp reads the input at `T^-1(q) = m * (q - t) / s`, an inverse warp at `T(q) = s * (m * q) + t`.
    Built elementwise rather than by `affine_grid`'s batched matrix product, so that a row's grid never depends
    on the batch shape (a matmul may pick kernels by shape); it equals `affine_grid(theta())` up to rounding.
    """
    qy = (torch.arange(h, device=device, dtype=dtype) * 2 + 1) / h - 1  # pixel centres, align_corners=False
    qx = (torch.arange(w, device=device, dtype=dtype) * 2 + 1) / w - 1
    sy, sx, ty, tx = (
        v.to(device=device, dtype=dtype)[:, None, None]
        for v in (transform.sy, transform.sx, transform.ty, transform.tx)
    )
    m = transform.sign_x().to(device=device, dtype=dtype)[:, None, None]
    qy, qx = qy[None, :, None], qx[None, None, :]
    if inverse:
        gy, gx = sy * qy + ty, sx * (m * qx) + tx
    else:
        gy, gx = (qy - ty) / sy, m * (qx - tx) / sx
    b = transform.rows
    return torch.stack([gx.expand(b, h, w), gy.expand(b, h, w)], -1)


def warp(
    x: Tensor,
    transform: Transform,
    inverse: bool = False,
    size: tuple[int, int] | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> Tensor:
    """Move maps or images `[B, C, H, W]` by per-row transforms: `-> [B, C, H', W']` (`size`, default `(H, W)`).

    `inverse=False`: source -> frame (the target into the generator's frame: the source point `p` appears at
    `T(p)`). `inverse=True`: frame -> source (a generated image or map back into the source's frame). The two are
    exact inverses on the interior (up to the interpolation); what comes from outside the input is 0 with the
    default `padding_mode="zeros"` (right for maps: no subject there; warp a ones map to get the covered region).
    `align_corners=False` throughout. Differentiable in `x` and in the transform's `sy, sx, ty, tx`.

    Rows that are exactly the identity come back bit for bit (and, with every row the identity, `x` itself) when
    no gradient is wanted for the transform and the size is unchanged; a row's result never depends on its
    batch neighbours either way.
    """
    if x.dim() != 4:
        raise ValueError(f"warp expects [B, C, H, W], got shape {tuple(x.shape)}")
    if transform.rows != x.shape[0]:
        raise ValueError(f"warp: {x.shape[0]} rows of input but {transform.rows} transforms")
    h, w = size if size is not None else x.shape[-2:]
    same_size = (h, w) == tuple(x.shape[-2:])
    shortcut = same_size and not (torch.is_grad_enabled() and transform.requires_grad())
    keep = transform.is_identity().to(x.device) if shortcut else None
    if keep is not None and bool(keep.all()):
        return x
    dtype = x.dtype if x.is_floating_point() else torch.float32
    grid = _grid(transform, h, w, dtype, x.device, inverse)
    out = F.grid_sample(x.to(dtype), grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    if keep is not None and bool(keep.any()):
        out = torch.where(keep[:, None, None, None], x.to(dtype), out)
    return out


def warp_maps(maps: Tensor, transform: Transform, inverse: bool = False, **kwargs) -> Tensor:
    """`warp` for maps `[B, H, W]` (a target or a subject map): `-> [B, H', W']`."""
    return warp(maps[:, None], transform, inverse=inverse, **kwargs)[:, 0]


# ----------------------------------------------------------------------------------------------- bounds, refinement


@dataclass(frozen=True)
class AlignBounds:
    """Where a refined transform may go: scale in `[lo, hi]` (per axis), translation in `[-shift, shift]`
    (normalized units; 1 is half the frame). `check_align_options` says what is valid."""

    scale: tuple[float, float] = (0.5, 2.0)
    shift: float = 1.0

    def __post_init__(self) -> None:
        errors = check_align_options(self.scale, 0.0, self.shift)
        if errors:
            raise ValueError("; ".join(errors))


def check_align_options(
    scale_bounds: Sequence[float],
    lr: float,
    shift_bound: float = 1.0,
    threshold: float = 0.5,
    frame_box: Sequence[float] | None = None,
) -> list[str]:
    """One-line messages, one per invalid setting (empty: all valid).

    `scale_bounds` (lo, hi) must hold the identity, `0 < lo <= 1 <= hi`, finite; `lr` (the transform's Adam
    learning rate; 0: the box transform is used as it is) finite and >= 0; `shift_bound` finite in [0, 2];
    `threshold` in (0, 1); `frame_box` (if given) 4 finite numbers, centre in [0, 1], size in (0, 1].
    """
    errors = []
    try:
        lo, hi = (float(v) for v in scale_bounds)
    except (TypeError, ValueError):
        errors.append(f"align scale bounds must be two numbers (lo, hi), got {scale_bounds!r}")
    else:
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= 1 <= hi):
            errors.append(f"align scale bounds must satisfy 0 < lo <= 1 <= hi, got ({lo:g}, {hi:g})")
    if not _real(lr) or not math.isfinite(lr) or lr < 0:
        errors.append(f"align learning rate must be a finite number >= 0 (0: no refinement), got {lr!r}")
    if not _real(shift_bound) or not math.isfinite(shift_bound) or not 0 <= shift_bound <= 2:
        errors.append(
            f"align shift bound must be in [0, 2] (normalized units, 1 = half the frame), got {shift_bound!r}"
        )
    if not _real(threshold) or not 0 < threshold < 1:
        errors.append(f"align threshold must be in (0, 1), got {threshold!r}")
    if frame_box is not None:
        errors += check_frame_box(frame_box)
    return errors


def check_frame_box(box: Sequence[float]) -> list[str]:
    """One-line messages for a frame box that is not 4 finite numbers with centre in [0, 1] and size in (0, 1]."""
    values = list(box.tolist() if isinstance(box, Tensor) else box) if _iterable(box) else None
    if values is None or len(values) != 4 or not all(_real(v) and math.isfinite(v) for v in values):
        return [f"frame box must be 4 finite numbers (centre y, centre x, height, width), got {box!r}"]
    cy, cx, h, w = values
    if not (0 <= cy <= 1 and 0 <= cx <= 1 and 0 < h <= 1 and 0 < w <= 1):
        return [f"frame box needs centre in [0, 1] and size in (0, 1], got ({cy:g}, {cx:g}, {h:g}, {w:g})"]
    return []


def _real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _iterable(v) -> bool:
    try:
        iter(v)
    except TypeError:
        return False
    return True


def clamp_transform(transform: Transform, bounds: AlignBounds) -> Transform:
    """The transform with scales clamped into `bounds.scale` and translations into `[-shift, shift]`, per row."""
    lo, hi = bounds.scale
    s = bounds.shift
    return Transform(
        transform.sy.clamp(lo, hi),
        transform.sx.clamp(lo, hi),
        transform.ty.clamp(-s, s),
        transform.tx.clamp(-s, s),
        transform.flip,
    )


_EDGE = 1e-4  # how close to a bound `to_unconstrained` puts a value on it (the sigmoid / tanh never reach it)


def from_unconstrained(
    raw: Tensor, bounds: AlignBounds, flip: Tensor | None = None, keep_aspect: bool = False
) -> Transform:
    """The bounded transform of unconstrained parameters `raw [B, 4]` (columns sy, sx, ty, tx): `-> Transform [B]`.

    Scale: `lo * (hi / lo) ** sigmoid(r)` (geometric, so 1/2 and 2 are as far from 1); translation:
    `shift * tanh(r)`. Any real `raw` gives a transform inside `bounds`, so a plain (row) Adam can refine `raw`
    with a learning rate of its own; each row depends on its own `raw` row only. `keep_aspect`: column 0 is the
    scale of both axes (column 1 is unused and gets no gradient).
    """
    lo, hi = (math.log(v) for v in bounds.scale)
    sy = torch.exp(lo + (hi - lo) * torch.sigmoid(raw[:, 0]))
    sx = sy if keep_aspect else torch.exp(lo + (hi - lo) * torch.sigmoid(raw[:, 1]))
    ty = bounds.shift * torch.tanh(raw[:, 2])
    tx = bounds.shift * torch.tanh(raw[:, 3])
    return Transform(sy, sx, ty, tx, flip)


def to_unconstrained(transform: Transform, bounds: AlignBounds) -> Tensor:
    """The unconstrained `[B, 4]` whose `from_unconstrained` is `transform` (clamped into `bounds` first).

    Values on a bound are moved `_EDGE` inside it, where the sigmoid and tanh are still finite; a degenerate
    bound (lo = hi, or shift 0) gives 0, the parameter then having no effect.
    """
    lo, hi = (math.log(v) for v in bounds.scale)

    def scale(s: Tensor) -> Tensor:
        if hi == lo:
            return torch.zeros_like(s)
        u = ((s.clamp_min(1e-12).log() - lo) / (hi - lo)).clamp(_EDGE, 1 - _EDGE)
        return torch.logit(u)

    def shift(t: Tensor) -> Tensor:
        if bounds.shift == 0:
            return torch.zeros_like(t)
        return torch.atanh((t / bounds.shift).clamp(-1 + _EDGE, 1 - _EDGE))

    return torch.stack([scale(transform.sy), scale(transform.sx), shift(transform.ty), shift(transform.tx)], 1).detach()


def align_targets(
    targets: Tensor,
    frame_box: Tensor | Sequence[float] = FRAME_BOX,
    bounds: AlignBounds | None = None,
    flip: Tensor | None = None,
    threshold: float = 0.5,
    keep_aspect: bool = True,
) -> tuple[Tensor, Transform]:
    """The once-per-source part: targets `[B, S, S]` -> (targets in the generator's frame `[B, S, S]`, Transform [B]).

    `subject_box` of each target, `box_transform` onto `frame_box` (one `[4]`, or `[B, 4]` per row: e.g. a box
    measured per class), clamped into `bounds` when given (a tiny subject would otherwise be enlarged past what
    the search may refine); then the targets warped forward. The transform is the start of a refinement
    (`to_unconstrained`) or, unrefined, the one to map results back with `warp(..., inverse=True)`.
    """
    transform = box_transform(subject_box(targets, threshold), frame_box, flip=flip, keep_aspect=keep_aspect)
    if bounds is not None:
        transform = clamp_transform(transform, bounds)
    return warp_maps(targets, transform), transform


# ----------------------------------------------------------------------------------------------- the generator's frame


def measure_frame_box(
    generate: Callable[[Tensor, Tensor], Tensor],
    segment_subject: Callable[[Tensor, Tensor], Tensor],
    class_ids: Sequence[int],
    n: int,
    seed: int,
    batch: int = 16,
    threshold: float = 0.5,
) -> Tensor:
    """The generator's mean subject box, measured on `n` samples of each class: `-> [4]` (float32).

    `generate(class_ids [N] long, seeds [N] long) -> images [N, 3, H, W]` draws one sample per seed (for BigGAN:
    `initial_latents(seeds)` then `G(z, one_hot(class), truncation)`); `segment_subject(images, class_ids) ->
    maps [N, S, S]` is the ensemble's subject probability (both get CPU tensors: move them to the generator's
    device inside). Sample i of class c has the seed
    `trajectory_seed(seed, "frame_box", c, i)`, so the answer does not depend on `batch`. Samples with an empty
    map are left out (their full-frame box would pull the mean toward the whole frame); if every map is empty
    the answer is `FRAME_BOX`. The mean is taken per coordinate, in float64.
    """
    if n < 1 or batch < 1:
        raise ValueError(f"measure_frame_box needs n >= 1 and batch >= 1, got n={n}, batch={batch}")
    pairs = [(int(c), i) for c in class_ids for i in range(n)]
    total = torch.zeros(4, dtype=torch.float64)
    used = 0
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        classes = torch.tensor([c for c, _ in chunk], dtype=torch.long)
        seeds = torch.tensor([trajectory_seed(seed, "frame_box", c, i) for c, i in chunk], dtype=torch.long)
        with torch.no_grad():
            maps = segment_subject(generate(classes, seeds), classes)
        hit = (maps > threshold).flatten(1).any(1).cpu()
        boxes = subject_box(maps, threshold).double().cpu()
        total += boxes[hit].sum(0)
        used += int(hit.sum())
    if used == 0:
        return frame_box_tensor()
    return (total / used).float()


def cached_frame_box(cache_dir: str | Path, key: str, measure: Callable[[], Tensor]) -> Tensor:
    """The frame box stored for `key` in `cache_dir`, or `measure()`'s, stored there first: `-> [4]` (float32).

    `key` names what the box depends on (generator, class, truncation, ensemble, n, seed: the caller builds it).
    The file is `frame_box-<key as a safe name>-<hash>.json`, holding `{"key": ..., "box": [4 numbers]}`, written
    atomically; a file that does not parse, holds another key or an invalid box is measured again and replaced.
    The first call and every cached one return the same float32 values.
    """
    import hashlib

    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:60]
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    path = Path(cache_dir) / f"frame_box-{slug}-{digest}.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(stored, dict) and stored.get("key") == key and not check_frame_box(stored.get("box")):
            return frame_box_tensor([float(v) for v in stored["box"]])
    except (OSError, ValueError, TypeError):
        pass
    box = [float(v) for v in frame_box_tensor(measure()).tolist()]
    problems = check_frame_box(box)
    if problems:
        raise ValueError(f"measured {problems[0]}")
    atomic_write_text(path, json.dumps({"key": key, "box": box}, indent=1) + "\n")
    return frame_box_tensor(box)
