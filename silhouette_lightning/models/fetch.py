"""Download one file over HTTP(S) so that no file ever appears under its final name half-written."""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO
from urllib.request import Request, urlopen

from tqdm import tqdm

# Big enough for the full BigGAN-deep-512 file at a slow link, small enough that a dead network is
# reported within a minute rather than never: urlopen has no timeout by default.
DEFAULT_TIMEOUT_S = 30.0
_CHUNK_BYTES = 1 << 20
_PROGRESS_MIN_BYTES = 4 << 20


class DownloadError(OSError):
    """A download failed (network, HTTP status, short read or hash mismatch); nothing was left at the final path."""


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    sha256_prefix: str | None = None,
    progress: bool = True,
) -> Path:
    """Stream `url` into `dest` through a temporary file in the same folder, renamed only when complete.

    A short read (fewer bytes than Content-Length) or a SHA-256 that does not start with `sha256_prefix`
    raises `DownloadError` and removes the temporary file. Network errors are re-raised as `DownloadError`.
    A tqdm progress bar goes to stderr for files of 4 MiB and more (or of unknown size).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                received, expected, digest = _stream(url, out, timeout=timeout, name=dest.name, progress=progress)
            except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts, resets, bad replies
                raise DownloadError(f"could not download {url}: {exc}") from exc
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and received != expected:
            raise DownloadError(f"download of {url} stopped after {received} of {expected} bytes")
        if sha256_prefix is not None and not digest.startswith(sha256_prefix.lower()):
            raise DownloadError(f"download of {url} has SHA-256 {digest[:16]}..., expected a prefix {sha256_prefix}")
        tmp.chmod(0o644)  # mkstemp makes it private; a shared cache must stay readable by others
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _stream(url: str, out: BinaryIO, *, timeout: float, name: str, progress: bool) -> tuple[int, int | None, str]:
    """Copy the response body to `out`; return (bytes received, Content-Length or None, sha256 hex)."""
    request = Request(url, headers={"User-Agent": "silhouette-lightning"})
    digest = hashlib.sha256()
    received = 0
    with urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        show = progress and (expected is None or expected >= _PROGRESS_MIN_BYTES)
        if show:
            print(f"Downloading {url}", file=sys.stderr, flush=True)
        with tqdm(
            total=expected,
            desc=f"  {name}",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=not show,
            mininterval=0.5,
            dynamic_ncols=True,
        ) as bar:
            while chunk := response.read(_CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    return received, expected, digest.hexdigest()
