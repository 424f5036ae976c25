"""Search options (search.py): the decisions on their own, then whole runs on tiny models against known-answer
silhouettes: each option off is the paper's search bit for bit, and on it keeps the one-answer invariant."""

from pathlib import Path

import pytest
import torch
from conftest import interrupted_after_first_chunk, read_csv
from PIL import Image

from silhouette_lightning.cli import main
from silhouette_lightning.config.settings import SwapConfig, build_config, views
from silhouette_lightning.core.classes import VOC_CLASSES
from silhouette_lightning.engine.module import SilhouetteSwap
from silhouette_lightning.engine.timing import StepClock
from silhouette_lightning.inputs.trajectories import initial_latents, trajectory_seed
from silhouette_lightning.outputs.records import load_records, regenerate
from silhouette_lightning.run.job import run
from silhouette_lightning.search.refill import pack_units, queue_units
from silhouette_lightning.search.starts import better_first, select_starts
from silhouette_lightning.search.stopping import PATIENCE, STOP_IOU, early_stop, prior_penalty, prune

SUBJECT = "sofa"  # the VOC channel the tiny colour segmenters see most in the tiny BigGAN's images


# --- the decisions on their own ----------------------------------------------------------------------------------


def test_select_starts_keeps_the_best_in_candidate_order():
    iou = torch.tensor([[0.2, 0.8, 0.8, 0.5, 0.9], [0.0, 0.0, 0.0, 0.0, 0.0]])
    loss = torch.tensor([[0.0, 0.3, 0.1, 0.0, 0.5], [0.4, float("nan"), 0.1, 0.1, 0.2]])
    # group 0: 0.9 (4), then 0.8 with lower loss (2); group 1: all IoU 0 -> loss 0.1 (2), 0.1 (3, higher index)
    assert select_starts(iou, loss, 2).tolist() == [[2, 4], [2, 3]]
    # NaN loss ranks last among equal IoUs; keeping all of them keeps candidate order
    assert select_starts(iou, loss, 4).tolist() == [[1, 2, 3, 4], [0, 2, 3, 4]]
    assert select_starts(iou, loss, 5).tolist() == [[0, 1, 2, 3, 4]] * 2


def test_prior_penalty_is_the_squared_distance_outside_the_box():
    z = torch.randn(5, 7, generator=torch.Generator().manual_seed(0)) * 1.5
    bound = 0.8
    expected = [sum(max(abs(v) - bound, 0.0) ** 2 for v in row) for row in z.tolist()]
    assert prior_penalty(z, bound).tolist() == pytest.approx(expected)
    inside = initial_latents([1, 2, 3], 7, truncation=0.4)  # the starts lie in the box by construction
    assert torch.equal(prior_penalty(inside, 2 * 0.4), torch.zeros(3))


def test_early_stop_reasons():
    best_iou = torch.tensor([0.96, 0.5, 0.5, 0.99])
    best_step = torch.tensor([3, 1, 4, 0])
    # at step 4: row 0 reached the target, row 1's best is 3 steps old, row 2 improved now, row 3 both (target wins)
    reason = early_stop(best_iou, best_step, 4, stop_iou=0.95, patience=3)
    assert reason.tolist() == [STOP_IOU, PATIENCE, 0, STOP_IOU]
    assert early_stop(best_iou, best_step, 4, stop_iou=None, patience=None).tolist() == [0, 0, 0, 0]
    assert early_stop(best_iou, best_step, 4, stop_iou=None, patience=3).tolist() == [0, PATIENCE, 0, PATIENCE]


def test_prune_keeps_the_better_half_of_each_group():
    best_iou = torch.tensor([0.1, 0.7, 0.7, 0.3, 0.9, 0.2, 0.4, 0.0])
    best_loss = torch.tensor([0.0, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
    restart = torch.tensor([0, 1, 2, 3, 0, 1, 2, 0])
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1, -1])  # group 1 has 3 restarts: 2 go on; padding is left alone
    assert prune(best_iou, best_loss, restart, group).tolist() == [True, False, False, True, False, True, False, False]
    # rows may come in any order: the decision is per group, by value, never by position
    order = torch.tensor([6, 3, 0, 7, 5, 1, 4, 2])
    assert torch.equal(
        prune(best_iou[order], best_loss[order], restart[order], group[order]),
        prune(best_iou, best_loss, restart, group)[order],
    )


