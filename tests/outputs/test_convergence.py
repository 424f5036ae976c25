"""Convergence statistics: every number recomputed here, plainly, from the per-step records; then a real run
writes them (and keeps the histories through a resume)."""

import json
import random

import pytest
import torch
from conftest import interrupted_after_first_chunk, read_csv

from silhouette_lightning.outputs.convergence import by_scope, convergence_stats, log_convergence, read_convergence
from silhouette_lightning.outputs.records import load_records

THRESHOLDS = [0.5, 0.75, 0.9]
STEPS = 6


def synthetic_records(seed: int = 0) -> list[dict]:
    """Two subjects, three classes, several sources, three restarts; rising noisy IoU; some stopped rows."""
    rng = random.Random(seed)
    records = []
    for source, subject in [("dog/a.png", "dog"), ("dog/b.png", "dog"), ("cat/c.png", "cat")]:
        for class_id in (1, 7, 207):
            for restart in range(3):
                level = rng.uniform(0, 0.6)
                iou = [min(1.0, max(0.0, level + 0.08 * s + rng.uniform(-0.2, 0.2))) for s in range(STEPS + 1)]
                loss = [rng.uniform(0.1, 1.0) for _ in range(STEPS + 1)]
                stopped = -1
                if rng.random() < 0.15:  # non-finite from some step on: IoU and loss junk after it
                    stopped = rng.randrange(0, STEPS + 1)
                    for s in range(stopped, STEPS + 1):
                        iou[s], loss[s] = rng.choice([float("nan"), 0.99]), float("nan")
                records.append(
                    {
                        "source": source,
                        "subject": subject,
                        "class_id": class_id,
                        "restart": restart,
                        "seed": 0,
                        "stopped_at": stopped,
                        "iou_history": torch.tensor(iou),
                        "loss_history": torch.tensor(loss),
                        "seconds": rng.uniform(0.5, 2.0),
                    }
                )
    return records


# ---- the reference: plain Python, written from the definitions, not from convergence.py ----


def ref_best_so_far(record):
    best, out = 0.0, []
    for step, value in enumerate(record["iou_history"].tolist()):
        if record["stopped_at"] < 0 or step < record["stopped_at"]:
            best = max(best, value)
        out.append(best)
    return out


def ref_median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def ref_quantile(values, q):
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def ref_first(curve, t):
    for step, value in enumerate(curve):
        if value >= t:
            return step
    return None


def ref_scope(records):
    """Expected {(step, statistic): value} for one scope."""
    curves = [ref_best_so_far(r) for r in records]
    pairs = {}
    for r, c in zip(records, curves, strict=True):
        pairs.setdefault((r["source"], r["class_id"]), []).append(c)
    pair_curves = [[max(col) for col in zip(*cs, strict=True)] for cs in pairs.values()]
    out = {(None, "trajectories"): len(records), (None, "pairs"): len(pairs)}
    for t in THRESHOLDS:
        out[(None, f"success_rate@{t:g}")] = sum(c[-1] >= t for c in curves) / len(curves)
        out[(None, f"pair_success_rate@{t:g}")] = sum(c[-1] >= t for c in pair_curves) / len(pair_curves)
        for prefix, cs in (("steps_to", curves), ("pair_steps_to", pair_curves)):
            reached = [ref_first(c, t) for c in cs if ref_first(c, t) is not None]
            out[(None, f"{prefix}@{t:g}_count")] = len(reached)
            if reached:
                out[(None, f"{prefix}@{t:g}_median")] = ref_median(reached)
                out[(None, f"{prefix}@{t:g}_mean")] = sum(reached) / len(reached)
    seconds = [r["seconds"] for r in records]
    out[(None, "seconds_mean")] = sum(seconds) / len(seconds)
    out[(None, "seconds_total")] = sum(seconds)
    for step in range(STEPS + 1):
        column = [c[step] for c in curves]
        out[(step, "best_iou_mean")] = sum(column) / len(column)
        for q in (10, 50, 90):
            out[(step, f"best_iou_q{q}")] = ref_quantile(column, q / 100)
        out[(step, "pair_best_iou_mean")] = sum(c[step] for c in pair_curves) / len(pair_curves)
        losses = [r["loss_history"][step].item() for r in records if r["stopped_at"] < 0 or step < r["stopped_at"]]
        if losses:
            out[(step, "loss_mean")] = sum(losses) / len(losses)
    return out


