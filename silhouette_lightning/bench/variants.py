"""Benchmark variants: `--compare` items (YAML files, bundled folders, `key=value` lists) -> one config each."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from silhouette_lightning.config.settings import CONFIG_DIR, SwapConfig, build_config, load_yaml
from silhouette_lightning.core.errors import UsageError

# What every variant of a benchmark shares, so that they run the same trajectories and can be compared: only the
# base flags (or the base --config file) set these. A variant may repeat a shared setting with the same value.
SHARED_SETTINGS = ("data", "masks", "subject", "classes", "seed", "restarts", "steps", "max_pixels", "thresholds")
# Where each variant is written: set by the benchmark, never by a variant.
PLACEMENT = ("out", "name")
_KEY = r"[A-Za-z_][A-Za-z0-9_-]*"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Variant:
    """One compared setting: its label (file stem or the `key=value` text), its folder name and its settings."""

    label: str
    layer: dict[str, Any]
    source: str  # where it came from: a file path, or "flags"

    @property
    def folder(self) -> str:
        """The variant's run folder name under the benchmark folder."""
        return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", self.label).strip("._") or "variant"


def _value(text: str) -> Any:
    """A `key=value` value: numbers as numbers (1e-3 too, which YAML 1.1 reads as text), else YAML."""
    text = text.strip()
    if _NUMBER.fullmatch(text):
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return text


def parse_key_values(text: str) -> dict[str, Any]:
    """`"loss=bce_bg,lr=0.05"` -> `{"loss": "bce_bg", "lr": 0.05}`; a comma starts a new pair only before `key=`,
    so values may hold commas (`segmenters=deeplabv3_resnet101:0.6,fcn_resnet101:0.4`).

    >>> parse_key_values("segmenters=a:0.6,b:0.4,lr=1e-3")
    {'segmenters': 'a:0.6,b:0.4', 'lr': 0.001}
    """
    layer: dict[str, Any] = {}
    for pair in re.split(rf",(?={_KEY}=)", text.strip()):
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(_KEY, key.strip()):
            raise UsageError(f"--compare {text!r}: expected key=value[,key=value...], got {pair!r}")
        layer[key.strip().replace("-", "_")] = _value(value)
    return layer


def _files_of(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise UsageError(f"--compare {folder}: the folder holds no .yaml files")
    return files


def bundled_groups() -> list[str]:
    """Names of the bundled comparison folders in `configs/` (`appendix_a`, `appendix_c`)."""
    return sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and any(p.glob("*.yaml")))


def parse_variants(items: list[str] | None) -> list[Variant]:
    """The variants of `--compare`: each item a YAML file, a folder of them (or a bundled folder name such as
    `appendix_a`), a bundled config name (`paper`), or `key=value[,key=value...]`. No items: one variant, `base`,
    that is the base settings alone."""
    if not items:
        return [Variant("base", {}, "flags")]
    variants: list[Variant] = []
    for item in items:
        path = Path(item)
        if path.is_dir() or (not path.exists() and (CONFIG_DIR / item).is_dir() and "/" not in item):
            folder = path if path.is_dir() else CONFIG_DIR / item
            variants += [Variant(f.stem, load_yaml(f), str(f)) for f in _files_of(folder)]
        elif path.is_file() or (CONFIG_DIR / f"{item}.yaml").is_file() or item.endswith((".yaml", ".yml")):
            file = path if path.is_file() else CONFIG_DIR / f"{item}.yaml"
            variants.append(Variant(Path(item).stem, load_yaml(item), str(file)))
        elif item == RANDOM_SEARCH:  # its starts are sized to the first other variant's cost (random_search_config)
            variants.append(Variant(RANDOM_SEARCH, {}, RANDOM_SEARCH))
        elif "=" in item:
            layer = parse_key_values(item)
            variants.append(Variant(",".join(f"{k}={v}" for k, v in _labels(item)), layer, "flags"))
        else:
            raise UsageError(
                f"--compare {item!r}: not a file, a folder, a bundled name ({', '.join(bundled_groups())}) or key=value"
            )
    seen: dict[str, Variant] = {}
    for v in variants:
        if v.folder in seen:
            same = v.source == seen[v.folder].source == "flags" or v.layer == seen[v.folder].layer
            raise UsageError(
                f"--compare: {item_text(v)} is given twice; give each variant once"
                if same
                else f"--compare: two variants would share the folder {v.folder!r} ({seen[v.folder].source} and "
                f"{v.source}); rename one of the files"
            )
        seen[v.folder] = v
    return variants


RANDOM_SEARCH = "random"  # `--compare random`: the random-search baseline at equal cost


def random_search_config(config: SwapConfig, reference: SwapConfig, forward_cost: float) -> SwapConfig:
    """The random-search baseline of `reference`: N random starts per (source, class) scored with forward passes
    only, the best `restarts` of them kept and scored once more (0 Adam steps), with N chosen so that a pair costs
    what it costs under `reference` (latent-step units, outputs/runtime.py): `N x forward_cost + R` =
    `R x (steps + 1) + reference's own best-of-N cost`. Early stop and pruning are off: nothing is optimized."""
    r = reference.restarts
    budget = r * (reference.steps + 1) + (reference.starts * forward_cost if reference.starts > r else 0.0)
    starts = max(round((budget - r) / forward_cost), r + 1)
    return dataclasses.replace(
        config, steps=0, starts=starts, stop_iou=None, patience=None, prune_after=None, class_lr=0.0, frames=1
    )


def item_text(v) -> str:
    """How the user wrote variant `v` on the command line."""
    return v.label if v.source == "flags" else v.source


def _labels(text: str) -> list[tuple[str, str]]:
    """The `key=value` pairs as typed, for a label that reads like the command line."""
    return [tuple(p.strip().partition("=")[::2]) for p in re.split(rf",(?={_KEY}=)", text.strip())]


def variant_config(variant: Variant, base: list[dict[str, Any]], *, out: Path) -> SwapConfig:
    """Defaults < base layers (--config file, flags) < the variant; written to `out/<variant folder>`.

    A variant that changes a shared setting (the same sources, classes and seeds for every variant) is an error.
    """
    placed = [k for k in PLACEMENT if k in variant.layer]
    if placed:
        raise UsageError(
            f"variant {variant.label} ({variant.source}) sets {', '.join(placed)}: the benchmark chooses "
            "where each variant is written; remove it"
        )
    try:
        shared = build_config(*base)
        config = build_config(*base, variant.layer, {"out": str(out), "name": variant.folder})
    except UsageError as e:
        raise UsageError(f"variant {variant.label} ({variant.source}): {e}") from None
    changed = [k for k in SHARED_SETTINGS if getattr(config, k) != getattr(shared, k)]
    if changed:
        diffs = ", ".join(f"{k}: {getattr(shared, k)!r} -> {getattr(config, k)!r}" for k in changed)
        raise UsageError(
            f"variant {variant.label} ({variant.source}) changes {diffs}; every variant shares "
            f"{', '.join(SHARED_SETTINGS)}: set them with the base flags only"
        )
    return config