def test_pack_units_never_splits_a_group():
    units = queue_units(["a"] * 3 + ["b"] * 3 + ["c"] * 2, list(range(8)), whole_groups=True)
    assert pack_units(units, 4) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert pack_units(units, 7) == [[0, 1, 2, 3, 4, 5], [6, 7]]
    assert pack_units(units, 8) == [list(range(8))]
    with pytest.raises(ValueError):
        pack_units(units, 2)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--starts", "-1"], "--starts"),
        (["--class-lr", "-1"], "--class-lr"),
        (["--prior-weight", "-0.5"], "--prior-weight"),
        (["--prior", "norm"], "--prior norm needs a --prior-weight above 0"),
        (["--stop-iou", "1.5"], "--stop-iou"),
        (["--patience", "0"], "--patience"),
        (["--prune-after", "3"], "--prune-after"),
    ],
)
def test_search_settings_out_of_range_exit_2(cli_args, flags, message, capsys):
    assert main(cli_args(*flags)) == 2  # cli_args: --restarts 2 --steps 3
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# --- whole runs on tiny models ------------------------------------------------------------------------------------


@pytest.fixture
def known_answers(tmp_path, tiny_generator, ensemble) -> Path:
    """Silhouettes of G(z*, class 1) for known z*: three mask files whose best answers exist."""
    module = SilhouetteSwap(tiny_generator, ensemble, **views(SwapConfig(), batch_size=1))
    z_star = initial_latents(list(range(24)), 8, 0.4)
    with torch.no_grad():
        maps = module.subject_maps(
            ensemble(module.generate(z_star, torch.ones(24, dtype=torch.long))),
            torch.full((24,), VOC_CLASSES.index(SUBJECT)),
        )
    masks = maps > 0.5  # [24, 32, 32]
    folder = tmp_path / "known" / SUBJECT
    folder.mkdir(parents=True)
    for k, i in enumerate(masks.float().mean((1, 2)).argsort(descending=True)[:3].tolist()):
        Image.fromarray(masks[i].to(torch.uint8).numpy() * 255).save(folder / f"t{k}.png")
    return folder.parent


class History:
    """Every trajectory's IoU at every step, by identity (read back from the run's records)."""

    def __init__(self, run_dir: Path) -> None:
        self.iou = {identity: r["iou_history"] for identity, r in load_records(run_dir).items()}


@pytest.fixture
def search_run(tmp_path, known_answers, tiny_generator, ensemble):
    """`search_run(name, **settings) -> (run folder, History)`: a run on the known answers, tiny models, CPU."""

    def go(name: str, callbacks=(), **settings):
        values = dict(
            data=str(known_answers),
            masks=True,
            classes=[1],
            restarts=2,
            starts=0,
            steps=4,
            seg_size=32,
            batch_size=4,
            accelerator="cpu",
            frames=3,
            save_images="none",
            image_every=0,
            heldout="none",
            out=str(tmp_path / "out"),
            name=name,
        )
        run_dir = run(
            build_config(values | settings),
            generator=tiny_generator,
            ensemble=ensemble,
            callbacks=callbacks,
            log=lambda *a: None,
            enable_progress_bar=False,
        )
        return run_dir, History(run_dir)

    return go


def _latent(run_dir: Path, row: dict) -> dict:
    return torch.load(run_dir / row["output_dir"] / "latent.pt", weights_only=True)


def test_best_of_n_with_n_equal_to_restarts_is_the_plain_search(search_run):
    plain, _ = search_run("plain", save_images="best")
    same, _ = search_run("n2", starts=2, save_images="best")  # scores its 2 candidates, keeps both in order
    rows = read_csv(plain / "results.csv")
    assert rows == read_csv(same / "results.csv")
    assert any(float(r["best_iou"]) > 0 for r in rows), "the known answers must give the search something to find"
    for row in rows:
        assert torch.equal(_latent(plain, row)["z"], _latent(same, row)["z"])


