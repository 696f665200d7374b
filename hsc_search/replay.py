"""`hsc-search replay`: the learning curves of finished searches, replayed offline under other stopping rules.

A search that ran every trial to its full budget (FIFO) recorded each trial's objective at every epoch. Given
those curves, what a stopping rule would have done is a matter of bookkeeping: start the trials in some order as
`--concurrency` slots free up, feed each epoch's value to the rule, honour its decision (continue, stop, pause),
and count. The rules are Ray Tune's own scheduler classes (ASHA, HyperBand, the median stopping rule, FIFO),
driven here the way Ray's TuneController drives them, on simulated time and without Ray running; repeating it
over many random orders of the same configs gives the spread. Per setting it reports:

- epochs trained: every epoch of every trial the rule let run;
- epochs to best: epochs trained (all trials, in simulated-time order) until the best value seen so far first
  reaches the best of all the recorded curves within the tolerance; "never" when the rule stopped every trial
  that gets there before it got there. The same count as `benchmarks/asha_vs_fifo.py`'s "epochs to target",
  with the recorded search's best as the target;
- best seen: the best value of any epoch the rule let run (a trial's score is its best epoch, as the search
  ranks trials); best finished: the best score among the trials the rule let run all their epochs.

What a replay cannot show is in `CANNOT_SHOW` (printed with every table). No Ray instance, no search, no GPU.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import runs
from .runs import (TAG_DATA_FINGERPRINT, TAG_KIND, TAG_OUTCOME, TAG_RAY_AUTH, TAG_TRIAL, best_of, child_runs, default_tracking_uri,
                   epochs_of, folder_hint, plural, search_status, split_params, trial_outcome, typed_column,
                   without_password)
from .storage import write_text

DEFAULT_METRIC = "val/map_avg"
EPOCH_S_KEY = "time/epoch_s"  # the trainer's seconds per epoch, used with --timing recorded
TIME_ATTR = "epoch"  # the schedulers' time unit, as the search configures ASHA
META_FILE = runs.META_FILE  # the search settings in a Ray experiment folder

CANNOT_SHOW = (
    "A replay cannot show a sampler reacting to different results: the configs, and the order they were proposed "
    "in, are fixed by the recorded search (shuffled here); only the stopping decisions change. In a live search "
    "under another rule, TPE would see other values (stopped trials reported as pruned) and propose other configs "
    "after its start-up trials, for better or worse."
)


class ReplayError(ValueError):
    """Bad input (unknown run, no complete curves, unreachable store, bad setting): one line that says which."""


# ---------------------------------------------------------------------------------------------- the curves
@dataclass
class TrialCurve:
    """One trial that ran its full budget: its objective at epochs 1..E (values[0] is epoch 1)."""

    trial_id: str
    values: list[float]
    params: dict[str, str] = field(default_factory=dict)
    outcome: str = "completed"
    epoch_s: list[float] | None = None  # recorded seconds per epoch, when every epoch has one


@dataclass
class Curves:
    """The complete curves of one recorded search, in the order its trials started."""

    source: str
    metric: str
    mode: str
    max_epochs: int
    trials: list[TrialCurve]
    skipped: dict[str, str] = field(default_factory=dict)  # trial id -> why its curve is not replayed
    finished: bool | None = None  # the recorded search ended on its own (None: not known)
    running: str | None = None  # "search X is still running (driver ...)" while a live driver runs it

    @classmethod
    def from_values(cls, values: dict[str, Sequence[float]], mode: str = "max", metric: str = DEFAULT_METRIC,
                    source: str = "given curves") -> "Curves":  # fmt: skip
        """Curves from {trial_id: [value per epoch]} (all the same length), e.g. for tests."""
        lengths = {len(v) for v in values.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise ReplayError("curves must all have the same, non-zero number of epochs "
                              f"(got lengths {sorted(lengths)})")
        trials = [TrialCurve(tid, [float(x) for x in v]) for tid, v in values.items()]
        return cls(source, metric, mode, lengths.pop(), trials)

    def score(self, trial: TrialCurve) -> float:
        return best_of(trial.values, self.mode)

    @property
    def best(self) -> tuple[str, float]:
        """(trial id, score) of the best recorded trial: what a rule that stops nothing finds."""
        scores = [(self.score(t), t.trial_id) for t in self.trials]
        value, tid = (max if self.mode == "max" else min)(scores)
        return tid, value


@dataclass
class Recorded:
    """Every trial of one recorded search as its MLflow runs or its Ray folder hold it (the one reader of finished
    searches: the replay takes the complete curves, `warm_start` every trial).

    `raw` holds one record per trial, in start order: {trial_id, values: {epoch: value of metric}, secs: {epoch:
    time/epoch_s}, params: {searched name: value as a string, as MLflow holds params}, outcome: completed |
    stopped_early | failed | interrupted | None (a Ray folder knows only failed)}.
    """

    source: str
    metric: str
    mode: str
    max_epochs: int | None
    raw: list[dict]
    settings: dict[str, Any] = field(default_factory=dict)  # the search's settings as recorded (MLflow: strings)
    finished: bool | None = None  # the search ended on its own, not interrupted or still running (None: not known)
    fingerprint: dict | None = None  # its data's (trainer.fit.data_fingerprint; None: searches from before it)
    fixed: dict | None = None  # its space's fixed trainer values (None: not read, or not recorded)
    searched: set | None = None  # its space's searched names (None: not read, or not recorded)
    running: str | None = None  # "search X is still running (driver ...)" while a live driver runs it


def _complete(source: str, metric: str, mode: str, max_epochs: int | None, raw: list[dict],
              finished: bool | None = None, running: str | None = None) -> Curves:  # fmt: skip
    """Curves from raw per-trial records {trial_id, values: {epoch: v}, secs: {epoch: s}, params, outcome}, in
    start order. A curve is complete when it has a finite value at every epoch 1..max_epochs (max_epochs, when
    unknown, is the longest curve); the others are skipped with the reason. No complete curve is an error."""
    if not raw:
        raise ReplayError(f"{source}: no trials")
    if max_epochs is None:
        max_epochs = max((max(r["values"], default=0) for r in raw), default=0)
    if max_epochs < 1:
        raise ReplayError(f"{source}: no trial logged {metric} at any epoch")
    trials, skipped = [], {}
    for r in raw:
        vals = {e: v for e, v in r["values"].items() if v is not None and math.isfinite(v)}
        missing = [e for e in range(1, max_epochs + 1) if e not in vals]
        if r.get("outcome") == "failed":
            skipped[r["trial_id"]] = "failed"
        elif not vals:
            skipped[r["trial_id"]] = f"no {metric} values"
        elif missing and max(vals) < max_epochs and missing == list(range(max(vals) + 1, max_epochs + 1)):
            skipped[r["trial_id"]] = f"ended at epoch {max(vals)} of {max_epochs} ({_why_short(r.get('outcome'), finished)})"
        elif missing:
            skipped[r["trial_id"]] = f"no finite {metric} at epoch(s) {', '.join(map(str, missing[:5]))}"
        else:
            secs = r.get("secs") or {}
            epoch_s = [float(secs[e]) for e in range(1, max_epochs + 1)] if all(
                e in secs and math.isfinite(secs[e]) and secs[e] > 0 for e in range(1, max_epochs + 1)) else None
            trials.append(TrialCurve(r["trial_id"], [vals[e] for e in range(1, max_epochs + 1)], r.get("params") or {},
                                     r.get("outcome") or "completed", epoch_s))  # fmt: skip
    if not trials:
        why = "; ".join(f"{t}: {w}" for t, w in list(skipped.items())[:4]) + ("; ..." if len(skipped) > 4 else "")
        failed = all(w == "failed" for w in skipped.values())  # (told to record a FIFO search: a walkthrough)
        then = (f"{running}: replay it once it has finished" if running else
                "the search did not finish (interrupted, or still running): replay it once `hsc-search resume` has "
                "finished it" if finished is False else "every trial failed, so there is nothing to replay (their "
                "reasons are in the search's MLflow runs and its summary)" if failed else
                "record a FIFO search (hsc-search run --scheduler fifo)")  # fmt: skip
        raise ReplayError(f"no complete curves in {source}: none of its {len(raw)} trials ran all {max_epochs} "
                          f"epochs ({why}); a stopping rule can only be replayed on trials that ran their full "
                          f"budget: {then}")  # fmt: skip
    return Curves(source, metric, mode, max_epochs, trials, skipped, finished, running)


def _why_short(outcome: str | None, finished: bool | None) -> str:
    """Why a trial has fewer epochs than the budget, as the replay's skipped list says it."""
    if outcome is None:  # a Ray folder: of a search that did not finish, or without our record
        return ("stopped early or cut off: its search did not finish" if finished is False else
                "stopped early or cut off: the folder has no search record to tell")  # fmt: skip
    return outcome.replace("_", " ")


