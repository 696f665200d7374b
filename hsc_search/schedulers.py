"""Our two fixes to stock Ray Tune parts (see STACK_NOTES.md):

* `BudgetAwareOptunaSearch`: stock OptunaSearch tells Optuna a trial stopped by ASHA is COMPLETE with its
  last, low-budget value, so TPE learns from epoch-1 numbers as if they were final. We tell Optuna PRUNED for
  a trial that stopped before its full budget (TPE ranks pruned trials by how far they got and their
  intermediate values, all of which we report), and for a completed trial the best validation value over its
  epochs, i.e. the score of the checkpoint the trainer selects.
* `PersistentASHA`: Ray does not checkpoint the scheduler (ray issue #30838), so after `Tuner.restore` ASHA
  starts with empty rungs and lets weak trials through. This subclass writes its rungs to a small JSON file in
  the experiment directory whenever they change and reads them back on its first use after a restore.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)

ASHA_STATE_FILE = "asha_state.json"


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

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if value is not None and math.isfinite(value) and trial_id not in self._completed_trials:
            sign = 1.0 if self.mode == "max" else -1.0
            prev = self._best_seen.get(trial_id)
            if prev is None or sign * value > sign * prev:
                self._best_seen[trial_id] = value
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial = self._ot_trials[trial_id]
        budget = (result or {}).get(self._time_attr, 0)
        if error or not result:
            state, value = TrialState.FAIL, None
        elif budget < self._max_epochs:
            state, value = TrialState.PRUNED, None
        else:
            state, value = TrialState.COMPLETE, self._best_seen.get(trial_id, result.get(self.metric))
            if value is None or not math.isfinite(value):
                state, value = TrialState.FAIL, None
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # e.g. the trial was already told before a restore
            log.warning("optuna tell for trial %s failed: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def trial_state(self, trial_id: str) -> str | None:
        """The Optuna state name told for a Ray trial id (COMPLETE / PRUNED / FAIL), or None if not told yet."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return None
        frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
        return frozen.state.name


class PersistentASHA(ASHAScheduler):
    """ASHA whose rung history survives `Tuner.restore` (kept in `<experiment_dir>/asha_state.json`)."""

    def __init__(self, *args, experiment_dir: str | os.PathLike | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.experiment_dir = str(experiment_dir) if experiment_dir else None
        self._loaded = False

    # -- persistence
    def _path(self) -> Path | None:
        return Path(self.experiment_dir) / ASHA_STATE_FILE if self.experiment_dir else None

    def rungs(self) -> list[list[dict[str, float]]]:
        """Per bracket, per rung (highest milestone first): {trial_id: recorded reward}."""
        return [[dict(recorded) for _, recorded in b._rungs] for b in self._brackets]

    def _save(self) -> None:
        path = self._path()
        if path is None:
            return
        payload = {
            "milestones": [[m for m, _ in b._rungs] for b in self._brackets],
            "rungs": self.rungs(),
            "num_stopped": self._num_stopped,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        path = self._path()
        if path is None or not path.exists():
            return
        payload = json.loads(path.read_text())
        for bracket, milestones, rungs in zip(self._brackets, payload["milestones"], payload["rungs"]):
            if [m for m, _ in bracket._rungs] != milestones:
                log.warning("%s: rung milestones differ from this scheduler's; ASHA history not restored", path)
                return
            for (_, recorded), saved in zip(bracket._rungs, rungs):
                recorded.update(saved)
        self._num_stopped = payload.get("num_stopped", 0)
        log.info("restored ASHA rung history from %s", path)

    # -- scheduler hooks
    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_once()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        self._load_once()
        before = self._num_recorded()
        action = super().on_trial_result(tune_controller, trial, result)
        if self._num_recorded() != before:
            self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict[str, Any]) -> None:
        self._load_once()
        before = self._num_recorded()
        super().on_trial_complete(tune_controller, trial, result)
        if self._num_recorded() != before:
            self._save()

    def _num_recorded(self) -> int:
        return sum(len(recorded) for b in self._brackets for _, recorded in b._rungs)
