"""Machine-dependent defaults: the fastest exact-enough settings on a GPU, the paper's plain ones on a CPU.

`precision`, `batch_size` and `compile` default to "auto". On a GPU "auto" means bf16 mixed precision (where the
card supports it), the largest batch that fits, and a compiled ensemble (docs/benchmark.md: 1.45x from bf16,
2-4x from batch 64 over 16, 1.39x from compiling the ensemble). On a CPU it means fp32, batch 16 and no
compilation, so CPU results are those of the explicit settings. Every choice is overridable with a flag, and
the resolved values are what `config.yaml` records, so a resumed run is compared with what really ran.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from silhouette_lightning.config.settings import normalize_compile


def uses_gpu(accelerator: str) -> bool:
    """Whether a run with this `--accelerator` runs on a CUDA GPU of this machine."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def bf16_supported() -> bool:
    """Whether the current CUDA device computes bf16 natively (Ampere and later)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_machine_defaults(config, *, gpu: bool | None = None, bf16: bool | None = None):
    """A copy of `config` with every "auto" of `precision` and `compile` replaced by this machine's choice.

    `gpu` / `bf16` override the detection (tests). `batch_size` "auto" is resolved later, by probing the device
    with the loaded networks (`batching.auto_batch_size`: 16 on a CPU).
    """
    gpu = uses_gpu(config.accelerator) if gpu is None else gpu
    bf16 = (gpu and bf16_supported()) if bf16 is None else bf16
    changes = {}
    if config.precision == "auto":
        changes["precision"] = "bf16-mixed" if gpu and bf16 else "32-true"
    compile_mode = normalize_compile(config.compile)
    if compile_mode == "auto":
        compile_mode = "ensemble" if gpu else "none"
    changes["compile"] = compile_mode
    return dataclasses.replace(config, **changes)


def compile_cache_dir() -> Path:
    """Where compiled kernels are kept between runs: beside the weights cache (`<cache>/inductor`)."""
    from silhouette_lightning.models.biggan import default_cache_dir

    return default_cache_dir() / "inductor"


def use_compile_cache() -> Path:
    """Point torch's compile caches (Inductor's FX graphs and Triton kernels) at `compile_cache_dir()`, unless
    the user set `TORCHINDUCTOR_CACHE_DIR`; returns the folder used. A second run of the same shapes then
    reuses the compiled artifacts instead of compiling again (torch's default is a temporary folder)."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not folder:
        folder = str(compile_cache_dir())
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)
