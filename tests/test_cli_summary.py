"""The summary a search prints at its end (`cli._report`), from a search's outcome."""

from __future__ import annotations

import pytest

from hsc_search.cli import _report
from hsc_search.driver import SearchOutcome
from hsc_search.export import TrialRow


def test_a_search_cut_off_before_any_trial_reported(capsys):
    """Trials had started (and are started again by resume): the summary says none reported, not that there were
    none."""
    _report(SearchOutcome("/runs/s", None, [], None, None, True, []), None, "synthetic:ave")
    out = capsys.readouterr().out
    assert "\ntrials: none reported an epoch yet\ninterrupted: `" in out and "resume /runs/s` continues it\n" in out
    assert "no trial produced a score" not in out  # (it read as a failure after the Ctrl-C: a walkthrough)
    _report(SearchOutcome("/runs/s", None, [], None, None, False, []), None, "synthetic:ave")
    out = capsys.readouterr().out
    assert "\ntrials: none\n" in out and "\nno trial produced a score\n" in out
    row = TrialRow("r1", "t1", "train_trial_t1", "completed", "FINISHED", 4, 3.0, 0.36554, params={"lr": "0.001"})
    cut = TrialRow("r2", "t2", "train_trial_t2", "interrupted", "KILLED", 2, 1.0, 0.2, params={"lr": "0.002"})
    _report(SearchOutcome("/runs/s", None, [row, cut], row, None, True, [], num_samples=4), None, "synthetic:ave")
    out = capsys.readouterr().out
    assert "\ntrials: 1 completed, 1 interrupted, 2 not started\ninterrupted: `" in out, out
    assert "\nbest trial so far: train_trial_t1 (completed, 4 epochs)" in out and "\nfolder:      /runs/s\n" in out, out
    # without MLflow a cut-off trial's outcome comes from Ray ("unfinished"): the same word in the summary
    ray_cut = TrialRow(None, "t3", "train_trial_t3", "unfinished", "RUNNING", 2, 1.0, 0.2, params={"lr": "0.003"})
    _report(SearchOutcome("/runs/s", None, [row, ray_cut], row, None, True, [], num_samples=2), None, "synthetic:ave")
    assert "\ntrials: 1 completed, 1 interrupted\ninterrupted: `" in capsys.readouterr().out
    _report(SearchOutcome("/runs/s", None, [ray_cut], ray_cut, None, True, [], num_samples=2), None, "synthetic:ave")
    assert "best trial so far: train_trial_t3 (interrupted, 2 epochs)" in capsys.readouterr().out


def test_paths_with_a_space_are_printed_quoted_as_a_shell_takes_them(capsys):
    """`folder:` (which `resume` takes), `best config:` and `report:` were printed bare: a path with a space broke
    when pasted (a walkthrough); safe paths stay as they are (shlex.quote)."""
    import shlex
    from pathlib import Path

    row = TrialRow("r1", "t1", "train_trial_t1", "completed", "FINISHED", 4, 3.0, 0.36554, params={"lr": "0.001"})
    folder = "/my data ü/ray_results/sp ü"
    _report(SearchOutcome(folder, None, [row], row, Path(folder) / "best_config.yaml", False, [],
                          report_path=Path(folder) / "report.html"), None, "synthetic:ave")  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert f"folder:      '{folder}'" in lines, lines
    assert f"best config: '{folder}/best_config.yaml'" in lines, lines
    assert any(ln.startswith(f"report:      '{folder}/report.html'  (also in MLflow") for ln in lines), lines
    assert shlex.split(lines[-1].split(":", 1)[1]) == [folder]


def test_the_best_trial_line_shows_the_searched_values_then_what_the_data_resolved(capsys):
    row = TrialRow("r1", "t1", "train_trial_t1", "completed", "FINISHED", 4, 3.0, 0.36554,
                   params={"lr": "0.001", "effective.cca_dim": "8", "tau": "0.3", "effective.batch_size": "64"})
    _report(SearchOutcome("/runs/s", None, [row], row, None, False, []), None, "synthetic:ave")
    out = capsys.readouterr().out
    assert ("best trial: train_trial_t1 (completed, 4 epochs) score 0.3655  lr=0.001, tau=0.3  (resolved on this "
            "data: batch_size=64, cca_dim=8)\n") in out, out
    assert "\ntrials: 1 completed\n" in out


