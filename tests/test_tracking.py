"""The MLflow tracker's call merging, on a real sqlite MLflow store, without Ray: the Tune hooks are called as
Ray's TuneController calls them, with a plain stand-in for Ray's `Trial` (an id, a config, a last result)."""

from __future__ import annotations

import json

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


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default artifact root (./mlruns) lands here
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    exp = client.create_experiment("t")
    parent = client.create_run(exp, tags={"hsc.kind": "search"}).info.run_id
    tracker = MlflowTracker(uri, exp, parent, MAX_EPOCHS, ["lr"])
    tracker.setup()
    return client, exp, tracker


def _child(client, exp):
    runs = client.search_runs([exp], filter_string="tags.`hsc.kind` = 'trial'")
    assert len(runs) == 1
    return runs[0]


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


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


def test_a_search_interrupted_after_a_trials_last_report_keeps_that_report(store):
    """The last report waits to be logged with the trial's end; when the search is interrupted before the end,
    closing the tracker logs it (nothing the trial reported is lost) and ends the run as KILLED."""
    client, exp, tracker = store
    trial = Trial("t2", {"lr": 0.002, "epochs": MAX_EPOCHS})
    tracker.on_trial_start(0, [], trial)
    trial.last_result = _result([1, 2, 3])
    tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker._writer.flush()  # the writer has run the report (held for the end) before the interruption
    assert tracker.close(interrupted=True) == []
    run = _child(client, exp)
    assert run.info.status == "KILLED" and run.data.tags["hsc.outcome"] == "interrupted"
    assert _steps(client, run.info.run_id, "val/map_avg") == [1, 2, 3]
    assert run.data.params["lr"] == "0.002"
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