def test_best_of_n_starts_no_worse_and_whatever_the_batch(search_run):
    _, plain = search_run("plain")
    run_dir, best_of = search_run("n6", starts=6)
    groups = {identity[:2] for identity in plain.iou}
    better = 0
    for group in groups:
        plain_start = max(h[0].item() for identity, h in plain.iou.items() if identity[:2] == group)
        chosen_start = max(h[0].item() for identity, h in best_of.iou.items() if identity[:2] == group)
        assert chosen_start >= plain_start
        better += chosen_start > plain_start
    assert better, "6 candidates should beat 2 random starts somewhere (else the test shows nothing)"
    # each restart's seed is one of its group's candidates, each used once
    for (source, class_id, _), record in load_records(run_dir).items():
        candidates = [trajectory_seed(0, source, class_id, n) for n in range(6)]
        assert record["seed"] in candidates
    seeds = [r["seed"] for r in load_records(run_dir).values()]
    assert len(seeds) == len(set(seeds))
    other, _ = search_run("n6-b3", starts=6, batch_size=3)
    assert read_csv(other / "results.csv") == read_csv(run_dir / "results.csv")


def test_class_lr_zero_is_the_plain_search_and_positive_reports_the_nearest_class(search_run, tiny_generator):
    plain, _ = search_run("plain", save_images="best")
    zero, _ = search_run("zero", class_lr=0.0, save_images="best")
    assert read_csv(plain / "results.csv") == read_csv(zero / "results.csv")
    for row in read_csv(plain / "results.csv"):
        assert row["nearest_class"] == ""
        assert torch.equal(_latent(plain, row)["z"], _latent(zero, row)["z"])

    moved, _ = search_run("moved", class_lr=0.05, save_images="best")
    rows = read_csv(moved / "results.csv")
    assert [float(r["best_loss"]) for r in rows] != [float(r["best_loss"]) for r in read_csv(plain / "results.csv")]
    for row in rows:
        latent = _latent(moved, row)
        assert latent["class_vector"].shape == (10,)
        assert int(row["nearest_class"]) == int(latent["class_vector"].argmax())
        # the saved latent and class vector regenerate the result's picture (up to 8-bit rounding)
        saved = torch.from_numpy(__import__("numpy").array(Image.open(moved / row["output_dir"] / "best.png")))
        image = regenerate(latent, tiny_generator)
        assert (image.permute(1, 2, 0) - saved.float() / 255).abs().max() <= 0.5 / 255 + 1e-6


def test_prior_penalty_keeps_latents_nearer_the_truncation_region(search_run):
    settings = dict(lr=1.0, steps=6, frames=2)  # a large step throws plain latents far out of the box
    outside = {}
    for name, weight in (("free", 0.0), ("prior", 10.0)):
        run_dir, _ = search_run(name, prior_weight=weight, **settings)
        finals = torch.stack([r["frames"][-1] for r in load_records(run_dir).values()])  # z after the last step
        outside[name] = prior_penalty(finals, 2 * 0.4).mean().item()
    assert outside["free"] > 0.1, "the test needs latents that leave the box without the penalty"
    assert outside["prior"] < 0.5 * outside["free"]


def test_norm_prior_pulls_the_latent_norm_toward_its_typical_radius(search_run):
    """--prior norm (ReNO's): the final latents' norms end nearer sigma sqrt(Z - 1) than without it (a large
    learning rate throws them far from it)."""
    from silhouette_lightning.search.objective import NORM_SIGMA
    from silhouette_lightning.search.priors import norm_prior_mode

    mode = norm_prior_mode(8, NORM_SIGMA * 0.4)  # tiny BigGAN: Z = 8, truncation 0.4
    settings = dict(lr=0.3, steps=6, frames=2)
    distance = {}
    for name, extra in (("free", {}), ("norm", {"prior": "norm", "prior_weight": 1.0})):
        run_dir, _ = search_run(name, **settings, **extra)
        finals = torch.stack([r["frames"][-1] for r in load_records(run_dir).values()])
        distance[name] = (finals.norm(dim=1) - mode).abs().mean().item()
    assert distance["norm"] < 0.5 * distance["free"], distance


def test_norm_prior_through_the_cli_is_recorded(cli_args, tmp_path):
    assert main(cli_args("--prior", "norm", "--prior-weight", "0.01", "--save-images", "none")) == 0
    config = (tmp_path / "out" / "run" / "config.yaml").read_text()
    assert "prior: norm" in config and "prior_weight: 0.01" in config


