"""`train.py benchmark`: the same sources, classes and seeds under several settings, run one after the other as
separate resumable runs under one folder, then compared side by side (see `python train.py benchmark --help`).

Layout: `OUT/NAME/benchmark.yaml` (the benchmark's own settings), `OUT/NAME/<variant>/` (a complete run each:
results.csv, convergence, swaps, ...), and the comparison beside them: `compare.csv`, `compare.md`,
`compare_curves.png`, `compare.html`, the runtime statistics (`compare_runtime.csv`, `compare_differences.csv`,
`runtime_ecdf.png`, `runtime_ert.png`: bench/compare.py) (and `recovery.csv` / `recovery_curves.png` in recovery
mode).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from silhouette_lightning.bench.variants import (
    RANDOM_SEARCH,
    Variant,
    bundled_groups,
    parse_variants,
    random_search_config,
    variant_config,
)
from silhouette_lightning.config.flags import build_parser as run_parser
from silhouette_lightning.config.flags import prog_name
from silhouette_lightning.config.settings import SwapConfig, build_config, default_run_name, load_yaml
from silhouette_lightning.core.errors import UsageError, WeightsError
from silhouette_lightning.core.files import atomic_write_text

MODES = ("swap", "recovery")
JUDGES = ("auto", "optimized", "heldout")
EXAMPLES = """examples:
  python train.py benchmark --data data/samples --masks --compare appendix_c
  python train.py benchmark --data data/samples --masks --compare configs/appendix_a/*.yaml --restarts 4
  python train.py benchmark --data data/samples --masks --compare loss=mse loss=bce_bg,lr=0.05
  python train.py benchmark --recovery --classes 207 --shifts 0,10 --rotations 0,10 --compare appendix_c
"""


@dataclass
class BenchmarkSettings:
    """What a benchmark adds to the run settings. Defaults follow the paper's figure 5 (10 px right, 10° left)."""

    mode: str = "swap"  # swap: the sources of --data; recovery: generated images of known latents (recovery.py)
    shifts: list[int] = field(default_factory=lambda: [0, 10])  # recovery: pixels right, at the generator's size
    rotations: list[float] = field(default_factory=lambda: [0.0, 10.0])  # recovery: degrees counter-clockwise
    latents: int = 1  # recovery: known latents z_s per class
    judge: str = "auto"  # the IoU the statistics are computed on: optimized, heldout, or auto (held-out if loaded)
    print_config: bool = False  # print each variant's settings and exit (--print-config)

    RESULT_KEYS = ("mode", "shifts", "rotations", "latents")

    def validate(self) -> None:
        """Out-of-range settings are usage errors, before any work."""
        problems = []
        if self.mode not in MODES:
            problems.append(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.shifts or not all(isinstance(k, int) and not isinstance(k, bool) for k in self.shifts):
            problems.append(f"--shifts must be whole numbers of pixels (0,8,16), got {self.shifts!r}")
        if not self.rotations or not all(
            isinstance(t, (int, float)) and math.isfinite(t) and abs(t) <= 360 for t in self.rotations
        ):
            problems.append(f"--rotations must be degrees in [-360, 360] (0,15,30), got {self.rotations!r}")
        if self.judge not in JUDGES:
            problems.append(f"--judge must be one of {', '.join(JUDGES)}, got {self.judge!r}")
        if not isinstance(self.latents, int) or isinstance(self.latents, bool) or self.latents < 1:
            problems.append(f"--latents must be a whole number >= 1, got {self.latents!r}")
        for name, values in (("shifts", self.shifts), ("rotations", self.rotations)):
            if len(set(values)) != len(values):
                problems.append(f"--{name} lists a value twice: {values}")
        if problems:
            raise UsageError("; ".join(problems))


def _number_list(kind):
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers (0,8,16), got {text!r}") from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The run flags (shared by every variant) plus the benchmark's own."""
    d = BenchmarkSettings()
    p = run_parser(f"{prog_name()} benchmark")
    p.description = (
        "Run the same sources, classes and seeds under each --compare variant (separate runs under OUT/NAME/<variant>/,"
        " each resumable), then write compare.csv, compare.md, compare_curves.png and compare.html side by side. "
        "The run flags below are shared by every variant; a variant overrides any other setting, but data, masks, "
        "subject, classes, seed, restarts, steps, max-pixels and thresholds come from these flags only."
    )
    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    g = p.add_argument_group("benchmark")
    g.add_argument(
        "--compare",
        nargs="+",
        metavar="VARIANT",
        help="variants: YAML files, folders of them or a bundled folder "
        f"({', '.join(bundled_groups())}), key=value[,key=value...], or random (the random-search baseline: "
        "forward passes only, at the cost of the first other variant); none: the base settings alone",
    )
    g.add_argument(
        "--mode", choices=MODES, help=f"swap the --data sources, or the recovery experiment (default {d.mode})"
    )
    g.add_argument(
        "--recovery",
        dest="mode",
        action="store_const",
        const="recovery",
        help="same as --mode recovery: targets are generated images of known latents z_s, shifted and "
        "rotated; restart 0 starts at z_s, the others at random; default --loss bce_bg (paper, fig. 5)",
    )
    g.add_argument(
        "--shifts",
        type=_number_list(int),
        help=f"recovery: shifts right in generator pixels (default {','.join(map(str, d.shifts))})",
    )
    g.add_argument(
        "--rotations",
        type=_number_list(float),
        help=f"recovery: counter-clockwise rotations in degrees (default {','.join(f'{r:g}' for r in d.rotations)})",
    )
    g.add_argument("--latents", type=int, help=f"recovery: known latents per class (default {d.latents})")
    g.add_argument(
        "--judge",
        choices=JUDGES,
        help="the IoU the runtime statistics are computed on: optimized (the ensemble's), heldout (the held-out "
        "model's, per pair at the end only), or auto: heldout when every variant loads a held-out model "
        f"(default {d.judge})",
    )
    return p


def parse_args(argv: list[str] | None) -> tuple[BenchmarkSettings, list[Variant], list[dict[str, Any]]]:
    """(benchmark settings, variants, base layers: recovery defaults < --config file < flags), all checked."""
    args = vars(build_parser().parse_args(argv))
    own = {k: args.pop(k) for k in ("compare", "mode", "shifts", "rotations", "latents", "judge", "print_config")}
    settings = BenchmarkSettings(**{k: v for k, v in own.items() if k != "compare" and v is not None})
    settings.validate()
    if settings.mode == "swap":
        given = [f"--{k}" for k in ("shifts", "rotations", "latents") if own[k] is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to --recovery")
    config_file = args.pop("config")
    base: list[dict[str, Any]] = []
    if settings.mode == "recovery":
        if args.get("data") or args.get("masks"):
            raise UsageError("--recovery generates its sources: leave out --data and --masks")
        # the paper's figure 5 setting (appendix C) and its starts (restart 0 at z_s, the others random); a file or
        # flag overrides the loss, and best-of-N starts are refused below (they would replace those starts)
        base.append({"loss": "bce_bg", "starts": 0})
    base += [load_yaml(config_file) if config_file else {}, args]
    variants = parse_variants(own["compare"])
    settings.print_config = bool(own["print_config"])
    return settings, variants, base


def benchmark_dir(settings: BenchmarkSettings, base: list[dict[str, Any]]) -> Path:
    """`OUT/NAME`; the default name is `<data folder>-<generator>-benchmark` (`recovery-<generator>` in recovery)."""
    config = build_config(*base)
    if config.name:
        name = config.name
    elif settings.mode == "recovery":
        name = f"recovery-{Path(config.generator).name}"
    else:
        name = f"{default_run_name(config)}-benchmark"
    return Path(config.out) / name


def check_benchmark_dir(root: Path, settings: BenchmarkSettings) -> None:
    """Refuse to resume a benchmark folder made with other benchmark settings; record these ones."""
    saved = root / "benchmark.yaml"
    now = {k: v for k, v in asdict(settings).items() if k in BenchmarkSettings.RESULT_KEYS}
    if saved.exists():
        before = yaml.safe_load(saved.read_text()) or {}
        changed = [k for k in now if k in before and before[k] != now[k]]
        if changed:
            diffs = ", ".join(f"{k}: {before[k]!r} -> {now[k]!r}" for k in changed)
            raise UsageError(
                f"{root} holds a benchmark with other settings ({diffs}); pass --name to start a new one, "
                "or the same settings to resume it"
            )
    try:
        atomic_write_text(saved, yaml.safe_dump(now, sort_keys=False))
    except OSError as e:
        raise UsageError(f"cannot write to the output folder {root}: {e.strerror or e}; choose another --out") from None


def record_comparison(root: Path, variants: list[Variant], judge: str) -> None:
    """Add to `benchmark.yaml` what the comparison was made of (labels and folders, in order) and the judge it
    used, so `train.py report` can rebuild the pages from the folder alone."""
    saved = root / "benchmark.yaml"
    settings = (yaml.safe_load(saved.read_text()) or {}) if saved.exists() else {}
    settings["judge"] = judge
    settings["variants"] = [{"label": v.label, "folder": v.folder, "source": v.source} for v in variants]
    atomic_write_text(saved, yaml.safe_dump(settings, sort_keys=False))


def check_variant_dir(config: SwapConfig) -> None:
    """A variant folder that holds a run of other settings is an error now, before any variant runs."""
    from silhouette_lightning.run.job import check_run_dir
    from silhouette_lightning.run.machine import resolve_machine_defaults

    check_run_dir(resolve_machine_defaults(config))  # as run() will compare them


def variant_finished(config: SwapConfig) -> bool:
    """Whether a variant's run is complete: its plan's every trajectory recorded and its tables written, with the
    same sources as now (a source added to --data makes it run again, for the new pairs only)."""
    from silhouette_lightning.inputs.plan import plan_path, read_plan
    from silhouette_lightning.inputs.sources import discover_sources
    from silhouette_lightning.outputs.records import load_records

    run_dir = config.run_dir
    if not (plan_path(run_dir).exists() and (run_dir / "results.csv").exists()):
        return False
    plan = read_plan(run_dir)
    if config.data and plan.sources != [s.key for s in discover_sources(Path(config.data), subject=config.subject)]:
        return False
    done = load_records(run_dir).keys()
    return all(t.identity in done for t in plan.trajectories)


def recovery_data(config: SwapConfig, settings: BenchmarkSettings):
    """The data-module factory `run(data=...)` takes for the recovery experiment."""
    from silhouette_lightning.bench.recovery import RecoveryData

    def make(*, generator, ensemble, run_dir, classes_for, log):
        class_ids = classes_for(config.subject or "dog")  # --classes, else the subject's (the paper's dog's) defaults
        if not class_ids:
            raise UsageError(f"no default classes for subject {config.subject!r}: pass --classes")
        return RecoveryData(
            generator=generator,
            ensemble=ensemble,
            run_dir=run_dir,
            class_ids=class_ids,
            subject=config.subject,
            shifts=settings.shifts,
            rotations=settings.rotations,
            latents=settings.latents,
            restarts=config.restarts,
            steps=config.steps,
            seed=config.seed,
            truncation=config.truncation,
            seg_size=config.seg_size,
            ensemble_mode=config.ensemble,
            max_pixels=config.max_pixels,
            log=log,
        )

    return make


def with_random_search(variants: list[Variant], configs: list[SwapConfig]) -> list[SwapConfig]:
    """`--compare random` variants sized to the cost of the first other variant (variants.random_search_config)."""
    from silhouette_lightning.outputs.runtime import FORWARD_COST

    others = [c for v, c in zip(variants, configs, strict=True) if v.source != RANDOM_SEARCH]
    if not others and any(v.source == RANDOM_SEARCH for v in variants):
        raise UsageError(
            "--compare random is a baseline for another variant: give one more (e.g. --compare base random)"
        )
    return [
        random_search_config(c, others[0], FORWARD_COST) if v.source == RANDOM_SEARCH else c
        for v, c in zip(variants, configs, strict=True)
    ]


def overridden_flags(variants: list[Variant], flags: dict[str, Any]) -> list[str]:
    """One line per variant setting that replaces a flag the user typed (it would change the comparison silently)."""
    typed = {k: v for k, v in flags.items() if v is not None}
    return [
        f"benchmark: variant {v.label} ({v.source}) sets {k}: {v.layer[k]!r}, replacing --{k.replace('_', '-')} "
        f"{typed[k]!r} given on the command line"
        for v in variants
        for k in v.layer
        if k in typed and v.layer[k] != typed[k]
    ]


def warm_up(generator, ensemble, config: SwapConfig, log) -> bool:
    """One full latent step (forward and backward) of a small batch on the CPU before the first variant runs, so
    that the first calls' one-off costs are not in its seconds (they were 10x the others' on 2 cores); said apart.
    On a GPU nothing is done here (the model moves to the device inside the run; compiling stays in the first
    compiled variant's time)."""
    import time

    import torch

    from silhouette_lightning.engine.batching import step_fits
    from silhouette_lightning.run.machine import uses_gpu

    if uses_gpu(config.accelerator):
        return True
    start = time.perf_counter()
    step_fits(generator, ensemble, 2, torch.device("cpu"), truncation=config.truncation)
    log(f"benchmark: warm-up {time.perf_counter() - start:.1f} s (one-off costs, charged to no variant)")
    return True


def weights_of_every_variant(configs: list[SwapConfig], *, generator, ensemble, heldout_model) -> None:
    """Download (or find cached) the pretrained files every variant to run needs; one WeightsError naming every
    missing one (not only the first variant's) before the benchmark writes anything."""
    from silhouette_lightning.core.names import parse_ensemble_spec
    from silhouette_lightning.models.weights import ensure_weights, needed_files

    files = {}
    for c in configs:
        for f in needed_files(
            generator=c.generator if generator is None else None,
            segmenters=[n for n, _ in parse_ensemble_spec(c.segmenters)] if ensemble is None and c.pretrained else [],
            heldout=c.heldout if heldout_model is None and c.pretrained and c.heldout != "none" else None,
        ):
            files.setdefault(str(f.path), f)
    ensure_weights(list(files.values()))


def judge_of(judge: str, configs: list[SwapConfig]) -> str:
    """`--judge auto`: the held-out IoU when every variant scores with a held-out model, else the optimized one."""
    if judge != "auto":
        return judge
    return "heldout" if all(c.heldout != "none" for c in configs) else "optimized"


def run_benchmark(
    settings: BenchmarkSettings,
    variants: list[Variant],
    base: list[dict[str, Any]],
    *,
    log=None,
    generator=None,
    ensemble=None,
    heldout_model=None,
    **trainer_kwargs,
) -> Path:
    """Run every unfinished variant, then write the comparison (rank zero); returns the benchmark folder.

    Every variant's settings are checked before the first one runs. `generator` / `ensemble` / `heldout_model`:
    already loaded networks for every variant (tests); by default each variant loads its own, shared between
    variants that name the same ones.
    """
    from lightning.pytorch.utilities import rank_zero_only

    from silhouette_lightning.models.biggan import load_generator
    from silhouette_lightning.models.heldout import load_heldout
    from silhouette_lightning.models.segmenters import load_ensemble
    from silhouette_lightning.run.job import eprint, run

    log = log or eprint
    root = benchmark_dir(settings, base)
    configs = [variant_config(v, base, out=root) for v in variants]
    configs = with_random_search(variants, configs)
    for line in overridden_flags(variants, base[-1]):
        log(line)
    if settings.mode == "recovery":
        for variant, config in zip(variants, configs, strict=True):
            if config.starts > config.restarts:
                raise UsageError(
                    f"--starts {config.starts} (variant {variant.label}): best-of-N starts do not apply to "
                    "--recovery, whose restart 0 starts at the known latent z_s and the others at random "
                    "latents; leave --starts out"
                )
    if settings.mode == "swap" and not configs[0].data:
        raise UsageError("no data folder: pass --data DIR (photos, or masks with --masks), or --recovery")
    if settings.print_config:
        from silhouette_lightning.config.settings import config_yaml

        for variant, config in zip(variants, configs, strict=True):
            print(f"# variant {variant.label}: {config.run_dir}\n{config_yaml(config)}", end="")
        return root
    for config in configs:
        check_variant_dir(config)
    # Decided once, before any run: under DDP every rank re-runs this command and must make the same choices.
    finished = [not c.fresh and variant_finished(c) for c in configs]  # --fresh: every variant starts over
    weights_of_every_variant(
        [c for c, done in zip(configs, finished, strict=True) if not done],
        generator=generator,
        ensemble=ensemble,
        heldout_model=heldout_model,
    )  # every missing file named at once, before anything is written
    if rank_zero_only.rank == 0:
        check_benchmark_dir(root, settings)
    warmed = False
    generators: dict[str, Any] = {}
    ensembles: dict[tuple, Any] = {}
    heldouts: dict[tuple, Any] = {}
    for variant, config, done in zip(variants, configs, finished, strict=True):
        if done:
            log(f"benchmark: {variant.label} is complete in {config.run_dir}, skipped")
            continue
        log(f"benchmark: running {variant.label} -> {config.run_dir}")
        gen = generator if generator is not None else generators.get(config.generator)
        if gen is None:
            gen = generators[config.generator] = load_generator(config.generator)
        key = (config.segmenters, config.seg_size, config.pretrained)
        ens = ensemble if ensemble is not None else ensembles.get(key)
        if ens is None:
            ens = ensembles[key] = load_ensemble(config.segmenters, size=config.seg_size, pretrained=config.pretrained)
        key = (config.heldout, config.seg_size, config.pretrained)
        if heldout_model is None and key not in heldouts:
            heldouts[key] = load_heldout(config.heldout, size=config.seg_size, pretrained=config.pretrained)
        held = heldout_model if heldout_model is not None else heldouts[key]
        if not warmed:  # one-off costs (first calls, allocations) charged to no variant
            warmed = warm_up(gen, ens, config, log)
        data = recovery_data(config, settings) if settings.mode == "recovery" else None
        run(config, generator=gen, ensemble=ens, heldout_model=held, log=log, data=data, **trainer_kwargs)
    if rank_zero_only.rank == 0:
        from silhouette_lightning.bench.compare import write_comparison

        judge = judge_of(settings.judge, configs)
        pairs = [(v, c.run_dir) for v, c in zip(variants, configs, strict=True)]
        write_comparison(root, pairs, mode=settings.mode, judge=judge)
        record_comparison(root, variants, judge)
        log(f"comparison: {root / 'compare.md'}  (page: {root / 'compare.html'})")
    return root


def main(argv: list[str] | None = None) -> int:
    """`train.py benchmark ...`; exit code 0 done, 2 bad input or settings (one line, no traceback)."""
    try:
        settings, variants, base = parse_args(argv)
        run_benchmark(settings, variants, base)
    except (UsageError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
