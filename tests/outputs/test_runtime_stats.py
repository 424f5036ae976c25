"""outputs/runtime.py: runtime statistics against hand computations on hand-built trajectory records."""

import math

import pytest
import torch

from silhouette_lightning.outputs.runtime import (
    best_at_budget,
    bootstrap,
    budget_grid,
    ert,
    ert_by_pair,
    fixed_budget,
    heldout_curve,
    heldout_values,
    paired_difference,
    paired_differences,
    run_runtime,
    runs,
    runtime_ecdf,
    runtime_stats,
    runtime_to_target,
    runtimes,
    spent_units,
    start_units,
)

NAN = math.nan


def record(source, class_id, restart, history, stopped_at=-1, ended_at=-1):
    return {
        "source": source,
        "subject": "dog",
        "class_id": class_id,
        "restart": restart,
        "best_iou": max(v for v in history if v == v),
        "iou_history": torch.tensor(history),
        "stopped_at": stopped_at,
        "ended_at": ended_at,
        "seconds": 1.0,
    }


# Three trajectories of 4 steps (5 scores each):
# a: reaches 0.5 at step 2 and 0.9 at step 4, runs to the end (5 units);
# b: never above 0.45, runs to the end (5 units);
# c: pruned at step 2 (3 units), IoU frozen after; never reaches 0.5.
A = record("s1", 1, 0, [0.1, 0.4, 0.6, 0.6, 0.9])
B = record("s1", 1, 1, [0.2, 0.45, 0.3, 0.3, 0.3])
C = record("s2", 1, 0, [0.3, 0.35, 0.4, 0.4, 0.4], ended_at=2)


def test_start_units_share_the_candidates_among_the_restarts():
    assert start_units(32, 8, forward_cost=0.5) == 2.0  # 32 forward passes at half a unit, over 8 restarts
    assert start_units(32, 8, forward_cost=1 / 3) == pytest.approx(32 / 3 / 8)
    assert start_units(8, 8) == 0.0 and start_units(0, 8) == 0.0  # best-of-N off: no candidates scored


def test_runtime_and_spend_of_one_trajectory():
    assert runtime_to_target(A, 0.5) == 3.0  # step 2: three scores
    assert runtime_to_target(A, 0.5, start=2.0) == 5.0
    assert runtime_to_target(A, 0.6) == 3.0  # reaching the target exactly counts
    assert runtime_to_target(A, 0.9) == 5.0
    assert runtime_to_target(A, 0.95) == math.inf
    assert spent_units(A) == 5.0 and spent_units(A, 2.0) == 7.0
    assert spent_units(C) == 3.0  # pruned at step 2
    late = record("s3", 1, 0, [0.1, 0.2, 0.3, 0.3, 0.3], ended_at=2)
    assert runtime_to_target(late, 0.3) == 3.0 and runtime_to_target(late, 0.31) == math.inf
    # turned non-finite at step 1: it spent 2 units; its best is that of step 0
    dead = record("s3", 1, 1, [0.3, NAN, NAN, NAN, NAN], stopped_at=1)
    assert spent_units(dead) == 2.0 and runtime_to_target(dead, 0.3) == 1.0 and runtime_to_target(dead, 0.5) == math.inf


def test_ert_counts_the_units_of_unsuccessful_runs():
    trajectories = runs([A, B, C])
    # target 0.5: a succeeds after 3 units; b spends 5 and c 3 without success: (3 + 5 + 3) / 1
    assert ert(trajectories, 0.5) == 11.0
    # target 0.4: a after 2 (step 1), b after 2 (0.45 at step 1), c after 3 (step 2): (2 + 2 + 3) / 3
    assert ert(trajectories, 0.4) == pytest.approx(7 / 3)
    assert ert(trajectories, 0.95) == math.inf  # no success
    assert ert([], 0.5) == math.inf
    # with 2 units of candidate scoring each: (5 + 7 + 5) / 1
    assert ert(runs([A, B, C], start=2.0), 0.5) == 17.0


def test_ert_per_pair_over_its_restarts():
    rows = ert_by_pair(runs([A, B, C]), [0.5, 0.9])
    got = {(r["source"], r["target"]): (r["runs"], r["successes"], r["ert"]) for r in rows}
    assert got == {
        ("s1", 0.5): (2, 1, 8.0),
        ("s1", 0.9): (2, 1, 10.0),  # (3 + 5) / 1, (5 + 5) / 1
        ("s2", 0.5): (1, 0, math.inf),
        ("s2", 0.9): (1, 0, math.inf),
    }


