"""MLflow tracking written by our own code (Ray's MLflowLoggerCallback is not good enough; STACK_NOTES.md).

One parent run per search, one nested child run per trial. The Tune callback `MlflowTracker` runs on the driver
and hands every MLflow call to one background thread (`_Writer`), so the Tune event loop never waits on the
tracking server; each call is retried with exponential back-off, so a server that is unreachable for a while
loses nothing. Per epoch a trial costs one `log_batch` call. Of the canonical correlations only the top
`CCA_TOP_METRICS` become MLflow metrics; the whole spectrum, per epoch, is the trial's `cca_spectrum.csv`.

Exactly one child run per trial, also across `hsc-search resume`: the child is found by its tags
(`mlflow.parentRunId`, `hsc.trial_id`) before one is created, and epochs already logged are not logged again.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from ray import tune

from trainer import ConfigError, TrainConfig

from .trial_plots import cca_spectrum_svg, loss_weights_svg
from .runs import (
    CCA_SPECTRUM_ARTIFACT,
    CCA_TOP_METRICS,
    CONFIG_ARTIFACT,
    EFFECTIVE_KEY,
    FAILED_KEY,
    NODE_KEY,
    PLOT_KEYS,
    TAG_ERROR,
    TAG_KIND,
    TAG_NODE,
    TAG_OUTCOME,
    TAG_PARENT,
    TAG_TRIAL,
    best_of,
    child_runs,
    client_for,
    epochs_of,
    find_child_run,
    retry,
    score_key,
    trial_outcome,
)

log = logging.getLogger(__name__)

class _Writer:
    """One background thread that executes queued MLflow calls in order, each with retries."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="hsc-mlflow-writer", daemon=True)
        self._thread.start()
        self.errors: list[str] = []

    def submit(self, fn: Callable[[], Any], what: str) -> None:
        self._queue.put((fn, what))

    def _loop(self) -> None:
        while True:
            fn, what = self._queue.get()
            try:
                if fn is None:
                    return
                retry(fn, what)
            except Exception as e:
                msg = f"mlflow: {what} failed after retries: {e}"
                log.error(msg)
                self.errors.append(msg)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 120.0) -> bool:
        """Waits until every queued call ran; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout: float = 120.0) -> bool:
        ok = self.flush(timeout)
        self._queue.put((None, "stop"))
        self._thread.join(timeout=5)
        return ok


def numeric_metrics(result: dict) -> dict[str, float]:
    """The metric keys of a Tune result that are ours (finite numbers)."""
    keep = ("epoch", "loss/", "val/", "test/", "weight/", "logvar/", "cca/", "time/", "perf/")
    return {
        k: float(v)
        for k, v in result.items()
        if k.startswith(keep) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def mlflow_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics that become MLflow metrics: all but the canonical correlations after the top few (a run page
    would otherwise open on a chart per correlation); the whole spectrum goes to `cca_spectrum.csv`."""
    top = {f"cca/rho_{i:02d}" for i in range(CCA_TOP_METRICS)}
    return {k: v for k, v in metrics.items() if not k.startswith("cca/rho_") or k in top}


def spectrum_csv(by_epoch: dict[int, dict[str, float]]) -> str:
    """epoch, rho_00, rho_01, ... : one line per epoch (the canonical correlations, largest first)."""
    names = sorted({k for values in by_epoch.values() for k in values if k.startswith("cca/rho_")})
    lines = [",".join(["epoch"] + [n.removeprefix("cca/") for n in names])]
    for epoch, values in sorted(by_epoch.items()):
        lines.append(",".join([str(epoch)] + [repr(values[n]) if n in values else "" for n in names]))
    return "\n".join(lines) + "\n"