def test_a_trial_asha_stopped_is_said_as_the_report_says_it(capsys):
    """The console said `stopped_early` (the MLflow tag's value) where the report says "stopped by ASHA"."""
    done = TrialRow("r1", "t1", "train_trial_t1", "completed", "FINISHED", 4, 3.0, 0.3, params={"lr": "0.001"})
    cut = [TrialRow(f"r{i}", f"t{i}", f"train_trial_t{i}", "stopped_early", "FINISHED", 1, 1.0, 0.5 - i / 10,
                    params={"lr": "0.002"}) for i in (2, 3)]  # fmt: skip
    _report(SearchOutcome("/runs/s", None, [done, *cut], cut[0], None, False, []), None, "synthetic:ave")
    out = capsys.readouterr().out
    assert "\ntrials: 1 completed, 2 stopped by ASHA\n" in out, out
    assert "best trial: train_trial_t2 (stopped by ASHA, 1 epoch) score 0.3000" in out, out
    assert "stopped_early" not in out, out


def test_another_tools_name_for_a_run_flag_is_answered_with_ours():
    """`run --trials 4` (Optuna's n_trials) was answered "No such option: --trials (Possible options: --metric)"."""
    from typer.testing import CliRunner

    from hsc_search.cli import app

    for given, ours in (("--trials", "--num-samples"), ("--n-trials", "--num-samples"), ("--epochs", "--max-epochs")):
        result = CliRunner().invoke(app, ["run", given, "4"])
        assert result.exit_code == 2 and f"No such option: {given} (Possible options: {ours})" in result.output, \
            result.output
    result = CliRunner().invoke(app, ["run", "--num-sample", "4"])  # click's own guess stays where it is right
    assert result.exit_code == 2 and "--num-samples" in result.output, result.output


def test_resume_given_a_run_flag_says_it_keeps_the_search_s_settings_and_what_to_do_instead():
    """`resume F --num-samples 20` got click's bare "No such option" (a walkthrough): resume keeps the settings
    the search started with; more trials are a warm-started search. A flag of neither command stays click's."""
    from typer.testing import CliRunner

    from hsc_search.cli import app

    for args, flag, folder in ((["resume", "ray_results/a", "--num-samples", "8"], "--num-samples", "ray_results/a"),
                               (["resume", "--trials", "8", "my dir"], "--num-samples", "'my dir'"),
                               (["resume", "--data", "d.h5", "--max-epochs=3", "f"], "--max-epochs", "f"),
                               (["resume", "--no-mlflow"], "--no-mlflow", "FOLDER")):  # fmt: skip
        result = CliRunner().invoke(app, args)
        out = " ".join(result.output.split())
        assert result.exit_code == 2, result.output
        assert "resume continues a search with the settings it started with" in out, out
        assert f"run --warm-start {folder}` with {flag} and the flags it started with" in out, out
    result = CliRunner().invoke(app, ["resume", "f", "--bogus"])
    assert result.exit_code == 2 and "No such option: --bogus" in result.output, result.output
    assert "warm-start" not in result.output, result.output


def test_a_one_valued_flag_given_twice_is_said():
    """A second --warm-start replaced the first without a word (the first search's trials were dropped: a
    walkthrough), as any one-valued flag did (click takes the last). Said in a note (not refused: flags appended to
    change a command take the last, as in most tools); --set may repeat."""
    from typer.testing import CliRunner

    from hsc_search.cli import app

    for args, said in ((["run", "--warm-start", "a", "--warm-start=b"], "--warm-start given twice (a, b): the last, b,"),
                       (["run", "--seed", "1", "--no-mlflow", "--seed", "2", "--seed", "3"], "--seed given 3 times (1, 2, 3)"),
                       (["resume", "f", "--data", "x.h5", "--data", "y.h5"], "--data given twice (x.h5, y.h5)"),
                       (["run", "--name=", "--name=b"], "--name given twice ('', b)")):  # fmt: skip
        stop = ["--max-epochs", "0"] if args[0] == "run" else []  # (stopped by a mistake: the note comes first)
        result = CliRunner().invoke(app, [*args, *stop])
        assert result.exit_code == 2 and f"note: {said}" in " ".join(result.output.split()), result.output
    result = CliRunner().invoke(app, ["run", "--set", "lr=1", "--set", "lr=2", "--num-samples", "x"])
    assert result.exit_code == 2 and "given twice" not in result.output and "--num-samples" in result.output, \
        result.output  # fmt: skip