def test_ecdf_counts_a_budget_equal_to_a_runtime_as_reached():
    # (run, target) runtimes for targets 0.5, 0.9: a 3 and 5, b and c never: 6 pairs
    rows = runtime_ecdf(runs([A, B, C]), [0.5, 0.9], budgets=[2.999, 3, 4, 4.999, 5, 100])
    assert [r["budget"] for r in rows] == [2.999, 3, 4, 4.999, 5, 100]
    assert [r["fraction"] for r in rows] == [0, 1 / 6, 1 / 6, 1 / 6, 2 / 6, 2 / 6]
    # the default grid runs from 1 unit to the largest spend, log-spaced
    grid = budget_grid(runs([A, B, C], start=2.0), points=5)
    assert grid[0] == 1.0 and grid[-1] == 7.0 and len(grid) == 5
    assert grid[2] == pytest.approx(math.sqrt(7.0))
    # target 0.2: b and c at their start (1 unit), a at step 1 (2 units)
    assert [r["fraction"] for r in runtime_ecdf(runs([A, B, C]), [0.2], budgets=[1, 2])] == [2 / 3, 1.0]


def test_fixed_budget_reads_the_best_so_far_at_the_budget():
    trajectories = runs([A, B, C], start=1.0)
    assert best_at_budget(trajectories[0], 1.5) is None  # before its first score
    assert best_at_budget(trajectories[0], 2.0) == pytest.approx(0.1)  # step 0
    assert best_at_budget(trajectories[0], 4.9) == pytest.approx(0.6)  # step 2
    assert best_at_budget(trajectories[2], 100) == pytest.approx(0.4)  # pruned: frozen at its last step
    rows = fixed_budget(trajectories, [1.0, 3.0, 6.0])
    assert rows[0] == {"budget": 1.0, "runs": 0, "mean_best_iou": None}
    assert rows[1]["runs"] == 3 and rows[1]["mean_best_iou"] == pytest.approx((0.4 + 0.45 + 0.35) / 3)  # step 1
    assert rows[2]["mean_best_iou"] == pytest.approx((0.9 + 0.45 + 0.4) / 3)  # a at step 4, the others final
    # by default: the first budget with a score (start + 1), 1-2-5 steps beyond, the largest spend
    assert [r["budget"] for r in fixed_budget(trajectories)] == [2.0, 5.0, 6.0]
    assert [r["budget"] for r in fixed_budget(runs([A, B, C], start=2.5))] == [3.5, 5.0, 7.5]


def test_heldout_judge_counts_a_pair_as_one_run_known_at_its_end():
    results = [
        {"source": "s1", "class_id": "1", "heldout_iou": "0.7", "status": "ok"},
        {"source": "s2", "class_id": "1", "heldout_iou": "0.2", "status": "ok"},
        {"source": "s3", "class_id": "1", "heldout_iou": "", "status": "ok"},
    ]
    heldout = heldout_values(results)
    assert heldout == {("s1", 1): 0.7, ("s2", 1): 0.2}
    pairs = runs([A, B, C], judge="heldout", heldout=heldout)
    assert [(r["pair"], r["spent"], r["final"]) for r in pairs] == [(("s1", 1), 10.0, 0.7), (("s2", 1), 3.0, 0.2)]
    assert run_runtime(pairs[0], 0.6) == 10.0 and run_runtime(pairs[0], 0.8) == math.inf
    assert ert(pairs, 0.6) == 13.0  # 10 units of s1 (success at its end) and 3 of s2
    assert best_at_budget(pairs[0], 9.0) is None and best_at_budget(pairs[0], 10.0) == 0.7
    with pytest.raises(ValueError, match="held-out IoU"):
        runs([A], judge="heldout")
    with pytest.raises(ValueError, match="judge must be"):
        runs([A], judge="best")


