"""The MLflow tracker's call merging, on a real sqlite MLflow store, without Ray: the Tune hooks are called as
Ray's TuneController calls them, with a plain stand-in for Ray's `Trial` (an id, a config, a last result)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hsc_search.runs import EPOCHS_KEY, NODE_KEY, client_for
from hsc_search.tracking import MlflowTracker

MAX_EPOCHS = 3


class Trial:
    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config, self.last_result = trial_id, config, {}

    def __str__(self) -> str:
        return f"train_trial_{self.trial_id}"


def _epoch(e: int) -> dict:
    return {"epoch": e, "val/map_avg": 0.1 * e, "loss/total": 2.0 - 0.1 * e, "weight/nce": 1.0, "cca/rho_00": 0.5}


def _result(epochs: list[int]) -> dict:
    last = _epoch(epochs[-1])
    return {**last, EPOCHS_KEY: json.dumps([_epoch(e) for e in epochs]), NODE_KEY: "n1", "hostname": "h",
            "node_ip": "127.0.0.1"}  # fmt: skip


def _search_store(tmp_path):
    """A sqlite store with one experiment and a search's parent run: (uri, client, experiment id, parent run id)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    exp = client.create_experiment("t")
    return uri, client, exp, client.create_run(exp, tags={"hsc.kind": "search"}).info.run_id


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default artifact root (./mlruns) lands here
    uri, client, exp, parent = _search_store(tmp_path)
    tracker = MlflowTracker(uri, exp, parent, MAX_EPOCHS, ["lr"])
    tracker.setup()
    return client, exp, tracker


def _child(client, exp):
    runs = client.search_runs([exp], filter_string="tags.`hsc.kind` = 'trial'")
    assert len(runs) == 1
    return runs[0]


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_a_trial_s_run_starts_when_the_trial_does_not_when_the_writer_gets_to_it(store, monkeypatch):
    """The writer creates a trial's run when it reaches its start (up to seconds later on a busy driver): MLflow's
    Duration of a short trial was below the trial's own time/total_s (a walkthrough: 306 ms against 0.52 s)."""
    import time

    from hsc_search import writer as writer_module

    client, exp, tracker = store
    start = writer_module._Sink.start

    def busy(self, *args, **kwargs):  # the writer still at a backlog of other trials' calls
        time.sleep(1.5)
        return start(self, *args, **kwargs)

    monkeypatch.setattr(writer_module._Sink, "start", busy)
    before = time.time()
    tracker.on_trial_start(0, [], Trial("t1", {"lr": 0.001, "epochs": MAX_EPOCHS}))
    after = time.time()
    assert tracker._writer.flush(60)
    run = _child(client, exp)
    assert int(before * 1000) <= run.info.start_time <= int(after * 1000) + 1, (before, run.info.start_time, after)
    assert tracker.close(interrupted=False) == []


def test_a_trial_ended_by_its_last_report_logs_every_epoch_its_score_and_its_files(store):
    client, exp, tracker = store
    trial = Trial("t1", {"lr": 0.001, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    trial.last_result = _result([1])
    tracker.on_trial_result(0, [], trial, trial.last_result)
    trial.last_result = _result([2, 3])  # the last report: logged together with the end
    tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker.on_trial_complete(0, [], trial)
    assert tracker.close(interrupted=False) == []
    run = _child(client, exp)
    assert run.info.status == "FINISHED" and run.data.tags["hsc.outcome"] == "completed"
    for key in ("val/map_avg", "loss/total", "weight/nce", "cca/rho_00", "epoch"):
        assert _steps(client, run.info.run_id, key) == [1, 2, 3], key
    assert run.data.metrics["best/max/val/map_avg"] == pytest.approx(0.3)
    assert run.data.params["lr"] == "0.001"
    files = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "plots")}  # fmt: skip
    assert {"config.yaml", "cca_spectrum.csv", "plots/loss_weights.svg"} <= files


