"""Run settings: one dataclass, read from YAML files and command-line flags, checked before any work."""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from silhouette_lightning.config.types import type_problems
from silhouette_lightning.core.errors import UsageError
from silhouette_lightning.core.names import (
    COMPILE_MODES,
    DEFAULT_HELDOUT,
    ENSEMBLE_MODES,
    EXACT_STRATEGIES,
    FITS,
    LOSSES,
    PRIORS,
    heldout_problem,
    parse_ensemble_spec,
)
from silhouette_lightning.search.options import AdamOptions, ObjectiveOptions, RowOptions, SearchOptions


def _config_dir() -> Path:
    """The bundled configs: the package data of an installed wheel (`silhouette_lightning/configs`), else the
    checkout's top-level `configs/` (an editable install, or the source tree on the path)."""
    installed = Path(str(importlib.resources.files("silhouette_lightning"))) / "configs"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "configs"


CONFIG_DIR = _config_dir()
SAVE_IMAGES = ("none", "best", "all")
# --precision values that keep invariant 1 (one row's overflow never changes another row), each mapped to
# Lightning's name. "16-mixed" is left out: its gradient scaler skips the whole [G, Z] step when any row
# overflows and carries its scale from chunk to chunk; "16-true" overflows without a scaler; "64-true" is
# not worth its cost. bf16 has float32's exponent range, so it needs no scaler.
PRECISIONS: dict[str, str] = {
    "auto": "auto",
    "32-true": "32-true",
    "32": "32-true",
    "bf16-mixed": "bf16-mixed",
    "bf16": "bf16-mixed",
}
# Four times the 520 px the segmenters were trained at; activation memory grows with the square of the size, so a
# larger value only fails later with an out-of-memory error.
MAX_SEG_SIZE = 2048


def normalize_compile(value) -> str:
    """`compile` as one of "auto", "none", "ensemble", "all" (YAML booleans: true = ensemble, false = none)."""
    if value is True:
        return "ensemble"
    if value is False or value is None:
        return "none"
    return str(value)


@dataclass
class SwapConfig:
    """Everything a run depends on. Defaults are the paper's settings (appendix B)."""

    data: str | None = None  # folder of source photos or masks
    masks: bool = False  # the files are silhouettes (white subject on black): no source segmentation
    subject: str | None = None  # VOC class of every source; default: folder name, else the photo's largest
    # ImageNet ids or names: a list, one id, or the CLI's comma-separated text; default: per subject, classes.yaml
    classes: str | int | list[str | int] | None = None
    restarts: int = 8
    # Search options (docs/search.md). The paper's search is starts 0 and the others off (configs/paper.yaml);
    # best-of-32 starts is the default: it passed the rule for a default (docs/search.md), the others are opt-in
    starts: int = 32  # best-of-N: score N candidate starts per (source, class), keep the best; <= restarts: off
    class_lr: float = 0.0  # learning rate of the class vector, optimized with z from the one-hot (0: fixed class)
    prior_weight: float = 0.0  # weight of the latent prior in the loss (0: off)
    prior: str = "box"  # box: squared distance of z outside the truncation region; norm: ReNO's prior on ||z||
    stop_iou: float | None = None  # a trajectory stops once its best IoU reaches this
    patience: int | None = None  # a trajectory stops after this many steps without a better IoU
    prune_after: int | None = None  # after this many steps only the better half of each group's restarts goes on
    steps: int = 25
    lr: float = 0.1
    betas: tuple[float, float] = (0.5, 0.99)
    seed: int = 0
    batch_size: int | Literal["auto"] = (
        "auto"  # trajectories per device per step; auto: largest that fits a GPU, 16 on a CPU
    )
    truncation: float = 0.4
    generator: str = "biggan-deep-128"
    segmenters: str = "deeplabv3_resnet101:0.6,fcn_resnet101:0.4"
    seg_size: int = 256
    fit: str = "pad"  # non-square photos and masks to the networks' square: pad | crop | stretch (framing.py)
    ensemble: str = "probs"
    loss: str = "mse"
    heldout: str = DEFAULT_HELDOUT  # VOC segmenter outside the ensemble that scores each best image, or "none"
    frames: int = 6  # latents kept per trajectory for the progress strip and animation
    save_images: str = "all"  # none | best (best image, masks, composite) | all (+ strip, animation)
    blend: str = "soft"  # composites: soft-edged mask, or "poisson" (OpenCV seamlessClone, optional dependency)
    thresholds: list[float] = field(default_factory=lambda: [0.5, 0.75, 0.9])  # IoU levels of convergence.csv
    image_every: int = 5  # TensorBoard image panel every N steps (0: never)
    log_every: int = 10  # TensorBoard step scalars every N latent steps and the last (cost: docs/benchmark.md)
    max_pixels: int = 50_000_000  # larger source images are skipped (decompression bombs)
    out: str = "runs"
    name: str | None = None
    # Lightning's own
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    # auto: bf16-mixed on a GPU that has it, else 32-true (run/machine.py); an int (YAML 32, 16) is checked in validate
    precision: str | int = "auto"
    compile: bool | str = "auto"  # torch.compile for the training steps: none|ensemble|all; auto: ensemble on a GPU
    pretrained: bool = True  # False: random segmenter weights (tests, benchmarks); never for real results
    # one intra-op thread per process (CPU reductions round with the thread count), deterministic algorithms and a
    # fixed chunk shape on GPUs: runs repeat bit for bit for any --batch-size and process count (README)
    deterministic: bool = False
    verbose: bool = False  # show Lightning's own messages as well as the tool's
    fresh: bool = False  # replace what OUT/NAME holds (its results, pictures and caches) instead of resuming it
    default_classes: dict[str, list[str | int]] = field(default_factory=dict)

    # Settings that may change between a run and its resumption without changing any result.
    RUNTIME_ONLY = frozenset(
        {
            "batch_size",
            "accelerator",
            "devices",
            "num_nodes",
            "strategy",
            "out",
            "name",
            "save_images",
            "image_every",
            "log_every",
            "blend",
            "thresholds",  # convergence.csv is recomputed from all records at the end of every run
            "deterministic",  # the same results up to float rounding
            "verbose",
            "fresh",
        }
    )

    @property
    def run_dir(self) -> Path:
        """`OUT/NAME`: where everything of this run is written."""
        return Path(self.out) / (self.name or default_run_name(self))

    def to_dict(self) -> dict[str, Any]:
        """Plain values for YAML and TensorBoard hyperparameters."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def result_settings(self) -> dict[str, Any]:
        """The settings results depend on: a resumed run must match them."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_ONLY}


def comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as a resumed run compares them: the same folder however it is written (`./data`, `data/`, an
    absolute path), the same classes in any order or spelling (`1,3` and `"tiger shark",1`)."""
    from silhouette_lightning.core.classes import parse_class_list, resolve_imagenet_classes

    def class_set(items):
        try:
            return sorted(set(resolve_imagenet_classes(parse_class_list(items) if isinstance(items, str) else items)))
        except (UsageError, TypeError):  # not a class list: compared as written
            return items

    out = dict(settings)
    if out.get("data"):
        out["data"] = str(Path(out["data"]).resolve())
    if out.get("generator") and Path(out["generator"]).is_dir():
        out["generator"] = str(Path(out["generator"]).resolve())
    if out.get("classes"):
        out["classes"] = class_set(out["classes"])
    if isinstance(out.get("default_classes"), dict):
        out["default_classes"] = {k: class_set(v) for k, v in out["default_classes"].items()}
    return out


def config_yaml(config: SwapConfig) -> str:
    """The settings as YAML, in field order: what `--print-config` prints and `config.yaml` holds; `--config`
    reads it back to the same settings."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def default_run_name(config: SwapConfig) -> str:
    """`<data folder name>-<generator>` made safe for a folder name."""
    base = Path(config.data).resolve().name if config.data else "run"
    generator = Path(config.generator).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{base}-{generator}").strip("._-") or "run"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file; a bare name is looked up in `configs/` (`paper` -> `configs/paper.yaml`)."""
    p = Path(path)
    if not p.exists() and (CONFIG_DIR / f"{p.name}.yaml").exists():
        p = CONFIG_DIR / f"{p.name}.yaml"
    if not p.is_file():
        raise UsageError(f"config file {path} not found (bundled configs: {', '.join(bundled_configs())})")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise UsageError(
            f"config file {p} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): save it as UTF-8"
        ) from None
    except yaml.YAMLError as e:
        raise UsageError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {p} must hold a mapping of setting: value")
    return data