def test_norm_prior_is_zero_at_its_mode_and_its_gradient_is_renos(tiny_generator, ensemble):
    """The objective's norm prior is ReNO's less a constant: zero at the mode radius, the same gradient."""
    from silhouette_lightning.search.objective import NORM_SIGMA, Objective
    from silhouette_lightning.search.priors import norm_prior, norm_prior_mode

    objective = Objective(
        tiny_generator, ensemble, views(SwapConfig(prior="norm", prior_weight=0.01), batch_size=1)["objective"]
    )
    sigma = NORM_SIGMA * 0.4
    at_mode = torch.zeros(1, 8)
    at_mode[0, 3] = norm_prior_mode(8, sigma)
    assert objective.prior(at_mode).abs().item() < 1e-5
    z = (torch.randn(4, 8, generator=torch.Generator().manual_seed(0)) * 0.7).requires_grad_()
    ours = torch.autograd.grad(objective.prior(z).sum(), z)[0]
    reno = torch.autograd.grad(norm_prior(z, weight=1.0, sigma=sigma).sum(), z)[0]
    assert torch.allclose(ours, reno) and (objective.prior(z.detach()) >= -1e-5).all()


def test_early_stop_freezes_a_trajectory_without_changing_its_past(search_run):
    _, plain = search_run("plain")
    run_dir, stopped = search_run("stop", stop_iou=0.5, patience=1)
    records = load_records(run_dir)
    reasons = {r["ended_by"] for r in records.values()}
    assert reasons - {""}, "some trajectory should stop early here"
    for identity, record in records.items():
        end = record["ended_at"] if record["ended_at"] >= 0 else 4
        past = plain.iou[identity][: end + 1]
        assert torch.equal(stopped.iou[identity][: end + 1], past)  # the same path until it stopped
        assert record["best_iou"] == pytest.approx(past.max().item())
        if record["ended_by"] == "stop_iou":
            assert past.max() >= 0.5 and (end == 0 or past[:-1].max() < 0.5)
        elif record["ended_by"] == "patience":
            assert record["ended_at"] - record["best_step"] == 1
        if record["ended_at"] >= 0:  # frozen afterwards: its IoU never changes again
            assert (stopped.iou[identity][end:] == stopped.iou[identity][end]).all()
    other, _ = search_run("stop-b3", stop_iou=0.5, patience=1, batch_size=3)
    assert read_csv(other / "results.csv") == read_csv(run_dir / "results.csv")


def test_pruning_stops_the_worse_half_and_keeps_the_rest_exact(search_run):
    _, plain = search_run("plain", restarts=4, batch_size=8)
    run_dir, pruned = search_run("pruned", restarts=4, batch_size=8, prune_after=2)
    records = load_records(run_dir)
    by_group: dict = {}
    for identity, record in records.items():
        by_group.setdefault(identity[:2], []).append((identity, record))
    for members in by_group.values():
        ended = [(i, r) for i, r in members if r["ended_by"] == "pruned"]
        kept = [(i, r) for i, r in members if r["ended_by"] != "pruned"]
        assert len(ended) == len(kept) == 2 and all(r["ended_at"] == 2 for _, r in ended)
        # the kept restarts were at least as good after 2 steps, and ran exactly as in the plain search
        assert min(plain.iou[i][:3].max() for i, _ in kept) >= max(plain.iou[i][:3].max() for i, _ in ended)
        for identity, _ in kept:
            assert torch.equal(pruned.iou[identity], plain.iou[identity])
    # whole groups per chunk: any batch size that holds a group gives the same table
    other, _ = search_run("pruned-b5", restarts=4, batch_size=5, prune_after=2)
    assert read_csv(other / "results.csv") == read_csv(run_dir / "results.csv")


def test_pruning_needs_a_batch_that_holds_a_group(cli_args, capsys, tmp_path):
    args = cli_args("--prune-after", "1")
    args[args.index("--batch-size") + 1] = "1"
    assert main(args) == 2
    assert "--batch-size >= --restarts" in capsys.readouterr().err
    assert not (tmp_path / "out" / "run").exists()  # refused before the run folder is written


