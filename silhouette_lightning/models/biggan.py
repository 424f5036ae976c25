"""BigGAN-deep generators: find the pretrained files (cache, download, or a user folder) and load them strictly.

`pytorch-pretrained-biggan`'s own `BigGAN.from_pretrained(name)` sends an HTTP request on every call, even
with the file cached, and loads with `strict=False`; this module resolves and caches the two files itself,
so a second run needs no network, and refuses a checkpoint with missing or extra keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from pytorch_pretrained_biggan import BigGAN, BigGANConfig
from torch.nn.utils.spectral_norm import SpectralNorm

from silhouette_lightning.core.errors import UsageError, WeightsError
from silhouette_lightning.core.files import atomic_torch_save, atomic_write_text
from silhouette_lightning.models.fetch import DownloadError, download_file
from silhouette_lightning.models.frozen import bake_spectral_norm, freeze

BIGGAN_NAMES = ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512")
DEFAULT_BIGGAN_URL = "https://s3.amazonaws.com/models.huggingface.co/biggan"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "pytorch_model.bin"

# Block lists of the published configs (the same as pytorch_pretrained_biggan/convert_tf_to_pytorch.py):
# (upsample?, in channels / channel_width, out channels / channel_width). 128 is BigGANConfig's default.
_LAYERS_256 = [
    (False, 16, 16),
    (True, 16, 16),
    (False, 16, 16),
    (True, 16, 8),
    (False, 8, 8),
    (True, 8, 8),
    (False, 8, 8),
    (True, 8, 4),
    (False, 4, 4),
    (True, 4, 2),
    (False, 2, 2),
    (True, 2, 1),
]
_LAYERS_512 = [*_LAYERS_256, (False, 1, 1), (True, 1, 1)]


def default_cache_dir() -> Path:
    """The folder for downloaded weights: `$SILHOUETTE_CACHE` if set, else `~/.cache/silhouette_lightning`."""
    env = os.environ.get("SILHOUETTE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "silhouette_lightning"


def biggan_urls(name: str) -> tuple[str, str]:
    """(weights URL, config URL) of a published BigGAN; the base URL can be replaced by `$SILHOUETTE_BIGGAN_URL`."""
    base = os.environ.get("SILHOUETTE_BIGGAN_URL") or DEFAULT_BIGGAN_URL
    base = base.rstrip("/")
    return f"{base}/{name}-pytorch_model.bin", f"{base}/{name}-config.json"


def resolve_generator_dir(
    spec: str | os.PathLike,
    *,
    cache_dir: Path | None = None,
    names: Sequence[str] | None = None,
) -> Path:
    """The folder holding `config.json` and `pytorch_model.bin` for `spec`, downloading them if needed.

    `spec` is either an existing folder (used as is, never downloaded into) or a published name from
    `names` (default `BIGGAN_NAMES`), cached in `cache_dir/biggan/<name>/` (default `default_cache_dir()`).
    A complete cache folder is returned without any network access.

    Raises:
        WeightsError: a user folder lacks a file, or a file is missing from the cache and cannot be downloaded.
        UsageError: `spec` is neither a folder nor a known name.
    """
    names = BIGGAN_NAMES if names is None else tuple(names)
    path = Path(spec).expanduser()
    if path.is_dir():
        missing = [f for f in (CONFIG_NAME, WEIGHTS_NAME) if not (path / f).is_file()]
        if missing:
            raise WeightsError(
                f"generator folder {path} has no {' and no '.join(missing)}: a generator folder needs "
                f"{CONFIG_NAME} and {WEIGHTS_NAME} (the files of a pytorch-pretrained-biggan model)"
            )
        return path
    name = str(spec)
    if name not in names:
        raise UsageError(
            f"unknown generator {name!r}: give one of {', '.join(names)}, or a folder holding {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}"
        )
    folder = (default_cache_dir() if cache_dir is None else Path(cache_dir)) / "biggan" / name
    weights_url, config_url = biggan_urls(name)
    # Config first: it is small, so a dead network is reported before a long wait on the big file.
    files = [(folder / CONFIG_NAME, config_url), (folder / WEIGHTS_NAME, weights_url)]
    for dest, url in files:
        if dest.is_file():
            continue
        try:
            download_file(url, dest)
        except DownloadError as exc:
            todo = "\n".join(f"  {u}  ->  {d}" for d, u in files if not d.is_file())
            raise WeightsError(
                f"BigGAN {name!r}: {dest.name} is missing from {folder} and could not be downloaded ({exc}).\n"
                f"Download these files and save them under these names, then run again:\n{todo}\n"
                f"or pass --generator DIR with a folder holding {CONFIG_NAME} and {WEIGHTS_NAME}."
            ) from exc
    return folder


def load_generator(
    spec: str | os.PathLike,
    *,
    cache_dir: Path | None = None,
    map_location: str | torch.device = "cpu",
    names: Sequence[str] | None = None,
) -> BigGAN:
    """Load a BigGAN from a folder or a published name (see `resolve_generator_dir`), strictly, and frozen.

    Every key of the checkpoint must match the model, and the reverse. `map_location` is where the checkpoint
    tensors are read to; the model itself is built on the CPU (move it with `.to()`).

    Raises:
        WeightsError: a file is missing, unreadable, truncated, or does not fit the config.
        UsageError: `spec` is neither a folder nor a known name.
    """
    folder = resolve_generator_dir(spec, cache_dir=cache_dir, names=names)
    in_cache = not Path(spec).expanduser().is_dir()
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    fix = "delete it so that the next run downloads it again" if in_cache else "replace it with a good copy"

    try:
        config = BigGANConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        model = BigGAN(config)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError) as exc:
        # from_dict accepts any JSON object, so a wrong file fails only when the model is built from it.
        raise WeightsError(f"{config_path} is not a usable BigGAN config ({exc}): {fix}") from exc

    try:
        state_dict = torch.load(weights_path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip, pickle and EOF errors all mean a bad file here
        raise WeightsError(f"cannot read {weights_path} ({exc}); it is truncated or corrupt: {fix}") from exc
    if not isinstance(state_dict, dict):
        raise WeightsError(f"{weights_path} holds a {type(state_dict).__name__}, not a state dict: {fix}")

    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise WeightsError(
            f"{weights_path} does not fit {config_path}: missing keys {_some(missing)}, unexpected keys "
            f"{_some(unexpected)}; {fix}"
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"{weights_path} does not fit {config_path}: {exc}; {fix}") from exc
    model = bake_spectral_norm(freeze(model))
    model.origin = str(spec) if in_cache else str(folder.resolve())  # what latents record (`generator_origin`)
    return model


UNKNOWN_ORIGIN = "unknown"


def generator_origin(model) -> str:
    """What reloads `model`: the published name or the resolved folder `load_generator` read it from, else
    `UNKNOWN_ORIGIN` (a model built in memory: nothing on disk stands for it)."""
    return getattr(model, "origin", None) or UNKNOWN_ORIGIN


def save_generator(model: BigGAN, folder: str | os.PathLike) -> Path:
    """Write `config.json` and `pytorch_model.bin` into `folder` (each atomically) so `load_generator(folder)`
    reads the model back."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CONFIG_NAME, model.config.to_json_string())
    # Clone so the file holds plain tensors, not views sharing storage with the live model.
    atomic_torch_save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, folder / WEIGHTS_NAME)
    return folder


