"""`hsc-search replay`: hand-made curves with known answers, the two curve sources, the command line.

No search: Ray Tune's scheduler classes are driven offline, in a few seconds; one test runs the same curves
through live Ray Tune to check that the offline driving decides as Ray's own controller does.
"""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
from typer.testing import CliRunner

from hsc_search.cli import app
from hsc_search.replay import (
    CANNOT_SHOW,
    Curves,
    ReplayError,
    Setting,
    curves_from_mlflow,
    curves_from_ray_dir,
    orders_for,
    parse_setting,
    quartiles,
    render,
    replay,
    replay_once,
)

FIFO = Setting("fifo")
ASHA_1_2 = parse_setting("asha:grace=1,rf=2")

# Four trials x four epochs (max mode). D is the best (0.99 at epoch 4) but the worst at epoch 1.
TINY = {
    "A": [0.5, 0.6, 0.7, 0.8],
    "B": [0.4, 0.5, 0.6, 0.7],
    "C": [0.6, 0.55, 0.9, 0.95],
    "D": [0.3, 0.9, 0.95, 0.99],
}


def test_fifo_trains_every_epoch_of_every_trial_in_any_order():
    curves = Curves.from_values(TINY)
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        for concurrency in (1, 2, 3):
            o = replay_once(curves, FIFO, order, concurrency=concurrency)
            assert o.epochs == 16 and o.trained == {"A": 4, "B": 4, "C": 4, "D": 4}
            assert (o.finished, o.stopped, o.best_seen, o.best_finished) == (4, 0, 0.99, 0.99)
    # one trial at a time in order A B C D: D reaches 0.99 (>= 0.99 - 0.005) at its 4th epoch, the 16th of all
    o = replay_once(curves, FIFO, [0, 1, 2, 3], concurrency=1)
    assert o.to_best == 16 and o.makespan == 16
    assert replay_once(curves, FIFO, [0, 1, 2, 3], concurrency=1, tolerance=0).to_best == 16  # reached exactly
    # within 0.05 of 0.99: C's 0.95 at its 4th epoch, the 12th of all
    assert replay_once(curves, FIFO, [0, 1, 2, 3], concurrency=1, tolerance=0.05).to_best == 12
    # two at a time: each of the 8 time units trains two epochs
    assert replay_once(curves, FIFO, [0, 1, 2, 3], concurrency=2).makespan == 8


def test_asha_epochs_trained_match_a_count_by_hand():
    """Ray's ASHA, grace 1, reduction factor 2, max_t 4: rungs at epochs 1, 2 (and 4); a trial reaching a rung
    is stopped when its value is strictly below the median (50th percentile, linear) of the values recorded
    there before it; its own value is recorded either way."""
    curves = Curves.from_values(TINY)
    # One at a time, order A B C D:
    #   A: rungs empty at epochs 1, 2 -> runs to epoch 4 (ASHA stops it at max_t)            4 epochs
    #   B: epoch 1, rung 1 {A .5}: .4 < .5 -> stop                                           1
    #   C: epoch 1, rung 1 {.5 .4} median .45: .6 goes on; epoch 2, rung 2 {A .6}: .55 stop  2
    #   D: epoch 1, rung 1 {.5 .4 .6} median .5: .3 < .5 -> stop                             1
    o = replay_once(curves, ASHA_1_2, [0, 1, 2, 3], concurrency=1)
    assert o.trained == {"A": 4, "B": 1, "C": 2, "D": 1}
    assert o.epochs == 8 and (o.finished, o.stopped) == (1, 3)
    assert o.best_seen == 0.8 and o.best_finished == 0.8 and math.isinf(o.to_best)  # D, the best, was stopped
    # Two at a time, order B A C D (results of one moment in start order):
    #   t1: B e1 rung 1 empty -> on (.4); A e1 {.4}: .5 on.  t2: B e2 rung 2 empty (.5); A e2 {.5}: .6 on
    #   t3: both on (no rung at 3).  t4: both end at max_t (4 + 4).  C and D start.
    #   t5: C e1 {.4 .5} median .45: .6 on; D e1 {.4 .5 .6} median .5: .3 stop              1
    #   t6: C e2 {.5 .6} median .55: .55 is not below -> on; t7, t8: C runs to the end        4
    o = replay_once(curves, ASHA_1_2, [1, 0, 2, 3], concurrency=2)
    assert o.trained == {"B": 4, "A": 4, "C": 4, "D": 1}
    assert o.epochs == 13 and o.makespan == 8 and o.best_seen == 0.95


def test_the_oracle_by_hand():
    """The oracle knows which trials reach the target: every trial trains `grace` epochs, except the first trial
    started that reaches it, which trains until it does."""
    curves = Curves.from_values(TINY)  # target 0.985: only D gets there, at epoch 4
    o = replay_once(curves, parse_setting("oracle"), [0, 1, 2, 3], concurrency=1)
    assert o.trained == {"A": 1, "B": 1, "C": 1, "D": 4} and o.to_best == 7 and o.epochs == 7
    # two at a time, D first: t1 D1 A1, t2 D2 B1, t3 D3 C1, t4 D4 (the 7th epoch of all reaches 0.99)
    o = replay_once(curves, parse_setting("oracle"), [3, 0, 1, 2], concurrency=2)
    assert o.trained == {"D": 4, "A": 1, "B": 1, "C": 1} and o.to_best == 7 and o.makespan == 4
    # within 0.05 (target 0.94) C (0.95 at epoch 4) and D (0.95 at epoch 3) get there; C starts first: it is
    # the one that trains on; D, after it, trains the grace epochs only
    o = replay_once(curves, parse_setting("oracle:grace=2"), [0, 1, 2, 3], concurrency=1, tolerance=0.05)
    assert o.trained == {"A": 2, "B": 2, "C": 4, "D": 2} and o.to_best == 8
    report = replay(curves, orders=20)  # in the default table, with the note that says what it is
    assert report.settings[-1].setting.label == "oracle:grace=1"
    assert any(n.startswith("oracle:grace=1 is a reference, not a rule") for n in report.notes)


