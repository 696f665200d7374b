"""Our fixes to stock Ray Tune parts, without a Ray cluster: what Optuna is told, and ASHA's rungs across a restore."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from hsc_search.schedulers import AshaStateCallback, BudgetAwareOptunaSearch, PersistentASHA, why_stopped
from hsc_search.space import load_space_dict

SPACE = {"params": {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True}}}


def _searcher(max_epochs=4):
    space = load_space_dict(SPACE)
    return BudgetAwareOptunaSearch(space=space.define_by_run(), metric="val/map_avg", mode="max", seed=0,
                                   max_epochs=max_epochs)  # fmt: skip


def _feed(searcher, trial_id, values):
    for epoch, v in enumerate(values, start=1):
        searcher.on_trial_result(trial_id, {"val/map_avg": v, "epoch": epoch, "training_iteration": epoch})
    return {"val/map_avg": values[-1], "epoch": len(values), "training_iteration": len(values)}


def test_early_stopped_trial_is_pruned_not_complete():
    s = _searcher()
    s.suggest("a")
    last = _feed(s, "a", [0.2])  # ASHA stopped it after epoch 1 of 4
    s.on_trial_complete("a", last)
    frozen = s._ot_study.get_trials()[0]
    assert frozen.state.name == "PRUNED"  # Optuna keeps the last intermediate value as a pruned value
    assert frozen.intermediate_values == {1: 0.2}


def test_completed_trial_is_told_its_best_epoch():
    s = _searcher()
    s.suggest("b")
    last = _feed(s, "b", [0.2, 0.5, 0.45, 0.4])  # selection keeps epoch 2
    s.on_trial_complete("b", last)
    frozen = s._ot_study.get_trials()[0]
    assert frozen.state.name == "COMPLETE" and frozen.value == pytest.approx(0.5)
    assert s.trial_state("b") == "COMPLETE"


def test_the_last_batch_reaches_optuna_through_on_trial_complete_alone():
    """As Ray's TuneController calls it: a result that ends the trial (ASHA's STOP, or max_t reached) goes to the
    searcher's on_trial_complete only, never to on_trial_result; its batch of epochs must still be told."""
    import json

    from hsc_search.runs import EPOCHS_KEY

    def batch(values, first):
        epochs = [{"val/map_avg": v, "epoch": e} for e, v in enumerate(values, start=first)]
        return {**epochs[-1], "training_iteration": epochs[-1]["epoch"], EPOCHS_KEY: json.dumps(epochs)}

    s = _searcher(max_epochs=4)
    s.suggest("done")
    s.on_trial_result("done", batch([0.2, 0.3], 1))  # reported at ASHA's rungs 1 and 2
    s.on_trial_complete("done", batch([0.6, 0.55], 3))  # the last report: epochs 3-4
    s.suggest("stopped")
    s.on_trial_complete("stopped", batch([0.1], 1))  # ASHA stopped it on its first report
    done, stopped = s._ot_study.get_trials()
    assert done.state.name == "COMPLETE" and done.value == pytest.approx(0.6)
    assert done.intermediate_values == {1: 0.2, 2: 0.3, 3: 0.6, 4: 0.55}
    assert stopped.state.name == "PRUNED" and stopped.intermediate_values == {1: 0.1}


def test_failed_trial_is_fail():
    s = _searcher()
    s.suggest("c")
    _feed(s, "c", [0.1])
    s.on_trial_complete("c", None, error=True)
    assert s._ot_study.get_trials()[0].state.name == "FAIL"


def test_stock_searcher_would_have_called_it_complete():
    """The behaviour we fix, shown on Ray's own class: a budget-1 result told as a final value."""
    from ray.tune.search.optuna import OptunaSearch

    s = OptunaSearch(space=load_space_dict(SPACE).define_by_run(), metric="val/map_avg", mode="max", seed=0)
    s.suggest("a")
    s.on_trial_result("a", {"val/map_avg": 0.2, "training_iteration": 1})
    s.on_trial_complete("a", {"val/map_avg": 0.2, "training_iteration": 1})
    assert s._ot_study.get_trials()[0].state.name == "COMPLETE"