def curves_from_ray_dir(path: str | Path) -> Curves:
    """The complete curves of a search from its Ray results folder (`read_ray_dir`)."""
    rec = read_ray_dir(path)
    return _complete(rec.source, rec.metric, rec.mode, rec.max_epochs, rec.raw, rec.finished, rec.running)


def read_ray_dir(path: str | Path, flag: str = "--ray-dir") -> Recorded:
    """Every trial of a search from its Ray results folder `<storage>/<name>`: every `<trial_id>/result.json`
    (one JSON result per line; a line may carry a batch of epochs under `hsc/epochs_json`, see `runs.epochs_of`),
    the settings from `hsc_search.json` when the folder has one (metric, mode, max_epochs, and the space: only its
    searched names are taken from a trial's config), the params from each trial's `params.json`. Trials are taken
    in the order they started (their first result's timestamp minus its running time; Ray's timestamps have
    one-second resolution, so the recorded order is approximate). A trial is `failed` when it reported a failure
    the trainer called final, or when Ray recorded an error for it (`error.txt`) and it did not reach max_epochs.
    Errors name `flag`, the option the folder was given by."""
    if "://" in str(path):
        raise ReplayError(f"{flag} {path}: only a local folder is read; copy the search folder here first")
    root = Path(path).expanduser()
    if not root.is_dir():
        if root.exists():  # e.g. the MLflow database, given as the folder
            hint = f"; an MLflow store is --tracking-uri sqlite:///{root}" if root.suffix == ".db" else ""
            raise ReplayError(f"{flag} {root}: a file; expected the search's folder <storage>/<name>, as `hsc-search "
                              f"run` printed it{hint}")  # fmt: skip
        raise ReplayError(f"{flag} {root}: no such folder")
    settings: dict[str, Any] = {}
    fingerprint: dict | None = None
    fixed: dict | None = None
    searched: set[str] | None = None
    finished: bool | None = None  # the search ended on its own: a trial that stopped short without an error was
    # stopped; None for a folder without our record
    if (root / META_FILE).is_file():
        try:
            meta = json.loads((root / META_FILE).read_text())
            settings = meta.get("settings", {}) or {}
            finished = bool(meta.get("finished_at"))
            fingerprint = meta.get("data_fingerprint") if isinstance(meta.get("data_fingerprint"), dict) else None
            space_params = (meta.get("space") or {}).get("params")
            searched = set(space_params) if isinstance(space_params, dict) else None
            fixed = (meta.get("space") or {}).get("fixed")
            fixed = dict(fixed) if isinstance(fixed, dict) else None
        except (ValueError, AttributeError) as e:
            raise ReplayError(f"{flag} {root}: unreadable {META_FILE} ({e})") from None
    metric = settings.get("metric") or DEFAULT_METRIC
    mode = settings.get("mode") or "max"
    max_epochs = _int(settings.get("max_epochs"))
    files = sorted(root.glob("*/result.json"))
    if not files:
        if (root / META_FILE).is_file() and any(root.glob("*/checkpoint_*")):  # trained, its results not copied
            # here: Ray copies them at its snapshots, and a driver killed first leaves them in its session folder (a
            # walkthrough: "no trial has reported yet" of a search whose MLflow runs had every epoch)
            from .commands import resume_command

            pid = meta.get("parent_run_id")
            other = f"; or pass its parent run id instead ({pid}), whose trials MLflow holds" if pid else ""
            raise ReplayError(f"{flag} {root}: its trials' results are not in the folder (no <trial_id>/result.json; "
                              "Ray copies them there as the search goes, and its driver stopped first), though their "
                              f"checkpoints are: `{resume_command(str(root))}` brings them{other}")  # fmt: skip
        if (root / META_FILE).is_file():  # the search's own folder, before any trial reported
            raise ReplayError(f"{flag} {root}: no trial has reported yet (no <trial_id>/result.json): the search is "
                              "still starting, or stopped before its first epoch; try again once trials have run")  # fmt: skip
        hint = folder_hint(str(root))  # a trial's folder, or the storage folder: the search meant (as resume says)
        raise ReplayError(f"{flag} {root}: no trial folders (<trial_id>/result.json)"
                          + (hint or "; pass the search's folder <storage>/<name>, as `hsc-search run` printed it"))
    raw = []
    for f in files:
        values: dict[int, float] = {}
        secs: dict[int, float] = {}
        start, outcome = math.inf, None
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                result = json.loads(line)
                epochs = epochs_of(result)
            except (ValueError, TypeError) as e:
                raise ReplayError(f"{f}: line {n} is not a JSON result ({e})") from None
            if "timestamp" in result:
                start = min(start, float(result["timestamp"]) - float(result.get("time_total_s", 0) or 0))
            if "hsc/failed" in result:
                outcome = "failed"
            for m in epochs:
                if "epoch" not in m or m.get(metric) is None:
                    continue
                values[int(m["epoch"])] = float(m[metric])  # an epoch repeated after a restore: the later one
                if m.get(EPOCH_S_KEY) is not None:
                    secs[int(m["epoch"])] = float(m[EPOCH_S_KEY])
        params = {}
        if (f.parent / "params.json").is_file():
            try:
                params = {k: str(v) for k, v in json.loads((f.parent / "params.json").read_text()).items()
                          if searched is None or k in searched}  # fmt: skip
            except (ValueError, AttributeError):
                params = {}
        if outcome is None and (f.parent / "error.txt").is_file() and max(values, default=0) < (max_epochs or 0):
            outcome = "failed"  # Ray recorded an error and no retry reached the full budget
        if outcome is None and finished and values and max_epochs:
            outcome = "completed" if max(values) >= max_epochs else "stopped_early"
        raw.append({"trial_id": f.parent.name, "values": values, "secs": secs, "params": params,
                    "outcome": outcome, "start": start})  # fmt: skip
    if finished is False:  # a search that did not finish: Ray's saved state tells a stopped trial from a cut-off one
        from .ray_internals import saved_trial_statuses

        saved = saved_trial_statuses(root)
        for r in raw:
            status = saved.get(r["trial_id"])
            if r["outcome"] is None and status is not None and r["values"] and max_epochs:
                outcome = trial_outcome(status, {"epoch": max(r["values"])}, max_epochs)  # the one definition
                r["outcome"] = "interrupted" if outcome == "unfinished" else outcome  # cut off: MLflow's word
    raw.sort(key=lambda r: (r["start"], r["trial_id"]))
    if finished is False:  # records before finished_at existed (2026-12-03) have none: all its trials ran through
        n = _int(settings.get("num_samples"))
        finished = bool(n and len(raw) >= n and max_epochs and all(
            r["outcome"] == "failed" or max(r["values"], default=0) >= max_epochs for r in raw))  # fmt: skip
    running = None
    if finished is False:  # (told to `resume` a search still running: a walkthrough)
        from .searchlock import search_driver

        who = search_driver(str(root))
        running = f"search {root.name} is still running ({who})" if who else None
    return Recorded(f"Ray folder {root}", metric, mode, max_epochs, raw, settings, finished, fingerprint, fixed,
                    searched, running)  # fmt: skip


