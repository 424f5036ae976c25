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

`--harness` measures instead what the Lightning harness costs per step: the median time of one latent step of
a whole `run()` (Trainer, SilhouetteSwap.training_step with its best-so-far tracking, logging, data, writer),
against the same `score` + summed backward + Adam step in a bare PyTorch loop, both on the same networks and
batch; the ratio is harness / bare (issue 11's target on tiny CPU models: <= 1.15).
  python scripts/benchmark.py --harness --generator tiny --segmenters lraspp_mobilenet_v3_large:1 --seg-size 32 \
      --device cpu --batch-sizes 4,16

Weights are random (`build_random_generator`, `load_ensemble(pretrained=False)`): FLOPs and time do not
depend on weight values, and no download is needed. Never use this for timing asserts in tests.
"""

from __future__ import annotations

import argparse
import copy
import functools
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
from lightning.pytorch import Callback
from torch import Tensor, nn
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.utils.flop_counter import FlopCounterMode

from silhouette_lightning.classes import VOC_CLASSES
from silhouette_lightning.models.biggan import BIGGAN_NAMES, build_random_generator, tiny_biggan_config
from silhouette_lightning.models.segmenters import SegmenterEnsemble, load_ensemble
from silhouette_lightning.module import SilhouetteSwap
from silhouette_lightning.trajectories import initial_latents

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
    p.add_argument("--generator", default="biggan-deep-128", choices=[*BIGGAN_NAMES, "tiny"],
                   help="random-weight BigGAN-deep architecture, or 'tiny' (32 x 32, for tests)")  # fmt: skip
    p.add_argument("--segmenters", default="deeplabv3_resnet101:0.6,fcn_resnet101:0.4",
                   help="ensemble spec, random weights")  # fmt: skip
    p.add_argument("--seg-size", default="256", help="segmenter input size(s), comma-separated: 256,128")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--precision", default="32", help="comma-separated: 32 (fp32) and/or bf16 (autocast)")
    p.add_argument("--batch-sizes", default="1,8,32,64", help="comma-separated batch sizes (trajectories per step)")
    p.add_argument("--channels-last", nargs="?", const="on", default="off", choices=["off", "on", "both"],
                   help="frozen networks in channels_last memory format ('both' measures each)")  # fmt: skip
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 matmuls too (convs use it by default)")
    p.add_argument("--bake-spectral-norm", action="store_true",
                   help="remove the generator's spectral-norm hooks (frozen: same weights, fewer kernels)")  # fmt: skip
    p.add_argument("--compile", default="none", choices=["none", "ensemble", "all"],
                   help="torch.compile the ensemble (or ensemble and generator)")  # fmt: skip
    p.add_argument("--loss", default="mse")
    p.add_argument("--ensemble-mode", default="probs")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (cudnn autotuning, compile)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps; the median is reported")
    p.add_argument("--no-reference", action="store_true", help="skip the batch-1 fp32 reference loop")
    p.add_argument("--pictures", action="store_true", help="also time one (source, class) group's pictures")
    p.add_argument("--peak-tflops", type=float, default=PEAKS["bf16"], help="the card's peak, TFLOP/s")
    p.add_argument("--peak-note", default=DEFAULT_PEAK_NOTE, help="what --peak-tflops is (printed)")
    p.add_argument("--profile", action="store_true", help="also profile one step of each row: top kernels, GPU busy")
    p.add_argument("--json", type=Path, help="write all results here")
    p.add_argument("--harness", action="store_true",
                   help="time a whole run()'s steps (Lightning) against the bare score + Adam loop instead")  # fmt: skip
    p.add_argument("--harness-steps", type=int, default=25, help="--harness: Adam steps per chunk (default 25)")
    p.add_argument("--harness-chunks", type=int, default=2, help="--harness: chunks per run (default 2)")
    p.add_argument("--harness-rounds", type=int, default=3,
                   help="--harness: alternating (bare, harness) measurements; medians reported (default 3)")  # fmt: skip
    args = p.parse_args(argv)
    try:
        args.seg_sizes = [int(s) for s in args.seg_size.split(",")]
        args.batches = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError as exc:
        p.error(f"sizes must be comma-separated integers ({exc})")
    args.precisions = [s.strip() for s in args.precision.split(",")]
    if not set(args.precisions) <= {"32", "bf16"} or min(args.batches + args.seg_sizes) < 1:
        p.error("--precision takes 32 and/or bf16; sizes must be >= 1")
    if min(args.harness_steps, args.harness_chunks, args.harness_rounds) < 1:
        p.error("--harness-steps, --harness-chunks and --harness-rounds must be >= 1")
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
    module = SilhouetteSwap(generator, ensemble, batch_size=batch, loss=args.loss, ensemble_mode=args.ensemble_mode)
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


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """Build the networks, measure the reference loop and every configuration; returns the JSON-able results."""
    device = torch.device(args.device)
    t0 = time.perf_counter()
    base_gen, base_ens = build_models(args.generator, args.segmenters, args.seg_sizes[0])
    base_gen, base_ens = base_gen.to(device), base_ens.to(device)
    log(f"built {args.generator} + {args.segmenters} on {device} in {time.perf_counter() - t0:.1f} s")
    flops_cache: dict = {}
    results: dict = {"env": environment(device), "args": _jsonable(vars(args)), "peak_tflops": args.peak_tflops,
                     "peak_note": args.peak_note, "reference": {}, "rows": []}  # fmt: skip

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
    tricks = [t for t, on in (("cudnn.benchmark", args.cudnn_benchmark), ("tf32 matmul", args.tf32),
                              ("baked SN", args.bake_spectral_norm), (f"compile {args.compile}", args.compile != "none"))
              if on]  # fmt: skip
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
                            gen_run, ens_run, batch, precision, args,
                            count_with=(gen_f, ens_s), flops_cache=flops_cache,
                        )  # fmt: skip
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
    generator: nn.Module, ensemble: SegmenterEnsemble, batch: int, precision: str, args: argparse.Namespace,
    log: Callable[[str], None] = print,
) -> dict:  # fmt: skip
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
    log(f"profile {precision} b{batch} s{ensemble.size}: wall {wall_ms:.1f} ms, conv/matmul "
        f"{busy['conv_or_matmul_ms']:.1f} ms, other {busy['other_ms']:.1f} ms, {summary['kernels']} kernels")  # fmt: skip
    for t in summary["top"]:
        log(f"  {t['ms']:8.2f} ms {t['count']:5d}x  {t['kernel']}")
    return summary


def time_pictures(generator: nn.Module, ensemble: SegmenterEnsemble, args: argparse.Namespace) -> dict:
    """Seconds to render and write one group's pictures as `ResultWriter` does with `--save-images all`:
    7 latents (best + 6 frames) through generator and ensemble in fp32, then PNGs, a strip and a GIF."""
    from silhouette_lightning import pictures
    from silhouette_lightning.files import atomic_save_image

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
            atomic_save_image(pictures.strip(list(images[1:]), list(maps[1:]), captions, target=target),
                              out / "strip.png")  # fmt: skip
            pictures.progress_gif(list(images[1:]), list(maps[1:]), target, out / "progress.gif", captions=captions)
            t2 = time.perf_counter()
            timings = {"render_s": t1 - t0, "write_s": t2 - t1, "total_s": t2 - t0, "warm": attempt == 1}
    return timings


# --------------------------------------------------------------------------------------------- the harness


def _write_masks(folder: Path, count: int) -> None:
    """`count` white-ellipse dog silhouettes on black (mask sources for a run)."""
    from PIL import Image, ImageDraw

    (folder / "dog").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = Image.new("L", (48, 48), 0)
        ImageDraw.Draw(img).ellipse((4 + i % 9, 6, 40, 44 - i % 7), fill=255)
        img.save(folder / "dog" / f"{i:04d}.png")


class StepClock(Callback):
    """A Lightning callback that notes when each training batch starts, with its (chunk) step number."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, float]] = []
        self.end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append((int(batch["step"]), time.perf_counter()))

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = time.perf_counter()


def harness_step_times(clock: StepClock, steps: int) -> tuple[list[float], float]:
    """(ms of each pure update step, ms per update step over the whole fit).

    A pure update step is one that neither starts a chunk (re-seeding) nor only scores (a chunk's last);
    its time runs from its start to the next batch's start, so it holds everything Lightning does between
    two steps (logging, callbacks, the data loader). The second number spreads the whole fit, chunk starts
    and scoring steps included, over the Adam steps it made.
    """
    starts = [*clock.starts, (-1, clock.end)]
    pure = [(b - a) * 1e3 for (step, a), (_, b) in zip(starts, starts[1:], strict=False) if 0 < step < steps]
    updates = sum(1 for step, _ in clock.starts if step < steps)
    return pure, (clock.end - clock.starts[0][1]) * 1e3 / updates


def run_harness(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """For each batch size: median ms of one latent step in a whole `run()` vs in the bare loop, and the ratio."""
    import contextlib
    import io

    from silhouette_lightning.config import build_config
    from silhouette_lightning.run import run

    device = torch.device(args.device)
    size = args.seg_sizes[0]
    gen, ens = build_models(args.generator, args.segmenters, size)
    gen, ens = gen.to(device), ens.to(device)
    results: dict = {"env": environment(device), "args": _jsonable(vars(args)), "harness": []}
    for batch in args.batches:
        bare, pure, amortized = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            _write_masks(Path(tmp) / "data", batch * args.harness_chunks)  # 1 class, 1 restart: chunks x batch
            for round_ in range(args.harness_rounds):
                module = make_module(gen, ens, batch, args)
                optimizer = module.configure_optimizers()
                inputs = make_inputs(batch, gen.config.num_classes, size, device)
                step = functools.partial(latent_step, module, optimizer, inputs, None)
                bare.append(statistics.median(time_steps(step, device, args.warmup, args.repeats)))
                config = build_config({
                    "data": str(Path(tmp) / "data"), "masks": True, "classes": "1", "restarts": 1,
                    "steps": args.harness_steps, "batch_size": batch, "seg_size": size, "loss": args.loss,
                    "ensemble": args.ensemble_mode, "accelerator": args.device.replace("cuda", "gpu"),
                    "save_images": "none", "image_every": 0, "heldout": "none", "out": tmp, "name": f"r{round_}",
                    "frames": 2,
                })  # fmt: skip
                clock = StepClock()
                quiet = io.StringIO()  # the progress bar runs, as in a real command, but prints nowhere
                with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                    run(config, generator=gen, ensemble=ens, callbacks=[clock], log=lambda *a: None)
                times, per_update = harness_step_times(clock, args.harness_steps)
                pure.append(statistics.median(times))
                amortized.append(per_update)
        row = {
            "batch": batch, "seg_size": size, "device": device.type, "bare_ms": statistics.median(bare),
            "harness_ms": statistics.median(pure), "harness_ms_amortized": statistics.median(amortized),
            "bare_ms_rounds": [round(t, 3) for t in bare], "harness_ms_rounds": [round(t, 3) for t in pure],
        }  # fmt: skip
        row["ratio"] = row["harness_ms"] / row["bare_ms"]
        row["ratio_amortized"] = row["harness_ms_amortized"] / row["bare_ms"]
        results["harness"].append(row)
        log(harness_line(row))
    return results


def harness_line(row: dict) -> str:
    """One table line of `--harness`."""
    return (f"| {row['device']} | {row['batch']} | {row['seg_size']} | {row['bare_ms']:.2f} | {row['harness_ms']:.2f} "
            f"| {row['ratio']:.3f} | {row['harness_ms_amortized']:.2f} | {row['ratio_amortized']:.3f} |")  # fmt: skip


HARNESS_HEADER = ("| device | batch | seg | bare ms/step | harness ms/step | ratio | harness ms/step, whole fit | "
                  "ratio, whole fit |\n|---|---|---|---|---|---|---|---|")  # fmt: skip


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


COLUMNS = ("device", "prec", "format", "batch", "seg", "GFLOP/step", "ms/step", "steps/s", "TFLOP/s", "%peak",
           "x ref", "mem GiB", "tricks")  # fmt: skip


def format_row(row: Row) -> str:
    """One table line."""

    def num(v: float | None, spec: str) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    cells = [row.device, row.precision, "cl" if row.memory_format == "channels_last" else "contig", str(row.batch),
             str(row.seg_size)]  # fmt: skip
    if row.error:
        return " | ".join([*cells, row.error, *["-"] * 6, row.tricks or "-"])
    cells += [num(row.gflop_per_step, ".4g"), num(row.ms_per_step, ".4g"), num(row.latent_steps_per_s, ".4g"),
              num(row.tflops, ".3g"), num(row.percent_of_peak, ".3g"), num(row.ratio_vs_reference, ".3g"),
              num(row.peak_mem_gib, ".3g"), row.tricks or "-"]  # fmt: skip
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
    if args.harness:
        results = run_harness(args, log=lambda line: None)
        print(f"env: {json.dumps(results['env'])}")
        print(HARNESS_HEADER)
        print("\n".join(harness_line(row) for row in results["harness"]))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
        return results
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
