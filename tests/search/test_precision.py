"""Numeric precision: only precisions that keep trajectories independent are accepted, and under them one
row's trouble (a huge gradient, a NaN) never changes another row's result."""

import pytest
import torch
from torch import nn

from silhouette_lightning.bench.recovery import recover
from silhouette_lightning.cli import main
from silhouette_lightning.config.settings import PRECISIONS, build_config
from silhouette_lightning.core.errors import UsageError


@pytest.mark.parametrize(
    "given, lightning_name",
    [("32-true", "32-true"), ("32", "32-true"), (32, "32-true"), ("bf16-mixed", "bf16-mixed"), ("bf16", "bf16-mixed")],
)
def test_supported_precisions_and_their_aliases(given, lightning_name):
    assert build_config({"precision": given}).precision == lightning_name


@pytest.mark.parametrize("bad", ["16-mixed", "16", 16, "16-true", "bf16-true", "64", "64-true", "fp8", "garbage"])
def test_other_precisions_are_refused_in_one_line(bad):
    with pytest.raises(UsageError) as info:
        build_config({"precision": bad})
    message = str(info.value)
    assert "--precision" in message and "bf16-mixed" in message and "\n" not in message


def test_refused_precision_exits_2_before_the_run_folder_is_written(cli_args, tmp_path, capsys):
    assert main(cli_args("--precision", "16-mixed")) == 2
    err = capsys.readouterr().err
    assert "--precision" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "run" / "config.yaml").exists()


class Trouble(nn.Module):
    """Wraps a generator; rows of class 3 get a gradient 1e30 times too large (a diverging trajectory), rows of
    class 4 turn NaN."""

    def __init__(self, generator):
        super().__init__()
        self.inner, self.config = generator, generator.config

    def forward(self, z, one_hot, truncation):
        out = self.inner(z, one_hot, truncation)
        huge = one_hot[:, 3].view(-1, 1, 1, 1) > 0
        out = torch.where(huge, out * 1e30 - (out * 1e30).detach() + out.detach(), out)  # same value, huge grad
        return torch.where(one_hot[:, 4].view(-1, 1, 1, 1) > 0, torch.full_like(out, float("nan")), out)


@pytest.mark.parametrize("precision", sorted(set(PRECISIONS.values()) - {"auto"}))  # auto resolves to one of them
def test_one_rows_trouble_never_changes_another_row(tiny_generator, ensemble, precision):
    """Rows 0 and 3 give the same result whether rows 1 and 2 are healthy or diverge (a huge gradient, NaN):
    invariant 1 under each allowed precision. A 16-bit gradient scaler would skip every row's step instead."""
    g = torch.Generator().manual_seed(0)
    z_star = torch.randn(4, 8, generator=g) * 0.4
    start = z_star + 0.3 * torch.randn(4, 8, generator=g)
    channels = torch.full((4,), 7)
    generator = Trouble(tiny_generator)
    healthy = recover(
        generator,
        ensemble,
        z_star,
        torch.tensor([1, 2, 6, 5]),
        channels,
        start=start,
        precision=precision,
        settings={"steps": 4},
    )
    trouble = recover(
        generator,
        ensemble,
        z_star,
        torch.tensor([1, 3, 4, 5]),
        channels,
        start=start,
        precision=precision,
        settings={"steps": 4},
    )
    assert healthy.best_iou.min() >= 0 and healthy.stopped_at.tolist() == [-1, -1, -1, -1]
    assert trouble.stopped_at.tolist() == [-1, -1, 0, -1]
    for row in (0, 3):
        assert torch.equal(trouble.best_z[row], healthy.best_z[row]), row
        assert torch.equal(trouble.iou_history[row], healthy.iou_history[row]), row
        assert not torch.equal(trouble.best_z[row], start[row]), "the row must have moved"