def test_heldout_judge_per_step_reads_the_scores_of_the_frame_steps():
    """With `heldout_history` (best so far scored at frame steps 0, 2, 4): one run per trajectory whose curve holds
    the last frame's score, the final answer's at its last step; not monotone; unknown before a first frame."""
    a = A | {"frame_steps": [0, 2, 4], "heldout_history": torch.tensor([0.1, 0.65, 0.55])}
    c = C | {"frame_steps": [0, 2, 4], "heldout_history": torch.tensor([0.2, 0.3, 0.3])}  # ended at step 2
    assert heldout_curve(a).tolist() == pytest.approx([0.1, 0.1, 0.65, 0.65, 0.55])
    assert heldout_curve(c).tolist() == pytest.approx([0.2, 0.2, 0.3])
    judged = runs([a, c], judge="heldout", start=1.0)  # the pair's final held-out IoU is not needed
    assert [(r["pair"], r["spent"], round(r["final"], 6)) for r in judged] == [
        (("s1", 1), 6.0, 0.55),
        (("s2", 1), 4.0, 0.3),
    ]
    assert run_runtime(judged[0], 0.6) == 1.0 + 2 + 1  # first reached at frame step 2, though it ends lower
    assert run_runtime(judged[0], 0.7) == math.inf and run_runtime(judged[1], 0.25) == 1.0 + 2 + 1
    assert runtimes(judged, [0.6, 0.25]).tolist() == [[4.0, 2.0 + 2], [math.inf, 4.0]]
    assert ert(judged, 0.6) == (4.0 + 4.0) / 1  # a up to its success, c all of its 4 units
    assert best_at_budget(judged[0], 3.0) == pytest.approx(0.1) and best_at_budget(judged[0], 6.0) == pytest.approx(
        0.55
    )

    one_frame = A | {"frame_steps": [4], "heldout_history": torch.tensor([0.7])}  # --frames 1: the last step only
    curve = heldout_curve(one_frame)
    assert curve[:4].isnan().all() and curve[4] == pytest.approx(0.7)
    (run,) = runs([one_frame], judge="heldout")
    assert best_at_budget(run, 3.0) is None and run_runtime(run, 0.6) == 5.0
    mixed = runs([a, C], judge="heldout", heldout={("s1", 1): 0.5, ("s2", 1): 0.4})  # C of an earlier version
    assert [r["curve"] for r in mixed] == [None, None], "without every per-step score: per pair, at the end"


def synthetic(values_per_pair, class_id=1):
    """Runs of the shape `runs` returns, one per value, each pair's values in one list."""
    return [
        {
            "source": f"s{p}",
            "class_id": class_id,
            "pair": (f"s{p}", class_id),
            "spent": 10.0,
            "final": v,
            "curve": None,
            "start": 0.0,
        }
        for p, values in enumerate(values_per_pair)
        for v in values
    ]


def test_bootstrap_point_estimates_are_the_plain_statistics():
    trajectories = runs([A, B, C])
    stats = bootstrap(trajectories, [0.4, 0.5, 0.95], resamples=200, seed=3)
    assert stats["mean_best_iou"][0] == pytest.approx((0.9 + 0.45 + 0.4) / 3)
    assert stats["success_rate"][0] == pytest.approx([1.0, 1 / 3, 0.0])
    assert stats["ert"][0] == pytest.approx([7 / 3, 11.0, math.inf])
    value, low, high = stats["ert"]
    assert low[1] <= value[1] <= high[1] and high[1] == math.inf  # a resample of s2 alone has no success
    assert low[2] == high[2] == math.inf


def test_bootstrap_resamples_pairs_with_their_trajectories():
    # pair 0: one trajectory at 0; pair 1: three at 1. Resampling pairs gives means 0, 3/4 or 1 only; resampling
    # trajectories would give k/4 (its 5% point is 1/2, its 2.5% point 1/4)
    sample = synthetic([[0.0], [1.0, 1.0, 1.0]])
    for level in (0.5, 0.9, 0.95):
        _, low, high = bootstrap(sample, [0.5], resamples=400, seed=0, level=level)["mean_best_iou"]
        assert low in (0.0, 0.75, 1.0) and high in (0.0, 0.75, 1.0), (level, low, high)
    assert bootstrap(sample, [0.5], resamples=400, seed=0)["mean_best_iou"] == (0.75, 0.0, 1.0)


def test_bootstrap_is_reproducible_with_its_seed():
    sample = synthetic([[v] for v in torch.rand(25, generator=torch.Generator().manual_seed(1)).tolist()])
    assert bootstrap(sample, resamples=300, seed=7) == bootstrap(sample, resamples=300, seed=7)
    assert (
        bootstrap(sample, resamples=300, seed=7)["mean_best_iou"]
        != bootstrap(sample, resamples=300, seed=8)["mean_best_iou"]
    )