def pretrained_config(name: str) -> BigGANConfig:
    """The architecture of a published BigGAN-deep model (no weights, no download)."""
    if name == "biggan-deep-128":
        return BigGANConfig()
    if name == "biggan-deep-256":
        return BigGANConfig(output_dim=256, layers=list(_LAYERS_256))
    if name == "biggan-deep-512":
        return BigGANConfig(output_dim=512, layers=list(_LAYERS_512))
    raise UsageError(f"unknown generator {name!r}: give one of {', '.join(BIGGAN_NAMES)}")


def tiny_biggan_config() -> BigGANConfig:
    """A 32 x 32, 10-class BigGAN-deep small enough for unit tests (34k parameters)."""
    return BigGANConfig(
        output_dim=32,
        z_dim=8,
        channel_width=4,
        num_classes=10,
        layers=[(True, 16, 8), (True, 8, 4), (True, 4, 2), (False, 2, 1)],
        attention_layer_position=1,
    )


def build_random_generator(
    name_or_config: str | BigGANConfig,
    *,
    seed: int = 0,
    power_iterations: int = 30,
) -> BigGAN:
    """A frozen BigGAN with random weights whose output still depends on z, for tests and benchmarks.

    `name_or_config` is a name from `BIGGAN_NAMES` (the published architecture) or a `BigGANConfig`.
    The global random state is left untouched: weights come from `seed` alone.

    Fresh weights alone give a zero gradient with respect to z: the final (unconditional) batch norm's
    affine parameters are uninitialized memory, and spectral norm divides by a sigma estimated from random
    vectors, far below the true one, so activations explode and tanh saturates. Hence the explicit batch
    norm init and the power iterations before freezing.
    """
    config = pretrained_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BigGAN(config)
        with torch.no_grad():
            final_bn = model.generator.bn
            final_bn.weight.fill_(1.0)
            final_bn.bias.zero_()
            final_bn.running_means.zero_()
            final_bn.running_vars.fill_(1.0)
            # Same update as `power_iterations` train-mode forwards, without the cost of the forwards.
            for module in model.modules():
                for hook in module._forward_pre_hooks.values():
                    if isinstance(hook, SpectralNorm):
                        for _ in range(power_iterations):
                            hook.compute_weight(module, do_power_iteration=True)
    return freeze(model)


def _some(keys: Sequence[str], limit: int = 5) -> str:
    """Up to `limit` keys, then a count of the rest."""
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown} and {len(keys) - limit} more"
