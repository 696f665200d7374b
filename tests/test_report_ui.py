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
import json
import math
from html import escape as html_escape
from pathlib import Path

import numpy as np
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
    # the table: the config's values in the space's order (as the parallel coordinates and the search's lines; they
    # were by name), then what the trainer resolved on this data (effective.*), by name
    import yaml

    heads = re.findall(r"<th>(.*?)</th>", html)
    params = heads[heads.index("seconds") + 1 : heads.index("run id")]
    resolved = [p for p in params if p.startswith("effective.")]
    order = list(yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())["params"])
    own = [p for p in params if p not in resolved]
    assert resolved and own == [p for p in order if p in own] and own != sorted(own), params
    assert params == own + sorted(resolved), params
    assert re.search(r"<b>best trial [^<]*</b> \([^)]*\): val/map_avg [0-9.]+(; test mAP [0-9.]+ \(of epoch [0-9]+, the "
                     r"epoch of its highest val/map_avg\))?; [^(]*lr=[^(]* \(resolved on this data: [a-z_]+=", html), html[:3000]
    best = max(trials, key=lambda t: t.data.metrics.get("best/max/val/map_avg", -1.0))
    if "test/map_avg" in best.data.metrics:  # it reached its last epoch: its test mAP, of the epoch selected
        m = best.data.metrics
        assert f"test mAP {m['test/map_avg']:.4f} (of epoch {int(m['test/epoch'])}, the epoch of its highest val/map_avg)" in html
    else:  # stopped by ASHA: never tested, and the line claims no test mAP
        line = re.search(r"<b>best trial [^\n]*", html).group(0)
        assert "test mAP" not in line, line
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"report.html", "asha_rungs.json"}
    # what the start said stays with the search: the run page's Description, and the report
    said = [ln for ln in proc.stdout.splitlines() if ln.startswith(("note: ", "first trial: "))]
    headline = next(ln for ln in proc.stdout.splitlines() if ln.startswith("search ui1: "))
    assert headline.startswith(f"search ui1: {TRIALS} trials x up to {EPOCHS} epochs, space ")
    note = parent.data.tags["mlflow.note.content"]
    start, _, result = note.partition("\n\n**Result**\n\n")
    assert start == headline + "".join(f"\n- {ln}" for ln in said), note
    # and how it ended, as the console said it: the best trial and the command that retrains it (the same text: test_readme pastes it)
    best_line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("best trial: "))
    retrain = next(ln for ln in proc.stdout.splitlines() if ln.startswith("retrain: ")).split(None, 1)[1]
    name, score = re.match(r"best trial: (\S+) \(.*\) score ([0-9.]+)", best_line).groups()
    import socket

    assert result.startswith(f"best trial: {name} (") and result.endswith(
        f"), val/map_avg {score}\n\nretrain (on {socket.gethostname()}): `{retrain}`"), (result, best_line)
    assert json.loads(parent.data.tags.get("hsc.notes", "[]")) == said  # no tag when it said none ("[]" in the UI)
    assert all(f'<p class="note">at the start: {html_escape(ln.removeprefix("note: "))}</p>' in html for ln in said)
    # parameter importances are computed once, by the report: its chart and the parent run's picture
    # over the trials that trained all their epochs, as Optuna ranks a pruned search, when 3 or more did (every
    # scored trial mixed ASHA's 1-epoch scores with 12-epoch ones without a word; a walkthrough)
    outcomes = [t.data.tags.get("hsc.outcome") for t in trials]
    full, early = outcomes.count("completed"), sum(o not in ("completed", "failed") for o in outcomes)
    scored = full + early
    which = (f"{scored} trials" if not early else f"{full} completed trials" if full >= 3 else
             f"{scored} trials, {early} not completed")  # fmt: skip
    assert f"parameter importance for val/map_avg (fANOVA, {which})" in html.replace("\\u002f", "/"), which
    assert "plots/param_importance.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    # the UI's experiment kind and primary metric
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.experiment.primaryMetric.name"] == "best/max/val/map_avg"  # the parent's and trials' score
    assert "best/max/val/map_avg" in parent.data.metrics and all("best/max/val/map_avg" in t.data.metrics for t in trials)
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
        # the count and the rows (the count can come a moment before the rows' names: a local run saw it)
        browser.wait_for(d, f"document.body.innerText.includes('{1 + TRIALS} matching runs') && "
                            "document.body.innerText.includes('ui1')", 60, "the runs table")  # fmt: skip
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
        check_report_layout(d)  # no page-wide scrolling, titles clear of the modebar, no 'None' tick
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
        (("--tracking-uri", server.url, "--run-id", "0" * 32), "no such run at"),
        (("--tracking-uri", server.url, "--experiment", "empty"), "has no search"),
        (("--tracking-uri", server.url, "--experiment", "nope"), "'nope' not found"),
        (("--tracking-uri", "http://127.0.0.1:9"), "cannot reach the MLflow tracking server at http://127.0.0.1:9 "
         "within 10 s ([Errno 111] Connection refused); start it (hsc-search team-server or mlflow server), or fix "
         "--tracking-uri"),
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
    assert re.search(r"in MLflow:   MLFLOW_DISABLE_TELEMETRY=true \S+mlflow ui --backend-store-uri \S+mlflow\.db"
                     r"( --port \d+)?\n +then "  # (another port where something holds 5000)
                     r"open http://127\.0\.0\.1:\d+/#/experiments/\d+/runs/\w+/artifacts/report\.html"
                     r"\?workflowType=machine_learning\n", rep.stdout), rep.stdout  # fmt: skip (the report's own page)


# ---------------------------------------------------------------------------------------------- readability
# Fast checks on the report's figures and page, drawn from a made-up search (no search, no MLflow): a conditional
# parameter (weight_lr only with learned weighting), a wide table, and short (3 epochs) and long searches.
SPACE = {"params": {"lr": {"type": "float", "low": 3.0e-4, "high": 1.0e-2, "log": True},
                    "topk": {"type": "int", "low": 0, "high": 8},
                    "loss_weighting": {"type": "categorical", "choices": ["learned", "fixed"]},
                    "weight_lr": {"type": "float", "low": 1.0e-3, "high": 5.0e-2, "log": True,
                                  "when": {"loss_weighting": "learned"}}}}  # fmt: skip


