"""Lightning's own settings (accelerator, devices, strategy, precision, nodes) checked against this machine
before any work, so that a setting the run cannot use is a one-line usage error, not a traceback mid-run;
and a multi-node run that says what it waits for and gives up after a while instead of waiting forever."""

from __future__ import annotations

import logging
import os
import warnings

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
