"""One run, start to finish: check the inputs, load the frozen networks, fit the latents, write results."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException

from silhouette_lightning.config.checks import check_class_range, class_chooser
from silhouette_lightning.config.settings import SwapConfig, comparable, views
from silhouette_lightning.core.errors import UsageError
from silhouette_lightning.core.files import atomic_write_text
from silhouette_lightning.core.run_lock import first_process, run_folder_lock
from silhouette_lightning.engine.data import SwapData
from silhouette_lightning.engine.distributed import build_strategy
from silhouette_lightning.engine.estimate import RunEstimate
from silhouette_lightning.engine.module import SilhouetteSwap
from silhouette_lightning.engine.panels import ImagePanels
from silhouette_lightning.engine.progress import TrajectoryProgress
from silhouette_lightning.engine.tensorboard import ContinuedTensorBoardLogger, ReserveSteps
from silhouette_lightning.engine.writer import ResultWriter
from silhouette_lightning.inputs.sources import IMAGE_SUFFIXES, discover_sources
from silhouette_lightning.models.biggan import generator_origin, load_generator
from silhouette_lightning.models.heldout import load_heldout
from silhouette_lightning.models.segmenters import load_ensemble, parse_ensemble_spec
from silhouette_lightning.models.weights import ensure_weights, needed_files
from silhouette_lightning.run.lightning import (
    check_lightning_settings,
    die_with_parent,
    nodes_did_not_join,
    waiting_message,
)
from silhouette_lightning.run.machine import resolve_machine_defaults, use_compile_cache

# Exit codes of a run stopped before every pair is done (the shells' convention: 128 + the signal's number), so
# that SLURM, `timeout` and `&&` chains tell a stopped run from a finished one (0).
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
DETERMINISTIC_BATCH = 16  # --batch-size auto under --deterministic (the CPU's auto)

# Expected here and not actionable by a user: frozen networks stay in eval mode on purpose, the (chunk, step)
# items are made in the main process on purpose, and a short run logs every step on purpose. Filtered while a run
# runs (`quiet_expected_warnings`), never process-wide on import.
EXPECTED_WARNINGS = (
    ".*in eval mode.*",
    ".*treespec.*",
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",
    ".*`training_step` returned `None`.*",
    ".*sync_dist=True.*",
    ".*all_gather is deprecated.*",  # from inside Lightning's own gather (lightning/fabric/utilities/distributed.py)
)


@contextlib.contextmanager
def quiet_expected_warnings():
    """Within the block, the warnings of EXPECTED_WARNINGS are not shown; the filters are restored after."""
    with warnings.catch_warnings():
        for pattern in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


@contextlib.contextmanager
def quiet_lightning(verbose: bool = False):
    """Within the block, Lightning's own messages ("GPU available: ...", "Tip: ...", "`Trainer.fit` stopped: ...")
    are not shown unless `verbose`; its warnings and errors are. The loggers' levels are restored after."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def deterministic_mode(on: bool):
    """`--deterministic`: one intra-op thread (CPU reductions round with the thread count) and deterministic
    algorithms (on GPUs) within the block; restored after."""
    if not on:
        yield
        return
    threads, algorithms = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for determinism
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(algorithms)


def _silent(*args) -> None:
    pass


def eprint(*args) -> None:
    """Messages for the user go to stderr."""
    print(*args, file=sys.stderr, flush=True)


def clear_run_dir(run_dir: Path, log) -> None:
    """`--fresh`: empty a run folder (all but the lock this run holds) so that the run starts over. Only a folder
    that holds a run (config.yaml) or nothing is emptied: a mistyped --out must not lose other files."""
    if not run_dir.is_dir():
        return
    entries = [p for p in run_dir.iterdir() if p.name != ".lock"]
    if not entries:
        return
    if not (run_dir / "config.yaml").exists():
        raise UsageError(
            f"--fresh: {run_dir} holds files but no run (no config.yaml): not emptying it; choose another "
            "--out or --name"
        )
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    log(f"--fresh: emptied {run_dir} ({len(entries)} entries); starting over")


