"""Atomic file writes: every output is written to a temporary name in the same folder, then renamed; it gets the
permissions of any other new file (0666 less the user's umask), not the temporary file's private 0600."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from silhouette_lightning.core.errors import OutputError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` so that a reader (or a crash) never sees a half-written file.

    Any failure (a full disk) raises OutputError naming `path`, and leaves an earlier `path` as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
            _write_synced(fd, data, path)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(e.errno, e.strerror or str(e), str(path)) from e
    return path


def current_umask() -> int:
    """The process's umask (read by setting it and back: there is no other way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_synced(fd: int, data: bytes, path: Path) -> None:
    """Write all of `data` to the open file `fd` (the temporary file of `path`), flush it to disk and close it."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic `write_text` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """Atomic `torch.save`; keep `obj` to tensors, numbers, strings, lists and dicts so that
    `torch.load(weights_only=True)` reads it back."""
    import torch  # here, not at the top: the command line imports this module before it needs torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_save_image(image, path: str | os.PathLike, **save_kwargs) -> Path:
    """Atomic save of a PIL image; the format comes from the file suffix."""
    path = Path(path)
    buffer = io.BytesIO()
    fmt = {".png": "PNG", ".gif": "GIF", ".jpg": "JPEG", ".jpeg": "JPEG"}[path.suffix.lower()]
    image.save(buffer, format=fmt, **save_kwargs)
    return atomic_write_bytes(path, buffer.getvalue())
