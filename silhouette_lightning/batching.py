"""`--batch-size auto`: the largest per-device batch whose latent step fits in GPU memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CPU_BATCH = 16  # on a CPU memory is rarely the limit and throughput is flat in batch size


def step_fits(generator, ensemble, batch: int, device: torch.device, *, truncation: float, dtype=None) -> bool:
    """Whether one full latent step (generator + ensemble forward, backward to z) of `batch` fits."""
    try:
        z = torch.zeros(batch, generator.config.z_dim, device=device, requires_grad=True)
        one_hot = F.one_hot(torch.zeros(batch, dtype=torch.long, device=device), generator.config.num_classes)
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = ensemble((generator(z, one_hot.float(), truncation) + 1) / 2)
        logits.float().square().mean().backward()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        torch.cuda.empty_cache()


def auto_batch_size(generator, ensemble, config, *, log=print, limit: int = 1024) -> int:
    """Double the batch until a step no longer fits, keep the last that did (with a 10% margin)."""
    if not torch.cuda.is_available() or config.accelerator == "cpu":
        log(f"--batch-size auto: no GPU, using {CPU_BATCH}")
        return CPU_BATCH
    device = torch.device("cuda", torch.cuda.current_device())
    generator.to(device)
    ensemble.to(device)
    dtype = torch.bfloat16 if "bf16" in str(config.precision) else None
    batch = 1
    while batch * 2 <= limit and step_fits(generator, ensemble, batch * 2, device, truncation=config.truncation,
                                           dtype=dtype):  # fmt: skip
        batch *= 2
    chosen = max(1, int(batch * 0.9)) if batch > 8 else batch
    log(f"--batch-size auto: {chosen} trajectories per device")
    return chosen
