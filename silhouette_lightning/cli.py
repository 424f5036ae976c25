"""The command line: `python train.py --data sources/ --restarts 8 --devices 2` (see --help)."""

from __future__ import annotations

import sys

from silhouette_lightning.config.flags import COMMAND, build_parser, prog_name
from silhouette_lightning.config.settings import SwapConfig, build_config, config_yaml, load_yaml
from silhouette_lightning.core.errors import OutputError, UsageError, WeightsError

__all__ = ["COMMAND", "build_parser", "config_from_args", "main", "prog_name"]


def config_from_args(argv: list[str] | None = None) -> SwapConfig:
    """Defaults < config file < flags."""
    return _parse(argv)[0]


def _parse(argv: list[str] | None) -> tuple[SwapConfig, bool]:
    """(the settings, whether --print-config was given)."""
    args = vars(build_parser().parse_args(argv))
    print_config = bool(args.pop("print_config"))
    file_layer = load_yaml(args.pop("config")) if args.get("config") else {}
    args.pop("config", None)
    return build_config(file_layer, args), print_config


def main(argv: list[str] | None = None) -> int:
    """Run the tool; exit code 0 when every (source, class) pair is done, 2 bad input or settings (with a one-line
    reason, no traceback), 130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM (finished results are kept).

    `train.py benchmark ...` (first word) runs the benchmark subcommand (bench/benchmark.py) instead, and
    `train.py report FOLDER ...` rebuilds the pages of finished folders (bench/rebuild.py).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["benchmark"]:
        from silhouette_lightning.bench.benchmark import main as benchmark_main

        return benchmark_main(argv[1:])
    if argv[:1] == ["report"]:
        from silhouette_lightning.bench.rebuild import main as report_main

        return report_main(argv[1:])
    try:
        config, print_config = _parse(argv)
        if print_config:
            from silhouette_lightning.config.checks import check_before_work

            check_before_work(config)  # what it prints can run: classes, their range, the data folder
            print(config_yaml(config), end="")
            return 0
        from silhouette_lightning.run.job import run

        run(config)
    except (UsageError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OutputError as e:
        print(
            f"error: cannot write {e.filename}: {e.strerror}; finished results are kept: make room (or fix the "
            "folder) and run the same command again to resume",
            file=sys.stderr,
        )
        return 2
    except Exception as e:  # torch is imported only once a run starts: `--help` answers without it
        import torch

        if not isinstance(e, torch.OutOfMemoryError):
            raise
        print(
            "error: out of memory on the device: pass a smaller --batch-size (or auto) or --seg-size; finished "
            "results are kept and the same command resumes",
            file=sys.stderr,
        )
        return 2
    return 0