def _record(epochs: int = 3, n: int = 6):
    from hsc_search.export import TrialRow
    from hsc_search.search_record import SearchRecord, Trial

    trials = []
    for i in range(n):
        learned = i % 3 != 2
        params = {"lr": str(0.001 + 0.0013 * i), "topk": str(i % 9), "loss_weighting": "learned" if learned else "fixed",
                  **({"weight_lr": str([0.01, 0.009228, 0.03007, 0.002][i % 4])} if learned else {}),
                  **{f"effective.a_rather_long_resolved_setting_{k}": "some_long_value" for k in range(8)}}  # fmt: skip
        curve = [(e, 0.3 + 0.02 * i + 0.01 * e, 1000 * (i * epochs + e)) for e in range(1, epochs + 1)]
        row = TrialRow(run_id=f"{i:032x}", trial_id=f"t{i}", name=f"train_trial_{i:08x}", outcome="completed",
                       status="FINISHED", epochs=epochs, seconds=1.0, score=max(v for _, v, _ in curve), params=params,
                       start_time=i)  # fmt: skip
        trials.append(Trial(row, i, curve))
    hist = {f"{p}/{k}": [(e, 0.5 + 0.01 * e) for e in range(1, epochs + 1)] for p in ("weight", "logvar")
            for k in ("nce", "rec")}  # fmt: skip
    return SearchRecord(parent_run_id="p" * 32, experiment_id="1", name="made-up", settings={}, metric="val/map_avg",
                        mode="max", max_epochs=epochs, trials=trials, best=trials[-1], milestones=[1], space=SPACE,
                        best_history=hist, best_spectrum={e: [0.9 - 0.1 * k for k in range(8)] for e in range(1, epochs + 1)})  # fmt: skip


def test_the_report_names_the_metric_that_chose_the_tested_epoch_and_the_scheduler_it_ran():
    """The best-trial line said the tested epoch was 'the one validation selected' whatever selected it (a
    loss/total search keeps its lowest training loss; a loss/rec search, which the trainer cannot select by, its
    highest val/map_avg: another epoch than its score's), and a FIFO search's report described ASHA's rungs."""
    from hsc_search import report

    rec = _record(3)
    rec.best.row.final = {"test/map_avg": 0.2244, "test/epoch": 2}
    rec.settings = {"scheduler": "asha", "grace_period": "1", "reduction_factor": "2"}
    cases = [  # (metric, mode, fixed select_metric as the search records it) -> what the report says
        ("val/map_avg", "max", "val/map_avg", "the epoch of its highest val/map_avg)", "(the checkpoint it kept"),
        ("loss/total", "min", "loss/total", "the epoch of its lowest loss/total)", "(the checkpoint it kept"),
        ("loss/rec", "min", None, "the epoch of its highest val/map_avg)",
         "(its kept and tested checkpoint is of its best val/map_avg, which can be another epoch)"),
    ]  # fmt: skip
    for metric, mode, kept, line, caption in cases:
        rec.metric, rec.mode = metric, mode
        rec.space = {**SPACE, "fixed": {"select_metric": kept} if kept else {}}
        page = report.render(rec)
        assert f"test mAP 0.2244 (of epoch 2, {line}" in page and "validation selected" not in page, metric
        assert f"A trial&#x27;s score is its best {metric} over its epochs {caption}" in page.replace("'", "&#x27;"), metric
        assert "grace_period 1, reduction_factor 2" in page and "Dashed lines: ASHA" in page
    rec.notes = ["note: --metric loss/total is a training loss & more"]
    assert '<p class="note">at the start: --metric loss/total is a training loss &amp; more</p>' in report.render(rec)
    rec.settings, rec.milestones = {"scheduler": "fifo", "grace_period": "1", "reduction_factor": "2"}, []
    page = report.render(rec)
    assert "scheduler fifo" in page and "grace_period" not in page and "ASHA" not in page.split("<h2>Trials")[0]
    assert "FIFO: every trial runs to max_epochs unless it fails" in page


def _luminance(color: str) -> float:
    """Relative luminance (WCAG) of an 'rgb(r, g, b)' colour: white 1, the Blues scale's white end 0.96."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
           for c in (float(x) / 255 for x in re.findall(r"[\d.]+", color)[:3])]  # fmt: skip
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_parallel_coordinates_are_readable():
    """Every line shows on white (no near-white low end); a trial without a conditional parameter crosses its
    axis at 'not searched', never a numeric 'None'; one axis's tick labels do not crowd each other."""
    from hsc_search import report

    rec = _record()
    fig = report.parallel_figure(rec, report.optuna_study(rec))
    scales = [t.marker.colorscale for t in fig.data if t.marker is not None and t.marker.showscale]
    assert scales and all(_luminance(s[0][1]) < 0.5 for s in scales), scales
    lines = [t for t in fig.data if t.mode and "lines" in t.mode]
    assert len(lines) == len(rec.trials) and all(_luminance(t.line.color) < 0.5 for t in lines)
    texts = [a.text for a in fig.layout.annotations]
    assert "None" not in texts and texts.count(report.NOT_USED) == 1, texts
    # what such a trial had of it: weight_lr, which the trainer reads only with learned weights, not used; its
    # table cell says so too
    fixed = [t for t in lines if "loss_weighting: fixed" in t.customdata]
    assert fixed and all("weight_lr: not used (loss_weighting fixed)" in t.customdata for t in fixed), \
        fixed[0].customdata  # fmt: skip
    assert "<td>not used (loss_weighting fixed)</td>" in report.render(rec)
    # where the trainer reads it, the default it trained with (it was "not used", untrue of ablation's use_nce,
    # whose default trained InfoNCE in every trial with DCCA off: a walkthrough), or what the trainer resolved
    from trainer import TrainConfig

    assert report.kept("use_nce", {"use_dcca": "False"}) == "not searched (default True)"
    assert report.kept("tau_teacher", {"topk": "5"}) == f"not searched (default {TrainConfig().tau_teacher})"
    assert report.kept("tau_teacher", {"topk": "0"}) == "not used (topk 0)"
    assert report.kept("w_nce", {}) == "not used (loss_weighting learned)"  # (the trainer's default)
    # a field the space fixes (--set loss_weighting=fixed), not among the trial's searched params (the review)
    assert report.kept("w_nce", {}, {"loss_weighting": "fixed"}) == "not searched (default 1)"
    assert report.kept("tau_teacher", {}, {"topk": 0}) == "not used (topk 0)"
    assert report.kept("cca_dim", {"effective.cca_dim": "16"}) == "not searched (default, resolved on this data to 16)"
    # numbers among a categorical's choices read as the table and the console give them (1.0 was "1.0" here, "1"
    # there)
    from optuna.distributions import CategoricalDistribution

    axis = report._axis("w_dcca", [1.0, 0.5, None], CategoricalDistribution([0.5, 1.0]), [None, None, "x"])
    assert axis["hover"] == ["1", "0.5", "x"] and [t for _, t in axis["ticks"]] == ["not searched", "0.5", "1"], axis
    # the axes in the space's order: weight_lr beside loss_weighting, which switches it (alphabetically lr came
    # between them); a log-scaled one says so (only its ticks told it: a walkthrough)
    assert list(fig.layout.xaxis.ticktext) == [rec.metric, "lr (log)", "topk", "loss_weighting", "weight_lr (log)"], \
        fig.layout.xaxis.ticktext  # fmt: skip
    # the report says what its objective is (a reader of the report alone was never told)
    assert ("objective: val/map_avg, validation cross-modal retrieval mAP: audio clips query visual ones and the "
            "reverse, a clip relevant when it shares a label, the two directions averaged, higher is better"
            in report.render(rec))  # fmt: skip
    by_axis: dict = {}
    for a in fig.layout.annotations:
        by_axis.setdefault(a.x, []).append(a.y)
    for ys in by_axis.values():
        ys = sorted(ys)
        assert all(b - a >= 0.1 for a, b in zip(ys, ys[1:])), ys  # was 0.00923 and 0.01 on top of each other


