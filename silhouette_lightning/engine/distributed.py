"""Many devices, one answer: Lightning's DDP with a gradient all-reduce that sums, never averages.

Every rank holds the whole chunk of latents `z` [G, Z] and computes the loss of its own rows only, so each
row's gradient is non-zero on exactly one rank. Summing the ranks' gradients then gives every row its true
gradient bit for bit (x + 0 + 0 = x), for every world size. Stock DDP averages instead; scaling the loss by
the world size to undo that is exact only when the world size is a power of two (`x * 3 / 3` is not x, and
Adam amplifies the rounding to 1e-2 in z within a few steps).
"""

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

from silhouette_lightning.core.errors import UsageError

NODE_TIMEOUT_ENV = "SILHOUETTE_NODE_TIMEOUT"
DEFAULT_NODE_TIMEOUT_S = 1800  # Lightning's own default for the process group

# Strategies that run in one process, where there is nothing to reduce.
_SINGLE_PROCESS = ("auto", "single_device")


# No `from __future__ import annotations` in this module: DDP checks the hook's annotations as objects.
def allreduce_sum_hook(
    process_group: dist.ProcessGroup | None, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """A DDP communication hook: all-reduce the bucket with SUM and no division by the world size."""
    group = process_group if process_group is not None else dist.group.WORLD
    work = dist.all_reduce(bucket.buffer(), op=dist.ReduceOp.SUM, group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


class SummingDDPStrategy(DDPStrategy):
    """Lightning's DDPStrategy with `allreduce_sum_hook` registered on every device type.

    Lightning's own `ddp_comm_hook` argument registers the hook on CUDA only (an old NCCL-only limitation of
    hooks), so a CPU (gloo) run would average silently; the hook is registered here instead, after DDP wraps
    the module.
    """

    def configure_ddp(self) -> None:
        """Wrap the module in DDP (Lightning), then replace its averaging all-reduce by a sum."""
        super().configure_ddp()
        self.model.register_comm_hook(state=None, hook=allreduce_sum_hook)


def strategy_problem(name: str) -> str | None:
    """Why `--strategy name` cannot give exact results, or None when it can (single-process or a DDP variant)."""
    if name in _SINGLE_PROCESS:
        return None
    if name not in StrategyRegistry:  # (StrategyRegistry.get would build the strategy)
        known = sorted(k for k in StrategyRegistry if _is_ddp(k)) + list(_SINGLE_PROCESS)
        return f"--strategy {name!r} is unknown; use one of {', '.join(sorted(known))}"
    if not _is_ddp(name):
        return (
            f"--strategy {name!r} is not supported: each trajectory's gradient must be summed across devices, "
            "which only DDP does here; use --strategy ddp"
        )
    return None


def _is_ddp(name: str) -> bool:
    """Whether the registered strategy `name` is Lightning's DDPStrategy (any start method, any options); its
    subclasses (XLA's) reduce their own way."""
    return StrategyRegistry[name]["strategy"] is DDPStrategy


def build_strategy(config) -> str | SummingDDPStrategy:
    """The Trainer's `strategy` for a run's settings: a `SummingDDPStrategy` (with the options of the DDP
    variant asked for, and the rendezvous timeout of `node_timeout`) whenever more than one
    process may run, else the single-process name as given.

    Raises:
        UsageError: a strategy other than DDP and single-process ones (FSDP, DeepSpeed, XLA, unknown names), or a
            bad `$SILHOUETTE_NODE_TIMEOUT`.
    """
    name = config.strategy
    problem = strategy_problem(name)
    if problem:
        raise UsageError(problem)
    many = config.num_nodes > 1 or str(config.devices) != "1"  # "auto", "-1", "0,1", 2, ...
    if name in _SINGLE_PROCESS and not (name == "auto" and many):
        return name
    options = {} if name == "auto" else StrategyRegistry[name]["init_params"]
    return SummingDDPStrategy(timeout=node_timeout(), **options)


def check_summing(strategy, world_size: int) -> None:
    """Refuse to optimize on several processes unless gradients are summed (see the module docstring)."""
    if world_size > 1 and not isinstance(strategy, SummingDDPStrategy):
        raise UsageError(
            f"{type(strategy).__name__} over {world_size} processes would average the latents' gradients; "
            "build the Trainer's strategy with silhouette_lightning.engine.distributed.build_strategy"
        )


def node_timeout() -> timedelta:
    """How long the nodes of a multi-node run wait for each other: `$SILHOUETTE_NODE_TIMEOUT` seconds (default 1800)."""
    text = os.environ.get(NODE_TIMEOUT_ENV, "").strip()
    if not text:
        return timedelta(seconds=DEFAULT_NODE_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{NODE_TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return timedelta(seconds=seconds)
