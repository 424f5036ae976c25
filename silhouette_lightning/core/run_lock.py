"""One run at a time per run folder: an advisory lock on `OUT/NAME/.lock` that names its holder.

`fcntl.flock` locks belong to the open file, so the operating system drops them when the holder exits, however it
exits (even SIGKILL): a lock file left behind by a killed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from silhouette_lightning.core.errors import UsageError

# Set by the launchers of the other processes of a run (torchrun, SLURM, Lightning's own): any of them non-zero
# means this process is not the run's first, which alone holds the lock.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def first_process() -> bool:
    """Whether this is the run's first process (global rank 0), known before Lightning starts the others."""
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir/.lock` for the duration; another run holding it is a UsageError that names it."""
    path = Path(run_dir) / ".lock"
    created = not path.parent.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UsageError(
            f"cannot write to the output folder {run_dir}: {e.strerror or e}; choose another --out"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            raise UsageError(
                f"{run_dir} is in use by another run ({holder}); wait for it to end, or pass --name "
                "to start a separate run"
            ) from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(), 0)
        yield
    finally:
        if created and [p.name for p in path.parent.iterdir()] == [".lock"]:  # the run wrote nothing: leave no trace
            with contextlib.suppress(OSError):
                path.unlink()
                path.parent.rmdir()
        os.close(fd)  # releases the lock