def check_run_dir(config: SwapConfig) -> None:
    """Refuse to mix results of different settings: `OUT/NAME` must be new or hold a run of these settings (or be
    replaced: `--fresh`)."""
    if config.fresh:
        return
    run_dir = config.run_dir
    saved = run_dir / "config.yaml"
    if saved.exists():
        before = yaml.safe_load(saved.read_text()) or {}
        now = config.result_settings()
        same_before, same_now = comparable(before), comparable(now)
        changed = sorted(
            k for k in now if k in before and same_before[k] != same_now[k] and k not in SwapConfig.RUNTIME_ONLY
        )
        if changed:
            diffs = ", ".join(f"{k}: {before[k]!r} -> {now[k]!r}" for k in changed)
            raise UsageError(
                f"{run_dir} holds a run with other settings ({diffs}); pass --name to start a new run, "
                "--fresh to replace this one, or the same settings to resume it"
            )


def prepare_run_dir(config: SwapConfig) -> Path:
    """Create `OUT/NAME`, refuse to mix results of different settings, write the resolved config."""
    run_dir = config.run_dir
    saved = run_dir / "config.yaml"
    check_run_dir(config)
    try:
        resolved = {k: v for k, v in comparable(config.to_dict()).items() if k in ("data", "generator")}
        atomic_write_text(saved, yaml.safe_dump(config.to_dict() | resolved, sort_keys=False))
    except OSError as e:
        raise UsageError(
            f"cannot write to the output folder {run_dir}: {e.strerror or e}; choose another --out"
        ) from None
    return run_dir


def nothing_swapped(skipped: list, results: Path) -> str:
    """The message of a run in which every source was skipped, with the first reason."""
    first = skipped[0]
    reason = f"{first.key}: {first.status.removeprefix('skipped: ')}"
    which = (
        f"all {len(skipped)} source files were skipped (first: {reason})"
        if len(skipped) > 1
        else (f"the only source file was skipped ({reason})")
    )
    return f"nothing could be swapped: {which}; each reason is in {results}"


def run(config: SwapConfig, **kwargs) -> Path:
    """Run a whole subject-swap job as configured; returns the run folder (results.csv, swaps/, ...).

    Keywords as `run_job`'s. Another run on the same folder at the same time is refused (run_lock.py).
    """
    with contextlib.ExitStack() as held:
        held.enter_context(quiet_expected_warnings())
        held.enter_context(quiet_lightning(config.verbose))
        held.enter_context(deterministic_mode(config.deterministic))
        return run_job(config, held, **kwargs)