def test_every_statistic_matches_a_plain_recomputation():
    records = synthetic_records()
    assert any(r["stopped_at"] == 0 for r in records) or any(r["stopped_at"] > 0 for r in records)
    rows = convergence_stats(records, THRESHOLDS)
    got: dict = {}
    for row in rows:
        got.setdefault((row["class"], row["subject"]), {})[(row["step"], row["statistic"])] = row["value"]
    scopes = {("all", "all"): records}
    for r in records:
        for scope in [(str(r["class_id"]), "all"), ("all", r["subject"]), (str(r["class_id"]), r["subject"])]:
            scopes.setdefault(scope, []).append(r)
    assert set(got) == set(scopes)
    for scope, members in scopes.items():
        expected = ref_scope(members)
        assert set(got[scope]) == set(expected), scope
        for key, value in expected.items():
            assert got[scope][key] == pytest.approx(value, abs=1e-9), (scope, key)
    # the definitions discriminate: some but not all trajectories succeed, and best-of-restarts is kinder
    overall = got[("all", "all")]
    assert 0 < overall[(None, "success_rate@0.75")] < overall[(None, "pair_success_rate@0.75")] < 1


def test_heldout_mean_is_over_the_scopes_scored_pairs():
    records = synthetic_records()
    pairs = sorted({(r["source"], r["class_id"]) for r in records})
    heldout = {pair: (i % 5) / 5 for i, pair in enumerate(pairs) if pair != ("dog/a.png", 7)}  # one pair unscored
    got = {
        (r["class"], r["subject"], r["statistic"]): r["value"]
        for r in convergence_stats(records, THRESHOLDS, heldout)
        if r["step"] is None
    }
    for c, subject in [("all", "all"), ("7", "all"), ("all", "dog"), ("207", "cat"), ("7", "dog")]:
        scored = [
            v
            for (source, class_id), v in heldout.items()
            if c in ("all", str(class_id)) and subject in ("all", source.split("/")[0])
        ]
        assert got[(c, subject, "heldout_iou_count")] == len(scored)
        assert got[(c, subject, "heldout_iou_mean")] == pytest.approx(sum(scored) / len(scored))
    assert got[("7", "dog", "heldout_iou_count")] == 1  # dog/b.png only
    unscored = convergence_stats(records, THRESHOLDS)
    assert not any(r["statistic"].startswith("heldout") for r in unscored)


def test_best_so_far_ends_at_the_records_best_iou():
    """The final best-so-far IoU is what the module reported as the trajectory's best (stopped rows: their
    best before stopping)."""
    record = synthetic_records()[0] | {
        "iou_history": torch.tensor([0.2, 0.6, 0.4, 0.9, 0.1]),
        "stopped_at": 3,
        "loss_history": torch.ones(5),
    }
    rows = convergence_stats([record], [0.5])
    curve = by_scope(rows)[("all", "all")]["curves"]["best_iou_mean"]
    assert curve == pytest.approx([0.2, 0.6, 0.6, 0.6, 0.6])


def test_records_without_histories_are_left_out():
    records = synthetic_records()
    old = {k: v for k, v in records[0].items() if k not in ("iou_history", "loss_history", "seconds")}
    assert convergence_stats([old]) == []
    assert convergence_stats([old, *records[1:]]) == convergence_stats(records[1:])


