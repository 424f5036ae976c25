"""scripts/benchmark.py on tiny models on the CPU: the numbers it derives, never how fast anything is."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from silhouette_lightning.models.biggan import build_random_generator, tiny_biggan_config

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"
TINY = [
    "--generator",
    "tiny",
    "--segmenters",
    "lraspp_mobilenet_v3_large:1",
    "--seg-size",
    "32",
    "--device",
    "cpu",
    "--warmup",
    "0",
    "--repeats",
    "1",
]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("silhouette_benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_tiny_run_writes_consistent_json(bench, tmp_path):
    out = tmp_path / "bench.json"
    bench.main([*TINY, "--batch-sizes", "1,2", "--json", str(out)])
    results = json.loads(out.read_text())
    ref = results["reference"]["32"]
    rows = {r["batch"]: r for r in results["rows"]}
    assert ref["batch"] == 1 and ref["precision"] == "32" and ref["ratio_vs_reference"] == 1.0
    assert set(rows) == {1, 2} and not any(r["error"] for r in rows.values())
    # Every matmul and convolution of the step scales with the batch: FLOPs are linear in it.
    assert rows[1]["gflop_per_step"] > 0
    assert rows[2]["gflop_per_step"] == pytest.approx(2 * rows[1]["gflop_per_step"], rel=0.02)
    for r in rows.values():
        seconds = r["ms_per_step"] / 1e3
        assert r["latent_steps_per_s"] == pytest.approx(r["batch"] / seconds)
        assert r["tflops"] == pytest.approx(r["gflop_per_step"] / 1e3 / seconds)
        assert r["percent_of_peak"] == pytest.approx(100 * r["tflops"] / results["peak_tflops"])
        assert r["ratio_vs_reference"] == pytest.approx(r["latent_steps_per_s"] / ref["latent_steps_per_s"])
    assert results["peak_tflops"] == 989.0 and "BF16" in results["peak_note"]


def test_latent_step_is_the_summed_training_update(bench, tiny_generator, ensemble):
    """A row's gradient and Adam update do not depend on the rows beside it (losses summed, not averaged)."""
    args = bench.parse_args(TINY)
    three = bench.make_inputs(3, tiny_generator.config.num_classes, ensemble.size, torch.device("cpu"))
    updates, grads = [], []
    for batch in (1, 3):
        module = bench.make_module(tiny_generator, ensemble, batch, args)
        inputs = bench.StepInputs(three.class_ids[:batch], three.channels[:batch], three.targets[:batch])
        optimizer = module.configure_optimizers()
        before = module.z.detach().clone()
        loss = bench.latent_step(module, optimizer, inputs, None)
        expected, _ = module.score(before, inputs.class_ids, inputs.channels, inputs.targets)
        assert torch.allclose(loss, expected.detach())
        grads.append(module.z.grad[0].clone())
        bench.latent_step(module, optimizer, inputs, None)  # a second step: Adam's first is only a sign
        assert not torch.equal(module.z.detach(), before)
        updates.append(module.z.detach()[0] - before[0])
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    assert torch.allclose(updates[0], updates[1], atol=1e-5)


def test_flops_include_the_backward(bench):
    layer = nn.Linear(4, 3).requires_grad_(False)
    x = torch.randn(2, 4, requires_grad=True)
    assert bench.count_flops(lambda: layer(x)) == 2 * 2 * 4 * 3
    assert bench.count_flops(lambda: layer(x).sum().backward()) == 2 * (2 * 2 * 4 * 3)  # + input gradient only


def test_baked_spectral_norm_gives_the_same_images(bench):
    gen = build_random_generator(tiny_biggan_config(), seed=0)
    baked = bench.bake_spectral_norm(gen)
    z = torch.randn(2, gen.config.z_dim) * 0.4
    one_hot = torch.eye(gen.config.num_classes)[:2]
    assert torch.allclose(gen(z, one_hot, 0.4), baked(z, one_hot, 0.4), atol=1e-5)
    assert not any(p.requires_grad for p in baked.parameters())
    assert len(list(baked.parameters())) == len(list(gen.parameters()))


def test_out_of_memory_row_stops_larger_batches(bench, monkeypatch):
    tried = []

    def fake_measure(generator, ensemble, batch, precision, args, **kwargs):
        tried.append(batch)
        if batch >= 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return 10**9, [5.0], None

    monkeypatch.setattr(bench, "measure", fake_measure)
    results = bench.run_benchmark(
        bench.parse_args([*TINY, "--batch-sizes", "1,2,4", "--no-reference"]), log=lambda s: None
    )
    assert tried == [1, 2]
    assert [r["error"] for r in results["rows"]] == [None, "out of memory"]
    assert results["rows"][0]["tflops"] == pytest.approx(0.2)  # 1 GFLOP in 5 ms


@pytest.mark.parametrize("bad", [["--precision", "fp16"], ["--batch-sizes", "0"], ["--seg-size", "x"]])
def test_bad_arguments_exit(bench, bad):
    with pytest.raises(SystemExit):
        bench.parse_args([*TINY, *bad])


def test_harness_and_peak_are_measured_in_the_same_run(bench, tmp_path):
    """--harness times a plain step inside the whole tool and the bare step; --measure-peak replaces the peak."""
    out = tmp_path / "bench.json"
    bench.main(
        [
            *TINY,
            "--batch-sizes",
            "2",
            "--no-reference",
            "--harness",
            "--harness-steps",
            "4",
            "--harness-log-every",
            "1,4",
            "--harness-rounds",
            "2",
            "--count-ops",
            "--measure-peak",
            "--json",
            str(out),
        ]
    )
    results = json.loads(out.read_text())
    harness = results["harness"]
    assert harness["bare_step_s"] > 0 and harness["harness_step_s"] > 0
    assert harness["ratio"] == pytest.approx(harness["harness_step_s"] / harness["bare_step_s"])
    assert set(harness["log_every"]) == {"1", "4"}  # JSON keys
    assert all(len(v["round_medians_s"]) == 2 for v in harness["log_every"].values())
    assert harness["log_every"]["1"]["harness_step_s"] == harness["harness_step_s"]
    bare, tool = harness["ops"]["bare"], harness["ops"]["log_every_4"]["2"]  # step 2: steady, not logged at 4
    assert 0 < bare["top_level_aten_ops"] < bare["aten_ops"] and not tool["logged"]
    assert tool["top_level_aten_ops"] > bare["top_level_aten_ops"]  # the tool's step does the bare step's and more
    assert "measured in this run" in results["peak_note"] and results["peak_tflops"] > 0
    row = results["rows"][0]
    assert row["percent_of_peak"] == pytest.approx(100 * row["tflops"] / results["peak_tflops"], rel=1e-6)
