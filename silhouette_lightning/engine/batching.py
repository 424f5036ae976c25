"""`--batch-size auto`: the largest per-device batch whose latent step fits in GPU memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from silhouette_lightning.models.images import images as generator_images

CPU_BATCH = 16  # on a CPU memory is rarely the limit and throughput is flat in batch size


def step_fits(generator, ensemble, batch: int, device: torch.device, *, truncation: float, dtype=None) -> bool:
    """Whether one full latent step (generator + ensemble forward, backward to z) of `batch` fits."""
    try:
        z = torch.zeros(batch, generator.config.z_dim, device=device, requires_grad=True)
        one_hot = F.one_hot(torch.zeros(batch, dtype=torch.long, device=device), generator.config.num_classes)
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = ensemble(generator_images(generator, z, one_hot.float(), truncation))
        logits.float().square().mean().backward()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        torch.cuda.empty_cache()


def largest_fitting(fits, limit: int = 1024) -> int:
    """The largest power of two up to `limit` for which `fits(batch)` holds (1 if none does).

    Powers of two, not the exact edge: every rank of a DDP run probes on its own, and identical GPUs must
    agree on the chunk size even when free memory differs by a few megabytes.
    """
    batch = 1
    while batch * 2 <= limit and fits(batch * 2):
        batch *= 2
    return batch


def auto_batch_size(generator, ensemble, config, *, log=print, limit: int = 1024) -> int:
    """`--batch-size auto`: probe on the GPU (or the CPU default without one)."""
    if not torch.cuda.is_available() or config.accelerator == "cpu":
        log(f"--batch-size auto: no GPU, using {CPU_BATCH}")
        return CPU_BATCH
    device = torch.device("cuda", torch.cuda.current_device())
    generator.to(device)
    ensemble.to(device)
    dtype = torch.bfloat16 if "bf16" in str(config.precision) else None
    chosen = largest_fitting(
        lambda b: step_fits(generator, ensemble, b, device, truncation=config.truncation, dtype=dtype), limit
    )
    log(f"--batch-size auto: {chosen} trajectories per device")
    return chosen
