"""`--batch-size auto` on the CPU: the search logic, and one real probe of a tiny step."""

import torch

from silhouette_lightning.config.settings import build_config
from silhouette_lightning.engine.batching import CPU_BATCH, auto_batch_size, largest_fitting, step_fits


def test_largest_fitting_power_of_two():
    assert largest_fitting(lambda b: b <= 100) == 64
    assert largest_fitting(lambda b: False) == 1
    assert largest_fitting(lambda b: True, limit=256) == 256


def test_auto_on_cpu_uses_the_default(tiny_generator, ensemble):
    config = build_config({"accelerator": "cpu"})
    assert auto_batch_size(tiny_generator, ensemble, config, log=lambda *a: None) == CPU_BATCH


def test_step_fits_runs_a_real_step(tiny_generator, ensemble):
    assert step_fits(tiny_generator, ensemble, 2, torch.device("cpu"), truncation=0.4)
