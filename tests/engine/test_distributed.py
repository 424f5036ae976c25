"""The Trainer's strategy: DDP whose all-reduce sums (exact for every world size), or refused clearly."""

import pytest
from lightning.pytorch.strategies import DDPStrategy

from silhouette_lightning.cli import main
from silhouette_lightning.config.settings import build_config
from silhouette_lightning.core.errors import UsageError
from silhouette_lightning.engine.distributed import (
    SummingDDPStrategy,
    allreduce_sum_hook,
    build_strategy,
    check_summing,
)


def test_one_device_keeps_lightnings_single_process_strategy():
    assert build_strategy(build_config({})) == "auto"
    assert build_strategy(build_config({"strategy": "single_device"})) == "single_device"


@pytest.mark.parametrize(
    "settings",
    [
        {"devices": 2},
        {"devices": "auto"},
        {"devices": "0,1"},
        {"num_nodes": 2},
        {"strategy": "ddp"},
        {"strategy": "ddp", "devices": 4},
    ],
)
def test_several_processes_get_the_summing_ddp(settings):
    strategy = build_strategy(build_config(settings))
    assert isinstance(strategy, SummingDDPStrategy) and isinstance(strategy, DDPStrategy)
    assert strategy._start_method == "popen"


def test_ddp_variants_keep_their_options():
    spawn = build_strategy(build_config({"strategy": "ddp_spawn", "devices": 2}))
    assert isinstance(spawn, SummingDDPStrategy) and spawn._start_method == "spawn"
    unused = build_strategy(build_config({"strategy": "ddp_find_unused_parameters_true", "devices": 2}))
    assert unused._ddp_kwargs == {"find_unused_parameters": True}


@pytest.mark.parametrize("name", ["fsdp", "deepspeed", "xla", "dp", "nonsense"])
def test_other_strategies_are_refused_before_the_run(name, cli_args, tmp_path, capsys):
    with pytest.raises(UsageError, match="--strategy"):
        build_config({"strategy": name})
    assert main(cli_args("--strategy", name)) == 2
    err = capsys.readouterr().err
    assert "--strategy" in err and "ddp" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "run" / "config.yaml").exists()


def test_an_averaging_strategy_is_refused_over_several_processes():
    check_summing(DDPStrategy(), 1)  # one process: nothing is averaged
    check_summing(SummingDDPStrategy(), 3)
    with pytest.raises(UsageError, match="average"):
        check_summing(DDPStrategy(), 3)


def test_the_hook_sums_the_bucket_without_dividing(monkeypatch):
    """The hook hands the bucket to all_reduce with SUM and returns the reduced buffer untouched."""
    import torch
    import torch.distributed as dist

    calls = []

    class Work:
        def __init__(self, tensor):
            self.tensor = tensor

        def get_future(self):
            future = torch.futures.Future()
            future.set_result([self.tensor])
            return future

    def fake_all_reduce(tensor, op, group, async_op):
        calls.append((op, group, async_op))
        tensor.mul_(3)  # three ranks holding the same gradient, summed
        return Work(tensor)

    class Bucket:
        def __init__(self, tensor):
            self.tensor = tensor

        def buffer(self):
            return self.tensor

    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    monkeypatch.setattr(dist, "group", type("G", (), {"WORLD": "world"}))
    out = allreduce_sum_hook(None, Bucket(torch.tensor([0.1, 2.0]))).wait()
    assert calls == [(dist.ReduceOp.SUM, "world", True)]
    assert torch.equal(out, torch.tensor([0.1, 2.0]) * 3)  # summed, never divided by 3


def test_the_strategies_known_exact_without_lightning_are_lightnings_ddp_ones():
    """`--strategy` names the settings accept without importing Lightning: single-process or DDP in its registry."""
    from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

    from silhouette_lightning.core.names import EXACT_STRATEGIES
    from silhouette_lightning.engine.distributed import strategy_problem

    ddp = {k for k in StrategyRegistry if StrategyRegistry[k]["strategy"] is DDPStrategy}
    assert set(EXACT_STRATEGIES) == ddp | {"auto", "single_device"}
    assert all(strategy_problem(name) is None for name in EXACT_STRATEGIES)