def run_job(
    config: SwapConfig,
    held: contextlib.ExitStack,
    *,
    generator=None,
    ensemble=None,
    heldout_model=None,
    callbacks=(),
    log=eprint,
    data=None,
    **trainer_kwargs,
) -> Path:
    """The job of `run`; `held` keeps the run folder's lock until the caller's end.

    `generator` / `ensemble`: already loaded networks (tests, notebooks); by default loaded as configured.
    `data`: builds the data module instead of the sources of `--data` (the recovery benchmark generates its
    sources): called as `data(generator=, ensemble=, run_dir=, classes_for=, log=)`.
    `heldout_model`: an already loaded held-out segmenter (see heldout.py) standing for `config.heldout`.
    """
    die_with_parent()  # a DDP rank started by rank 0 ends with it
    node_log = log if os.environ.get("LOCAL_RANK", "0") == "0" else _silent  # one line per node
    if not first_process():
        log = _silent  # every rank runs this; the user reads rank 0's lines once
    config = resolve_machine_defaults(config)  # "auto" precision and compile: this machine's choice
    cluster = check_lightning_settings(config)
    strategy = build_strategy(config)  # before any work: a bad $SILHOUETTE_NODE_TIMEOUT is a usage error
    if data is None:
        if not config.data:
            raise UsageError("no data folder: pass --data DIR (photos, or masks with --masks)")
        sources = discover_sources(Path(config.data), subject=config.subject)
        if config.masks and any(s.subject is None and s.path.suffix.lower() in IMAGE_SUFFIXES for s in sources):
            raise UsageError(
                "--masks needs each mask's subject: pass --subject NAME, or put masks in folders named "
                "by subject (DIR/dog/*.png)"
            )
    classes_for = class_chooser(config)
    subjects = {s.subject for s in sources} if data is None else None
    if first_process():  # before any weights load: a second run on the folder fails at once
        held.enter_context(run_folder_lock(config.run_dir))
        if config.fresh:
            clear_run_dir(config.run_dir, log)
    if config.pretrained or generator is None:  # every missing file named at once, before any is loaded
        ensure_weights(
            needed_files(
                generator=config.generator if generator is None else None,
                segmenters=[n for n, _ in parse_ensemble_spec(config.segmenters)]
                if ensemble is None and config.pretrained
                else [],
                heldout=config.heldout
                if heldout_model is None and config.pretrained and config.heldout != "none"
                else None,
            )
        )
    if generator is None:
        generator = load_generator(config.generator)
    check_class_range(classes_for.ids_for(subjects), generator.config.num_classes)
    if ensemble is None:
        ensemble = load_ensemble(config.segmenters, size=config.seg_size, pretrained=config.pretrained)
    if heldout_model is None:
        heldout_model = load_heldout(config.heldout, size=config.seg_size, pretrained=config.pretrained)
    if config.compile != "none":
        use_compile_cache()
    run_dir = prepare_run_dir(config)
    if data is None:
        log(f"run folder: {run_dir}  ({len(sources)} source file(s))")

    batch_size = config.batch_size
    if batch_size == "auto" and config.deterministic:
        batch_size = DETERMINISTIC_BATCH  # a fixed chunk shape, whatever the device's memory
    if batch_size == "auto":
        from silhouette_lightning.engine.batching import auto_batch_size

        batch_size = auto_batch_size(generator, ensemble, config, log=log)
    if config.prune_after is not None and batch_size < config.restarts:
        raise UsageError(
            f"--prune-after compares a source and class's restarts within one batch: it needs "
            f"--batch-size >= --restarts ({config.restarts}), got {batch_size}"
        )
    module = SilhouetteSwap(generator, ensemble, **views(config, batch_size=batch_size), hparams=config.to_dict())
    if data is None:
        datamodule = SwapData(
            sources=sources,
            classes_for=classes_for,
            ensemble=ensemble,
            run_dir=run_dir,
            masks=config.masks,
            seg_size=config.seg_size,
            ensemble_mode=config.ensemble,
            restarts=config.restarts,
            steps=config.steps,
            seed=config.seed,
            max_pixels=config.max_pixels,
            data_dir=Path(config.data),
            fit=config.fit,
            log=log,
        )
    else:
        datamodule = data(generator=generator, ensemble=ensemble, run_dir=run_dir, classes_for=classes_for, log=log)
    data_dir = datamodule.data_dir
    writer = ResultWriter(
        run_dir,
        None,
        generator_spec=generator_origin(generator),
        truncation=config.truncation,
        save_images=config.save_images,
        data_dir=data_dir,
        max_pixels=config.max_pixels,
        blend=config.blend,
        fit=config.fit,
        thresholds=config.thresholds,
        heldout=heldout_model,
        heldout_name=config.heldout,
    )
    progress = [TrajectoryProgress()] if trainer_kwargs.get("enable_progress_bar", True) else []
    trainer = Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=strategy,
        precision=config.precision,
        max_epochs=1,
        use_distributed_sampler=False,
        log_every_n_steps=config.log_every,  # the module logs on the same steps
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        logger=ContinuedTensorBoardLogger(run_dir),
        callbacks=[
            *progress,
            RunEstimate(log),
            writer,
            ImagePanels(config.image_every, data_dir=data_dir, max_pixels=config.max_pixels, fit=config.fit),
            ReserveSteps(),
            *callbacks,
        ],
        **trainer_kwargs,
    )
    if config.num_nodes > 1:
        node_log(waiting_message(config, cluster))
    try:
        trainer.fit(module, datamodule=datamodule)
    except SystemExit as e:  # Lightning exits 1 on Ctrl-C and 0 (SIGTERMException) on SIGTERM
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        raise SystemExit(EXIT_SIGTERM if isinstance(e, SIGTERMException) else EXIT_SIGINT) from None
    except torch.distributed.DistError as e:  # the rendezvous (or a later collective) timed out
        if config.num_nodes > 1:
            raise nodes_did_not_join(config, cluster, e) from None
        raise
    if not datamodule.plan.trajectories:
        raise UsageError(nothing_swapped(datamodule.plan.skipped, run_dir / "results.csv"))
    if trainer.is_global_zero:
        report = run_dir / "report.html"
        seen = f"; report: {report}" if report.exists() else ""
        log(f"results: {run_dir / 'results.csv'}  (per class: {run_dir / 'classes.csv'}{seen})")
    return run_dir