class _Trial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def _asha():
    a = PersistentASHA(time_attr="epoch", max_t=8, grace_period=1, reduction_factor=2)
    a.set_search_properties("val/map_avg", "max")
    return a


def _report(a, tid, epoch, value):
    return a.on_trial_result(None, _Trial(tid), {"epoch": epoch, "val/map_avg": value})


def test_asha_rungs_survive_a_restore_through_the_callback():
    a = _asha()
    for tid, v in [("t1", 0.7), ("t2", 0.8), ("t3", 0.9)]:
        a.on_trial_add(None, _Trial(tid))
        assert _report(a, tid, 1, v) == "CONTINUE"
    state = AshaStateCallback(a).get_state()
    assert state["rungs"][0][-1] == {"t1": 0.7, "t2": 0.8, "t3": 0.9}

    # the Tuner pickles scheduler and callback together: the restored callback points at the restored scheduler
    restored_scheduler = _asha()  # as unpickled from the Tuner's state at restore: empty rungs
    restored_cb = AshaStateCallback(restored_scheduler)
    restored_cb.set_state(state)
    restored_scheduler.on_trial_add(None, _Trial("weak"))
    assert _report(restored_scheduler, "weak", 1, 0.1) == "STOP"  # below the median of the restored rung

    fresh = _asha()  # what Ray's restore gives without our fix: empty rungs let the weak trial through
    fresh.on_trial_add(None, _Trial("weak"))
    assert _report(fresh, "weak", 1, 0.1) == "CONTINUE"


def test_the_rung_record_holds_a_min_metric_as_it_was_reported():
    """asha_rungs.json held Ray's own numbers: a loss of 2.8 recorded as -2.8 (Ray negates a min-mode metric) and
    a stop count that also counted the trials that reached max_epochs."""
    a = PersistentASHA(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)
    a.set_search_properties("loss/total", "min")
    for tid, v in [("t1", 2.8), ("t2", -0.5), ("t3", 3.1)]:
        a.on_trial_add(None, _Trial(tid))
        a.on_trial_result(None, _Trial(tid), {"epoch": 1, "loss/total": v})
    record = a.rung_record("loss/total", "min")
    assert record["milestones"] == [[4, 2, 1]] and "num_stopped" not in record
    assert record["rungs"][0][-1] == {"t1": 2.8, "t2": -0.5, "t3": 3.1}
    assert (record["metric"], record["mode"]) == ("loss/total", "min")