def test_median_rule_by_hand():
    """Ray's median stopping rule, grace 1, one other trial needed: a trial stops when its best so far is below
    the median of the other trials' running means up to the same epoch (trials that got that far)."""
    curves = Curves.from_values(TINY)
    # One at a time, A B C D. A: nobody to compare with -> 4 epochs. B e1: median(A's .5) = .5 > .4 -> stop.
    # C e1: median(.5, .4) = .45 < .6 on; e2: A's mean(.5, .6) = .55 < .6; e3 .6 < .9; e4 -> 4 epochs.
    # D e1: median(.5, .4, .6) = .5 > .3 -> stop.
    o = replay_once(curves, parse_setting("median:grace=1,min_samples=1"), [0, 1, 2, 3], concurrency=1)
    assert o.trained == {"A": 4, "B": 1, "C": 4, "D": 1} and o.epochs == 10 and o.best_finished == 0.95


def test_hyperband_pauses_and_resumes_and_its_brackets_depend_on_concurrency():
    """Ray's HyperBand, max_t 4, eta 2: brackets of 3 trials at r=4, 3 at r=2 (then 2 at 4), 4 at r=1 (2 at 2,
    1 at 4). A trial that reaches its bracket's milestone before the others is PAUSED until they do; then the
    best n/eta go on (resumed) and the rest stop. Values: t_i is 0.1 * (3i mod 8) + 0.01 * epoch."""
    curves = Curves.from_values({f"t{i}": [0.1 * ((i * 3) % 8) + 0.01 * e for e in range(1, 5)] for i in range(8)})
    # Eight at once: t0-t2 (r=4) run to the end. t3 .1, t4 .4, t5 .7 (r=2): at epoch 2 t3 and t4 wait (PAUSE),
    # t5 arrives, ceil(3/2) = 2 go on: t4 (resumed) and t5; t3 stops at 2. t6 .2, t7 .5 (r=1, n=4, a bracket
    # that never filled): at epoch 1 t6 waits, ceil(4/2) = 2 keep both (t6 resumed); at epoch 2 t7 waits, t6
    # arrives, ceil(2/2) = 1 keeps t7: t6 stops at 2. 4+4+4+2+4+4+2+4 = 28 epochs.
    o = replay_once(curves, parse_setting("hyperband:rf=2"), list(range(8)), concurrency=8)
    assert o.trained == {"t0": 4, "t1": 4, "t2": 4, "t3": 2, "t4": 4, "t5": 4, "t6": 2, "t7": 4}
    assert o.epochs == 28 and o.pauses >= 4 and o.forced == 0
    # Two at a time (max_concurrent_trials=2: Ray's ConcurrencyLimiter counts paused trials as live): the
    # first bracket (3 trials, r=4) never fills, so every trial joins it and runs its full budget, as FIFO.
    o = replay_once(curves, parse_setting("hyperband:rf=2"), list(range(8)), concurrency=2)
    assert o.epochs == 32 and o.pauses > 0 and o.forced == 0
    # ... which the report says, naming the concurrency that lets the other brackets fill (one more than 3)
    hb = [parse_setting("hyperband:rf=2")]
    notes = lambda k: " ".join(replay(curves, hb, orders=1, concurrency=k).notes)  # noqa: E731
    assert "replay with --concurrency 4 or more" in notes(3) and "HyperBand" not in notes(4)


def test_the_controller_stub_ends_trials_as_tune_controller_does():
    """TuneController.stop_trial: a RUNNING trial completes (on_trial_complete with its last result), a PAUSED
    or PENDING one is removed (on_trial_remove); either ends TERMINATED, once."""
    from hsc_search.replay import _Controller, ray_offline_parts

    parts = ray_offline_parts()
    calls = []

    class Recorder:
        def on_trial_complete(self, ctrl, trial, result):
            calls.append(("complete", trial.trial_id, result))

        def on_trial_remove(self, ctrl, trial):
            calls.append(("remove", trial.trial_id))

    ctrl = _Controller(parts, Recorder(), {"a": {"epoch": 3, "m": 0.5}})
    a, b = parts.fake_trial("a"), parts.fake_trial("b")
    ctrl.trials += [a, b]
    a.set_status(parts.RUNNING)
    b.set_status(parts.PAUSED)
    assert ctrl.get_live_trials() == {a, b}
    for t in (a, b, a):
        ctrl.stop_trial(t)
    assert calls == [("complete", "a", {"epoch": 3, "m": 0.5}), ("remove", "b")]
    assert a.status == b.status == parts.TERMINATED and ctrl.get_live_trials() == set()


