"""The search as a person sees it: a small search against a real `mlflow server` on 127.0.0.1, its report, and
the MLflow UI and the report opened in headless Chromium. Screenshots of one run go to test-artifacts/ui/ (the
path is printed). Also: `hsc-search report` for a search made by the code before the report existed, and its
one-line errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import io
from pathlib import Path

import pytest
from conftest import MlflowServer, search_cmd, search_env

import browser

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHOTS = Path(os.environ.get("HSC_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "ui"
TRIALS, EPOCHS = 3, 2
BASE_COMMIT = "a0ac97c"  # the last commit before the report: how searches were logged until then


@pytest.fixture(scope="module")
def served(tmp_path_factory, _cache_dir):
    """One small search (3 trials x 2 epochs, ASHA) logged to a real `mlflow server`, shared by the tests here."""
    tmp = tmp_path_factory.mktemp("ui")
    server = MlflowServer(tmp / "mlflow.db", tmp / "artifacts").start()
    try:
        proc = subprocess.run(search_cmd("--num-samples", str(TRIALS), "--max-epochs", str(EPOCHS), "--name", "ui1",
                                         "--experiment", "ui", "--tracking-uri", server.url),
                              cwd=tmp, env=search_env(_cache_dir), capture_output=True, text=True, timeout=420)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        yield server, tmp, proc
    finally:
        server.stop()


def _search(url):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("ui")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get("hsc.kind") == "search")
    trials = [r for r in runs if r.data.tags.get("hsc.kind") == "trial"]
    return client, exp, parent, trials


def test_search_writes_and_logs_its_report(served):
    server, tmp, proc = served
    client, exp, parent, trials = _search(server.url)
    report = tmp / "ray_results" / "ui1" / "report.html"
    assert f"report:      {report}" in proc.stdout
    assert (tmp / "ray_results" / "ui1" / "best_config.yaml").exists() and report.exists()
    html = report.read_text()
    assert all(t.info.run_name in html for t in trials)
    # the table: the config's values, then what the trainer resolved on this data (effective.*), each by name
    heads = re.findall(r"<th>(.*?)</th>", html)
    params = heads[heads.index("seconds") + 1 : heads.index("run id")]
    resolved = [p for p in params if p.startswith("effective.")]
    assert resolved and params == sorted(set(params) - set(resolved)) + sorted(resolved), params
    assert re.search(r"<b>best trial [^<]*</b> \([^)]*\): val/map_avg [0-9.]+; [^(]*lr=[^(]* \(resolved on this data: "
                     r"[a-z_]+=", html), html[:3000]  # fmt: skip
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"report.html", "asha_rungs.json"}
    # parameter importances are computed once, by the report: its chart and the parent run's picture
    assert f"parameter importance for val/map_avg (fANOVA, {TRIALS} trials)" in html.replace("\\u002f", "/")
    assert "plots/param_importance.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    # the UI's experiment kind and primary metric
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.experiment.primaryMetric.name"] == "val/map_avg"
    assert exp.tags["mlflow.experiment.primaryMetric.greaterIsBetter"] == "true"
    # a trial holds the top 3 canonical correlations as metrics and the whole spectrum as a file
    for t in trials:
        assert sorted(k for k in t.data.metrics if k.startswith("cca/")) == [
            "cca/mean", "cca/rho_00", "cca/rho_01", "cca/rho_02"]  # fmt: skip
        spectrum = Path(client.download_artifacts(t.info.run_id, "cca_spectrum.csv", str(tmp))).read_text().splitlines()
        assert spectrum[0].startswith("epoch,rho_00,rho_01,rho_02,rho_03")
        assert [line.split(",")[0] for line in spectrum[1:]] == [str(e) for e in range(1, int(t.data.metrics["epoch"]) + 1)]
    # the printed UI link opens the experiment in model-training mode
    assert f"#/experiments/{exp.experiment_id}?workflowType=machine_learning" in proc.stdout


@pytest.mark.skipif(browser.missing() is not None and os.environ.get("HSC_SKIP_BROWSER") == "1",
                    reason="HSC_SKIP_BROWSER=1 and no Chromium")  # fmt: skip
def test_the_search_in_a_real_browser(served):
    """What a person checks: the experiment opens in model-training mode with the runs listed, the search run
    holds the report, and the report's plots render without script errors. Screenshots: test-artifacts/ui/."""
    assert browser.missing() is None, browser.missing()
    server, tmp, _ = served
    client, exp, parent, trials = _search(server.url)
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    print(f"\nscreenshots: {SHOTS}")
    q = "?workflowType=machine_learning"
    exp_url = f"{server.url}/#/experiments/{exp.experiment_id}{q}"
    run_url = f"{server.url}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}"
    with browser.chromium() as d:
        d.get(exp_url)
        browser.wait_for(d, f"document.body.innerText.includes('{1 + TRIALS} matching runs')", 60, "the runs table")
        text = browser.body_text(d)
        assert "Runs" in d.title and "Model training" in text, d.title
        assert "Detect Issues" not in text and "Traces\n0" not in text  # not the GenAI overview
        assert "ui1" in text
        # expand the search run: its trials are listed under it
        d.find_element("css selector", "button[data-component-id*='runnamecellrenderer']").click()
        names = [t.info.run_name for t in trials]
        browser.wait_for(d, f"{names!r}.every(n => document.body.innerText.includes(n))", 30, "the trials listed")
        d.save_screenshot(str(SHOTS / "1-experiment.png"))

        # the search run's children are listed once it is expanded in the table: look at them through the run page
        d.get(f"{run_url}{q}")
        browser.wait_for(d, "document.body.innerText.includes('ui1')", 60, "the search run page")
        d.save_screenshot(str(SHOTS / "2-search-run.png"))

        d.get(f"{run_url}/artifacts/report.html{q}")
        browser.wait_for(d, "document.querySelector('iframe') !== null", 60, "the report in MLflow's artifact viewer")
        d.switch_to.frame(d.find_element("css selector", "iframe"))
        browser.wait_for(d, "document.querySelectorAll('.js-plotly-plot .main-svg').length > 0", 60, "plots in MLflow")
        d.switch_to.default_content()
        d.save_screenshot(str(SHOTS / "3-report-in-mlflow.png"))

        best = parent.data.tags["hsc.best_run_id"]
        d.get(f"{server.url}/#/experiments/{exp.experiment_id}/runs/{best}/model-metrics{q}")
        browser.wait_for(d, r"/cca\s*\(4\)/.test(document.body.innerText)", 60, "the trial's metric charts")
        d.save_screenshot(str(SHOTS / "4-best-trial-metrics.png"))

        browser.script_errors(d)  # MLflow's own page noise is not ours to judge; the report's is
        report = tmp / "ray_results" / "ui1" / "report.html"
        d.set_window_size(1300, 1000)
        d.get(report.as_uri())
        n = browser.wait_for(d, "document.querySelectorAll('.js-plotly-plot').length", 30, "the report's plots")
        rendered = browser.wait_for(
            d, f"Array.from(document.querySelectorAll('.js-plotly-plot')).filter(p => p.querySelector('.main-svg')"
               f" && p.querySelectorAll('.trace, .plot path, .bars path').length > 0).length === {n}", 30,
            "every plot drawn")  # fmt: skip
        assert rendered
        assert browser.script_errors(d) == []
        text = browser.body_text(d)
        for section in ("Learning curves", "Best so far", "Parallel coordinates", "Best trial: loss weights",
                        "Best trial: canonical correlations", "Trials"):  # fmt: skip
            assert section in text, section
        assert n >= 5
        assert all(t.info.run_name in text for t in trials)
        height = d.execute_script("return document.body.scrollHeight")
        d.set_window_size(1300, min(int(height) + 150, 8000))
        d.save_screenshot(str(SHOTS / "5-report.png"))
    assert sorted(p.name for p in SHOTS.iterdir()) == ["1-experiment.png", "2-search-run.png",
                                                       "3-report-in-mlflow.png", "4-best-trial-metrics.png",
                                                       "5-report.png"]  # fmt: skip