def test_the_program_s_own_warnings_say_warning():
    """Our modules' warnings printed bare among the search's lines ("cannot record the local Ray instance in ...":
    a walkthrough): `hsc-search` prefixes them as its other lines are (`error:`, `note:`), once each."""
    import subprocess
    import sys

    code = ("import logging, sys\n"
            "from hsc_search import cli\n"
            "@cli.app.command('warn')\n"
            "def warn():\n"
            "    logging.getLogger('hsc_search.local_ray').warning('cannot record the local Ray instance in %s', 'x')\n"
            "    logging.getLogger('hsc_search.writer').error('mlflow: finish of trial t1 failed')\n"
            "    logging.getLogger('hsc_search.writer').info('not shown')\n"
            "sys.argv = ['hsc-search', 'warn']\n"
            "cli.main()\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["warning: cannot record the local Ray instance in x",
                                        "error: mlflow: finish of trial t1 failed"], proc.stderr  # fmt: skip


def test_trials_are_in_the_order_ray_counted_them_where_every_run_has_its_number():
    """MLflow's start times put the enqueued trainer default second when two trials started together (a
    walkthrough); Ray's count (tag hsc.trial_number) orders them as the searcher proposed them. A search with a run
    lacking it (from before the tag, or resumed across it) keeps the start times' order."""
    from hsc_search.export import start_order

    rows = [TrialRow(f"r{i}", f"t{i}", f"n{i}", "completed", "FINISHED", 1, 1.0, 0.5, start_time=1000 + t, number=n)
            for i, (t, n) in enumerate([(5, 1), (3, 2), (9, 3), (3, 4)])]  # fmt: skip
    assert [r.name for r in sorted(rows, key=start_order(rows))] == ["n0", "n1", "n2", "n3"]
    rows[2].number = None
    assert [r.name for r in sorted(rows, key=start_order(rows))] == ["n1", "n3", "n0", "n2"]


def test_a_search_whose_every_trial_failed_says_so_and_exits_1(capsys):
    import pytest
    import typer

    from hsc_search.cli import _exit_as

    rows = [TrialRow(f"r{i}", f"t{i}", f"train_trial_t{i}", "failed", "FAILED", 0, 1.0, None) for i in range(2)]
    outcome = SearchOutcome("/runs/s", "p1", rows, None, None, False, [])
    _report(outcome, None, "synthetic:ave")
    out = capsys.readouterr().out
    assert ("\ntrials: 2 failed\nno trial produced a score: all 2 trials failed (each one's reason is above and in "
            "its MLflow run's tag hsc.error)\n") in out, out
    with pytest.raises(typer.Exit) as e:
        _exit_as(outcome)
    assert e.value.exit_code == 1
    with pytest.raises(typer.Exit) as e:  # interrupted: 130 whatever the trials did
        _exit_as(SearchOutcome("/runs/s", "p1", rows, None, None, True, []))
    assert e.value.exit_code == 130
    best = TrialRow("r3", "t3", "train_trial_t3", "completed", "FINISHED", 2, 1.0, 0.5)
    _exit_as(SearchOutcome("/runs/s", "p1", [*rows, best], best, None, False, []))  # a score: exit 0


def test_values_are_shown_to_four_significant_digits_and_kept_exact_elsewhere():
    from hsc_search.runs import shown

    assert [shown(v) for v in ("0.0077035818606941", "2.0", "1e-05", "0.3", "128", "learned", "inf", "nan", "-0.5",
                               "synthetic:ave?n_train=8", "quick.yaml", "3.14159e+30", "", "0.99995", "100000.0",
                               "12345.6", 0.25, 5.0)] == [
        "0.007704", "2", "1e-05", "0.3", "128", "learned", "inf", "nan", "-0.5", "synthetic:ave?n_train=8",
        "quick.yaml", "3.142e+30", "", "0.99995", "100000", "12345.6", "0.25", "5"]  # fmt: skip