def test_asha_trains_fewer_epochs_and_still_finds_an_obvious_best():
    """The best trial leads from epoch 1: in every order ASHA never stops it, so it finds the best, with
    strictly fewer epochs than FIFO (the clearly worse trials stop at their first rung, unless first)."""
    curves = Curves.from_values({f"t{i}": [0.1 * i + 0.01 * e for e in range(1, 9)] for i in range(8)})
    best = curves.best
    assert best == ("t7", pytest.approx(0.78))
    report = replay(curves, [FIFO, ASHA_1_2, parse_setting("asha:grace=2,rf=3")], orders=30, seed=1)
    fifo, *ashas = report.settings
    assert all(o.epochs == 64 and o.best_seen == best[1] for o in fifo.outcomes)
    for x in ashas:
        for f, o in zip(fifo.outcomes, x.outcomes):
            assert o.epochs < f.epochs
            assert o.best_seen == best[1] and o.best_finished == best[1]
            assert math.isfinite(o.to_best) and o.to_best <= f.to_best
        assert x.reached == 1.0 and x.fifo_ratio_trained > 1.0


def test_orders_are_reproducible_with_a_seed():
    assert orders_for(10, 5, seed=3) == orders_for(10, 5, seed=3)
    assert orders_for(10, 5, seed=3) != orders_for(10, 5, seed=4)
    assert all(sorted(p) == list(range(10)) for p in orders_for(10, 5, seed=3))
    import numpy as np

    curves = Curves.from_values({f"t{i}": [((i * 7) % 5) / 10 + 0.02 * e for e in range(1, 7)] for i in range(10)})
    two_brackets = parse_setting("asha:grace=1,rf=2,brackets=2")  # draws each trial's bracket at random
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = replay(curves, [FIFO, two_brackets], orders=12, seed=5)
    assert (np.random.get_state()[1] == before).all()  # numpy's global generator is left as it was
    b = replay(curves, [FIFO, two_brackets], orders=12, seed=5)
    c = replay(curves, [FIFO, two_brackets], orders=12, seed=6)
    per_order = lambda r: [(o.epochs, o.trained) for x in r.settings for o in x.outcomes]  # noqa: E731
    assert per_order(a) == per_order(b)
    assert per_order(a) != per_order(c)
    np.random.seed(7)  # the bracket draws come from the replay's seed, not from whatever numpy's state was
    assert per_order(replay(curves, [two_brackets], orders=12, seed=5)) == per_order(a)


def test_the_same_seed_gives_the_same_table_whichever_order_the_source_lists_trials_in():
    """MLflow lists a search's trials by start time, its Ray folder by one-second timestamps then id: the same seed
    permuted two lists and gave two tables of one search (a walkthrough)."""
    from hsc_search.replay import table_rows

    values = {f"t{i}": [((i * 7) % 5) / 10 + 0.02 * e for e in range(1, 7)] for i in range(10)}
    listed = Curves.from_values(values)
    other = Curves.from_values(dict(reversed(list(values.items()))))
    assert [t.trial_id for t in listed.trials] != [t.trial_id for t in other.trials]
    settings = [FIFO, ASHA_1_2, parse_setting("asha:grace=1,rf=2,brackets=2"), parse_setting("median")]
    a, b = (table_rows(replay(c, settings, orders=15, seed=2)) for c in (listed, other))
    assert a == b, (a, b)


def test_quartiles_and_never_reached():
    assert quartiles([1, 2, 3, 4, 5]) == (2, 3, 4)
    assert quartiles([1, 2, math.inf, math.inf]) == (1.75, math.inf, math.inf)
    assert all(math.isnan(q) for q in quartiles([math.nan]))


def test_setting_specs():
    assert parse_setting("asha:grace=2,rf=3").label == "asha:grace=2,rf=3,brackets=1"
    assert parse_setting(" hyperband ").label == "hyperband:rf=3"
    assert parse_setting("median:min_samples=2").label == "median:grace=1,min_samples=2"
    for bad, culprit in [("ashaa", "unknown rule 'ashaa'"), ("asha:grace=x", "grace=x is not an integer"),
                         ("asha:speed=2", "'speed=2' is not KEY=VALUE"), ("fifo:rf=2", "fifo takes no options"),
                         ("fifo,asha", "give --settings once per rule: --settings fifo --settings asha:grace=2"),
                         ("asha:grace=2,median", "'median' is not KEY=VALUE with a key of asha (grace, rf, brackets) "
                                                 "(give --settings once per rule"),
                         ("asha:grace=1.5", "not an integer"), ("asha:rf", "'rf' is not KEY=VALUE")]:  # fmt: skip
        with pytest.raises(ReplayError, match="bad --settings") as e:
            parse_setting(bad)
        assert culprit in str(e.value)
    with pytest.raises(ReplayError, match=r"'asha:grace=5'.*between 1 and the curves' 4 epochs"):
        replay(Curves.from_values(TINY), [parse_setting("asha:grace=5")], orders=1)
    with pytest.raises(ReplayError, match="rf=1 must be above 1"):
        replay(Curves.from_values(TINY), [parse_setting("hyperband:rf=1")], orders=1)
    # the default settings leave out the rules whose grace period is the curves' epochs or more: they stop nothing
    # (three rows equal to FIFO's, on a 3-epoch search: a walkthrough)
    from hsc_search.replay import default_settings

    for epochs, graces in ((3, {1, 2}), (4, {1, 2, 3}), (2, {1}), (1, set())):
        got = default_settings(epochs)
        assert {s.opts["grace"] for s in got if s.rule in ("asha", "median")} == graces, (epochs, got)
        assert {"fifo", "oracle"} <= {s.rule for s in got}, (epochs, got)


