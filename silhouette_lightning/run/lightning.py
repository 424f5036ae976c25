"""Lightning's own settings (accelerator, devices, strategy, precision, nodes) checked against this machine
before any work, so that a setting the run cannot use is a one-line usage error, not a traceback mid-run;
and a multi-node run that says what it waits for and gives up after a while instead of waiting forever."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import torch

from silhouette_lightning.config.settings import SwapConfig
from silhouette_lightning.core.errors import UsageError
from silhouette_lightning.engine.distributed import NODE_TIMEOUT_ENV, node_timeout

_FLAGS = ("accelerator", "devices", "num_nodes", "strategy", "precision")


def _flags(config: SwapConfig) -> str:
    return " ".join(f"--{name.replace('_', '-')} {getattr(config, name)}" for name in _FLAGS)


def check_lightning_settings(config: SwapConfig):
    """Raise UsageError when Lightning could not build a Trainer from these settings on this machine.

    Builds Lightning's accelerator connector (what `Trainer(...)` builds first: no process, no device memory),
    so every name Lightning knows is accepted and every other one is refused with Lightning's reason.
    Returns the cluster environment Lightning found (where the nodes of a multi-node run meet).
    """
    devices = config.devices
    if isinstance(devices, bool) or (isinstance(devices, int) and devices < 1 and devices != -1):
        raise UsageError(f"--devices must be a number of devices >= 1, or auto (-1: every GPU), got {devices!r}")
    if str(config.accelerator).lower() in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"--accelerator {config.accelerator}: this machine has no usable CUDA GPU (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --accelerator cpu or auto"
        )
    if problem := cpu_process_problem(config):
        raise UsageError(problem)
    from lightning.pytorch.trainer.connectors.accelerator_connector import _AcceleratorConnector

    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # the Trainer says "Using bfloat16 AMP" itself, once
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # and repeats its own fallback warnings then
            connector = _AcceleratorConnector(
                accelerator=config.accelerator,
                devices=devices,
                num_nodes=config.num_nodes,
                strategy=config.strategy,
                precision=config.precision,
                sync_batchnorm=False,
                benchmark=None,
                use_distributed_sampler=False,
                deterministic=None,
            )
    except Exception as e:  # Lightning raises ValueError, TypeError, MisconfigurationException, ImportError
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"Lightning cannot run with {_flags(config)}: {reason}") from None
    finally:
        lightning_log.setLevel(level)
    if config.num_nodes > 1:
        from lightning.fabric.plugins.environments import LightningEnvironment

        # Launched by hand (no torchrun, SLURM, ...): without an agreed port each node would pick its own.
        if type(connector.cluster_environment) is LightningEnvironment and "MASTER_PORT" not in os.environ:
            raise UsageError(
                f"--num-nodes {config.num_nodes} runs one process group across {config.num_nodes} machines: start "
                f"this command on each of them with MASTER_ADDR (node 0's address), MASTER_PORT (a free port) and "
                f"NODE_RANK (0 to {config.num_nodes - 1}) set, or launch it with torchrun or srun (README: Clusters)"
            )
    return connector.cluster_environment


PROCESSES_PER_CORE = 2  # CPU processes allowed per core (--devices on the CPU)
PROCESS_GB = 0.4  # resident memory of one CPU process with the tiny models, measured (grows with the networks)


def available_gb() -> float | None:
    """Memory the system can still give (Linux MemAvailable), in GB; None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def cpu_process_problem(config: SwapConfig, *, cores: int | None = None, memory_gb: float | None = None) -> str | None:
    """Why `--devices N` on the CPU cannot run here, or None: each device is a process, so N may not exceed
    PROCESSES_PER_CORE x the cores (far more processes than cores only wait for each other; a few more still
    run, e.g. 3 processes on 2 cores, which checks an odd world size) nor the memory N processes need (at least
    PROCESS_GB each)."""
    devices = config.devices
    on_cpu = str(config.accelerator).lower() == "cpu" or (
        config.accelerator == "auto" and not torch.cuda.is_available()
    )
    if not on_cpu or not isinstance(devices, int) or isinstance(devices, bool) or devices <= 1:
        return None
    cores = cores or os.cpu_count() or 1
    if devices > PROCESSES_PER_CORE * cores:
        return (
            f"--devices {devices} on the CPU starts {devices} processes, but this machine has {cores} cores: "
            f"use --devices {cores} or fewer (at most {PROCESSES_PER_CORE * cores})"
        )
    memory_gb = available_gb() if memory_gb is None else memory_gb
    if memory_gb is not None and devices * PROCESS_GB > memory_gb:
        return (
            f"--devices {devices} on the CPU needs at least {devices * PROCESS_GB:.1f} GB ({PROCESS_GB} GB per "
            f"process), but {memory_gb:.1f} GB are available: use fewer --devices"
        )
    return None


def die_with_parent() -> None:
    """In a DDP process started by rank 0 (LOCAL_RANK > 0): end when rank 0 ends, killed or not, so that a dying
    rank 0 leaves no orphan ranks holding memory (Linux; elsewhere nothing is done)."""
    if os.environ.get("LOCAL_RANK", "0") == "0" or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def waiting_message(config: SwapConfig, cluster) -> str:
    """What a multi-node run waits for, said before it waits."""
    n, rank = config.num_nodes, cluster.node_rank()
    return (
        f"node {rank} of {n} (nodes 0-{n - 1}): waiting for every node to join at {cluster.main_address}:"
        f"{cluster.main_port}; each node runs this same command with its own NODE_RANK. Giving up after "
        f"{node_timeout().total_seconds():g} s ({NODE_TIMEOUT_ENV} sets this)"
    )


def nodes_did_not_join(config: SwapConfig, cluster, error: BaseException) -> UsageError:
    """The usage error of a rendezvous that timed out."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return UsageError(
        f"the {config.num_nodes} nodes did not all join at {cluster.main_address}:{cluster.main_port} within "
        f"{node_timeout().total_seconds():g} s ({reason}); start the same command on every node (NODE_RANK 0 to "
        f"{config.num_nodes - 1}, same MASTER_ADDR and MASTER_PORT), or run with --num-nodes 1"
    )
