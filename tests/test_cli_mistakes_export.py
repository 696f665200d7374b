"""User mistakes with `export-best`, `report` and `import-runs` on a hand-made search in a real sqlite MLflow store:
one line naming the flag or file, exit 2 (or a warning where the command still did its work), no traceback,
nothing written where it should not be. No Ray, no training: a few seconds in all."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from pathlib import Path
from typer.testing import CliRunner

from hsc_search.cli import app
from trainer import TrainConfig


def _search(client, exp: str, name: str, start: int, trials: dict[str, tuple[list[float], float]]) -> str:
    """A search run with one trial run per {trial id: (val/map_avg per epoch, test/map_avg)}, each with its
    config.yaml (the trainer default with a distinct lr), as a search logs them."""
    parent = client.create_run(exp, run_name=name, start_time=start, tags={"hsc.kind": "search"}).info.run_id
    for k, v in {"metric": "val/map_avg", "mode": "max", "max_epochs": "3"}.items():
        client.log_param(parent, k, v)
    for i, (tid, (values, test)) in enumerate(trials.items()):
        run = client.create_run(exp, run_name=f"trial_{tid}", start_time=start + 1 + i, tags={
            "mlflow.parentRunId": parent, "hsc.kind": "trial", "hsc.trial_id": tid,
            "hsc.outcome": "completed"}).info.run_id  # fmt: skip
        for e, v in enumerate(values, 1):
            client.log_metric(run, "val/map_avg", v, step=e)
        client.log_metric(run, "epoch", len(values))
        client.log_metric(run, "test/map_avg", test)
        client.log_text(run, TrainConfig.from_dict({"lr": 0.001 * (i + 1)}).to_yaml(), "config.yaml")
        client.set_terminated(run)
    client.set_terminated(parent)
    return parent


@pytest.fixture()
def store(tmp_path):
    """sqlite store with search `good` (trial a: best val 0.5, test 0.9; trial b: best val 0.7, test 0.1), then a
    later search `dead` that failed before any trial. Returns (uri, client, good id, dead id, trial b's id)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("hsc-search", artifact_location=str(tmp_path / "mlruns" / "1"))
    good = _search(client, exp, "good", 1_000_000, {"a": ([0.3, 0.5, 0.4], 0.9), "b": ([0.2, 0.6, 0.7], 0.1)})
    dead = client.create_run(exp, run_name="dead", start_time=2_000_000, tags={"hsc.kind": "search"}).info.run_id
    client.set_terminated(dead, status="FAILED")
    trial_b = next(r.info.run_id for r in client.search_runs([exp]) if r.info.run_name == "trial_b")
    return uri, client, good, dead, trial_b


def _cli(*args):
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def _fails(*args, needle: str):
    result = _cli(*args)
    assert result.exit_code == 2 and needle in result.output, (args, result.output)
    assert len([ln for ln in result.output.splitlines() if ln.strip()]) == 1, result.output  # one line
    return result


def test_out_that_is_a_folder_is_refused_naming_out(store, tmp_path):
    uri, _, good, _, _ = store
    folder = tmp_path / "outdir"
    folder.mkdir()
    _fails("export-best", "--tracking-uri", uri, "--run-id", good, "--out", str(folder),
           needle=f"--out {folder}: is a folder; expected the file to write, e.g. {folder / 'best_config.yaml'}")
    _fails("report", "--tracking-uri", uri, "--run-id", good, "--no-log", "--out", str(folder),
           needle=f"--out {folder}: is a folder; expected the file to write, e.g. {folder / 'report.html'}")
    blocker = tmp_path / "file"
    blocker.write_text("keep me\n")
    _fails("export-best", "--tracking-uri", uri, "--run-id", good, "--out", str(blocker / "best.yaml"),
           needle=f"{blocker} is not a folder")
    assert list(folder.iterdir()) == [] and blocker.read_text() == "keep me\n"
    ok = _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--out", str(folder / "best.yaml"))
    assert ok.exit_code == 0 and "best trial trial_b" in ok.output, ok.output
    assert yaml.safe_load((folder / "best.yaml").read_text())["lr"] == pytest.approx(0.002)


def test_a_store_moved_without_its_artifacts(store, tmp_path):
    """MLflow keeps absolute artifact paths: a store moved elsewhere no longer finds them."""
    uri, _, good, _, trial_b = store
    shutil.move(tmp_path / "mlruns", tmp_path / "elsewhere")
    result = _fails("export-best", "--tracking-uri", uri, "--run-id", good, "--out", str(tmp_path / "b.yaml"),
                    needle=f"cannot read config.yaml of trial run {trial_b} (trial_b)")
    assert f"copy the store's artifact folder (mlruns/) back to {tmp_path / 'mlruns'}" in result.output
    assert not (tmp_path / "b.yaml").exists()


def test_import_runs_from_a_moved_store_warns_that_the_artifacts_stayed_behind(store, tmp_path):
    """The runs and metrics are copied (exit 0), with a warning line naming how many runs lost their artifacts."""
    uri = store[0]
    shutil.move(tmp_path / "mlruns", tmp_path / "elsewhere")
    result = _cli("import-runs", "--from", uri, "--to", f"sqlite:///{tmp_path}/copy.db")
    assert result.exit_code == 0, result.output
    assert "warning: 4 run(s) copied without artifacts: their artifact folders" in result.output  # (two never had any)
    assert f"back to {tmp_path / 'mlruns'}" in result.output
    assert "4 run(s) copied (" in result.output and "0 artifact files" in result.output


def test_import_runs_with_readable_artifacts_warns_of_nothing(store, tmp_path):
    uri = store[0]
    result = _cli("import-runs", "--from", uri, "--to", f"sqlite:///{tmp_path}/copy.db")
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    assert "4 run(s) copied (" in result.output and "2 artifact files" in result.output


def test_test_metrics_never_select_the_best_trial(store, tmp_path):
    uri, _, good, _, _ = store
    _fails("export-best", "--tracking-uri", uri, "--run-id", good, "--metric", "test/map_avg", "--out",
           str(tmp_path / "b.yaml"), needle="--metric test/map_avg: test metrics are evaluated once")
    assert not (tmp_path / "b.yaml").exists()


def test_a_metric_no_trial_logged_is_answered_with_those_they_did(store, tmp_path):
    """`--metric val/map_avgg` said "no trial ... logged 'val/map_avgg'" and no more (a walkthrough)."""
    uri, _, good, _, _ = store
    _fails("export-best", "--tracking-uri", uri, "--run-id", good, "--metric", "val/map_avgg", "--out",
           str(tmp_path / "b.yaml"), needle="logged 'val/map_avgg'; did you mean val/map_avg? Its trials logged: "
                                            "val/map_avg")  # fmt: skip
    _fails("export-best", "--tracking-uri", uri, "--run-id", good, "--metric", "zzz", "--out",
           str(tmp_path / "b.yaml"), needle="logged 'zzz'; its trials logged: val/map_avg")  # (test/: not rankable)
    # a metric's beginning names every metric it begins (`val/map` was told val/map_v2a, the closest spelling)
    client = store[1]
    trial = next(r.info.run_id for r in client.search_runs([client.get_run(good).info.experiment_id])
                 if r.data.tags.get("mlflow.parentRunId") == good)  # fmt: skip
    for key in ("val/map_a2v", "val/map_v2a"):
        client.log_metric(trial, key, 0.5, step=1)
    _fails("export-best", "--tracking-uri", uri, "--run-id", good, "--metric", "val/map", "--out",
           str(tmp_path / "b.yaml"), needle="logged 'val/map'; did you mean val/map_a2v or val/map_avg or "
                                            "val/map_v2a? Its trials logged:")  # fmt: skip
    assert not (tmp_path / "b.yaml").exists()


def test_export_best_ranks_by_the_searchs_own_metric_and_mode(tmp_path):
    """A search of loss/total (min) is exported by its lowest loss without --metric, as the search ranked it, not
    by val/map_avg; a --metric without --mode is ranked in that metric's usual direction (a loss: lowest)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("hsc-search", artifact_location=str(tmp_path / "mlruns"))
    trials = {"a": ([0.9, 0.7], [0.2, 0.3]), "b": ([0.8, 0.4], [0.1, 0.25]), "c": ([0.6, 0.5], [0.5, 0.6])}
    parent = client.create_run(exp, run_name="loss", tags={"hsc.kind": "search"}).info.run_id
    for k, v in {"metric": "loss/total", "mode": "min", "max_epochs": "2"}.items():
        client.log_param(parent, k, v)
    for i, (tid, (loss, val)) in enumerate(trials.items()):
        run = client.create_run(exp, run_name=f"trial_{tid}", tags={
            "mlflow.parentRunId": parent, "hsc.kind": "trial", "hsc.trial_id": tid,
            "hsc.outcome": "completed"}).info.run_id  # fmt: skip
        for e, (lv, vv) in enumerate(zip(loss, val), 1):
            client.log_metric(run, "loss/total", lv, step=e)
            client.log_metric(run, "val/map_avg", vv, step=e)
        client.log_text(run, TrainConfig.from_dict({"lr": 0.001 * (i + 1)}).to_yaml(), "config.yaml")
        client.set_terminated(run)
    client.set_terminated(parent)
    lowest_loss = min(trials, key=lambda t: min(trials[t][0]))  # b (0.4)
    highest_val = max(trials, key=lambda t: max(trials[t][1]))  # c (0.6)
    highest_loss = max(trials, key=lambda t: max(trials[t][0]))  # a (0.9): what mode max would pick
    assert len({lowest_loss, highest_val, highest_loss}) == 3

    result = _cli("export-best", "--tracking-uri", uri, "--out", str(tmp_path / "own.yaml"))
    assert result.exit_code == 0, result.output
    assert f"best trial trial_{lowest_loss} (completed) of search loss (run {parent}): loss/total 0.4000 (min)" in result.output, result.output
    own = yaml.safe_load((tmp_path / "own.yaml").read_text())  # keeps its lowest-loss epoch when retrained
    assert own["select_metric"] == "loss/total" and own["lr"] == pytest.approx(0.002), own
    result = _cli("export-best", "--tracking-uri", uri, "--metric", "val/map_avg", "--out", str(tmp_path / "v.yaml"))
    assert f"best trial trial_{highest_val} (completed) of search loss (run {parent}): val/map_avg 0.6000 (max)" in result.output, result.output
    assert yaml.safe_load((tmp_path / "v.yaml").read_text())["select_metric"] == "val/map_avg"
    result = _cli("export-best", "--tracking-uri", uri, "--mode", "max", "--out", str(tmp_path / "m.yaml"))
    assert f"best trial trial_{highest_loss} (completed) of search loss (run {parent}): loss/total 0.9000 (max)" in result.output, result.output
    _fails("export-best", "--tracking-uri", uri, "--mode", "maximum", "--out", str(tmp_path / "x.yaml"),
           needle="--mode must be max or min, got 'maximum'")


def test_the_report_counts_the_trials_that_never_started(store, tmp_path):
    """An interrupted search's report listed only the trials that ran (the console counted the others too)."""
    uri, client, good, _, _ = store
    result = _cli("report", "--tracking-uri", uri, "--run-id", good, "--no-log", "--out", str(tmp_path / "a.html"))
    assert result.exit_code == 0, result.output
    assert "<p>trials: 2 completed</p>" in (tmp_path / "a.html").read_text()  # no num_samples recorded: as before
    client.log_param(good, "num_samples", "5")
    result = _cli("report", "--tracking-uri", uri, "--run-id", good, "--no-log", "--out", str(tmp_path / "b.html"))
    assert result.exit_code == 0, result.output
    assert "<p>trials: 2 completed, 3 not started (of num_samples 5)</p>" in (tmp_path / "b.html").read_text()


def test_a_trial_run_id_names_its_search(store, tmp_path):
    uri, _, good, _, trial_b = store
    needle = f"--run-id {trial_b} is a trial run of search {good}: pass --run-id {good}"
    _fails("export-best", "--tracking-uri", uri, "--run-id", trial_b, "--out", str(tmp_path / "b.yaml"), needle=needle)
    _fails("report", "--tracking-uri", uri, "--run-id", trial_b, "--no-log", "--out", str(tmp_path / "r.html"),
           needle=needle)
    assert not (tmp_path / "b.yaml").exists() and not (tmp_path / "r.html").exists()
    # --experiment with --run-id: checked against the run's (it was ignored silently)
    _fails("export-best", "--tracking-uri", uri, "--experiment", "ablations", "--run-id", good, "--out",
           str(tmp_path / "b.yaml"), needle=f"--run-id {good} is a search in MLflow experiment 'hsc-search', not "
           "'ablations'; give --experiment hsc-search or leave it out")  # fmt: skip
    _fails("report", "--tracking-uri", uri, "--experiment", "ablations", "--run-id", good, "--no-log", "--out",
           str(tmp_path / "r.html"), needle=f"--run-id {good} is a search in MLflow experiment 'hsc-search', not "
           "'ablations'")  # fmt: skip
    assert not (tmp_path / "b.yaml").exists() and not (tmp_path / "r.html").exists()
    assert _cli("export-best", "--tracking-uri", uri, "--experiment", "hsc-search", "--run-id", good, "--out",
                str(tmp_path / "b.yaml")).exit_code == 0 and (tmp_path / "b.yaml").exists()  # fmt: skip


def test_a_search_whose_lock_was_last_taken_on_another_host_is_not_called_stopped(store, tmp_path):
    """A search folder on shared storage whose driver runs on another host (or a file system whose locks are local
    only): the lock test here cannot see that driver. The report called the search stopped, relabelled its running
    trials as interrupted and printed a `resume` that would start a second driver (a review)."""
    import json

    uri, client, good, _, _ = store
    client.update_run(good, status="RUNNING")
    trial_a = next(r.info.run_id for r in client.search_runs([client.get_run(good).info.experiment_id])
                   if r.info.run_name == "trial_a")  # fmt: skip
    client.set_tag(trial_a, "hsc.outcome", "running")
    folder = tmp_path / "rr" / "good"
    folder.mkdir(parents=True)
    (folder / "hsc_search.json").write_text(json.dumps({"parent_run_id": good}))
    (folder / ".hsc_driver.lock").write_text("driver pid 4242 on another-host.example, since 2026-12-05 01:00:00 UTC")
    client.set_tag(good, "hsc.experiment_dir", str(folder))
    result = _cli("report", "--tracking-uri", uri, "--run-id", good, "--no-log")
    assert result.exit_code == 0 and ("note: search good has not finished (MLflow status RUNNING: still running, "
                                      "interrupted, or its driver died)") in result.output, result.output
    assert "<p>trials: 1 completed, 1 running</p>" in (folder / "report.html").read_text()
    # the same lock last taken on this host, and free: the driver is gone (as before)
    import socket

    (folder / ".hsc_driver.lock").write_text(f"driver pid 4242 on {socket.gethostname()}, since 2026-12-05")
    result = _cli("report", "--tracking-uri", uri, "--run-id", good, "--no-log")
    assert "note: search good did not finish and no driver runs it" in result.output, result.output
    assert "<p>trials: 1 completed, 1 interrupted</p>" in (folder / "report.html").read_text()


def test_a_search_cut_off_before_any_trial_scored_is_named_with_what_continues_it(store, tmp_path):
    """export-best on a search interrupted before a trial logged its metric named it by its run id only, and said
    nothing of `resume` (a walkthrough)."""
    import json

    uri, client, good, _, _ = store
    exp = client.get_run(good).info.experiment_id
    cut = client.create_run(exp, run_name="cut", start_time=4_000_000, tags={"hsc.kind": "search"}).info.run_id
    client.create_run(exp, run_name="trial_c", start_time=4_000_001, tags={
        "mlflow.parentRunId": cut, "hsc.kind": "trial", "hsc.trial_id": "c", "hsc.outcome": "interrupted"})  # fmt: skip
    client.log_param(cut, "metric", "val/map_avg")
    client.update_run(cut, status="KILLED")
    folder = tmp_path / "rr" / "cut"
    folder.mkdir(parents=True)
    (folder / "hsc_search.json").write_text(json.dumps({"parent_run_id": cut}))
    client.set_tag(cut, "hsc.experiment_dir", str(folder))
    _fails("export-best", "--tracking-uri", uri, "--run-id", cut, "--out", str(tmp_path / "c.yaml"),
           needle=f"no trial of search cut (run {cut}) logged 'val/map_avg'; search cut did not finish and no "
                  f"driver runs it (MLflow status KILLED): `")  # fmt: skip
    assert f"resume {folder}` continues it" in _cli("export-best", "--tracking-uri", uri, "--run-id", cut, "--out",
                                                     str(tmp_path / "c.yaml")).output  # fmt: skip
    assert not (tmp_path / "c.yaml").exists()


def test_a_search_without_trials_is_passed_over_or_refused(store, tmp_path):
    uri, client, good, dead, _ = store
    # implicitly: the latest search with trials (`good`), not the later one that failed before any trial
    result = _cli("export-best", "--tracking-uri", uri, "--out", str(tmp_path / "b.yaml"))
    assert result.exit_code == 0 and "best trial trial_b" in result.output, result.output
    result = _cli("report", "--tracking-uri", uri, "--no-log", "--out", str(tmp_path / "r.html"))
    assert result.exit_code == 0 and "report of search good (2 trials)" in result.output, result.output
    assert "note:" not in result.output  # (dead failed: nothing to say)
    # a newer search still running without a trial yet (one just started): passed over too, and said (the report
    # of the search before it read as the new one's: a walkthrough)
    exp = client.get_run(good).info.experiment_id
    new = client.create_run(exp, run_name="new", start_time=9_000_000, tags={"hsc.kind": "search"}).info.run_id
    note = f"note: search new (run {new}) started after this one, is RUNNING in MLflow and has no trial run: passed"
    for args in (("export-best", "--out", str(tmp_path / "b1.yaml")),
                 ("report", "--no-log", "--out", str(tmp_path / "r1.html")), ("replay",)):
        result = _cli(*args, "--tracking-uri", uri)
        assert result.exit_code == 0 and note in result.output, (args, result.output)
    assert "best trial trial_b" in _cli("export-best", "--tracking-uri", uri, "--out", str(tmp_path / "b1.yaml")).output
    client.delete_run(new)
    # explicitly: refused, nothing written
    _fails("report", "--tracking-uri", uri, "--run-id", dead, "--no-log", "--out", str(tmp_path / "dead.html"),
           needle=f"search run {dead} (dead, FAILED) has no trial runs: nothing to report")
    _fails("export-best", "--tracking-uri", uri, "--run-id", dead, "--out", str(tmp_path / "dead.yaml"),
           needle=f"search dead (run {dead}) has no trial runs")
    assert not (tmp_path / "dead.html").exists() and not (tmp_path / "dead.yaml").exists()
    # no search with trials at all: said so
    client.delete_run(good)
    needle = (f"MLflow experiment 'hsc-search' has no search with trial runs: none of its 1 search run(s) got to a "
              f"trial (the latest: {dead} (dead, FAILED))")
    _fails("export-best", "--tracking-uri", uri, "--out", str(tmp_path / "b2.yaml"), needle=needle)
    _fails("report", "--tracking-uri", uri, "--no-log", "--out", str(tmp_path / "r2.html"), needle=needle)
    _fails("replay", "--tracking-uri", uri, needle=needle)


def test_a_search_whose_every_trial_failed_says_so(store, tmp_path):
    uri, client, _, _, _ = store
    exp = client.get_experiment_by_name("hsc-search").experiment_id
    parent = client.create_run(exp, run_name="div", start_time=3_000_000, tags={"hsc.kind": "search"}).info.run_id
    for i in range(2):
        run = client.create_run(exp, run_name=f"trial_f{i}", start_time=3_000_001 + i, tags={
            "mlflow.parentRunId": parent, "hsc.kind": "trial", "hsc.trial_id": f"f{i}", "hsc.outcome": "failed",
            "hsc.error": "NonFiniteLossError: non-finite loss at step 1"}).info.run_id  # fmt: skip
        client.set_terminated(run, status="FAILED")
    for k, v in {"metric": "val/map_avg", "mode": "max", "max_epochs": "3"}.items():
        client.log_param(parent, k, v)
    client.set_terminated(parent)
    from hsc_search.preflight import PreflightError
    from hsc_search.settings import SPACES_DIR
    from hsc_search.space import load_space
    from hsc_search.warm_start import plan

    with pytest.raises(PreflightError) as e:  # nor can a search start from it
        plan(parent, load_space(SPACES_DIR / "quick.yaml"), "val/map_avg", "max", uri)
    assert str(e.value) == (f"--warm-start {parent}: none of its 2 trials can start this search (2 failed); "
                            "warm-start from a search with trials that trained")  # fmt: skip
    _fails("export-best", "--tracking-uri", uri, "--run-id", parent, "--out", str(tmp_path / "f.yaml"),
           needle=f"search div (run {parent}): all 2 of its trials failed (each trial run's tag hsc.error says why): "
                  "no config to export; to export an earlier search, give --run-id with its parent run id")  # fmt: skip
    assert not (tmp_path / "f.yaml").exists()


def test_export_best_of_the_latest_search_says_when_it_is_someone_else_s(store, tmp_path, monkeypatch):
    """On a team's server two people's searches had one default name, and `export-best` (the experiment's latest
    search) exported a colleague's best config with nothing to say so (a walkthrough): its `mlflow.user` is named."""
    uri, client, good, _, _ = store
    client.set_tag(good, "mlflow.user", "dave")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "carol")  # who MLflow takes this user for (runs.user_tag)
    result = _cli("export-best", "--tracking-uri", uri, "--out", str(tmp_path / "b.yaml"))
    assert result.exit_code == 0 and "note: search good is dave's (the experiment's latest search; you are carol): " \
        "for one of yours, give --run-id with its parent run id" in " ".join(result.output.split()), result.output
    for given in (["--run-id", good], []):  # a search named by its id; the user's own search
        if not given:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "dave")
        result = _cli("export-best", "--tracking-uri", uri, "--out", str(tmp_path / "b.yaml"), *given)
        assert result.exit_code == 0 and "dave's" not in result.output, result.output
    # one's own search, run under the account's name, exported with an MLflow login now: not noted
    import getpass

    client.set_tag(good, "mlflow.user", getpass.getuser())
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "carol")
    result = _cli("export-best", "--tracking-uri", uri, "--out", str(tmp_path / "b.yaml"))
    assert result.exit_code == 0 and "note: search good is" not in result.output, result.output