def test_why_stopped_names_the_cut_off_ray_applied_at_the_rung():
    """By hand: Ray's cut-off is the (1 - 1/rf) quantile of the values the rung held when the trial arrived."""
    a = _asha()  # rf 2: the median
    for tid, v in [("t1", 0.7), ("t2", 0.8), ("t3", 0.9), ("weak", 0.75), ("late", 0.1)]:
        a.on_trial_add(None, _Trial(tid))
        _report(a, tid, 1, v)
    record = json.loads(json.dumps(a.rung_record("val/map_avg", "max")))  # as asha_rungs.json holds it
    assert why_stopped(record, "weak") == ("stopped by ASHA at epoch 1: val/map_avg 0.7500, below the cut-off 0.8000 "
                                           "for the top 1/2, set by the 3 trials that reached epoch 1 before it")
    # "late" came after "weak": the median of 0.7, 0.8, 0.9, 0.75 is 0.775
    assert "below the cut-off 0.7750 for the top 1/2, set by the 4 trials that" in why_stopped(record, "late")
    a.on_trial_add(None, _Trial("second"))
    _report(a, "t1", 2, 0.5)
    _report(a, "second", 2, 0.4)  # one value before it: the cut-off is that value
    assert why_stopped(a.rung_record("val/map_avg", "max"), "second") == (
        "stopped by ASHA at epoch 2: val/map_avg 0.4000, below the cut-off 0.5000 for the top 1/2, set by the 1 trial "
        "that reached epoch 2 before it")
    assert why_stopped(record, "t1") is None  # the first value of a rung has nothing to fall short of
    assert why_stopped(record, "t3") is None and why_stopped(record, "absent") is None

    b = PersistentASHA(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3)
    b.set_search_properties("loss/total", "min")
    for tid, v in [("t1", 1.0), ("t2", 2.0), ("t3", 3.0), ("t4", 4.0), ("weak", 2.5)]:
        b.on_trial_add(None, _Trial(tid))
        b.on_trial_result(None, _Trial(tid), {"epoch": 1, "loss/total": v})
    # min mode, rf 3: Ray keeps the lowest third; the cut-off is the 1/3 quantile of 1, 2, 3, 4 = 2.0
    assert why_stopped(b.rung_record("loss/total", "min"), "weak") == (
        "stopped by ASHA at epoch 1: loss/total 2.5000, above the cut-off 2.0000 for the top 1/3, set by the 4 trials "
        "that reached epoch 1 before it")
    assert why_stopped({k: v for k, v in b.rung_record("loss/total", "min").items() if k != "reduction_factor"},
                       "weak") is None  # a record written before the factor was in it: nothing claimed


@pytest.mark.parametrize("mode,rf", [("max", 2), ("max", 3), ("min", 2), ("max", 2.5)])
def test_why_stopped_agrees_with_every_decision_of_rays_asha(mode, rf):
    """Random asynchronous searches through a real ASHA: every trial ASHA stopped before max_t gets a reason at the
    epoch it stopped at, and no trial that went on does; also after the rungs went through a restore."""
    rng = np.random.default_rng(int(rf * 10))
    for _ in range(5):
        a = PersistentASHA(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=rf)
        a.set_search_properties("m", mode)
        live, stopped, epoch = [f"t{i}" for i in range(12)], {}, {}
        for tid in live:
            a.on_trial_add(None, _Trial(tid))
        while live:
            tid = live[rng.integers(len(live))]  # trials report in any order
            epoch[tid] = epoch.get(tid, 0) + 1
            decision = a.on_trial_result(None, _Trial(tid), {"epoch": epoch[tid], "m": float(rng.normal())})
            if decision == "STOP" or epoch[tid] == 9:
                live.remove(tid)
                if epoch[tid] < 9:
                    stopped[tid] = epoch[tid]
        record = a.rung_record("m", mode)
        restored = PersistentASHA(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=rf)
        restored.set_rung_state(json.loads(json.dumps(a.get_rung_state())))
        assert stopped  # the draw exercised ASHA's cut
        for rec in (record, restored.rung_record("m", mode)):
            for tid in epoch:
                why = why_stopped(rec, tid, epoch[tid])  # (its last report: the one ASHA stopped it at)
                if tid in stopped:
                    # rf 2.5: rung 2.5 judges the first report at or after it (it said "epoch 2" for epoch 3)
                    assert why and why.startswith(f"stopped by ASHA at epoch {stopped[tid]}"), (tid, why)
                    assert (" (ASHA's rung at " in why) == (rf == 2.5 and stopped[tid] != 1), why
                else:
                    assert why is None, (tid, why)