def test_the_reports_reason_of_a_failure_is_the_exceptions_line():
    """A Ray-side failure's tag holds the end of Ray's error file (a traceback): the report shows its last line."""
    from hsc_search.report import _reason

    tail = "ray::ImplicitFunc.train()\n  File \"x.py\", line 3, in f\n    g()\n\nRuntimeError: CUDA out of memory\n\n"
    assert _reason(tail) == "RuntimeError: CUDA out of memory"
    assert _reason("NonFiniteLossError: non-finite loss at step 1") == "NonFiniteLossError: non-finite loss at step 1"
    assert _reason(None) == "" and _reason("") == ""


def test_a_ctrl_c_as_the_search_ends_says_what_was_written(tmp_path, capsys):
    """The line named the best config as not written when it was (the Ctrl-C came after it), and a search that
    had finished everything as needing a resume."""
    import json

    import pytest
    import typer

    from hsc_search.cli import _interrupted_again

    (tmp_path / "hsc_search.json").write_text(json.dumps({"settings": {}}))
    (tmp_path / "best_config.yaml").write_text("lr: 0.001\n")
    with pytest.raises(typer.Exit) as e:
        _interrupted_again(tmp_path)
    assert e.value.exit_code == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted while the search was ending (best_config.yaml written, not all of the rest); `")
    assert f"resume {tmp_path}` finishes the search and writes them" in err
    from hsc_search import driver  # a second Ctrl-C while a stopped search (not all trials ended) wrote its records:
    # it read as if every trial had ended (walkthrough II)
    driver.STOPPED[0] = True
    try:
        with pytest.raises(typer.Exit):
            _interrupted_again(tmp_path)
    finally:
        driver.STOPPED[0] = False
    err = capsys.readouterr().err
    assert err.startswith("interrupted while the stopped search was writing its records (best_config.yaml "
                          "written, not all of the rest); `") and err.strip().endswith(
        f"resume {tmp_path}` continues its trials and writes them"), err
    (tmp_path / "hsc_search.json").write_text(json.dumps({"settings": {}, "finished_at": "2026-12-03 13:00:00 UTC"}))
    with pytest.raises(typer.Exit):
        _interrupted_again(tmp_path)
    assert capsys.readouterr().err.strip() == ("interrupted as the search ended; it had finished and written everything "
                                               f"(best config: {tmp_path / 'best_config.yaml'})")  # fmt: skip


def test_every_command_takes_h_for_help():
    """`-h` as well as `--help` on every command (it worked on `train` only: the trainer's own argparse)."""
    import typer.main
    from typer.testing import CliRunner

    from hsc_search.cli import app

    names = sorted(typer.main.get_command(app).commands)
    assert {"run", "resume", "export-best", "report", "replay", "import-runs", "synth-data", "train"} <= set(names)
    for args in (["-h"], *([name, "-h"] for name in names)):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0 and "sage:" in result.output, (args, result.output[-500:])


def test_the_program_alone_lists_its_commands_and_errors_honour_no_color():
    """`hsc-search` alone said "Error: Missing command."; an error line was red in a terminal with NO_COLOR set
    (no-color.org) (a walkthrough of the console)."""
    import os
    import pty
    import subprocess
    import sys
    from pathlib import Path

    program = str(Path(sys.executable).parent / "hsc-search")
    alone = subprocess.run([program], capture_output=True, text=True, timeout=120)
    assert alone.returncode == 2 and "Commands:" in alone.stdout + alone.stderr, alone.stdout + alone.stderr
    assert "export-best" in alone.stdout + alone.stderr and "Missing command" not in alone.stdout + alone.stderr

    def in_a_terminal(env: dict) -> bytes:
        main, sub = pty.openpty()
        proc = subprocess.Popen([program, "run", "--max-epochs", "0"], stdout=sub, stderr=sub, env=env)
        os.close(sub)
        out = b""
        try:
            while True:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the terminal's other end closed: the program ended
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            os.close(main)
            assert proc.wait(timeout=120) == 2
        return out

    env = {**{k: v for k, v in os.environ.items() if k != "NO_COLOR"}, "TERM": "xterm"}
    assert b"\x1b[31merror: --max-epochs must be >= 1, got 0" in in_a_terminal(env)  # red in a terminal
    plain = in_a_terminal({**env, "NO_COLOR": "1"})
    assert b"error: --max-epochs must be >= 1, got 0" in plain and b"\x1b[" not in plain, plain
    dumb = in_a_terminal({**env, "TERM": "dumb"})  # an editor's compile buffer showed the codes (a walkthrough)
    assert b"error: --max-epochs must be >= 1, got 0" in dumb and b"\x1b[" not in dumb, dumb