def _count_params_batches(monkeypatch, refuse: list | None = None) -> list:
    """Records the params of every log_batch that carries some (the writer thread's client); while `refuse` is
    non-empty, a params-only call pops it and fails, as a store that is away would."""
    from mlflow.tracking import MlflowClient

    sent: list = []
    original = MlflowClient.log_batch

    def log_batch(self, run_id, metrics=(), params=(), tags=(), **kw):
        if params:
            if refuse and not metrics:
                refuse.pop()
                raise ConnectionError("the store is away")
            sent.append({p.key: p.value for p in params})
        return original(self, run_id, metrics=metrics, params=params, tags=tags, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    return sent


def _params_seen(client, exp, name: str, within: float) -> tuple[dict, float]:
    import time

    started, params = time.monotonic(), {}
    while time.monotonic() - started < within and not params:
        time.sleep(0.1)
        runs = [r for r in client.search_runs([exp], filter_string="tags.`hsc.kind` = 'trial'")
                if r.info.run_name == name]  # fmt: skip
        params = runs[0].data.params if runs else {}
    return params, time.monotonic() - started


def test_a_running_trials_params_show_before_its_first_report_when_that_is_a_while_away(store, monkeypatch):
    """The params went out with the trial's first report, so a trial of long epochs (FIFO: its first report after
    --checkpoint-every-s) showed none in the MLflow UI while it ran (a walkthrough): PARAMS_AFTER_S after it
    started they go on their own, also while other trials keep the writer busy (the review: it waited for the
    writer to be idle), once: its report does not send them again."""
    import time

    from hsc_search.writer import PARAMS_AFTER_S

    client, exp, tracker = store
    sent = _count_params_batches(monkeypatch)
    trial = Trial("t9", {"lr": 0.004, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    busy = Trial("t8", {"lr": 0.001, "epochs": 100})  # reports every 0.3 s: the writer is never idle for long
    tracker.on_trial_start(0, [], busy)
    seen, took = {}, 0.0
    started = time.monotonic()
    for e in range(1, 100):
        busy.last_result = _result([e])
        tracker.on_trial_result(0, [], busy, busy.last_result)
        time.sleep(0.3)
        seen, _ = _params_seen(client, exp, "train_trial_t9", 0.01)
        if seen:
            took = time.monotonic() - started
            break
    assert seen == {"lr": "0.004"} and PARAMS_AFTER_S * 0.9 <= took < PARAMS_AFTER_S + 10, (seen, took)
    runs = {r.info.run_name: r for r in client.search_runs([exp], filter_string="tags.`hsc.kind` = 'trial'")}
    assert client.get_metric_history(runs["train_trial_t9"].info.run_id, "val/map_avg") == []  # none reported yet
    trial.last_result = _result([1, 2, 3])
    tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker.on_trial_complete(0, [], trial)
    tracker.on_trial_complete(0, [], busy)
    assert tracker.close(interrupted=False) == []
    run = client.get_run(runs["train_trial_t9"].info.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.004"}
    assert _steps(client, run.info.run_id, "val/map_avg") == [1, 2, 3]
    assert sent.count({"lr": "0.004"}) == 1, sent  # sent once: early, not again with its report


def test_early_params_a_store_refuses_go_with_the_first_report(store, monkeypatch):
    """Params sent early to a store that was away were lost for good (popped, then refused; nothing repairs them:
    the review). An early send is one attempt; refused, they wait for the trial's first report as before."""
    import time

    from hsc_search.writer import PARAMS_AFTER_S

    client, exp, tracker = store
    refuse = [1]
    sent = _count_params_batches(monkeypatch, refuse)
    trial = Trial("t7", {"lr": 0.003, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    deadline = time.monotonic() + PARAMS_AFTER_S + 20
    while refuse and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not refuse, "the early send was never tried"
    trial.last_result = _result([1, 2, 3])
    tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker.on_trial_complete(0, [], trial)
    assert tracker.close(interrupted=False) == []  # no error: nothing was lost
    run = _child(client, exp)
    assert run.data.params == {"lr": "0.003"} and sent == [{"lr": "0.003"}], sent


def _one_trial_in_a_thread_writer(tmp_path, monkeypatch):
    """One trial of 3 epochs through a tracker whose writer is a thread of this process (so that a test's patches
    reach it), to its end: (client, experiment id)."""
    from hsc_search import writer as writer_module

    monkeypatch.setenv(writer_module.PROCESS_ENV, "thread")
    monkeypatch.chdir(tmp_path)
    uri, client, exp, parent = _search_store(tmp_path)
    tracker = MlflowTracker(uri, exp, parent, MAX_EPOCHS, ["lr"])
    tracker.setup()
    trial = Trial("t1", {"lr": 0.001, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    trial.last_result = _result([1, 2, 3])
    tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker.on_trial_complete(0, [], trial)
    assert tracker.close(interrupted=False) == []
    return client, exp


def test_a_run_whose_artifact_repository_cannot_be_built_is_created_once_and_still_gets_its_files(
        tmp_path, monkeypatch):  # fmt: skip
    """The writer builds each child run's artifact repository itself (writer._Sink._artifact_repository): when
    that fails, the child run is not created a second time by the retry around `create_run`, and the files go up
    through MLflow's own `log_artifacts`."""
    from hsc_search import writer as writer_module

    def cannot(self, uri):
        raise RuntimeError(f"no artifact repository for {uri}")

    monkeypatch.setattr(writer_module._Sink, "_artifact_repository", cannot)
    client, exp = _one_trial_in_a_thread_writer(tmp_path, monkeypatch)
    run = _child(client, exp)  # exactly one child run
    assert run.info.status == "FINISHED"
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "cca_spectrum.csv", "plots"} <= files


def test_a_trial_run_made_by_a_call_whose_answer_was_lost_is_not_made_twice(tmp_path, monkeypatch):
    """A server killed as it answered `create_run` (a CI run's outage test): the run was made, the writer saw an
    error, and its retry made a second, empty run for the trial. A retry now looks the trial's run up first."""
    from mlflow.tracking import MlflowClient

    made = MlflowClient.create_run
    lost = []

    def answer_lost(self, experiment_id, *a, tags=None, **k):
        run = made(self, experiment_id, *a, tags=tags, **k)
        if (tags or {}).get("hsc.kind") == "trial" and not lost:  # the first trial run: made, its answer lost
            lost.append(run.info.run_id)
            raise ConnectionError("Connection aborted: RemoteDisconnected('Remote end closed connection')")
        return run

    monkeypatch.setattr(MlflowClient, "create_run", answer_lost)
    client, exp = _one_trial_in_a_thread_writer(tmp_path, monkeypatch)
    run = _child(client, exp)  # exactly one child run: the one the lost answer made
    assert lost == [run.info.run_id] and run.info.status == "FINISHED"
    assert _steps(client, run.info.run_id, "val/map_avg") == [1, 2, 3]


def test_a_search_interrupted_after_a_trials_last_report_keeps_that_report(store):
    """The last report waits to be logged with the trial's end; when the search is interrupted before the end,
    closing the tracker logs it (nothing the trial reported is lost) and ends the run as completed: it trained
    and reported every epoch (a Ctrl-C before Ray marked it so made it KILLED, "interrupted", test mAP and all:
    a walkthrough). A trial short of its last epoch is KILLED, interrupted."""
    client, exp, tracker = store
    trial, short = Trial("t2", {"lr": 0.002, "epochs": MAX_EPOCHS}), Trial("t9", {"lr": 0.009, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_start(0, [], short)
    trial.last_result, short.last_result = _result([1, 2, 3]), _result([1, 2])
    tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker.on_trial_result(0, [], short, short.last_result)
    tracker._writer.flush()  # the writer has run the report (held for the end) before the interruption
    assert tracker.close(interrupted=True) == []
    runs = {r.data.tags["hsc.trial_id"]: r for r in client.search_runs([exp]) if r.data.tags.get("hsc.kind") == "trial"}
    assert (runs["t9"].info.status, runs["t9"].data.tags["hsc.outcome"]) == ("KILLED", "interrupted")
    run = runs["t2"]
    assert run.info.status == "FINISHED" and run.data.tags["hsc.outcome"] == "completed"
    assert run.data.tags["hsc.node"] == "h 127.0.0.1 node n1"  # its end's tags, as a trial ended by Ray gets them
    assert _steps(client, run.info.run_id, "val/map_avg") == [1, 2, 3]
    assert run.data.params["lr"] == "0.002"
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_resumed_trial_that_repeats_its_logged_epochs_logs_each_epoch_once(store):
    """Restored from an earlier checkpoint than its logged epochs (or started over), a trial reports those epochs
    again: after its first such report the writer took that report's epoch as the last one logged, and logged the
    epochs after it a second time."""
    client, exp, tracker = store
    trial = Trial("t6", {"lr": 0.001, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    trial.last_result = _result([1, 2])
    tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker._writer.flush()
    assert tracker.close(interrupted=True) == []  # the driver stops with epochs 1-2 logged
    again = MlflowTracker(tracker.tracking_uri, exp, tracker.parent_run_id, MAX_EPOCHS, ["lr"])
    again.setup()
    again.set_state({"started": ["t6"]})  # as after `resume`
    again.on_trial_start(0, [], trial)
    for epochs in ([1], [2], [3]):  # started over: every epoch again, one report each
        trial.last_result = _result(epochs)
        again.on_trial_result(0, [], trial, trial.last_result)
    again.on_trial_complete(0, [], trial)
    assert again.close(interrupted=False) == []
    run = _child(client, exp)
    for key in ("val/map_avg", "epoch", "loss/total"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2, 3], key


def test_a_trial_cut_off_before_its_first_report_still_shows_its_params(store):
    """Its params wait to go with the first report; an interruption before it ended the run with none (the UI
    said 'No parameters recorded' and the report's row was blank)."""
    client, exp, tracker = store
    trial = Trial("t3", {"lr": 0.003, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    assert tracker.close(interrupted=True) == []
    run = _child(client, exp)
    assert run.info.status == "KILLED" and run.data.tags["hsc.outcome"] == "interrupted"
    assert run.data.params == {"lr": "0.003"}


def test_a_trial_that_failed_before_any_epoch_is_tagged_with_its_node(store):
    """A failed trial's only report is its failure (no epoch): its node is tagged all the same (the node is what
    one looks for first when a trial fails on a cluster)."""
    from hsc_search.runs import FAILED_KEY

    client, exp, tracker = store
    trial = Trial("t4", {"lr": 5e3, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    trial.last_result = {"val/map_avg": float("nan"), FAILED_KEY: "DivergenceError: loss is nan", NODE_KEY: "abcdef0123456789",
                         "hostname": "gpu-7", "node_ip": "10.0.0.7"}  # fmt: skip
    tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker.on_trial_complete(0, [], trial)
    assert tracker.close(interrupted=False) == []
    run = _child(client, exp)
    assert run.info.status == "FAILED" and run.data.tags["hsc.outcome"] == "failed"
    assert run.data.tags["hsc.node"] == "gpu-7 10.0.0.7 node abcdef012345"
    assert run.data.params == {"lr": "5000.0"}

    # resumed, it fails again with Ray's last result from the same node: the node is not named twice
    again = MlflowTracker(tracker.tracking_uri, exp, tracker.parent_run_id, MAX_EPOCHS, ["lr"])
    again.setup()
    again.set_state({"started": ["t4"]})
    again.on_trial_start(0, [], trial)
    again.on_trial_error(0, [], trial)
    assert again.close(interrupted=False) == []
    assert _child(client, exp).data.tags["hsc.node"] == "gpu-7 10.0.0.7 node abcdef012345"


def test_a_trial_that_failed_before_it_started_gets_a_failed_run(store, tmp_path):
    """A worker node lost just as a reused actor took a new trial: Ray errors the trial without ever starting it
    (no on_trial_start). It had no MLflow run, so MLflow, the summary and the report counted one trial fewer than
    the search ran and never said one failed (a walkthrough on a two-node cluster)."""
    client, exp, tracker = store
    trial = Trial("t5", {"lr": 0.02, "epochs": MAX_EPOCHS})
    trial.error_file = str(tmp_path / "error.txt")
    (tmp_path / "error.txt").write_text("ActorUnavailableError: The actor is unavailable: Socket closed\n")
    tracker.on_trial_error(0, [], trial)
    assert tracker.close(interrupted=False) == []
    run = _child(client, exp)
    assert run.info.status == "FAILED" and run.data.tags["hsc.outcome"] == "failed"
    assert run.data.tags["hsc.error"] == "ActorUnavailableError: The actor is unavailable: Socket closed"
    assert run.data.params == {"lr": "0.02"} and run.data.tags["hsc.trial_id"] == "t5"


@pytest.mark.parametrize("where", ["thread", "process"])
def test_a_trial_whose_whole_life_is_queued_costs_four_mlflow_calls(tmp_path, monkeypatch, where):
    """The writer process reads what is queued behind the message in hand: a trial whose end is queued already
    has its config, epochs, params and plots merged into its end (one log_batch, one upload). Everything here is
    queued before the process has even opened the store, so every trial is such a trial."""
    from hsc_search.writer import PROCESS_ENV, STATS_ENV

    monkeypatch.chdir(tmp_path)
    stats = tmp_path / "stats.json"
    monkeypatch.setenv(STATS_ENV, str(stats))
    monkeypatch.setenv(PROCESS_ENV, where)
    uri, client, exp, parent = _search_store(tmp_path)
    tracker = MlflowTracker(uri, exp, parent, MAX_EPOCHS, ["lr"])
    if where == "thread":  # a thread starts at once: hold its loop until everything is queued
        import hsc_search.writer as writer_module

        gate = __import__("threading").Event()
        original = writer_module._Sink.__init__

        def held(self, *a):
            gate.wait(30)
            original(self, *a)

        monkeypatch.setattr(writer_module._Sink, "__init__", held)
    tracker.setup()
    assert tracker._writer.in_process == (where == "process")
    for i in range(3):
        trial = Trial(f"q{i}", {"lr": 0.001 * (i + 1), "epochs": MAX_EPOCHS})
        tracker.on_trial_start(0, [], trial)
        trial.last_result = _result([1])
        tracker.on_trial_result(0, [], trial, trial.last_result)
        trial.last_result = _result([2, 3])
        tracker.on_trial_result(0, [], trial, trial.last_result)
        tracker.on_trial_complete(0, [], trial)
    if where == "thread":
        gate.set()
    assert tracker.close(interrupted=False) == []
    calls = json.loads(stats.read_text())["mlflow_client_calls"]
    assert calls == {"create_run": 3, "log_batch": 3, "log_artifacts": 3, "set_terminated": 3}
    runs = client.search_runs([exp], filter_string="tags.`hsc.kind` = 'trial'")
    assert len(runs) == 3
    for run in runs:
        assert run.info.status == "FINISHED"
        assert _steps(client, run.info.run_id, "val/map_avg") == [1, 2, 3]
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "cca_spectrum.csv"} <= files


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (not yet reaped by its parent) counts as gone
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, seconds: float) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_the_writer_process_ends_with_a_driver_killed_by_sigkill(tmp_path):
    """No writer outlives its driver: a driver killed with SIGKILL cannot stop it, so it watches the driver."""
    import os
    import signal
    import subprocess
    import sys

    code = ("import sys, time; from hsc_search.writer import Writer; "
            f"w = Writer('sqlite:///{tmp_path / 'mlflow.db'}', in_process=True); print(w._proc.pid, flush=True); "
            "time.sleep(60)")  # fmt: skip
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        pid = int(driver.stdout.readline())
        assert _alive(pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        assert _wait_gone(pid, 5), "the writer process outlived its driver"
    finally:
        driver.kill()
        driver.wait(10)
        if "pid" in locals() and _alive(pid):
            os.kill(pid, signal.SIGKILL)


# a driver process's start for the writer-process tests: a store, a search's parent run, a tracker set up
_TRACKER_SCRIPT = """
from hsc_search.runs import client_for
from hsc_search.tracking import MlflowTracker
uri = 'sqlite:///{db}'
client = client_for(uri)
exp = client.create_experiment('t')
parent = client.create_run(exp, tags={{'hsc.kind': 'search'}}).info.run_id
tracker = MlflowTracker(uri, exp, parent, 3, ['lr'])
tracker.setup()"""


def test_the_writer_process_says_its_warnings_as_the_driver_does(tmp_path):
    """With the writer in a process of its own (HSC_MLFLOW_WRITER=process, >= 4 cores), its retry lines were bare
    ("mlflow: ... failed (...); retry 1/1 in 0.5s") where the driver's read "warning: ..." (a review)."""
    import os
    import subprocess
    import sys

    code = _TRACKER_SCRIPT.format(db=tmp_path / "mlflow.db") + """
client.delete_experiment(exp)  # the writer's calls in it now fail: retried once (HSC_MLFLOW_RETRIES=2)

class Trial:
    trial_id, config, last_result = 't3', {'lr': 0.003, 'epochs': 3}, {}

tracker.on_trial_start(0, [], Trial())
tracker._writer.flush(60)
tracker.close(interrupted=True)
"""
    env = {**os.environ, "HSC_MLFLOW_WRITER": "process", "HSC_MLFLOW_RETRIES": "2"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=180)  # fmt: skip
    said = [ln for ln in proc.stderr.splitlines() if "mlflow: " in ln and "failed" in ln]
    assert said and all(ln.startswith(("warning: mlflow: ", "error: mlflow: ")) for ln in said), proc.stderr[-3000:]


def test_ctrl_c_does_not_reach_the_writer_and_a_dead_writer_is_reported_not_waited_for(tmp_path):
    """Ctrl-C at the terminal goes to the driver's whole process group; the writer runs in a session of its own,
    so an interrupted search can still log what its trials reported. A writer that died is said in the errors,
    and closing it returns at once."""
    import os
    import signal
    import subprocess
    import sys

    code = "import json, sys, time\n" + _TRACKER_SCRIPT.format(db=tmp_path / "mlflow.db") + """
try:  # the Ctrl-C follows the pid at once: it can land while print returns, so inside the try
    print(tracker._writer._proc.pid, flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    pass

class Trial:
    trial_id, config, last_result = 't3', {'lr': 0.003, 'epochs': 3}, {}

tracker.on_trial_start(0, [], Trial())
print(json.dumps([tracker._writer.flush(60), tracker._writer.errors]), flush=True)
print(json.dumps(tracker.close(interrupted=True)), flush=True)
"""
    env = {**os.environ, "HSC_MLFLOW_WRITER": "process"}
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                              start_new_session=True, env=env)  # fmt: skip
    try:
        writer_pid = int(driver.stdout.readline())
        os.killpg(driver.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert json.loads(driver.stdout.readline()) == [True, []]
        assert json.loads(driver.stdout.readline()) == []
        assert driver.wait(30) == 0
    finally:
        driver.kill()
    assert not _alive(writer_pid)
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = _child(client, client.get_experiment_by_name("t").experiment_id)
    assert run.data.tags["hsc.trial_id"] == "t3" and run.info.status == "KILLED"


def test_a_dead_writer_process_is_reported_and_not_waited_for(tmp_path, monkeypatch):
    import os
    import signal
    import time

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HSC_MLFLOW_WRITER", "process")
    uri, client, exp, parent = _search_store(tmp_path)
    tracker = MlflowTracker(uri, exp, parent, MAX_EPOCHS, ["lr"])
    tracker.setup()
    writer = tracker._writer
    os.kill(writer._proc.pid, signal.SIGKILL)
    writer._proc.wait(10)
    tracker.on_trial_start(0, [], Trial("t4", {"lr": 0.004, "epochs": MAX_EPOCHS}))
    t0 = time.monotonic()
    errors = tracker.close(interrupted=True)
    assert time.monotonic() - t0 < 5
    assert len(errors) == 1 and "writer process ended unexpectedly" in errors[0] and "-9" in errors[0]


def test_the_writer_runs_where_it_is_asked_to_and_refuses_anything_else(monkeypatch):
    from hsc_search.writer import PROCESS_ENV, writer_in_process

    monkeypatch.setenv(PROCESS_ENV, "Process")
    assert writer_in_process()
    monkeypatch.setenv(PROCESS_ENV, "thread")
    assert not writer_in_process()
    monkeypatch.delenv(PROCESS_ENV)
    assert not writer_in_process()  # a thread unless asked: on 2 cores the process cost more than it freed
    monkeypatch.setenv(PROCESS_ENV, "fork")
    with pytest.raises(ValueError, match="HSC_MLFLOW_WRITER='fork': expected 'process' or 'thread'"):
        writer_in_process()


def test_a_restored_search_looks_its_trials_runs_up(store):
    """Ray gives a callback its saved state back only when that state is truthy (`CallbackList.set_state`): the
    tracker's must be, or a resumed search would open a second run for every trial that was running."""
    from ray.tune.callback import CallbackList

    client, exp, tracker = store
    trial = Trial("t5", {"lr": 0.005, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    assert tracker._writer.flush(60)
    saved = CallbackList([tracker]).get_state()
    assert saved
    tracker.close(interrupted=True)
    restored = MlflowTracker(tracker.tracking_uri, exp, tracker.parent_run_id, MAX_EPOCHS, ["lr"])
    CallbackList([restored]).set_state(saved)
    from hsc_search.writer import Writer

    writer, spare = Writer(tracker.tracking_uri), Writer(tracker.tracking_uri)
    restored.attach(writer)  # as `resume` does: the writer started while Ray started
    restored.attach(spare)  # a tracker that has one already keeps it; the other is stopped
    assert restored._writer is writer and not spare._alive()
    restored.setup()
    restored.on_trial_start(0, [], trial)
    trial.last_result = _result([1, 2, 3])
    restored.on_trial_result(0, [], trial, trial.last_result)
    restored.on_trial_complete(0, [], trial)
    assert restored.close(interrupted=False) == []
    run = _child(client, exp)  # one run, continued
    assert run.info.status == "FINISHED" and _steps(client, run.info.run_id, "val/map_avg") == [1, 2, 3]


def test_a_trial_restored_after_its_last_epoch_still_gets_its_pictures(store, monkeypatch):
    """A trial whose last report reached MLflow before its search stopped (its end's uploads refused by a full
    temporary folder; a driver killed right after it) is restored by `resume` from its final checkpoint and ends
    without a report in the new driver: its run was FINISHED with config.yaml alone, its plots and
    cca_spectrum.csv missing without a word (a walkthrough). They are drawn from what MLflow holds."""
    from ray.tune.callback import CallbackList

    import time

    from hsc_search import writer as writer_module

    client, exp, tracker = store

    def full(self, run_id, files):  # the temporary folder MLflow uploads through is full
        raise OSError(28, "No space left on device")

    trial = Trial("t6", {"lr": 0.006, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    assert tracker._writer.flush(60)
    monkeypatch.setattr(writer_module._Sink, "_upload", full)
    trial.last_result = _result(list(range(1, MAX_EPOCHS + 1)))
    tracker.on_trial_result(0, [], trial, trial.last_result)
    saved = CallbackList([tracker]).get_state()
    t0 = time.monotonic()
    tracker.on_trial_complete(0, [], trial)
    errors = tracker.close(interrupted=False)
    assert errors == ["mlflow: finish of trial t6 failed: [Errno 28] No space left on device"], errors
    assert time.monotonic() - t0 < 20  # a full disk is not retried for 46 s (nor each later call: a walkthrough)
    assert not {a.path for a in client.list_artifacts(_child(client, exp).info.run_id)} & {"plots", "cca_spectrum.csv"}
    monkeypatch.undo()  # the disk has room again: `resume`
    restored = MlflowTracker(tracker.tracking_uri, exp, tracker.parent_run_id, MAX_EPOCHS, ["lr"])
    CallbackList([restored]).set_state(saved)
    restored.setup()
    restored.on_trial_start(0, [], trial)  # restored from its last checkpoint: no epoch left to report
    restored.on_trial_complete(0, [], trial)
    assert restored.close(interrupted=False) == []
    run = _child(client, exp)
    assert run.info.status == "FINISHED" and run.data.tags["hsc.outcome"] == "completed"
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "cca_spectrum.csv", "plots"} <= files, files
    spectrum = client.download_artifacts(run.info.run_id, "cca_spectrum.csv")
    rows = Path(spectrum).read_text().splitlines()
    assert len(rows) == 1 + MAX_EPOCHS and rows[0].startswith("epoch"), rows  # every epoch's correlations


def test_a_message_that_does_not_pickle_is_reported_and_the_writer_goes_on(tmp_path, monkeypatch):
    """The process's feeder thread pickles each message; one that cannot be pickled is lost alone (and said),
    never the feeder, whose death would leave every later call unsent and the search's end waiting."""
    import threading

    from hsc_search.writer import Writer

    monkeypatch.chdir(tmp_path)
    uri, client, exp, parent = _search_store(tmp_path)
    writer = Writer(uri, in_process=True)
    writer.submit("retried", "t0", threading.Lock())  # a lock does not pickle
    tracker = MlflowTracker(uri, exp, parent, MAX_EPOCHS, ["lr"], writer=writer)
    tracker.on_trial_start(0, [], Trial("t6", {"lr": 0.006, "epochs": MAX_EPOCHS}))
    assert writer.flush(60)
    assert len(writer.errors) == 1 and "retried of trial t0 not sent to the writer" in writer.errors[0]
    assert _child(client, exp).data.tags["hsc.trial_id"] == "t6"
    tracker.close(interrupted=True)


def test_an_auto_ema_momentum_that_resolves_to_zero_is_recorded_as_effective():
    """A run too short for an average resolves ema_momentum 0 (auto) to 0.0 (the teacher is a copy of the
    student); it compares equal to the given 0, and MLflow's effective.* params left it out (a non-zero one was
    there). A value given explicitly is the value trained: not effective."""
    from hsc_search.trainable import effective_values
    from trainer import TrainConfig

    short = TrainConfig(epochs=1, batch_size=32)
    steps = 1 * (40 // 32)  # one step: no average (the documented rule, 1 / (1 - m) at most a tenth of the steps)
    assert max(0.0, min(0.99, 1 - 1 / (0.1 * steps))) == 0.0
    got = effective_values(short.to_dict(), short.resolve(n_train=40, audio_dim=8, visual_dim=8).to_dict())
    assert got["ema_momentum"] == 0.0 and got["cca_dim"] == 8
    given = TrainConfig(epochs=1, batch_size=32, ema_momentum=0.5)
    assert "ema_momentum" not in effective_values(given.to_dict(), given.resolve(40, 8, 8).to_dict())


def test_the_writer_names_the_test_epoch_as_the_trainer_does():
    """`runs.TEST_EPOCH` repeats `trainer.fit.TEST_EPOCH` (the writer, which may run as a process of its own,
    imports nothing that imports torch): the two must not drift, or the test metrics go back to the last step."""
    from hsc_search.runs import TEST_EPOCH
    from trainer.fit import TEST_EPOCH as TRAINER_TEST_EPOCH

    assert TEST_EPOCH == TRAINER_TEST_EPOCH


def test_a_tracker_pickled_by_an_earlier_version_resumes(monkeypatch):
    """`resume` takes the tracker Ray pickled with the search: one pickled before `_ended` existed raised
    AttributeError at its first trial's end (a review); it comes back with the attribute."""
    import pickle

    from hsc_search.tracking import MlflowTracker

    tracker = MlflowTracker(None, "0", "p" * 32, 3, ["lr"])
    tracker._started.add("t1")
    old = {**{k: v for k, v in tracker.__dict__.items() if k != "_ended"}, "_writer": None}  # the earlier state
    monkeypatch.setattr(MlflowTracker, "__getstate__", lambda self: dict(old))
    data = pickle.dumps(tracker)
    monkeypatch.undo()
    restored = pickle.loads(data)
    assert restored._ended == set() and restored._started == {"t1"} and restored._writer is None


@pytest.mark.parametrize("wait", ["0", "-5", "nan", "soon"])
def test_a_flush_wait_of_nothing_still_flushes(wait, store, monkeypatch):
    """HSC_MLFLOW_FLUSH_S=0 (meant as "do not wait") made the flush look at nothing and report the records as not
    taken: every search and resume ended unflushed, exit 1 (the review)."""
    _, _, tracker = store
    monkeypatch.setenv("HSC_MLFLOW_FLUSH_S", wait)
    assert tracker.close(interrupted=False) == [] and tracker.flushed is True


def test_a_min_mode_trial_is_scored_by_its_lowest_epoch_and_its_test_metrics_sit_at_the_selected_epoch(
        tmp_path, monkeypatch):  # fmt: skip
    """`--metric loss/total --mode min`: a trial's `best/min/loss/total` is its LOWEST loss over its epochs (the
    epoch the trainer selects), which export-best, the parent's best and the summary table rank by; not its
    highest, nor its last. Its test metrics (reported with the last epoch, measured on the checkpoint of the
    selected epoch) are logged, charted at that epoch (`test/epoch`), not at the last."""
    monkeypatch.chdir(tmp_path)
    uri, client, exp, parent = _search_store(tmp_path)
    tracker = MlflowTracker(uri, exp, parent, MAX_EPOCHS, ["lr"], metric="loss/total", mode="min")
    tracker.setup()
    losses = {1: 1.5, 2: 0.7, 3: 0.9}  # lowest at epoch 2 of 3; the highest is the first

    def epoch(e):
        out = {**_epoch(e), "loss/total": losses[e]}
        if e == MAX_EPOCHS:  # the trainer's last epoch carries the test split, scored on epoch 2's checkpoint
            out.update({"test/map_avg": 0.42, "test/epoch": 2})
        return out

    def result(epochs):
        return {**epoch(epochs[-1]), EPOCHS_KEY: json.dumps([epoch(e) for e in epochs]), NODE_KEY: "n1"}

    trial = Trial("m1", {"lr": 0.001, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    trial.last_result = result([1])
    tracker.on_trial_result(0, [], trial, trial.last_result)
    trial.last_result = result([2, 3])
    tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker.on_trial_complete(0, [], trial)
    assert tracker.close(interrupted=False) == []
    run = _child(client, exp)
    assert run.data.metrics["best/min/loss/total"] == pytest.approx(0.7), run.data.metrics
    assert "best/max/loss/total" not in run.data.metrics
    assert _steps(client, run.info.run_id, "loss/total") == [1, 2, 3]
    test_history = client.get_metric_history(run.info.run_id, "test/map_avg")
    assert [(m.step, m.value) for m in test_history] == [(2, pytest.approx(0.42))], test_history


def test_a_trials_config_yaml_is_the_config_it_trained_with_every_field_written(store, tmp_path):
    """Each trial run's config.yaml is what export-best writes as best_config.yaml and what `python -m trainer
    --config` retrains: it must hold the trial's own sampled values (not the trainer defaults), and every trainer
    field, so that it retrains alone."""
    import yaml

    from trainer import TrainConfig

    client, exp, tracker = store
    sampled = {"lr": 0.0037, "tau": 0.55, "topk": 2, "mask_ratio": 0.7, "epochs": MAX_EPOCHS}  # none a default
    trial = Trial("c1", sampled)
    tracker.on_trial_start(0, [], trial)
    trial.last_result = _result([1, 2, 3])
    tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker.on_trial_complete(0, [], trial)
    assert tracker.close(interrupted=False) == []
    run = _child(client, exp)
    path = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    written = yaml.safe_load(open(path).read())
    assert {k: written[k] for k in sampled} == sampled, written
    assert set(written) == set(TrainConfig().to_dict())  # every field, as the trainer names them


def test_the_reports_of_a_trial_whose_run_was_never_made_do_not_wait_out_retries(tmp_path):
    """A trial's start refused for good (its store full) leaves it without a run; each of its later reports then
    retried a KeyError 8 times (~45 s), holding up every other trial's records behind it (the review). They are
    left to `resume`, which makes the run from Ray's results; a trial with a run still logs its epochs."""
    import time

    from hsc_search.writer import _Sink

    uri, client, exp, parent = _search_store(tmp_path)
    sink = _Sink(uri, "val/map_avg", "max")
    t0 = time.monotonic()
    sink.handle(("epoch", "nope", "train_trial_nope", _result([1, 2]), False), [])
    assert time.monotonic() - t0 < 5 and sink.errors == [], sink.errors
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
    sink.runs["yes"] = run
    sink.handle(("epoch", "yes", "train_trial_yes", _result([1, 2]), False), [])
    assert [m.step for m in client.get_metric_history(run, "val/map_avg")] == [1, 2]


def test_a_trial_whose_last_epoch_reported_is_completed_whatever_ray_still_calls_it():
    """Ray's status of a trial whose last epoch's report came, cut off by a Ctrl-C before Ray ended it, is RUNNING:
    it was counted and tagged as interrupted (a walkthrough: its test mAP logged). The one definition, checked
    for each of Ray's statuses."""
    from hsc_search.runs import FAILED_KEY, trial_outcome

    assert [trial_outcome(s, {"epoch": 3}, 3) for s in ("TERMINATED", "RUNNING", "PAUSED")] == ["completed"] * 3
    assert [trial_outcome(s, {"epoch": 2}, 3) for s in ("TERMINATED", "RUNNING", "PENDING")] == [
        "stopped_early", "unfinished", "unfinished"]
    assert trial_outcome("ERROR", {"epoch": 3}, 3) == "failed"
    assert trial_outcome("RUNNING", {"epoch": 3, FAILED_KEY: "diverged"}, 3) == "failed"
    assert trial_outcome("RUNNING", None, 3) == "unfinished"


def test_a_completed_trial_run_again_after_a_resume_keeps_its_higher_total_seconds(store):
    """A driver SIGKILLed seconds after a trial completed, before Ray's next snapshot: the resume runs it again
    from the snapshot, and Ray's time_total_s counts from that snapshot's total; its run logged a second, lower
    time/total_s (12.0, then 10.2: a walkthrough), which MLflow shows as the value. The higher one stays; a higher
    one after it is logged."""
    client, exp, tracker = store
    trial = Trial("t7", {"lr": 0.001, "epochs": MAX_EPOCHS})

    def complete(tr, seconds):
        tr.on_trial_start(0, [], trial)
        trial.last_result = {**_result([1, 2, 3]), "time_total_s": seconds}
        tr.on_trial_result(0, [], trial, trial.last_result)
        tr.on_trial_complete(0, [], trial)
        assert tr.close(interrupted=False) == []

    complete(tracker, 12.0)
    for seconds, kept in ((10.2, [12.0]), (13.5, [12.0, 13.5])):
        again = MlflowTracker(tracker.tracking_uri, exp, tracker.parent_run_id, MAX_EPOCHS, ["lr"])
        again.setup()
        again.set_state({"started": ["t7"]})  # as after `resume`
        complete(again, seconds)
        run = _child(client, exp)
        assert run.info.status == "FINISHED" and run.data.tags["hsc.outcome"] == "completed"
        values = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "time/total_s"),
                                          key=lambda m: m.timestamp)]  # fmt: skip
        assert values == kept and run.data.metrics["time/total_s"] == kept[-1], values
        assert _steps(client, run.info.run_id, "val/map_avg") == [1, 2, 3]
        # its score (the same epochs, the same best) is one point, not one more per resume (a walkthrough)
        score = [m.value for m in client.get_metric_history(run.info.run_id, "best/max/val/map_avg")]
        assert len(score) == 1 and score[0] == run.data.metrics["best/max/val/map_avg"], score


def test_a_disk_that_refuses_a_write_is_not_retried():
    """Each MLflow call that met a full disk was retried 7 times over 46 s, and a search whose store's disk (or
    temporary folder) filled took 2-3 minutes and 25 retry lines to end (a walkthrough): seconds do not mend it."""
    import sqlite3

    from mlflow.exceptions import MlflowException

    from hsc_search.runs import refused_by_disk, retry

    for error in (sqlite3.OperationalError("database or disk is full"), OSError(28, "No space left on device"),
                  OSError(30, "Read-only file system"), OSError(27, "File too large")):  # fmt: skip
        calls = []

        def refused(error=error):
            calls.append(1)
            try:
                raise error
            except Exception as e:  # as MLflow wraps its store's errors
                raise MlflowException(f"API request failed: {type(e).__name__}") from e

        with pytest.raises(MlflowException):
            retry(refused, "a write", attempts=8, first_wait=0.01)
        assert calls == [1], error
    calls = []

    def away():  # a server briefly away: retried
        calls.append(1)
        raise ConnectionError("Connection refused")

    with pytest.raises(ConnectionError):
        retry(away, "a write", attempts=3, first_wait=0.01)
    assert len(calls) == 3
    assert not refused_by_disk(OSError(111, "Connection refused")) and not refused_by_disk(ValueError("bad value"))