def test_bootstrap_interval_covers_the_true_mean_at_about_its_level():
    generator = torch.Generator().manual_seed(0)
    covered = 0
    for repetition in range(200):  # uniform IoUs, true mean 0.5; 40 pairs of one trajectory
        sample = synthetic([[v] for v in torch.rand(40, generator=generator, dtype=torch.float64).tolist()])
        _, low, high = bootstrap(sample, [0.5], resamples=400, seed=repetition)["mean_best_iou"]
        covered += low <= 0.5 <= high
    assert 0.88 <= covered / 200 <= 0.99, covered


def test_paired_difference_sign_and_zero():
    base = [[v] for v in torch.rand(30, generator=torch.Generator().manual_seed(2), dtype=torch.float64).tolist()]
    a = synthetic(base)
    better = synthetic([[v + 0.1] for (v,) in base])
    rows = {(r["statistic"], r["target"]): r for r in paired_difference(a, better, [0.5], resamples=300)}
    mean = rows[("mean_best_iou", None)]
    assert mean["difference"] == pytest.approx(0.1) and mean["pairs"] == 30
    assert mean["low"] == pytest.approx(0.1) and mean["high"] == pytest.approx(0.1) and mean["excludes_zero"]
    rate = rows[("success_rate", 0.5)]
    expected = sum(v + 0.1 >= 0.5 for (v,) in base) / 30 - sum(v >= 0.5 for (v,) in base) / 30
    assert rate["difference"] == pytest.approx(expected) and rate["difference"] > 0
    worse = {(r["statistic"], r["target"]): r for r in paired_difference(better, a, [0.5], resamples=300)}
    assert worse[("mean_best_iou", None)]["difference"] == pytest.approx(-0.1)
    assert worse[("mean_best_iou", None)]["high"] < 0 and worse[("mean_best_iou", None)]["excludes_zero"]
    # a noisy difference with no shift: the interval spans zero
    noise = torch.randn(30, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.2
    shuffled = synthetic([[v + float(e - noise.mean())] for (v,), e in zip(base, noise, strict=True)])
    same = paired_difference(a, shuffled, [0.5], resamples=500)[0]
    assert same["difference"] == pytest.approx(0.0, abs=1e-12) and same["low"] < 0 < same["high"]
    assert not same["excludes_zero"]
    # only the pairs both variants ran are compared
    assert paired_difference(a[:10], better, [0.5], resamples=50)[0]["pairs"] == 10
    assert paired_difference(a[:10], better[10:], [0.5], resamples=50) == []


def test_runtime_stats_rows_per_scope():
    other = record("s1", 3, 0, [0.5, 0.6, 0.7, 0.8, 0.9])
    rows = runtime_stats(runs([A, B, C, other]), [0.5, 0.9], resamples=100)
    get = {(r["class"], r["statistic"], r["target"]): r for r in rows}
    assert [c for c in dict.fromkeys(r["class"] for r in rows)] == ["all", "1", "3"]
    assert get[("all", "runs", None)]["value"] == 4 and get[("all", "pairs", None)]["value"] == 3
    assert get[("1", "ert", 0.5)]["value"] == 11.0 and get[("3", "ert", 0.5)]["value"] == 1.0
    assert get[("all", "ert", 0.5)]["value"] == pytest.approx((3 + 5 + 3 + 1) / 2)
    assert get[("all", "successes", 0.9)]["value"] == 2 and get[("1", "success_rate", 0.9)]["value"] == pytest.approx(
        1 / 3
    )
    assert get[("1", "ert", 0.5)]["class_name"] == "goldfish"
    assert get[("all", "runs", None)]["low"] is None
    diffs = paired_differences(runs([A, B, C, other]), runs([A, B, C, other]), [0.5], resamples=50)
    assert [(r["class"], r["statistic"]) for r in diffs][:2] == [("all", "mean_best_iou"), ("all", "success_rate")]
    assert {r["class"] for r in diffs} == {"all", "1", "3"} and not any(r["excludes_zero"] for r in diffs)


def test_runtimes_of_many_runs_match_one_at_a_time():
    dead = record("s3", 1, 1, [0.3, NAN, NAN, NAN, NAN], stopped_at=1)
    for trajectories in (
        runs([A, B, C, dead], start=1.5),
        runs([A, B, C], judge="heldout", heldout={("s1", 1): 0.7, ("s2", 1): 0.2}),
    ):
        targets = [0.2, 0.3, 0.5, 0.7, 0.9, 0.95]
        table = runtimes(trajectories, targets)
        assert table.tolist() == [[run_runtime(r, t) for t in targets] for r in trajectories]
    assert runtimes(runs([A], start=1.5), [0.5, 0.95]).tolist() == [[4.5, math.inf]]
