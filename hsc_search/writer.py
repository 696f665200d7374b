"""The MLflow writer: every MLflow call of a search's trials, made away from Ray Tune's event loop.

The Tune callback (`tracking.MlflowTracker`) runs in the driver and turns each Tune event into one small message
(a tuple of plain values: 0.4 ms of the driver's CPU per trial); the writer executes them in order, each MLflow
call retried with back-off (`runs.retry`), so a tracking server that is unreachable for a while loses nothing.
It reads what is queued behind the message in hand: a trial whose end is already queued has its remaining calls
merged into that end (one `log_batch`, one upload).

Where it runs (`writer_in_process`): a thread of the driver by default, or, with HSC_MLFLOW_WRITER=process, a
process of its own (`python -m hsc_search.writer`), so that the MLflow client (38-87 ms of CPU per trial on a
sqlite store) shares neither the interpreter lock of Tune's event loop nor its core. This module imports neither
Ray nor torch, so the process starts in about a second, and the driver starts it while Ray starts. The process
runs in a session of its own (a Ctrl-C at the terminal does not reach it: the driver closes it after logging what
the interrupted trials reported) and ends within half a second of the driver's death.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .runs import (
    CCA_SPECTRUM_ARTIFACT,
    CCA_TOP_METRICS,
    CONFIG_ARTIFACT,
    EFFECTIVE_KEY,
    EFFECTIVE_PARAM,
    NODE_KEY,
    PLOT_KEYS,
    TAG_ERROR,
    TAG_KIND,
    TAG_NODE,
    TAG_NUMBER,
    TAG_OUTCOME,
    TAG_PARENT,
    TAG_STOPPED_BY,
    TAG_TRIAL,
    TEST_EPOCH,
    TRIAL_SECONDS,
    best_of,
    client_for,
    epochs_of,
    find_child_run,
    http_failure,
    import_mlflow,
    refused_by_disk,
    retry,
    retry_attempts,
    score_key,
    user_tag,
)
from .trial_plots import cca_spectrum_svg, loss_weights_svg

log = logging.getLogger("hsc_search.writer")  # (not __name__: "__main__" in the writer process)

# A file to write the writer's own figures to when it stops (per kind of message: count, wall and CPU seconds;
# MLflow client calls by name): benchmarks/mlflow_writer.py sets it.
STATS_ENV = "HSC_WRITER_STATS"


PROCESS_ENV = "HSC_MLFLOW_WRITER"  # "thread" (the default) or "process": where the writer runs


def writer_in_process() -> bool:
    """Whether the writer runs as a process of its own (HSC_MLFLOW_WRITER=process) instead of a thread of the
    driver (the default).

    The process frees Ray Tune's event loop from the MLflow client (38-87 ms of CPU per trial on a sqlite store,
    under the same interpreter lock), but its own start costs about 1.2 s of CPU (importing MLflow). Measured side
    by side on 2 cores (benchmarks/RESULTS.md, "Search machinery") the process made tiny-trial searches slower:
    everything there is CPU-bound. It is the choice to measure on a machine with cores to spare and hundreds of
    short trials; `benchmarks/search_machinery.py` runs both places side by side."""
    choice = os.environ.get(PROCESS_ENV, "").strip().lower()
    if choice not in ("", "process", "thread"):
        raise ValueError(f"{PROCESS_ENV}={choice!r}: expected 'process' or 'thread'")
    return choice == "process"


class Writer:
    """The driver's handle on the MLflow writer.

    `submit` never blocks: messages go to an unbounded queue. `flush` waits until everything submitted before it
    ran; `close` flushes and stops the writer. `errors` lists the calls that failed after all their retries, and
    says so when the writer died.

    The writer runs the same loop (`_main`) either as a process of its own (`python -m hsc_search.writer`: the
    driver's feeder thread pickles the messages into its pipe) or as a thread of the driver (`writer_in_process`).
    The process is started with `subprocess`, not `multiprocessing`, whose spawn re-imports the caller's main
    script (a script without a `__main__` guard would run twice), in a session of its own, so a Ctrl-C at the
    terminal does not reach it: the driver ends it after logging what the interrupted trials reported.
    """

    def __init__(self, tracking_uri: str | None, metric: str = "val/map_avg", mode: str = "max",
                 in_process: bool | None = None):  # fmt: skip
        self.in_process = writer_in_process() if in_process is None else in_process
        self._queue: queue.Queue = queue.Queue()
        self._token = 0
        self.errors: list[str] = []
        self._unsent: list[str] = []  # messages the process's feeder could not pickle
        if not self.in_process:
            self._replies = _Local()
            self._thread = threading.Thread(target=_main, name="hsc-mlflow-writer", daemon=True,
                                            args=(_Local(self._queue), self._replies, tracking_uri, metric, mode,
                                                  None))  # fmt: skip
            self._thread.start()
            return
        import subprocess
        from multiprocessing.connection import Connection

        to_child, from_driver = os.pipe()[::-1]  # (write end, read end)
        from_child, to_driver = os.pipe()
        env = dict(os.environ)
        # the driver's import path (a benchmark or a test may import the package from a checkout)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        args = json.dumps([from_driver, to_driver, tracking_uri, metric, mode, os.getpid()])
        # -P: not the working directory first on its path, where a user's own mlflow.py would have been imported
        # (a walkthrough); Python 3.10 has no -P
        safe = ["-P"] if sys.version_info >= (3, 11) else []
        self._proc = subprocess.Popen([sys.executable, *safe, "-m", "hsc_search.writer", args], env=env,
                                      pass_fds=(from_driver, to_driver), start_new_session=True)  # fmt: skip
        os.close(from_driver)
        os.close(to_driver)
        self._pipe = Connection(to_child, readable=False)
        self._replies = Connection(from_child, writable=False)
        self._feeder = threading.Thread(target=self._feed, name="hsc-mlflow-feeder", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                self._pipe.send(message)
            except OSError:  # the process died: `flush` says so
                return
            except Exception as e:  # a value that does not pickle: that message is lost, never the feeder
                tid = message[1] if len(message) > 1 else "?"
                msg = f"mlflow: {message[0]} of trial {tid} not sent to the writer: {e}"
                log.error(msg)
                self._unsent.append(msg)

    def _alive(self) -> bool:
        return self._proc.poll() is None if self.in_process else self._thread.is_alive()

    def submit(self, *message: Any) -> None:
        self._queue.put(message)

    def flush(self, timeout: float = 120.0, on_slow: Callable[[], None] | None = None, slow_s: float = 10.0) -> bool:
        """Waits until every message submitted so far was executed; False on timeout or when the writer died.
        `on_slow` is called once if that takes over `slow_s` seconds (the wait is said, not silent)."""
        if not self._alive():
            return self._died()
        self._token += 1
        self._queue.put(("flush", self._token))
        start = time.monotonic()
        deadline = start + timeout
        while (left := deadline - time.monotonic()) > 0:
            if on_slow is not None and time.monotonic() - start > slow_s:
                on_slow()
                on_slow = None
            try:
                ready = self._replies.poll(min(left, 0.5))
                if ready:
                    token, errors = self._replies.recv()
            except (EOFError, OSError):  # the process died
                ready = False
                self._proc.wait(5)
            if ready:
                self.errors = self._unsent + errors
                if token == self._token:
                    return True
            elif not self._alive():
                return self._died()
        return False

    def _died(self) -> bool:
        if self.in_process:
            msg = f"mlflow: the writer process ended unexpectedly (exit code {self._proc.returncode})"
        else:
            msg = "mlflow: the writer thread ended unexpectedly"
        if msg not in self.errors:
            log.error(msg)
            self.errors.append(msg)
        return False

    def close(self, timeout: float = 120.0, on_slow: Callable[[], None] | None = None) -> bool:
        ok = self.flush(timeout, on_slow)
        self.stop()
        return ok

    def stop(self) -> None:
        """Ends the writer now (what is still queued is dropped)."""
        if not self.in_process:
            if self._thread.is_alive():
                self._queue.put(("stop",))
                self._thread.join(5)
            return
        import subprocess

        if self._proc.poll() is None:
            self._queue.put(("stop",))
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._queue.put(None)
        self._feeder.join(5)
        self._pipe.close()
        self._replies.close()


class _Local:
    """A connection's `send` / `recv` / `poll` over a queue of this process (the writer as a thread)."""

    def __init__(self, q: queue.Queue | None = None):
        self._q = q if q is not None else queue.Queue()
        self._next: collections.deque = collections.deque()

    def send(self, message) -> None:
        self._q.put(message)

    def recv(self):
        return self._next.popleft() if self._next else self._q.get()

    def poll(self, timeout: float = 0.0) -> bool:
        if not self._next:
            try:
                self._next.append(self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait())
            except queue.Empty:
                return False
        return True


# ------------------------------------------------------------------------------------------ the writer's loop
# A trial's searched params go out with its first report (one call for both) unless that report has not come this
# long after the trial started: then on their own, so that a running trial's run shows its params in the MLflow UI
# (they waited up to `--checkpoint-every-s` for a FIFO trial of long epochs: a walkthrough); short trials cost no
# call.
PARAMS_AFTER_S = 2.0


def _main(messages, replies, tracking_uri: str | None, metric: str, mode: str, driver_pid: int | None) -> None:
    """Executes the messages in order (`messages` / `replies`: pipe connections, or `_Local` in a thread).

    The store is opened at the first message to write, which comes once a search runs its trials, after the
    driver's own opening made a new store: the writer opened it as it started, while the driver did, and two
    made a new store's tables at once (on a full disk the search then named the race, "table registered_models
    already exists", not the disk; a process writer could end the start in a 412-line traceback: the review)."""
    if driver_pid is not None:  # a process: end with the driver
        threading.Thread(target=_watch, args=(driver_pid,), name="hsc-writer-watch", daemon=True).start()
        import_mlflow()  # (its import, while Ray starts; not its store)
    sink = None
    backlog: collections.deque = collections.deque()
    while True:
        try:
            if not backlog:
                wait = getattr(sink, "params_wait", lambda: None)()
                while wait is not None and not messages.poll(wait):
                    sink.log_waiting_params(backlog)  # trials whose first report is a while away: their params now
                    wait = sink.params_wait()
                backlog.append(messages.recv())
            while messages.poll(0):  # everything queued behind: a trial whose end is queued has its calls merged
                backlog.append(messages.recv())
        except EOFError:  # the driver is gone
            if not backlog:
                return
        message = backlog.popleft()
        kind = message[0]
        if kind == "stop":
            if sink is not None:
                sink.write_stats()
            return
        if kind == "flush":
            replies.send((message[1], list(sink.errors) if sink is not None else []))
            continue
        if sink is None:
            try:  # with the retries of any call (a store locked for a moment by another search or `mlflow ui`)
                sink = retry(lambda: _Sink(tracking_uri, metric, mode), "opening the store", attempts=retry_attempts())
            except Exception as e:  # noqa: BLE001 - a store that cannot be opened: said at the flush, not as a
                sink = _Unopened(f"mlflow: opening the store failed: {http_failure(e)}")  # thread's traceback
        sink.handle(message, backlog)
        if getattr(sink, "waiting", None):  # (steady reports of other trials leave the writer never idle)
            sink.log_waiting_params(backlog)


def _watch(driver_pid: int) -> None:
    while os.getppid() == driver_pid:
        time.sleep(0.5)
    os._exit(0)  # the driver died (e.g. SIGKILL): `hsc-search resume` reconciles the runs, as after a thread


class _Unopened:
    """The sink of a writer whose store could not be opened: every call is dropped, and each flush says why (the
    search's end then leaves what MLflow lacks to `resume`, as after any refused records)."""

    def __init__(self, why: str):
        self.errors = [why]

    def handle(self, message: tuple, backlog) -> None:
        pass

    def write_stats(self) -> None:
        pass


class _Sink:
    """The writer's state: which child run is each trial's, what was logged, what waits for a trial's end."""

    def __init__(self, tracking_uri: str | None, metric: str, mode: str):
        self.client = client_for(tracking_uri)
        self.metric, self.mode = metric, mode
        self.errors: list[str] = []
        self.attempts = retry_attempts()  # each call's (HSC_MLFLOW_RETRIES; checked by the pre-flight)
        self.runs: dict[str, str] = {}  # trial id -> child run id
        self.repos: dict[str, Any] = {}  # child run id -> its artifact repository (see `_upload`)
        self.logged: dict[str, int] = {}  # trial id -> last epoch logged
        self.nodes: dict[str, str] = {}  # trial id -> the node of its last report
        self.node_tags: dict[str, str] = {}  # trial id -> every node it ran on, as tagged
        self.params: dict[str, list] = {}  # trial id -> searched params not yet logged
        self.waiting: dict[str, float] = {}  # trial id -> when its params began to wait for its first report
        self.history: dict[str, dict[int, dict[str, float]]] = {}  # trial -> epoch -> plotted metrics (and its tested
        # epoch, marked in its spectrum)
        self.scores: dict[str, dict[int, float]] = {}  # trial -> epoch -> the objective
        self.trial_s: dict[str, float] = {}  # trial -> Ray's time_total_s at its last report
        self.trial_s_logged: dict[str, float] = {}  # trial -> time/total_s its run holds from before a resume
        self.score_logged: dict[str, float] = {}  # trial -> the score (best/<mode>/<metric>) its run holds from then
        self.ending: set[str] = set()  # trials whose last report came: their end follows
        self.deferred: dict[str, dict] = {}  # trial -> calls held for its end
        self.stats: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
        self.calls: collections.Counter = collections.Counter()
        if os.environ.get(STATS_ENV):
            self._count_calls()

    def handle(self, message: tuple, backlog) -> None:
        kind, tid = message[0], message[1]
        t0, c0 = time.perf_counter(), time.thread_time()
        if kind == "start":  # a retried trial runs again: its calls go out as they come
            self.ending.discard(tid)
        try:
            getattr(self, kind)(*message[1:], ending=self._ends_soon(tid, backlog))
        except Exception as e:
            after = "" if refused_by_disk(e) else " after retries"  # (a disk's refusal is not retried)
            msg = f"mlflow: {kind} of trial {tid} failed{after}: {http_failure(e)}"
            log.error(msg)
            self.errors.append(msg)
        finally:
            self._count(kind, t0, c0)

    def _count(self, kind: str, t0: float, c0: float) -> None:
        """One more `kind` handled, which began at perf_counter t0 and thread_time c0 (for write_stats)."""
        s = self.stats[kind]
        s[0] += 1
        s[1] += time.perf_counter() - t0
        s[2] += time.thread_time() - c0

    def _retry(self, fn: Callable[[], Any], what: str):
        """`runs.retry` with the search's number of attempts (`HSC_MLFLOW_RETRIES`). Each call keeps all of them: a
        version that tried once after a call had failed for good lost the queued records of a store away for a
        minute, which full retries would have logged (the review)."""
        return retry(fn, what, attempts=self.attempts)

    def _ends_soon(self, tid: str, backlog) -> bool:
        """The trial's last report or its end is queued behind the message in hand."""
        return tid in self.ending or any(m[1] == tid and (m[0] == "finish" or (m[0] == "epoch" and m[4]))
                                         for m in backlog if len(m) > 1)  # fmt: skip

    def _defer(self, tid: str) -> dict:
        return self.deferred.setdefault(tid, {"metrics": [], "params": [], "tags": [], "files": {}})

    # ---------------------------------------------------------------------------- messages
    def start(self, tid: str, name: str, parent: tuple[str, str], config: dict, params: list, known: bool,
              number: int | None = None, started_ms: int | None = None, *, ending: bool) -> None:  # fmt: skip
        """A trial started (or started again: a retried trial, a resumed search). `known`: look its run up.
        `number`: Ray's count of the trial (tag hsc.trial_number). `started_ms`: when (a new run starts then)."""
        import yaml
        from mlflow.entities import Param

        experiment_id, parent_run_id = parent
        self.params[tid] = [Param(k, v) for k, v in params]
        self.waiting[tid] = time.monotonic()

        tried = [known]

        def start() -> str:
            client = self.client
            # looked up also when a first attempt failed: a server killed as it answered had made the run, and
            # the retry made a second, empty one for the trial (a CI run's outage test; one run per trial)
            run = find_child_run(client, experiment_id, parent_run_id, tid) if tried[0] else None
            tried[0] = True
            if run is None:
                run = client.create_run(experiment_id, run_name=name, start_time=started_ms,
                                        tags={TAG_PARENT: parent_run_id, TAG_TRIAL: tid, TAG_KIND: "trial",
                                              TAG_OUTCOME: "running", **user_tag(),
                                              **({TAG_NUMBER: str(number)} if number is not None else {})})  # fmt: skip
                self.logged[tid] = 0
            else:  # resumed search or retried trial: continue the same child run
                client.update_run(run.info.run_id, status="RUNNING")
                client.set_tag(run.info.run_id, TAG_OUTCOME, "running")
                history = client.get_metric_history(run.info.run_id, "epoch")
                self.logged[tid] = int(max((m.step for m in history), default=0))
                if TRIAL_SECONDS in run.data.metrics:  # it ended before (a trial Ray's older snapshot runs again)
                    self.trial_s_logged[tid] = float(run.data.metrics[TRIAL_SECONDS])
                if score_key(self.metric, self.mode) in run.data.metrics:  # (logged again: a second point at step 0)
                    self.score_logged[tid] = float(run.data.metrics[score_key(self.metric, self.mode)])
                if run.data.tags.get(TAG_NODE) and tid not in self.node_tags:
                    self.node_tags[tid] = run.data.tags[TAG_NODE]
            self.runs[tid] = run.info.run_id
            return run.info.artifact_uri

        artifact_uri = self._retry(start, f"start child run of {name}")
        # built after the retried block: a repository that cannot be built must not create the run a second time
        try:
            self.repos[self.runs[tid]] = self._artifact_repository(artifact_uri)
        except Exception:  # noqa: BLE001 - at the upload MLflow's client looks it up itself, and says what is wrong
            self.repos.pop(self.runs[tid], None)
        if self.logged[tid] == 0:
            text = yaml.safe_dump(config, sort_keys=False)
            if ending:  # the trial has ended already: one upload with its plots
                self._defer(tid)["files"][CONFIG_ARTIFACT] = text
            else:  # visible while the trial runs
                self._retry(lambda: self._upload(self.runs[tid], {CONFIG_ARTIFACT: text}), f"config of {name}")

    def _params_of(self, tid: str) -> list:
        """The params still waiting for the trial's first report (none after they went early), taken."""
        self.waiting.pop(tid, None)
        return self.params.pop(tid, [])

    def params_wait(self) -> float | None:
        """Seconds until the params of a waiting trial are due (`PARAMS_AFTER_S`); None when none waits."""
        self.waiting = {t: since for t, since in self.waiting.items() if self.params.get(t) and t in self.runs}
        if not self.waiting:
            return None
        return max(0.0, min(self.waiting.values()) + PARAMS_AFTER_S - time.monotonic())

    def log_waiting_params(self, backlog=()) -> None:
        """Logs the params of every trial whose first report has not come `PARAMS_AFTER_S` after it started (and
        is not queued: they go with it). One attempt each: params a store refuses now are kept for that report,
        which retries them as it always did."""
        now = time.monotonic()
        due = [t for t, since in self.waiting.items() if now - since >= PARAMS_AFTER_S and self.params.get(t)
               and t in self.runs and t not in self.ending]  # fmt: skip
        if not due:
            return
        queued = {m[1] for m in backlog if len(m) > 1 and m[0] in ("epoch", "finish")}  # once (the review: per trial,
        due = [t for t in due if t not in queued]  # it was n^3 in the trials running at once)
        if not due:
            return
        t0, c0 = time.perf_counter(), time.thread_time()
        for tid in due:
            del self.waiting[tid]
            try:
                self.client.log_batch(self.runs[tid], params=self.params[tid])
            except Exception as e:  # noqa: BLE001 - kept for the first report (not an error yet)
                log.info("params of trial %s not logged early: %s", tid, http_failure(e))
                continue
            del self.params[tid]
        self._count("params", t0, c0)

    def epoch(self, tid: str, name: str, result: dict, last: bool, ending: bool) -> None:
        """A trial's report: the epochs since its last one (all of them after a restore)."""
        from mlflow.entities import Metric, Param

        if last:
            self.ending.add(tid)
            ending = True
        params = self._params_of(tid)
        if EFFECTIVE_KEY in result:  # what the trainer resolved from the data (auto values, clamps)
            params += [Param(EFFECTIVE_PARAM + k, str(v)) for k, v in json.loads(result[EFFECTIVE_KEY]).items()]
        if isinstance(result.get("time_total_s"), (int, float)) and math.isfinite(result["time_total_s"]):
            self.trial_s[tid] = float(result["time_total_s"])
        epochs = [numeric_metrics(m) for m in epochs_of(result)]
        history = self.history.setdefault(tid, {})
        scores = self.scores.setdefault(tid, {})
        for m in epochs:
            history[int(m.get("epoch", 0))] = {k: v for k, v in m.items() if _plotted(k)}
            if self.metric in m:
                scores[int(m["epoch"])] = m[self.metric]
        now = int(time.time() * 1000)
        # epochs already logged before a resume are skipped: the resumed trial repeats them exactly
        batch = [Metric(k, v, now, metric_step(k, m)) for m in map(mlflow_metrics, epochs)
                 if m["epoch"] > self.logged.get(tid, 0) for k, v in m.items()]  # fmt: skip
        if not batch and not params:
            return
        tags = self._node_tags(tid, result)
        if ending:  # logged with the trial's end, in the same call
            deferred = self._defer(tid)
            deferred["metrics"] += batch
            deferred["params"] += params
            deferred["tags"] += tags
        elif tid not in self.runs:  # its start was refused for good (an error said so): `resume` makes its run and
            return  # logs these from Ray's results; retried here, each report waited out ~45 s of a KeyError (the review)
        else:
            self._retry(lambda: _log_batch(self.client, self.runs[tid], batch, params, tags), f"log epochs of {name}")
        # never lowered: a trial restored from an earlier checkpoint than its logged epochs (or started over)
        # reports those epochs again; taking the report's epoch logged the ones after it a second time (3, 3, 4, 4)
        self.logged[tid] = max(self.logged.get(tid, 0), int(result.get("epoch", 0)),
                               *(int(m.get("epoch", 0)) for m in epochs))  # (a failure report has no epoch of its own)

    def _node_tags(self, tid: str, result: dict) -> list:
        """`hsc.node` when a report comes from another node than the trial's last one: every node it ran on."""
        from mlflow.entities import RunTag

        if "node_ip" not in result and NODE_KEY not in result:  # e.g. a trial that failed before any report
            return []
        node = f"{result.get('hostname', '?')} {result.get('node_ip', '?')} node {str(result.get(NODE_KEY, '?'))[:12]}"
        seen = self.node_tags.get(tid)
        if self.nodes.get(tid) == node or node in (seen or "").split(", "):  # e.g. a resumed trial's old node
            self.nodes[tid] = node
            return []
        self.nodes[tid] = node
        self.node_tags[tid] = node if seen is None else f"{seen}, {node}"
        return [RunTag(TAG_NODE, self.node_tags[tid])]

    def _trial_seconds(self, tid: str) -> list:
        """`time/total_s`: the seconds the trial's trainable ran (Ray's time_total_s, carried over restores), logged
        with its end. Its run's duration also counts the time a search was stopped before a resume."""
        from mlflow.entities import Metric

        if tid not in self.trial_s or self.trial_s_logged.get(tid, -1.0) >= self.trial_s[tid]:
            # (a trial that had ended, run again from Ray's older snapshot after a driver was killed, counts from
            # that snapshot's total: a second, lower time/total_s was logged, which MLflow then showed; a walkthrough)
            return []
        return [Metric(TRIAL_SECONDS, self.trial_s[tid], int(time.time() * 1000), self.logged.get(tid, 0))]

    def retried(self, tid: str, ending: bool) -> None:
        if tid not in self.runs:  # it failed before it started (e.g. its actor died): nothing to tag yet
            return
        self._retry(lambda: self.client.set_tag(self.runs[tid], "hsc.retried", "true"), f"tag retry of {tid}")

    def finish(self, tid: str, name: str, outcome: str, status: str, error: str | None, last_result: dict,
               why: str | None = None, ended_ms: int | None = None, *, ending: bool) -> None:  # fmt: skip
        """The trial ended. `last_result`: Ray's last result of it (a failed trial's failure report, whose node is
        tagged: the trial may have reported nothing else). `why`: why ASHA stopped it (tag `hsc.stopped_by`).
        `ended_ms`: when (its run ends then, not when the writer gets to it: after an outage, hours later)."""
        from mlflow.entities import Metric, RunTag

        self.ending.add(tid)
        run_id = self.runs.get(tid)
        if run_id is None:  # the trial failed before its run was created
            return
        params = self._params_of(tid)  # a trial that ended before its first report
        deferred = self.deferred.get(tid) or {"metrics": [], "params": [], "tags": [], "files": {}}
        tags = [RunTag(TAG_OUTCOME, outcome), *self._node_tags(tid, last_result)]
        if error:
            tags.append(RunTag(TAG_ERROR, error[-4900:]))  # MLflow tag values are capped at 5000 chars
        if why:
            tags.append(RunTag(TAG_STOPPED_BY, why))
        metrics = list(deferred["metrics"])
        by_epoch = self.scores.get(tid, {})
        # every epoch seen here (else: read back); a failed trial has none: its epochs before a divergence carried a
        # score that topped the experiment's primary metric in MLflow's runs table over every trial that completed
        if outcome != "failed" and sorted(by_epoch) == list(range(1, len(by_epoch) + 1)):
            score = best_of(by_epoch.values(), self.mode)
            if score is not None and self.score_logged.get(tid) != score:
                metrics.append(Metric(score_key(self.metric, self.mode), score, int(time.time() * 1000), 0))
        metrics += self._trial_seconds(tid)

        def finish() -> None:  # retried as a whole: it logs the same each time
            client = self.client
            _log_batch(client, run_id, metrics, deferred["params"] + params, deferred["tags"] + tags)
            files = dict(deferred["files"])
            try:
                files.update(self._plot_files(tid, run_id))
            except Exception as e:  # plots are a nicety; never fail the run over them
                log.warning("plots for %s failed: %s", name, e)
            self._upload(run_id, files)
            client.set_terminated(run_id, status=status, end_time=ended_ms)

        self._retry(finish, f"finish child run of {name} ({outcome})")
        self.deferred.pop(tid, None)

    def kill(self, tid: str, interrupted: bool, ending: bool) -> None:
        """The search ended with the trial's run still open: log what is held for it, end it as KILLED."""
        run_id = self.runs.get(tid)
        if run_id is None:
            return
        deferred = self.deferred.get(tid)  # its last report, held for an end that never came
        params = self._params_of(tid)  # a trial cut off before its first report: its run shows what it trained
        seconds = self._trial_seconds(tid)

        def kill() -> None:
            if deferred or seconds or params:
                deferred_ = deferred or {"metrics": [], "params": [], "tags": [], "files": {}}
                _log_batch(self.client, run_id, deferred_["metrics"] + seconds, deferred_["params"] + params,
                           deferred_["tags"])  # fmt: skip
                self._upload(run_id, deferred_["files"])
            self.client.set_tag(run_id, TAG_OUTCOME, "interrupted" if interrupted else "unfinished")
            self.client.set_terminated(run_id, status="KILLED")

        self._retry(kill, f"end open run of trial {tid}")
        self.deferred.pop(tid, None)

    # ---------------------------------------------------------------------------- helpers
    def _artifact_repository(self, artifact_uri: str):
        """The artifact repository of a run whose artifact URI is known (from `create_run` or the run found).

        `MlflowClient.log_artifacts` finds a run's repository by reading the whole run back (`get_run`: every
        latest metric, param and tag) the first time it uploads to it, and a trial's pictures go up after its
        metrics: 13.3 ms of CPU per upload on a sqlite store against 2.7 ms this way, about 10 ms of the
        writer's 75-87 ms per trial on a slow 2-core VM (benchmarks/mlflow_writer.py, "uploads"). MLflow's client builds the same object from the same URI
        (`get_artifact_repository`, the registry artifact-store plugins register with), so files land where
        `log_artifacts` would put them, over the tracking server for `mlflow-artifacts:` URIs."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(artifact_uri, tracking_uri=self.client.tracking_uri)

    def _upload(self, run_id: str, files: dict[str, str]) -> None:
        """The files (artifact path -> text) in one upload (`log_text` costs 9x the CPU per file on a sqlite
        store: benchmarks/mlflow_writer.py)."""
        if not files:
            return
        repo = self.repos.get(run_id)
        with tempfile.TemporaryDirectory(prefix="hsc-artifacts-") as d:
            for rel, text in files.items():
                Path(d, rel).parent.mkdir(parents=True, exist_ok=True)
                Path(d, rel).write_text(text)
            if repo is None:  # not created or found by this writer: MLflow's client looks it up
                self.client.log_artifacts(run_id, d)
            else:
                repo.log_artifacts(d)
                self.calls["log_artifacts"] += 1  # the same call MlflowClient.log_artifacts makes, counted as one

    def _plot_files(self, tid: str, run_id: str) -> dict[str, str]:
        """The trial's pictures and spectrum file: artifact path -> text."""
        by_epoch = self.history.get(tid, {})
        # not all seen here: read back what MLflow has (then the spectrum file holds only the top correlations);
        # none seen here: a trial restored after its last epoch (`resume`) whose end this driver writes (its
        # pictures were missing without a word: a walkthrough)
        if not by_epoch or sorted(by_epoch) != list(range(1, len(by_epoch) + 1)):
            keys = [k for k in self.client.get_run(run_id).data.metrics if _plotted(k)]
            histories = {k: [(m.step, m.value) for m in self.client.get_metric_history(run_id, k)] for k in keys}
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

    def _count_calls(self) -> None:
        for name in ("create_run", "log_batch", "log_artifacts", "set_terminated", "set_tag", "update_run",
                     "get_metric_history", "search_runs", "get_run"):  # fmt: skip
            method = getattr(self.client, name)

            def counted(*a, _name=name, _method=method, **k):
                self.calls[_name] += 1
                return _method(*a, **k)

            setattr(self.client, name, counted)

    def write_stats(self) -> None:
        path = os.environ.get(STATS_ENV)
        if path:
            Path(path).write_text(json.dumps({
                "messages": {k: {"n": n, "wall_s": w, "cpu_s": c} for k, (n, w, c) in self.stats.items()},
                "mlflow_client_calls": dict(self.calls)}, indent=1))  # fmt: skip


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


def metric_step(key: str, metrics: dict[str, float]) -> int:
    """The MLflow step of an epoch's metric: its epoch; the test metrics (after the last epoch) are of the epoch
    validation selected (`test/epoch`), and are charted there."""
    if key.startswith("test/") and TEST_EPOCH in metrics:
        return int(metrics[TEST_EPOCH])
    return int(metrics["epoch"])


def _plotted(key: str) -> bool:
    """A metric a trial's pictures read: the weights, log-variances and correlations, and its tested epoch."""
    return key.startswith(PLOT_KEYS) or key == TEST_EPOCH


def spectrum_csv(by_epoch: dict[int, dict[str, float]]) -> str:
    """epoch, rho_00, rho_01, ... : one line per epoch (the canonical correlations, largest first)."""
    names = sorted({k for values in by_epoch.values() for k in values if k.startswith("cca/rho_")})
    lines = [",".join(["epoch"] + [n.removeprefix("cca/") for n in names])]
    for epoch, values in sorted(by_epoch.items()):
        lines.append(",".join([str(epoch)] + [repr(values[n]) if n in values else "" for n in names]))
    return "\n".join(lines) + "\n"


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


if __name__ == "__main__":
    from hsc_search import prefixed_log_lines, quiet_mlflow_database_errors

    quiet_mlflow_database_errors()
    prefixed_log_lines()  # its lines read as the driver's do (they were bare in this mode only: a review)
    from multiprocessing.connection import Connection

    _from, _to, *_rest = json.loads(sys.argv[1])
    _main(Connection(_from, writable=False), Connection(_to, readable=False), *_rest)