def _write_lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _ray_folder(root, complete_only: bool = False):
    """A hand-written search folder: hsc_search.json (3 epochs), t_plain (a line per epoch), t_batch (epochs 1-2
    in one line's hsc/epochs_json, epoch 3 plain), t_short (stopped at epoch 1), started in that order; with
    `complete_only`, without t_short and finished."""
    root.mkdir(parents=True)
    meta = {"settings": {"metric": "val/map_avg", "mode": "max", "max_epochs": 3}}
    if complete_only:  # a search that finished (the other one has not: t_short may have been cut off)
        meta["finished_at"] = "2026-12-03 12:00:00"
    (root / "hsc_search.json").write_text(json.dumps(meta))
    _write_lines(root / "t_plain" / "result.json", [
        {"epoch": e, "val/map_avg": v, "time/epoch_s": 2.0, "timestamp": 1000 + e, "time_total_s": e}
        for e, v in [(1, 0.2), (2, 0.3), (3, 0.4)]])  # fmt: skip
    (root / "t_plain" / "params.json").write_text(json.dumps({"lr": 0.01, "topk": 4}))
    batch = [{"epoch": 1, "val/map_avg": 0.25, "time/epoch_s": 1.0}, {"epoch": 2, "val/map_avg": 0.5,
                                                                        "time/epoch_s": 1.0}]  # fmt: skip
    _write_lines(root / "t_batch" / "result.json", [
        {"epoch": 2, "val/map_avg": 0.5, "hsc/epochs_json": json.dumps(batch), "timestamp": 1004, "time_total_s": 2},
        {"epoch": 3, "val/map_avg": 0.45, "time/epoch_s": 1.0, "timestamp": 1005, "time_total_s": 3}])  # fmt: skip
    if not complete_only:
        _write_lines(root / "t_short" / "result.json", [{"epoch": 1, "val/map_avg": 0.9, "timestamp": 1010,
                                                         "time_total_s": 1}])  # fmt: skip
    return root


def test_curves_from_a_ray_results_folder(tmp_path):
    curves = curves_from_ray_dir(_ray_folder(tmp_path / "search"))
    assert (curves.metric, curves.mode, curves.max_epochs) == ("val/map_avg", "max", 3)
    assert [t.trial_id for t in curves.trials] == ["t_plain", "t_batch"]  # start order: 1000, 1002
    assert curves.trials[0].values == [0.2, 0.3, 0.4] and curves.trials[1].values == [0.25, 0.5, 0.45]
    assert curves.trials[0].params == {"lr": "0.01", "topk": "4"}
    assert curves.trials[0].epoch_s == [2.0, 2.0, 2.0] and curves.trials[1].epoch_s == [1.0, 1.0, 1.0]
    # the folder's search did not finish (no finished_at): stopped by ASHA, or cut off with its search
    assert curves.skipped == {"t_short": "ended at epoch 1 of 3 (stopped early or cut off: its search did not finish)"}
    assert curves.best == ("t_batch", 0.5)
    # recorded seconds: t_plain (2 s/epoch) and t_batch (1 s/epoch) side by side
    o = replay_once(curves, FIFO, [0, 1], concurrency=2, timing="recorded")
    assert o.makespan == 6.0 and o.time_to_best == 2.0 and o.to_best == 3  # t_plain e1 (t=2) after t_batch e1, e2
    unfinished = ("warning: the recorded search did not finish (interrupted, or still running): only the trials it "
                  "got to are replayed; replay it once `hsc-search resume` has finished it")  # fmt: skip
    assert curves.finished is False and unfinished in render(replay(curves, [FIFO], orders=2))
    meta = json.loads((tmp_path / "search" / "hsc_search.json").read_text())
    (tmp_path / "search" / "hsc_search.json").write_text(json.dumps({**meta, "finished_at": "2026-12-03 12:00:00"}))
    curves = curves_from_ray_dir(tmp_path / "search")
    assert curves.skipped == {"t_short": "ended at epoch 1 of 3 (stopped early)"} and curves.finished is True
    assert unfinished not in render(replay(curves, [FIFO], orders=2))
    (tmp_path / "search" / "hsc_search.json").unlink()  # a folder without our record: not known either way
    curves = curves_from_ray_dir(tmp_path / "search")
    assert curves.finished is None and unfinished not in render(replay(curves, [FIFO], orders=2))
    assert curves.skipped == {"t_short": "ended at epoch 1 of 3 (stopped early or cut off: the folder has no search "
                                         "record to tell)"}  # fmt: skip
    # a record from before finished_at was written: finished when every one of its num_samples trials ran through
    old = _ray_folder(tmp_path / "old", complete_only=True)
    meta = json.loads((old / "hsc_search.json").read_text())
    del meta["finished_at"]
    for n, finished in ((2, True), (3, False)):
        (old / "hsc_search.json").write_text(json.dumps({**meta, "settings": {**meta["settings"], "num_samples": n}}))
        assert curves_from_ray_dir(old).finished is finished