def _report_cli(*args, cwd, env=None, timeout=180):
    return subprocess.run([str(BIN / "hsc-search"), "report", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def test_report_bad_input_is_one_line_and_exit_2(served, tmp_path):
    server, _, _ = served
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=server.url).create_experiment("empty")
    cases = [
        (("--tracking-uri", server.url, "--run-id", "0" * 32), "not found"),
        (("--tracking-uri", server.url, "--experiment", "empty"), "has no search"),
        (("--tracking-uri", server.url, "--experiment", "nope"), "'nope' not found"),
        (("--tracking-uri", "http://127.0.0.1:9"), "cannot reach the MLflow tracking server"),
        ((), "no MLflow database"),
    ]
    for args, needle in cases:
        proc = _report_cli(*args, cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
    assert not (tmp_path / "mlflow.db").exists()  # no empty database made on the way


def _old_code(dest: Path) -> bool:
    """The package as it was at BASE_COMMIT, unpacked into dest; False when this checkout has no such commit."""
    git = shutil.which("git")
    if git is None or subprocess.run([git, "cat-file", "-e", BASE_COMMIT], cwd=ROOT).returncode != 0:
        return False
    tar = subprocess.run([git, "archive", BASE_COMMIT, "hsc_search", "trainer", "search_spaces"], cwd=ROOT,
                         capture_output=True, check=True).stdout  # fmt: skip
    tarfile.open(fileobj=io.BytesIO(tar)).extractall(dest, filter="data")
    return True


def test_report_for_a_search_made_before_the_report_existed(tmp_path, _cache_dir):
    """A search run by the code at BASE_COMMIT (every cca/rho_* a metric, no spectrum file, no report, no
    experiment tags): `hsc-search report` draws it from what MLflow holds, and logs the report to its run."""
    old = tmp_path / "old"
    if not _old_code(old):
        pytest.skip(f"this checkout lacks commit {BASE_COMMIT} (a shallow clone?)")
    env = search_env(_cache_dir, PYTHONPATH=str(old))
    cmd = [sys.executable, "-m", "hsc_search"] + search_cmd("--num-samples", "2", "--max-epochs", "2",
                                                            "--name", "before")[1:]  # fmt: skip
    proc = subprocess.run(cmd, cwd=old, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "report:" not in proc.stdout  # really the old code

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{old}/mlflow.db")
    exp = client.get_experiment_by_name("hsc-search")
    assert "mlflow.experimentKind" not in exp.tags
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("hsc.kind") == "search")
    assert "report.html" not in {a.path for a in client.list_artifacts(parent.info.run_id)}

    rep = _report_cli(cwd=old)  # the new code, in the folder the old search ran in
    assert rep.returncode == 0, rep.stdout + rep.stderr
    path = old / "ray_results" / "before" / "report.html"
    assert f"report of search before (2 trials): {path}" in rep.stdout
    html = path.read_text()
    assert "Best trial: canonical correlations" in html and "Learning curves" in html
    assert "rho_15" in html  # the whole spectrum, from the old per-correlation metrics
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert client.get_experiment(exp.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert re.search(r"in MLflow: http://127\.0\.0\.1:5000/#/experiments/\d+/runs/\w+\?workflowType=machine_learning",
                     rep.stdout)  # fmt: skip