@pytest.mark.parametrize("epochs", [2, 3, 60])
def test_epoch_axes_have_whole_numbers_only(epochs):
    """Epoch (and trial-count) axes tick at whole numbers only: no 1.5, 2.5 in a 2-3 epoch search."""
    from hsc_search import report, trial_plots

    rec = _record(epochs)
    figs = [report.curves_figure(rec), report.best_so_far_figure(rec), report.weights_figure(rec),
            report.spectrum_figure(rec)]  # fmt: skip
    axes = [(f.layout.title.text, ax) for f in figs for name, ax in f.layout.to_plotly_json().items()
            if name.startswith(("xaxis", "yaxis")) and "epoch" in str(ax.get("title", {}).get("text", ""))]  # fmt: skip
    assert len(axes) == 5, [t for t, _ in axes]  # curves, all epochs trained, 2 x loss weights, CCA heatmap
    for title, ax in axes:
        assert ax.get("tickformat") == "d" and ax.get("tickmode") == "linear", (title, ax)
        assert float(ax["dtick"]).is_integer() and ax["dtick"] >= 1 and epochs / ax["dtick"] <= 12, (title, ax)
    # an interrupted search: curves to `epochs` of a 300-epoch budget are ticked for the epochs drawn (they were
    # ticked for 300: two ticks, 0 and 50, over 50 epochs); the by-trial axis leaves room around its end markers
    rec.max_epochs = 300
    ax = report.curves_figure(rec).layout.xaxis
    assert ax.dtick >= 1 and epochs / ax.dtick >= 2 if epochs >= 2 else ax.dtick == 1, ax
    # its rungs: those the curves reach and the next one (drawn to rung 256, the curves filled a sliver: a walkthrough)
    rec.milestones = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    fig = report.curves_figure(rec)
    assert [s.x0 for s in fig.layout.shapes] == [m for m in rec.milestones if m <= epochs] + [
        next(m for m in rec.milestones if m > epochs)], fig.layout.shapes
    rec.milestones = [1]
    ax = report.best_so_far_figure(rec).layout.xaxis
    assert tuple(ax.range) == (0.5, len(rec.trials) + 0.5), ax
    rec.max_epochs = epochs
    # the trial's own SVG pictures logged to MLflow: the x tick labels sit just below each panel
    y = trial_plots.TOP + (trial_plots.H - trial_plots.TOP - trial_plots.BOTTOM) + 14
    hist = {**rec.best_history, **{f"cca/rho_{k:02d}": [(e, 0.5) for e in range(1, epochs + 1)] for k in range(3)}}
    for svg in (trial_plots.loss_weights_svg(hist), trial_plots.cca_spectrum_svg(hist)):
        ticks = re.findall(rf'y="{y}"[^>]*>([^<]+)</text>', svg)
        assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), ticks


