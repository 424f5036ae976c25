"""The command line: `python train.py --data sources/ --restarts 8 --devices 2` (see --help)."""

from __future__ import annotations

import argparse
import sys

from silhouette_lightning.config import SAVE_IMAGES, SwapConfig, build_config, bundled_configs, load_yaml
from silhouette_lightning.errors import UsageError, WeightsError
from silhouette_lightning.losses import ENSEMBLE_MODES, LOSSES


def _int_or_auto(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _devices(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def build_parser() -> argparse.ArgumentParser:
    """Flags; each defaults to None so that only what the user typed overrides the config file."""
    d = SwapConfig()
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Swap the subject of each source photo (or silhouette mask) for BigGAN images of chosen "
        "ImageNet classes that fit the same silhouette. Results: OUT/NAME/results.csv, swaps/, TensorBoard.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--config", help=f"YAML file of settings, or a bundled name ({', '.join(bundled_configs())}); flags override it")
    a("--data", help="folder of source photos: flat, or one folder per subject (DIR/dog/*.jpg)")
    a("--masks", action="store_true", default=None, help="the files are silhouettes (white subject on black)")
    a("--subject", help="VOC class of the sources' subject (dog, cat, bird, ...); default: folder name or detected")
    a("--classes", help='ImageNet classes to generate, ids or names: 207,"tabby"; default: per subject, '
      "configs/classes.yaml")  # fmt: skip
    a("--restarts", type=int, help=f"random restarts per source and class (default {d.restarts})")
    a("--starts", type=int, help="best-of-N: score N >= restarts random starts per source and class with forward "
      "passes only and optimize the best restarts of them (default 0: off)")  # fmt: skip
    a("--class-lr", type=float, help="optimize the class vector with z at this learning rate, from the one-hot of the "
      "class; results report the nearest class (default 0: off)")  # fmt: skip
    a("--prior-weight", type=float, help="weight of the squared distance of z outside the truncation region "
      "(|z_i| <= 2 x truncation), added to the loss (default 0: off)")  # fmt: skip
    a("--stop-iou", type=float, help="stop a trajectory once its best IoU reaches this (default: off)")
    a("--patience", type=int, help="stop a trajectory after this many steps without a better IoU (default: off)")
    a("--prune-after", type=int, help="after this many steps only the better half of each source and class's "
      "restarts goes on (default: off)")  # fmt: skip
    a("--steps", type=int, help=f"Adam steps per trajectory (default {d.steps})")
    a("--lr", type=float, help=f"Adam learning rate (default {d.lr})")
    a("--seed", type=int, help=f"run seed; each trajectory's seed derives from it (default {d.seed})")
    a("--batch-size", type=_int_or_auto, help=f"trajectories per device per step, or auto (default {d.batch_size})")
    a("--truncation", type=float, help=f"BigGAN truncation in (0, 1] (default {d.truncation})")
    a("--generator", help=f"biggan-deep-128|256|512 or a folder with config.json + pytorch_model.bin "
      f"(default {d.generator})")  # fmt: skip
    a("--segmenters", help=f"torchvision VOC segmenters with weights (default {d.segmenters})")
    a("--seg-size", type=int, help=f"segmenter input size in px (default {d.seg_size})")
    a("--ensemble", choices=ENSEMBLE_MODES, help=f"how segmenters combine (default {d.ensemble})")
    a("--loss", choices=LOSSES, help=f"silhouette loss on the subject channel (default {d.loss})")
    a("--frames", type=int, help=f"latents kept per trajectory for strips and animations (default {d.frames})")
    a("--save-images", choices=SAVE_IMAGES, help=f"pictures to write (default {d.save_images})")
    a("--blend", choices=("soft", "poisson"), help=f"composite edges; poisson needs opencv (default {d.blend})")
    a("--image-every", type=int, help=f"TensorBoard image panel every N steps, 0 never (default {d.image_every})")
    a("--max-pixels", type=int, help=f"skip source images larger than this (default {d.max_pixels})")
    a("--out", help=f"output folder (default {d.out})")
    a("--name", help="run name: results go to OUT/NAME (default: <data folder>-<generator>)")
    g = p.add_argument_group("Lightning")
    g.add_argument("--accelerator", help=f"cpu, gpu, auto (default {d.accelerator})")
    g.add_argument("--devices", type=_devices, help=f"devices per node, or auto (default {d.devices})")
    g.add_argument("--num-nodes", type=int, help=f"machines (default {d.num_nodes})")
    g.add_argument("--strategy", help=f"auto, ddp, ... (default {d.strategy})")
    g.add_argument("--precision", help=f"32-true, bf16-mixed, 16-mixed (default {d.precision})")
    g.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the segmenters: about 40%% more steps/s on a GPU after 1-2 minutes of compiling",
    )
    return p


def config_from_args(argv: list[str] | None = None) -> SwapConfig:
    """Defaults < config file < flags."""
    args = vars(build_parser().parse_args(argv))
    file_layer = load_yaml(args.pop("config")) if args.get("config") else {}
    args.pop("config", None)
    return build_config(file_layer, args)


def main(argv: list[str] | None = None) -> int:
    """Run the tool; exit code 0 done, 2 bad input or settings (with a one-line reason, no traceback)."""
    try:
        config = config_from_args(argv)
        from silhouette_lightning.run import run

        run(config)
    except (UsageError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
