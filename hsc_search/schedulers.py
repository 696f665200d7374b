"""Our two fixes to stock Ray Tune parts (Ray 2.60):

* `BudgetAwareOptunaSearch`: stock OptunaSearch tells Optuna a trial stopped by ASHA is COMPLETE with its
  last, low-budget value, so TPE learns from epoch-1 numbers as if they were final. We tell Optuna PRUNED for
  a trial that stopped before its full budget (TPE ranks pruned trials by how far they got and their
  intermediate values, all of which we report), and for a completed trial the best validation value over its
  epochs, i.e. the score of the checkpoint the trainer selects.
* `PersistentASHA` + `AshaStateCallback`: Ray does not checkpoint the scheduler (ray issue #30838), so after
  `Tuner.restore` ASHA starts with empty rungs and lets weak trials through. The callback hands the rungs to
  Ray's own experiment snapshots (written with the searcher state, so the two stay consistent) and puts them
  back on restore. A file of our own in the experiment folder would not do: on restore Ray copies the folder
  to its driver staging directory and syncs that back over the folder, stale copy included.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from .ray_internals import (
    asha_brackets,
    asha_num_stopped,
    asha_reduction_factor,
    optuna_study,
    optuna_told,
    optuna_trial_state,
    optuna_trials,
    set_asha_num_stopped,
)
from .runs import FAILED_KEY, best_of, epochs_of, trial_outcome

log = logging.getLogger(__name__)


class BudgetAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about early-stopped trials.

    Args:
        max_epochs: a trial whose last result has `time_attr` below this was stopped early -> PRUNED.
        time_attr: the budget key in results ("epoch").
        Others: as `OptunaSearch`.
    """

    def __init__(self, *args, max_epochs: int, time_attr: str = "epoch", **kwargs):
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._time_attr = time_attr
        self._best_seen: dict[str, float] = {}
        self._told: dict[str, int] = {}  # trial -> last epoch told to Optuna as an intermediate value

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Every epoch of the result's batch (`runs.epochs_of`) is told to Optuna as an intermediate value at its
        epoch, and the trial's best value over epochs is kept for its final value."""
        trials = optuna_trials(self)
        if FAILED_KEY in result or trial_id in optuna_told(self) or trial_id not in trials:
            return  # a failure report (NaN metric, no epoch): on_trial_complete tells FAIL
        ot_trial = trials[trial_id]
        told = self._told.setdefault(trial_id, 0)
        for m in epochs_of(result):
            epoch, value = int(m["epoch"]), m.get(self.metric)
            if value is None or not math.isfinite(value):
                continue
            self._best_seen[trial_id] = best_of([self._best_seen.get(trial_id), value], self.mode)
            if epoch > told:  # epochs repeated after a restore are known already
                ot_trial.report(value, epoch)
                told = epoch
        self._told[trial_id] = told

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in optuna_told(self) or trial_id not in optuna_trials(self):
            return super().on_trial_complete(trial_id, result, error)
        if result and not error:
            # Ray's TuneController hands the searcher a trial's last result only here, never to on_trial_result
            # (a result that ends the trial, by ASHA's STOP or by reaching max_t, skips the searcher's
            # on_trial_result): its batch of epochs is told first, so that the final value is the best over all
            # epochs and a pruned trial keeps the value ASHA judged it by
            self.on_trial_result(trial_id, result)
        ot_trial = optuna_trials(self)[trial_id]
        outcome = "failed" if error or not result else trial_outcome("TERMINATED", result, self._max_epochs)
        if outcome == "failed":
            state, value = TrialState.FAIL, None
        elif outcome == "stopped_early":
            state, value = TrialState.PRUNED, None
        else:
            state, value = TrialState.COMPLETE, self._best_seen.get(trial_id, result.get(self.metric))
            if value is None or not math.isfinite(value):
                state, value = TrialState.FAIL, None
        try:
            optuna_study(self).tell(ot_trial, value, state=state)
        except Exception as exc:  # e.g. the trial was already told before a restore
            log.warning("optuna tell for trial %s failed: %s", trial_id, exc)
        optuna_told(self).add(trial_id)

    def trial_state(self, trial_id: str) -> str | None:
        """The Optuna state name told for a Ray trial id (COMPLETE / PRUNED / FAIL), or None if not told yet."""
        ot_trial = optuna_trials(self).get(trial_id)
        if ot_trial is None:
            return None
        return optuna_trial_state(self, ot_trial)