def test_a_fractional_rung_is_reported_at_and_said_as_the_epoch_that_reaches_it():
    """Rung 2.5 (reduction factor 2.5) was rounded down to a report at epoch 2, so ASHA judged it on the next report
    (epoch 6) and never judged rung 6.25; and its stop was said to be 'at epoch 2' (the review)."""
    from hsc_search.schedulers import asha_milestones

    a = PersistentASHA(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=2.5)
    assert asha_milestones(a) == [1, 3, 7]  # Ray's rungs 1, 2.5, 6.25
    assert asha_milestones(_asha()) == [1, 2, 4, 8]
    a.set_search_properties("m", "max")
    for tid, v in [("t1", 0.5), ("t2", 0.6), ("t3", 0.3)]:
        a.on_trial_add(None, _Trial(tid))
        a.on_trial_result(None, _Trial(tid), {"epoch": 1, "m": v + 1})  # all pass rung 1 in turn (rising)
        assert a.on_trial_result(None, _Trial(tid), {"epoch": 3, "m": v}) == ("STOP" if tid == "t3" else "CONTINUE")
    assert why_stopped(a.rung_record("m", "max"), "t3", 3) == (
        "stopped by ASHA at epoch 3 (ASHA's rung at 2.5 epochs): m 0.3000, below the cut-off 0.5600 for the top "
        "1/2.5, set by the 2 trials that reached that rung before it")  # the 60% quantile of 0.5, 0.6: 0.5 + 0.6 x 0.1


def test_why_stopped_counts_the_values_ray_counts_and_tells_near_values_apart():
    """Ray's nanpercentile leaves a NaN value out of the cut-off: 'set by the 3 trials' counted two NaN ones; and
    a value within 5e-5 of its cut-off read "0.1500, below the cut-off 0.1500"."""
    record = {"metric": "m", "mode": "max", "reduction_factor": 2, "milestones": [[2, 1]],
              "rungs": [[{}, {"a": float("nan"), "b": float("nan"), "c": 0.5, "d": 0.4, "e": 0.15000, "f": 0.14998}]]}
    assert why_stopped(record, "d").endswith("cut-off 0.5000 for the top 1/2, set by the 1 trial that reached epoch 1 "
                                             "before it")  # fmt: skip
    # before f: 0.5, 0.4, 0.15 (NaNs out): median 0.4; before e: 0.5, 0.4: 0.45
    assert "m 0.1500, below the cut-off 0.4500" in why_stopped(record, "e")
    record["rungs"][0][1] = {"a": 0.15, "b": 0.14998}
    assert "m 0.14998, below the cut-off 0.15000 " in why_stopped(record, "b")
    record["rungs"][0][1] = {"a": float("nan"), "b": 0.1}
    assert why_stopped(record, "b") is None  # nothing counted before it: no cut-off, Ray let it through


def test_shared_reference_survives_pickling_together():
    a = _asha()
    cb = AshaStateCallback(a)
    a2, cb2 = pickle.loads(pickle.dumps((a, cb)))
    assert cb2.scheduler is a2