def bundled_configs() -> list[str]:
    """Names of the YAML files in `configs/`."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem != "classes")


def build_config(*layers: dict[str, Any]) -> SwapConfig:
    """Defaults, then `configs/classes.yaml`, then each layer (config file, flags) on top; checked."""
    names = {f.name for f in dataclasses.fields(SwapConfig)}
    values: dict[str, Any] = {"default_classes": load_yaml(CONFIG_DIR / "classes.yaml")}
    for layer in layers:
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key not in names:
                raise UsageError(f"unknown setting {key!r}; known: {', '.join(sorted(names))}")
            if value is not None:
                values[key] = value
    if str(values.get("precision")) in PRECISIONS:  # aliases ("bf16", 32 from YAML) -> Lightning's own name
        values["precision"] = PRECISIONS[str(values["precision"])]
    config = SwapConfig(**values)
    validate(config)
    # Only now that the types are known good: the canonical forms (a YAML list of betas, a whole-number lr).
    config.betas = tuple(float(b) for b in config.betas)
    for name, annotation in typing.get_type_hints(SwapConfig).items():
        if annotation is float:
            setattr(config, name, float(getattr(config, name)))
    return config


def validate(c: SwapConfig) -> None:
    """Settings of the wrong type (from their annotations) or out of range are usage errors, found before any work."""
    from silhouette_lightning.core.classes import class_items  # torchvision's class names: only when checking

    problems = type_problems(c)
    if problems:  # the range checks below assume the types
        raise UsageError("; ".join(problems))
    if c.classes is not None and not class_items(c.classes):
        problems.append(
            f"--classes names no class (got {c.classes!r}): give ImageNet ids or names (207,tabby), or "
            "leave it out for each subject's default classes"
        )
    if c.name is not None and (
        c.name in ("", ".", "..") or Path(c.name).name != c.name or "/" in c.name or "\\" in c.name
    ):
        problems.append(f"--name must be a folder name inside --out, without / or \\ or .., got {c.name!r}")
    if not 0 < c.truncation <= 1:
        problems.append(f"--truncation must be in (0, 1], got {c.truncation}")
    for name in ("restarts", "steps", "seg_size", "frames", "num_nodes", "max_pixels", "log_every"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
    problems += search_problems(c)
    if isinstance(c.seg_size, int) and c.seg_size > MAX_SEG_SIZE:
        problems.append(
            f"--seg-size must be at most {MAX_SEG_SIZE} (the segmenters' memory grows with its square; "
            f"their weights were trained near 520), got {c.seg_size}"
        )
    if not (isinstance(c.lr, (int, float)) and c.lr > 0):
        problems.append(f"--lr must be positive, got {c.lr}")
    if len(c.betas) != 2 or not all(0 <= b < 1 for b in c.betas):
        problems.append(f"betas must be two numbers in [0, 1), got {list(c.betas)}")
    if c.batch_size != "auto" and not (isinstance(c.batch_size, int) and c.batch_size >= 1):
        problems.append(f"--batch-size must be a whole number >= 1 or 'auto', got {c.batch_size!r}")
    if c.blend not in ("soft", "poisson"):
        problems.append(f"--blend must be soft or poisson, got {c.blend!r}")
    elif c.blend == "poisson":
        try:
            import cv2  # noqa: F401
        except ImportError:
            problems.append("--blend poisson needs OpenCV: pip install opencv-python-headless")
    t = c.thresholds
    if not (
        isinstance(t, (list, tuple))
        and t
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1 for x in t)
    ):
        problems.append(f"--thresholds must be one or more IoU levels in (0, 1], like 0.5,0.75,0.9; got {t!r}")
    if normalize_compile(c.compile) not in ("auto", *COMPILE_MODES):
        problems.append(f"--compile must be one of auto, {', '.join(COMPILE_MODES)}, got {c.compile!r}")
    if c.image_every < 0:
        problems.append(f"--image-every must be >= 0, got {c.image_every}")
    if c.precision not in PRECISIONS:
        problems.append(
            f"--precision must be one of {', '.join(PRECISIONS)}, got {c.precision!r} (16-bit float gradient "
            "scaling would tie trajectories together; use bf16-mixed on GPUs)"
        )
    if c.strategy not in EXACT_STRATEGIES:  # Lightning's registry says why (imports Lightning: only then)
        from silhouette_lightning.engine.distributed import strategy_problem

        if problem := strategy_problem(c.strategy):
            problems.append(problem)
    if c.fit not in FITS:
        problems.append(f"--fit must be one of {', '.join(FITS)}, got {c.fit!r}")
    if c.loss not in LOSSES:
        problems.append(f"--loss must be one of {', '.join(LOSSES)}, got {c.loss!r}")
    if c.ensemble not in ENSEMBLE_MODES:
        problems.append(f"--ensemble must be one of {', '.join(ENSEMBLE_MODES)}, got {c.ensemble!r}")
    if c.save_images not in SAVE_IMAGES:
        problems.append(f"--save-images must be one of {', '.join(SAVE_IMAGES)}, got {c.save_images!r}")
    if problem := heldout_problem(c.heldout, c.segmenters):
        problems.append(problem)
    try:
        members = parse_ensemble_spec(c.segmenters)
        if sum(w for _, w in members) <= 0 or any(w < 0 for _, w in members):
            problems.append(f"--segmenters weights must be >= 0 and sum to a positive number, got {c.segmenters!r}")
    except UsageError as e:
        problems.append(str(e))
    if problems:
        raise UsageError("; ".join(problems))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def search_problems(c: SwapConfig) -> list[str]:
    """Range checks of the search options."""
    problems = []
    if not (_whole(c.starts) and c.starts >= 0):
        problems.append(f"--starts must be a whole number >= 0 (at most --restarts: off), got {c.starts!r}")
    for name in ("class_lr", "prior_weight"):
        value = getattr(c, name)
        if not (_number(value) and value >= 0):
            problems.append(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value!r}")
    if c.prior not in PRIORS:
        problems.append(f"--prior must be one of {', '.join(PRIORS)}, got {c.prior!r}")
    elif c.prior != "box" and _number(c.prior_weight) and c.prior_weight == 0:
        problems.append(f"--prior {c.prior} needs a --prior-weight above 0 (ReNO uses 0.01)")
    if c.stop_iou is not None and not (_number(c.stop_iou) and 0 < c.stop_iou <= 1):
        problems.append(f"--stop-iou must be in (0, 1], got {c.stop_iou!r}")
    if c.patience is not None and not (_whole(c.patience) and c.patience >= 1):
        problems.append(f"--patience must be a whole number >= 1, got {c.patience!r}")
    if c.prune_after is not None and not (
        _whole(c.prune_after) and c.prune_after >= 1 and (not _whole(c.steps) or c.prune_after < c.steps)
    ):
        problems.append(f"--prune-after must be a whole number in [1, --steps), got {c.prune_after!r}")
    elif c.prune_after is not None and _whole(c.batch_size) and _whole(c.restarts) and c.batch_size < c.restarts:
        problems.append(
            f"--prune-after compares a source and class's restarts within one batch: it needs "
            f"--batch-size >= --restarts ({c.restarts}), got {c.batch_size}"
        )
    return problems


def search_options(c: SwapConfig) -> SearchOptions:
    """The module's view of the search settings (`starts` at most `restarts` is the plain search: 0)."""
    return SearchOptions(
        restarts=c.restarts,
        starts=c.starts if c.starts > c.restarts else 0,
        class_lr=float(c.class_lr),
        prior_weight=float(c.prior_weight),
        stop_iou=c.stop_iou,
        patience=c.patience,
        prune_after=c.prune_after,
    )


def views(c: SwapConfig, *, batch_size: int | None = None) -> dict:
    """The typed views the search core and the LightningModule take (search/options.py), as keywords:
    `SilhouetteSwap(generator, ensemble, **views(config, batch_size=16))`. `batch_size`: the resolved one (the
    config's may be "auto"); `compile` "auto" counts as none here (run/machine.py resolves it for a run)."""
    batch = c.batch_size if batch_size is None else batch_size
    if not isinstance(batch, int):
        raise ValueError(f"views need a resolved batch size, got {batch!r}")
    compile_mode = normalize_compile(c.compile)
    return {
        "rows": RowOptions(batch_size=batch, steps=c.steps, frames=c.frames),
        "objective": ObjectiveOptions(
            truncation=c.truncation,
            loss=c.loss,
            ensemble_mode=c.ensemble,
            prior_weight=float(c.prior_weight),
            prior=c.prior,
            compile="none" if compile_mode == "auto" else compile_mode,
        ),
        "adam": AdamOptions(lr=float(c.lr), betas=tuple(c.betas)),
        "search": search_options(c),
        "log_every": c.log_every,
    }