def test_the_resume_line_of_a_search_with_token_authentication_carries_it(capsys, monkeypatch):
    """A search on a cluster with token authentication runs with RAY_AUTH_MODE=token; its printed resume, pasted
    in a new shell without it, was refused by the cluster (a walkthrough): the line carries the variable, as the
    user gave it, not as ray.init left it (it sets token for a local instance of its own: the review)."""
    import hsc_search

    monkeypatch.setattr(hsc_search, "USER_RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    _report(SearchOutcome("/runs/s", None, [], None, None, True, []), None, "synthetic:ave")
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("interrupted: "))
    assert line.startswith("interrupted: `RAY_AUTH_MODE=token ") and line.endswith(" resume /runs/s` continues it")
    monkeypatch.setattr(hsc_search, "USER_RAY_AUTH_MODE", None)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what ray.init of a local instance leaves in the environment
    _report(SearchOutcome("/runs/s", None, [], None, None, True, []), None, "synthetic:ave")
    assert "RAY_AUTH_MODE" not in capsys.readouterr().out
    # `disabled`, the pre-flight's way out for a HOME where Ray cannot keep its token: pasted without it, the
    # resume was refused by the same pre-flight (the review)
    monkeypatch.setattr(hsc_search, "USER_RAY_AUTH_MODE", "disabled")
    _report(SearchOutcome("/runs/s", None, [], None, None, True, []), None, "synthetic:ave")
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("interrupted: "))
    assert line.startswith("interrupted: `RAY_AUTH_MODE=disabled "), line


def test_a_min_mode_searchs_parent_run_holds_its_best_trials_score_not_its_last_epoch(tmp_path):
    """The search's end (`driver._finish_parent`) of a `--metric loss/total --mode min` search, on a hand-made
    sqlite store: the parent run's `best/min/loss/total` is the best trial's score (its lowest epoch, which
    best_config.yaml retrains and selects), not the loss of that trial's last epoch; the MLflow UI and `report`
    show the parent's number as the search's result."""
    from mlflow.tracking import MlflowClient

    from hsc_search.driver import _finish_parent
    from hsc_search.settings import SearchSettings
    from trainer import TrainConfig

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("hsc-search", artifact_location=str(tmp_path / "mlruns"))
    parent = client.create_run(exp, run_name="loss", tags={"hsc.kind": "search"}).info.run_id
    for k, v in {"metric": "loss/total", "mode": "min", "max_epochs": "3"}.items():
        client.log_param(parent, k, v)
    trials = {"a": [0.9, 0.3, 0.5], "b": [0.8, 0.45, 0.4]}  # a: best 0.3 at epoch 2, last 0.5; b: 0.4 at its end
    for i, (tid, losses) in enumerate(trials.items()):
        run = client.create_run(exp, run_name=f"trial_{tid}", start_time=1_000 + i, tags={
            "mlflow.parentRunId": parent, "hsc.kind": "trial", "hsc.trial_id": tid,
            "hsc.outcome": "completed"}).info.run_id  # fmt: skip
        for e, v in enumerate(losses, 1):
            client.log_metric(run, "loss/total", v, step=e)
        client.log_metric(run, "epoch", len(losses))
        client.log_metric(run, "best/min/loss/total", min(losses))  # as the tracker logs a trial's end
        client.log_text(run, TrainConfig.from_dict({"lr": 0.001 * (i + 1)}).to_yaml(), "config.yaml")
        client.set_terminated(run)
    settings = SearchSettings(metric="loss/total", mode="min", name="loss", max_epochs=3)
    said = []
    outcome = _finish_parent(client, settings, str(tmp_path / "loss"), parent, exp, False, [], said.append)
    assert outcome.best is not None and outcome.best.trial_id == "a"
    got = client.get_run(parent)
    assert got.data.metrics["best/min/loss/total"] == pytest.approx(0.3), got.data.metrics  # not a's last 0.5
    assert got.data.tags["hsc.best_run_id"] == outcome.best.run_id