def test_export_best_and_report_of_an_unfinished_search_start_no_ray(store, tmp_path):
    """Asking whether a search's driver still runs imported the driver (Ray, the scheduler, the writer: seconds on
    a 2-core machine) in export-best and report of every search that had not finished, and export-best's notes
    imported it for every search (the previous session's note: about 2 s, 22 s against 5 s on a loaded machine)."""
    import subprocess

    uri, client, good, _, _ = store
    client.update_run(good, status="RUNNING")
    folder = tmp_path / "rr" / "good"
    folder.mkdir(parents=True)
    (folder / "hsc_search.json").write_text(json.dumps({"parent_run_id": good}))
    client.set_tag(good, "hsc.experiment_dir", str(folder))
    for args in (["export-best", "--out", str(tmp_path / "b.yaml")], ["report", "--no-log", "--out",
                                                                       str(tmp_path / "r.html")]):  # fmt: skip
        code = ("import sys\nfrom hsc_search.cli import app\ntry:\n"
                f"    app({args + ['--tracking-uri', uri, '--run-id', good]!r}, standalone_mode=False)\n"
                "finally:\n    print('imported:', sorted(m for m in ('ray', 'hsc_search.driver') if m in sys.modules))\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "search good did not finish and no driver runs it" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert "imported: []" in proc.stdout, proc.stdout


def test_export_names_its_search_says_when_it_has_not_finished_and_keeps_other_searches_files(store, tmp_path,
                                                                                               monkeypatch):
    """export-best exported a still-running search's best trial so far with nothing but '(running)' to say so,
    named no search, and replaced another search's own best_config.yaml when --out pointed into its folder."""
    import json

    uri, client, good, _, _ = store
    client.update_run(good, status="RUNNING")  # still running (or its driver died)
    trial_a = next(r.info.run_id for r in client.search_runs([client.get_run(good).info.experiment_id])
                   if r.info.run_name == "trial_a")  # fmt: skip
    client.set_tag(trial_a, "hsc.outcome", "running")  # as a SIGKILL of the driver leaves a trial it ran
    client.set_tag(good, "hsc.experiment_dir", str(tmp_path / "rr" / "good"))
    result = CliRunner().invoke(app, ["export-best", "--tracking-uri", uri, "--run-id", good, "--out",
                                      str(tmp_path / "b.yaml")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"best trial trial_b (completed) of search good (run {good}): val/map_avg 0.7000 (max)" in result.output, result.output
    assert ("note: search good has not finished (MLflow status RUNNING: still running, interrupted, or its driver "
            "died): `") in result.output and ("resume " + str(tmp_path / "rr" / "good") + "` continues it if it is "
            "not running; this is its best trial so far: export again when it has ended") in result.output, result.output
    # its folder here: whether its driver runs is known (it told a running search's user to `resume` it, refused)
    folder = tmp_path / "rr" / "good"
    folder.mkdir(parents=True)
    (folder / "hsc_search.json").write_text(json.dumps({"parent_run_id": good}))
    result = _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--out", str(tmp_path / "b.yaml"))
    assert ("note: search good did not finish and no driver runs it (MLflow status RUNNING): `") in result.output and (
        f"resume {folder}` continues it; this is its best trial so far") in result.output, result.output
    result = _cli("report", "--tracking-uri", uri, "--run-id", good, "--no-log")
    assert result.exit_code == 0 and ("note: search good did not finish and no driver runs it (MLflow status "
                                      "RUNNING): `") in result.output, result.output  # on the console too
    assert "search good did not finish and no driver runs it (MLflow status RUNNING): <code>" not in (
        folder / "report.html").read_text()  # (escaped as text, not markup)
    assert "search good did not finish and no driver runs it (MLflow status RUNNING): `" in (
        folder / "report.html").read_text()
    # a driver that finished it while the command read it (status set, then its lock let go as it exited) was
    # told "did not finish and no driver runs it" with a resume command (a walkthrough): the status is read again
    from hsc_search.driver import search_state

    assert search_state("good", "RUNNING", str(folder), good, lambda: "FINISHED") == (
        "ended", "search good finished while this read it")
    assert search_state("good", "RUNNING", str(folder), good, lambda: "RUNNING")[0] == "stopped"
    import hsc_search.export as export_module

    read = export_module.export_best

    def finished_meanwhile(*args, **kwargs):  # the search is read as running; then its driver finishes it
        out = read(*args, **kwargs)
        client.update_run(good, status="FINISHED")
        return out

    monkeypatch.setattr(export_module, "export_best", finished_meanwhile)
    result = _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--out", str(tmp_path / "b.yaml"))
    assert "did not finish" not in result.output and ("note: search good finished while this read it: its last "
                                                      "trials may have changed its best; export again") in result.output, result.output
    monkeypatch.undo()
    client.update_run(good, status="RUNNING")
    import hsc_search.search_record as record_module  # the report: its console line and the page itself

    read_search = record_module.read_search

    def read_then_finished(*args, **kwargs):
        out = read_search(*args, **kwargs)
        client.update_run(good, status="FINISHED")
        return out

    monkeypatch.setattr(record_module, "read_search", read_then_finished)
    result = _cli("report", "--tracking-uri", uri, "--run-id", good, "--no-log", "--out", str(tmp_path / "r2.html"))
    page = (tmp_path / "r2.html").read_text()
    assert "did not finish" not in result.output + page and ("note: search good finished while this read it; the "
                                                              "report shows it as it was when read: write it again "
                                                              "for its end") in result.output, result.output
    # the page says it as the console does, with the command in full (a bare `hsc-search report` writes the latest
    # search of the default store, not this one: the review)
    again = f"{os.path.abspath(Path(sys.executable).parent / 'hsc-search')} report --run-id {good} --tracking-uri {uri}"
    assert (f"search good finished while this read it; the report shows it as it was when read: write it again for "
            f"its end (`{again}`)") in html.unescape(page), page
    monkeypatch.undo()
    client.update_run(good, status="RUNNING")
    # the same with no trial scored yet (by a metric none logged): read as running, finished as its lock is probed
    statuses = iter(["RUNNING", "FINISHED"])
    monkeypatch.setattr(export_module, "search_status", lambda run: next(statuses))
    result = _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--metric", "val/map_v2a",
                  "--out", str(tmp_path / "b.yaml"))  # fmt: skip
    assert result.exit_code == 2 and "; search good finished while this read it: export again" in result.output, \
        result.output  # fmt: skip
    monkeypatch.undo()
    # its driver is gone: the trial MLflow still shows as running was cut off (the counts said "1 running")
    assert "<p>trials: 1 completed, 1 interrupted</p>" in (folder / "report.html").read_text()
    # a search whose one trial has not ended: a warm start from it was told its trial was "outside this space"
    long = _search(client, client.get_run(good).info.experiment_id, "long", 3_000_000, {"c": ([0.1, 0.2], 0.5)})
    trial_c = next(r.info.run_id for r in client.search_runs([client.get_run(good).info.experiment_id])
                   if r.info.run_name == "trial_c")  # fmt: skip
    client.set_tag(trial_c, "hsc.outcome", "running")
    client.update_run(long, status="RUNNING")
    client.set_tag(long, "hsc.experiment_dir", str(tmp_path / "rr" / "long"))
    (tmp_path / "rr" / "long").mkdir(parents=True)
    (tmp_path / "rr" / "long" / "hsc_search.json").write_text(json.dumps({"parent_run_id": long}))
    fresh = _search(client, client.get_run(good).info.experiment_id, "fresh", 4_000_000, {})
    client.create_run(client.get_run(good).info.experiment_id, run_name="trial_d", tags={  # started, not reported
        "mlflow.parentRunId": fresh, "hsc.kind": "trial", "hsc.trial_id": "d", "hsc.outcome": "running"})
    client.update_run(fresh, status="RUNNING")  # its one trial has not reported an epoch yet
    client.set_tag(fresh, "hsc.experiment_dir", str(tmp_path / "rr" / "fresh"))
    (tmp_path / "rr" / "fresh").mkdir(parents=True)
    (tmp_path / "rr" / "fresh" / "hsc_search.json").write_text(json.dumps({"parent_run_id": fresh}))
    holder = subprocess.Popen([sys.executable, "-c", f"from hsc_search.driver import hold_search; hold_search("
                               f"{str(folder)!r}); hold_search({str(tmp_path / 'rr' / 'long')!r}); "
                               f"hold_search({str(tmp_path / 'rr' / 'fresh')!r}); "
                               "print('held', flush=True); import time; time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        result = _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--out", str(tmp_path / "b.yaml"))
        assert (f"note: search good is still running (driver pid {holder.pid} on ") in result.output and (
            "this is its best trial so far: export again when it has ended") in result.output, result.output
        assert "resume" not in result.output, result.output
        # before its first report it "logged no val/map_avg", which read as broken (a walkthrough)
        for metric in ("val/map_avg", "val/map_a2v"):  # its own metric, and another every trial reports
            result = _cli("export-best", "--tracking-uri", uri, "--run-id", fresh, "--metric", metric, "--out",
                          str(tmp_path / "f.yaml"))  # fmt: skip
            assert result.exit_code == 2 and (f"no trial of search fresh (run {fresh}) has logged '{metric}' yet; "
                                              f"search fresh is still running (driver pid {holder.pid} on ") in \
                " ".join(result.output.split()) and "export again once a trial has reported an epoch" in \
                " ".join(result.output.split()), result.output  # fmt: skip
        assert _cli("report", "--tracking-uri", uri, "--run-id", good, "--no-log").exit_code == 0
        assert f"search good is still running (driver pid {holder.pid} on " in (folder / "report.html").read_text()
        assert "<p>trials: 1 completed, 1 running</p>" in (folder / "report.html").read_text()
        # replay said of it "interrupted, or still running ... once `hsc-search resume` has finished it" (a
        # walkthrough)
        replayed = _cli("replay", "--tracking-uri", uri, "--run-id", good, "--orders", "5")
        assert f"search good is still running (driver pid {holder.pid} on " in replayed.output and \
            "resume" not in replayed.output, replayed.output  # fmt: skip
        from hsc_search.preflight import PreflightError
        from hsc_search.space import load_space_dict
        from hsc_search.warm_start import plan

        lr = load_space_dict({"params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}})
        with pytest.raises(PreflightError) as e:
            plan(long, lr, "val/map_avg", "max", uri)
        assert "(1 unfinished" in str(e.value) and f"; search long is still running (driver pid {holder.pid} on " \
            in str(e.value) and str(e.value).endswith("): warm-start from it once its trials have ended"), str(e.value)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # its folder now holds another search (one of its --name): not named, nor its driver taken for this one's
    (folder / "hsc_search.json").write_text(json.dumps({"parent_run_id": "2" * 32}))
    result = _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--out", str(tmp_path / "b.yaml"))
    assert ("note: search good has not finished (MLflow status RUNNING: still running, interrupted, or its driver "
            "died): `hsc-search resume <its folder>` continues it if it is not running") in result.output, result.output
    assert str(folder) not in result.output, result.output
    (folder / "hsc_search.json").unlink()
    other = tmp_path / "rr" / "other"
    other.mkdir(parents=True)
    (other / "hsc_search.json").write_text(json.dumps({"parent_run_id": "0" * 32}))
    (other / "best_config.yaml").write_text("# Best HSC-MAE config exported by hsc-search\nlr: 0.5\n")
    _fails("export-best", "--tracking-uri", uri, "--run-id", good, "--out", str(other / "best_config.yaml"),
           needle="in the folder of another search (run " + "0" * 32)
    assert (other / "best_config.yaml").read_text().endswith("lr: 0.5\n")
    (other / "hsc_search.json").write_text(json.dumps({"parent_run_id": good}))  # its own folder: written
    assert _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--out", str(other / "best_config.yaml")).exit_code == 0


def test_report_leaves_another_searchs_report_alone(store, tmp_path, monkeypatch):
    """A search's folder taken by a newer search of the same --name (the old folder moved away): `report --run-id
    <old>` replaced the newer search's report.html there with the old search's (a walkthrough)."""
    uri, client, good, _, _ = store
    folder = tmp_path / "rr" / "good"
    folder.mkdir(parents=True)
    assert _cli("report", "--tracking-uri", uri, "--run-id", good, "--no-log", "--out",
                str(folder / "report.html")).exit_code == 0  # stands for the newer search's report  # fmt: skip
    newer = (folder / "report.html").read_bytes()
    (folder / "report.html").write_bytes(newer.replace(b"</html>", b"<!-- the newer search's -->\n</html>"))
    newer = (folder / "report.html").read_bytes()
    (folder / "hsc_search.json").write_text('{"parent_run_id": "' + "1" * 32 + '"}')  # the newer search's
    client.set_tag(good, "hsc.experiment_dir", str(folder))
    monkeypatch.chdir(tmp_path)
    result = _cli("report", "--tracking-uri", uri, "--run-id", good, "--no-log")
    assert result.exit_code == 0, result.output
    assert f"report of search good (2 trials): {tmp_path / 'hsc_outputs' / 'good' / 'report.html'}" in result.output
    assert (folder / "report.html").read_bytes() == newer
    _fails("report", "--tracking-uri", uri, "--run-id", good, "--no-log", "--out", str(folder / "report.html"),
           needle="in the folder of another search (run " + "1" * 32)
    assert (folder / "report.html").read_bytes() == newer
    (folder / "hsc_search.json").write_text('{"parent_run_id": "' + good + '"}')  # its own folder: written there
    assert "report of search good (2 trials): " + str(folder / "report.html") in _cli(
        "report", "--tracking-uri", uri, "--run-id", good, "--no-log").output


def test_json_follows_the_file_name_and_a_yaml_name_for_json_is_refused(store, tmp_path, monkeypatch):
    """`--json` alone writes best_config.json (it wrote JSON into best_config.yaml); a .json --out writes JSON;
    `--out b.yaml --json` is refused before anything is read."""
    import json

    uri, _, good, _, _ = store
    monkeypatch.chdir(tmp_path)
    _fails("export-best", "--tracking-uri", uri, "--run-id", good, "--out", "b.yaml", "--json",
           needle="--out b.yaml with --json: a .yaml name for JSON text; name it b.json or drop --json")
    assert not (tmp_path / "b.yaml").exists()
    ok = _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--json")
    assert ok.exit_code == 0 and "-> best_config.json" in ok.output, ok.output
    assert json.loads((tmp_path / "best_config.json").read_text())["lr"] == pytest.approx(0.002)
    assert not (tmp_path / "best_config.yaml").exists()
    ok = _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--out", "named.json")
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "named.json").read_text())["lr"] == pytest.approx(0.002)
    ok = _cli("export-best", "--tracking-uri", uri, "--run-id", good)
    assert ok.exit_code == 0 and "-> best_config.yaml" in ok.output, ok.output
    assert (tmp_path / "best_config.yaml").read_text().startswith("# Best HSC-MAE config")


def test_an_artifact_server_that_keeps_failing_costs_seconds_and_the_import_copies_the_run_again(tracking_server,
                                                                                                   tmp_path):
    """A real `mlflow server` whose stored config.yaml of one trial cannot be read (a dangling link: the server
    answers HTTP 500). MLflow's client retried that for about 4 minutes (257 s measured); the read commands now
    give up in seconds with one line naming the run and the server's answer. import-runs keeps what it copied,
    leaves that run unmarked, and copies it (files included) on the next run once the server can read it."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    server = tracking_server
    client = MlflowClient(tracking_uri=server.url)
    exp = client.create_experiment("hsc-search")
    good = _search(client, exp, "good", 1_000_000, {"a": ([0.3, 0.5], 0.9), "b": ([0.2, 0.7], 0.1)})
    trial_b = next(r.info.run_id for r in client.search_runs([exp]) if r.info.run_name == "trial_b")
    stored = next(Path(server.artifacts_dir).rglob(f"{trial_b}/artifacts/config.yaml"))
    kept = stored.with_name("kept")
    stored.rename(kept)
    stored.symlink_to(tmp_path / "nowhere")
    hsc = Path(sys.executable).parent / "hsc-search"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}

    def cli(*args):
        t = time.monotonic()
        proc = subprocess.run([str(hsc), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        return proc, time.monotonic() - t

    copy = f"sqlite:///{tmp_path}/copy.db"
    proc, took = cli("import-runs", "--from", server.url, "--to", copy)
    assert proc.returncode == 2 and took < 45, (took, proc.stderr[-2000:])
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"run {trial_b}: cannot read its artifacts from mlflow-artifacts:" in errors[0]
    assert "kept answering HTTP 500; see the server's log" in errors[0] and "import-runs again copies" in errors[0]

    proc, took = cli("export-best", "--tracking-uri", server.url, "--run-id", good, "--out", "b.yaml")
    assert proc.returncode == 2 and took < 45 and "Traceback" not in proc.stderr, (took, proc.stderr[-2000:])
    assert f"cannot read config.yaml of trial run {trial_b} (trial_b) from mlflow-artifacts:" in proc.stderr
    assert "/api/2.0/mlflow-artifacts/artifacts answered HTTP 400: " in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "b.yaml").exists()

    stored.unlink()
    kept.rename(stored)  # the server can read it again
    proc, _ = cli("import-runs", "--from", server.url, "--to", copy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(1 half-copied before, copied again)" in proc.stdout, proc.stdout
    dst = MlflowClient(tracking_uri=copy)
    runs = dst.search_runs([dst.get_experiment_by_name("hsc-search").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["good", "trial_a", "trial_b"]  # one copy each, none twice
    copied_b = next(r.info.run_id for r in runs if r.info.run_name == "trial_b")
    assert [f.path for f in dst.list_artifacts(copied_b)] == ["config.yaml"]
    # the half copy the first import left is deleted, and not left RUNNING (the source's trial_b had FINISHED)
    from mlflow.entities import ViewType

    deleted = dst.search_runs([dst.get_experiment_by_name("hsc-search").experiment_id],
                              run_view_type=ViewType.DELETED_ONLY)
    assert [(r.info.run_name, r.info.status) for r in deleted] == [("trial_b", "KILLED")], deleted


def test_a_failed_mlflow_call_is_said_in_a_few_words():
    """`runs.http_failure`: the server's answer (status, address without the query, its message) also when MLflow
    wrapped it in an error of its own; a retry budget spent on error answers; else the first line, cut."""
    import requests

    from hsc_search.runs import http_failure

    answer = requests.Response()
    answer.status_code, answer.url = 404, "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts?path=1%2Fx"
    answer._content = b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "No such file:\\n  config.yaml"}'
    try:
        try:
            raise requests.HTTPError("404 Client Error", response=answer)
        except requests.HTTPError:
            raise RuntimeError("Failed to download artifacts from path 'config.yaml'")  # chained, as MLflow does
    except RuntimeError as e:
        said = http_failure(e)
    assert said == ("http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts answered HTTP 404: No such file: "
                    "config.yaml")
    retried = RuntimeError("API request to http://h:1/api/2.0/mlflow/runs/get failed with exception "
                           "HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: /x (Caused by "
                           "ResponseError('too many 503 error responses'))")
    assert http_failure(retried) == ("http://h:1/api/2.0/mlflow/runs/get kept answering HTTP 503; see the "
                                     "server's log")
    refused = RuntimeError("API request to http://u:secret@127.0.0.1:9/api/2.0/mlflow/runs/get failed with exception "
                           "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /x (Caused by "
                           "NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: Failed to "
                           "establish a new connection: [Errno 111] Connection refused'))")  # fmt: skip
    assert http_failure(refused) == ("http://u:***@127.0.0.1:9/api/2.0/mlflow/runs/get did not answer ([Errno 111] "
                                     "Connection refused)")
    answer._content = b'{"error_code": "INTERNAL_ERROR", "message": null}'  # no message: the status alone
    assert http_failure(requests.HTTPError("500", response=answer)).endswith("artifacts answered HTTP 404")
    long = ValueError("x" * 500 + "\nsecond line")
    assert http_failure(long) == "x" * 200 + "..."
    assert http_failure(KeyError()) == "KeyError"


def test_an_output_replaces_only_an_earlier_output_of_its_kind(tmp_path):
    """An export-best JSON from a trainer version with a field more or less is still its own output; a JSON of
    something else, the MLflow database and a report are not (tests/test_search.py runs the commands)."""
    import json

    from hsc_search.runs import out_file_problem
    from trainer import TrainConfig

    config = TrainConfig().to_dict()
    older = {k: v for k, v in config.items() if k != "val_fraction"} | {"a_field_since_removed": 1}
    for name, text, ours in (("now.json", json.dumps(config), True), ("older.json", json.dumps(older), True),
                             ("other.json", json.dumps({"lr": 0.1, "epochs": 3, "batch_size": 8}), False),
                             ("list.json", "[1, 2]", False), ("mlflow.db", "SQLite format 3\x00", False)):  # fmt: skip
        (tmp_path / name).write_text(text)
        problem = out_file_problem(tmp_path / name, "best_config.json", "--out", "config")
        assert (problem is None) == ours, (name, problem)
    assert out_file_problem(tmp_path / "new.json", "best_config.json", "--out", "config") is None


def test_export_prints_the_retrain_command_for_json_too(store, tmp_path, monkeypatch):
    """A JSON export has no header to carry the retrain command, and the console named no data to retrain on;
    the command works from any folder."""
    import shlex

    uri, client, good, _, _ = store
    client.log_param(good, "data", "synthetic:ave?n_train=40&seed=3")
    monkeypatch.chdir(tmp_path)
    result = _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--out", "b.json")
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("retrain: "))
    words = shlex.split(line)
    # the file by its absolute path: pasted in another folder, "--config b.json" was not found (a walkthrough)
    assert words[2:] == ["train", "--config", str(tmp_path / "b.json"), "--data",
                         "synthetic:ave?n_train=40&seed=3"], words  # fmt: skip
    # the command too, by its full path as the exported file's header has it: run from the folder above the
    # virtualenv it printed `.venv/bin/python`, which fails pasted anywhere else (a walkthrough); and `hsc-search
    # train`, not `python -m trainer`, which a trainer.py in the folder it is pasted in shadows (a walkthrough)
    monkeypatch.chdir(Path(sys.executable).parents[2])
    result = _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--out", str(tmp_path / "c.json"))
    line = next(ln for ln in result.output.splitlines() if ln.startswith("retrain: "))
    assert shlex.split(line)[1] == os.path.abspath(Path(sys.executable).parent / "hsc-search"), line
    (tmp_path / "sub").mkdir()  # an --out through '..': the path as it is, not .../sub/../d.json (a walkthrough)
    monkeypatch.chdir(tmp_path / "sub")
    result = _cli("export-best", "--tracking-uri", uri, "--run-id", good, "--out", "../d.yaml")
    line = next(ln for ln in result.output.splitlines() if ln.startswith("retrain: "))
    assert shlex.split(line)[4] == str(tmp_path.resolve() / "d.yaml"), line
    assert f"train --config {tmp_path.resolve() / 'd.yaml'} " in (tmp_path / "d.yaml").read_text()


def test_a_server_whose_database_fails_is_one_line_in_seconds(tracking_server, tmp_path, monkeypatch):
    """A real `mlflow server` whose database cannot be read answers /health but not its API (400 BAD_REQUEST, or a
    5xx when its database server is down): `run` went on to MLflow's own retries (minutes, a 355-line traceback,
    deaf to Ctrl-C and SIGTERM), export-best gave a 263-line traceback (a walkthrough). One line, exit 2, before
    anything is written or started."""
    import time

    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=tracking_server.url).search_experiments()  # the server has opened its database
    tracking_server.db_path.write_bytes(b"not an SQLite database " * 400)
    MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/src.db").search_experiments()  # a store to import from
    monkeypatch.chdir(tmp_path)
    needle = (f"the MLflow tracking server at {tracking_server.url} answers its health check, but its API answered "
              "400 Bad Request ((sqlite3.DatabaseError) file is not a database): its database may be down, locked "
              "or unreadable; see the server's log")  # fmt: skip
    for args in (["run", "--num-samples", "1", "--max-epochs", "1", "--name", "db", "--tracking-uri"],
                 ["export-best", "--tracking-uri"], ["report", "--tracking-uri"],
                 ["import-runs", "--from", f"sqlite:///{tmp_path}/src.db", "--to"]):  # fmt: skip
        t0 = time.monotonic()
        _fails(*args, tracking_server.url, needle=needle)
        assert time.monotonic() - t0 < 30, args
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "best_config.yaml").exists()


def test_report_in_the_folder_of_searches_without_mlflow_says_so(tmp_path, monkeypatch):
    """In the folder a --no-mlflow search ran in, `report` said "run this in the folder you searched from": the
    user was there. It says the searches there ran without MLflow."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    for name, flag in (("a", False), ("b", False)):
        (tmp_path / "ray_results" / name).mkdir(parents=True)
        (tmp_path / "ray_results" / name / "hsc_search.json").write_text(json.dumps({"settings": {"mlflow": flag}}))
    for command in (["report"], ["export-best"]):
        result = _cli(*command)
        assert result.exit_code == 2, result.output
        assert "the searches in ./ray_results ran with --no-mlflow, which records nothing for this command" in \
            " ".join(result.output.split()), result.output
    # one of them with MLflow (its store moved, or another working folder): the old advice
    (tmp_path / "ray_results" / "b" / "hsc_search.json").write_text(json.dumps({"settings": {"mlflow": True}}))
    result = _cli("report")
    assert result.exit_code == 2 and "run this in the folder you searched from" in " ".join(result.output.split())


def test_a_search_whose_artifacts_a_server_keeps_read_through_its_database_is_one_line(store, tmp_path, monkeypatch):
    """The team server's database URI given to report, export-best and import-runs --to: the experiment's
    artifacts are `mlflow-artifacts:/...`, which only the server's HTTP clients read or write. report and
    export-best failed half-way with MLflow's paragraph about MLFLOW_TRACKING_URI (three times over in report's
    output); each is one line naming the flag, before anything is written or copied."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    from hsc_search.transfer import TransferError, copy_searches

    uri, client, good, _, _ = store
    db = sqlite3.connect(str(tmp_path / "mlflow.db"))  # as the server's database records them
    db.execute("UPDATE experiments SET artifact_location = 'mlflow-artifacts:/1' WHERE name = 'hsc-search'")
    db.execute("UPDATE runs SET artifact_uri = 'mlflow-artifacts:/1/' || run_uuid || '/artifacts'")
    db.commit()
    db.close()
    monkeypatch.chdir(tmp_path)
    for args in (("report", "--out", "r.html"), ("export-best", "--out", "b.yaml")):
        _fails(*args, "--tracking-uri", uri, "--run-id", good,
               needle=f"--tracking-uri {uri}: search run {good} keeps its artifacts on an MLflow server "
                      f"(mlflow-artifacts:/1/{good}/artifacts), which only that server's clients reach: give "
                      "--tracking-uri the server's http://HOST:PORT")  # fmt: skip
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "b.yaml").exists()

    src_uri = f"sqlite:///{tmp_path / 'own.db'}"  # import-runs --to the server's database
    own = MlflowClient(src_uri)
    _search(own, own.create_experiment("hsc-search", artifact_location=str(tmp_path / "own")), "mine", 5,
            {"a": ([0.3], 0.5)})
    n_runs = len(client.search_runs([client.get_experiment_by_name("hsc-search").experiment_id]))
    with pytest.raises(TransferError, match=r"^--to sqlite:.*: the store \(its experiment 'hsc-search'\) keeps its "
                                            r"artifacts on an MLflow server \(mlflow-artifacts:/1\).*--to the server's "
                                            r"http://"):  # fmt: skip
        copy_searches(src_uri, uri, echo=lambda s: None)
    assert len(client.search_runs([client.get_experiment_by_name("hsc-search").experiment_id])) == n_runs
    # an experiment the server's database does not hold yet: the import created it with local artifacts, which
    # the server's clients never see (a review); the store's other experiments tell it is a server's
    own.get_experiment_by_name("hsc-search")
    own.rename_experiment(own.get_experiment_by_name("hsc-search").experiment_id, "elsewhere")
    with pytest.raises(TransferError, match=r"keeps its artifacts on an MLflow server"):
        copy_searches(src_uri, uri, experiments=["elsewhere"], echo=lambda s: None)
    assert client.get_experiment_by_name("elsewhere") is None


def test_a_failed_trial_is_never_the_best_whatever_it_scored_before_it_failed():
    """A trial that diverged after epochs it had reported has a score (its logged epochs), often a high one (a
    large learning rate that learns fast, then blows up). export-best, the parent's best and best_config.yaml
    must never name it: its config does not train to the end."""
    from hsc_search.export import TrialRow, best_row

    def row(name, outcome, score):
        return TrialRow(run_id=name, trial_id=name, name=name, outcome=outcome, status="FINISHED", epochs=2,
                        seconds=1.0, score=score)  # fmt: skip

    rows = [row("ok", "completed", 0.5), row("diverged", "failed", 0.9), row("cut", "stopped_early", 0.3)]
    assert best_row(rows, "max").name == "ok"  # 0.9 is higher, but its trial failed
    losses = [row("ok", "completed", 0.5), row("diverged", "failed", 0.1), row("cut", "stopped_early", 0.7)]
    assert best_row(losses, "min").name == "ok"  # 0.1 is lower, but its trial failed
    assert best_row([row("diverged", "failed", 0.9)], "max") is None  # nothing to export


def test_export_says_when_its_metric_ranks_on_different_scales_and_when_its_trial_was_stopped(tmp_path):
    """`export-best --metric loss/total` of a search with learned and fixed loss weights picked the learned trial,
    whose total is on another scale, without a word (the search's start says it of its own --metric); and an
    ASHA-stopped trial's file trains the whole schedule, so its retrain goes on past the score's epochs, unsaid
    (a walkthrough). Both are notes now; a completed trial ranked by a validation mAP gets none."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("hsc-search", artifact_location=str(tmp_path / "mlruns"))
    parent = client.create_run(exp, run_name="mix", tags={"hsc.kind": "search"}).info.run_id
    for k, v in {"metric": "val/map_avg", "mode": "max", "max_epochs": "4"}.items():
        client.log_param(parent, k, v)
    trials = {"learned": ("stopped_early", [2.6, 2.44], [0.30, 0.31]),  # loss/total, val/map_avg per epoch
              "fixed": ("completed", [6.6, 6.4, 6.2, 6.0], [0.30, 0.33, 0.36, 0.40])}  # fmt: skip
    for weighting, (outcome, loss, val) in trials.items():
        run = client.create_run(exp, run_name=f"trial_{weighting}", tags={
            "mlflow.parentRunId": parent, "hsc.kind": "trial", "hsc.trial_id": weighting,
            "hsc.outcome": outcome}).info.run_id  # fmt: skip
        client.log_param(run, "loss_weighting", weighting)
        for e, (lv, vv) in enumerate(zip(loss, val), 1):
            client.log_metric(run, "loss/total", lv, step=e)
            client.log_metric(run, "val/map_avg", vv, step=e)
            if weighting == "learned":  # as only learned loss weights log their log-variances
                client.log_metric(run, "logvar/nce", -0.1 * e, step=e)
        client.log_metric(run, "epoch", len(loss))
        client.log_text(run, TrainConfig.from_dict({"loss_weighting": weighting, "epochs": 4}).to_yaml(), "config.yaml")
        client.set_terminated(run)
    client.set_terminated(parent)

    result = _cli("export-best", "--tracking-uri", uri, "--metric", "loss/total", "--out", str(tmp_path / "l.yaml"))
    assert result.exit_code == 0 and "best trial trial_learned (stopped by ASHA)" in result.output, result.output
    notes = [ln for ln in result.output.splitlines() if ln.startswith("note: ")]
    assert notes == [
        "note: loss/total is computed differently by trials with different loss_weighting: they are ranked by numbers "
        "on different scales (learned loss weights, for one, divide each loss by its first value), not by how well "
        "they retrieve; a validation mAP ranks them on one task",
        "note: trial trial_learned was stopped by ASHA after 2 epochs of 4: the file trains all 4 (its learning-rate "
        "schedule is that length), so its retrain gives the trial's metrics for those 2, then trains on and keeps "
        "its best epoch of all 4 (its loss/total can be better than 2.44)"], result.output  # fmt: skip
    assert yaml.safe_load((tmp_path / "l.yaml").read_text())["epochs"] == 4
    result = _cli("export-best", "--tracking-uri", uri, "--out", str(tmp_path / "v.yaml"))
    assert result.exit_code == 0 and "best trial trial_fixed (completed)" in result.output, result.output
    assert "note:" not in result.output, result.output
    # a metric only some trials log ranked the others out without a word (a walkthrough)
    result = _cli("export-best", "--tracking-uri", uri, "--metric", "logvar/nce", "--out", str(tmp_path / "g.yaml"))
    assert result.exit_code == 0 and "best trial trial_learned" in result.output, result.output
    assert "note: 1 trial of 2 logged no logvar/nce and was not ranked: trial_fixed" in result.output, result.output
    # bookkeeping ranked as if a score ("epoch 3.0000 (max)", a tie; a score summary): refused in one line
    _fails("export-best", "--tracking-uri", uri, "--metric", "epoch", "--out", str(tmp_path / "e.yaml"),
           needle="--metric epoch: the epoch count, the same for every trial that trained all its epochs, not a "
                  "metric of each epoch to rank trials by; rank by a validation metric such as val/map_avg")
    _fails("export-best", "--tracking-uri", uri, "--metric", "best/max/val/map_avg", "--out", str(tmp_path / "e.yaml"),
           needle="--metric best/max/val/map_avg: a trial's score by val/map_avg, logged once, as its search ranked "
                  "it, not a metric of each epoch to rank trials by; rank by val/map_avg (--metric val/map_avg "
                  "--mode max)")
    assert not (tmp_path / "e.yaml").exists()


def test_a_running_trials_export_note_says_it_is_still_training():
    """A search still running exports its best trial so far, which may be running: the note said it "ended after 2
    epochs of 8" (a review); it has trained 2 so far. A small loss keeps its digits (0.0000 said nothing)."""
    from hsc_search.export import TrialRow, export_notes

    row = TrialRow(run_id="r", trial_id="a", name="trial_a", outcome="running", status="RUNNING", epochs=2,
                   seconds=1.0, score=0.0000312)  # fmt: skip
    (note,) = export_notes([row], row, "loss/rec", TrainConfig(epochs=8))
    assert note.startswith("trial trial_a has trained 2 epochs of 8: the file trains all 8") and note.endswith(
        "(its loss/rec can be better than 3.12e-05)"), note  # fmt: skip
    # loss/rec of trials with different mask_ratio is on different scales, but not for the learned loss weights'
    # reason, which it gave (a walkthrough): that example only where the weighting differs
    rows = [TrialRow(run_id=f"r{m}", trial_id=f"t{m}", name=f"trial_{m}", outcome="completed", status="FINISHED",
                     epochs=8, seconds=1.0, score=0.1 * m, params={"mask_ratio": str(0.1 * m)}) for m in (3, 6)]
    (note,) = export_notes(rows, rows[0], "loss/rec", TrainConfig(epochs=8))
    assert note == ("loss/rec is computed differently by trials with different mask_ratio: they are ranked by numbers "
                    "on different scales, not by how well they retrieve; a validation mAP ranks them on one task"), note
    done = TrialRow(run_id="r", trial_id="b", name="trial_b", outcome="completed", status="FINISHED", epochs=8,
                    seconds=1.0, score=0.5)  # fmt: skip
    assert export_notes([done], done, "val/map_avg", TrainConfig(epochs=8)) == []