def test_every_option_at_once_through_the_cli(cli_args, tmp_path):
    flags = [
        "--starts",
        "3",
        "--class-lr",
        "0.01",
        "--prior-weight",
        "1",
        "--stop-iou",
        "0.9",
        "--patience",
        "2",
        "--prune-after",
        "1",
        "--save-images",
        "best",
    ]
    assert main(cli_args(*flags)) == 0
    run_dir = tmp_path / "out" / "run"
    rows = read_csv(run_dir / "results.csv")
    assert len(rows) == 6 and all(r["status"] == "ok" and r["nearest_class"] != "" for r in rows)
    records = load_records(run_dir)
    assert sum(r["ended_by"] == "pruned" for r in records.values()) == 6  # one of each group's 2 restarts
    assert all((run_dir / r["output_dir"] / "latent.pt").exists() for r in rows)


def test_freed_rows_are_refilled_without_changing_any_result(search_run):
    """Early stop frees rows; pending trajectories take them at once, so the run takes fewer latent steps than
    chunks of 2 (3 chunks x 5 steps), and every result equals the run where all 6 trajectories share one chunk."""
    settings = dict(stop_iou=0.5, patience=1, save_images="best")
    alone, _ = search_run("one-chunk", batch_size=6, **settings)
    clock = StepClock()
    refilled, history = search_run("refilled", batch_size=2, callbacks=[clock], **settings)
    assert read_csv(refilled / "results.csv") == read_csv(alone / "results.csv")
    for row in read_csv(alone / "results.csv"):
        assert torch.equal(_latent(alone, row)["z"], _latent(refilled, row)["z"])
    records = load_records(refilled)
    assert any(r["ended_at"] >= 0 for r in records.values()), "the test needs trajectories that end early"
    lengths = [(r["ended_at"] if r["ended_at"] >= 0 else 4) + 1 for r in records.values()]  # steps each ran
    assert clock.summary()["batches"] < 3 * 5
    assert clock.summary()["batches"] >= -(-sum(lengths) // 2), "two rows cannot run more than 2 steps per step"


def test_pruned_groups_resume_to_the_same_answer(search_run, monkeypatch):
    """Pruned restarts free their rows at once but their records wait for the rest of their group: a run stopped
    after its first finished trajectories resumes to exactly the uninterrupted answer."""
    settings = dict(restarts=4, batch_size=8, prune_after=2)
    whole, _ = search_run("whole", **settings)
    with interrupted_after_first_chunk(monkeypatch), pytest.raises(SystemExit):
        search_run("stopped", **settings)
    first = load_records(whole.parent / "stopped")
    groups = {identity[:2] for identity in first}
    assert first and len(first) == 4 * len(groups) < 12, "whole groups written, not the pruned halves first"
    resumed, _ = search_run("stopped", **settings)
    assert read_csv(resumed / "results.csv") == read_csv(whole / "results.csv")


def test_pruning_ranks_restarts_that_already_ended(search_run):
    """A restart that stopped before the pruning step has left its row, but it still counts in its group's
    ranking (as when ended rows stayed frozen in the chunk): the pruned ones are the live rows in the worse half."""
    run_dir, _ = search_run("stop-and-prune", restarts=4, batch_size=8, prune_after=2, patience=1)
    records = load_records(run_dir)
    early = [r for r in records.values() if r["ended_by"] == "patience" and r["ended_at"] < 2]
    assert early, "the test needs restarts that stop before the pruning step"
    by_group: dict = {}
    for (source, class_id, restart), r in records.items():
        by_group.setdefault((source, class_id), []).append((restart, r))
    for members in by_group.values():
        iou, loss = [], []
        for _, r in members:  # best so far at step 2, as the module tracks it (highest IoU, ties to lower loss)
            end = min(2, r["ended_at"] if r["ended_at"] >= 0 else 2)
            history, losses = r["iou_history"][: end + 1], r["loss_history"][: end + 1]
            top = history.max()
            iou.append(float(top))
            loss.append(float(losses[history == top].min()))
        order = better_first(iou, loss, [restart for restart, _ in members])
        worse = {members[i][0] for i in order[2:]}
        for restart, r in members:
            stopped_by_patience = r["ended_by"] == "patience" and r["ended_at"] <= 2  # patience wins at step 2
            assert (r["ended_by"] == "pruned") == (restart in worse and not stopped_by_patience), (restart, r)