def test_curves_from_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("hsc-search")
    parent = client.create_run(exp, run_name="s1", tags={"hsc.kind": "search"}).info.run_id
    for k, v in {"metric": "val/map_avg", "mode": "max", "max_epochs": "3"}.items():
        client.log_param(parent, k, v)
    curves = {"c1": [0.1, 0.2, 0.3], "c2": [0.4, 0.35, 0.6], "c3": [0.2]}
    for i, (tid, values) in enumerate(curves.items()):
        run = client.create_run(exp, run_name=f"trial_{tid}", start_time=1000 + i, tags={
            "mlflow.parentRunId": parent, "hsc.kind": "trial", "hsc.trial_id": tid,
            "hsc.outcome": "completed" if len(values) == 3 else "stopped_early"}).info.run_id  # fmt: skip
        client.log_param(run, "lr", str(0.01 * (i + 1)))
        for e, v in enumerate(values, 1):
            client.log_metric(run, "val/map_avg", v, step=e)
    got = curves_from_mlflow(uri, "hsc-search", parent)
    assert [(t.trial_id, t.values) for t in got.trials] == [("c1", [0.1, 0.2, 0.3]), ("c2", [0.4, 0.35, 0.6])]
    assert got.trials[1].params == {"lr": "0.02"} and got.max_epochs == 3
    assert got.skipped == {"c3": "ended at epoch 1 of 3 (stopped early)"}
    assert got.finished is False  # its parent run is still RUNNING
    client.set_terminated(parent)
    assert curves_from_mlflow(uri, "hsc-search", parent).finished is True
    assert curves_from_mlflow(uri, "hsc-search", None).trials == got.trials  # the latest search by default
    with pytest.raises(ReplayError, match="--run-id nope: no such run at"):
        curves_from_mlflow(uri, "hsc-search", "nope")
    with pytest.raises(ReplayError, match="experiment 'other' not found"):
        curves_from_mlflow(uri, "other", None)
    lone = client.create_run(exp, run_name="lone", tags={"hsc.kind": "search"}).info.run_id
    with pytest.raises(ReplayError, match="has no trial runs"):
        curves_from_mlflow(uri, "hsc-search", lone)
    # a trial copied twice into a store (an import cut short, before 2026-12-04): named, not an IndexError
    first = client.search_runs([exp], filter_string="tags.`hsc.trial_id` = 'c2'")[0].info.run_id
    twin = client.create_run(exp, run_name="trial_c2", start_time=5000, tags={
        "mlflow.parentRunId": parent, "hsc.kind": "trial", "hsc.trial_id": "c2"}).info.run_id  # fmt: skip
    with pytest.raises(ReplayError, match=f"search run {parent}: runs {first} and {twin} are both trial c2"):
        curves_from_mlflow(uri, "hsc-search", parent)