class MlflowTracker(tune.Callback):
    """A Tune callback that mirrors every trial into a nested MLflow child run of the search's parent run.

    Args:
        tracking_uri: MLflow tracking URI (None = MLflow's default, sqlite:///mlflow.db).
        experiment_id: the MLflow experiment of the parent run.
        parent_run_id: the search's parent run.
        max_epochs: the full budget; a trial that ends before it was stopped early (ASHA).
        searched: names of the searched parameters (logged as params; the full config goes to config.yaml).
    """

    def __init__(self, tracking_uri: str | None, experiment_id: str, parent_run_id: str, max_epochs: int,
                 searched: list[str], metric: str = "val/map_avg", mode: str = "max"):  # fmt: skip
        self.metric, self.mode = metric, mode
        self._restored = False  # after Tuner.restore a trial's child run may exist already: look it up
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.max_epochs = max_epochs
        self.searched = list(searched)
        self._runs: dict[str, str] = {}  # trial id -> child run id
        self._logged: dict[str, int] = {}  # trial id -> last epoch logged
        self._nodes: dict[str, str] = {}
        self._history: dict[str, dict[int, dict[str, float]]] = {}  # trial -> epoch -> plotted metrics
        self._scores: dict[str, dict[int, float]] = {}  # trial -> epoch -> the objective
        self._params: dict[str, list] = {}  # trial -> searched params not yet logged (touched on the main thread only)
        self._started: set[str] = set()  # trials whose start was handled here (main thread only)
        self._open: set[str] = set()  # trial ids whose child run has not been ended
        # Trials whose end is queued already, or whose last report came (set on the main thread, read by the
        # writer): their remaining calls are merged into the end's (config.yaml into its one upload, epochs into its
        # one log_batch); a search interrupted before that end still logs them (`close`).
        self._ending: set[str] = set()
        self._deferred: dict[str, dict] = {}  # trial -> {"metrics", "params", "tags", "files"} (writer thread only)
        self._writer: _Writer | None = None
        self._client = None

    # Ray pickles callbacks with the Tuner (and restores them from that pickle): keep the thread out.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_writer"] = None
        state["_client"] = None
        state["_ending"], state["_deferred"] = set(), {}
        return state

    def _defer(self, tid: str) -> dict:
        return self._deferred.setdefault(tid, {"metrics": [], "params": [], "tags": [], "files": {}})

    def _ensure(self) -> None:
        if self._writer is None:
            self._writer = _Writer()
            self._client = client_for(self.tracking_uri)

    @property
    def errors(self) -> list[str]:
        return self._writer.errors if self._writer else []

    # ------------------------------------------------------------------ Tune hooks
    def setup(self, **info) -> None:
        self._ensure()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._ensure()
        config = dict(trial.config)
        tid, name = trial.trial_id, str(trial)
        self._open.add(tid)

        # a restored search, or a retried trial (seen here before; its run may still wait in the writer's queue)
        known = self._restored or tid in self._started
        self._started.add(tid)
        self._ending.discard(tid)  # a retried trial runs again: its calls go out as they come
        from mlflow.entities import Param

        # logged with the trial's first metrics (one MLflow call fewer per trial), or when it ends without any
        self._params[tid] = [Param(k, str(config[k])) for k in self.searched if k in config]

        def start() -> None:
            client = self._client
            run = find_child_run(client, self.experiment_id, self.parent_run_id, tid) if known else None
            if run is None:
                run = client.create_run(
                    self.experiment_id,
                    run_name=name,
                    tags={TAG_PARENT: self.parent_run_id, TAG_TRIAL: tid, TAG_KIND: "trial", TAG_OUTCOME: "running"},
                )
                self._logged[tid] = 0
            else:  # resumed search or retried trial: continue the same child run
                client.update_run(run.info.run_id, status="RUNNING")
                client.set_tag(run.info.run_id, TAG_OUTCOME, "running")
                history = client.get_metric_history(run.info.run_id, "epoch")
                self._logged[tid] = int(max((m.step for m in history), default=0))
            run_id = run.info.run_id
            self._runs[tid] = run_id
            if self._logged[tid] == 0:
                text = yaml.safe_dump(_full_config(config), sort_keys=False)
                if tid in self._ending:  # the trial has ended already: one upload with its plots
                    self._defer(tid)["files"][CONFIG_ARTIFACT] = text
                else:  # visible while the trial runs
                    _upload(client, run_id, {CONFIG_ARTIFACT: text})

        self._writer.submit(start, f"start child run of {name}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._ensure()
        tid = trial.trial_id
        if FAILED_KEY in result:  # a failure report carries no epoch; on_trial_complete ends the run as failed
            return
        params = self._params.pop(tid, [])
        if EFFECTIVE_KEY in result:  # what the trainer resolved from the data (auto values, clamps)
            from mlflow.entities import Param

            params += [Param(f"effective.{k}", str(v)) for k, v in json.loads(result[EFFECTIVE_KEY]).items()]
        epoch = int(result.get("epoch", 0))
        if epoch >= self.max_epochs:  # the trial's last report: its end follows, so log both in one call
            self._ending.add(tid)
        epochs = [numeric_metrics(m) for m in epochs_of(result)]  # since the last report (all after a restore)
        node = f"{result.get('hostname', '?')} {result.get('node_ip', '?')} node {str(result.get(NODE_KEY, '?'))[:12]}"
        history = self._history.setdefault(tid, {})
        scores = self._scores.setdefault(tid, {})
        for m in epochs:
            history[int(m.get("epoch", 0))] = {k: v for k, v in m.items() if k.startswith(PLOT_KEYS)}
            if self.metric in m:
                scores[int(m["epoch"])] = m[self.metric]
        epochs = [mlflow_metrics(m) for m in epochs]

        def log_epoch() -> None:
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            # epochs already logged before a resume are skipped: the resumed trial repeats them exactly
            batch = [Metric(k, v, now, int(m["epoch"])) for m in epochs if m["epoch"] > self._logged.get(tid, 0)
                     for k, v in m.items()]  # fmt: skip
            if not batch and not params:
                return
            tags = []
            if self._nodes.get(tid) != node:
                seen = self._nodes.get(tid)
                self._nodes[tid] = node
                tags.append(RunTag(TAG_NODE, node if seen is None else f"{seen}, {node}"))
            if tid in self._ending:  # logged with the trial's end, in the same call
                deferred = self._defer(tid)
                deferred["metrics"] += batch
                deferred["params"] += params
                deferred["tags"] += tags
            else:
                _log_batch(self._client, self._runs[tid], batch, params, tags)
            self._logged[tid] = epoch

        self._writer.submit(log_epoch, f"log epoch {epoch} of {trial}")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._ensure()
        tid = trial.trial_id
        self._writer.submit(
            lambda: self._client.set_tag(self._runs[tid], "hsc.retried", "true"), f"tag retry of {trial}"
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        outcome = trial_outcome("TERMINATED", result, self.max_epochs)
        if outcome == "failed":
            self._finish(trial, outcome, "FAILED", error=result[FAILED_KEY])
        else:
            self._finish(trial, outcome, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, "failed", "FAILED", error=_error_text(trial))

    def _finish(self, trial, outcome: str, status: str, error: str | None = None) -> None:
        self._ensure()
        tid = trial.trial_id
        self._open.discard(tid)
        self._ending.add(tid)
        params = self._params.pop(tid, [])  # a trial that ended before its first report

        def finish() -> None:
            run_id = self._runs.get(tid)
            if run_id is None:  # the trial failed before its run was created
                return
            from mlflow.entities import Metric, RunTag

            client = self._client
            # read, not taken: the writer retries this whole call when the server fails, and the retry must log
            # the same; taken once the run has ended
            deferred = self._deferred.get(tid) or {"metrics": [], "params": [], "tags": [], "files": {}}
            tags = [RunTag(TAG_OUTCOME, outcome)]
            if error:
                tags.append(RunTag(TAG_ERROR, error[-4900:]))  # MLflow tag values are capped at 5000 chars
            metrics = list(deferred["metrics"])
            by_epoch = self._scores.get(tid, {})
            if sorted(by_epoch) == list(range(1, len(by_epoch) + 1)):  # every epoch seen here (else: read back)
                score = best_of(by_epoch.values(), self.mode)
                if score is not None:
                    metrics.append(Metric(score_key(self.metric, self.mode), score, int(time.time() * 1000), 0))
            _log_batch(client, run_id, metrics, deferred["params"] + params, deferred["tags"] + tags)
            files = dict(deferred["files"])
            try:
                files.update(self._plot_files(tid, run_id))
            except Exception as e:  # plots are a nicety; never fail the run over them
                log.warning("plots for %s failed: %s", trial, e)
            _upload(client, run_id, files)
            client.set_terminated(run_id, status=status)
            self._deferred.pop(tid, None)

        self._writer.submit(finish, f"finish child run of {trial} ({outcome})")

    def _plot_files(self, tid: str, run_id: str) -> dict[str, str]:
        """The trial's pictures and spectrum file: artifact path -> text."""
        by_epoch = self._history.get(tid, {})
        # not all seen here: read back what MLflow has (then the spectrum file holds only the top correlations)
        if sorted(by_epoch) != list(range(1, len(by_epoch) + 1)):
            keys = [k for k in self._client.get_run(run_id).data.metrics if k.startswith(PLOT_KEYS)]
            histories = {k: [(m.step, m.value) for m in self._client.get_metric_history(run_id, k)] for k in keys}
        else:
            histories = {}
            for epoch, values in sorted(by_epoch.items()):
                for k, v in values.items():
                    histories.setdefault(k, []).append((epoch, v))
        if not histories:
            return {}
        files = {"plots/loss_weights.svg": loss_weights_svg(histories)}
        if any(k.startswith("cca/rho_") for k in histories):
            files["plots/cca_spectrum.svg"] = cca_spectrum_svg(histories)
            spectrum: dict[int, dict[str, float]] = {}
            for k, points in histories.items():
                for epoch, v in points:
                    spectrum.setdefault(int(epoch), {})[k] = v
            files[CCA_SPECTRUM_ARTIFACT] = spectrum_csv(spectrum)
        return files

    def on_experiment_end(self, trials, **info) -> None:
        if self._writer is not None:
            self._writer.flush()

    # ------------------------------------------------------------------ state across `Tuner.restore`
    def get_state(self) -> dict:
        return {"runs": dict(self._runs), "logged": dict(self._logged), "nodes": dict(self._nodes)}

    def set_state(self, state: dict) -> None:
        # Hints only: on_trial_start looks the child run up by its tags and reads the logged epochs back.
        self._runs.update(state.get("runs", {}))
        self._nodes.update(state.get("nodes", {}))
        self._restored = True

    # ------------------------------------------------------------------ end of the search
    def close(self, interrupted: bool) -> list[str]:
        """Flushes, then ends every child run still open (KILLED, outcome interrupted). Returns logged errors."""
        self._ensure()
        for tid in list(self._open):

            def kill(tid=tid) -> None:
                run_id = self._runs.get(tid)
                if run_id is None:
                    return
                deferred = self._deferred.get(tid)  # its last report, held for an end that never came
                if deferred:
                    _log_batch(self._client, run_id, deferred["metrics"], deferred["params"], deferred["tags"])
                    _upload(self._client, run_id, deferred["files"])
                self._client.set_tag(run_id, TAG_OUTCOME, "interrupted" if interrupted else "unfinished")
                self._client.set_terminated(run_id, status="KILLED")
                self._deferred.pop(tid, None)

            self._writer.submit(kill, f"end open run of trial {tid}")
        self._open.clear()
        self._writer.close()
        return self.errors


def _upload(client, run_id: str, files: dict[str, str]) -> None:
    """The files (artifact path -> text) in one `log_artifacts` call (`log_text` costs 9x the CPU per file on a
    sqlite store: benchmarks/mlflow_writer.py)."""
    if not files:
        return
    with tempfile.TemporaryDirectory(prefix="hsc-artifacts-") as d:
        for rel, text in files.items():
            Path(d, rel).parent.mkdir(parents=True, exist_ok=True)
            Path(d, rel).write_text(text)
        client.log_artifacts(run_id, d)


def _log_batch(client, run_id: str, metrics: list, params: list, tags: list) -> None:
    """One `log_batch` call, or as few as MLflow's limits allow (1000 entities, 100 params a call)."""
    if not (metrics or params or tags):
        return
    # MLflow refuses a batch that names a param twice; a tag named twice keeps its last value
    params = list({p.key: p for p in reversed(params)}.values())[::-1]
    tags = list({t.key: t for t in tags}.values())
    for i in range(0, max(1, len(metrics)), 800):
        first = i == 0
        client.log_batch(run_id, metrics=metrics[i : i + 800], tags=tags if first else [],
                         params=params[:100] if first else [])  # fmt: skip
    for j in range(100, len(params), 100):
        client.log_batch(run_id, params=params[j : j + 100])


def end_stale_runs(client, experiment_id: str, parent_run_id: str, status: str = "KILLED") -> int:
    """Ends every child run of a search still marked RUNNING (e.g. after the driver was killed). Returns count."""
    n = 0
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, TAG_OUTCOME, "interrupted")
            client.set_terminated(run.info.run_id, status=status)
            n += 1
    return n


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