def test_a_trials_pictures_keep_lines_off_the_frame_and_the_legend_off_the_lines():
    """The lowest line ran along the frame's bottom edge and the legend sat on the highest line (MLflow's
    artifact view of plots/loss_weights.svg)."""
    from hsc_search import trial_plots as tp

    rec = _record(4)
    svg = tp.loss_weights_svg(rec.best_history)
    frame = [(float(x), float(y), float(w), float(h)) for x, y, w, h in
             re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" fill="none"', svg)]
    assert len(frame) == 2
    points = [(float(x), float(y)) for line in re.findall(r'<polyline points="([^"]+)"', svg) for x, y in
              (p.split(",") for p in line.split())]  # fmt: skip
    assert points and all(any(fx + 3 <= x <= fx + fw - 3 and fy + 3 <= y <= fy + fh - 3 for fx, fy, fw, fh in frame)
                          for x, y in points), points  # fmt: skip
    labels = [float(x) for x in re.findall(r'<text x="([\d.]+)" y="[\d.]+" font-size="10">(?:nce|rec)</text>', svg)]
    assert labels and all(any(x > fx + fw for fx, _, fw, _ in frame) for x in labels), labels


def test_best_so_far_marks_each_outcome_with_its_own_symbol():
    """Stopped and failed trials were both crosses, told apart by colour only; the PNG logged to MLflow marks a
    failed one with a triangle: the report does too."""
    from hsc_search import report

    rec = _record(3, n=4)
    for t, o in zip(rec.trials, ("completed", "stopped_early", "failed", "interrupted")):
        t.row.outcome = o
    symbols = {t.name: t.marker.symbol for t in report.best_so_far_figure(rec).data
               if t.mode == "markers" and t.xaxis == "x"}  # (the trials' panel; its other marks each new best)
    assert len(set(symbols.values())) == 4 and symbols["failed"] == "triangle-down", symbols
    # the PNG logged to MLflow: every trial on its axis, the last two without a score too (it ended at the last
    # scored trial: a walkthrough)
    from hsc_search.plots import best_so_far_figure

    png = best_so_far_figure([0.3, 0.2, None, None], ["completed", "stopped_early", "failed", "failed"], "max", "m")
    assert png.axes[0].get_xlim() == (0.5, 4.5), png.axes[0].get_xlim()


def test_the_spectrum_draws_the_tested_epoch():
    """The spectrum panel drew the first, middle and last epochs: a 300-epoch trial tested at epoch 60 did not
    show epoch 60, and on 4 epochs the middle one (3) hid under the last. Now first, tested, last."""
    from hsc_search import report

    rec = _record(12)
    rec.best.row.final = {"test/epoch": 5.0}
    names = [t.name for t in report.spectrum_figure(rec).data if t.type == "scatter"]
    assert names == ["epoch 1", "epoch 5 (tested)", "epoch 12"], names
    # each line its own dash, in the report and in the trial's SVG: one lying on another (the tested epoch's under
    # the last's, equal fixed weights) is still seen (a walkthrough saw only the one drawn last)
    import re

    from hsc_search import trial_plots

    dashes = [t.line.dash for t in report.spectrum_figure(rec).data if t.type == "scatter"]
    assert len(set(dashes)) == 3 and None not in dashes, dashes
    assert len({t.line.dash for t in report.weights_figure(rec).data}) == 2  # nce and rec
    history = {f"cca/rho_{k:02d}": [(e, 0.9 - 0.1 * k) for e in range(1, 13)] for k in range(4)}
    history["test/epoch"] = [(12, 5.0)]
    page = trial_plots.cca_spectrum_svg(history)
    first = page[:page.index("top canonical correlations")]  # the spectrum panel
    lines = re.findall(r'<polyline [^>]*?stroke="[^"]+" stroke-width="1.5"( stroke-dasharray="[^"]+")?/>', first)
    assert len(lines) == 3 and len(set(lines)) == 3, lines
    weights = trial_plots.loss_weights_svg({"weight/nce": [(1, 1.0), (2, 1.0)], "weight/rec": [(1, 1.0), (2, 1.0)]})
    assert len(set(re.findall(r'<polyline [^>]*?stroke-width="1.5"( stroke-dasharray="[^"]+")?/>', weights))) == 2
    rec.best.row.final = {}  # (no test metrics: an interrupted trial) the middle, as before
    assert [t.name for t in report.spectrum_figure(rec).data if t.type == "scatter"] == ["epoch 1", "epoch 7",
                                                                                            "epoch 12"]
    low, high = report.spectrum_figure(rec).layout.yaxis.range  # a correlation of 0 or 1 drawn whole, not half
    assert low < 0 and high > 1, (low, high)  # under the frame (a walkthrough)


def test_the_spectrum_says_when_it_is_a_random_projection_or_only_its_first_components():
    """With use_dcca false the chart read as the method's correlations (they even rose over epochs); a best trial
    that had not ended drew 3 of 16 components, read as cca_k 3 (a walkthrough). Both are said under it."""
    from hsc_search import report

    rec = _record(3)
    random, first = "these are a random projection", "Only the first 8 components are drawn"
    page = report.render(rec)
    assert "canonical correlations</h2>" in page and random not in page and first not in page
    rec.best.row.params["use_dcca"] = "False"  # searched (the ablation space)
    assert random in report.render(rec)
    del rec.best.row.params["use_dcca"]
    rec.space = {**SPACE, "fixed": {"use_dcca": False}}  # fixed by the space or --set
    assert random in report.render(rec)
    rec.space = None  # a search whose space was not logged: its set.* params say it (a review)
    rec.settings = {"set.use_dcca": "False"}
    assert random in report.render(rec)
    rec.space, rec.settings = {**SPACE, "fixed": {"loss_weighting": "fixed", "w_dcca": 0.0}}, {}  # on, weight 0
    assert "(w_dcca 0 with fixed loss weights)" in report.render(rec)
    rec.space, rec.spectrum_whole = SPACE, False
    page = report.render(rec)
    assert first in page and random not in page
    # the trial's cca_k known: the count said (16 components, 8 drawn), also where its file holds only those
    rec.best.row.params["effective.cca_k"] = "16"
    for whole in (False, True):
        rec.spectrum_whole = whole
        assert "Only the first 8 of its 16 components are drawn" in report.render(rec)
    rec.best.row.params["effective.cca_k"] = "8"
    assert "Only the first" not in report.render(rec)  # every component drawn


def test_fixed_weights_are_drawn_without_a_log_variance_panel():
    """A trial with fixed loss weights has no s: the trainer logs no logvar/* for it (a constant 0 beside learned
    trials' values read as a learned weight at rest), and its pictures have the weights' panel alone."""
    from hsc_search import report, trial_plots

    rec = _record(3)
    learned_svg = trial_plots.loss_weights_svg(rec.best_history)
    # one colour and one legend entry per loss across the two panels (each series had a colour of its own)
    fig = report.weights_figure(rec)
    by = {(t.xaxis, t.name): t for t in fig.data}
    assert sorted(by) == [("x", "nce"), ("x", "rec"), ("x2", "nce"), ("x2", "rec")], sorted(by)
    assert by["x", "nce"].line.color == by["x2", "nce"].line.color != by["x", "rec"].line.color
    assert [t.name for t in fig.data if t.showlegend is not False] == ["nce", "rec"]
    fixed = {"weight/nce": [(1, 1.0), (2, 1.0), (3, 1.0)], "weight/rec": [(1, 1.0), (2, 1.0), (3, 1.0)],
             "weight/dcca": [(1, 0.5), (2, 0.5), (3, 0.5)]}  # fmt: skip
    rec.best_history = fixed
    fixed_svg = trial_plots.loss_weights_svg(rec.best_history)
    assert "log-variance" in learned_svg and "log-variance" not in fixed_svg
    assert 'width="' + str(2 * trial_plots.W) + '"' in learned_svg and 'width="' + str(trial_plots.W) + '"' in fixed_svg
    # flat lines on top of each other (nce and rec at 1: one line, a legend of two): each label names its value
    assert "effective loss weight (fixed)" in fixed_svg and "effective loss weight (fixed)" not in learned_svg
    assert all(f'font-size="10">{label}</text>' in fixed_svg for label in ("dcca 0.5", "nce 1", "rec 1")), fixed_svg
    assert 'font-size="10">nce</text>' in learned_svg  # learned weights change: no value to name
    fig = report.weights_figure(rec)
    assert [a.text for a in fig.layout.annotations] == ["effective loss weight (fixed)"]
    assert {t.name for t in fig.data} == {"nce", "rec", "dcca"}


# the page as rendered: nothing wider than the window, titles clear of plotly's toolbar (modebar), no 'None' tick
LAYOUT_JS = """
const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
const overlap = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
const clash = [];
for (const p of plots) {
  const bar = p.querySelector('.modebar');
  if (!bar) { clash.push('no modebar'); continue; }
  const r = bar.getBoundingClientRect();
  for (const t of p.querySelectorAll('.g-gtitle text, .annotation-text-g text'))
    if (overlap(r, t.getBoundingClientRect())) clash.push(t.textContent);
}
const par = plots.find(p => (p.layout.title.text || '').startsWith('parallel coordinates'));
return {scroll: document.documentElement.scrollWidth, width: window.innerWidth, clash: clash,
        plots: plots.length, parTicks: par ? Array.from(par.querySelectorAll('.annotation-text-g text'),
                                                       t => t.textContent) : null};
"""


# the parallel coordinates' tick labels in the window, scrolled into view: each one's text and box
PAR_LABELS_JS = """
const par = Array.from(document.querySelectorAll('.js-plotly-plot')).find(
  p => (p.layout.title.text || '').startsWith('parallel coordinates'));
par.scrollIntoView();
return Array.from(par.querySelectorAll('.annotation'), a => {
  const r = a.querySelector('rect.bg').getBoundingClientRect();
  return {text: a.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom};
}).filter(b => b.bottom <= window.innerHeight && b.top >= 0);
"""


def check_report_layout(driver) -> dict:
    got = driver.execute_script(LAYOUT_JS)
    assert got["scroll"] <= got["width"], got  # the trials table scrolls in its own box, not the page
    assert got["clash"] == [], got  # a title under the modebar
    assert got["parTicks"] and "None" not in got["parTicks"], got
    return got


@pytest.mark.skipif(browser.missing() is not None and os.environ.get("HSC_SKIP_BROWSER") == "1",
                    reason="HSC_SKIP_BROWSER=1 and no Chromium")  # fmt: skip
def test_report_page_layout_in_a_real_browser(tmp_path):
    assert browser.missing() is None, browser.missing()
    from hsc_search import report

    path = tmp_path / "report.html"
    path.write_text(report.render(_record()))
    with browser.chromium() as d:
        d.set_window_size(1300, 1000)
        d.get(path.as_uri())
        n = browser.wait_for(d, "document.querySelectorAll('.js-plotly-plot .main-svg').length", 30, "the plots")
        assert n >= 5 and browser.script_errors(d) == []
        got = check_report_layout(d)
        assert "not searched" in got["parTicks"], got
        # the parallel coordinates' tick labels as pixels: no trial's blue line through one (the lines of the trials
        # at an axis' ends ran through its end labels, seen through their 85% white: a walkthrough)
        from io import BytesIO

        from PIL import Image

        boxes = d.execute_script(PAR_LABELS_JS)
        shot = Image.open(BytesIO(d.get_screenshot_as_png())).convert("RGB")
        assert len(boxes) >= 10, boxes
        struck = {b["text"]: n for b in boxes if (n := sum(
            1 for x in range(int(b["left"]) + 1, int(b["right"]) - 1) for y in range(int(b["top"]) + 1, int(b["bottom"]) - 1)
            if (lambda r, g, bl: bl - r > 6)(*shot.getpixel((x, y)))))}  # fmt: skip
        assert not any(struck.values()), struck
        # the trials table scrolled to its far right: each row's # still in view at the box's left edge, on top
        # (scrolled to the parameters, no row said which trial it was; a walkthrough)
        seen = d.execute_script("""
const w = document.querySelector('.table-wrap'); const wide = w.scrollWidth > w.clientWidth + 100;
w.scrollIntoView(); w.scrollLeft = w.scrollWidth; const left = w.getBoundingClientRect().left;
return {wide: wide, scrolled: w.scrollLeft, cells: Array.from(w.querySelectorAll('tbody td:first-child'), c => {
  const r = c.getBoundingClientRect();
  return {text: c.textContent, left: r.left - left, top: document.elementFromPoint(r.left + r.width / 2,
          r.top + r.height / 2) === c};
})};""")  # fmt: skip
        assert seen["wide"] and seen["scrolled"] > 100, seen
        assert [c["text"] for c in seen["cells"]] == [str(i) for i in range(1, 7)], seen
        assert all(abs(c["left"]) <= 1 and c["top"] for c in seen["cells"]), seen
        # no legend on a plot area or a tick label, at any window width (the spectrum's lay on its lines, and up to
        # 1024 px on the heat map's tested epoch: a walkthrough; below 800 px the plots keep 760 and scroll)
        for width in (1300, 1024, 800):
            d.set_window_size(width, 1000)
            d.get(path.as_uri())
            browser.wait_for(d, "document.querySelectorAll('.js-plotly-plot .main-svg').length", 30, "the plots")
            covered = d.execute_script(LEGEND_OVER_JS)
            assert covered == [], (width, covered)
            # the text keeps a margin from the window's edge (at 800 px it touched the left edge: a walkthrough)
            left = d.execute_script("return Math.min(...Array.from(document.querySelectorAll('h1, h2, p'), "
                                    "e => e.getBoundingClientRect().left))")  # fmt: skip
            assert left >= 8, (width, left)
        # a narrow window (a phone, a split screen): each plot keeps a readable width and scrolls in its own box
        # (at 400 px the curves' x axis ran from -3, rung labels and subplot titles lay on each other)
        d.set_window_size(400, 900)
        d.get(path.as_uri())
        browser.wait_for(d, "document.querySelectorAll('.js-plotly-plot .main-svg').length", 30, "the plots")
        widths = d.execute_script("return Array.from(document.querySelectorAll('.js-plotly-plot'), "
                                  "p => p.getBoundingClientRect().width)")  # fmt: skip
        assert len(widths) >= 5 and min(widths) >= 760, widths
        got = d.execute_script(LAYOUT_JS)
        assert got["scroll"] <= got["width"], got
    # a 40-epoch ASHA search's rung labels, 1 to 32, at the plot's narrowest: none over another (they read "ASHA
    # rungASHA rung 4", then "ASHA r4ng 1" in MLflow's artifact pane; walkthroughs)
    rec = _record(40)
    rec.milestones = [1, 2, 4, 8, 16, 32]
    path.write_text(report.render(rec))
    with browser.chromium() as d:
        for width in (1300, 400):
            d.set_window_size(width, 900)
            d.get(path.as_uri())
            browser.wait_for(d, "document.querySelectorAll('.js-plotly-plot .main-svg').length", 30, "the plots")
            boxes = d.execute_script(RUNG_LABELS_JS)
            assert [b["text"] for b in boxes] == ["1", "2", "4", "8", "16", "32"], boxes
            clash = [(a["text"], b["text"]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                     if a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"]
                     and b["top"] < a["bottom"]]  # fmt: skip
            assert clash == [], (width, boxes)


LEGEND_OVER_JS = """
const hit = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1
  && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
const out = [];
document.querySelectorAll('.js-plotly-plot').forEach(p => {
  const legends = Array.from(p.querySelectorAll('g.legend rect.bg'), l => l.getBoundingClientRect());
  const areas = Array.from(p.querySelectorAll('.draglayer .nsewdrag'), a => ['plot area', a.getBoundingClientRect()]);
  const labels = Array.from(p.querySelectorAll('.xtick text, .ytick text, .g-xtitle, .g-ytitle'),
                            t => ['label ' + t.textContent, t.getBoundingClientRect()]);
  legends.forEach(l => areas.concat(labels).forEach(([what, r]) => {
    if (hit(l, r)) out.push((p.layout.title.text || '').slice(0, 50) + ': the legend covers a ' + what);
  }));
});
return out;
"""


RUNG_LABELS_JS = """
const p = Array.from(document.querySelectorAll('.js-plotly-plot')).find(
  p => (p.layout.title.text || '').includes('of every trial by epoch'));
return Array.from(p.querySelectorAll('.annotation'), a => {
  const r = a.getBoundingClientRect();
  return {text: a.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom};
});
"""


def test_a_trial_asha_stopped_says_why_in_the_table_and_on_its_cross():
    """A stopped trial's row said "stopped by ASHA" and no more (a walkthrough): its run's tag hsc.stopped_by
    (the rung, its value, the cut-off it missed) is the table's reason and the hover of its cross; a search made
    before the tag (none on any trial) keeps the table without the column."""
    from hsc_search import report

    rec = _record(3)
    assert "why ASHA stopped it" not in report.render(rec)
    cut = rec.trials[1].row
    cut.outcome, cut.stopped_by = "stopped_early", ("stopped by ASHA at epoch 1: val/map_avg 0.3300, below the cut-off "
                                                    "0.3400 for the top 1/2, set by the 2 trials that reached epoch 1 "
                                                    "before it")
    page = report.render(rec)
    assert "<th>why ASHA stopped it</th>" in page
    assert ('<td class="why">at epoch 1: val/map_avg 0.3300, below the cut-off 0.3400 for the top 1/2, set by the 2 '
            'trials that reached epoch 1 before it</td>') in page
    crosses = [t for t in report.curves_figure(rec).data if t.marker.symbol == "x"]
    assert len(crosses) == 1 and crosses[0].hovertemplate == (
        f"#2 {cut.name}<br>stopped by ASHA at epoch 1: val/map_avg 0.3300,<br>below the cut-off 0.3400 for the top 1/2, "
        "set by the 2 trials that reached epoch 1 before it<extra></extra>")
    rec.trials[2].row.outcome, rec.trials[2].row.error = "failed", "Traceback...\nNonFiniteLossError: loss is nan"
    page = report.render(rec)
    assert "<th>why it failed or was stopped</th>" in page and '<td class="why">NonFiniteLossError: loss is nan' in page


def test_a_fractional_rung_is_drawn_where_ray_judges_it():
    """Rung 2.5 (reduction factor 2.5) was drawn at epoch 2, where no trial was judged (the review)."""
    from hsc_search.search_record import _milestones

    settings = {"max_epochs": "9", "grace_period": "1", "reduction_factor": "2.5", "scheduler": "asha"}
    assert _milestones(None, "p", settings) == [1, 2.5, 6.25]  # Ray's 1 x 2.5^k below 9 (no artifact: settings)
    assert [str(m) for m in _milestones(None, "p", {**settings, "reduction_factor": "2"})] == ["1", "2", "4", "8"]


def test_importances_rank_the_trials_that_trained_all_their_epochs_when_enough_did():
    """The importances mixed ASHA's 1-epoch scores with full-length ones without a word (a walkthrough: lr 0.83
    over all 16 trials of mixed budgets, 0.15 over the 7 that completed). As Optuna ranks a pruned search: the
    completed trials, when 3 or more; else every scored trial, saying so."""
    from hsc_search import report

    rec = _record(3, n=6)
    names = lambda st: sorted(t.user_attrs["name"] for t in st.trials)  # noqa: E731
    study, which, basis = report.importance_basis(rec, report.optuna_study(rec))
    assert len(study.trials) == 6 and which == "6 trials" and basis == "the scored trials"
    for t in rec.trials[:2]:
        t.row.outcome = "stopped_early"
    rec.trials[2].row.outcome = "failed"
    study, which, basis = report.importance_basis(rec, report.optuna_study(rec))
    assert names(study) == sorted(t.row.name for t in rec.trials[3:]) and which == "3 completed trials", which
    assert basis == ("the 3 trials that trained all their epochs (the 2 trials stopped early or not ended are left "
                     "out, their scores being of fewer epochs; as Optuna ranks a pruned search: the survivors are the "
                     "better trials, so this tells what matters among good configurations)"), basis
    page = report.render(rec)
    assert "parameter importance for val/map_avg (fANOVA, 3 completed trials)" in page.replace("\\u002f", "/")
    assert html_escape(basis) in page
    rec.trials[3].row.outcome = "running"  # a live search: 2 completed, too few alone
    study, which, basis = report.importance_basis(rec, report.optuna_study(rec))
    assert len(study.trials) == 5 and which == "5 trials, 3 not completed", which
    assert basis.startswith("every scored trial, each at its best epoch: only 2 trained all their epochs"), basis
    assert "the scores of the 3 trials stopped early or not ended are of fewer epochs" in basis, basis
    was = [t.row.outcome for t in rec.trials]
    for t in rec.trials:  # none completed: said so ("only 0 trained all their epochs": a walkthrough)
        t.row.outcome = "stopped_early" if t.row.outcome != "failed" else "failed"
    _, _, basis = report.importance_basis(rec, report.optuna_study(rec))
    assert basis.startswith("every scored trial, each at its best epoch: none trained all its epochs, and"), basis
    assert basis.endswith("so this ranks what helps in the first epochs"), basis  # (not "partly": a review)
    for t, o in zip(rec.trials, was):
        t.row.outcome = o
    # FIFO stops no trial: its others were cut off or still run, and nothing of pruning is said (the review)
    rec.settings = {"scheduler": "fifo"}
    rec.trials[3].row.outcome = "completed"
    rec.trials[0].row.outcome = rec.trials[1].row.outcome = "unfinished"
    study, which, basis = report.importance_basis(rec, report.optuna_study(rec))
    assert which == "3 completed trials" and basis == ("the 3 trials that trained all their epochs (the 2 trials "
                                                       "not ended are left out, their scores being of fewer epochs)")
    rec.trials[1].row.outcome = "completed"
    assert "(the 1 trial not ended is left out," in report.importance_basis(rec, report.optuna_study(rec))[2]


def test_a_parameter_with_one_value_in_every_ranked_trial_gets_no_importance_bar():
    """A parameter every ranked trial had the same value of got a bar of 0.00, read as "does not matter", where the
    search had not varied it among them (a walkthrough: topk 5 in all three completed trials). It is named as not
    varied instead, in the report and in the parent run's chart (the same numbers)."""
    from hsc_search import report

    rec = _record(3, n=6)
    for t in rec.trials:
        t.row.params["topk"] = "5"
    computed: dict = {}
    page = report.render(rec, computed=computed).replace("\\u003cbr\\u003e", " ")  # (plotly's JSON of "<br>")
    assert "topk" not in computed["importances"] and "lr" in computed["importances"], computed["importances"]
    assert "not varied among these 6 trials: topk" in page and "not varied among these 6 trials: topk" in (
        computed["importance_title"].replace("\n", " "))
    for t in rec.trials:  # nothing every trial has varied: Optuna is not asked (it raised "zero total variance")
        t.row.params.update(lr="0.003", loss_weighting="learned", weight_lr="0.01")
    computed = {}
    report.render(rec, computed=computed)
    assert computed["importances"] == {} and "(not computed, 6 trials)" in computed["importance_title"]
    assert "not varied among these 6 trials: loss_weighting, lr, topk, weight_lr" in computed[
        "importance_title"].replace("\n", " ")  # fmt: skip
    rec = _record(3, n=6)
    for t in rec.trials:
        t.row.params["topk"] = "5"
    rec.trials[0].row.params["topk"] = "7"  # varied once: ranked again
    computed = {}
    report.render(rec, computed=computed)
    assert "topk" in computed["importances"] and "not varied" not in computed["importance_title"]


def test_best_so_far_by_epochs_takes_the_epochs_in_the_order_trained():
    """Epochs a trial sent to MLflow in one report share one timestamp; the "by epochs trained" panel sorted them
    by value after the time, so a batch's best epoch came last and each level was reached later than it was (a
    walkthrough: 0.5839 at 107 epochs, 97 in fact). Checked against a numpy running maximum (and minimum) over the
    epochs ordered by time, then trial, then epoch."""
    import numpy as np

    from hsc_search import report

    rec = _record(4, n=3)
    rng = np.random.default_rng(0)
    for i, t in enumerate(rec.trials):  # each trial reports its 4 epochs in two batches: epochs 1-2, then 3-4
        vals = rng.uniform(0.2, 0.6, size=4)
        t.curve = [(e, float(vals[e - 1]), 10_000 * i + 100 * ((e + 1) // 2)) for e in range(1, 5)]
        t.row.score = float(vals.max())
    rec.trials[0].curve[0] = (1, 0.9, rec.trials[0].curve[0][2])  # a batch's first epoch is the search's best
    rec.trials[0].row.score = 0.9
    rec.best = rec.trials[0]
    for mode, acc in (("max", np.maximum.accumulate), ("min", np.minimum.accumulate)):
        rec.mode = mode
        order = sorted((ts, i, e, v) for i, t in enumerate(rec.trials) for e, v, ts in t.curve)
        expected = acc(np.array([v for *_, v in order], dtype=np.float64))
        fig = report.best_so_far_figure(rec)
        panel, dots = [tr for tr in fig.data if tr.xaxis == "x2"]
        assert list(panel.x) == list(range(1, len(order) + 1))
        np.testing.assert_allclose(np.array(panel.y, dtype=np.float64), expected, rtol=0, atol=0)
        if mode == "max":  # the search's best, trained first, is reached at the first epoch
            assert panel.y[0] == 0.9, panel.y
        # a dot where each new best was reached (the last level, reached at the last epoch, was a 2-pixel stub on
        # the frame: a walkthrough), and the axis reaches half an epoch past both ends
        firsts = [n for n in range(1, len(expected) + 1) if n == 1 or expected[n - 1] != expected[n - 2]]
        assert list(dots.x) == firsts and list(dots.y) == [expected[n - 1] for n in firsts], (dots.x, firsts)
        assert list(fig.layout.xaxis2.range) == [0.5, len(order) + 0.5], fig.layout.xaxis2.range


def test_what_the_report_left_unsaid_or_unreadable_is_said_and_readable():
    """Five things a walkthrough found on real searches: one trial whose loss exploded (finite: not diverged)
    flattened every other trial to a line at 0; fANOVA's chart left out the conditional parameters without a
    word; values fixed with --set appeared nowhere; a fixed-weights trial's picture was flat lines on top of each
    other under a caption about learned log-variances; the rung labels of a 40-epoch search printed over each
    other; the report an interrupted driver writes as it ends did not say it was interrupted."""
    from hsc_search import report

    rec = _record(3)
    assert not report.log_scale(v for t in rec.trials for _, v, _ in t.curve)  # mAP in 0.3-0.4: linear
    # a loss search with one trial at 2.4e11 and the others at 2-20
    rec.metric, rec.mode = "loss/total", "min"
    for i, t in enumerate(rec.trials):
        t.curve = [(e, (2.4e11 if i == 2 else 2.0 + i) / e, ts) for e, _, ts in t.curve]
        t.row.score = min(v for _, v, _ in t.curve)
    rec.best = min(rec.trials, key=lambda t: t.row.score)
    curves, so_far = report.curves_figure(rec), report.best_so_far_figure(rec)
    assert curves.layout.yaxis.type == "log" and "log scale" in curves.layout.title.text
    assert so_far.layout.yaxis.type == "log" and so_far.layout.yaxis2.type == "log"
    par = report.parallel_figure(rec, report.optuna_study(rec))
    bar = next(t.marker for t in par.data if t.marker is not None and t.marker.showscale)
    assert bar.colorbar.title.text.startswith("log10 loss/total")
    assert math.isclose(bar.cmax, math.log10(8e10)) and math.isclose(bar.cmin, math.log10(2.0 / 3))
    # the page: unranked parameters named, --set values named, fixed weights said in words
    rec.settings = {"set.hidden_dim": "48", "set.lr": "0.003", "scheduler": "asha"}
    rec.best_history = {"weight/nce": [(1, 1.0), (2, 1.0)], "weight/rec": [(1, 0.5), (2, 0.5)]}
    computed: dict = {}
    page = report.render(rec, computed=computed)
    unranked = "not ranked (used by only some trials, which fANOVA cannot weigh): weight_lr"
    assert unranked in page and " ".join(computed["importance_title"].split("\n")[2:]) == unranked, computed
    assert computed["importance_title"].split("\n")[:2] == ["parameter importance for loss/total", "(fANOVA, 6 trials)"]
    assert "weight_lr" not in computed["importances"] and "lr" in computed["importances"]
    # a search before the tag hsc.set_from: where they were given is not known, and not said to be --set (a review)
    assert '<p class="meta">fixed for every trial: hidden_dim 48, lr 0.003</p>' in page
    rec.set_where = "--set"
    assert '<p class="meta">fixed for every trial (--set): hidden_dim 48, lr 0.003</p>' in report.render(rec)
    rec.set_where = "search.yaml: set"  # given by a config's set: (the parent's tag hsc.set_from), named so
    assert '<p class="meta">fixed for every trial (search.yaml: set): hidden_dim 48, lr 0.003</p>' in report.render(rec)
    assert '<p class="note">fixed (loss_weighting fixed): nce 1, rec 0.5</p>' in page and "log-variance" not in page
    assert "was interrupted" not in page
    page = report.render(rec, computed={"unfinished": "search made-up was interrupted: `hsc-search resume x`"})
    assert '<p class="note">search made-up was interrupted: `hsc-search resume x`; the report shows it' in page
    # a trial that failed before its first epoch has no point in any figure: said under the first
    gone = next(t for t in rec.trials if t is not rec.best)
    gone.curve, gone.row.outcome, gone.row.score = [], "failed", None
    assert ("Not drawn: 1 trial that ended before its first epoch (failed; the table below gives why).") in \
        report.render(rec)
    gone.row.outcome = "running"  # a live search's trial in its first epoch has not ended (the review)
    assert "Not drawn" not in report.render(rec)
    gone.row.outcome = "interrupted"  # it may have trained every epoch, its one report lost to a Ctrl-C: not
    # "ended before its first epoch" (a walkthrough)
    page = report.render(rec)
    said = html_escape("Not drawn: 1 trial with no epoch recorded when the search was interrupted (a trial reports "
                        "at ASHA's rungs, every --checkpoint-every-s and at its end: epochs since its last report were "
                        "not recorded, and `hsc-search resume` trains them again).")  # fmt: skip
    assert "ended before its first epoch" not in page and said in page, page[page.find("Not drawn"):][:600]
    # rungs 1, 2, 4, ..., 32: each number centred on its line, alternate heights; the axis title says what they are
    rec.milestones = [1, 2, 4, 8, 16, 32]
    rec.best.curve = [(e, 0.5 + e / 1000, 1000 * e) for e in range(1, 41)]  # (curves short of a rung end the rungs)
    fig = report.curves_figure(rec)
    notes = [a for a in fig.layout.annotations]
    assert [a.text for a in notes] == ["1", "2", "4", "8", "16", "32"] and {a.xanchor for a in notes} == {"center"}
    assert [a.y for a in notes] == [1, 0.94, 1, 0.94, 1, 0.94]
    assert fig.layout.xaxis.title.text == "epoch (dashed, numbered: ASHA's rungs)"


def test_a_search_with_nothing_scored_draws_no_empty_charts_and_one_value_gets_an_axis_around_it():
    """Every trial failed (or none has reported yet): the curves and best-so-far sections drew blank grids with axes
    from -1 to 4 (a walkthrough); they now say there is nothing to draw. A search of one trial of one epoch drew its
    mAP on an axis from about -0.7 to 1.1 (plotly's range for one value): now 10% around it."""
    from hsc_search import report

    rec = _record(3, n=2)
    for t in rec.trials:
        t.curve, t.row.score, t.row.outcome = [], None, "failed"
    rec.best = None
    assert report.curves_figure(rec) is None and report.best_so_far_figure(rec) is None
    page = report.render(rec)
    assert page.count("not enough trials with a score to draw this.") >= 4, page  # curves, best so far, and more
    one = _record(1, n=1)
    value = one.trials[0].curve[0][1]
    assert value == 0.31
    curves = report.curves_figure(one)
    assert np.allclose(curves.layout.yaxis.range, [value * 0.9, value * 1.1])
    best = report.best_so_far_figure(one)
    assert np.allclose(best.layout.yaxis.range, [value * 0.9, value * 1.1])
    assert np.allclose(best.layout.yaxis2.range, [value * 0.9, value * 1.1])
    assert report.one_value_range([0.0]) == {"range": [-0.1, 0.1]} and report.one_value_range([0.2, 0.3]) == {}
    assert report.curves_figure(_record(3)).layout.yaxis.range is None  # several values: plotly's own range


def test_curves_that_all_ended_alike_are_told_apart_by_colour():
    """A FIFO search's curves were all one blue (coloured by outcome, and every trial completed: a walkthrough);
    then each trial has its own colour and legend entry. Mixed outcomes keep the outcome's colour, one legend
    entry each, and a stopped trial's cross its curve's colour."""
    from hsc_search import report

    rec = _record(3, n=4)
    fig = report.curves_figure(rec)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert len({t.line.color for t in lines}) == 4, [t.line.color for t in lines]
    assert [t.name for t in lines] == [f"#{i} {t.row.name}" for i, t in enumerate(rec.trials, 1)]
    assert all(t.showlegend for t in lines) and fig.layout.legend.title.text == "trial (all completed)"
    rec.trials[3].curve, rec.trials[3].row.outcome = [], "failed"  # failed before its first epoch: not drawn
    assert report.curves_figure(rec).layout.legend.title.text == "trial (every one drawn completed)"
    rec = _record(3, n=4)
    rec.trials[0].row.outcome, rec.trials[0].row.stopped_by = "stopped_early", "ASHA at rung 1, below the median"
    fig = report.curves_figure(rec)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.line.color for t in lines] == [report.OUTCOME_COLORS["stopped_early"]] + \
        [report.OUTCOME_COLORS["completed"]] * 3  # fmt: skip
    assert [t.showlegend for t in lines] == [True, True, False, False]
    assert fig.layout.legend.title.text == "outcome"
    cross = next(t for t in fig.data if t.mode == "markers")
    assert cross.marker.color == report.OUTCOME_COLORS["stopped_early"] and cross.legendgroup == "stopped_early"


def test_the_trial_table_has_each_trials_test_map_where_one_reached_its_end():
    """Only the best trial's line said a test mAP (a walkthrough); the table has a column for it when some trial
    was tested (blank for the trials that were not), and none when no trial was."""
    from hsc_search import report

    rec = _record(3, n=3)
    assert "<th>test mAP</th>" not in report.render(rec)
    rec.trials[0].row.final = {"test/map_avg": 0.51234, "test/epoch": 3.0}
    rec.trials[2].row.final = {"test/map_avg": 0.4}
    page = report.render(rec)
    heads = re.findall(r"<th>(.*?)</th>", page)
    assert heads[heads.index("val/map_avg (best)") + 1] == "test mAP"
    rows = re.findall(r"<tr(?: class=\"best\")?>(.*?)</tr>", page.split("<tbody>", 1)[1])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row)[heads.index("test mAP")] for row in rows]
    assert cells == ["0.5123", "", "0.4000"], cells