def test_cli_replays_a_ray_folder_and_writes_json(tmp_path):
    root = _ray_folder(tmp_path / "search")
    out = tmp_path / "r.json"
    args = ["--ray-dir", str(root), "--orders", "4", "--settings", "fifo asha:grace=1,rf=2", "--settings", "median"]
    result = CliRunner().invoke(app, ["replay", *args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rows = [ln for ln in lines if ln.startswith("| ")]
    assert rows[0].split("|")[1].strip() == "setting" and len(rows) == 5  # header, rule, 3 settings
    assert [r.split("|")[1].strip() for r in rows[2:]] == ["fifo", "asha:grace=1,rf=2,brackets=1",
                                                           "median:grace=1,min_samples=3"]  # fmt: skip
    assert "1 of 3 trials left out" in result.output and "\n" + CANNOT_SHOW in result.output
    assert "cannot show: A replay cannot show" not in result.output  # said once
    # a search whose scheduler ended trials early is said to be one before the table, not only in the notes
    warn = [i for i, ln in enumerate(lines) if ln.startswith("warning: 1 of 3 trials are left out")]
    assert len(warn) == 1 and warn[0] < lines.index(rows[0]) and "--scheduler fifo" in lines[warn[0]]
    whole = CliRunner().invoke(app, ["replay", "--ray-dir", str(_ray_folder(tmp_path / "fifo", complete_only=True)),
                                     "--orders", "4", "--settings", "fifo"])  # fmt: skip
    assert whole.exit_code == 0, whole.output
    assert "left out" not in whole.output and "did not finish" not in whole.output  # (its 2 curves: said as few)
    assert [ln for ln in whole.output.splitlines() if ln.startswith("warning:")] == [
        "warning: only 2 complete curves: a stopping rule has next to nothing to choose between, so the rows barely "
        "differ; replay a search of more trials (a FIFO search of 8 or more, say)"], whole.output
    doc = json.loads(out.read_text())
    assert doc["orders"] == 4 and doc["max_epochs"] == 3 and doc["best_recorded"] == {"trial_id": "t_batch",
                                                                                     "score": 0.5}  # fmt: skip
    fifo = doc["settings"][0]
    assert fifo["setting"] == "fifo" and fifo["epochs"]["per_order"] == [6, 6, 6, 6]
    # params as the values they were, not the text MLflow (and our read of params.json) holds them as
    trial = {t["trial_id"]: t for t in doc["trials"]}
    assert trial["t_plain"]["params"] == {"lr": 0.01, "topk": 4} and type(trial["t_plain"]["params"]["topk"]) is int
    assert trial["t_batch"]["params"] == {}


@pytest.mark.parametrize("args, culprit", [
    (["--settings", "asha:grace=x"], "bad --settings 'asha:grace=x'"),
    (["--settings", "fifo bogus"], "unknown rule 'bogus'"),
    (["--settings", "asha:grace=9"], "'asha:grace=9': grace=9 must be between 1 and the curves' 3 epochs"),
    (["--orders", "0"], "--orders 0"),
])  # fmt: skip
def test_cli_bad_settings_exit_2(tmp_path, args, culprit):
    root = _ray_folder(tmp_path / "search")
    result = CliRunner().invoke(app, ["replay", "--ray-dir", str(root), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: " in result.output and culprit in result.output


def test_a_setting_given_twice_is_one_row(tmp_path):
    """`--settings asha --settings asha:grace=1` (the same rule, once with its default written out) gave two equal
    rows (a walkthrough)."""
    root = _ray_folder(tmp_path / "search")
    result = CliRunner().invoke(app, ["replay", "--ray-dir", str(root), "--orders", "4", "--settings", "asha",
                                      "--settings", "fifo", "--settings", "asha:grace=1,rf=2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [ln.split("|")[1].strip() for ln in result.output.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert rows == ["setting", "asha:grace=1,rf=2,brackets=1", "fifo"], rows  # in the order first given


def test_cli_bad_sources_exit_2(tmp_path):
    starting = tmp_path / "starting"
    starting.mkdir()
    (starting / "hsc_search.json").write_text(json.dumps({"settings": {"max_epochs": 3}}))
    killed = tmp_path / "killed"
    (killed / "t1" / "checkpoint_000000").mkdir(parents=True)
    (killed / "hsc_search.json").write_text(json.dumps({"settings": {"max_epochs": 3}, "parent_run_id": "p123"}))
    from hsc_search.commands import resume_command

    incomplete = tmp_path / "incomplete"
    _write_lines(incomplete / "t1" / "result.json", [{"epoch": 1, "val/map_avg": 0.3}])
    _write_lines(incomplete / "t2" / "result.json", [{"epoch": 1, "val/map_avg": 0.3},
                                                      {"epoch": 3, "val/map_avg": 0.4}])  # fmt: skip
    cases = [
        (["--ray-dir", str(tmp_path / "missing")], f"--ray-dir {tmp_path / 'missing'}: no such folder"),
        # the storage folder and a trial's folder: the search meant, as resume and --warm-start name it (GG)
        (["--ray-dir", str(tmp_path)], "no trial folders (<trial_id>/result.json); it holds the searches killed, "
                                       f"starting: pass one, e.g. {starting.parent / 'killed'}"),
        (["--ray-dir", str(killed / "t1")], f"--ray-dir {killed / 't1'}: no trial folders (<trial_id>/result.json); "
                                            f"it is a folder of the search {killed}: pass that"),
        (["--ray-dir", str(incomplete / "t1")], "; pass the search's folder <storage>/<name>, as `hsc-search run`"),
        (["--ray-dir", str(starting)], f"--ray-dir {starting}: no trial has reported yet"),  # a search's own folder
        # its trials' checkpoints, not yet their results (a driver killed before Ray copied them: a walkthrough)
        (["--ray-dir", str(killed)], f"--ray-dir {killed}: its trials' results are not in the folder (no "
                                     "<trial_id>/result.json; Ray copies them there as the search goes, and its driver "
                                     f"stopped first), though their checkpoints are: `{resume_command(killed)}` "
                                     "brings them; or pass its parent run id instead (p123), whose trials MLflow "
                                     "holds"),
        (["--ray-dir", str(incomplete)], "no complete curves in Ray folder"),
        (["--tracking-uri", f"sqlite:///{tmp_path}/none.db"], f"no MLflow database at {tmp_path}/none.db"),
        (["--tracking-uri", "http://127.0.0.1:9"], "cannot reach the MLflow tracking server at http://127.0.0.1:9"),
        (["--run-id", "abc", "--ray-dir", str(incomplete)], "not both"),
    ]
    (tmp_path / "empty.db").write_bytes(b"")  # MLflow would make each of these a new store, or fail in a traceback
    (tmp_path / "text.db").write_text("not a database\n")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.commit()
    stores = [
        ([f"sqlite:///{tmp_path}/empty.db"], f"{tmp_path}/empty.db is not an MLflow database (an empty file)"),
        ([f"sqlite:///{tmp_path}/text.db"], f"{tmp_path}/text.db is not an MLflow database (not an SQLite database)"),
        # SQLAlchemy's options after `?` are not part of the file's name (it was "no MLflow database at text.db?...")
        ([f"sqlite:///{tmp_path}/text.db?timeout=30"], f"{tmp_path}/text.db is not an MLflow database (not an SQLite"),
        ([f"sqlite:///{tmp_path}/q?2/mlflow.db"], "SQLAlchemy reads what follows '?' as options, so MLflow would open"),
        ([f"sqlite:///{tmp_path}/other.db"], "other.db is not an MLflow database (SQLite, but without MLflow's tables)"),
        ([f"sqlite:///{tmp_path}"], f"{tmp_path} is a folder; expected the MLflow database file, e.g. sqlite:///"),
        ([str(tmp_path)], "not a tracking URI (a plain path is MLflow's file store"),
        # MLflow retried these for minutes, or printed a traceback; the password is never shown
        (["postgresql://ana:s3cret@127.0.0.1:1/mlflow"], "--tracking-uri postgresql://ana:***@127.0.0.1:1/mlflow: no "
                                                         "database answers at 127.0.0.1:1"),
        (["databricks"], "--tracking-uri databricks: Databricks-hosted MLflow is not supported"),
    ]
    cases += [(["--tracking-uri", *uri], culprit) for uri, culprit in stores]
    cases.append((["--ray-dir", str(tmp_path / "other.db")], f"--ray-dir {tmp_path / 'other.db'}: a file; expected "
                  f"the search's folder <storage>/<name>, as `hsc-search run` printed it; an MLflow store is "
                  f"--tracking-uri sqlite:///{tmp_path / 'other.db'}"))  # fmt: skip
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.db")}
    for args, culprit in cases:
        result = CliRunner().invoke(app, ["replay", *args])
        assert result.exit_code == 2, (args, result.output)
        assert culprit in result.output and "Traceback" not in result.output, (args, result.output)
    for uri, culprit in stores:  # the other readers of a store: the same sentence
        for command in (["report", "--no-log"], ["export-best", "--out", str(tmp_path / "b.yaml")]):
            result = CliRunner().invoke(app, [*command, "--tracking-uri", *uri])
            assert result.exit_code == 2 and culprit in result.output, (command, uri, result.output)
            assert "s3cret" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "none.db").exists()  # no empty store created
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.db")} == before  # nothing made a store of them
    result = CliRunner().invoke(app, ["replay", "--ray-dir", str(incomplete)])
    assert "t1: ended at epoch 1 of 3" in result.output and "t2: no finite val/map_avg at epoch(s) 2" in result.output


def test_best_finished_ranks_orders_where_nothing_finished_below_every_score_in_both_modes():
    """The column left such orders out (the oracle showed a score finished where most orders finished none);
    then, for mode min, its high quartile printed as "--" (the review)."""
    import types

    from hsc_search.replay import SettingSummary, _spread

    outs = [types.SimpleNamespace(best_finished=v) for v in (0.3, 0.35, 0.4, math.nan, math.nan)]
    x = SettingSummary(setting=None, outcomes=outs, recorded=None)
    assert _spread(x.stat("best_finished", "max"), 4) == "0.3000 [none-0.3500]"  # nan < 0.3 < 0.35 ...
    assert _spread(x.stat("best_finished", "min"), 4) == "0.4000 [0.3500-none]"  # ... and for min, above 0.4
    most = [types.SimpleNamespace(best_finished=v) for v in (0.3, math.nan, math.nan)]
    assert _spread(SettingSummary(setting=None, outcomes=most, recorded=None).stat("best_finished", "max"), 4) == "-"
    assert _spread(x.stat("best_finished"), 4) == "0.3500 [0.3250-0.3750]"  # without a mode: the values alone


# TINY as losses (mode min, e.g. --metric loss/total): each value is 1 - TINY's, written out by hand.
TINY_LOSS = {
    "A": [0.5, 0.4, 0.3, 0.2],
    "B": [0.6, 0.5, 0.4, 0.3],
    "C": [0.4, 0.45, 0.1, 0.05],
    "D": [0.7, 0.1, 0.05, 0.01],
}


def test_a_min_mode_replay_by_hand():
    """`hsc-search replay` of a `--mode min` search: the best is the LOWEST loss, the target is the best plus the
    tolerance, and a trial's score is its lowest epoch. Read as max mode, the table would say every rule finds
    the worst trial, or never reaches a target below every recorded loss."""
    curves = Curves.from_values(TINY_LOSS, mode="min", metric="loss/total")
    assert curves.best == ("D", 0.01)
    # FIFO, one at a time, order A B C D: D reaches 0.01 (<= 0.01 + 0.005) at its 4th epoch, the 16th of all
    o = replay_once(curves, FIFO, [0, 1, 2, 3], concurrency=1)
    assert (o.epochs, o.finished, o.stopped) == (16, 4, 0)
    assert o.best_seen == 0.01 and o.best_finished == 0.01 and o.to_best == 16
    # within 0.05 (target 0.06): C's 0.05 at its 4th epoch, the 12th of all (D's 0.05 is the 15th)
    assert replay_once(curves, FIFO, [0, 1, 2, 3], concurrency=1, tolerance=0.05).to_best == 12
    # ASHA grace 1, rf 2, one at a time, A B C D (a lower loss is better; stopped when strictly worse than the
    # rung's median):
    #   A: rungs empty -> 4 epochs.  B e1 {A .5}: .6 worse -> stop.  C e1 {.5 .6} median .55: .4 on;
    #   e2 rung 2 {A .4}: .45 worse -> stop.  D e1 {.5 .6 .4} median .5: .7 worse -> stop.
    o = replay_once(curves, ASHA_1_2, [0, 1, 2, 3], concurrency=1)
    assert o.trained == {"A": 4, "B": 1, "C": 2, "D": 1}
    assert o.best_seen == 0.2 and o.best_finished == 0.2 and math.isinf(o.to_best)  # D, the best, was stopped
    # the oracle: only D gets within 0.005 of 0.01 (at epoch 4); the others train the grace epoch
    o = replay_once(curves, parse_setting("oracle"), [0, 1, 2, 3], concurrency=1)
    assert o.trained == {"A": 1, "B": 1, "C": 1, "D": 4} and o.to_best == 7


def test_a_replay_of_too_few_curves_says_the_rows_compare_next_to_nothing():
    """A 1-trial search replayed gave 15 equal rows without a word (a walkthrough): below 3 complete curves the
    header says so; from 3 on it does not."""
    few = "warning: only 2 complete curves: a stopping rule has next to nothing to choose between"
    two = render(replay(Curves.from_values({k: TINY[k] for k in "AB"}), [FIFO, ASHA_1_2], orders=2))
    assert few in two and "2 random orders (seed 0), " in two, two
    one = render(replay(Curves.from_values({"A": TINY["A"]}), [FIFO], orders=1))
    assert "warning: only 1 complete curve: " in one and "1 random order (seed 0)" in one, one
    assert "complete curves: a stopping rule" not in render(replay(Curves.from_values(TINY), [FIFO], orders=2))
    cut = Curves.from_values({k: TINY[k] for k in "AB"})  # a search that did not finish: resume is the advice
    cut.finished = False
    text = render(replay(cut, [FIFO], orders=2))
    assert "a stopping rule has next to nothing" not in text and "once `hsc-search resume` has finished it" in text
    assert "\n2 complete curves x 4 epochs" in text and "\n1 complete curve x 4 epochs" in one, (text, one)


def test_a_json_that_cannot_be_made_after_all_keeps_the_table(tmp_path):
    """`--json /proc/x.json` passed the check before the replay (a folder this user may write in, by its mode) and
    failed after it, and the table was never printed (a walkthrough): the table first, then one line, exit 2."""
    root = _ray_folder(tmp_path / "search", complete_only=True)
    result = CliRunner().invoke(app, ["replay", "--ray-dir", str(root), "--orders", "2", "--settings", "fifo",
                                      "--json", "/proc/hsc-replay.json"])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.output.splitlines()
    assert any(ln.startswith("| fifo ") for ln in lines), result.output
    assert lines[-1].startswith("error: --json /proc/hsc-replay.json: cannot write (") and lines[-1].endswith(
        "); the table above is the replay"), result.output


LIVE = """
import json, sys, tempfile
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

CURVES, ORDERS = json.loads(sys.argv[1]), json.loads(sys.argv[2])


def trainable(config):
    for e, v in enumerate(CURVES[config["name"]], 1):
        tune.report({"val": v, "epoch": e})


ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
out = {}
for rule in ("asha", "median"):
    for k, order in enumerate(ORDERS):
        sched = (ASHAScheduler(time_attr="epoch", metric="val", mode="max", max_t=6, grace_period=1,
                               reduction_factor=2, brackets=1) if rule == "asha" else
                 MedianStoppingRule(time_attr="epoch", metric="val", mode="max", grace_period=1,
                                    min_samples_required=3))
        res = tune.Tuner(trainable, param_space={"name": tune.grid_search(order)},
                         tune_config=tune.TuneConfig(scheduler=sched, max_concurrent_trials=1, reuse_actors=True),
                         run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), name=rule + str(k),
                                                   verbose=0)).fit()
        out[rule + str(k)] = {r.config["name"]: int(r.metrics["epoch"]) for r in res}
ray.shutdown()
print(json.dumps(out))
"""


def test_the_replay_decides_as_live_ray_tune_does(tmp_path):
    """The replay's stand-in for Ray's TuneController was checked against counts worked out by hand from our
    reading of Ray's rules (an audit of the tests): here the same curves (8 trials x 6 epochs, seeded) run through
    live Ray Tune 2.60, one trial at a time in two orders, under ASHA (grace 1, rf 2) and the median rule, and
    each trial trains exactly the epochs the replay says. (HyperBand pauses trials, which live needs checkpoints;
    several trials at once depend on timing: not compared.)"""
    import os
    import subprocess
    import sys

    import numpy as np

    rng = np.random.default_rng(7)
    curves = {f"T{i}": [round(float(x), 4) for x in np.cumsum(rng.uniform(-0.05, 0.15, 6)) + rng.uniform(0, 0.5)]
              for i in range(8)}  # fmt: skip
    orders = [list(curves), list(reversed(curves))]
    env = {**os.environ, "RAY_TMPDIR": os.environ.get("RAY_TMPDIR", "/tmp")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", LIVE, json.dumps(curves), json.dumps(orders)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    live = json.loads(proc.stdout.strip().splitlines()[-1])
    offline = Curves.from_values(curves)
    names = list(curves)
    for rule, setting in (("asha", ASHA_1_2), ("median", parse_setting("median:grace=1,min_samples=3"))):
        for k, order in enumerate(orders):
            o = replay_once(offline, setting, [names.index(n) for n in order], concurrency=1)
            assert o.trained == live[rule + str(k)], (rule, order, o.trained, live[rule + str(k)])
    assert len({json.dumps(v, sort_keys=True) for v in live.values()}) > 1  # the rules and orders decide apart
    assert any(e < 6 for v in live.values() for e in v.values())  # and stop trials early