def test_progress_lines_show_a_trials_best_epoch_as_the_summary_ranks_it(capsys):
    """The live line of a trial gives its score (the best epoch's value over all its reports), not the last
    epoch's, and the search's best so far is the best of those scores; it survives a resume (get/set_state)."""
    import json
    import types

    from hsc_search.progress import Progress
    from hsc_search.runs import EPOCHS_KEY

    def result(values, first):
        epochs = [{"epoch": first + i, "val/map_avg": v} for i, v in enumerate(values)]
        return {"epoch": epochs[-1]["epoch"], "val/map_avg": values[-1], EPOCHS_KEY: json.dumps(epochs)}

    p = Progress(total=2, max_epochs=4, metric="val/map_avg", mode="max", searched=["lr"])
    a = types.SimpleNamespace(trial_id="a", config={"lr": 0.001}, last_result=None)
    for r in (result([0.50, 0.61], 1), result([0.58, 0.57], 3)):  # best 0.61 at epoch 2; last 0.57
        p.on_trial_result(0, [], a, r)
        a.last_result = r
    p.on_trial_complete(0, [], a)
    line = capsys.readouterr().err
    assert "completed 4 epochs" in line and "val/map_avg 0.6100  best 0.6100" in line, line

    restored = Progress(total=2, max_epochs=4, metric="val/map_avg", mode="max", searched=["lr"])
    restored.set_state(pickle.loads(pickle.dumps(p.get_state())))
    b = types.SimpleNamespace(trial_id="b", config={"lr": 0.01}, last_result=None)
    r = result([0.55], 1)
    restored.on_trial_result(0, [], b, r)
    b.last_result = {**r, "epoch": 1}
    restored.on_trial_complete(0, [], b)
    line = capsys.readouterr().err
    assert "[2/2" in line and "val/map_avg 0.5500  best 0.6100" in line, line
    f = types.SimpleNamespace(trial_id="f", config={"lr": 0.1}, last_result=None)  # good, then diverged
    restored.on_trial_result(0, [], f, result([0.90], 1))
    restored.on_trial_error(0, [], f)
    restored.on_trial_complete(0, [], b)
    lines = capsys.readouterr().err.splitlines()
    assert "FAILED" in lines[0] and "best 0.6100" in lines[0], lines  # a failed trial is never the best
    assert "best 0.6100" in lines[-1], lines
    assert restored.scores() == {"a": 0.61, "b": 0.55, "f": 0.90}

    low = Progress(total=1, max_epochs=2, metric="loss/total", mode="min", searched=[])
    c = types.SimpleNamespace(trial_id="c", config={}, last_result=None)
    r = {"epoch": 2, "loss/total": 0.9, EPOCHS_KEY: json.dumps([{"epoch": 1, "loss/total": 0.4},
                                                                {"epoch": 2, "loss/total": 0.9}])}  # fmt: skip
    low.on_trial_result(0, [], c, r)
    c.last_result = r
    low.on_trial_complete(0, [], c)
    assert "loss/total 0.4000  best 0.4000" in capsys.readouterr().err


def test_progress_lines_fit_the_terminal_and_stay_whole_in_a_log(monkeypatch):
    """An hsc_mae search's progress lines were 400 columns: each trial 3-6 rows of an 80-column terminal. On a
    terminal a line's params are cut to its width ("...)"); piped or redirected, the line is whole."""
    import sys

    from hsc_search import progress

    head = "[ 3/64    12s] 1a2b3c4d completed 2 epochs           val/map_avg 0.3100  best 0.3300 "  # 90 columns
    line = head + " (" + ", ".join(f"param_{i}=0.00{i}" for i in range(30)) + ")"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "160")
    cut = progress._fit(line)
    assert len(cut) == 160 and cut.endswith("...)") and cut[:156] == line[:156], cut
    short = head + " (lr=0.001)"
    assert progress._fit(short) == short  # fits: as it is
    monkeypatch.setenv("COLUMNS", "100")  # the head's padding goes first, then the params are cut
    cut = progress._fit(line)
    assert len(cut) == 100 and cut.startswith("[ 3/64  12s] 1a2b3c4d completed 2 epochs  val/map_avg 0.3100  best "
                                              "0.3300  (param_0=0.000, param"), cut  # fmt: skip
    monkeypatch.setenv("COLUMNS", "60")  # narrower than the head: the score and best stay whole
    assert progress._fit(line) == "[ 3/64  12s] 1a2b3c4d completed 2 epochs  val/map_avg 0.3100  best 0.3300  (...)"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert progress._fit(line) == line


def test_progress_lines_take_the_width_of_the_terminal_they_go_to(monkeypatch):
    """With `run ... | tee log` stdout is a pipe: shutil measured it (120 columns) for lines that go to stderr,
    an 80-column terminal (the review)."""
    import os
    import sys

    from hsc_search import progress

    monkeypatch.delenv("COLUMNS", raising=False)
    asked = []

    def size(fd):
        asked.append(fd)
        return os.terminal_size((80, 24))

    monkeypatch.setattr(os, "get_terminal_size", size)
    assert progress._width() == 80 and asked == [sys.stderr.fileno()]


