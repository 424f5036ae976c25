"""`train.py report FOLDER ...`: rebuild the pages of finished runs and benchmarks from their folders alone.

A run folder (it holds `config.yaml` and `records/`) gets its convergence statistics, plots, runtime figures and
`report.html` again (outputs/report.py `rebuild_pages`); a benchmark folder (it holds `benchmark.yaml`) gets its
variants' pages and the comparison (`compare.*`, the runtime statistics) again, judged as the benchmark was unless
`--judge` says otherwise. Nothing is optimized and no model is loaded: useful after an upgrade of the tool, after
copying folders from a cluster, or to judge a benchmark again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from silhouette_lightning.core.errors import UsageError

if TYPE_CHECKING:
    from silhouette_lightning.bench.variants import Variant

# the rest is imported when a folder is rebuilt, so `train.py report --help` answers at once (torch not loaded)

JUDGES = ("optimized", "heldout")


def build_parser() -> argparse.ArgumentParser:
    from silhouette_lightning.config.flags import prog_name

    parser = argparse.ArgumentParser(
        prog=f"{prog_name()} report",
        description="Rebuild the statistics and pages (report.html; compare.html for a benchmark) of finished run "
        "or benchmark folders from what they hold on disk. Nothing is optimized, no model is loaded.",
        epilog="examples:\n  python train.py report runs/samples-biggan-deep-256\n"
        "  python train.py report runs/samples-biggan-deep-256-benchmark --judge optimized",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="run or benchmark folders")
    parser.add_argument(
        "--judge",
        choices=JUDGES,
        help="benchmark folders: the IoU the runtime statistics judge (default: the one the benchmark used)",
    )
    return parser


def is_run(folder: Path) -> bool:
    from silhouette_lightning.outputs.records import records_dir

    return (folder / "config.yaml").exists() and records_dir(folder).is_dir()


def benchmark_variants(root: Path) -> list[tuple[Variant, Path]]:
    """The benchmark's (variant, run folder) pairs in its order: from `benchmark.yaml` (written by benchmarks of
    this version), else every run folder in it, by name."""
    import yaml

    from silhouette_lightning.bench.variants import Variant

    saved = yaml.safe_load((root / "benchmark.yaml").read_text()) or {}
    listed = saved.get("variants") or [{"label": p.name, "folder": p.name} for p in sorted(root.iterdir()) if is_run(p)]
    pairs = [(Variant(v["label"], {}, v.get("source", "folder")), root / v["folder"]) for v in listed]
    missing = [str(run_dir) for _, run_dir in pairs if not is_run(run_dir)]
    if missing:
        raise UsageError(
            f"{root}: the benchmark's variant folder(s) {', '.join(missing)} hold no run; run the benchmark "
            "command again to finish them"
        )
    return pairs


def rebuild(folder: Path, *, judge: str | None = None, log=print) -> list[Path]:
    """Rebuild one folder's pages; returns the pages written."""
    import yaml

    from silhouette_lightning.outputs.records import read_results
    from silhouette_lightning.outputs.report import rebuild_pages
    from silhouette_lightning.outputs.runtime import heldout_values

    folder = Path(folder)
    if (folder / "benchmark.yaml").exists():
        from silhouette_lightning.bench.compare import write_comparison

        saved = yaml.safe_load((folder / "benchmark.yaml").read_text()) or {}
        pairs = benchmark_variants(folder)
        if not pairs:
            raise UsageError(f"{folder}: this benchmark holds no finished variant yet; run the benchmark command")
        judge = judge or saved.get("judge", "optimized")
        if judge == "heldout" and not all(heldout_values(read_results(run_dir)) for _, run_dir in pairs):
            raise UsageError(
                f"{folder}: not every variant has held-out IoUs (runs with `heldout: none`); use --judge optimized"
            )
        pages = [rebuild_pages(run_dir) for _, run_dir in pairs]
        written = write_comparison(folder, pairs, mode=saved.get("mode", "swap"), judge=judge)
        pages.append(written["html"])
    elif is_run(folder):
        pages = [rebuild_pages(folder)]
    elif folder.is_dir():
        raise UsageError(f"{folder} holds neither a run (config.yaml, records/) nor a benchmark (benchmark.yaml)")
    else:
        raise UsageError(f"{folder} is not a folder; give a run or benchmark folder (the --out/--name of a run)")
    for page in pages:
        log(f"rebuilt: {page}")
    return pages


def main(argv: list[str] | None = None) -> int:
    """Exit code 0 when every folder was rebuilt, 2 when one was not a run or benchmark (the others still are)."""
    args = build_parser().parse_args(argv)
    status = 0
    for folder in args.folders:
        try:
            rebuild(folder, judge=args.judge, log=lambda line: print(line, file=sys.stderr))
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
    return status
