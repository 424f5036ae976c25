"""Lightning's own settings (accelerator, devices, strategy, precision, nodes) checked against this machine
before any work, so that a setting the run cannot use is a one-line usage error, not a traceback mid-run."""

from __future__ import annotations

import logging
import warnings

import torch

from silhouette_lightning.config import SwapConfig
from silhouette_lightning.errors import UsageError

_FLAGS = ("accelerator", "devices", "num_nodes", "strategy", "precision")


def _flags(config: SwapConfig) -> str:
    return " ".join(f"--{name.replace('_', '-')} {getattr(config, name)}" for name in _FLAGS)


def check_lightning_settings(config: SwapConfig) -> None:
    """Raise UsageError when Lightning could not build a Trainer from these settings on this machine.

    Builds Lightning's accelerator connector (what `Trainer(...)` builds first: no process, no device memory),
    so every name Lightning knows is accepted and every other one is refused with Lightning's reason.
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
            _AcceleratorConnector(
                accelerator=config.accelerator, devices=devices, num_nodes=config.num_nodes,
                strategy=config.strategy, precision=config.precision, sync_batchnorm=False, benchmark=None,
                use_distributed_sampler=False, deterministic=None,
            )  # fmt: skip
    except Exception as e:  # Lightning raises ValueError, TypeError, MisconfigurationException, ImportError
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"Lightning cannot run with {_flags(config)}: {reason}") from None
    finally:
        lightning_log.setLevel(level)