def test_a_min_mode_searcher_tells_optuna_a_completed_trials_lowest_epoch():
    """`--metric loss/total --mode min`: the value Optuna learns from must be the trial's lowest loss (the epoch
    the trainer selects), not its highest; a searcher keeping the max would teach TPE each trial's worst epoch,
    and the study (which minimizes) would favour the trials that were worst at some point."""
    space = load_space_dict(SPACE)
    s = BudgetAwareOptunaSearch(space=space.define_by_run(), metric="loss/total", mode="min", seed=0, max_epochs=4)
    s.suggest("m")
    losses = [0.9, 0.4, 0.5, 0.6]  # selection keeps epoch 2 (the lowest loss); the first epoch is the highest
    for epoch, v in enumerate(losses, start=1):
        s.on_trial_result("m", {"loss/total": v, "epoch": epoch, "training_iteration": epoch})
    s.on_trial_complete("m", {"loss/total": 0.6, "epoch": 4, "training_iteration": 4})
    frozen = s._ot_study.get_trials()[0]
    assert s._ot_study.direction.name == "MINIMIZE"
    assert frozen.state.name == "COMPLETE" and frozen.value == pytest.approx(min(losses)), frozen.value
    assert frozen.intermediate_values == {1: 0.9, 2: 0.4, 3: 0.5, 4: 0.6}


def test_a_resumed_trial_says_it_goes_on_not_that_it_started(capsys):
    """A resumed search's trial that continues from its checkpoint said "started" (a walkthrough)."""
    import types

    from hsc_search.progress import Progress

    from ray.train._internal.session import _TrainingResult  # what Ray's Trial.latest_checkpoint_result holds

    p = Progress(total=4, max_epochs=4, metric="val/map_avg", mode="max", searched=[])

    def trial(tid: str, last: dict, saved: dict | None):
        return types.SimpleNamespace(trial_id=tid, config={}, last_result=last, latest_checkpoint_result=None
                                     if saved is None else _TrainingResult(checkpoint=None, metrics=saved))  # fmt: skip

    p.on_trial_start(0, [], trial("a", {"epoch": 2}, {"epoch": 2}))
    p.on_trial_start(0, [], trial("b", {}, None))
    # it goes on from its checkpoint's epoch, not from its last report's (checkpoints are not saved every epoch);
    # a Ray snapshot without its last report (a Ray head killed) still has the checkpoint's (it said "started")
    p.on_trial_start(0, [], trial("c", {"epoch": 3}, {"epoch": 1}))
    p.on_trial_start(0, [], trial("d", {}, {"epoch": 2}))
    p.on_trial_start(0, [], trial("e", {"epoch": 3}, None))  # reported, never checkpointed: trains from epoch 1
    lines = capsys.readouterr().err.splitlines()
    assert " a resumed after epoch 2 " in lines[0] and " b started " in lines[1], lines
    assert " c resumed after epoch 1 " in lines[2] and " d resumed after epoch 2 " in lines[3], lines
    assert " e started " in lines[4], lines


def test_min_mode_progress_keeps_the_lowest_score_of_all_trials_as_best(capsys):
    """With `--mode min` the "best" on each progress line is the lowest loss of the trials ended so far: a line
    that showed a later, higher-loss trial as the best would point the user at the wrong trial."""
    import types

    from hsc_search.progress import Progress

    p = Progress(total=3, max_epochs=1, metric="loss/total", mode="min", searched=[])
    for tid, loss in [("a", 0.40), ("b", 0.60), ("c", 0.30)]:  # the 2nd is worse; the 3rd is the new best
        t = types.SimpleNamespace(trial_id=tid, config={}, last_result=None)
        r = {"epoch": 1, "loss/total": loss}
        p.on_trial_result(0, [], t, r)
        t.last_result = r
        p.on_trial_complete(0, [], t)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert "loss/total 0.4000  best 0.4000" in lines[0], lines
    assert "loss/total 0.6000  best 0.4000" in lines[1], lines  # a higher loss is not a better trial
    assert "loss/total 0.3000  best 0.3000" in lines[2], lines
