"""Throughput of the latent step: FLOPs counted, time per step, fraction of the card's peak, ratio to a loop.

One "latent step" is exactly what `SilhouetteSwap.training_step` does for its batch: z [B, Z] (the trainable
parameter) -> `module.score` (generator, segmenter ensemble, `trajectory_loss`, IoU) -> the summed loss
backward to z -> one Adam step on z. The module's own functions are called; nothing is re-implemented here.

For every (precision, memory format, segmenter input size, batch size) it reports:
  GFLOP/step   FLOPs of one step for the whole batch, counted by `torch.utils.flop_counter.FlopCounterMode`
               (forward and backward; the backward computes input gradients only, the networks are frozen)
  ms/step      median wall time of one step after warm-up (CUDA events on a GPU, perf_counter on a CPU)
  steps/s      latent steps per second = trajectories advanced by one Adam step per second (batch / time)
  TFLOP/s      achieved arithmetic rate, and its fraction of `--peak-tflops`
  ratio        steps/s over those of the reference loop: batch 1, fp32, contiguous, default backend
               settings, one trajectory at a time (the paper notebook's loop), at the same segmenter size

Example (the commands of docs/benchmark.md):
  python scripts/benchmark.py --device cuda --precision 32,bf16 --channels-last both --batch-sizes 1,8,32,64,128 \
      --seg-size 256,128 --json bench.json

Weights are random (`build_random_generator`, `load_ensemble(pretrained=False)`): FLOPs and time do not
depend on weight values, and no download is needed. Never use this for timing asserts in tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.utils.flop_counter import FlopCounterMode

from silhouette_lightning.config.settings import SwapConfig, views
from silhouette_lightning.core.classes import VOC_CLASSES
from silhouette_lightning.engine.module import SilhouetteSwap
from silhouette_lightning.inputs.trajectories import initial_latents
from silhouette_lightning.models.biggan import BIGGAN_NAMES, build_random_generator, tiny_biggan_config
from silhouette_lightning.models.segmenters import SegmenterEnsemble, load_ensemble

PEAKS = {  # dense (no sparsity) tensor-core peaks of an H100 SXM, TFLOP/s, for --peak-tflops
    "bf16": 989.0,
    "tf32": 494.0,
    "fp32": 67.0,  # CUDA cores, no tensor cores
}
DEFAULT_PEAK_NOTE = "H100 SXM dense BF16 tensor-core peak (989 TFLOP/s; TF32 494, FP32 CUDA cores 67)"


@dataclass
class Row:
    """One measured configuration (or why it could not be measured)."""

    device: str
    precision: str
    memory_format: str
    batch: int
    seg_size: int
    tricks: str = ""
    gflop_per_step: float | None = None
    ms_per_step: float | None = None
    ms_per_step_min: float | None = None
    latent_steps_per_s: float | None = None
    tflops: float | None = None
    percent_of_peak: float | None = None
    ratio_vs_reference: float | None = None
    peak_mem_gib: float | None = None
    error: str | None = None
    times_ms: list[float] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--generator",
        default="biggan-deep-128",
        choices=[*BIGGAN_NAMES, "tiny"],
        help="random-weight BigGAN-deep architecture, or 'tiny' (32 x 32, for tests)",
    )
    p.add_argument(
        "--segmenters", default="deeplabv3_resnet101:0.6,fcn_resnet101:0.4", help="ensemble spec, random weights"
    )
    p.add_argument("--seg-size", default="256", help="segmenter input size(s), comma-separated: 256,128")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--precision", default="32", help="comma-separated: 32 (fp32) and/or bf16 (autocast)")
    p.add_argument("--batch-sizes", default="1,8,32,64", help="comma-separated batch sizes (trajectories per step)")
    p.add_argument(
        "--channels-last",
        nargs="?",
        const="on",
        default="off",
        choices=["off", "on", "both"],
        help="frozen networks in channels_last memory format ('both' measures each)",
    )
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 matmuls too (convs use it by default)")
    p.add_argument(
        "--bake-spectral-norm",
        action="store_true",
        help="remove the generator's spectral-norm hooks (frozen: same weights, fewer kernels)",
    )
    p.add_argument(
        "--compile",
        default="none",
        choices=["none", "ensemble", "all"],
        help="torch.compile the ensemble (or ensemble and generator)",
    )
    p.add_argument("--loss", default="mse")
    p.add_argument("--ensemble-mode", default="probs")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (cudnn autotuning, compile)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps; the median is reported")
    p.add_argument("--no-reference", action="store_true", help="skip the batch-1 fp32 reference loop")
    p.add_argument("--pictures", action="store_true", help="also time one (source, class) group's pictures")
    p.add_argument("--peak-tflops", type=float, default=PEAKS["bf16"], help="the card's peak, TFLOP/s")
    p.add_argument("--peak-note", default=DEFAULT_PEAK_NOTE, help="what --peak-tflops is (printed)")
    p.add_argument("--profile", action="store_true", help="also profile one step of each row: top kernels, GPU busy")
    p.add_argument(
        "--measure-peak",
        action="store_true",
        help="measure the dense matmul peak (bf16 on a GPU, fp32 on a CPU) in this run and use it as the peak",
    )
    p.add_argument(
        "--harness",
        action="store_true",
        help="also time a plain step inside the whole tool (Lightning, logging, tracking) against the bare "
        "step at the first batch size and seg size: the harness overhead",
    )
    p.add_argument("--harness-steps", type=int, default=30, help="latent steps of the --harness run")
    p.add_argument(
        "--harness-log-every",
        default="1",
        help="--log-every value(s) of the --harness runs, comma-separated (1,25): each is timed in every round",
    )
    p.add_argument(
        "--count-ops",
        action="store_true",
        help="with --harness: also count the operators dispatched (torch.profiler, aten::) in one bare step and in "
        "one steady tool step that logs and one that does not",
    )
    p.add_argument(
        "--harness-rounds",
        type=int,
        default=1,
        help="--harness rounds: the bare step and each --harness-log-every run, interleaved, once per round",
    )
    p.add_argument(
        "--end-to-end",
        type=Path,
        metavar="DATA",
        help="also time the default train.py command on DATA (masks if --masks) end to end: loading, "
        "target maps, steps, logging, pictures; compared with the bare steps it ran",
    )
    p.add_argument("--masks", action="store_true", help="--end-to-end DATA holds silhouettes")
    p.add_argument("--json", type=Path, help="write all results here")
    args = p.parse_args(argv)
    try:
        args.seg_sizes = [int(s) for s in args.seg_size.split(",")]
        args.batches = [int(b) for b in args.batch_sizes.split(",")]
        args.harness_log_everys = [int(n) for n in args.harness_log_every.split(",")]
    except ValueError as exc:
        p.error(f"sizes must be comma-separated integers ({exc})")
    args.precisions = [s.strip() for s in args.precision.split(",")]
    if not set(args.precisions) <= {"32", "bf16"} or min(args.batches + args.seg_sizes) < 1:
        p.error("--precision takes 32 and/or bf16; sizes must be >= 1")
    args.formats = {"off": ["contiguous"], "on": ["channels_last"], "both": ["contiguous", "channels_last"]}[
        args.channels_last
    ]
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    return args


# --------------------------------------------------------------------------------------------- models


def build_models(generator: str, segmenters: str, seg_size: int) -> tuple[nn.Module, SegmenterEnsemble]:
    """Random-weight frozen generator and ensemble on the CPU."""
    gen = build_random_generator(tiny_biggan_config() if generator == "tiny" else generator, seed=0)
    return gen, load_ensemble(segmenters, size=seg_size, pretrained=False)


def resized(ensemble: SegmenterEnsemble, size: int) -> SegmenterEnsemble:
    """The same members (shared, not copied) with another input size."""
    return SegmenterEnsemble(list(ensemble.members), ensemble.weights.tolist(), size).to(ensemble.weights.device)


def bake_spectral_norm(generator: nn.Module) -> nn.Module:
    """A copy of a frozen generator with its spectral-norm hooks removed: W / sigma computed once, not per forward."""
    baked = copy.deepcopy(generator)
    for module in baked.modules():
        if any(isinstance(h, SpectralNorm) for h in module._forward_pre_hooks.values()):
            torch.nn.utils.remove_spectral_norm(module)
    return baked.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------- the step


@dataclass
class StepInputs:
    """Per-trajectory data of one batch, as the data module would give it."""

    class_ids: Tensor  # [B] long, ImageNet class of the generator
    channels: Tensor  # [B] long, VOC subject channel
    targets: Tensor  # [B, S, S] float in [0, 1]


def make_inputs(batch: int, num_classes: int, seg_size: int, device: torch.device, seed: int = 0) -> StepInputs:
    """Random classes and subjects, and a disk as every target map."""
    g = torch.Generator().manual_seed(seed)
    class_ids = torch.randint(0, num_classes, (batch,), generator=g)
    channels = torch.randint(1, len(VOC_CLASSES), (batch,), generator=g)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, seg_size), torch.linspace(-1, 1, seg_size), indexing="ij")
    disk = ((yy**2 + xx**2) < 0.5).float()  # [S, S]
    return StepInputs(class_ids.to(device), channels.to(device), disk.expand(batch, -1, -1).contiguous().to(device))


def make_module(generator: nn.Module, ensemble: nn.Module, batch: int, args: argparse.Namespace) -> SilhouetteSwap:
    """A SilhouetteSwap around shared frozen networks, its `z` [B, Z] set to seeded starting latents."""
    module = SilhouetteSwap(
        generator, ensemble, **views(SwapConfig(loss=args.loss, ensemble=args.ensemble_mode), batch_size=batch)
    )
    device = next(generator.parameters()).device
    module.z = nn.Parameter(initial_latents(range(batch), module.z_dim, module.truncation).to(device))
    return module


def latent_step(
    module: SilhouetteSwap, optimizer: torch.optim.Optimizer, inputs: StepInputs, autocast: torch.dtype | None
) -> Tensor:
    """One Adam step on every trajectory of `module.z`, as in `training_step`; returns the loss [B] (detached)."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(module.z.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        loss, _iou = module.score(module.z, inputs.class_ids, inputs.channels, inputs.targets)  # [B], [B]
    loss.sum().backward()  # summed, never averaged: each trajectory's gradient is its own
    optimizer.step()
    return loss.detach()


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of `step` (forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def time_steps(step: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


# --------------------------------------------------------------------------------------------- the sweep


def set_backend(*, cudnn_benchmark: bool, tf32: bool) -> None:
    """Global backend switches (the reference loop runs with both off)."""
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = tf32


def measure(
    generator: nn.Module,
    ensemble: SegmenterEnsemble,
    batch: int,
    precision: str,
    args: argparse.Namespace,
    *,
    count_with: tuple[nn.Module, SegmenterEnsemble] | None = None,
    flops_cache: dict | None = None,
) -> tuple[int, list[float], float | None]:
    """(FLOPs of one step, step times in ms, peak GPU memory in GiB) of one configuration.

    `count_with` gives uncompiled networks for counting FLOPs when `generator`/`ensemble` are compiled.
    """
    device = next(generator.parameters()).device
    autocast = torch.bfloat16 if precision == "bf16" else None
    inputs = make_inputs(batch, generator.config.num_classes, ensemble.size, device)
    key = (batch, ensemble.size)
    if flops_cache is not None and key in flops_cache:
        flops = flops_cache[key]
    else:
        counted = make_module(*(count_with or (generator, ensemble)), batch, args)
        opt = counted.configure_optimizers()
        flops = count_flops(lambda: latent_step(counted, opt, inputs, autocast))
        del counted, opt
        if flops_cache is not None:
            flops_cache[key] = flops
    module = make_module(generator, ensemble, batch, args)
    optimizer = module.configure_optimizers()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_steps(lambda: latent_step(module, optimizer, inputs, autocast), device, args.warmup, args.repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return flops, times, peak


def fill(row: Row, flops: int, times: list[float], peak_mem: float | None, peak_tflops: float) -> Row:
    """Derived columns of a measured row."""
    ms = statistics.median(times)
    row.gflop_per_step = flops / 1e9
    row.ms_per_step, row.ms_per_step_min = ms, min(times)
    row.latent_steps_per_s = row.batch / (ms / 1e3)
    row.tflops = flops / (ms / 1e3) / 1e12
    row.percent_of_peak = 100 * row.tflops / peak_tflops
    row.peak_mem_gib = peak_mem
    row.times_ms = [round(t, 3) for t in times]
    return row


def _is_oom(exc: BaseException) -> bool:
    """Out of GPU memory, or cuDNN/cuBLAS failing to get workspace for the same reason."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def measure_matmul_peak(device: torch.device, repeats: int = 10) -> dict:
    """The dense matmul rate this device reaches in this run, TFLOP/s: bf16 on a GPU, fp32 on a CPU."""
    dtype, n = (torch.bfloat16, 8192) if device.type == "cuda" else (torch.float32, 1024)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    times = time_steps(lambda: a @ b, device, warmup=3, repeats=repeats)
    best_ms = min(times)
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "ms": best_ms, "tflops": 2 * n**3 / best_ms / 1e9}


def whole_run(config, generator: nn.Module, ensemble: nn.Module, *callbacks) -> dict:
    """Run the whole tool (`silhouette_lightning.run.job.run`) as configured, timing every step (`StepClock`)."""
    from silhouette_lightning.engine.timing import StepClock
    from silhouette_lightning.run.job import run

    clock = StepClock()
    run(config, generator=generator, ensemble=ensemble, callbacks=[clock, *callbacks], log=lambda *a: None)
    return clock.summary()


def op_counts(prof) -> dict:
    """Operators a profiled region dispatched: every `aten::` call, and those not inside another (called from Python
    or from a non-aten frame, what the host's dispatcher sees first)."""
    ops = [e for e in prof.events() if e.name.startswith("aten::")]

    def nested(e) -> bool:
        parent = e.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return True
            parent = parent.cpu_parent
        return False

    return {"aten_ops": len(ops), "top_level_aten_ops": sum(not nested(e) for e in ops)}


def count_ops(step: Callable[[], object]) -> dict:
    """`op_counts` of one call of `step`."""
    import os

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # no "gpuGetDeviceCount failed" line on a machine without GPU
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return op_counts(prof)


def op_counter(steps: Sequence[int]):
    """A Lightning callback that profiles the tool's batches `steps` (start to the next batch start): `counts`."""
    from lightning.pytorch import Callback
    from torch.profiler import ProfilerActivity, profile

    class OpCounter(Callback):
        def __init__(self) -> None:
            self.counts: dict[int, dict] = {}
            self._open: tuple[int, object] | None = None

        def _close(self) -> None:
            if self._open is not None:
                step, prof = self._open
                prof.__exit__(None, None, None)
                self.counts[step] = op_counts(prof) | {"logged": self._logged}
                self._open = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._close()
            if batch_idx in steps:
                self._logged = (batch_idx + 1) % getattr(pl_module, "log_every", 1) == 0  # 1: earlier versions
                prof = profile(activities=[ProfilerActivity.CPU])
                prof.__enter__()
                self._open = (batch_idx, prof)

        def on_train_end(self, trainer, pl_module) -> None:
            self._close()

    return OpCounter()


def harness_overhead(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """Median plain-step time inside the whole tool over that of the bare step (score, backward, Adam), same
    models, batch and seg size: the per-step cost of Lightning, logging and best-so-far tracking."""
    from PIL import Image, ImageDraw

    from silhouette_lightning.config.settings import SwapConfig

    device = torch.device(args.device)
    batch, size = args.batches[0], args.seg_sizes[0]
    gen, ens = build_models(args.generator, args.segmenters, size)
    gen, ens = gen.to(device), ens.to(device)
    module = make_module(gen, ens, batch, args)
    optimizer = module.configure_optimizers()
    inputs = make_inputs(batch, gen.config.num_classes, size, device)
    bare_ms, tool_s = [], {n: [] for n in args.harness_log_everys}
    ops: dict = {}
    if args.count_ops:
        ops["bare"] = count_ops(lambda: latent_step(module, optimizer, inputs, None))
    with tempfile.TemporaryDirectory() as tmp:
        mask = Image.new("L", (64, 64), 0)
        ImageDraw.Draw(mask).ellipse((10, 8, 54, 56), fill=255)
        (Path(tmp) / "masks").mkdir()
        mask.save(Path(tmp) / "masks" / "a.png")
        for round_ in range(args.harness_rounds):  # interleaved, so that a machine's drift hits every variant
            bare_ms += time_steps(
                lambda: latent_step(module, optimizer, inputs, None), device, args.warmup, args.harness_steps
            )
            for n in args.harness_log_everys:
                config = SwapConfig(
                    data=str(Path(tmp) / "masks"),
                    masks=True,
                    subject="dog",
                    classes=[1],
                    restarts=batch,
                    steps=args.harness_steps,
                    batch_size=batch,
                    seg_size=size,
                    save_images="none",
                    image_every=0,
                    log_every=n,
                    frames=2,
                    out=tmp,
                    name=f"harness-{round_}-{n}",
                    accelerator=device.type.replace("cuda", "gpu"),
                    precision="32-true",
                    compile="none",
                    pretrained=False,
                )
                counter = op_counter((2, 9)) if args.count_ops and round_ == 0 else None  # steady; 9 logs at 10
                tool_s[n].append(whole_run(config, gen, ens, *([counter] if counter else []))["median_step_s"])
                if counter is not None:
                    ops[f"log_every_{n}"] = counter.counts
    bare_s = statistics.median(bare_ms) / 1000
    result = {"batch": batch, "seg_size": size, "bare_step_s": bare_s, "target": 1.15, "log_every": {}}
    for n, medians in tool_s.items():
        step_s = statistics.median(medians)
        result["log_every"][n] = {"harness_step_s": step_s, "ratio": step_s / bare_s, "round_medians_s": medians}
        log(
            f"harness, --log-every {n}: {step_s * 1000:.2f} ms/step in the tool vs {bare_s * 1000:.2f} ms bare "
            f"(batch {batch}, seg {size}, median of {len(medians)} round(s)): {step_s / bare_s:.3f}x "
            f"(target <= 1.15x); rounds {', '.join(f'{m * 1000:.1f}' for m in medians)} ms"
        )
    if ops:
        result["ops"] = ops
        bare_ops = ops["bare"]
        log(f"aten ops dispatched (all, top level): bare step {bare_ops['aten_ops']}, {bare_ops['top_level_aten_ops']}")
        for name, counts in ops.items():
            for step, c in sorted(counts.items()) if name != "bare" else ():
                kind, label = "logs" if c["logged"] else "does not log", name.replace("_", " ")
                log(f"  tool, {label}, step {step} ({kind}): {c['aten_ops']}, {c['top_level_aten_ops']}")
    first = result["log_every"][args.harness_log_everys[0]]
    result["harness_step_s"], result["ratio"] = first["harness_step_s"], first["ratio"]
    return result


def end_to_end(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """The default command on `--end-to-end DATA` with random weights, timed whole, against its bare steps."""
    from silhouette_lightning.config.settings import build_config

    device = torch.device(args.device)
    size = args.seg_sizes[0]
    gen, ens = build_models(args.generator, args.segmenters, size)
    with tempfile.TemporaryDirectory() as tmp:
        config = build_config(
            {
                "data": str(args.end_to_end),
                "masks": args.masks or None,
                "seg_size": size,
                "out": tmp,
                "name": "e2e",
                "pretrained": False,
                "accelerator": device.type.replace("cuda", "gpu"),
            }
        )
        t0 = time.perf_counter()
        timed = whole_run(config, gen, ens)
        total = time.perf_counter() - t0
    result = {**timed, "total_s": total}
    log(
        f"end to end: {total:.1f} s in all, {timed['before_first_step_s']:.1f} s before the first step, "
        f"{timed['batches']} steps at {timed['median_step_s'] * 1000:.1f} ms (median plain step)"
    )
    if timed["median_step_s"]:
        engine = timed["batches"] * timed["median_step_s"]
        result["engine_s"] = engine
        result["overhead"] = total / engine - 1
        log(
            f"  engine (steps x median step): {engine:.1f} s; the rest (loading, maps, pictures, logging) "
            f"{100 * result['overhead']:.0f}% on top (target < 10%)"
        )
    return result


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """Build the networks, measure the reference loop and every configuration; returns the JSON-able results."""
    device = torch.device(args.device)
    t0 = time.perf_counter()
    base_gen, base_ens = build_models(args.generator, args.segmenters, args.seg_sizes[0])
    base_gen, base_ens = base_gen.to(device), base_ens.to(device)
    log(f"built {args.generator} + {args.segmenters} on {device} in {time.perf_counter() - t0:.1f} s")
    flops_cache: dict = {}
    if args.measure_peak:
        peak = measure_matmul_peak(device)
        args.peak_tflops = float(f"{peak['tflops']:.4g}")
        args.peak_note = f"dense {peak['dtype']} matmul {peak['n']}^3 measured in this run ({peak['ms']:.2f} ms)"
        log(f"measured peak: {args.peak_tflops} TFLOP/s ({args.peak_note})")
    results: dict = {
        "env": environment(device),
        "args": _jsonable(vars(args)),
        "peak_tflops": args.peak_tflops,
        "peak_note": args.peak_note,
        "reference": {},
        "rows": [],
    }
    if args.harness:
        results["harness"] = harness_overhead(args, log)
    if args.end_to_end:
        results["end_to_end"] = end_to_end(args, log)

    # Reference: batch 1, fp32, contiguous, default backend settings, the networks as loaded.
    if not args.no_reference:
        set_backend(cudnn_benchmark=False, tf32=False)
        for size in args.seg_sizes:
            row = Row(device.type, "32", "contiguous", 1, size, tricks="reference loop")
            flops, times, mem = measure(base_gen, resized(base_ens, size), 1, "32", args, flops_cache=flops_cache)
            fill(row, flops, times, mem, args.peak_tflops)
            row.ratio_vs_reference = 1.0
            results["reference"][str(size)] = asdict(row)
            log(f"reference loop, seg {size}: {row.ms_per_step:.2f} ms/step, {row.latent_steps_per_s:.2f} steps/s")

    set_backend(cudnn_benchmark=args.cudnn_benchmark, tf32=args.tf32)
    tricks = [
        t
        for t, on in (
            ("cudnn.benchmark", args.cudnn_benchmark),
            ("tf32 matmul", args.tf32),
            ("baked SN", args.bake_spectral_norm),
            (f"compile {args.compile}", args.compile != "none"),
        )
        if on
    ]
    gen = bake_spectral_norm(base_gen) if args.bake_spectral_norm else base_gen
    for fmt in args.formats:
        if fmt == "channels_last":
            # Copies, so the reference networks keep their format.
            gen_f = copy.deepcopy(gen).to(memory_format=torch.channels_last)
            ens_f = copy.deepcopy(base_ens).to(memory_format=torch.channels_last)
        else:
            gen_f, ens_f = gen, base_ens
        for size in args.seg_sizes:
            ens_s = resized(ens_f, size)
            gen_run, ens_run = gen_f, ens_s
            if args.compile != "none":
                ens_run = torch.compile(ens_s)
                gen_run = torch.compile(gen_f) if args.compile == "all" else gen_f
            for precision in args.precisions:
                for batch in args.batches:
                    row = Row(device.type, precision, fmt, batch, size, tricks=", ".join(tricks))
                    try:
                        flops, times, mem = measure(
                            gen_run,
                            ens_run,
                            batch,
                            precision,
                            args,
                            count_with=(gen_f, ens_s),
                            flops_cache=flops_cache,
                        )
                        fill(row, flops, times, mem, args.peak_tflops)
                        if args.profile:
                            results.setdefault("profiles", []).append(
                                {"row": format_row(row), **profile_step(gen_run, ens_run, batch, precision, args, log)}
                            )
                        ref = results["reference"].get(str(size))
                        if ref:
                            row.ratio_vs_reference = row.latent_steps_per_s / ref["latent_steps_per_s"]
                    except (torch.OutOfMemoryError, RuntimeError) as exc:
                        if not _is_oom(exc):
                            raise
                        row.error = "out of memory"
                    finally:
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                    results["rows"].append(asdict(row))
                    log(format_row(row))
                    if row.error:  # a larger batch will not fit either
                        break
    if args.pictures:
        results["pictures"] = time_pictures(base_gen, base_ens, args)
        log(f"pictures of one (source, class) group: {results['pictures']}")
    return results


CONV_KERNEL_HINTS = ("conv", "xmma", "cudnn", "implicit", "dgrad", "wgrad", "fprop", "cutlass", "gemm", "sm90_", "nhwc")


def profile_step(
    generator: nn.Module,
    ensemble: SegmenterEnsemble,
    batch: int,
    precision: str,
    args: argparse.Namespace,
    log: Callable[[str], None] = print,
) -> dict:
    """Profile one (warm) step: GPU time in convolution/matmul kernels vs the rest, and the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    device = next(generator.parameters()).device
    autocast = torch.bfloat16 if precision == "bf16" else None
    inputs = make_inputs(batch, generator.config.num_classes, ensemble.size, device)
    module = make_module(generator, ensemble, batch, args)
    optimizer = module.configure_optimizers()
    step = lambda: latent_step(module, optimizer, inputs, autocast)  # noqa: E731
    time_steps(step, device, 2, 1)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    wall_ms = (time.perf_counter() - t0) * 1e3
    averages = prof.key_averages()
    kernels = [e for e in averages if getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type)]
    busy = {"conv_or_matmul_ms": 0.0, "other_ms": 0.0}
    for e in kernels:
        kind = "conv_or_matmul_ms" if any(h in e.key.lower() for h in CONV_KERNEL_HINTS) else "other_ms"
        busy[kind] += e.self_device_time_total / 1e3
    top = sorted(kernels, key=lambda e: -e.self_device_time_total)[:15]
    summary = {
        "wall_ms_profiled": wall_ms,
        **busy,
        "kernels": sum(e.count for e in kernels),
        "top": [{"kernel": e.key[:120], "ms": e.self_device_time_total / 1e3, "count": e.count} for e in top],
    }
    log(
        f"profile {precision} b{batch} s{ensemble.size}: wall {wall_ms:.1f} ms, conv/matmul "
        f"{busy['conv_or_matmul_ms']:.1f} ms, other {busy['other_ms']:.1f} ms, {summary['kernels']} kernels"
    )
    for t in summary["top"]:
        log(f"  {t['ms']:8.2f} ms {t['count']:5d}x  {t['kernel']}")
    return summary


def time_pictures(generator: nn.Module, ensemble: SegmenterEnsemble, args: argparse.Namespace) -> dict:
    """Seconds to render and write one group's pictures as `ResultWriter` does with `--save-images all`:
    7 latents (best + 6 frames) through generator and ensemble in fp32, then PNGs, a strip and a GIF."""
    from silhouette_lightning.core.files import atomic_save_image
    from silhouette_lightning.outputs import pictures

    device = next(generator.parameters()).device
    module = make_module(generator, ensemble, 7, args)
    inputs = make_inputs(7, generator.config.num_classes, ensemble.size, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    timings: dict[str, float] = {}
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        for attempt in range(2):  # the first pass warms up the kernels and the font
            sync()
            t0 = time.perf_counter()
            if hasattr(module, "render"):  # the writer's own rendering, where the module has it
                images, maps = module.render(module.z.detach(), inputs.class_ids, inputs.channels)
            else:
                images = module.generate(module.z, inputs.class_ids)  # [7, 3, R, R]
                maps = module.subject_maps(module.ensemble(images), inputs.channels)  # [7, S, S]
                images, maps = images.clamp(0, 1).cpu(), maps.float().cpu()
            t1 = time.perf_counter()
            target = inputs.targets[0].cpu()
            out = Path(tmp)
            atomic_save_image(pictures.to_pil(images[0]), out / "best.png")
            atomic_save_image(pictures.to_pil((maps[0] > 0.5).float()), out / "mask.png")
            atomic_save_image(pictures.to_pil(target), out / "target.png")
            captions = [f"step {i}" for i in range(6)]
            atomic_save_image(
                pictures.strip(list(images[1:]), list(maps[1:]), captions, target=target), out / "strip.png"
            )
            pictures.progress_gif(list(images[1:]), list(maps[1:]), target, out / "progress.gif", captions=captions)
            t2 = time.perf_counter()
            timings = {"render_s": t1 - t0, "write_s": t2 - t1, "total_s": t2 - t0, "warm": attempt == 1}
    return timings


# --------------------------------------------------------------------------------------------- output


def environment(device: torch.device) -> dict:
    """What the numbers were measured on."""
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
        "conv_fp32_precision": getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(sms=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1))
    return env


COLUMNS = (
    "device",
    "prec",
    "format",
    "batch",
    "seg",
    "GFLOP/step",
    "ms/step",
    "steps/s",
    "TFLOP/s",
    "%peak",
    "x ref",
    "mem GiB",
    "tricks",
)


def format_row(row: Row) -> str:
    """One table line."""

    def num(v: float | None, spec: str) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    cells = [
        row.device,
        row.precision,
        "cl" if row.memory_format == "channels_last" else "contig",
        str(row.batch),
        str(row.seg_size),
    ]
    if row.error:
        return " | ".join([*cells, row.error, *["-"] * 6, row.tricks or "-"])
    cells += [
        num(row.gflop_per_step, ".4g"),
        num(row.ms_per_step, ".4g"),
        num(row.latent_steps_per_s, ".4g"),
        num(row.tflops, ".3g"),
        num(row.percent_of_peak, ".3g"),
        num(row.ratio_vs_reference, ".3g"),
        num(row.peak_mem_gib, ".3g"),
        row.tricks or "-",
    ]
    return " | ".join(cells)


def table(results: dict) -> str:
    """The markdown table of all rows, reference rows first."""
    rows = [Row(**r) for r in results["reference"].values()] + [Row(**r) for r in results["rows"]]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + format_row(r) + " |" for r in rows]
    return "\n".join(lines)


def _jsonable(values: dict) -> dict:
    """argparse values as JSON (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print the table, write `--json`; returns the results."""
    args = parse_args(argv)
    results = run_benchmark(args)
    print()
    print(f"peak: {args.peak_tflops:g} TFLOP/s = {args.peak_note}")
    print(f"env: {json.dumps(results['env'])}")
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