def _check_store(uri: str) -> None:
    """Fails fast, with one line, on a store that is not there (MLflow would retry an absent server for
    minutes, and would create an empty sqlite database where none is)."""
    from .runs import StoreError, check_store_to_read

    try:
        check_store_to_read(uri)
    except StoreError as e:
        raise ReplayError(str(e)) from None


def curves_from_mlflow(tracking_uri: str | None, experiment: str = "hsc-search", run_id: str | None = None) -> Curves:
    """The complete curves of a search from MLflow (`read_mlflow`)."""
    rec = read_mlflow(tracking_uri, experiment, run_id)
    return _complete(rec.source, rec.metric, rec.mode, rec.max_epochs, rec.raw, rec.finished, rec.running)


def read_mlflow(tracking_uri: str | None, experiment: str = "hsc-search", run_id: str | None = None,
                with_fixed: bool = False) -> Recorded:  # fmt: skip
    """Every trial of a search from MLflow: its parent run (`run_id`, else the latest search in `experiment`),
    whose params give metric, mode and max_epochs, and its child runs (tag `mlflow.parentRunId`), whose metric
    histories give the objective per epoch (step = epoch), whose params the searched values (the trainer's
    `effective.*` values left aside) and whose tag `hsc.outcome` the outcome. `with_fixed`: also the space's
    fixed values, from the parent's `search_space.yaml` (one download; a warm start compares them)."""
    uri = default_tracking_uri(tracking_uri)
    _check_store(tracking_uri)  # as given: its message names --tracking-uri or $MLFLOW_TRACKING_URI
    try:
        from .runs import StoreError, client_for, latest_search, search_of

        client = client_for(uri)
        try:
            if run_id is None:
                exp = client.get_experiment_by_name(experiment)
                if exp is None:
                    names = [e.name for e in client.search_experiments()]
                    raise ReplayError(f"MLflow experiment '{experiment}' not found at {without_password(uri)}; experiments: "
                                      f"{', '.join(names) or 'none'}")  # fmt: skip
                pid = latest_search(client, exp.experiment_id, experiment)  # the latest search that has trials
            else:  # a trial's run id names its search (also for `run --warm-start`)
                pid = search_of(client, run_id, uri)[0]
        except StoreError as e:
            raise ReplayError(str(e)) from None
        parent = client.get_run(pid)
        settings = dict(parent.data.params)
        try:
            fingerprint = json.loads(parent.data.tags.get(TAG_DATA_FINGERPRINT) or "null")
        except ValueError:  # an edited tag: compared by the data spec, as a search from before the tag
            fingerprint = None
        metric = settings.get("metric") or DEFAULT_METRIC
        mode = settings.get("mode") or "max"
        children = [c for c in child_runs(client, parent.info.experiment_id, pid)
                    if c.data.tags.get(TAG_KIND, "trial") == "trial"]  # fmt: skip
        if not children:
            raise ReplayError(f"run '{pid}' has no trial runs (child runs with tag mlflow.parentRunId = {pid}): "
                              "pass a search's parent run id")  # fmt: skip
        children.sort(key=lambda c: (c.info.start_time or 0, c.info.run_name or ""))
        seen: dict[str, str] = {}
        for c in children:  # one run per trial (two copies of one trial would share its replay: a crash)
            tid = c.data.tags.get(TAG_TRIAL)
            if tid and tid in seen:
                raise ReplayError(f"search run {pid}: runs {seen[tid]} and {c.info.run_id} are both trial {tid} (e.g. "
                                  "an import copied it twice); delete one (`mlflow runs delete --run-id ...`) and "
                                  "replay again")  # fmt: skip
            if tid:
                seen[tid] = c.info.run_id
        raw = []
        for c in children:
            def history(key: str) -> dict[int, float]:
                points = sorted(client.get_metric_history(c.info.run_id, key), key=lambda m: (m.step, m.timestamp))
                return {int(m.step): float(m.value) for m in points}  # a step logged twice: the later value

            raw.append({"trial_id": c.data.tags.get(TAG_TRIAL) or c.info.run_name or c.info.run_id[:8],
                        "values": history(metric), "secs": history(EPOCH_S_KEY),
                        "params": split_params(c.data.params)[0],
                        "outcome": c.data.tags.get(TAG_OUTCOME)})  # fmt: skip
    except ReplayError:
        raise
    except Exception as e:  # a store MLflow cannot read (bad URI, schema, permissions): one line, no traceback
        from .runs import http_failure

        raise ReplayError(f"cannot read MLflow at {uri}: {http_failure(e)}") from None
    running = None
    if search_status(parent) != "FINISHED":  # (told to `resume` a search still running: a walkthrough)
        from .searchlock import search_state

        state, said = search_state(parent.info.run_name, parent.info.status, parent.data.tags.get("hsc.experiment_dir"),
                                   pid, auth_mode=parent.data.tags.get(TAG_RAY_AUTH))  # fmt: skip
        running = said if state == "running" else None
    return Recorded(f"MLflow run {pid} ({parent.info.run_name or 'unnamed'}) at {uri}", metric, mode,
                    _int(settings.get("max_epochs")), raw, settings, search_status(parent) == "FINISHED",
                    fingerprint if isinstance(fingerprint, dict) else None,
                    *(_space_of(client, pid) if with_fixed else (None, None)), running)  # fmt: skip