class PersistentASHA(ASHAScheduler):
    """ASHA whose rung history survives `Tuner.restore`, through `AshaStateCallback` (Ray saves a callback's
    `get_state` with every experiment snapshot, together with the searcher, and gives it back on restore)."""

    def rungs(self) -> list[list[dict[str, float]]]:
        """Per bracket, per rung (highest milestone first): {trial_id: recorded reward}."""
        return [[dict(recorded) for _, recorded in rungs] for rungs in asha_brackets(self)]

    def get_rung_state(self) -> dict[str, Any]:
        return {
            "milestones": [[m for m, _ in rungs] for rungs in asha_brackets(self)],
            "rungs": self.rungs(),
            "num_stopped": asha_num_stopped(self),
        }

    def rung_record(self, metric: str, mode: str) -> dict[str, Any]:
        """`asha_rungs.json`, for people and the report: per bracket the milestones (epochs) and each rung's
        {trial_id: the trial's metric there}, in the metric's own units (Ray keeps a min-mode metric negated).
        Ray's stop count is left out: it also counts the trials stopped at max_epochs, which ASHA did not cut."""
        sign = -1.0 if mode == "min" else 1.0
        return {
            "metric": metric,
            "mode": mode,
            "reduction_factor": asha_reduction_factor(self),
            "milestones": [[m for m, _ in rungs] for rungs in asha_brackets(self)],
            "rungs": [[{t: sign * v for t, v in rung.items()} for rung in bracket] for bracket in self.rungs()],
        }

    def set_rung_state(self, state: dict[str, Any]) -> None:
        for live, milestones, rungs in zip(asha_brackets(self), state["milestones"], state["rungs"]):
            if [m for m, _ in live] != milestones:
                log.warning("saved ASHA milestones %s differ from %s; rung history not restored", milestones,
                            [m for m, _ in live])  # fmt: skip
                return
            for (_, recorded), saved in zip(live, rungs):
                recorded.update(saved)
        set_asha_num_stopped(self, state.get("num_stopped", 0))


def why_stopped(record: dict[str, Any], trial_id: str, epoch: int | None = None) -> str | None:
    """Why ASHA stopped a trial, in one sentence, from a rung record (`PersistentASHA.rung_record`): the highest rung
    holding it, its value there and the cut-off it fell short of. Ray's asynchronous ASHA compares a trial reaching a
    rung with the values recorded there before it (its `_Bracket.on_result`): the (1 - 1/reduction_factor) quantile
    of them, linear between neighbours. Each rung's dict keeps the order Ray recorded its values in (Python dicts,
    JSON and `set_rung_state` keep it), so the cut-off is the one in force when the trial arrived. None when no rung
    holds the trial below its cut-off (it was not ASHA's cut, or the record lacks its reduction factor). `epoch`:
    the epoch the trial stopped at (its last report), which with a fractional reduction factor is past its rung
    (rung 2.5 judges the first report at or after it)."""
    rf = record.get("reduction_factor")
    if not rf or rf <= 1:
        return None
    sign = -1.0 if record.get("mode") == "min" else 1.0
    found = None  # (milestone, value, values recorded before it)
    for milestones, rungs in zip(record.get("milestones", []), record.get("rungs", [])):
        for milestone, rung in zip(milestones, rungs):
            if trial_id not in rung or (found and found[0] >= milestone):
                continue
            names = list(rung)
            found = (milestone, rung[trial_id], [rung[t] for t in names[: names.index(trial_id)]])
    if not found or not found[2]:
        return None
    milestone, value, before = found
    counted = [sign * v for v in before if not math.isnan(v)]  # Ray's nanpercentile leaves NaN out
    if not counted:
        return None
    cutoff = sign * float(np.percentile(counted, (1 - 1 / rf) * 100))
    if not math.isfinite(value) or not sign * value < sign * cutoff:
        return None
    digits = 4  # enough to tell the two apart
    while digits < 8 and f"{value:.{digits}f}" == f"{cutoff:.{digits}f}":
        digits += 1
    n, at = len(counted), milestone if epoch is None else epoch
    rung, reached = (("", f"epoch {milestone:g}") if at == milestone
                     else (f" (ASHA's rung at {milestone:g} epochs)", "that rung"))  # fmt: skip
    return (f"stopped by ASHA at epoch {at:g}{rung}: {record.get('metric', 'the metric')} {value:.{digits}f}, "
            f"{'below' if sign > 0 else 'above'} the cut-off {cutoff:.{digits}f} for the top 1/{rf:g}, set by the "
            f"{n} trial{'s that' if n != 1 else ' that'} reached {reached} before it")


def asha_milestones(scheduler: ASHAScheduler) -> list[int]:
    """The epochs at which ASHA compares trials (every bracket's rungs), lowest first: a trial must report at
    these epochs for ASHA to judge it. A fractional rung (reduction factor 2.5: rungs 1, 2.5, 6.25) judges the
    first report at or after it: epoch 3 and 7 (rounded down, a trial reported at 2, was judged at rung 2.5 on its
    next report, and never at 6.25; the review)."""
    return sorted({math.ceil(m) for rungs in asha_brackets(scheduler) for m, _ in rungs})


class AshaStateCallback(Callback):
    """Carries a `PersistentASHA`'s rungs through Ray's experiment snapshots (ray issue #30838).

    The scheduler and this callback are pickled together in the Tuner's state, so after `Tuner.restore` the
    callback still points at the restored scheduler, and `set_state` refills its rungs before any trial runs.
    """

    def __init__(self, scheduler: PersistentASHA):
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any]:
        return self.scheduler.get_rung_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.set_rung_state(state)
        log.info("restored ASHA rung history: %s", state["rungs"])
