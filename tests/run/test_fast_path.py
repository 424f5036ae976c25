"""Machine-dependent defaults (fast_path.py), the compile cache, spectral-norm baking and compiled scoring."""

from __future__ import annotations

import os

import pytest
import torch
import yaml
from conftest import read_csv
from torch.nn.utils.spectral_norm import SpectralNorm

from silhouette_lightning.cli import config_from_args, main
from silhouette_lightning.config.settings import SwapConfig, views
from silhouette_lightning.engine.module import SilhouetteSwap
from silhouette_lightning.inputs.trajectories import initial_latents
from silhouette_lightning.models.biggan import load_generator
from silhouette_lightning.models.frozen import bake_spectral_norm, freeze
from silhouette_lightning.run.machine import resolve_machine_defaults, use_compile_cache


def test_defaults_are_auto_and_resolve_per_machine():
    auto = SwapConfig()
    assert (auto.precision, auto.batch_size, auto.compile) == ("auto", "auto", "auto")
    cpu = resolve_machine_defaults(auto, gpu=False)
    assert (cpu.precision, cpu.compile) == ("32-true", "none")
    gpu = resolve_machine_defaults(auto, gpu=True, bf16=True)
    assert (gpu.precision, gpu.compile) == ("bf16-mixed", "ensemble")
    old_gpu = resolve_machine_defaults(auto, gpu=True, bf16=False)  # no native bf16 (pre-Ampere): fp32
    assert old_gpu.precision == "32-true"
    explicit = SwapConfig(precision="32-true", compile="none")  # every default stays overridable
    assert resolve_machine_defaults(explicit, gpu=True, bf16=True).precision == "32-true"
    assert resolve_machine_defaults(explicit, gpu=True, bf16=True).compile == "none"
    assert resolve_machine_defaults(SwapConfig(compile=True), gpu=False).compile == "ensemble"  # YAML boolean
    assert resolve_machine_defaults(SwapConfig(accelerator="cpu"), bf16=True).precision == "32-true"


def test_compile_flags():
    assert config_from_args(["--compile"]).compile == "ensemble"
    assert config_from_args(["--compile", "all"]).compile == "all"
    assert config_from_args(["--no-compile"]).compile == "none"
    assert config_from_args([]).compile == "auto"


def test_cpu_default_command_gives_the_explicit_fp32_results(cli_args, tmp_path):
    """On a CPU the "auto" defaults are fp32, batch 16, no compile: the same results as typing them."""
    args = cli_args("--save-images", "none", name="defaults", default_search=True)
    i = args.index("--batch-size")
    del args[i : i + 2]  # the default batch size
    assert main(args) == 0
    explicit = cli_args(
        "--save-images",
        "none",
        "--precision",
        "32-true",
        "--no-compile",
        "--batch-size",
        "16",
        "--starts",
        "32",
        name="explicit",
        default_search=True,
    )
    del explicit[explicit.index("--batch-size") : explicit.index("--batch-size") + 2]  # the first of two
    assert main(explicit) == 0
    saved = yaml.safe_load((tmp_path / "out" / "defaults" / "config.yaml").read_text())
    assert (saved["precision"], saved["compile"]) == ("32-true", "none")  # what really ran, not "auto"
    a, b = (read_csv(tmp_path / "out" / n / "results.csv") for n in ("defaults", "explicit"))
    assert a == b


def test_compile_cache_goes_beside_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("SILHOUETTE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert use_compile_cache() == tmp_path / "cache" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
    assert (tmp_path / "cache" / "inductor").is_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's choice wins
    assert use_compile_cache() == tmp_path / "mine"


def test_loaded_generator_has_spectral_norm_baked(generator_dir, tiny_generator):
    loaded = load_generator(generator_dir)
    hooks = [h for m in loaded.modules() for h in m._forward_pre_hooks.values()]
    assert not any(isinstance(h, SpectralNorm) for h in hooks)
    assert any(isinstance(h, SpectralNorm) for m in tiny_generator.modules() for h in m._forward_pre_hooks.values())
    z = initial_latents(range(4), tiny_generator.config.z_dim, 0.4)
    one_hot = torch.nn.functional.one_hot(torch.arange(4), tiny_generator.config.num_classes).float()
    with torch.no_grad():
        assert torch.equal(loaded(z, one_hot, 0.4), tiny_generator(z, one_hot, 0.4))  # same W / sigma, exactly
    assert not any(p.requires_grad for p in loaded.parameters())
    with pytest.raises(ValueError, match="eval-mode"):
        bake_spectral_norm(freeze(loaded).train())


@pytest.mark.slow
def test_compiled_scoring_step_equals_eager(tiny_generator, ensemble):
    """--compile all (generator, segmenters, loss and IoU in one compiled graph) scores and steps like eager."""
    results = {}
    for mode in ("none", "all"):
        module = SilhouetteSwap(tiny_generator, ensemble, **views(SwapConfig(compile=mode), batch_size=4))
        z = initial_latents(range(4), module.z_dim, 0.4).requires_grad_(True)
        class_ids, channels = torch.tensor([1, 2, 3, 4]), torch.tensor([12, 8, 3, 12])
        targets = torch.zeros(4, 32, 32)
        targets[:, 8:24, 8:24] = 1
        losses = []
        for _ in range(3):
            loss, iou = module.score(z, class_ids, channels, targets)
            loss.sum().backward()
            with torch.no_grad():
                z -= 0.1 * z.grad
                z.grad = None
            losses.append((loss.detach(), iou))
        results[mode] = losses
    for (la, ia), (lb, ib) in zip(results["none"], results["all"], strict=True):
        torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ia, ib, rtol=1e-5, atol=1e-6)


def test_step_clock_times_plain_steps_and_leaves_loading_and_finishing_steps_out():
    from silhouette_lightning.engine.timing import StepClock

    clock = StepClock()
    clock.created = 0.0
    clock.starts = [10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0]  # rows loaded at 0 and 4, finished at 3 and 6
    clock.plain = [False, True, True, False, False, True, False]
    clock.ends, clock.finished = [], 30.0
    summary = clock.summary()
    # plain steps: 1->2, 2->3, 5->6; the loading steps (0, 4) and the finishing step 3 (3->4: writing) left out
    assert summary == {"before_first_step_s": 10.0, "median_step_s": 1.0, "total_s": 30.0, "batches": 7}
