"""The run's command-line flags (argparse), shared by `train.py` and `train.py benchmark`."""

from __future__ import annotations

import argparse
import os
import sys

from silhouette_lightning import __version__
from silhouette_lightning.config.settings import SAVE_IMAGES, SwapConfig, bundled_configs
from silhouette_lightning.core.names import COMPILE_MODES, ENSEMBLE_MODES, FITS, LOSSES, PRIORS


def _int_or_auto(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _devices(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _thresholds(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IoU levels like 0.5,0.75,0.9, got {text!r}") from None


COMMAND = "silhouette-swap"  # the console command pyproject.toml installs


def prog_name(argv0: str | None = None) -> str:
    """The name `--help` shows: `train.py` when run as the script, else the console command's name."""
    base = os.path.basename(sys.argv[0] if argv0 is None and sys.argv else argv0 or "")
    return "train.py" if base == "train.py" else COMMAND


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """Flags; each defaults to None so that only what the user typed overrides the config file."""
    d = SwapConfig()
    p = argparse.ArgumentParser(
        prog=prog or prog_name(),
        description="Swap the subject of each source photo (or silhouette mask) for BigGAN images of chosen "
        "ImageNet classes that fit the same silhouette. Results: OUT/NAME/results.csv, swaps/, TensorBoard. "
        "Also: `train.py benchmark --help` (compare settings), `train.py report FOLDER` (rebuild a folder's pages).",
    )
    a = p.add_argument
    a("--config", help=f"YAML file of settings, or a bundled name ({', '.join(bundled_configs())}); flags override it")
    a(
        "--print-config",
        action="store_true",
        help="print the settings this command would run with, as YAML that "
        "--config reads back (defaults < config file < flags), and exit",
    )
    a("--data", help="folder of source photos: flat, or one folder per subject (DIR/dog/*.jpg)")
    a("--masks", action="store_true", default=None, help="the files are silhouettes (white subject on black)")
    a("--subject", help="VOC class of the sources' subject (dog, cat, bird, ...); default: folder name or detected")
    a(
        "--classes",
        help='ImageNet classes to generate, ids or names: 207,"tabby"; default: per subject, configs/classes.yaml',
    )
    a("--restarts", type=int, help=f"random restarts per source and class (default {d.restarts})")
    a(
        "--starts",
        type=int,
        help="best-of-N: score N random starts per source and class with forward passes only "
        f"and optimize the best restarts of them; N <= restarts (0) is the paper's plain search (default {d.starts})",
    )
    a(
        "--class-lr",
        type=float,
        help="optimize the class vector with z at this learning rate, from the one-hot of the "
        "class; results report the nearest class (default 0: off)",
    )
    a(
        "--prior-weight",
        type=float,
        help="weight of the latent prior (--prior) added to the loss (default 0: off)",
    )
    a(
        "--prior",
        choices=PRIORS,
        help="box: squared distance of z outside the truncation region (|z_i| <= 2 x truncation); norm: ReNO's "
        "prior on ||z||, pulling it to a truncated latent's typical radius (use --prior-weight 0.01) "
        f"(default {d.prior})",
    )
    a("--stop-iou", type=float, help="stop a trajectory once its best IoU reaches this (default: off)")
    a("--patience", type=int, help="stop a trajectory after this many steps without a better IoU (default: off)")
    a(
        "--prune-after",
        type=int,
        help="after this many steps only the better half of each source and class's restarts goes on (default: off)",
    )
    a("--steps", type=int, help=f"Adam steps per trajectory (default {d.steps})")
    a("--lr", type=float, help=f"Adam learning rate (default {d.lr})")
    a("--seed", type=int, help=f"run seed; each trajectory's seed derives from it (default {d.seed})")
    a(
        "--batch-size",
        type=_int_or_auto,
        help="trajectories per device per step, or auto: the largest that fits the GPU, 16 on a CPU "
        f"(default {d.batch_size})",
    )
    a("--truncation", type=float, help=f"BigGAN truncation in (0, 1] (default {d.truncation})")
    a(
        "--generator",
        help=f"biggan-deep-128|256|512 or a folder with config.json + pytorch_model.bin (default {d.generator})",
    )
    a("--segmenters", help=f"torchvision VOC segmenters with weights (default {d.segmenters})")
    a("--seg-size", type=int, help=f"segmenter input size in px (default {d.seg_size})")
    a(
        "--fit",
        choices=FITS,
        help="non-square photos and masks to the square the networks see: pad (keep all, "
        f"gray margins), crop (centre square) or stretch (squash) (default {d.fit})",
    )
    a("--ensemble", choices=ENSEMBLE_MODES, help=f"how segmenters combine (default {d.ensemble})")
    a("--loss", choices=LOSSES, help=f"silhouette loss on the subject channel (default {d.loss})")
    a(
        "--heldout",
        help="torchvision VOC segmenter, not in the ensemble, that scores each result's best image "
        f"(results.csv heldout_iou), or none (default {d.heldout})",
    )
    a("--frames", type=int, help=f"latents kept per trajectory for strips and animations (default {d.frames})")
    a("--save-images", choices=SAVE_IMAGES, help=f"pictures to write (default {d.save_images})")
    a("--blend", choices=("soft", "poisson"), help=f"composite edges; poisson needs opencv (default {d.blend})")
    a(
        "--thresholds",
        type=_thresholds,
        help="IoU levels for success rates and steps-to-reach in convergence.csv "
        f"(default {','.join(f'{t:g}' for t in d.thresholds)})",
    )
    a("--image-every", type=int, help=f"TensorBoard image panel every N steps, 0 never (default {d.image_every})")
    a(
        "--log-every",
        type=int,
        help="TensorBoard step scalars (train/loss, train/iou, train/iou_best, train/iou/<subject>) every N "
        f"latent steps and at the last (default {d.log_every}; 1: every step)",
    )
    a("--max-pixels", type=int, help=f"skip source images larger than this (default {d.max_pixels})")
    a("--out", help=f"output folder (default {d.out})")
    a("--name", help="run name: results go to OUT/NAME (default: <data folder>-<generator>)")
    a(
        "--fresh",
        action="store_true",
        default=None,
        help="replace what OUT/NAME holds (results, pictures, caches) "
        "and start over; without it a run on a folder of the same settings resumes it",
    )
    g = p.add_argument_group("Lightning")
    g.add_argument("--accelerator", help=f"cpu, gpu, auto (default {d.accelerator})")
    g.add_argument("--devices", type=_devices, help=f"devices per node, or auto (default {d.devices})")
    g.add_argument("--num-nodes", type=int, help=f"machines (default {d.num_nodes})")
    g.add_argument(
        "--strategy",
        help=f"auto, ddp or another DDP variant (gradients are summed across devices) (default {d.strategy})",
    )
    g.add_argument(
        "--precision",
        help=f"32-true, bf16-mixed, or auto: bf16-mixed on a GPU that has it, else "
        f"32-true; 16-bit float is refused, see README (default {d.precision})",
    )
    g.add_argument(
        "--compile",
        nargs="?",
        const="ensemble",
        choices=("auto", *COMPILE_MODES),
        help="torch.compile for the training steps: the segmenters (ensemble, about 40%% more steps/s on a "
        "GPU after 1-2 minutes of compiling, cached for later runs), the whole scoring step (all), or "
        f"none; auto: ensemble on a GPU, none on a CPU (default {d.compile})",
    )
    g.add_argument("--no-compile", dest="compile", action="store_const", const="none", help="same as --compile none")
    g.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="repeat runs bit for bit for any "
        "--batch-size and number of processes: one intra-op thread per process on CPUs (slower on many "
        "cores), deterministic algorithms and a fixed batch size on GPUs (recorded in config.yaml)",
    )
    g.add_argument("--verbose", action="store_true", default=None, help="also show Lightning's own messages")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p