def test_a_best_trial_whose_config_never_reached_mlflow_is_a_warning_not_a_traceback(tmp_path):
    """A trial's config.yaml upload refused for good (its store full): the search's end read it for the best
    config and ended in a 132-line traceback, and so did every resume (the review). Now a warning; the rest of the
    end (the best run's tag and score, the outcomes) is done."""
    from mlflow.tracking import MlflowClient

    from hsc_search.driver import _finish_parent
    from hsc_search.settings import SearchSettings

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("hsc-search", artifact_location=str(tmp_path / "mlruns"))
    parent = client.create_run(exp, run_name="s", tags={"hsc.kind": "search"}).info.run_id
    run = client.create_run(exp, run_name="trial_a", tags={"mlflow.parentRunId": parent, "hsc.kind": "trial",
                                                          "hsc.trial_id": "a", "hsc.outcome": "completed"}).info.run_id
    for e, v in enumerate([0.2, 0.4], 1):
        client.log_metric(run, "val/map_avg", v, step=e)
    client.log_metric(run, "epoch", 2)
    client.log_metric(run, "best/max/val/map_avg", 0.4)
    client.set_terminated(run)  # no config.yaml
    said: list[str] = []
    outcome = _finish_parent(client, SearchSettings(name="s", max_epochs=2), str(tmp_path / "s"), parent, exp,
                             False, [], said.append)  # fmt: skip
    assert outcome.best is not None and outcome.best_config_path is None
    assert any(m.startswith("warning: best config not written: ") and "config.yaml" in m for m in said), said
    got = client.get_run(parent)
    assert got.data.tags["hsc.best_run_id"] == run and got.data.metrics["best/max/val/map_avg"] == 0.4


def test_the_summary_csv_reads_back_typed_as_its_parquet(tmp_path):
    """pyarrow wrote a whole float as `1`: a float param whose values were all whole (w_rec 1.0 and 2.0) read back
    from trials.csv as int64 with pandas and pyarrow alike (a walkthrough); the parquet file had it right."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hsc_search.runs import typed_column, write_csv

    table = pa.table({"param.w_rec": typed_column(["1.0", "2.0", None]), "param.topk": typed_column(["5", "3", "4"]),
                      "param.lr": typed_column(["0.0005", "1e-05", "0.1"]), "score": [0.5, float("nan"), None],
                      "param.use_rec": typed_column(["True", "False", "True"]), "outcome": ["a", "b", None],
                      "error": ['x, "y"', "two\nlines", None]})
    write_csv(table, tmp_path / "t.csv")
    pq.write_table(table, tmp_path / "t.parquet")
    back, truth = pd.read_csv(tmp_path / "t.csv"), pd.read_parquet(tmp_path / "t.parquet")
    assert dict(back.dtypes) == dict(truth.dtypes), (back.dtypes, truth.dtypes)
    assert back["param.w_rec"].tolist()[:2] == [1.0, 2.0] and back["param.lr"].tolist() == [0.0005, 1e-05, 0.1]
    assert back["score"].iloc[0] == 0.5 and back["score"].iloc[1:].isna().all()
    assert back["error"].tolist()[:2] == ['x, "y"', "two\nlines"] and back["param.use_rec"].tolist() == [True, False, True]
    # numbers bare, text quoted only where CSV needs it (pyarrow quoted every text value, the floats with them)
    text = (tmp_path / "t.csv").read_text()
    assert text.splitlines()[1] == '1.0,5,0.0005,0.5,true,a,"x, ""y"""', text
    import pyarrow.csv as pacsv

    assert pacsv.read_csv(tmp_path / "t.csv").schema.field("param.w_rec").type == pa.float64()
