"""Every pretrained file a run needs, fetched before any is loaded, so that all missing ones are named at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from silhouette_lightning.core.errors import WeightsError
from silhouette_lightning.models.biggan import BIGGAN_NAMES, CONFIG_NAME, WEIGHTS_NAME, biggan_urls, default_cache_dir
from silhouette_lightning.models.fetch import DownloadError, download_file
from silhouette_lightning.models.segmenters import _HASH_IN_NAME, segmenter_weights_path


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained file: what it is for, where it comes from, where the run looks for it."""

    what: str
    url: str
    path: Path
    sha256_prefix: str | None = None


def needed_files(*, generator: str | None, segmenters: list[str], heldout: str | None = None) -> list[WeightsFile]:
    """The files of a published generator name (a folder is the user's own: nothing to fetch), of each
    torchvision segmenter and of the held-out one."""
    files = []
    if generator is not None and not Path(generator).expanduser().is_dir() and generator in BIGGAN_NAMES:
        folder = default_cache_dir() / "biggan" / generator
        weights_url, config_url = biggan_urls(generator)
        files += [
            WeightsFile(f"generator {generator}", config_url, folder / CONFIG_NAME),
            WeightsFile(f"generator {generator}", weights_url, folder / WEIGHTS_NAME),
        ]
    for name in dict.fromkeys(segmenters):
        path, url = segmenter_weights_path(name)
        match = _HASH_IN_NAME.search(path.name)
        files.append(WeightsFile(f"segmenter {name}", url, path, match.group(1) if match else None))
    if heldout is not None and heldout not in segmenters:
        path, url = segmenter_weights_path(heldout)
        match = _HASH_IN_NAME.search(path.name)
        files.append(
            WeightsFile(
                f"held-out segmenter (--heldout {heldout}, or pass --heldout none)",
                url,
                path,
                match.group(1) if match else None,
            )
        )
    return files


def ensure_weights(files: list[WeightsFile]) -> None:
    """Download each absent file; if any cannot be, raise one WeightsError listing every one of them.

    A download that fails leaves nothing at the final path (see `fetch.download_file`), so the next run tries
    again only what is still missing.
    """
    failed = []
    for f in files:
        if f.path.is_file():
            continue
        try:
            download_file(f.url, f.path, sha256_prefix=f.sha256_prefix)
        except DownloadError as e:
            failed.append((f, e))
    if failed:
        lines = "\n".join(f"  {f.what}: {f.url}\n      -> {f.path}" for f, _ in failed)
        first_reason = failed[0][1]
        raise WeightsError(
            f"{len(failed)} pretrained file(s) are missing and could not be downloaded ({first_reason}). Download "
            f"each and save it under the path shown (segmenters: or set TORCH_HOME to a folder whose "
            f"hub/checkpoints holds them; the generator: or pass --generator DIR with {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}), then run again:\n{lines}"
        )
