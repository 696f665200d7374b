"""End to end through the CLI: a real search (local Ray, sqlite MLflow), its runs read back with MlflowClient and
over HTTP from a real `mlflow server`, export-best + retrain, bad input, and SIGKILL + resume."""

from __future__ import annotations

import json
import re
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import MlflowServer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = "synthetic:ave?n_train=500&n_val=120&n_test=150&dim_audio=16&dim_visual=24&num_classes=6&seed=2"
MAX_EPOCHS = 4
TRIALS = 8


def _env(cache) -> dict:
    return {**os.environ, "HSC_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}


def _cli(*args, cwd, cache, timeout=420):
    return subprocess.run([str(BIN / "hsc-search"), *args], cwd=cwd, env=_env(cache), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _client(cwd):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")


def _runs(client, experiment="hsc-search"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("hsc.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("hsc.kind") == "trial"]
    return exp, parents, children


@pytest.fixture(scope="module")
def search(tmp_path_factory, _cache_dir):
    """One embedded-default-style search on tiny data, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("search")
    proc = _cli("run", "--data", DATA, "--num-samples", str(TRIALS), "--max-epochs", str(MAX_EPOCHS),
                "--grace-period", "1", "--reduction-factor", "2", "--name", "e2e", cwd=cwd, cache=_cache_dir)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return cwd, proc


def test_search_prints_best_config_and_ui_command(search):
    cwd, proc = search
    assert "best trial:" in proc.stdout
    best = cwd / "ray_results" / "e2e" / "best_config.yaml"
    assert f"best config: {best}" in proc.stdout
    header = best.read_text().splitlines()[:4]  # the retrain command, the trial, its search's data (fingerprint)
    assert header[3].startswith("# the search's data (train says when --data differs): {\"clips\":"), header
    # the store by its absolute path: the printed command opens this store when pasted in any folder
    assert f"mlflow ui --backend-store-uri sqlite:///{(cwd / 'mlflow.db').resolve()}\n" in proc.stdout
    assert best.exists()


def test_a_search_whose_ray_record_was_cut_off_is_not_resumed_in_a_loop(search, tmp_path):
    """A full disk cut Ray's experiment state off mid-write: `resume` printed Ray's JSONDecodeError, started the
    search's state over, ran a new trial and said "interrupted" (exit 130), and every `resume` after that ran nothing
    and said the same (a walkthrough). One line naming the file, what is kept and how to go on, before Ray starts."""
    from hsc_search.storage import cut_off_experiment_state

    cwd, _ = search
    folder = tmp_path / "e2e"
    shutil.copytree(cwd / "ray_results" / "e2e", folder)
    meta = json.loads((folder / "hsc_search.json").read_text())
    meta.pop("finished_at")  # as a search whose end the full disk cut off
    (folder / "hsc_search.json").write_text(json.dumps(meta))
    newest = max(folder.glob("experiment_state-*.json"))  # the one Ray restores from (its own choice: the max name)
    text = newest.read_text()
    newest.write_text(text[: len(text) // 2])
    t0 = time.monotonic()
    proc = _cli("resume", str(folder), cwd=cwd, cache=tmp_path / "cache")
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stderr.strip() == (
        f"error: {newest}: Ray Tune's record of the search is cut off (written when the disk was full?), so Ray "
        f"cannot restore it: nothing of it can be continued; its trials' results are kept (`--warm-start {folder}` "
        "gives them to a new search of the same space, data and metric); to start it again under its name, remove "
        f"the folder (`rm -r {folder}`) and run the search again"), proc.stderr
    assert time.monotonic() - t0 < 60
    newest.write_text(text)  # whole again: no longer refused as cut off
    assert cut_off_experiment_state(str(folder)) is None


def test_mlflow_holds_one_parent_and_one_child_per_trial(search, tmp_path):
    cwd, _ = search
    client = _client(cwd)
    _, parents, children = _runs(client)
    assert len(parents) == 1 and len(children) == TRIALS
    parent = parents[0]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert len({c.data.tags["hsc.trial_id"] for c in children}) == TRIALS
    assert all(r.info.status != "RUNNING" for r in parents + children)
    # Ray's count of each trial: 1 is the first the searcher proposed, the enqueued trainer default (the report's #1;
    # MLflow's start times put it second when two trials started together: a walkthrough)
    numbered = {int(c.data.tags["hsc.trial_number"]): c for c in children}
    assert sorted(numbered) == list(range(1, TRIALS + 1))
    from trainer import TrainConfig

    default = TrainConfig()
    assert {k: numbered[1].data.params[k] for k in ("lr", "topk", "tau", "loss_weighting")} == {
        "lr": str(default.lr), "topk": str(default.topk), "tau": str(default.tau),
        "loss_weighting": default.loss_weighting}, numbered[1].data.params
    outcomes = [c.data.tags["hsc.outcome"] for c in children]
    assert set(outcomes) <= {"completed", "stopped_early"}
    assert "stopped_early" in outcomes and "completed" in outcomes
    for c in children:
        run_id = c.info.run_id
        steps = {}
        for key in ("val/map_avg", "cca/rho_00", "loss/total", "weight/nce", "logvar/nce"):
            steps[key] = sorted(m.step for m in client.get_metric_history(run_id, key))
        if c.data.params["loss_weighting"] == "fixed":  # no s to learn: no log-variance logged
            assert steps.pop("logvar/nce") == [] and not [k for k in c.data.metrics if k.startswith("logvar/")]
        n = len(steps["val/map_avg"])
        assert all(s == list(range(1, n + 1)) for s in steps.values()), (c.info.run_name, steps)
        if c.data.tags["hsc.outcome"] == "stopped_early":
            assert n < MAX_EPOCHS
            # the run says why: the rung (its last epoch), its value there and a cut-off above it that another
            # trial's value at that epoch reached (Ray's cut-off is a quantile of such values)
            val = {m.step: m.value for m in client.get_metric_history(run_id, "val/map_avg")}
            why = c.data.tags["hsc.stopped_by"]
            head = f"stopped by ASHA at epoch {n}: val/map_avg {val[n]:.4f}, below the cut-off "
            assert why.startswith(head), why
            cutoff = float(why[len(head):].split(" ")[0])
            at_rung = [m.value for o in children if o is not c
                       for m in client.get_metric_history(o.info.run_id, "val/map_avg") if m.step == n]
            assert val[n] < cutoff <= max(at_rung) + 5e-5, (why, at_rung)
        else:
            assert "hsc.stopped_by" not in c.data.tags
            assert n == MAX_EPOCHS and "test/map_avg" in c.data.metrics
            # charted at the epoch validation selected (the first best), whose checkpoint they are of
            val = {m.step: m.value for m in client.get_metric_history(run_id, "val/map_avg")}
            selected = min(e for e in val if val[e] == max(val.values()))
            assert c.data.metrics["test/epoch"] == selected
            assert [m.step for m in client.get_metric_history(run_id, "test/map_avg")] == [selected]
        assert c.data.tags["hsc.node"]
        # the seconds its trainable ran: at least its epochs' own, within its run's duration
        epoch_s = sum(m.value for m in client.get_metric_history(run_id, "time/epoch_s"))
        ran = (c.info.end_time - c.info.start_time) / 1000
        # (the run starts when the writer gets to it, maybe after the trial's first seconds: a loose upper bound)
        assert epoch_s <= c.data.metrics["time/total_s"] <= ran + 5, (epoch_s, c.data.metrics["time/total_s"], ran)
        arts = {a.path for a in client.list_artifacts(run_id)}
        plots = {a.path for a in client.list_artifacts(run_id, "plots")}
        assert "config.yaml" in arts and {"plots/loss_weights.svg", "plots/cca_spectrum.svg"} <= plots
        # its spectrum picture draws the epoch it tested, marked, as the report does (it drew the middle one)
        (tmp_path / run_id).mkdir()
        spectrum = Path(client.download_artifacts(run_id, "plots/cca_spectrum.svg", str(tmp_path / run_id)))
        spectrum = spectrum.read_text()
        if "test/epoch" in c.data.metrics:
            assert f"epoch {int(c.data.metrics['test/epoch'])} (tested)" in spectrum
        else:
            assert "(tested)" not in spectrum
        assert {"lr", "tau", "topk"} <= set(c.data.params)
        # what the trainer resolved itself is recorded as trained: the quick space leaves both on auto
        steps_per_epoch = 500 // 128  # DATA's train split, quick.yaml's batch of 128
        assert c.data.params["effective.cca_dim"] == "16"
        assert float(c.data.params["effective.ema_momentum"]) == pytest.approx(1 - 10 / (MAX_EPOCHS * steps_per_epoch))


def test_parent_has_summary_table_best_config_and_plots(search):
    cwd, _ = search
    client = _client(cwd)
    _, parents, children = _runs(client)
    pid = parents[0].info.run_id
    arts = {a.path for a in client.list_artifacts(pid)}
    assert {"best_config.yaml", "search_config.yaml", "search_space.yaml", "summary", "plots"} <= arts
    assert {a.path for a in client.list_artifacts(pid, "summary")} == {"summary/trials.parquet", "summary/trials.csv"}
    assert "plots/best_so_far.png" in {a.path for a in client.list_artifacts(pid, "plots")}
    # the defaults as they resolved, not `None`; the parent's score is named as its trials' are
    assert parents[0].data.params["tracking_uri"] == f"sqlite:///{(cwd / 'mlflow.db').resolve()}"
    assert parents[0].data.params["storage"] == str((cwd / "ray_results").resolve())
    # and the others as they resolved: a local instance of its own, as many trials at once as its CPUs hold
    assert parents[0].data.params["address"] == "local"
    assert parents[0].data.params["max_concurrent"] == str(len(os.sched_getaffinity(0)))
    # who ran it, as MLflow's UI and a team server show it (every run was "unknown": a walkthrough)
    import getpass

    assert {r.info.user_id for r in [*parents, *children]} == {getpass.getuser()}
    best_child = max(children, key=lambda c: c.data.metrics["best/max/val/map_avg"])
    assert parents[0].data.metrics["best/max/val/map_avg"] == best_child.data.metrics["best/max/val/map_avg"]
    assert "best/val/map_avg" not in parents[0].data.metrics
    table = pq.read_table(client.download_artifacts(pid, "summary/trials.parquet", str(cwd))).to_pylist()
    assert len(table) == TRIALS
    by_run = {c.info.run_id: c for c in children}
    assert [row["number"] for row in table] == list(range(1, TRIALS + 1))  # in the order proposed, numbered
    for row in table:
        child = by_run[row["run_id"]]
        assert row["outcome"] == child.data.tags["hsc.outcome"]
        assert row["number"] == int(child.data.tags["hsc.trial_number"])
        assert row["stopped_by"] == child.data.tags.get("hsc.stopped_by")  # None where ASHA did not stop it
        assert row["epochs"] == int(child.data.metrics["epoch"])
        assert row["param.lr"] == float(child.data.params["lr"])  # typed as the values were (MLflow keeps text)
        assert row["param.topk"] == int(child.data.params["topk"]) and isinstance(row["param.topk"], int)
        assert row["param.loss_weighting"] == child.data.params["loss_weighting"]
        assert row["seconds"] > 0
        history = [m.value for m in client.get_metric_history(row["run_id"], "val/map_avg")]
        assert row["score"] == pytest.approx(max(history))


def _same(searched, recorded) -> bool:
    """A searched value against a record of it: MLflow keeps params as text, YAML and JSON as numbers."""
    if isinstance(searched, bool) or not isinstance(searched, (int, float)):
        return str(searched) == str(recorded)
    return float(recorded) == float(searched)  # exact: each record must give the sampled number back


def test_the_value_sampled_is_the_value_trained_recorded_and_told(search, _cache_dir):
    """For every trial of a real search: the values Optuna sampled are Ray's trial config (params.json), the
    MLflow run's params and the config.yaml it logged; the value Optuna was told is the MLflow score (the best
    epoch's val/map_avg), pruned exactly for the trials ASHA stopped. Then what was trained: the logged
    config.yaml of the best trial and of a stopped one, retrained by the trainer alone in a new process, gives
    the recorded val/map_avg and loss of every epoch the trial ran (a stopped trial trained under its full
    budget's schedule)."""
    from hsc_search.ray_internals import optuna_study, optuna_trials
    from hsc_search.schedulers import BudgetAwareOptunaSearch
    from hsc_search.space import load_space
    from trainer.config import TrainConfig

    cwd, _ = search
    exp_dir = cwd / "ray_results" / "e2e"
    searcher = BudgetAwareOptunaSearch(space=load_space(ROOT / "search_spaces" / "quick.yaml").define_by_run(),
                                       metric="val/map_avg", mode="max", max_epochs=MAX_EPOCHS)  # fmt: skip
    searcher.restore_from_dir(str(exp_dir))  # the searcher as Ray saved it when the search ended
    told = {t.number: t for t in optuna_study(searcher).get_trials(deepcopy=False)}
    asked = optuna_trials(searcher)  # Ray trial id -> the Optuna trial it was asked for
    client = _client(cwd)
    _, _, children = _runs(client)
    assert len(children) == TRIALS and len(asked) == TRIALS
    histories, configs = {}, {}
    for c in children:
        tid, rid = c.data.tags["hsc.trial_id"], c.info.run_id
        ot = told[asked[tid].number]
        assert ot.params, tid
        ray_config = json.loads((exp_dir / tid / "params.json").read_text())
        logged = yaml.safe_load(Path(client.download_artifacts(rid, "config.yaml", str(cwd / "cfg" / tid))).read_text())
        for name, value in ot.params.items():
            assert _same(value, ray_config[name]), (tid, name, value, ray_config[name])
            assert _same(value, c.data.params[name]), (tid, name, value, c.data.params[name])
            assert _same(value, logged[name]), (tid, name, value, logged[name])
        for name, value in ray_config.items():  # the space's fixed values too
            assert logged[name] == value, (tid, name)
        assert logged["epochs"] == MAX_EPOCHS
        history = sorted((m.step, m.value) for m in client.get_metric_history(rid, "val/map_avg"))
        losses = sorted((m.step, m.value) for m in client.get_metric_history(rid, "loss/total"))
        best = max(v for _, v in history)
        assert ot.value == best == c.data.metrics["best/max/val/map_avg"], tid
        outcome = c.data.tags["hsc.outcome"]
        assert ot.state.name == {"completed": "COMPLETE", "stopped_early": "PRUNED"}[outcome], (tid, outcome)
        assert (len(history) < MAX_EPOCHS) == (outcome == "stopped_early")
        histories[tid], configs[tid] = (history, losses), TrainConfig.from_dict(logged)
    stopped = [c for c in children if c.data.tags["hsc.outcome"] == "stopped_early"]
    best_tid = max(histories, key=lambda t: max(v for _, v in histories[t][0]))
    for tid in dict.fromkeys([best_tid, stopped[0].data.tags["hsc.trial_id"]]):
        (cwd / f"re_{tid}.yaml").write_text(configs[tid].to_yaml())
        train = subprocess.run([sys.executable, "-m", "trainer", "--config", f"re_{tid}.yaml", "--data", DATA,
                                "--out", f"re_{tid}"], cwd=cwd, env={**_env(_cache_dir), "OMP_NUM_THREADS": "1"},
                               capture_output=True, text=True, timeout=300)  # fmt: skip
        assert train.returncode == 0, train.stderr[-3000:]
        lines = [json.loads(x) for x in (cwd / f"re_{tid}" / "metrics.jsonl").read_text().splitlines() if x.strip()]
        again = {m["epoch"]: m for m in lines if "val/map_avg" in m}
        history, losses = histories[tid]
        for (epoch, v), (_, loss) in zip(history, losses):  # a trial on one CPU: one thread, as here
            assert again[epoch]["val/map_avg"] == pytest.approx(v, rel=1e-9, abs=1e-12), (tid, epoch)
            assert again[epoch]["loss/total"] == pytest.approx(loss, rel=1e-6), (tid, epoch)


def _post(url, payload):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture()
def mlflow_server(search, tmp_path):
    """A real `mlflow server` on 127.0.0.1 over the search's sqlite store."""
    cwd, _ = search
    server = MlflowServer(cwd / "mlflow.db", tmp_path / "artifacts").start()
    yield server.url
    server.stop()


def test_a_database_password_stays_out_of_the_parent_run(tmp_path):
    """The search's params and search_config.yaml are read by everyone with the store: a postgresql:// URI's
    password is masked there (it was logged as given)."""
    from mlflow.tracking import MlflowClient

    from hsc_search.driver import _log_search_inputs
    from hsc_search.settings import load_settings
    from hsc_search.space import load_space

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    run = client.create_run(client.create_experiment("e")).info.run_id
    settings = load_settings(None, {"tracking_uri": "postgresql://ana:s3cret@127.0.0.1:5432/mlflow"}, [])
    _log_search_inputs(client, run, settings, load_space(settings.space_path()))
    assert client.get_run(run).data.params["tracking_uri"] == "postgresql://ana:***@127.0.0.1:5432/mlflow"
    logged = Path(client.download_artifacts(run, "search_config.yaml", str(tmp_path))).read_text()
    # search_config.yaml runs again: no password at all (a rerun would send '***'; libpq reads ~/.pgpass)
    assert "s3cret" not in logged and "tracking_uri: postgresql://ana@127.0.0.1:5432/mlflow\n" in logged
    from hsc_search.report import render  # the report names its store: without the password too
    from hsc_search.search_record import SearchRecord

    page = render(SearchRecord(parent_run_id=run, experiment_id="1", name="s", settings={}, metric="val/map_avg",
                               mode="max", max_epochs=2, trials=[], best=None, milestones=[], space={},
                               best_history={}, best_spectrum={}), source=settings.tracking_uri)  # fmt: skip
    assert "s3cret" not in page and "postgresql://ana:***@127.0.0.1:5432/mlflow" in page
    from hsc_search.cli import _ui_hint  # the printed `mlflow ui` command: none either (a walkthrough found it)

    hint = _ui_hint(settings.tracking_uri, "1")
    assert "s3cret" not in hint and " ui --backend-store-uri postgresql://ana@127.0.0.1:5432/mlflow\n" in hint, hint
    assert hint.endswith("(its password left out: libpq reads it from ~/.pgpass or PGPASSWORD)"), hint
    hint = _ui_hint("mysql+pymysql://ana:s3cret@db/mlflow", "1")  # MySQL's driver reads no password file
    assert "s3cret" not in hint and hint.endswith("(its password left out: put it back into the URI to run this)")
    hint = _ui_hint("postgresql://ana@db/mlflow?password=s3cret&sslmode=require", "1")  # libpq's query form
    assert "s3cret" not in hint and "postgresql://ana@db/mlflow?sslmode=require" in hint, hint
    assert "(its password left out" not in _ui_hint("postgresql://ana:@db/mlflow", "1")  # an empty one: none
    # a server: the page to open, without a password; from $MLFLOW_TRACKING_URI too (it printed `mlflow ui` of the
    # server's URL, which fails: the review)
    hint = _ui_hint("https://ana:s3cret@mlflow.team.org", "1")
    assert hint.startswith("open https://ana@mlflow.team.org/#/experiments/1") and "s3cret" not in hint, hint
    hint = _ui_hint("https://ana:s3cret@mlflow.team.org", "1", "abc", "report.html")  # `report`'s line (the review)
    assert hint.startswith("open https://ana@mlflow.team.org/#/experiments/1/runs/abc/artifacts/report.html?"), hint
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
        assert _ui_hint(None, "2").startswith("open http://127.0.0.1:5999/#/experiments/2?"), _ui_hint(None, "2")
        mp.setenv("MLFLOW_TRACKING_URI", "postgresql://ana:s3cret@db/mlflow")  # the variable, which holds it
        assert ' ui --backend-store-uri "$MLFLOW_TRACKING_URI"\n' in _ui_hint(None, "2"), _ui_hint(None, "2")
    assert "(its password left out" not in _ui_hint(f"sqlite:///{tmp_path}/m.db", "1")
    # MLflow's port held by something else on this machine (a shared box): the command and the link name a free one
    # (it failed with "Address already in use", exit 0, and the link opened what held the port: a walkthrough)
    import socket

    from hsc_search import cli

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cli, "UI_PORT", port)
            hint = _ui_hint(f"sqlite:///{tmp_path}/m.db", "1")
            other = int(re.search(r" --port (\d+)\n", hint).group(1))
            assert other != port and f"then open http://127.0.0.1:{other}/#/experiments/1?" in hint, hint
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "UI_PORT", port)  # let go of: the usual command
        hint = _ui_hint(f"sqlite:///{tmp_path}/m.db", "1")
        assert "--port" not in hint and f"then open http://127.0.0.1:{port}/#/" in hint, hint


def test_the_parent_run_records_the_set_values_trained_and_a_search_config_that_runs_again(tmp_path, monkeypatch):
    """A search config's `set: {tau: 4e-1}` (text in YAML 1.1) trained 0.4 but was recorded as '4e-1'; the logged
    search_config.yaml had `overrides:` (refused by --config) and a relative space path."""
    from mlflow.tracking import MlflowClient

    from hsc_search.driver import _log_search_inputs, search_headline
    from hsc_search.settings import load_settings
    from hsc_search.space import load_space

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    (here / "space_c.yaml").write_text((ROOT / "search_spaces" / "quick.yaml").read_text())
    (here / "search_c.yaml").write_text("space: space_c.yaml\nname: c1\nset: {tau: 4e-1, amp: off, seed: 3}\n")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    run = client.create_run(client.create_experiment("e")).info.run_id
    settings = load_settings("search_c.yaml", {}, ["lr=2e-3"])
    space = load_space(settings.space_path(), overrides=settings.overrides)
    assert (space.fixed["tau"], space.fixed["amp"], space.fixed["lr"]) == (0.4, False, 0.002)  # what trains
    # the search's first line names them as they train (it left them out; 4e-1 is 0.4, off is False)
    line = search_headline(settings, space, "D")
    assert line.endswith(", data D; fixed for every trial (--set and search_c.yaml: set): amp False, lr 0.002, "
                         "seed 3, tau 0.4"), line  # (the config's were said as --set: a review)
    line = search_headline(load_settings("search_c.yaml", {}, []), space, "D")
    assert "; fixed for every trial (search_c.yaml: set): amp False, seed 3, tau 0.4" in line, line
    assert "; fixed for every trial (--set): lr 0.002" in search_headline(load_settings(None, {}, ["lr=2e-3"]), space,
                                                                          "D")  # fmt: skip
    assert search_headline(load_settings(None, {}, []), space, "D").endswith(", data D")  # nothing fixed: nothing
    _log_search_inputs(client, run, settings, space)
    params = client.get_run(run).data.params
    # where they were given, for the report's head (it said "(--set)" of a config's set: values: a review)
    from hsc_search.search_record import read_search

    client.set_tag(run, "hsc.kind", "search")
    assert read_search(client, run).set_where == "--set and search_c.yaml: set"
    assert (params["set.tau"], params["set.amp"], params["set.seed"], params["set.lr"]) == ("0.4", "False", "3",
                                                                                             "0.002")  # fmt: skip
    assert params["space"] == str(here / "space_c.yaml")  # the file by its full path ("space_c.yaml": which?)
    logged = Path(client.download_artifacts(run, "search_config.yaml", str(tmp_path))).read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (elsewhere / "again.yaml").write_text(logged)
    again = load_settings("again.yaml", {}, [])  # refused before: "overrides: not a key of a search config"
    assert again.overrides == {"tau": 0.4, "amp": False, "seed": 3, "lr": 0.002}
    assert again.space_path() == here / "space_c.yaml" and again.name is None  # a new search gets its own name
    assert load_space(again.space_path(), overrides=again.overrides).fixed == space.fixed
    assert {k: v for k, v in again.to_dict().items() if k not in ("space", "name", "storage")} == {
        k: v for k, v in settings.to_dict().items() if k not in ("space", "name", "storage")}  # fmt: skip
    # the default storage as it resolved, ./ray_results of the folder it ran in (`storage: null` put a rerun from
    # another folder's results there, while it logged to the same store)
    assert settings.storage is None and again.storage == str(here / "ray_results")


def test_runs_read_back_over_http(search, mlflow_server):
    cwd, _ = search
    exp = _get(f"{mlflow_server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=hsc-search")["experiment"]
    found = _post(f"{mlflow_server}/api/2.0/mlflow/runs/search",
                  {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})["runs"]  # fmt: skip
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found]
    children = [(r, t) for r, t in zip(found, tags) if t.get("hsc.kind") == "trial"]
    assert len(children) == TRIALS and all(r["info"]["status"] in ("FINISHED",) for r, _ in children)
    client = _client(cwd)
    for run, t in children:
        run_id = run["info"]["run_id"]
        hist = _get(f"{mlflow_server}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=val/map_avg")
        over_http = sorted((m["step"], m["value"]) for m in hist["metrics"])
        direct = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val/map_avg"))
        assert over_http == direct and [s for s, _ in over_http] == list(range(1, len(direct) + 1))


def test_the_search_carves_validation_with_the_fixed_val_fraction(_cache_dir):
    from hsc_search.driver import load_search_data
    from hsc_search.settings import load_settings
    from hsc_search.space import load_space

    spec = "synthetic:ave?n_train=400&n_val=0&n_test=50&dim_audio=8&dim_visual=8&num_classes=4&seed=5"
    for fraction in (0.1, 0.25):
        settings = load_settings(None, {"data": spec}, [f"val_fraction={fraction}"])
        data = load_search_data(settings, load_space(settings.space_path(), overrides=settings.overrides))
        assert data.val_carved and len(data.val) == round(400 * fraction) and data.val_fraction == fraction


def test_a_val_fraction_the_data_cannot_use_is_said_at_the_start(_cache_dir, tmp_path):
    """Data with a val split of its own: a given val_fraction carves nothing, and the search and the trainer say
    so (it was silently ignored, while MLflow recorded it as a param); carved data gets no note."""
    from hsc_search.driver import load_search_data, start_notes
    from hsc_search.settings import load_settings
    from hsc_search.space import load_space

    own = "synthetic:ave?n_train=200&n_val=30&n_test=20&dim_audio=8&dim_visual=8&num_classes=4&seed=5"
    carved = own.replace("n_val=30", "n_val=0")
    for spec, expected in ((own, ["val_fraction 0.25 is not used: the data has a val split of its own (30 clips)"]),
                           (carved, [])):  # fmt: skip
        settings = load_settings(None, {"data": spec}, ["val_fraction=0.25"])
        space = load_space(settings.space_path(), overrides=settings.overrides)
        assert start_notes(settings, space, load_search_data(settings, space)) == expected
    settings = load_settings(None, {"data": own}, [])  # not given: nothing to say
    space = load_space(settings.space_path(), overrides=settings.overrides)
    assert start_notes(settings, space, load_search_data(settings, space)) == []
    # fixed values every trial trains smaller on this data (the space's batch_size 128, --set topk 9 on 8 clips):
    # said as the trainer alone says them (a search said nothing; the trials recorded 128 and 8: a walkthrough)
    tiny = own.replace("n_train=200", "n_train=8")
    settings = load_settings(None, {"data": tiny}, ["topk=9"])
    space = load_space(settings.space_path(), overrides=settings.overrides)
    clamped = [n for n in start_notes(settings, space, load_search_data(settings, space)) if "in every trial" in n]
    assert clamped == [
        "batch_size 128 is larger than the train split (8 clips): batches of 8, in every trial (recorded as given; "
        "each trial's effective.batch_size param holds what it trained with)",
        "topk 9 is not below the batch (8): 7 neighbours, in every trial (recorded as given; each trial's "
        "effective.topk param holds what it trained with)"], clamped  # fmt: skip
    # a space that searches use_nce and topk (ablation): its fixed batch_size is still said (a review: nothing was)
    settings = load_settings(None, {"data": own, "space": "ablation"}, [])
    space = load_space(settings.space_path(), overrides=settings.overrides)
    assert [n for n in start_notes(settings, space, load_search_data(settings, space)) if "in every trial" in n] == [
        "batch_size 256 is larger than the train split (200 clips): batches of 200, in every trial (recorded as "
        "given; each trial's effective.batch_size param holds what it trained with)"]  # fmt: skip
    # a fixed topk not below even the largest batch a searched batch_size gives (every trial trained 199 neighbours,
    # recorded as 220, and the start was silent: a walkthrough); none where some trial trains it as given
    from hsc_search.space import load_space_dict as space_of

    for choices, said in (([256, 512], True), ([221, 400], True), ([8, 16], False)):
        topk = 220 if said else 3
        space = space_of({"fixed": {"topk": topk}, "params": {"batch_size": {"type": "categorical",
                                                                               "choices": choices}}})  # fmt: skip
        notes = [n for n in start_notes(load_settings(None, {"data": own}, []), space, load_search_data(
            load_settings(None, {"data": own}, []), space)) if n.startswith("topk")]  # fmt: skip
        largest = min(max(choices), 200)  # the train split's 200 clips cap a batch
        if said and topk >= largest:
            assert notes == [f"topk 220 is not below any trial's batch (at most {largest} clips): each trains with its "
                             f"batch - 1 neighbours (at most {largest - 1}), in every trial (recorded as given; each "
                             "trial's effective.topk param holds what it trained with)"], (choices, notes)  # fmt: skip
        else:
            assert notes == [], (choices, notes)
    # searched batch sizes above the 200 training clips train alike, at 200; a --set that strands a condition
    settings = load_settings(None, {"data": own, "space": "hsc_mae"}, ["loss_weighting=fixed"])
    space = load_space(settings.space_path(), overrides=settings.overrides)
    notes = start_notes(settings, space, load_search_data(settings, space))
    assert ("batch_size 256, 512 exceeds the 200 training clips: such trials train with batches of 200 (alike, "
            "though the sampler takes them for different values)") in notes, notes
    from hsc_search.driver import _alike_notes
    from hsc_search.settings import SPACES_DIR
    from hsc_search.space import load_space_dict

    stepped = load_space_dict({"params": {"batch_size": {"type": "int", "low": 32, "high": 512, "step": 32}}})
    assert _alike_notes(stepped, 120, 6) == ["batch_size 128-512 exceeds the 120 training clips: such trials train "
                                             "with batches of 120 (alike, though the sampler takes them for different "
                                             "values)"]  # fmt: skip
    assert _alike_notes(stepped, 512, 6) == []
    # warm-ups a trial is too short for: the learning rate's (from --max-epochs on: trainer.fit clamps its steps to
    # the run's, so 3 and 5 train alike in 3 epochs) and the loss weights' (epoch > weight_warmup_epochs learns:
    # never, from --max-epochs on); one value is alike to nothing, so not called alike
    alike = " (alike, though the sampler takes them for different values)"
    hsc_mae = load_space(SPACES_DIR / "hsc_mae.yaml")
    assert _alike_notes(hsc_mae, 5000, 3) == [
        f"warmup_epochs 3-5 is not shorter than a trial (--max-epochs 3): such trials warm up over the whole run, "
        f"their learning rate peaking at its last step{alike}",
        "weight_warmup_epochs 3 is not shorter than a trial (--max-epochs 3): such trials never learn their loss "
        "weights"]  # fmt: skip
    assert _alike_notes(hsc_mae, 5000, 5) == ["warmup_epochs 5 is not shorter than a trial (--max-epochs 5): such "
                                              "trials warm up over the whole run, their learning rate peaking at its "
                                              "last step"]  # fmt: skip
    assert _alike_notes(hsc_mae, 5000, 6) == []
    grid = load_space_dict({"params": {"warmup_epochs": {"type": "float", "low": 0.0, "high": 4.0, "step": 2.0},
                                       "weight_warmup_epochs": {"type": "categorical", "choices": [0, 2, 4, 6]}}})
    assert _alike_notes(grid, 5000, 5) == ["weight_warmup_epochs 6 is not shorter than a trial (--max-epochs 5): "
                                           "such trials never learn their loss weights"]  # warm-ups 0, 2, 4: none >= 5
    smooth = load_space_dict({"params": {"warmup_epochs": {"type": "float", "low": 0.0, "high": 5.0}}})
    assert _alike_notes(smooth, 5000, 2)[0].startswith("warmup_epochs from 2 to 5 is not shorter than a trial")
    # float grids reach 3 as 3.0000000000000004 (Optuna's too): taken as 3 (the review)
    tenths = load_space_dict({"params": {"warmup_epochs": {"type": "float", "low": 0.1, "high": 5.0, "step": 0.1}}})
    assert _alike_notes(tenths, 5000, 3)[0].startswith("warmup_epochs 3-5 is not shorter")
    # weights the trainer never learns, fixed by the space or by --set: no word of their warm-up (the review)
    fixed = load_space_dict({"fixed": {"loss_weighting": "fixed"},
                             "params": {"weight_warmup_epochs": {"type": "int", "low": 0, "high": 3}}})
    assert not any("weight_warmup_epochs" in n and "never learn" in n for n in _alike_notes(fixed, 5000, 2))
    by_set = load_space(SPACES_DIR / "hsc_mae.yaml", overrides={"loss_weighting": "fixed"})
    assert not any("never learn" in n for n in _alike_notes(by_set, 5000, 2)), _alike_notes(by_set, 5000, 2)
    # warm-ups the space does not search: the trainer's default (1 and 1 epoch) or a fixed value, said once for
    # every trial (a smoke search of --max-epochs 1 never learned its weights, with nothing said); the weights'
    # only where some trial learns them
    quick, lr_only = load_space(SPACES_DIR / "quick.yaml"), {"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}
    assert not {"warmup_epochs", "weight_warmup_epochs"} & set(quick.names())  # (what it tests)
    assert _alike_notes(quick, 5000, 2) == []
    assert _alike_notes(quick, 5000, 1) == [
        "warmup_epochs 1 (the trainer's default) is not shorter than a trial (--max-epochs 1): every trial warms up "
        "over its whole run, its learning rate peaking at its last step",
        "weight_warmup_epochs 1 (the trainer's default) is not shorter than a trial (--max-epochs 1): trials with "
        "loss_weighting learned never learn their loss weights"], _alike_notes(quick, 5000, 1)  # fmt: skip
    learning = load_space_dict({"params": lr_only})  # loss_weighting: the trainer's default, learned
    assert _alike_notes(learning, 5000, 1)[1].endswith("(--max-epochs 1): no trial learns its loss weights")
    by_set = load_space(SPACES_DIR / "quick.yaml", overrides={"warmup_epochs": 2.5, "loss_weighting": "fixed"})
    assert _alike_notes(by_set, 5000, 2) == [
        "warmup_epochs 2.5 (fixed) is not shorter than a trial (--max-epochs 2): every trial warms up over its whole "
        "run, its learning rate peaking at its last step"], _alike_notes(by_set, 5000, 2)  # fmt: skip
    some = load_space_dict({"fixed": {"weight_warmup_epochs": 3},
                            "params": {"loss_weighting": {"type": "categorical", "choices": ["fixed", "learned"]}}})
    assert _alike_notes(some, 5000, 3) == [
        "weight_warmup_epochs 3 (fixed) is not shorter than a trial (--max-epochs 3): trials with loss_weighting "
        "learned never learn their loss weights"], _alike_notes(some, 5000, 3)  # fmt: skip
    under_when = load_space_dict({"params": {"topk": {"type": "int", "low": 0, "high": 3}, "loss_weighting": {
        "type": "categorical", "choices": ["fixed", "learned_raw"], "when": {"topk": [1, 2, 3]}}}})  # topk 0: learned
    assert _alike_notes(under_when, 5000, 1)[-1].endswith("trials with loss_weighting learned_raw or learned never "
                                                          "learn their loss weights"), _alike_notes(under_when, 5000, 1)
    in_file = load_space_dict({"params": {"warmup_epochs": {"type": "float", "low": 0.0, "high": 1.0}, **lr_only}},
                              overrides={"warmup_epochs": 4.0})  # a searched param --set fixes: its flag named
    assert _alike_notes(in_file, 5000, 4)[0].startswith("warmup_epochs 4 (fixed by --set) is not shorter"), \
        _alike_notes(in_file, 5000, 4)
    # a metric the trainer cannot keep checkpoints by: said; one it can: fixed in the space as select_metric, and
    # a select_metric fixed otherwise is refused (the trial's score would be of another epoch than its model)
    from hsc_search.driver import SearchError, select_checkpoints_by_metric

    for metric, mode, said in (("cca/rho_00", "max", True), ("val/map_a2v", "min", True), ("val/map_a2v", "max", False),
                               ("loss/total", "min", False)):  # fmt: skip
        settings = load_settings(None, {"data": own, "metric": metric, "mode": mode}, [])
        space = load_space(settings.space_path(), overrides=settings.overrides)
        noted = [n for n in start_notes(settings, space, load_search_data(settings, space)) if "keeps and tests" in n]
        assert bool(noted) == said, (metric, mode, noted)
        select_checkpoints_by_metric(space, settings)
        assert space.fixed.get("select_metric") == (None if said else metric)
    assert noted == [] and said is False
    settings = load_settings(None, {"data": own, "metric": "cca/rho_00"}, [])
    space = load_space(settings.space_path(), overrides=settings.overrides)
    assert start_notes(settings, space, load_search_data(settings, space)) == [
        "each trial keeps and tests the checkpoint of its best val/map_avg: --metric cca/rho_00 --mode max cannot "
        "select checkpoints (the trainer's select_metric takes val/map_avg, val/map_a2v, val/map_v2a, cca/mean "
        "highest; loss/total lowest), so a trial's score, its best cca/rho_00, can be of another epoch than its test "
        "metrics"]
    # a training loss as the metric, with searched fields that change how it is computed: said; without: not
    for metric, fields in (("loss/total", "mask_ratio, topk, tau, loss_weighting, weight_lr"), ("loss/rec", "mask_ratio"),
                           ("loss/dcca", None)):  # fmt: skip
        settings = load_settings(None, {"data": own, "metric": metric, "mode": "min"}, [])
        space = load_space(settings.space_path(), overrides=settings.overrides)
        said = [n for n in start_notes(settings, space, load_search_data(settings, space)) if "training loss" in n]
        assert [n.split(" (searched)")[0] for n in said] == ([f"--metric {metric} is a training loss, and {fields}"]
                                                           if fields else []), (metric, said)  # fmt: skip
        # the learned loss weights' example only where the weighting is searched (said of loss/rec: a walkthrough)
        assert not said or ("learned loss weights" in said[0]) == ("loss_weighting" in fields), said
    # a canonical correlation likewise: each trial's own head and ridge (a walkthrough: cca/mean 0.38 at ridge 1e-4,
    # 0.03 at 1e-1, one trained model); the quick space searches none of those fields
    for space_name, fields in (("hsc_mae", "cca_ridge, cca_dim"), ("ablation", "use_dcca"), ("quick", None)):
        settings = load_settings(None, {"data": own, "metric": "cca/mean", "space": space_name}, [])
        space = load_space(settings.space_path(), overrides=settings.overrides)
        said = [n for n in start_notes(settings, space, load_search_data(settings, space)) if "canonical" in n]
        assert [n.split(" (searched)")[0] for n in said] == (
            [f"--metric cca/mean is a canonical correlation of each trial's own CCA head, and {fields}"]
            if fields else []), (space_name, said)  # fmt: skip
    settings = load_settings(None, {"data": own, "metric": "val/map_a2v"}, ["select_metric=val/map_v2a"])
    space = load_space(settings.space_path(), overrides=settings.overrides)
    with pytest.raises(SearchError, match=r"select_metric 'val/map_v2a' differs from --metric val/map_a2v: a search "
                       "keeps each trial's checkpoint by its --metric; give --metric val/map_v2a instead"):
        select_checkpoints_by_metric(space, settings)
    config = tmp_path / "search.yaml"  # from a search config's set: that file is named (it blamed --set)
    config.write_text(f"data: {own}\nmetric: val/map_a2v\nset:\n  select_metric: val/map_v2a\n")
    settings = load_settings(config, {}, [])
    space = load_space(settings.space_path(), overrides=settings.overrides, set_from=settings.set_from)
    with pytest.raises(SearchError, match=rf"^{config}: set: select_metric 'val/map_v2a' differs from --metric"):
        select_checkpoints_by_metric(space, settings)
    stranded = [n.split(" is never searched")[0] for n in notes if "is never searched" in n]
    assert stranded == ["weight_lr", "logvar_floor", "weight_warmup_epochs"], notes  # all `when: loss_weighting`
    import h5py  # data whose audio is all zeros: said at the start too (tests/test_data.py has the note's text)
    import numpy as np

    with h5py.File(tmp_path / "zero.h5", "w") as f:
        for split, n in (("train", 40), ("val", 10), ("test", 10)):
            f[f"audio_{split}"], f[f"visual_{split}"] = np.zeros((n, 4)), np.random.default_rng(n).normal(size=(n, 4))
            f[f"lab_{split}"] = np.arange(n) % 3
    settings = load_settings(None, {"data": str(tmp_path / "zero.h5")}, [])
    space = load_space(settings.space_path(), overrides=settings.overrides)
    notes = start_notes(settings, space, load_search_data(settings, space))
    assert "every audio feature is constant over the train clips" in notes[0], notes
    assert notes[1:] == ["batch_size 128 is larger than the train split (40 clips): batches of 40, in every trial "
                         "(recorded as given; each trial's effective.batch_size param holds what it trained with)"]
    for spec, noted in ((own, True), (carved, False)):
        train = subprocess.run([sys.executable, "-m", "trainer", "--data", spec, "--set", "val_fraction=0.25",
                                "--set", "epochs=1", "--out", str(tmp_path / f"run{int(noted)}")], cwd=tmp_path,
                               env={**_env(_cache_dir), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                               timeout=300)  # fmt: skip
        assert train.returncode == 0, train.stderr[-2000:]
        note = f"note: --set val_fraction=0.25 is not used: {spec} has a val split of its own (30 clips)"
        assert (note in train.stdout) == noted, train.stdout[-2000:]


def test_export_best_then_retrain(search, _cache_dir):
    cwd, _ = search
    proc = _cli("export-best", "--out", "best.yaml", cwd=cwd, cache=_cache_dir)
    assert proc.returncode == 0, proc.stderr
    client = _client(cwd)
    _, _, children = _runs(client)
    scores = {c.info.run_id: max(m.value for m in client.get_metric_history(c.info.run_id, "val/map_avg"))
              for c in children}  # fmt: skip
    best_run = max(scores, key=scores.get)
    exported = yaml.safe_load((cwd / "best.yaml").read_text())
    logged = yaml.safe_load(Path(client.download_artifacts(best_run, "config.yaml", str(cwd))).read_text())
    assert exported == logged and exported["epochs"] == MAX_EPOCHS
    proc = _cli("export-best", "--out", "best.json", "--json", cwd=cwd, cache=_cache_dir)
    assert proc.returncode == 0 and json.loads((cwd / "best.json").read_text()) == exported
    # `~` after `=` (no shell expands it there): the home folder, not a folder named `~` here
    home = cwd / "home"
    home.mkdir()
    tilde = subprocess.run([str(BIN / "hsc-search"), "export-best", "--out=~/b.yaml"], cwd=cwd, capture_output=True,
                           env={**_env(_cache_dir), "HOME": str(home)}, text=True, timeout=120)  # fmt: skip
    assert tilde.returncode == 0 and (home / "b.yaml").exists() and not (cwd / "~").exists(), tilde.stderr
    # ranked by another metric than the search's: the best trial by val/map_a2v, set to keep its best a2v epoch
    proc = _cli("export-best", "--out", "a2v.yaml", "--metric", "val/map_a2v", cwd=cwd, cache=_cache_dir)
    assert proc.returncode == 0, proc.stderr
    a2v = {c.info.run_id: max(m.value for m in client.get_metric_history(c.info.run_id, "val/map_a2v"))
           for c in children}  # fmt: skip
    by_a2v = yaml.safe_load(Path(client.download_artifacts(max(a2v, key=a2v.get), "config.yaml", str(cwd / "a2v")))
                            .read_text())  # fmt: skip
    assert by_a2v["select_metric"] == "val/map_avg"  # as its search kept it
    assert yaml.safe_load((cwd / "a2v.yaml").read_text()) == {**by_a2v, "select_metric": "val/map_a2v"}
    # the file's own header is the retrain command, with the search's data, pasted into a shell as it is (its
    # python: this environment's, by its absolute path)
    header = (cwd / "best.yaml").read_text().splitlines()[1].lstrip("#").strip()
    best_yaml = shlex.quote(str((cwd / "best.yaml").resolve()))  # absolute: the command works in any folder
    assert header.endswith(f" train --config {best_yaml} --data {shlex.quote(DATA)}"), header
    command = shlex.split(header)[0]  # not a bare name; `hsc-search train`: no trainer.py where pasted shadows it
    assert command == os.path.abspath(Path(sys.executable).parent / "hsc-search"), header
    # the next line says which trial and search the file comes from (a copy elsewhere still does), by run ids
    parent = client.get_run(client.get_run(best_run).data.tags["mlflow.parentRunId"])
    source = (cwd / "best.yaml").read_text().splitlines()[2]
    assert source.startswith(f"# from trial {client.get_run(best_run).info.run_name} (MLflow run {best_run}) of "
                             f"search {parent.info.run_name} (run {parent.info.run_id}): val/map_avg "), source
    assert float(source.split("val/map_avg ")[1].split(",")[0]) == pytest.approx(scores[best_run], rel=1e-5), source
    (cwd / "elsewhere").mkdir()
    train = subprocess.run(f"{header} --out rt", shell=True, cwd=cwd / "elsewhere", env=_env(_cache_dir),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert train.returncode == 0, train.stderr
    assert len([l for l in train.stdout.splitlines() if l.startswith("epoch")]) == MAX_EPOCHS
    assert (cwd / "elsewhere" / "rt" / "summary.json").exists()
    # the pasted retrain trains the trial's epochs over: its val/map_avg epoch by epoch is the trial's in MLflow (up
    # to the float rounding of another thread count, README: about 1e-6), for as many epochs as the trial trained
    retrained = {int(m["epoch"]): m["val/map_avg"] for m in map(json.loads, (cwd / "elsewhere" / "rt" /
                                                                             "metrics.jsonl").read_text().splitlines())
                 if "val/map_avg" in m}  # fmt: skip
    trial = {m.step: m.value for m in client.get_metric_history(best_run, "val/map_avg")}
    assert trial and all(retrained[e] == pytest.approx(v, abs=1e-5) for e, v in trial.items()), (retrained, trial)
    # the header's last line is the fingerprint of the search's data (as its parent run recorded it): the same data
    # retrains without a word, other data of the same shapes (a file changed in place since the search) is named
    # (it retrained to another score silently: a walkthrough)
    mark = (cwd / "best.yaml").read_text().splitlines()[3]
    assert mark.startswith("# the search's data (train says when --data differs): "), mark
    assert json.loads(mark.split(": ", 1)[1]) == json.loads(parent.data.tags["hsc.data_fingerprint"])
    assert "is not the data" not in train.stdout, train.stdout
    other = DATA.replace("seed=2", "seed=3")
    train = subprocess.run([sys.executable, "-m", "trainer", "--config", str(cwd / "best.yaml"), "--data", other,
                            "--set", "epochs=1", "--out", str(cwd / "rt_other")], cwd=cwd, env=_env(_cache_dir),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert train.returncode == 0, train.stderr
    assert (f"note: --data {other} is not the data the search behind {cwd / 'best.yaml'} ran on (other clips, labels "
            "or values than the fingerprint in its header): this run will not reproduce the search's score"
            ) in train.stdout, train.stdout  # fmt: skip
    proc = _cli("export-best", "--experiment", "no-such-exp", cwd=cwd, cache=_cache_dir)
    assert proc.returncode == 2 and "no-such-exp" in proc.stderr and "Traceback" not in proc.stderr
    # an output replaces only an earlier output of its kind: not the store, not the best config (each command
    # overwrote any file it was given: `replay --json best.yaml` replaced the config, `report --out mlflow.db`
    # the store)
    kept = {n: (cwd / n).read_bytes() for n in ("mlflow.db", "best.yaml", "best.json")}
    for args, what in ((("export-best", "--out", "mlflow.db"), "a config export-best wrote"),
                       (("export-best", "--out", "best.yaml", "--json"), None),  # .yaml with --json: its own line
                       (("replay", "--json", "best.yaml"), "a replay JSON hsc-search wrote"),
                       (("report", "--no-log", "--out", "best.json"), "a report hsc-search wrote"),
                       (("report", "--no-log", "--out", "mlflow.db"), "a report hsc-search wrote")):  # fmt: skip
        proc = _cli(*args, cwd=cwd, cache=_cache_dir)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
        flag, name = args[-2:] if what else (None, None)
        if what:
            assert proc.stderr.strip() == (f"error: {flag} {name}: exists and is not {what}, so it is not "
                                           "overwritten; pick another file, or delete this one first"), proc.stderr
    assert {n: (cwd / n).read_bytes() for n in kept} == kept
    proc = _cli("export-best", "--out", "best.yaml", cwd=cwd, cache=_cache_dir)  # its own earlier output: replaced
    assert proc.returncode == 0 and (cwd / "best.yaml").read_bytes() == kept["best.yaml"], proc.stderr


def test_an_s3_storage_that_cannot_be_reached_is_one_line(tmp_path, _cache_dir):
    """An S3 endpoint that does not answer (here one on 127.0.0.1 with nothing listening): a 43-line traceback from
    looking the search's folder up (a walkthrough); one line naming the storage."""
    import socket

    hold = socket.socket()  # bound and not listening, to the test's end: refused, and no other process takes it
    hold.bind(("127.0.0.1", 0))  # (a closed port was once taken by another job's Ray: test_preflight)
    port = hold.getsockname()[1]
    env = {**_env(_cache_dir), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "y", "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    proc = subprocess.run([str(BIN / "hsc-search"), "run", "--storage", "s3://bkt/rr", "--no-mlflow"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.startswith("error: storage 's3://bkt/rr/") and "cannot be reached" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # the endpoint in the URI's query, as pyarrow takes a MinIO server: the search's name was appended after the
    # query ("...&scheme=http/<name>"), so pyarrow read a scheme "http/<name>" and the endpoint was never used
    del env["AWS_ENDPOINT_URL"]
    uri = f"s3://bkt/rr?endpoint_override=127.0.0.1:{port}&scheme=http"
    proc = subprocess.run([str(BIN / "hsc-search"), "run", "--storage", uri, "--no-mlflow", "--name", "q"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.startswith(f"error: storage 's3://bkt/rr/q?endpoint_override=127.0.0.1:{port}&scheme=http': "
                                  "cannot be reached") and f"127.0.0.1 port {port}" in proc.stderr, proc.stderr
    hold.close()


def test_a_storage_uri_with_a_query_reaches_ray_with_its_query(tmp_path, monkeypatch):
    """Ray Tune was given the storage path without its query (the endpoint of an S3-compatible server), so it went
    to AWS, and a search name with the query glued on (a review)."""
    from hsc_search import storage
    from hsc_search.driver import _run_config, outputs_dir
    from hsc_search.settings import SearchSettings

    root = storage.resolve("s3://bkt/rr/?endpoint_override=127.0.0.1:9000&scheme=http")
    exp = storage.join(root, "q")
    assert exp == "s3://bkt/rr/q?endpoint_override=127.0.0.1:9000&scheme=http"
    config = _run_config(SearchSettings(), exp, [])
    assert (config.storage_path, config.name) == ("s3://bkt/rr?endpoint_override=127.0.0.1:9000&scheme=http", "q")
    monkeypatch.chdir(tmp_path)
    assert outputs_dir(exp) == tmp_path / "hsc_outputs" / "q"
    assert storage.split(str(tmp_path / "rr" / "q")) == (str(tmp_path / "rr"), "q")


@pytest.mark.parametrize(
    "args, needles",
    [
        (["run", "--space", "nope.yaml"], ["nope.yaml"]),
        (["run", "--set", "bogus=1"], ["bogus"]),
        (["run", "--set", "epochs=3"], ["--max-epochs"]),
        (["run", "--num-samples", "0", "--mode", "up"], ["--num-samples must be >= 1, got 0", "--mode must be max"]),
        (["run", "--data", "missing.h5"], ["missing.h5"]),
        (["export-best", "--experiment", "no-such-exp"], ["no MLflow database", "mlflow.db"]),
        (["resume", "not_a_search"], ["not_a_search"]),
        # issue 8: each of these trained, hung or left a run RUNNING before the pre-flight
        (["run", "--metric", "nonexistent/key"], ["--metric nonexistent/key", "val/map_avg"]),
        (["run", "--metric", "test/map_avg"], ["--metric test/map_avg", "validation metric"]),
        (["run", "--tracking-uri", "http://127.0.0.1:1"], ["--tracking-uri http://127.0.0.1:1", "within 10 s"]),
        (["run", "--tracking-uri", "sqlite:////no/such/dir/x.db"], ["/no/such/dir", "does not exist"]),
        (["run", "--gpus-per-trial", "1"], ["1 GPU per trial", "this machine", "0 GPU"]),
        (["run", "--cpus-per-trial", "4096"], ["4096 CPU per trial", "this machine"]),
        (["run", "--storage", "/dev/null/results"], ["--storage", "/dev/null/results", "Not a directory"]),
        (["run", "--set", "lr=.inf"], ["lr", "expected a finite number"]),
        (["run", "--set", "val_fraction=2"], ["val_fraction"]),
        (["run", "--data", "synthetic:ave?n_train=100&num_classes=1"], ["num_classes"]),
        # each of these failed with a traceback, or hung, once Ray had started
        (["run", "--seed", "-1"], ["--seed must be in [0, 2**32 - 1]"]),
        (["run", "--reduction-factor", "nan"], ["--reduction-factor must be a finite number > 1"]),
        (["run", "--name", "../elsewhere"], ["--name '../elsewhere'", "one folder name"]),
        (["run", "--storage", "/tmp/" + "x" * 300], ["cannot be looked up", "File name too long"]),  # a traceback
        (["run", "--tracking-uri", "postgresql://u@127.0.0.1:1/db"], ["no database answers at 127.0.0.1:1"]),
        (["run", "--tracking-uri", "htp://x"], ["unknown scheme 'htp'"]),
        (["run", "--address", "127.0.0.1:1"], ["--address 127.0.0.1:1: no Ray head answers"]),
    ],
)
def test_bad_input_fails_before_anything_starts(args, needles, tmp_path, _cache_dir):
    t0 = time.monotonic()
    proc = _cli(*args, cwd=tmp_path, cache=_cache_dir, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in proc.stderr
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()
    assert time.monotonic() - t0 < 60  # seconds, not a Ray start-up or a trial (bounded: the machine is shared)


@pytest.mark.parametrize(
    "text, needles",
    [
        ("num_samples: two\n", ["search.yaml: num_samples: expected an integer, got 'two'"]),
        ("num_samples: 2.5\n", ["search.yaml: num_samples: expected an integer, got 2.5"]),
        ("mlflow: 1\n", ["search.yaml: mlflow: expected true or false"]),
    ],
)
def test_bad_search_config_values_are_named(text, needles, tmp_path, _cache_dir):
    (tmp_path / "search.yaml").write_text(text)
    proc = _cli("run", "--config", "search.yaml", cwd=tmp_path, cache=_cache_dir, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for n in needles:
        assert n in proc.stderr


def test_a_new_searchs_folder_is_claimed_and_let_go_of(tmp_path, monkeypatch):
    """`run` makes and holds its folder in its pre-flight; a pre-flight that then fails (or a Ctrl-C before Ray ran
    the search) removes it and the folders the claim made; a folder holding nothing but the unheld lock of a run
    killed in its pre-flight is free for the next `run` of that name (it said "holds no hsc-search search")."""
    from hsc_search.driver import (DRIVER_LOCK, SearchError, _claim_new_folder, _refuse_existing, _remove_unstarted,
                                   release_search, search_driver)  # fmt: skip

    exp = tmp_path / "a" / "ray_results" / "s"
    _claim_new_folder(str(exp))
    try:
        assert (exp / DRIVER_LOCK).is_file() and search_driver(str(exp)) is None  # held by this process
        probe = subprocess.run([sys.executable, "-c", f"from hsc_search.driver import search_driver; "
                                f"print(search_driver({str(exp)!r}))"], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert probe.stdout.startswith(f"driver pid {os.getpid()} on "), probe.stdout + probe.stderr
        assert _remove_unstarted(str(exp))
    finally:
        release_search(str(exp))
    assert not (tmp_path / "a").exists() and tmp_path.is_dir()  # ray_results and a were made by the claim
    exp.mkdir(parents=True)
    (exp / DRIVER_LOCK).write_text("driver pid 1 on gone, since 2026-12-04")  # killed in its pre-flight
    _refuse_existing(str(exp))  # free
    (exp / "x.txt").write_text("someone's")
    with pytest.raises(SearchError, match="exists already and holds no hsc-search search; pick another --name"):
        _refuse_existing(str(exp))
    # a run that fails after its claim, before its record (here Ray's start): the claim is taken back too
    from hsc_search import driver
    from hsc_search.settings import SearchSettings

    def no_ray(*a, **k):
        raise RuntimeError("Ray did not start")

    monkeypatch.setattr(driver, "_init_ray", no_ray)
    with pytest.raises(RuntimeError, match="Ray did not start"):
        driver.run_search(SearchSettings(name="s", storage=str(tmp_path / "b" / "rr"), data=DATA, mlflow=False,
                                         max_epochs=1, num_samples=1), echo=lambda _: None)  # fmt: skip
    assert not (tmp_path / "b").exists() and not driver._HELD and not driver._CLAIMED
    # a name by default taken in the same second (another search of a shell loop, or an earlier one's folder): the
    # next free -2, -3 (the second search was refused, its user having named neither: a walkthrough)
    monkeypatch.setattr(driver.time, "strftime", lambda fmt, *a: "hsc-fixed" if fmt.startswith("hsc-") else "now")
    taken = tmp_path / "c" / "rr" / "hsc-fixed"
    taken.mkdir(parents=True)
    (taken / "x.txt").write_text("someone's")
    (taken.parent / "hsc-fixed-2").mkdir()
    (taken.parent / "hsc-fixed-2" / DRIVER_LOCK).write_text("driver pid 1 on gone, since then")  # free (killed)
    settings = SearchSettings(storage=str(taken.parent), data=DATA, mlflow=False, max_epochs=1, num_samples=1)
    with pytest.raises(RuntimeError, match="Ray did not start"):
        driver.run_search(settings, echo=lambda _: None)
    assert settings.name == "hsc-fixed-2" and (taken / "x.txt").is_file()
    # the same object again (a notebook's loop, or a retry), its name taken meanwhile: a default name still, the
    # next free one (it was refused: "hsc-fixed-2 exists already ...; pick another --name", a walkthrough)
    (taken.parent / "hsc-fixed-2").mkdir(exist_ok=True)
    (taken.parent / "hsc-fixed-2" / "x.txt").write_text("someone's")
    with pytest.raises(RuntimeError, match="Ray did not start"):
        driver.run_search(settings, echo=lambda _: None)
    assert settings.name == "hsc-fixed-3" and "_default_name" not in settings.to_dict(), settings.name
    with pytest.raises(SearchError, match="hsc-fixed exists already and holds no hsc-search search"):
        driver.run_search(SearchSettings(name="hsc-fixed", storage=str(taken.parent), data=DATA, mlflow=False,
                                         max_epochs=1, num_samples=1), echo=lambda _: None)  # named: refused


def _wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_resume_of_a_search_still_running_is_refused(tmp_path, _cache_dir):
    """`resume` of a search whose driver is alive: refused in seconds, naming the driver, nothing changed; the running
    search finishes as if nothing happened. (A second driver trained the same trials again beside the first,
    overwrote its experiment state, and the first then ended saying it was interrupted, exit 130.)"""
    from hsc_search.driver import SearchError, run_search, search_driver  # (before the driver starts: a slow
    from hsc_search.settings import SearchSettings  # import let it reach "Ray:" before the first look)

    data = DATA.replace("n_train=500", "n_train=3000")  # about 0.2 s an epoch: the search runs for a while
    out = (tmp_path / "run.out").open("w")
    driver = subprocess.Popen([str(BIN / "hsc-search"), "run", "--data", data, "--num-samples", "2", "--max-epochs",
                               "40", "--scheduler", "fifo", "--no-mlflow", "--name", "busy"],
                              cwd=tmp_path, env=_env(_cache_dir), stdout=out, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    exp = tmp_path / "ray_results" / "busy"
    try:
        # the new search holds its folder from its pre-flight on, before Ray starts: a second `run` of its name
        # started while Ray started passed its pre-flight (the folder did not exist yet), left a FAILED parent run,
        # and its Ctrl-C removed the first search's record (a walkthrough with two terminals)
        deadline = time.monotonic() + 120
        while search_driver(str(exp)) is None and "Ray:" not in (tmp_path / "run.out").read_text():
            assert driver.poll() is None and time.monotonic() < deadline, (tmp_path / "run.out").read_text()[-3000:]
            time.sleep(0.05)
        assert "Ray:" not in (tmp_path / "run.out").read_text(), "the folder was held only once Ray was up"
        with pytest.raises(SearchError, match=rf"{re.escape(str(exp))} exists already \(its search is running: "
                                              rf"driver pid {driver.pid} on "):
            run_search(SearchSettings(name="busy", storage=str(tmp_path / "ray_results"), data=data, mlflow=False))
        assert driver.poll() is None
        _wait_for(lambda: " started" in (tmp_path / "run.out").read_text() or driver.poll() is not None, 240,
                  "the first trial to start")  # fmt: skip
        assert driver.poll() is None, (tmp_path / "run.out").read_text()[-3000:]
        ours = ("hsc_search.json", ".hsc_driver.lock")  # (Ray's own files change as the search runs)
        files = {n: (exp / n).read_bytes() for n in ours}
        t0 = time.monotonic()
        proc = _cli("resume", str(exp), cwd=tmp_path, cache=_cache_dir, timeout=120)
        assert time.monotonic() - t0 < 30
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert re.fullmatch(rf"error: {re.escape(str(exp))}: its search is running \(driver pid {driver.pid} on "
                            r"\S+, since [^)]+\); a second driver would train the same trials again: wait for it to "
                            r"end, or stop it first \(Ctrl-C\)\n", proc.stderr), proc.stderr  # fmt: skip
        assert "Ray:" not in proc.stdout
        assert {n: (exp / n).read_bytes() for n in ours} == files  # the record and the driver's mark unchanged
        # a new search under its name, before Ray saved anything or after: said to be running, never "remove it"
        with pytest.raises(SearchError, match=rf"{re.escape(str(exp))} exists already \(its search is running: "
                                              rf"driver pid {driver.pid} on "):
            run_search(SearchSettings(name="busy", storage=str(tmp_path / "ray_results"), data=data, mlflow=False))
        assert driver.wait(timeout=300) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
        out.close()
    text = (tmp_path / "run.out").read_text()
    assert "trials: 2 completed" in text and "interrupted" not in text, text[-3000:]
    again = _cli("resume", str(exp), cwd=tmp_path, cache=_cache_dir, timeout=120)  # the driver is gone: the lock too
    assert again.returncode == 0 and "nothing to resume" in again.stdout, again.stdout + again.stderr


def test_a_refused_restore_of_a_search_without_mlflow_writes_nothing(tmp_path, monkeypatch):
    """The restore refusal skipped MLflow's tail but not a --no-mlflow search's: its best config was written from
    Ray's results (created for a search killed before its end) while the line said its record was as it was (a
    review). Ray's restore failing is driven for real in test_sigkill_driver_then_resume; here the driver's end of
    it, with Ray's results reader standing in."""
    import types

    import ray.tune

    from hsc_search import driver
    from hsc_search.ray_internals import RestoreFailed

    class Tuner:
        def fit(self):
            raise RestoreFailed("ValueError: a searcher state cut short")

    written = []
    monkeypatch.setattr(driver, "tuner_parts", lambda tuner: ([], None, None))
    monkeypatch.setattr(ray.tune, "ExperimentAnalysis", lambda path: types.SimpleNamespace(trials=["t1"]))
    monkeypatch.setattr(driver, "ray_rows", lambda trials, *args: ["row"])
    monkeypatch.setattr(driver, "best_row", lambda rows, mode: "best")
    monkeypatch.setattr(driver, "_best_config_from_ray", lambda *args: written.append(args))
    settings = types.SimpleNamespace(metric="val/map_avg", mode="max", num_samples=4, max_epochs=2, address=None)
    with pytest.raises(driver.SearchRestoreFailed, match="its record are as they were"):
        driver._fit_and_tail(Tuner(), None, settings, str(tmp_path), None, None, print, True, [])
    assert written == [] and list(tmp_path.iterdir()) == []


def test_sigkill_driver_then_resume(tmp_path, _cache_dir):
    """Kill the driver mid-search with SIGKILL; `resume` completes it with one child run per trial, none RUNNING,
    and ASHA's rungs still hold the trials recorded before the kill. The search's folder is moved before the
    resume: the trials not started before the kill failed there, 3 times each, for good (Ray's restored searcher
    made them in the folder the search started in: a walkthrough)."""
    trials, epochs = 8, 20
    # trials long enough (about 0.2 s an epoch here) that the kill can land while two have finished and others
    # run with a checkpoint: on the test's usual data a whole search of 8 trials took 2.5 s
    data = DATA.replace("n_train=500", "n_train=3000")
    assert data != DATA
    # Ray snapshots the experiment every 10 s by default (and when a trial's checkpoints turn over): a search of a
    # few seconds could end before a snapshot with a running trial's checkpoint existed. One snapshot a second,
    # Tune's own setting, gives the kill below something to hit; nothing else about the search changes.
    env = {**_env(_cache_dir), "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = subprocess.Popen(
        [str(BIN / "hsc-search"), "run", "--data", data, "--num-samples", str(trials), "--max-epochs", str(epochs),
         "--grace-period", "2", "--name", "killme"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    family: set[int] = set()
    try:
        def finished_trials() -> int:
            family.update(p.pid for p in psutil.Process(driver.pid).children(recursive=True))
            if driver.poll() is not None:
                pytest.fail("the search ended before it could be killed:\n" + driver.stdout.read()[-3000:])
            if not (tmp_path / "ray_results" / "killme" / "hsc_search.json").exists():
                return 0  # the driver has not finished creating the store yet (concurrent migrations collide)
            try:
                _, _, children = _runs(_client(tmp_path))
            except Exception:
                return 0
            return sum(c.info.status == "FINISHED" for c in children)

        def snapshot_has_a_running_checkpoint() -> bool:  # so the race below can be recreated
            # read as the check after the kill reads it: a checkpoint folder on disk is not enough, the snapshot
            # must name it (with faster start-ups the folder often came before the snapshot that names it)
            from ray.tune import ExperimentAnalysis

            try:
                snapshot = ExperimentAnalysis(str(tmp_path / "ray_results" / "killme")).trials
            except Exception:  # no snapshot yet, or one being written
                return False
            return any(t.status not in ("TERMINATED", "ERROR") and t.checkpoint is not None
                       and Path(t.checkpoint.path).is_dir() for t in snapshot)  # fmt: skip

        _wait_for(lambda: finished_trials() >= 2 and snapshot_has_a_running_checkpoint(), 240,
                  "two finished trials and a snapshot with a running trial")  # fmt: skip
        os.kill(driver.pid, signal.SIGKILL)
        killed_at = time.time()
        driver.wait(timeout=30)
    finally:
        _kill_all(family | {driver.pid})
    _, _, before = _runs(_client(tmp_path))
    done_before = {c.data.tags["hsc.trial_id"] for c in before if c.info.status == "FINISHED"}
    assert len(done_before) < trials, "killed too late to test resume"
    # The race a real kill can hit: Ray deleted the checkpoint that its last experiment snapshot names (it keeps
    # 2 per trial but snapshots only every few). Recreate it: delete exactly that checkpoint of every unfinished
    # trial of the snapshot. Without the fallback in `restorable_trainable` those trials end FAILED.
    from ray.tune import ExperimentAnalysis

    exp_dir = tmp_path / "ray_results" / "killme"
    snapshot = ExperimentAnalysis(str(exp_dir)).trials  # it reads RUNNING trials back as PENDING
    running = [t.trial_id for t in snapshot if t.status not in ("TERMINATED", "ERROR")]
    removed = []
    for t in snapshot:
        if t.trial_id in running and t.checkpoint is not None and Path(t.checkpoint.path).is_dir():
            shutil.rmtree(t.checkpoint.path)
            removed.append(Path(t.checkpoint.path).name)
    assert removed, f"the snapshot holds no unfinished trial with a checkpoint ({running}): killed too early"

    (tmp_path / "moved").mkdir()
    exp_dir = exp_dir.rename(tmp_path / "moved" / "killme")  # (the folder moves; the store stays where it is)
    record = exp_dir / "hsc_search.json"
    assert "finished_at" not in json.loads(record.read_text())  # killed: not finished
    time.sleep(max(0.0, killed_at + 5 - time.time()))  # the search stays stopped for 5 s at least
    resumed_at = time.time()
    # the command as printed, pasted in another folder: the record names the store by its absolute path
    assert json.loads(record.read_text())["settings"]["tracking_uri"] == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    # a saved state Ray cannot read (here its searcher's, cut short; a review: one saved by an earlier version):
    # Ray logged it and started the search over, its trials ran again under new ids and the finished trials' runs
    # were deleted as lost. Refused in one line, nothing changed; the state mended, the search resumes
    searcher = next(exp_dir.glob("searcher-state-*.pkl"))
    kept = searcher.read_bytes()
    searcher.write_bytes(kept[: len(kept) // 2])
    files = {p.name: p.stat().st_mtime_ns for p in exp_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
    parent = _runs(_client(tmp_path))[1][0]
    artifacts = {a.path for a in _client(tmp_path).list_artifacts(parent.info.run_id)}
    refused = _cli("resume", str(exp_dir), cwd=tmp_path, cache=_cache_dir)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stdout[-3000:] + refused.stderr[-5000:]
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: {exp_dir}: Ray could not read the search's "
                                                              "saved state ("), refused.stderr[-3000:]  # fmt: skip
    assert "nothing of it ran and its trials, their MLflow runs and its record are as they were" in refused.stderr
    assert not re.search(r"\] +\w{8} (started|resumed)", refused.stdout + refused.stderr), refused.stderr  # no trial ran
    _, parents, after = _runs(_client(tmp_path))
    assert {c.info.run_id for c in after} == {c.info.run_id for c in before}  # none deleted, none added
    # nor its record: no empty rung history, summary or report over the last one's (a review); ended as interrupted
    assert {p.name: p.stat().st_mtime_ns for p in exp_dir.iterdir() if p.is_file()
            and not p.name.startswith(".")} == files  # (not the lock's, nor Ray's storage marker)  # fmt: skip
    assert {a.path for a in _client(tmp_path).list_artifacts(parent.info.run_id)} == artifacts
    assert parents[0].data.metrics == parent.data.metrics and parents[0].info.status == "KILLED"
    searcher.write_bytes(kept)
    (tmp_path / "elsewhere").mkdir()
    proc = _cli("resume", str(exp_dir), cwd=tmp_path / "elsewhere", cache=_cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert not (tmp_path / "elsewhere" / "mlflow.db").exists()
    assert json.loads(record.read_text())["finished_at"]
    # resumed once more: the search is done, said in one line before Ray starts, exit 0, nothing touched
    before = {p: p.stat().st_mtime_ns for p in exp_dir.iterdir() if p.is_file()}
    again = _cli("resume", str(exp_dir), cwd=tmp_path, cache=_cache_dir, timeout=60)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished at" in again.stdout and "nothing to resume" in again.stdout and "best_config.yaml" in again.stdout
    assert "Ray:" not in again.stdout and len(again.stdout.strip().splitlines()) == 1, again.stdout
    assert before == {p: p.stat().st_mtime_ns for p in exp_dir.iterdir() if p.is_file()}
    same = _cli("run", "--data", data, "--name", "killme", "--storage", "moved", cwd=tmp_path, cache=_cache_dir,
                timeout=120)  # fmt: skip
    assert same.returncode == 2 and "exists already and holds a search that finished; pick another --name" in same.stderr
    # a search inside that search's folder was accepted (moving or deleting that one took it with it; a walkthrough)
    inner = _cli("run", "--data", data, "--name", "inner", "--storage", str(exp_dir / "nested"), cwd=tmp_path,
                 cache=_cache_dir, timeout=120)  # fmt: skip
    assert inner.returncode == 2 and inner.stderr.strip() == (
        f"error: --storage {exp_dir / 'nested'}: inside the folder of search killme ({exp_dir}), whose own files this "
        f"search's would sit among; give a --storage outside it, e.g. {exp_dir.parent}"), inner.stderr  # fmt: skip
    assert not (exp_dir / "nested").exists()
    inner = _cli("run", "--data", data, "--name", "inner", "--storage", f"file://{exp_dir / 'nested'}", cwd=tmp_path,
                 cache=_cache_dir, timeout=120)  # fmt: skip (a file:// URI is a folder here too: a review)
    assert inner.returncode == 2 and f"inside the folder of search killme ({exp_dir})" in inner.stderr, inner.stderr
    assert not (exp_dir / "nested").exists()
    _, parents, children = _runs(_client(tmp_path))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["hsc.experiment_dir"] == str(exp_dir)  # where it is now (the commands read it)
    ids = [c.data.tags["hsc.trial_id"] for c in children]
    assert len(ids) == trials == len(set(ids))
    states = [(c.data.tags["hsc.trial_id"], c.info.status, c.data.tags.get("hsc.outcome"), c.data.tags.get("hsc.error", "")[-500:])
              for c in children]  # fmt: skip
    assert all(s == "FINISHED" for _, s, _, _ in states), f"removed {removed}: {states}\n{proc.stdout[-4000:]}"
    assert done_before & set(ids), "no trial finished before the kill survived the restore"
    # a trial that ran across the kill: its seconds (report, summary table) are the seconds it ran, not its run's
    # duration, which counts the time the search was stopped
    from hsc_search.export import trial_rows

    rows = {r.run_id: r for r in trial_rows(_client(tmp_path), children[0].info.experiment_id, parents[0].info.run_id,
                                            "val/map_avg", "max")}  # fmt: skip
    across = [c for c in children if c.info.start_time < killed_at * 1000 < resumed_at * 1000 < c.info.end_time]
    assert across and len(rows) == trials
    for c in children:
        assert rows[c.info.run_id].seconds == c.data.metrics["time/total_s"]
    for c in across:
        stopped = resumed_at - killed_at
        assert (c.info.end_time - c.info.start_time) / 1000 - c.data.metrics["time/total_s"] >= stopped - 1
    for c in children:  # resumed trials repeat no epoch: steps are exactly 1..n
        steps = [m.step for m in _client(tmp_path).get_metric_history(c.info.run_id, "val/map_avg")]
        assert sorted(steps) == list(range(1, len(steps) + 1))
    rungs = json.loads((exp_dir / "asha_rungs.json").read_text())["rungs"][0]
    assert not (tmp_path / "ray_results" / "killme").exists()  # nothing made where the search started
    lowest = rungs[-1]  # the grace-period rung: every trial that reached epoch 2 is recorded there
    assert set(lowest) == set(ids)


def _kill_all(pids: set[int]) -> None:
    """Stops what the killed driver left behind (Ray's processes), bounded."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=15)


def test_synth_data_and_train_hand_over_to_the_trainer(tmp_path, _cache_dir):
    proc = _cli("synth-data", "ave", "small.h5", "--set", "n_train=300", "--set", "n_val=60", "--set", "n_test=60",
                "--set", "dim_audio=12", "--set", "dim_visual=16", cwd=tmp_path, cache=_cache_dir, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = _cli("train", "--data", "small.h5", "--out", "run", "--set", "epochs=2", "--set", "hidden_dim=32",
                "--set", "batch_size=50", cwd=tmp_path, cache=_cache_dir, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len([l for l in proc.stdout.splitlines() if l.startswith("epoch")]) == 2
    assert "train 300 / val 60 / test 60 clips, audio 12-d, visual 16-d" in proc.stdout
    assert (tmp_path / "run" / "summary.json").exists()


def test_resume_of_a_folder_it_cannot_continue_says_so_before_ray_starts(tmp_path):
    """A record cut short or from another version, and a folder whose search stopped before Ray saved it: one
    sentence each, before a Ray instance is started (that took about 19 s before the check)."""
    import ray

    from hsc_search.driver import SearchError, resume_search

    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "hsc_search.json").write_text('{"settings": {"space": "quick", ')
    other = tmp_path / "other"
    other.mkdir()
    (other / "hsc_search.json").write_text(json.dumps({"settings": {"speed": 2}, "space": {}, "parent_run_id": None,
                                                       "experiment_id": None}))  # fmt: skip
    unsaved = tmp_path / "unsaved"
    unsaved.mkdir()
    (unsaved / "hsc_search.json").write_text(json.dumps({"settings": {}, "space": {}, "parent_run_id": None,
                                                         "experiment_id": None}))  # fmt: skip
    # killed between Ray's tuner.pkl and its first experiment state: a restore started the search from nothing
    # (one trial ran, then every resume stopped at once and said `interrupted`)
    pickled = tmp_path / "pickled"
    shutil.copytree(unsaved, pickled)
    (pickled / "tuner.pkl").write_bytes(b"")
    gone = "nothing of it can be continued; to start it again under its name, remove the folder (`rm -r "
    for folder, needle in [(cut, "not a readable search record (Expecting property name"),
                           (other, "not a readable search record (SearchSettings.__init__() got an unexpected"),
                           (unsaved, "Ray Tune has no restorable experiment state here"), (unsaved, gone),
                           (pickled, f"Ray Tune has no restorable experiment state here (the search stopped before Ray "
                                     f"saved it): {gone}{pickled}`)")]:  # fmt: skip
        with pytest.raises(SearchError, match=re.escape(needle)):
            resume_search(folder, echo=lambda m: None)
        assert not ray.is_initialized()


def test_a_search_without_mlflow_still_writes_the_best_config(tmp_path, _cache_dir):
    """--no-mlflow: no runs, but the best trial's trainer config is written and printed as with MLflow. The best
    trial is the one with the best epoch: checked against every epoch's value as Ray's result files hold them
    (FIFO reports only after a trial's last epoch, so Ray's own per-metric analysis sees the last epoch alone).
    The data is a file named relative to the folder searched in: the printed retrain command names it (and the
    config) by absolute path, so it works pasted in another folder, even one holding a `trainer.py` of the user's
    (`python -m trainer`, printed before, ran that one: a walkthrough)."""
    from hsc_search.replay import read_ray_dir
    from trainer import TrainConfig

    proc = _cli("synth-data", "ave", "small.h5", "--set", "n_train=300", "--set", "n_val=60", "--set", "n_test=60",
                "--set", "dim_audio=12", "--set", "dim_visual=16", cwd=tmp_path, cache=_cache_dir, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = _cli("run", "--data", "small.h5", "--num-samples", "4", "--max-epochs", "3", "--scheduler", "fifo",
                "--no-mlflow", "--name", "plain", "--metric", "val/map_a2v", cwd=tmp_path, cache=_cache_dir)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    retrain = next(ln for ln in proc.stdout.splitlines() if ln.startswith("retrain:")).split(":", 1)[1].strip()
    assert f"--data {tmp_path.resolve() / 'small.h5'}" in retrain, retrain
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "trainer.py").write_text("raise SystemExit('the folder own trainer.py ran')\n")
    train = subprocess.run(f"{retrain} --out rt --set epochs=1", shell=True, cwd=tmp_path / "elsewhere",
                           env=_env(_cache_dir), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert train.returncode == 0 and "train 300 / val 60 / test 60 clips" in train.stdout, train.stderr[-2000:]
    assert "is not the data" not in train.stdout, train.stdout  # the search's own data (its header's fingerprint)
    exp = tmp_path / "ray_results" / "plain"
    mark = (exp / "best_config.yaml").read_text().splitlines()[3]
    assert json.loads(mark.split(": ", 1)[1]) == json.loads((exp / "hsc_search.json").read_text())["data_fingerprint"]
    assert f"best config: {exp / 'best_config.yaml'}" in proc.stdout and not (tmp_path / "mlflow.db").exists()
    raw = read_ray_dir(exp).raw
    assert len(raw) == 4 and all(len(r["values"]) == 3 for r in raw)
    best = max(raw, key=lambda r: max(r["values"].values()))
    score = max(best["values"].values())
    assert f"best trial: train_trial_{best['trial_id']} (completed, 3 epochs) score {score:.4f}" in proc.stdout
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("best trial:"))
    assert " lr=" in line and "hidden_dim=" not in line, line  # the searched values, as with MLflow
    written = yaml.safe_load((exp / "best_config.yaml").read_text())
    assert written["epochs"] == 3 and TrainConfig.from_dict(written).epochs == 3
    # and what the trainer resolved on this data, as a tracked search's line says it (it was missing: a walkthrough)
    trained = TrainConfig.from_dict(written).resolve(300, 12, 16)
    resolved = line.split("(resolved on this data: ", 1)[1].rstrip(")")
    assert {k: float(v) for k, v in (kv.split("=") for kv in resolved.split(", "))} == \
        {k: float(getattr(trained, k)) for k in ("cca_dim", "cca_k", "ema_momentum")}, line  # fmt: skip
    source = (exp / "best_config.yaml").read_text().splitlines()[2]  # which trial, though no MLflow run names it
    assert source.startswith(f"# from trial train_trial_{best['trial_id']} of search plain: val/map_a2v "), source
    assert source.endswith(", its best over 3 epochs (no MLflow)"), source
    # ranked by val/map_a2v, each trial kept (and tested) the checkpoint of its best val/map_a2v epoch (the first
    # best), the epoch its score is of; the config retrains so
    assert written["select_metric"] == "val/map_a2v"
    for r in raw:
        tested = [json.loads(ln) for ln in (exp / r["trial_id"] / "result.json").read_text().splitlines()]
        tested = [m.get("test/epoch") or next((e["test/epoch"] for e in json.loads(m.get("hsc/epochs_json", "[]"))
                                               if "test/epoch" in e), None) for m in tested]  # fmt: skip
        best_epoch = min(e for e, v in r["values"].items() if v == max(r["values"].values()))
        assert [t for t in tested if t is not None] == [best_epoch], (r["trial_id"], tested, r["values"])
    for name in ("lr", "mask_ratio", "tau", "topk", "loss_weighting"):
        assert str(written[name]) == best["params"][name], (name, written[name], best["params"][name])


def test_an_experiment_whose_artifacts_a_server_serves_is_refused_through_a_database_uri(tmp_path):
    """The team server's database URI given as --tracking-uri: its experiment keeps artifacts at
    `mlflow-artifacts:/...`, which only an HTTP client of the server reaches; the search failed with a 200-line
    traceback after Ray had started and left a FAILED parent run in the team's store (a walkthrough)."""
    from mlflow.tracking import MlflowClient

    from hsc_search.driver import _experiment_id
    from hsc_search.preflight import PreflightError

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(tracking_uri=uri)
    served = client.create_experiment("team", artifact_location="mlflow-artifacts:/1")
    with pytest.raises(PreflightError, match=r"experiment 'team' keeps its artifacts on an MLflow server "
                                             r"\(mlflow-artifacts:/1\).*--tracking-uri the server's http://HOST:PORT"):
        _experiment_id(client, "team", "val/map_avg", "max", uri)
    assert client.search_runs([served]) == []
    assert _experiment_id(client, "team", "val/map_avg", "max", "http://127.0.0.1:5000") == served  # its server's
    # a new one: local artifacts (a store `mlflow ui` made has a served Default experiment, and serves a search's
    # local artifacts: not refused, the review; a team server's database is refused by the pre-flight)
    assert _experiment_id(client, "own", "val/map_avg", "max", uri) != served
    # a new experiment whose name is near one the store has: a note (a typo made a new experiment without a word)
    notes: list[str] = []
    _experiment_id(client, "ablations", "val/map_avg", "max", uri, notes=notes)
    assert notes == [], notes  # nothing near: none
    client.create_experiment("hsc-search")
    _experiment_id(client, "hsc-saerch", "val/map_avg", "max", uri, notes=notes)
    assert notes == ["note: experiment 'hsc-saerch' is new in this store, beside 'hsc-search' (a typo? export-best, "
                     "report and the MLflow UI find this search under the name given)"], notes
    _experiment_id(client, "hsc-saerch", "val/map_avg", "max", uri, notes=notes)  # not new now: nothing more said
    assert len(notes) == 1
    for other in ("ave-2026-12-04", "ave-lr-sweep"):
        client.create_experiment(other)
    notes.clear()  # runs numbered or dated, another sweep: not typos (the review: every dated search was told so)
    for name in ("ave-2026-12-05", "ave-wd-sweep", "hsc-search-2"):
        _experiment_id(client, name, "val/map_avg", "max", uri, notes=notes)
    assert notes == [], notes


def test_searched_values_that_fail_on_the_data_are_said_at_the_start(_cache_dir):
    """cca_k searched up to 32 with cca_dim auto, on 16-d audio: auto picks cca_dim 16, and every trial that drew
    cca_k above it failed at its start, unsaid (a walkthrough: 3 of 4 trials). Said now, with the trainer's own
    reason; a range the data allows, and values refused with the config itself (the checks say those), are not."""
    from hsc_search.driver import _data_clash_notes, load_search_data
    from hsc_search.settings import load_settings
    from hsc_search.space import load_space_dict

    spec = "synthetic:ave?n_train=200&n_val=60&n_test=60&dim_audio=16&dim_visual=24&num_classes=4&seed=5"
    settings = load_settings(None, {"data": spec}, [])

    def notes(params, fixed=None):
        space = load_space_dict({"fixed": {"batch_size": 64, **(fixed or {})}, "params": params})
        return _data_clash_notes(space, load_search_data(settings, space), 2)

    # a range is said from the first value that fails, not by its end alone (a walkthrough: "cca_k 40" was said of
    # cca_k 10 to 40, and its trials of cca_k 19, 20 and 32 failed): auto cca_dim is min(16, 16, 24, 64 - 1) = 16
    assert notes({"cca_k": {"type": "int", "low": 1, "high": 32}}) == [
        "trials that draw cca_k 17 to 32 fail on this data (cca_k 17 exceeds cca_dim 16, which auto (cca_dim 0) picked "
        "for this data (min(16, audio dim 16, visual dim 24, batch 64 - 1)): a cca_k of at most 16, 0 (all), or an "
        "explicit cca_dim)"]  # fmt: skip
    # on a stepped grid (8, 13, ..., 248): batches of 200 clips take a cca_dim below 200, so from 203 on
    assert notes({"cca_dim": {"type": "int", "low": 8, "high": 248, "step": 5}}, {"batch_size": 256}) == [
        "trials that draw cca_dim 203 to 248 fail on this data (the train split has 200 clips, so batches of 200, "
        "which must exceed cca_dim 203: a smaller cca_dim (0 picks one below the batch) or more training clips)"]
    assert notes({"cca_k": {"type": "int", "low": 1, "high": 16}}) == []
    # with the values the other fields can take in the same trial, not their defaults (a review: a cca_k of up to
    # 20 beside cca_dim choices of 24 and 32, or under a `when` on cca_dim 32, was said to fail by auto cca_dim)
    assert notes({"cca_dim": {"type": "categorical", "choices": [24, 32]},
                  "cca_k": {"type": "int", "low": 1, "high": 20}}) == []  # fmt: skip
    assert notes({"cca_dim": {"type": "categorical", "choices": [0, 32]},
                  "cca_k": {"type": "int", "low": 1, "high": 20, "when": {"cca_dim": [32]}}}) == []  # fmt: skip
    assert notes({"cca_dim": {"type": "categorical", "choices": [0, 32]},
                  "cca_k": {"type": "int", "low": 1, "high": 20}}) == [
        "trials that draw cca_dim 0, cca_k 20 fail on this data (cca_k 20 exceeds cca_dim 16, which auto (cca_dim 0) "
        "picked for this data (min(16, audio dim 16, visual dim 24, batch 64 - 1)): a cca_k of at most 16, 0 (all), "
        "or an explicit cca_dim)"]  # fmt: skip
    assert notes({"cca_dim": {"type": "categorical", "choices": [8, 220]}}, {"batch_size": 256}) == [
        "trials that draw cca_dim 220 fail on this data (the train split has 200 clips, so batches of 200, which must "
        "exceed cca_dim 220: a smaller cca_dim (0 picks one below the batch) or more training clips)"]  # fmt: skip


def test_a_shared_store_whose_experiment_keeps_artifacts_on_the_drivers_disk_is_said(tmp_path, tracking_server):
    """Through a tracking server (a real one), an experiment whose artifact location is a local folder (one made
    through the team's database URI: ./mlruns of that search's folder) has each search's artifacts written to that
    folder on the driver's own disk, which colleagues and the server's UI do not see: it was silent (a
    walkthrough). A note now; none for an experiment the server keeps (a new one here) nor for a sqlite store."""
    from mlflow.tracking import MlflowClient

    from hsc_search.driver import _experiment_id

    client = MlflowClient(tracking_uri=tracking_server.url)
    local = tmp_path / "machine_a" / "mlruns"
    client.create_experiment("local-art", artifact_location=str(local))
    notes: list[str] = []
    _experiment_id(client, "local-art", "val/map_avg", "max", tracking_server.url, notes=notes)
    assert notes == [f"note: experiment 'local-art' keeps its artifacts (plots, configs, the report) in {local}, a "
                     "folder this machine writes itself: other machines and the MLflow UI of a server elsewhere see "
                     "them only if that folder is shared with them (a team server's experiments keep theirs on the "
                     "server: docs/team-server.md)"], notes  # fmt: skip
    notes.clear()
    local.mkdir(parents=True)  # the folder is on this machine, whose own server this is (`mlflow ui` over a local
    _experiment_id(client, "local-art", "val/map_avg", "max", tracking_server.url, notes=notes)  # store): as
    assert notes == [], notes  # expected, not said (a review: every local `mlflow ui` user was told)
    made = _experiment_id(client, "served", "val/map_avg", "max", tracking_server.url, notes=notes)
    assert client.get_experiment(made).artifact_location.startswith("mlflow-artifacts:") and notes == [], notes
    uri = f"sqlite:///{tmp_path}/own.db"
    _experiment_id(MlflowClient(tracking_uri=uri), "mine", "val/map_avg", "max", uri, notes=notes)
    assert notes == [], notes
    # the printed `mlflow ui` line where MLflow's port is held by a UI of this very store (a `make ui` left open:
    # the review): that port, no second server; held by a UI of another store: another port
    from hsc_search import cli

    run = client.create_run(made).info.run_id
    store = f"sqlite:///{tracking_server.db_path}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "UI_PORT", tracking_server.port)
        mp.setenv("http_proxy", "http://127.0.0.1:9")  # never asked through a proxy (it went there: the review)
        hint = cli._ui_hint(store, made, known_run=run)
        assert hint.startswith(f"open http://127.0.0.1:{tracking_server.port}/#/experiments/{made}?") and hint.endswith(
            "(the MLflow UI serving this store there)") and " ui " not in hint, hint  # fmt: skip
        hint = cli._ui_hint(f"sqlite:///{tmp_path}/own.db", made, known_run="0" * 32)
        assert re.search(r" --port \d+\n", hint) and f"127.0.0.1:{tracking_server.port}/" not in hint, hint
    # a listener that never answers (or trickles): at most 2 s (it held the summary for 78 s: the review)
    import socket

    with socket.socket() as quiet:
        quiet.bind(("127.0.0.1", 0))
        quiet.listen()
        t0 = time.monotonic()
        assert cli._serves_run(quiet.getsockname()[1], run, 2.0) is False and time.monotonic() - t0 < 4


def test_the_typo_note_reads_every_page_of_experiments_and_never_fails_a_start(tmp_path):
    """The note looked at the newest 1,000 experiments only; a store that would not list them failed the start."""
    from mlflow.store.entities.paged_list import PagedList
    from mlflow.tracking import MlflowClient

    from hsc_search.driver import _experiment_id

    uri = f"sqlite:///{tmp_path}/m.db"
    real = MlflowClient(tracking_uri=uri)
    real.create_experiment("hsc-search")
    for k in range(3):
        real.create_experiment(f"other-{k}")

    class OnePerPage:  # the real store, one experiment a page, the near name on the last
        def __init__(self):
            self.calls = 0

        def search_experiments(self, max_results=None, page_token=None):
            self.calls += 1
            names = sorted((e for e in real.search_experiments()), key=lambda e: e.name != "hsc-search")[::-1]
            i = int(page_token or 0)
            return PagedList(names[i:i + 1], str(i + 1) if i + 1 < len(names) else None)

        def __getattr__(self, name):
            return getattr(real, name)

    paged, notes = OnePerPage(), []
    _experiment_id(paged, "hsc-serach", "val/map_avg", "max", uri, notes=notes)
    assert paged.calls >= 5 and len(notes) == 1 and "beside 'hsc-search'" in notes[0], (paged.calls, notes)

    class Refuses(OnePerPage):
        def search_experiments(self, max_results=None, page_token=None):
            raise RuntimeError("PERMISSION_DENIED")

    notes = []
    assert _experiment_id(Refuses(), "hsc-saerch", "val/map_avg", "max", uri, notes=notes)  # made all the same
    assert notes == [] and real.get_experiment_by_name("hsc-saerch") is not None


def test_a_typo_of_a_name_is_one_letter_or_a_swap_or_case_away():
    from hsc_search.driver import near_typo

    for a, b in [("hsc-serach", "hsc-search"), ("hsc-searh", "hsc-search"), ("hsc-searchh", "hsc-search"),
                 ("hsc-seerch", "hsc-search"), ("HSC-Search", "hsc-search"), ("hsc_search", "hsc-search"),
                 ("my_sweep", "my-sweep")]:  # fmt: skip (a separator alone: the review)
        assert near_typo(a, b) and near_typo(b, a), (a, b)
    for a, b in [("ave-wd-sweep", "ave-lr-sweep"), ("run-2", "run-1"), ("ave-2026-12-05", "ave-2026-12-04"),
                 ("hsc-search", "hsc-search"), ("abc", "xyz"), ("hsc-search-v2", "hsc-search"), ("run-a", "run-b"),
                 ("ave-2026-12-05b", "ave-2026-12-05"), ("lr", "l2"), ("run-1a", "run-1"),
                 ("hsc-search-a", "hsc-search-b"), ("sweep-jan", "sweep-jun"), ("ave-june", "ave-july"),
                 ("ave-mon", "ave-sun"), ("mar-sweep", "may-sweep")]:  # fmt: skip
        assert not near_typo(a, b), (a, b)
    assert near_typo("sweep-jna", "sweep-jan") and near_typo("hsc-janus", "hsc-janos")  # a month's typo still is


def test_a_store_a_failed_start_created_is_removed_and_one_with_runs_is_kept(tmp_path):
    """A search whose start fails after MLflow opened a new sqlite store (in parallel with Ray's start) but before
    any run: the empty mlflow.db it made was left behind (a walkthrough: a cluster that refused the driver). Removed
    once the opening is done; a store holding a run is never removed."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.tracking import MlflowClient

    from hsc_search.driver import _remove_new_store

    db = tmp_path / "mlflow.db"
    with ThreadPoolExecutor(1) as pool:
        opening = pool.submit(lambda: MlflowClient(f"sqlite:///{db}").get_experiment_by_name("hsc-search"))
        _remove_new_store(db, opening)  # waits for the opening, then removes what it made
    assert not db.exists() and list(tmp_path.iterdir()) == []
    # another search that started beside it in the same folder has the same new store open: kept (a review)
    import subprocess
    import sys

    MlflowClient(f"sqlite:///{db}").get_experiment_by_name("hsc-search")
    other = subprocess.Popen([sys.executable, "-c", f"import sqlite3, sys, time; c = sqlite3.connect({str(db)!r}); "
                              "c.execute('SELECT 1 FROM runs').fetchall(); print('open', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "open"
        _remove_new_store(db, None)
        assert db.exists()
    finally:
        other.kill()
        other.wait(timeout=30)
    _remove_new_store(db, None)
    assert not db.exists()
    client = MlflowClient(f"sqlite:///{db}")
    client.create_run(client.create_experiment("x"))
    _remove_new_store(db, None)
    assert db.exists() and len(client.search_runs([client.get_experiment_by_name("x").experiment_id])) == 1
    _remove_new_store(tmp_path / "none.db", None)  # not there: nothing to do
    # made, and its tables cut short by a full disk (no runs table): it was left behind, broken
    import contextlib
    import sqlite3

    half = tmp_path / "half.db"
    with contextlib.closing(sqlite3.connect(half)) as con, con:
        con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    _remove_new_store(half, None)
    assert not half.exists()


def test_a_deleted_experiment_or_parent_run_is_one_sentence_with_the_command_that_restores_it(tmp_path):
    """A search into an experiment deleted in MLflow (its name still taken) was a 136-line traceback ("must be in
    the 'active' state"), after Ray had started; a resume of a search whose parent run was deleted was told, for
    a while, that the store had failed. Now one sentence each, with the `mlflow ... restore` that mends it, which
    is then run as printed."""
    import shlex
    import subprocess

    from mlflow.tracking import MlflowClient

    from hsc_search.driver import SearchError, _check_parent_run, _experiment_id

    uri = f"sqlite:///{tmp_path / 's.db'}"
    client = MlflowClient(uri)
    gone = client.create_experiment("gone", artifact_location=str(tmp_path / "art"))
    parent = client.create_run(gone).info.run_id
    client.log_text(parent, "{}", "search_config.yaml")  # (a search's parent logs its inputs at its start)
    # the store moved with its artifact folder (a project folder moved whole): refused, naming where MLflow keeps
    # them (the resume wrote the search's new records to the old path, or failed there for 150 s: a review)
    (tmp_path / "art").rename(tmp_path / "moved")
    with pytest.raises(SearchError, match=f"^the search's parent run {parent}: the store says its artifacts are in "
                                          f"{re.escape(str(tmp_path / 'art'))}/.*, which does not exist .* a resume "
                                          "would write the search's new records there$"):  # fmt: skip
        _check_parent_run(client, parent, uri, None)
    (tmp_path / "moved").rename(tmp_path / "art")
    _check_parent_run(client, parent, uri, None)  # where MLflow keeps them: passes
    # a copy of the folder resumed (to its end, or interrupted again), then the older folder resumed: its trials
    # trained again in the one run, and the copy's trial runs were deleted as lost (a walkthrough; a review)
    client.set_tag(parent, "hsc.experiment_dir", str(tmp_path / "copy"))
    client.set_terminated(parent, status="KILLED")
    _check_parent_run(client, parent, uri, None, str(tmp_path / "orig"))  # moved there (no copy left): goes on
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "hsc_search.json").write_text(json.dumps({"parent_run_id": parent}))
    _check_parent_run(client, parent, uri, None, str(tmp_path / "copy"))  # the folder MLflow follows: goes on
    with pytest.raises(SearchError) as e:
        _check_parent_run(client, parent, uri, None, str(tmp_path / "orig"))
    assert str(e.value) == (f"{tmp_path / 'orig'}: its search (MLflow run {parent}) last ran from the folder "
                            f"{tmp_path / 'copy'}, a copy of this one that holds it too: resuming both would train "
                            "trials twice in one run; resume that folder (or move it away first, if this one is to go "
                            "on)"), str(e.value)
    (tmp_path / "link").symlink_to(tmp_path / "copy")  # one folder by two names: not a copy (a review)
    _check_parent_run(client, parent, uri, None, str(tmp_path / "link"))
    _check_parent_run(client, parent, uri, None, f"file://{tmp_path / 'copy'}")
    (tmp_path / "copy" / "hsc_search.json").write_text(json.dumps({"parent_run_id": "another"}))  # reused by another
    _check_parent_run(client, parent, uri, None, str(tmp_path / "orig"))
    # finished from the copy: an older copy has nothing to resume, whether or not the copy is still there
    client.set_terminated(parent, status="FINISHED")
    for _ in range(2):
        with pytest.raises(SearchError) as e:
            _check_parent_run(client, parent, uri, None, str(tmp_path / "orig"))
        assert str(e.value) == (f"{tmp_path / 'orig'}: its search (MLflow run {parent}) finished from the folder "
                                f"{tmp_path / 'copy'}: this folder is an older copy of it, with nothing to resume; its "
                                "results are that folder's and MLflow's"), str(e.value)
        (tmp_path / "link").unlink(missing_ok=True)
        shutil.rmtree(tmp_path / "copy", ignore_errors=True)
    client.delete_run(parent)
    with pytest.raises(SearchError) as e:
        _check_parent_run(client, parent, uri, None)
    said = str(e.value)
    assert said.startswith(f"the search's parent run {parent} is deleted in MLflow (in the trash); restore it (`"), said
    restore = said.split("(`", 1)[1].split("`)", 1)[0]
    assert subprocess.run(["bash", "-c", restore], cwd=tmp_path, capture_output=True, timeout=120).returncode == 0
    _check_parent_run(client, parent, uri, None)  # restored: passes
    client.delete_experiment(gone)
    # its experiment deleted (its runs go with it): the experiment is what to restore (the run alone, restored,
    # left the resumed trials no experiment to log to: the second review)
    with pytest.raises(SearchError) as e:
        _check_parent_run(client, parent, uri, None)
    assert str(e.value).startswith("the search's experiment 'gone' is deleted in MLflow (its runs, the search's "
                                   "among them, are in the trash); restore it (`MLFLOW_TRACKING_URI="), str(e.value)
    assert f"experiments restore --experiment-id {gone}`), then resume again" in str(e.value)
    with pytest.raises(SearchError) as e:
        _experiment_id(client, "gone", "val/map_avg", "max", uri)
    said = str(e.value)
    assert said.startswith("--experiment gone: deleted in MLflow (its runs are in the trash, its name still taken); "
                           "restore it (`MLFLOW_TRACKING_URI=") and said.endswith("or give another --experiment"), said
    restore = said.split("(`", 1)[1].split("`)", 1)[0]
    assert f"experiments restore --experiment-id {gone}" in restore and shlex.split(restore)
    assert subprocess.run(["bash", "-c", restore], cwd=tmp_path, capture_output=True, timeout=120).returncode == 0
    assert _experiment_id(client, "gone", "val/map_avg", "max", uri) == gone


def test_a_tracking_server_that_fails_or_refuses_the_search_is_a_store_failure(tmp_path, monkeypatch):
    """What a search's start calls the store failing (one line, `TrackingUnavailable`) and what it leaves to be
    said as it is: a server whose database refuses writes (HTTP 500 until MLflow's retries ran out) or whose
    credentials refuse the search (403) is the store's failure (a first narrowing made both a traceback again:
    the second review); MLflow refusing a request of ours (a deleted experiment: INVALID_STATE) is not."""
    import http.server
    import threading

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from hsc_search.driver import _store_failure

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    status = {"code": 500}

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = b'{"error_code": "PERMISSION_DENIED", "message": "no"}' if status["code"] == 403 else b"full"
            self.send_response(status["code"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = MlflowClient(f"http://127.0.0.1:{server.server_address[1]}")
        for code in (500, 403):
            status["code"] = code
            with pytest.raises(Exception) as e:
                client.create_experiment("x")
            assert _store_failure(e.value), (code, repr(e.value))
    finally:
        server.shutdown()
        server.server_close()
    from mlflow.protos.databricks_pb2 import INVALID_STATE

    refused = MlflowException("The experiment 1 must be in the 'active' state.", error_code=INVALID_STATE)
    assert refused.error_code == "INVALID_STATE" and not _store_failure(refused)
    assert _store_failure(OSError(28, "No space left on device")) and not _store_failure(OSError(2, "gone"))


def test_a_set_that_replaces_a_value_the_space_fixes_is_said_at_the_start(_cache_dir, tmp_path):
    """The quick space fixes hidden_dim 64: `--set hidden_dim=128` (or a search config's `set:`) trained 128 without a
    word, while the space file read as what trained (a walkthrough). The same value, or a value the space does not
    fix, says nothing."""
    from hsc_search.driver import load_search_data, start_notes
    from hsc_search.settings import SPACES_DIR, load_settings
    from hsc_search.space import load_space

    data = "synthetic:ave?n_train=120&n_val=30&n_test=20&dim_audio=8&dim_visual=8&num_classes=4&seed=5"

    def notes(config, *sets: str) -> list[str]:
        settings = load_settings(config, {"data": data}, list(sets))
        space = load_space(settings.space_path(), overrides=settings.overrides, set_from=settings.set_from)
        return [n for n in start_notes(settings, space, load_search_data(settings, space)) if "fixed hidden" in n]

    quick = SPACES_DIR / "quick.yaml"
    assert notes(None, "hidden_dim=128") == [f"--set hidden_dim=128 replaces the space's fixed hidden_dim: 64 ({quick}): "
                                             "every trial trains 128"]  # fmt: skip
    config = tmp_path / "s.yaml"
    config.write_text("set:\n  hidden_dim: 96\n")
    assert notes(config) == [f"{config}: set: hidden_dim=96 replaces the space's fixed hidden_dim: 64 ({quick}): every "
                             "trial trains 96"]  # fmt: skip
    assert notes(None, "hidden_dim=64") == notes(None, "tau=0.2") == notes(None) == []


def test_a_fixed_value_the_trainer_never_reads_is_said_at_the_start(_cache_dir):
    """`--set weight_lr=0.02 --set loss_weighting=fixed` was recorded and shown in the report as if it mattered,
    where a searched weight_lr is said to change nothing (a walkthrough); a fixed value that is read says nothing."""
    from hsc_search.driver import load_search_data, start_notes
    from hsc_search.settings import load_settings
    from hsc_search.space import load_space

    data = "synthetic:ave?n_train=120&n_val=30&n_test=20&dim_audio=8&dim_visual=8&num_classes=4&seed=5"

    def notes(*sets: str) -> list[str]:
        settings = load_settings(None, {"data": data}, list(sets))
        space = load_space(settings.space_path(), overrides=settings.overrides)
        return [n for n in start_notes(settings, space, load_search_data(settings, space)) if "changes nothing" in n]

    assert notes("weight_lr=0.02", "loss_weighting=fixed") == [
        "weight_lr is fixed at 0.02, but the trainer reads it only when loss_weighting is learned or learned_raw, "
        "and here loss_weighting is 'fixed': it changes nothing"]
    assert notes("w_nce=2", "loss_weighting=learned") == ["w_nce is fixed at 2.0, but the trainer reads it only when loss_weighting is fixed, "
                                "and here loss_weighting is 'learned': it changes nothing"]
    assert notes("tau_teacher=0.2", "topk=0") == [
        "tau_teacher is fixed at 0.2, but the trainer reads it only when topk is above 0, and here topk is 0: it "
        "changes nothing"]
    # read by some trials (the quick space searches loss_weighting and topk), or read: nothing to say
    assert notes("w_nce=2", "loss_weighting=fixed") == notes("weight_lr=0.02") == notes("tau_teacher=0.2") == []
    assert notes("w_nce=2") == notes("tau_teacher=0.2", "topk=3") == []
