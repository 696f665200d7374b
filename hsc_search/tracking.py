"""MLflow tracking written by our own code. Ray's MLflowLoggerCallback is not good enough: it runs on the driver,
makes one flat run per trial (no parent run) and one REST call per metric, and keeps no state (after a driver kill
and `Tuner.restore` it left 15 runs for 10 trials, one RUNNING forever); `setup_mlflow` inside a trainable never
ends its run, so a crashed trial stays RUNNING.

One parent run per search, one nested child run per trial. The Tune callback `MlflowTracker` runs on the driver
and hands every Tune event, as one small message, to the writer (`writer.py`: a thread of the driver, or a
process of its own), which makes the MLflow calls: the Tune event loop never waits on the tracking server. Each
call is retried with exponential back-off, so a server that is unreachable for a while loses
nothing. A trial's report costs one `log_batch` call, its end one more (or the same one: a last report is logged
with the end). Of the canonical correlations only the top `CCA_TOP_METRICS` become MLflow metrics; the whole
spectrum, per epoch, is the trial's `cca_spectrum.csv`.

Exactly one child run per trial, also across `hsc-search resume`: the child is found by its tags
(`mlflow.parentRunId`, `hsc.trial_id`) before one is created, and epochs already logged are not logged again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ray import tune

from trainer import ConfigError, TrainConfig

from .report import preload_in_background
from .runs import (FAILED_KEY, FLUSH_S, NODE_KEY, TAG_OUTCOME, TAG_TRIAL, child_runs, epochs_of, flush_seconds,
                   trial_outcome)
from .schedulers import PersistentASHA, why_stopped
from .writer import Writer

log = logging.getLogger(__name__)


class MlflowTracker(tune.Callback):
    """A Tune callback that mirrors every trial into a nested MLflow child run of the search's parent run.

    Args:
        tracking_uri: MLflow tracking URI (None = MLflow's default, sqlite:///mlflow.db).
        experiment_id: the MLflow experiment of the parent run.
        parent_run_id: the search's parent run.
        max_epochs: the full budget; a trial that ends before it was stopped early (ASHA).
        searched: names of the searched parameters (logged as params; the full config goes to config.yaml).
        writer: the writer process, when the driver started it early (while Ray starts); else started here.
        scheduler: the search's `PersistentASHA`, if any: a trial it stopped gets the tag `hsc.stopped_by`, the
            rung, its value there and the cut-off it fell short of (`schedulers.why_stopped`).
    """

    def __init__(self, tracking_uri: str | None, experiment_id: str, parent_run_id: str, max_epochs: int,
                 searched: list[str], metric: str = "val/map_avg", mode: str = "max",
                 writer: Writer | None = None, scheduler=None):  # fmt: skip
        self.metric, self.mode = metric, mode
        self.scheduler = scheduler  # a PersistentASHA: why it stopped a trial goes on the trial's run (pickled
        # with the Tuner beside the scheduler, so a restored tracker points at the restored one)
        self._restored = False  # after Tuner.restore a trial's child run may exist already: look it up
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.max_epochs = max_epochs
        self.searched = list(searched)
        self._started: set[str] = set()  # trials whose start was handled here
        self._ended: set[str] = set()  # trials whose end was handled by this process (not pickled)
        self._open: set[str] = set()  # trial ids whose child run has not been ended
        # trials whose last epoch's report came (held by the writer for their end): name, node fields
        self._reported_last: dict[str, tuple[str, dict]] = {}
        self._writer = writer

    # Ray pickles callbacks with the Tuner (and restores them from that pickle): keep the process out.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_writer"] = None
        state["_ended"] = set()
        return state

    def __setstate__(self, state: dict) -> None:  # trackers pickled before `_ended` existed (resume of such)
        self.__dict__.update(state)
        self.__dict__.setdefault("_ended", set())
        self.__dict__.setdefault("scheduler", None)

    def attach(self, writer: Writer) -> None:
        """Gives a tracker restored from Ray's pickle (which leaves the writer out) a writer already started."""
        if self._writer is not None:
            writer.stop()
            return
        self._writer = writer

    def _ensure(self) -> None:
        if self._writer is None:
            self._writer = Writer(self.tracking_uri, self.metric, self.mode)

    @property
    def errors(self) -> list[str]:
        return self._writer.errors if self._writer else []

    # ------------------------------------------------------------------ Tune hooks
    def setup(self, **info) -> None:
        self._ensure()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        # its run starts when the trial does: the writer may create it seconds later (MLflow's Duration of a short
        # trial was below the trial's own time/total_s, and a run made after an outage lasted 0.2 s: walkthroughs)
        self._start(trial, int(time.time() * 1000))

    def _start(self, trial, started_ms: int) -> None:
        self._ensure()
        config = dict(trial.config)
        tid = trial.trial_id
        self._open.add(tid)
        # a restored search, or a retried trial (seen here before): its child run exists, continue it
        known = self._restored or tid in self._started
        self._started.add(tid)
        # logged with the trial's first metrics (one MLflow call fewer per trial), or when it ends without any
        params = [(k, str(config[k])) for k in self.searched if k in config]
        self._writer.submit("start", tid, str(trial), (self.experiment_id, self.parent_run_id), _full_config(config),
                            params, known, _trial_number(trial), started_ms)  # fmt: skip

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._ensure()
        if FAILED_KEY in result:  # on_trial_complete ends the run as failed; the epochs it trained since its last
            # report (`trainable._report_failure`) and its seconds are logged first
            self._writer.submit("epoch", trial.trial_id, str(trial),
                                {k: v for k, v in result.items() if k != "config"}, False)  # fmt: skip
            return
        preload_in_background()  # the report's imports, while the driver mostly waits on its trials (once)
        last = int(result.get("epoch", 0)) >= self.max_epochs  # its end follows: both go in one call
        self._writer.submit("epoch", trial.trial_id, str(trial), {k: v for k, v in result.items() if k != "config"},
                            last)  # fmt: skip
        if last:
            self._reported_last[trial.trial_id] = (str(trial), _node_fields(result))

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._ensure()
        self._writer.submit("retried", trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        outcome = trial_outcome("TERMINATED", result, self.max_epochs)
        if outcome == "failed":
            self._finish(trial, outcome, "FAILED", error=result[FAILED_KEY], ended_ms=info.get("ended_ms"))
        else:
            self._finish(trial, outcome, "FINISHED", why=self._why_stopped(trial, outcome),
                         ended_ms=info.get("ended_ms"))  # fmt: skip

    def _why_stopped(self, trial, outcome: str) -> str | None:
        if outcome != "stopped_early" or not isinstance(self.scheduler, PersistentASHA):
            return None
        tid = trial.trial_id
        try:
            epoch = int((trial.last_result or {}).get("epoch", 0)) or None  # the report ASHA stopped it at
            return why_stopped(self.scheduler.rung_record(self.metric, self.mode), tid, epoch)
        except Exception as e:  # noqa: BLE001 - a sentence for people; never a reason to lose the trial's end
            log.warning("could not say why ASHA stopped trial %s: %s", tid, e)
            return None

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id not in self._started:  # failed before it started: a worker node lost as a reused actor
            # took the trial (Ray counts both calls on the dead actor, and the second errors it while the first
            # said "retried"): it had no run, so MLflow, the summary and the report never knew it (a walkthrough)
            self.on_trial_start(iteration, trials, trial)
        self._finish(trial, "failed", "FAILED", error=_error_text(trial), ended_ms=info.get("ended_ms"))

    def _finish(self, trial, outcome: str, status: str, error: str | None = None, why: str | None = None,
                ended_ms: int | None = None) -> None:  # fmt: skip
        """`ended_ms`: when it ended, if not now (a trial whose end `catch_up` logs after a resume)."""
        self._ensure()
        self._open.discard(trial.trial_id)
        self._ended.add(trial.trial_id)
        self._writer.submit("finish", trial.trial_id, str(trial), outcome, status, error,
                            _node_fields(trial.last_result or {}), why, ended_ms or int(time.time() * 1000))

    # ------------------------------------------------------------------ state across `Tuner.restore`
    def get_state(self) -> dict:
        # never empty: Ray calls `set_state` on restore only for a callback whose saved state is truthy
        return {"started": sorted(self._started)}

    def set_state(self, state: dict) -> None:
        # after a restore on_trial_start looks every child run up by its tags (a trial may have started after
        # this state was saved) and reads its logged epochs and nodes back
        self._started.update(state.get("started", []))
        self._restored = True

    # ------------------------------------------------------------------ after a resume
    def lacking(self, client, trials: list, ended_here: bool = True) -> list:
        """The ended trials whose run MLflow lacks, holds as still running, or holds short of Ray's last report:
        what `catch_up` gives it (one query for the search's runs). `ended_here`: also those whose end this process
        handled (at a search's end: the writer may have failed to log them)."""
        runs = {r.data.tags.get(TAG_TRIAL): r for r in child_runs(client, self.experiment_id, self.parent_run_id)}
        out = []
        for trial in trials:
            if trial.status not in ("TERMINATED", "ERROR") or (not ended_here and trial.trial_id in self._ended):
                continue
            lr = trial.last_result or {}  # Ray's record of its last report (a failure report: the epochs it carries)
            last = max([int(lr.get("epoch", 0))] + [int(m.get("epoch", 0)) for m in epochs_of(lr)])
            run = runs.get(trial.trial_id)
            if run is not None and run.info.status != "RUNNING" and int(run.data.metrics.get("epoch", 0)) >= last:
                continue
            out.append(trial)
        return out

    def catch_up(self, client, trials: list, exp_dir: str) -> list[str]:
        """After a resume: a trial that ended before it, whose reports or end never reached MLflow (its driver died
        with them queued: a tracking server that stalled, then a SIGKILL; the resume then named another trial the
        best, from what MLflow held), gets what MLflow lacks from Ray's saved results (its result.json), through
        the writer as if reported now: a missing run is made, epochs already logged are skipped, its end recorded.
        One query for the search's runs; nothing is sent for a trial MLflow holds in full. Returns their ids."""
        caught = []
        for trial in self.lacking(client, trials, ended_here=False):
            caught.append(trial.trial_id)
            saved = _saved_results(exp_dir, trial.trial_id)
            # a run made now for a trial that ran before the resume: its times are the trial's (Ray's last result's
            # time, less its seconds), not the resume's (it lasted 0.2 s, at the resume: a walkthrough)
            last = saved[-1] if saved else {}
            end_s, total_s = last.get("timestamp"), last.get("time_total_s")
            timed = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (end_s, total_s))
            ended_ms = int(end_s * 1000) if timed else None
            self._start(trial, int((end_s - total_s) * 1000) if timed else int(time.time() * 1000))
            for r in saved:
                if epochs_of(r):  # (a failure report's epochs since the trial's previous report too)
                    result = {k: v for k, v in r.items() if k != "config"}
                    self._writer.submit("epoch", trial.trial_id, str(trial), result, False)
            if trial.status == "ERROR":
                self.on_trial_error(None, trials, trial, ended_ms=ended_ms)
            else:
                self.on_trial_complete(None, trials, trial, ended_ms=ended_ms)
        return caught

    # ------------------------------------------------------------------ end of the search
    def close(self, interrupted: bool, on_slow=None) -> list[str]:
        """Flushes, then ends every child run still open (KILLED, outcome interrupted; completed where its last
        epoch's report came), then stops the writer.
        Returns the calls that failed. `on_slow`: called once when the flush takes more than 10 s."""
        self._ensure()
        for tid in sorted(self._open):
            if tid in self._reported_last:  # its last epoch reported (test metrics included): it completed, though
                # the search ended before Ray marked it so (a Ctrl-C: it was KILLED, "interrupted"; a walkthrough)
                name, node = self._reported_last[tid]
                self._writer.submit("finish", tid, name, "completed", "FINISHED", None, node, None, None)
            else:
                self._writer.submit("kill", tid, interrupted)
        self._open.clear()
        try:  # how long a search's end waits for MLflow to take its last records (a server that stopped answering)
            timeout = flush_seconds()
        except ValueError:  # (the pre-flight refused it: a tracker made outside a search)
            timeout = FLUSH_S
        self.flushed = self._writer.close(timeout, on_slow=on_slow)  # False: MLflow did not take everything in time
        return self.errors


def _node_fields(result: dict) -> dict:
    """Where a trial's report came from (Ray's hostname and node_ip, our node id): tagged on its run at its end."""
    return {k: v for k, v in result.items() if k in ("hostname", "node_ip", NODE_KEY)}


def _trial_number(trial) -> int | None:
    """Ray's count of the trial (its `experiment_tag` starts "<n>_"; 1 is the first the searcher proposed, the
    trainer default where the search enqueued it), or None."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    return int(head) if head.isdigit() else None


def end_stale_runs(client, experiment_id: str, parent_run_id: str, status: str = "KILLED") -> int:
    """Ends every child run of a search still marked RUNNING (e.g. after the driver was killed). Returns count."""
    n = 0
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, TAG_OUTCOME, "interrupted")
            client.set_terminated(run.info.run_id, status=status)
            n += 1
    return n


def _saved_results(exp_dir: str, trial_id: str) -> list[dict]:
    """A trial's results as Ray saved them (`<exp_dir>/<trial_id>/result.json`, one JSON result per line); [] when
    there are none (a trial that failed before any report) or the file cannot be read."""
    import json

    from . import storage

    try:
        text = storage.read_text(storage.join(exp_dir, trial_id, "result.json"))
    except Exception:  # noqa: BLE001 - no results saved: the end alone is recorded
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut short by the kill
            continue
    return out


def _full_config(config: dict) -> dict:
    """The complete trainer config of a trial (every field, so `python -m trainer --config` needs nothing else);
    the raw dict if it is invalid (the trial then fails with the trainer's message)."""
    try:
        return TrainConfig.from_dict(config).to_dict()
    except ConfigError:
        return config


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        return Path(path).read_text(errors="replace").strip()
    return str(getattr(trial, "error_msg", None) or "trial failed (no error file)")


def reconcile(client, experiment_id: str, parent_run_id: str, trials: list, max_epochs: int) -> None:
    """Makes MLflow agree with Ray's final trial list after a search (or a resumed one).

    A child run still RUNNING gets its trial's outcome (a trial that finished while the driver was dying never
    reached our callback). A child run whose trial Ray no longer knows (started after Ray's last experiment
    snapshot before a driver crash; Ray runs that work again under a new trial id) is ended and soft-deleted
    (`mlflow gc` removes it for good; `mlflow runs restore` brings it back), so each trial has exactly one run.
    """
    by_id = {t.trial_id: t for t in trials}
    for run in child_runs(client, experiment_id, parent_run_id):
        run_id = run.info.run_id
        trial = by_id.get(run.data.tags.get(TAG_TRIAL))
        if trial is None:
            client.set_tag(run_id, TAG_OUTCOME, "lost_before_restore")
            if run.info.status == "RUNNING":
                client.set_terminated(run_id, status="KILLED")
            client.delete_run(run_id)
            continue
        if run.info.status != "RUNNING":
            continue
        outcome = trial_outcome(trial.status, trial.last_result, max_epochs)
        status = {"failed": "FAILED", "unfinished": "KILLED"}.get(outcome, "FINISHED")
        outcome = "interrupted" if outcome == "unfinished" else outcome
        client.set_tag(run_id, TAG_OUTCOME, outcome)
        client.set_terminated(run_id, status=status)