def _space_of(client, parent_run_id: str) -> tuple[dict | None, set | None]:
    """(fixed values, searched names) of a search's space, from its parent run's `search_space.yaml`; None for
    what it lacks or when it cannot be read (nothing is then claimed about them)."""
    import tempfile

    import yaml

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # (a bar on the search's start lines)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(parent_run_id, "search_space.yaml", tmp)
            space = yaml.safe_load(Path(path).read_text()) or {}
    except Exception:  # noqa: BLE001 - an older search, a store without the artifact: not compared
        return None, None
    fixed, params = space.get("fixed"), space.get("params")
    return (dict(fixed) if isinstance(fixed, dict) else None), (set(params) if isinstance(params, dict) else None)


def _int(v: Any) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- Ray's internals
class RayParts:
    """What the replay takes from Ray Tune (see `ray_offline_parts`)."""

    def __init__(self, trial_cls, scheduler_base, fifo, asha, hyperband, median):
        self.Trial = trial_cls
        self.CONTINUE, self.PAUSE, self.STOP = scheduler_base.CONTINUE, scheduler_base.PAUSE, scheduler_base.STOP
        self.PENDING, self.RUNNING, self.PAUSED = trial_cls.PENDING, trial_cls.RUNNING, trial_cls.PAUSED
        self.TERMINATED, self.ERROR = trial_cls.TERMINATED, trial_cls.ERROR
        self.FIFOScheduler, self.ASHAScheduler, self.HyperBandScheduler = fifo, asha, hyperband
        self.MedianStoppingRule = median

    def fake_trial(self, trial_id: str):
        # `stub=True` skips looking up a registered trainable ("__fake" is none); the trial starts PENDING.
        return self.Trial("__fake", trial_id=trial_id, stub=True)


_PARTS: RayParts | None = None


def ray_offline_parts() -> RayParts:
    """Every use of Ray Tune beyond its documented user API, in one place (checked against Ray 2.60's source).

    The schedulers are public classes, but their hooks are meant to be called by Ray's TuneController, which a
    replay replaces (`_Controller`, `replay_once`). What that relies on:

    - `ray.tune.experiment.Trial(name, trial_id=..., stub=True)` (DeveloperAPI): a trial without a trainable.
      The schedulers read `trial.trial_id`, `trial.status` (PENDING / RUNNING / PAUSED / TERMINATED, set here
      with `trial.set_status`) and HyperBand `trial.is_saving` (False for a stub); HyperBand keys its dicts by
      the trial object.
    - The decisions `TrialScheduler.CONTINUE / PAUSE / STOP`, and the hooks in TuneController's order:
      `on_trial_add` when a trial is created, `choose_trial_to_run(controller)` to fill a free slot (PENDING, or
      a PAUSED trial the scheduler lets resume), `on_trial_result(controller, trial, result)` per epoch,
      `on_trial_complete(controller, trial, last_result)` when a RUNNING trial ends (its last epoch, or STOP),
      `on_trial_remove(controller, trial)` when a PAUSED or PENDING one is stopped (TuneController.stop_trial).
    - What the schedulers read from the controller argument: ASHA nothing; FIFO's `choose_trial_to_run` (which
      the median rule inherits) `get_trials()`; the median rule `get_live_trials()` (to see whether other
      trials wait, before it yields with PAUSE); HyperBand calls `stop_trial(trial)` on paused trials it drops.
    - ASHA with several brackets puts a new trial in one at random with numpy's global generator
      (`np.random.choice` in `on_trial_add`), which the replay seeds per order and restores afterwards.
    - Concurrency as `TuneConfig(max_concurrent_trials=N)` makes it: a ConcurrencyLimiter creates a new trial
      only while fewer than N are live (PENDING, RUNNING or PAUSED), and N run at once.
    """
    global _PARTS
    if _PARTS is None:
        from ray.tune.experiment import Trial
        from ray.tune.schedulers import (ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule,
                                         TrialScheduler)  # fmt: skip

        _PARTS = RayParts(Trial, TrialScheduler, FIFOScheduler, ASHAScheduler, HyperBandScheduler, MedianStoppingRule)
    return _PARTS