def test_tensorboard_gets_the_curves_of_each_class():
    class Recorder:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars.setdefault(tag, {})[step] = value

        def flush(self):
            pass

    rows = convergence_stats(synthetic_records(), THRESHOLDS)
    tb = Recorder()
    log_convergence(tb, rows)
    curve = tb.scalars["convergence/207_golden_retriever/best_iou_mean"]
    expected = by_scope(rows)[("207", "all")]["curves"]["best_iou_mean"]
    assert [curve[s] for s in range(STEPS + 1)] == expected
    assert "convergence/subject_cat/success_rate@0.9" in tb.scalars
    assert "convergence/all/best_iou_q90" in tb.scalars
    assert not any("subject" in t and "golden" in t for t in tb.scalars), "class x subject stays out of TB"


def test_run_writes_convergence_and_resume_keeps_histories(cli_args, tmp_path, monkeypatch):
    """A tiny run, interrupted after its first chunk and resumed, writes convergence.csv/json over all its
    trajectories (the first part's histories come back from its records), TensorBoard curves, plots and
    report.html."""
    from silhouette_lightning.cli import main

    args = cli_args("--save-images", "best", "--classes", "1", "--thresholds", "0.3,0.6", name="resumed")
    run_dir = tmp_path / "out" / "resumed"
    with interrupted_after_first_chunk(monkeypatch), pytest.raises(SystemExit):
        main(args)
    first_part = load_records(run_dir)
    assert len(first_part) == 4  # one chunk of --batch-size 4 out of 3 sources x 1 class x 2 restarts
    assert main(args) == 0

    records = load_records(run_dir)
    assert len(records) == 6
    for key, r in records.items():
        assert r["iou_history"].shape == r["loss_history"].shape == (3 + 1,)
        assert r["seconds"] > 0
        assert r["iou_history"][r["best_step"]].item() == pytest.approx(r["best_iou"])
        assert r["loss_history"][r["best_step"]].item() == pytest.approx(r["best_loss"])
        if key in first_part:
            assert torch.equal(r["iou_history"], first_part[key]["iou_history"])
    rows = read_convergence(run_dir)
    stats = {(r["class"], r["subject"], r["step"], r["statistic"]): r["value"] for r in rows}
    assert stats[("all", "all", None, "trajectories")] == 6
    assert stats[("1", "dog", None, "pairs")] == 3
    final = sum(r["best_iou"] for r in records.values()) / 6
    assert stats[("all", "all", 3, "best_iou_mean")] == pytest.approx(final, abs=1e-6)
    live_losses = [r["loss_history"][0].item() for r in records.values()]
    assert stats[("all", "all", 0, "loss_mean")] == pytest.approx(sum(live_losses) / 6, rel=1e-5)
    document = json.loads((run_dir / "convergence.json").read_text())
    assert document["thresholds"] == [0.3, 0.6]
    assert {(s["class"], s["subject"]) for s in document["scopes"]} == {(c, s) for c, s, _, _ in stats}
    assert list(read_csv(run_dir / "convergence.csv")[0]) == [
        "class",
        "class_name",
        "subject",
        "step",
        "statistic",
        "value",
    ]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_report import check_report

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    curve = {e.step: e.value for e in events.Scalars("convergence/1_goldfish/best_iou_mean")}
    assert curve == pytest.approx({s: stats[("1", "all", s, "best_iou_mean")] for s in range(4)}, abs=1e-6)
    assert "convergence/subject_dog/pair_success_rate@0.3" in events.Tags()["scalars"]
    for name in ("convergence_curves.png", "success_rates.png", "class_subject_iou.png"):
        assert (run_dir / "plots" / name).stat().st_size > 10_000
    page = check_report(run_dir)
    assert len(page.sources) == 6  # three plots, the two runtime figures and the contact sheet
    assert sum(h.startswith("swaps/") for h in page.links) == 3


@pytest.mark.parametrize("value", ["0,0.5", "1.5", ","])
def test_thresholds_out_of_range_exit_2(cli_args, value, capsys):
    from silhouette_lightning.cli import main

    assert main(cli_args("--thresholds", value)) == 2
    err = capsys.readouterr().err
    assert "--thresholds must be" in err and "Traceback" not in err