class _Controller:
    """The part of Ray's TuneController a scheduler sees (see `ray_offline_parts`)."""

    def __init__(self, parts: RayParts, scheduler, last_results: dict):
        self.parts, self.scheduler, self.last_results = parts, scheduler, last_results
        self.trials: list = []  # every trial added, in order
        self.ended: list = []  # (trial, status it was in when stopped) in the order they ended

    def get_trials(self) -> list:
        return self.trials

    def get_live_trials(self) -> set:
        done = (self.parts.TERMINATED, self.parts.ERROR)
        return {t for t in self.trials if t.status not in done}

    def stop_trial(self, trial) -> None:
        """As TuneController.stop_trial: a PENDING or PAUSED trial is removed from the scheduler, a RUNNING one
        completes with its last result; either ends TERMINATED."""
        p = self.parts
        if trial.status in (p.TERMINATED, p.ERROR):
            return
        was = trial.status
        trial.set_status(p.TERMINATED)  # first: a scheduler may look at the others' statuses from the hook
        if was in (p.PENDING, p.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
        else:
            self.scheduler.on_trial_complete(self, trial, dict(self.last_results.get(trial.trial_id, {})))
        self.ended.append((trial, was))


# ---------------------------------------------------------------------------------------------- the settings
RULES: dict[str, dict[str, type]] = {
    "fifo": {},
    "asha": {"grace": int, "rf": float, "brackets": int},
    "hyperband": {"rf": float},
    "median": {"grace": int, "min_samples": int},
    "oracle": {"grace": int},
}
RULE_DEFAULTS: dict[str, dict[str, float]] = {
    "fifo": {},
    "asha": {"grace": 1, "rf": 2, "brackets": 1},  # the search's defaults (grace 1, rf 2, one bracket)
    "hyperband": {"rf": 3},  # Ray's default eta
    "median": {"grace": 1, "min_samples": 3},  # Ray's default min_samples_required
    "oracle": {"grace": 1},
}
SPEC_HELP = ("fifo | asha[:grace=G,rf=R,brackets=B] | hyperband[:rf=R] | median[:grace=G,min_samples=M] | "
             "oracle[:grace=G]; unset keys take the defaults asha grace=1,rf=2,brackets=1; hyperband rf=3; "
             "median grace=1,min_samples=3; oracle grace=1")
ORACLE_NOTE = ("{label} is a reference, not a rule: it knows every trial's future. It stops each trial after "
               "{grace} epoch(s), except the first trial started that reaches the target, which trains until it "
               "does. A stopping rule that gives every trial {grace} epoch(s) would have to recognise the "
               "eventual best from those epochs alone to come near it: the headroom of the stopping rules")


@dataclass(frozen=True)
class Setting:
    rule: str
    options: tuple[tuple[str, float], ...] = ()
    spec: str = field(default="", compare=False)  # as the user wrote it, for error messages

    @property
    def opts(self) -> dict[str, float]:
        return {**RULE_DEFAULTS[self.rule], **dict(self.options)}

    @property
    def label(self) -> str:
        o = self.opts
        return self.rule + (":" + ",".join(f"{k}={_num(o[k])}" for k in RULES[self.rule]) if o else "")

    def check(self, max_epochs: int) -> str | None:
        """Why this setting cannot run on curves of `max_epochs` epochs, or None."""
        o = self.opts
        if "grace" in o and not 1 <= o["grace"] <= max_epochs:
            return f"grace={_num(o['grace'])} must be between 1 and the curves' {max_epochs} epochs"
        if "rf" in o and not o["rf"] > 1:
            return f"rf={_num(o['rf'])} must be above 1"
        for k in ("brackets", "min_samples"):
            if k in o and o[k] < 1:
                return f"{k}={_num(o[k])} must be at least 1"
        return None

    def build(self, parts: RayParts, metric: str, mode: str, max_t: int, reach: dict[str, int] | None = None):
        """A new Ray scheduler for this setting, configured as the search configures ASHA (time in epochs).
        `reach` (the oracle's knowledge): trial id -> the first epoch its curve reaches the target."""
        o = self.opts
        if self.rule == "fifo":
            return parts.FIFOScheduler()
        if self.rule == "oracle":
            return _oracle(parts, reach or {}, int(o["grace"]))
        if self.rule == "asha":
            return parts.ASHAScheduler(time_attr=TIME_ATTR, metric=metric, mode=mode, max_t=max_t,
                                       grace_period=int(o["grace"]), reduction_factor=o["rf"],
                                       brackets=int(o["brackets"]))  # fmt: skip
        if self.rule == "hyperband":
            return parts.HyperBandScheduler(time_attr=TIME_ATTR, metric=metric, mode=mode, max_t=max_t,
                                            reduction_factor=o["rf"])  # fmt: skip
        return parts.MedianStoppingRule(time_attr=TIME_ATTR, metric=metric, mode=mode, grace_period=int(o["grace"]),
                                        min_samples_required=int(o["min_samples"]))  # fmt: skip


def _oracle(parts: RayParts, reach: dict[str, int], grace: int):
    """The oracle (ORACLE_NOTE) as a Ray scheduler: FIFO's choice of the next trial, and a decision per epoch
    that reads the trial's future from `reach`."""

    class Oracle(parts.FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.winner: str | None = None  # the first trial added whose curve reaches the target

        def on_trial_add(self, tune_controller, trial) -> None:
            if self.winner is None and trial.trial_id in reach:
                self.winner = trial.trial_id
            super().on_trial_add(tune_controller, trial)

        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            last = max(grace, reach[trial.trial_id]) if trial.trial_id == self.winner else grace
            return parts.CONTINUE if int(result[TIME_ATTR]) < last else parts.STOP

    return Oracle()


def reach_epochs(curves: Curves, threshold: float) -> dict[str, int]:
    """Trial id -> the first epoch at which its curve reaches `threshold`, for the trials that do."""
    out = {}
    for t in curves.trials:
        e = next((i for i, v in enumerate(t.values, 1) if not _better(threshold, v, curves.mode)), None)
        if e is not None:
            out[t.trial_id] = e
    return out


def _num(v: float) -> str:
    return f"{v:g}"


ONCE_PER_RULE = " (give --settings once per rule: --settings fifo --settings asha:grace=2)"  # two rules in one


def parse_setting(spec: str) -> Setting:
    """`asha:grace=2,rf=3` -> Setting; anything else -> ReplayError naming the spec and what is wrong."""
    text = spec.strip()
    rule, _, rest = text.partition(":")
    rule = rule.strip().lower()
    if rule not in RULES:
        several = ONCE_PER_RULE if "," in rule or " " in rule else ""
        raise ReplayError(f"bad --settings '{spec}': unknown rule '{rule}'{several} (one of {', '.join(RULES)}; "
                          f"{SPEC_HELP})")  # fmt: skip
    if not RULES[rule] and rest.strip():  # (it said "'grace=2' is not KEY=VALUE with a key of fifo (none)")
        raise ReplayError(f"bad --settings '{spec}': {rule} takes no options")
    options = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in RULES[rule]:
            keys = ", ".join(RULES[rule]) or "none"
            several = ONCE_PER_RULE if key.split(":")[0] in RULES else ""  # (`asha:grace=2,median`: a review)
            raise ReplayError(f"bad --settings '{spec}': '{part}' is not KEY=VALUE with a key of {rule} "
                              f"({keys}){several}")  # fmt: skip
        kind = RULES[rule][key]
        try:
            num = float(value)
            if not math.isfinite(num) or (kind is int and num != int(num)):
                raise ValueError
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ReplayError(f"bad --settings '{spec}': {key}={value.strip()} is not {what}") from None
        options[key] = int(num) if kind is int else num
    return Setting(rule, tuple(sorted(options.items())), spec=text)


def default_settings(max_epochs: int) -> list[Setting]:
    """FIFO, ASHA at grace 1/2/3 x reduction factor 2/3/4 (one bracket) and at grace 1 with 2 brackets, HyperBand,
    the median stopping rule, and the oracle at grace 1 (ORACLE_NOTE); the rules whose grace period is the curves'
    epochs or more are left out (they stop nothing: three rows equal to FIFO's on a 3-epoch search, a walkthrough)."""
    out = [Setting("fifo")]
    out += [Setting("asha", (("brackets", 1), ("grace", g), ("rf", rf))) for g in (1, 2, 3) for rf in (2, 3, 4)]
    out += [Setting("asha", (("brackets", 2), ("grace", 1), ("rf", rf))) for rf in (2, 3)]
    out += [Setting("hyperband", (("rf", 3),)), Setting("median", (("grace", 1), ("min_samples", 3)))]
    out += [Setting("oracle", (("grace", 1),))]  # the reference the rules are read against
    return [s for s in out if s.check(max_epochs) is None and not (s.rule in ("asha", "median") and
                                                                    s.opts["grace"] >= max_epochs)]  # fmt: skip


# ---------------------------------------------------------------------------------------------- one replay
@dataclass
class Outcome:
    """What one setting did on one order of the trials."""

    epochs: int  # epochs trained, all trials
    to_best: float  # epochs trained until the best seen first reached the target; inf if it never did
    time_to_best: float  # simulated time of that moment (epochs of wall time, or seconds with recorded timing)
    makespan: float  # simulated time until the last trial ended
    best_seen: float  # best value of any epoch trained
    best_finished: float  # best score of a trial that trained all its epochs (nan if none did)
    finished: int  # trials that trained all their epochs
    stopped: int  # trials stopped earlier
    forced: int  # paused trials nothing would resume, stopped by the replay to go on (Ray would wait)
    pauses: int = 0  # PAUSE decisions (HyperBand's at its rungs; the median rule's yields)
    trained: dict[str, int] = field(default_factory=dict)  # trial id -> epochs trained


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def threshold_of(curves: Curves, tolerance: float) -> float:
    """The value the best seen must reach: the best recorded score less the tolerance (more, for mode min)."""
    best = curves.best[1]
    return best - tolerance if curves.mode == "max" else best + tolerance


def replay_once(curves: Curves, setting: Setting, order: Sequence[int], concurrency: int = 2,
                timing: str = "epoch", tolerance: float = 0.005, bracket_seed: int = 0) -> Outcome:  # fmt: skip
    """One replay: the trials `curves.trials[i] for i in order` start in that order as slots free up, each epoch
    takes one unit of time (`timing="epoch"`) or its recorded seconds (`"recorded"`), and the setting's Ray
    scheduler decides after every epoch, as in a live search with TuneConfig(max_concurrent_trials=concurrency).
    Results of the same moment are handled in the order their trials started that epoch. A paused trial resumes
    where it paused (Ray resumes it from a checkpoint)."""
    import numpy as np

    parts = ray_offline_parts()
    E, mode, metric = curves.max_epochs, curves.mode, curves.metric
    threshold = threshold_of(curves, tolerance)
    scheduler = setting.build(parts, metric, mode, E, reach=reach_epochs(curves, threshold))
    by_id = {t.trial_id: t for t in curves.trials}
    last_results: dict[str, dict] = {}
    ctrl = _Controller(parts, scheduler, last_results)
    if timing == "recorded":
        missing = [t.trial_id for t in curves.trials if t.epoch_s is None]
        if missing:
            raise ReplayError(f"--timing recorded: no {EPOCH_S_KEY} at every epoch for trial(s) "
                              f"{', '.join(missing[:5])}; use --timing epoch")  # fmt: skip
        duration: Callable[[TrialCurve, int], float] = lambda t, e: t.epoch_s[e - 1]  # noqa: E731
    elif timing == "epoch":
        duration = lambda t, e: 1.0  # noqa: E731
    else:
        raise ReplayError(f"bad --timing '{timing}': epoch or recorded")

    queue = deque(curves.trials[i].trial_id for i in order)
    done: dict[str, int] = {}  # trial id -> epochs trained
    events: list[tuple[float, int, Any]] = []  # (time the epoch ends, tie-break, trial)
    seq = itertools.count()
    now, epochs, forced, pauses = 0.0, 0, 0, 0
    best_seen = math.nan
    to_best = time_to_best = math.inf

    def running() -> int:
        return sum(1 for t in ctrl.trials if t.status == parts.RUNNING)

    def fill() -> None:
        while queue and len(ctrl.get_live_trials()) < concurrency:  # the ConcurrencyLimiter's rule
            trial = parts.fake_trial(queue.popleft())
            ctrl.trials.append(trial)
            done[trial.trial_id] = 0
            scheduler.on_trial_add(ctrl, trial)
        while running() < concurrency:
            trial = scheduler.choose_trial_to_run(ctrl)
            if trial is None:
                return
            trial.set_status(parts.RUNNING)
            if done[trial.trial_id] >= E:  # paused after its last epoch: resumed, it ends at once
                ctrl.stop_trial(trial)
                continue
            heapq.heappush(events, (now + duration(by_id[trial.trial_id], done[trial.trial_id] + 1), next(seq), trial))

    state = np.random.get_state()  # ASHA's bracket draw uses numpy's global generator
    np.random.seed(bracket_seed % 2**32)
    try:
        while True:
            fill()
            if not events:
                if queue:  # cannot happen: fill() adds a trial whenever fewer than `concurrency` are live
                    raise RuntimeError("replay stalled with trials waiting")  # pragma: no cover
                stuck = [t for t in ctrl.trials if t.status in (parts.PAUSED, parts.PENDING)]
                if not stuck:
                    break
                forced += 1  # a paused trial the scheduler never lets resume: Ray would wait for it forever
                ctrl.stop_trial(stuck[0])
                continue
            now, _, trial = heapq.heappop(events)
            tid = trial.trial_id
            e = done[tid] + 1
            done[tid] = e
            epochs += 1
            value = by_id[tid].values[e - 1]
            if math.isnan(best_seen) or _better(value, best_seen, mode):
                best_seen = value
            if math.isinf(to_best) and not _better(threshold, best_seen, mode):
                to_best, time_to_best = epochs, now
            result = {TIME_ATTR: e, "training_iteration": e, metric: value}
            last_results[tid] = result
            decision = scheduler.on_trial_result(ctrl, trial, dict(result))
            if trial.status != parts.RUNNING:  # ended by the scheduler from inside the hook
                continue
            if decision == parts.STOP or (decision == parts.CONTINUE and e >= E):
                ctrl.stop_trial(trial)  # STOP, or the trainable returned after its last epoch
            elif decision == parts.PAUSE:
                trial.set_status(parts.PAUSED)
                pauses += 1
            else:
                heapq.heappush(events, (now + duration(by_id[tid], e + 1), next(seq), trial))
    finally:
        np.random.set_state(state)

    finished_scores = [curves.score(by_id[t]) for t, n in done.items() if n >= E]
    return Outcome(
        epochs=epochs,
        to_best=to_best,
        time_to_best=time_to_best,
        makespan=now,
        best_seen=best_seen,
        best_finished=best_of(finished_scores, mode) if finished_scores else math.nan,
        finished=sum(1 for n in done.values() if n >= E),
        stopped=sum(1 for n in done.values() if n < E),
        forced=forced,
        pauses=pauses,
        trained=dict(done),
    )


# ---------------------------------------------------------------------------------------------- many orders
def orders_for(n_trials: int, n_orders: int, seed: int) -> list[list[int]]:
    """`n_orders` random orders of the trials (reproducible from `seed`)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [[int(i) for i in rng.permutation(n_trials)] for _ in range(n_orders)]


def quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """(25th, 50th, 75th percentile), linear between neighbours; inf where a neighbour is inf; nan values out."""
    v = sorted(x for x in xs if not math.isnan(x))
    if not v:
        return (math.nan,) * 3

    def q(p: float) -> float:
        pos = p * (len(v) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        if v[lo] == v[hi] or math.isinf(v[lo]) or math.isinf(v[hi]):
            return v[hi] if math.isinf(v[hi]) else v[lo]
        return v[lo] + (v[hi] - v[lo]) * (pos - lo)

    return q(0.25), q(0.5), q(0.75)


@dataclass
class SettingSummary:
    setting: Setting
    outcomes: list[Outcome]
    recorded: Outcome  # the trials in the recorded order
    fifo_ratio_trained: float | None = None  # median over orders of FIFO's epochs / this setting's (paired)
    fifo_ratio_to_best: float | None = None

    def stat(self, key: str, mode: str | None = None) -> tuple[float, float, float]:
        """Quartiles over the orders. With `mode`, an order without a value (best_finished where no trial finished)
        ranks below every score and comes out nan where a quartile falls on it (left out, the median of the others
        read as if most orders finished a trial: the replay's oracle row, which usually finishes none)."""
        values = [float(getattr(o, key)) for o in self.outcomes]
        if mode is None:
            return quartiles(values)
        worst = -math.inf if mode == "max" else math.inf
        q = quartiles([worst if math.isnan(v) else v for v in values])
        return tuple(math.nan if v == worst else v for v in q)  # type: ignore[return-value]

    @property
    def reached(self) -> float:
        return sum(1 for o in self.outcomes if math.isfinite(o.to_best)) / len(self.outcomes)


@dataclass
class ReplayReport:
    curves: Curves
    settings: list[SettingSummary]
    orders: int
    seed: int
    concurrency: int
    tolerance: float
    timing: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


MAX_ORDERS = 10_000  # every order replays every setting: 0.05-0.1 s an order with the default settings on 16 trials


def _check_numbers(orders: int, concurrency: int, tolerance: float, seed: int = 0) -> None:
    if not 0 <= seed < 2**32:  # numpy's seeds (a traceback: "expected non-negative integer"), as `run --seed`
        raise ReplayError(f"--seed {seed}: must be in [0, 2**32 - 1]")
    if orders < 1:
        raise ReplayError(f"--orders {orders}: must be at least 1")
    if orders > MAX_ORDERS:
        raise ReplayError(f"--orders {orders}: at most {MAX_ORDERS} (every order replays every setting, 0.05-0.1 s "
                          "an order with the default settings on a 16-trial search; the default 200 already gives "
                          "stable quartiles)")  # fmt: skip
    if concurrency < 1:
        raise ReplayError(f"--concurrency {concurrency}: must be at least 1")
    if not 0 <= tolerance < math.inf:  # (inf: every rule "reached the best" at its first epoch)
        raise ReplayError(f"--tolerance {tolerance}: must be a number, 0 or more")


def replay(curves: Curves, settings: Sequence[Setting] | None = None, orders: int = 200, seed: int = 0,
           concurrency: int = 2, tolerance: float = 0.005, timing: str = "epoch") -> ReplayReport:  # fmt: skip
    """Every setting on the same `orders` random orders (and on the recorded order). FIFO is always replayed
    (as the baseline of the ratio columns); it is added first when `settings` lacks it."""
    import time

    t0 = time.perf_counter()
    _check_numbers(orders, concurrency, tolerance, seed)
    notes = []
    if settings is None:
        settings = default_settings(curves.max_epochs)
    else:
        for s in settings:
            why = s.check(curves.max_epochs)
            if why:
                raise ReplayError(f"bad --settings '{s.spec or s.label}': {why}")
    settings = list(dict.fromkeys(settings))  # no duplicates, order kept
    if not any(s.rule == "fifo" for s in settings):
        settings.insert(0, Setting("fifo"))
        notes.append("fifo added as the baseline of the FIFO/x columns")
    n = len(curves.trials)
    # the permutations act on the trials sorted by id, not on the list as the source gave it: MLflow lists trials
    # by start time, a Ray folder by one-second timestamps, and the same seed gave the two other tables (a walkthrough)
    canonical = sorted(range(n), key=lambda i: curves.trials[i].trial_id)
    perms = [[canonical[j] for j in p] for p in orders_for(n, orders, seed)]
    summaries = []
    for s in settings:
        try:
            s.build(ray_offline_parts(), curves.metric, curves.mode, curves.max_epochs)
        except AssertionError as e:  # Ray checks its scheduler arguments with asserts
            why = e or "assertion failed"
            raise ReplayError(f"bad --settings '{s.spec or s.label}': Ray refused it ({why})") from None
        outs = [replay_once(curves, s, p, concurrency, timing, tolerance, bracket_seed=seed * 100_003 + i)
                for i, p in enumerate(perms)]  # fmt: skip
        rec = replay_once(curves, s, list(range(n)), concurrency, timing, tolerance, bracket_seed=seed)
        summaries.append(SettingSummary(s, outs, rec))
    fifo = next(x for x in summaries if x.setting.rule == "fifo")
    for x in summaries:
        x.fifo_ratio_trained = quartiles([a.epochs / b.epochs for a, b in zip(fifo.outcomes, x.outcomes)])[1]
        x.fifo_ratio_to_best = quartiles([a.to_best / b.to_best if math.isfinite(b.to_best) else 0.0
                                          for a, b in zip(fifo.outcomes, x.outcomes)])[1]  # fmt: skip
    if curves.skipped:
        notes.append(f"{len(curves.skipped)} of {n + len(curves.skipped)} trials left out (incomplete curves: "
                     + "; ".join(f"{t} {w}" for t, w in list(curves.skipped.items())[:3])
                     + ("; ..." if len(curves.skipped) > 3 else "")
                     + "); only complete curves are replayed, so the best of a search that stopped trials early "
                     "is the best among its survivors")  # fmt: skip
    for x in summaries:
        if x.setting.rule == "oracle":
            notes.append(ORACLE_NOTE.format(label=x.setting.label, grace=x.setting.opts["grace"]))
        if x.setting.rule == "hyperband":
            eta = x.setting.opts["rf"]
            first = int(round(math.log(curves.max_epochs) / math.log(eta))) + 1  # Ray's first bracket: n0(s=0)
            if concurrency <= first:
                notes.append(f"{x.setting.label}: Ray's HyperBand puts a new trial in its first bracket ({first} "
                             f"trials, no stopping) whenever fewer than {first} of that bracket's trials are live; "
                             f"with --concurrency {concurrency} (paused trials count as live) every trial lands "
                             f"there and runs its full budget, as under FIFO; replay with --concurrency "
                             f"{first + 1} or more to see its other brackets")  # fmt: skip
    forced = {x.setting.label: sum(o.forced for o in x.outcomes) for x in summaries}
    for label, k in forced.items():
        if k:
            notes.append(f"{label}: {k} paused trial(s) over all orders that the scheduler never resumed and "
                         "Ray would have waited for; the replay stopped them to go on")  # fmt: skip
    return ReplayReport(curves, summaries, orders, seed, concurrency, tolerance, timing,
                        time.perf_counter() - t0, notes)  # fmt: skip


# ---------------------------------------------------------------------------------------------- output
def _fmt(v: float, digits: int = 0) -> str:
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "never"
    return f"{v:.{digits}f}" if digits else f"{v:g}"


def _spread(q: tuple[float, float, float], digits: int = 0) -> str:
    lo, med, hi = q
    if math.isnan(med):
        return "-"
    if lo == hi:
        return _fmt(med, digits)
    low, high = ("none" if math.isnan(q) else _fmt(q, digits) for q in (lo, hi))  # a quartile on orders with no
    return f"{_fmt(med, digits)} [{low}-{high}]"  # value (nothing finished): the low end for max, the high for min


def _ratio(r: float | None) -> str:
    return "-" if r is None or math.isnan(r) else f"{r:.2f}x"


COLUMNS = ("setting", "epochs trained", "FIFO/x trained", "epochs to best", "FIFO/x to best", "reached best",
           "best seen", "best finished", "trials finished")  # fmt: skip


def table_rows(report: ReplayReport) -> list[list[str]]:
    rows = []
    for x in report.settings:
        rows.append([
            x.setting.label,
            _spread(x.stat("epochs")),
            _ratio(x.fifo_ratio_trained),
            _spread(x.stat("to_best")),
            _ratio(x.fifo_ratio_to_best),
            f"{x.reached:.0%}",
            _spread(x.stat("best_seen"), 4),
            _spread(x.stat("best_finished", report.curves.mode), 4),
            _spread(x.stat("finished")),
        ])  # fmt: skip
    return rows


FEW_CURVES = 3  # below this many complete curves a replay's rows are said to compare next to nothing


def render(report: ReplayReport) -> str:
    """The header, one Markdown table (settings as rows, aligned for a terminal), and how to read it."""
    c = report.curves
    tid, best = c.best
    # trials left out: said again in the notes, with the reasons; here so that it is read before the table
    left_out = [f"warning: {len(c.skipped)} of {len(c.trials) + len(c.skipped)} trials are left out (ended early: "
                "stopped, interrupted or failed): the rows compare rules on the survivors only, the fifo row too (a "
                "search whose every trial ran its full budget, e.g. one run with --scheduler fifo that nothing cut "
                "short, replays in full)"] if c.skipped else []
    lines = [
        f"replay of {c.source}",
        f"{plural(len(c.trials), 'complete curve')} x {c.max_epochs} epochs, {c.metric} ({c.mode}); "
        f"best recorded {best:.4f} "
        f"(trial {tid}); target {threshold_of(c, report.tolerance):.4f} (tolerance {report.tolerance:g})",
        *left_out,
        *([f"warning: only {plural(len(c.trials), 'complete curve')}: a stopping rule has next to nothing to choose "
           "between, so the rows barely differ; replay a search of more trials (a FIFO search of 8 or more, say)"]
          if len(c.trials) < FEW_CURVES and c.finished is not False else []),  # (a 1-trial warm start replayed as
        # 15 equal rows: a walkthrough; for a search that did not finish, resume is the advice, below)
        *([f"warning: {c.running}: only the trials it has ended are replayed; replay it again once it has finished"]
          if c.running else
          ["warning: the recorded search did not finish (interrupted, or still running): only the trials it got to "
           "are replayed; replay it once `hsc-search resume` has finished it"] if c.finished is False else []),
        f"{plural(report.orders, 'random order')} (seed {report.seed}), {plural(report.concurrency, 'trial')} "
        "at once, "
        f"{'one time unit per epoch' if report.timing == 'epoch' else 'recorded seconds per epoch'}; "
        f"replayed in {report.seconds:.1f} s",
        "",
    ]
    rows = [list(COLUMNS)] + table_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    fmt = lambda r: "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    lines.append(fmt(rows[0]))
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    lines += [fmt(r) for r in rows[1:]]
    lines += [
        "",
        "Median [25th-75th percentile] over the orders. epochs to best: epochs trained (all trials, in simulated "
        "time) until the best value seen first reached the target; never = the rule stopped every trial that gets "
        "there first. FIFO/x: FIFO's count over this setting's, on the same order (median; 0 where this setting "
        "never reached the target). reached best: share of orders that reached it. best seen: best epoch of any "
        "trial the rule let run; best finished: best score of a trial it let run all its epochs (- or none: "
        "orders in which no trial finished, ranked below every score).",
        *(f"note: {n}" for n in report.notes),
        CANNOT_SHOW,  # (it starts "A replay cannot show ...")
    ]
    return "\n".join(lines)


def to_json(report: ReplayReport) -> dict:
    c = report.curves

    def num(v: float) -> float | str | None:
        return None if math.isnan(v) else ("inf" if math.isinf(v) else v)

    def stats(x: SettingSummary, key: str) -> dict:
        q1, med, q3 = x.stat(key, c.mode if key == "best_finished" else None)  # as the table shows them
        return {"median": num(med), "q1": num(q1), "q3": num(q3), "per_order": [num(float(getattr(o, key)))
                                                                                for o in x.outcomes]}  # fmt: skip

    keys = ("epochs", "to_best", "time_to_best", "makespan", "best_seen", "best_finished", "finished", "stopped")
    # params as the values they were (MLflow and our read of Ray's params.json hold them as text), a type per param
    names = sorted({k for t in c.trials for k in t.params})
    typed = {k: typed_column([t.params.get(k) for t in c.trials]) for k in names}
    params = [{k: typed[k][i] for k in names if k in t.params} for i, t in enumerate(c.trials)]
    return {
        "source": c.source,
        "metric": c.metric,
        "mode": c.mode,
        "max_epochs": c.max_epochs,
        "trials": [{"trial_id": t.trial_id, "score": c.score(t), "params": p} for t, p in zip(c.trials, params)],
        "skipped": c.skipped,
        "search_finished": c.finished,
        "best_recorded": {"trial_id": c.best[0], "score": c.best[1]},
        "target": threshold_of(c, report.tolerance),
        "tolerance": report.tolerance,
        "orders": report.orders,
        "seed": report.seed,
        "concurrency": report.concurrency,
        "timing": report.timing,
        "seconds": report.seconds,
        "settings": [
            {
                "setting": x.setting.label,
                **{k: stats(x, k) for k in keys},
                "reached": x.reached,
                "fifo_ratio_trained": x.fifo_ratio_trained,
                "fifo_ratio_to_best": x.fifo_ratio_to_best,
                "forced_stops": sum(o.forced for o in x.outcomes),
                "recorded_order": {k: num(float(getattr(x.recorded, k))) for k in keys},
            }
            for x in report.settings
        ],
        "notes": report.notes,
        "cannot_show": CANNOT_SHOW,
    }


def run_replay(run_id: str | None = None, ray_dir: str | None = None, experiment: str = "hsc-search",
               tracking_uri: str | None = None, orders: int = 200, seed: int = 0, concurrency: int = 2,
               tolerance: float = 0.005, specs: Sequence[str] = (), json_out: str | Path | None = None,
               timing: str = "epoch") -> ReplayReport:  # fmt: skip
    """What `hsc-search replay` does: read the curves, replay every setting (`json_out`: checked first, before
    the replay's seconds to minutes; `write_json` writes it, once the table is out)."""
    if run_id and ray_dir:
        raise ReplayError("pass --run-id or --ray-dir, not both")
    if timing not in ("epoch", "recorded"):
        raise ReplayError(f"bad --timing '{timing}': epoch or recorded")
    settings = [parse_setting(s) for s in specs] or None  # bad specs fail before reading anything
    if settings:  # one row each (`asha` and `asha:grace=1` given together made two equal rows)
        settings = list({s.label: s for s in settings}.values())  # (in the order first given)
    _check_numbers(orders, concurrency, tolerance, seed)
    if json_out:  # before the replay, which takes seconds to minutes
        from .runs import out_file_problem

        problem = out_file_problem(json_out, "replay.json", "--json", kind="replay")
        if problem:
            raise ReplayError(problem)
    curves = curves_from_ray_dir(ray_dir) if ray_dir else curves_from_mlflow(tracking_uri, experiment, run_id)
    return replay(curves, settings, orders=orders, seed=seed, concurrency=concurrency, tolerance=tolerance,
                  timing=timing)  # fmt: skip


def write_json(report: ReplayReport, json_out: str | Path) -> None:
    """Writes the replay's JSON (`--json`); a file that cannot be made after all (`--json /proc/x.json`, which the
    check before the replay passes) is one line, after the table is printed (it was lost: a walkthrough)."""
    out = Path(json_out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(str(out), json.dumps(to_json(report), indent=1) + "\n")  # whole or not at all
    except OSError as e:
        raise ReplayError(f"--json {out}: cannot write ({e.strerror or e}); the table above is the replay") from None
