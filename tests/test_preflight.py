"""The search's pre-flight: each check names the culprit, is bounded in time, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from hsc_search import preflight
from hsc_search.preflight import PreflightError
from trainer import TrainConfig


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]):
    """A local HTTP server on 127.0.0.1 answering with `handler`, for the test's body; yields its port."""
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_metric_must_be_reported_every_epoch():
    cfg = TrainConfig(use_rec=False).resolve(1000, 32, 48)
    preflight.check_metric("val/map_avg", cfg)
    preflight.check_metric("cca/rho_15", cfg)
    with pytest.raises(PreflightError, match="--metric loss/rec: not a metric"):
        preflight.check_metric("loss/rec", cfg)  # reconstruction is off in this config
    with pytest.raises(PreflightError, match="--metric cca/rho_16"):
        preflight.check_metric("cca/rho_16", cfg)  # cca_k 16: rho_00 .. rho_15
    with pytest.raises(PreflightError, match="test metrics are evaluated once"):
        preflight.check_metric("test/map_avg", cfg)
    # given in a config file: named so (it was blamed on --metric), with the metric meant (a walkthrough)
    with pytest.raises(PreflightError, match=r"^c\.yaml: metric val/mAP_avg: not a metric the trainer reports every "
                                             r"epoch \(did you mean val/map_avg\?\); expected one of "):
        preflight.check_metric("val/mAP_avg", cfg, "c.yaml: metric")
    with pytest.raises(PreflightError) as e:
        preflight.check_metric("loss/rec", cfg)
    assert "did you mean" not in str(e.value)  # off in this config: no other loss offered in its place


TINY_DATA = "synthetic:ave?n_train=180&n_val=60&n_test=60&dim_audio=12&dim_visual=16"  # 3 steps of 60


@pytest.mark.parametrize("overrides", [{}, {"loss_weighting": "fixed"}, {"loss_weighting": "learned_raw"},
                                       {"use_rec": False, "distill": "relational"}, {"cca_dim": 8, "cca_k": 3}])
def test_the_keys_said_reported_are_those_the_trainer_reports(overrides):
    """Against the trainer itself (its one epoch): a fixed-weights trial reports no logvar/<loss>, which the
    pre-flight had listed, so a search ranked by logvar/nce ended in Ray's traceback (a walkthrough)."""
    from trainer import load_data
    from trainer.fit import fit

    small_data = load_data(TINY_DATA)
    reports = []
    cfg = TrainConfig(epochs=1, batch_size=60, hidden_dim=32, embed_dim=16, proj_dim=16, **overrides)
    fit(cfg, small_data, on_epoch=reports.append)
    got = {k for k in reports[0].metrics if not k.startswith("test/")}
    assert set(preflight.reported_keys(reports[0].config)) == got, overrides


@pytest.mark.parametrize("space, metric, culprit, fix", [
    ("quick", "logvar/nce", "loss_weighting=fixed", {"loss_weighting": "learned"}),  # fixed weights: no s_i
    ("ablation", "loss/rec", "use_rec=False", {"use_rec": True}),
])  # fmt: skip
def test_a_metric_some_trials_of_the_space_do_not_report_is_refused(space, metric, culprit, fix):
    """Not only the first trial: every trial the space samples must report the metric (Ray ends the whole search
    at the first trial without it). The sentence names the value that takes it away and what to do; fixing that
    value (as --set does) makes the search acceptable."""
    from hsc_search.driver import SPACES_DIR
    from hsc_search.space import load_space

    dims = (1000, 32, 48)
    sp = load_space(SPACES_DIR / f"{space}.yaml")
    first, _ = sp.defaults()
    preflight.check_metric(metric, TrainConfig(**{**sp.fixed, **first}).resolve(*dims))  # the first trial: fine
    with pytest.raises(PreflightError) as e:
        preflight.check_metric_in_space(metric, sp, 2, dims, first)
    assert str(e.value) == (
        f"--metric {metric}: not reported by every trial of space {sp.source}: a trial with {culprit} reports no "
        f"{metric} (the search would end at the first such trial); rank by a metric every trial reports, such as "
        f"val/map_avg, or fix {culprit.split('=')[0]} with --set")  # fmt: skip
    fixed = load_space(SPACES_DIR / f"{space}.yaml", overrides=fix)
    preflight.check_metric_in_space(metric, fixed, 2, dims, fixed.defaults()[0])
    for ok in ("val/map_avg", "loss/total", "cca/rho_00"):
        preflight.check_metric_in_space(ok, sp, 2, dims, first)


def test_an_unreachable_tracking_server_is_named_within_the_bound():
    with socket.socket() as s:  # a port nothing listens on (bound, never accepting)
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(PreflightError, match=f"--tracking-uri {url}: cannot reach the MLflow tracking server"):
            preflight.check_tracking(url, timeout_s=2.0)
        assert time.monotonic() - t0 < 5.0


def test_a_server_that_is_not_mlflow_is_named(tmp_path):
    class NotMlflow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    with _serving(NotMlflow) as port:
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(PreflightError) as e:
            preflight.check_tracking(url, timeout_s=2.0)
        # what answers is not told to start (the second review): the URI is what to fix
        assert str(e.value) == (f"--tracking-uri {url}: {url}/health answered 404 Not Found; expected an MLflow "
                                "tracking server; fix the URI, or search with --no-mlflow"), str(e.value)
        from hsc_search.runs import StoreError, check_store_to_read  # export-best, report, replay: which setting

        with pytest.raises(StoreError) as e:
            check_store_to_read(url, timeout_s=2.0)
        assert str(e.value).endswith("expected an MLflow tracking server; fix --tracking-uri"), str(e.value)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", url)
            with pytest.raises(StoreError, match=r"answered 404 Not Found; expected an MLflow tracking server; fix "
                                                 r"\$MLFLOW_TRACKING_URI$"):  # fmt: skip
                check_store_to_read(None, timeout_s=2.0)

    # another web app with a health check of MLflow's form: its API's 404 (or 200) page is not MLflow's JSON; it
    # passed, and export-best and run ended in MLflow's traceback (a walkthrough: http.server with a file `health`)
    for api_status in (404, 200):
        class Healthy(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                health = self.path == "/health"
                self.send_response(200 if health else api_status)
                self.end_headers()
                self.wfile.write(b"OK" if health else b"<!DOCTYPE HTML><html>Error response</html>")

            def log_message(self, *args):
                pass

        with _serving(Healthy) as port:
            url = f"http://127.0.0.1:{port}"
            said = ("404 Not Found" if api_status == 404 else "a page that is not MLflow's answer")
            with pytest.raises(PreflightError) as e:
                preflight.check_tracking(url, timeout_s=2.0)
            assert str(e.value) == (f"--tracking-uri {url}: the server at {url} answers a health check, but not "
                                    f"MLflow's API ({said} at {url}/api/2.0/mlflow/experiments/get-by-name); expected "
                                    "an MLflow tracking server; fix the URI, or search with --no-mlflow"), str(e.value)
            with pytest.raises(StoreError, match=r"but not MLflow's API .*; fix --tracking-uri$"):
                check_store_to_read(url, timeout_s=2.0)


@contextlib.contextmanager
def _binary_port():
    """A TCP port on 127.0.0.1 that answers any connection with bytes that are not HTTP and hangs up, as a Ray
    head's GCS port does to an HTTP request; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    conn.sendall(b"\x00\x00\x18\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00@\x00\xfe\x00?\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=10)
        listener.close()


def test_a_port_that_answers_something_other_than_http_is_one_line_in_every_command(tmp_path, monkeypatch):
    """`--tracking-uri http://head:6379` (the Ray head's port for MLflow's): run, export-best and import-runs ended
    in a 183-line traceback (http.client.BadStatusLine, not an OSError), report wrote the port's bytes to the
    terminal (a walkthrough). Each says it in one line, exit 2."""
    from typer.testing import CliRunner

    from hsc_search.cli import app
    from hsc_search.runs import NOT_HTTP, StoreError, check_server

    monkeypatch.chdir(tmp_path)
    with _binary_port() as port:
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(StoreError) as e:
            check_server(url, timeout_s=3.0)
        assert str(e.value) == f"{url}/health {NOT_HTTP} (BadStatusLine); expected an MLflow tracking server", e.value
        with pytest.raises(PreflightError, match=re.escape(f"--tracking-uri {url}: {url}/health {NOT_HTTP}")):
            preflight.check_tracking(url, timeout_s=3.0)
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{tmp_path / 'src.db'}").search_experiments()  # an MLflow store to copy from
        for args in (["export-best", "--tracking-uri", url], ["report", "--tracking-uri", url],
                     ["import-runs", "--from", f"sqlite:///{tmp_path / 'src.db'}", "--to", url],
                     ["import-runs", "--from", url, "--to", f"sqlite:///{tmp_path / 'x.db'}"]):  # fmt: skip
            result = CliRunner().invoke(app, args)
            said = result.output.strip()
            assert result.exit_code == 2 and "Traceback" not in said and len(said.splitlines()) == 1, (args, said)
            assert "not HTTP" in said and said.isprintable(), (args, said)
            assert f"127.0.0.1:{port}" in said.split("answered something")[0], (args, said)  # what answered so
        # MLflow's own client against it (what a store that stops answering HTTP mid-way gives): the same words
        from hsc_search.runs import http_failure

        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with pytest.raises(Exception) as e:
            MlflowClient(url).search_experiments()
        assert http_failure(e.value) == f"{url}/api/2.0/mlflow/experiments/search {NOT_HTTP}", http_failure(e.value)


def test_a_tracking_uri_of_no_known_form_is_named_by_the_commands_that_read_one(monkeypatch):
    """export-best ended in MLflow's traceback, report and replay in MLflow's words cut short, for a mistyped
    scheme or a server's address without http:// (a walkthrough); `run` already said both."""
    from hsc_search.runs import StoreError, check_store_to_read

    with pytest.raises(StoreError) as e:
        check_store_to_read("htp://127.0.0.1:5731")
    assert str(e.value) == ("--tracking-uri htp://127.0.0.1:5731: unknown scheme 'htp'; expected sqlite:///mlflow.db, "
                            "a database URI (postgresql://...) or an http:// tracking server"), str(e.value)
    # the old postgres:// spelling (psql's and Heroku's, which SQLAlchemy no longer takes): the URI meant, by `run`
    # and the commands that read a store, its password not shown (it was "unknown scheme" alone: a walkthrough)
    from hsc_search.preflight import PreflightError, check_tracking

    meant = "(did you mean postgresql://ana:***@127.0.0.1:5432/mlflow?); expected sqlite:///mlflow.db"
    with pytest.raises(StoreError, match=re.escape(f"unknown scheme 'postgres' {meant}")):
        check_store_to_read("postgres://ana:s3cret@127.0.0.1:5432/mlflow")
    with pytest.raises(PreflightError, match=re.escape(f"unknown scheme 'postgres' {meant}")):
        check_tracking("postgres://ana:s3cret@127.0.0.1:5432/mlflow")
    with pytest.raises(PreflightError, match=re.escape("unknown scheme 'postgres+psycopg2' (did you mean "
                                                       "postgresql+psycopg2://ana:***@h/m?)")):  # fmt: skip
        check_tracking("postgres+psycopg2://ana:s3cret@h/m")
    # in capitals: the URI to write in one step (it was told to write postgres://, then that it is unknown)
    with pytest.raises(PreflightError, match=re.escape("lower case only; write it postgresql://ana:***@h/m")):
        check_tracking("Postgres://ana:s3cret@h/m")
    # a server's address mistyped: the URI meant, as `run` and import-runs say it (export-best and report called
    # `http:/host:port` MLflow's file store; a review), a password in it never shown, in any of them
    from hsc_search.preflight import PreflightError, check_tracking
    from hsc_search.transfer import TransferError, check_uri

    for typo, meant in (("127.0.0.1:5731", "http://127.0.0.1:5731"), ("http:/127.0.0.1:5731", "http://127.0.0.1:5731"),
                        ("http//127.0.0.1:5731/", "http://127.0.0.1:5731/"),
                        ("HTTPS:/ana:s3cret@teambox:5731", "https://ana:***@teambox:5731")):  # fmt: skip
        shown = typo.replace(":s3cret@", ":***@")
        with pytest.raises(StoreError) as e:
            check_store_to_read(typo)
        assert str(e.value) == (f"--tracking-uri {shown}: not a URI MLflow takes; did you mean {meant}? (expected "
                                "sqlite:///mlflow.db, a database URI (postgresql://...) or an http:// tracking "
                                "server)"), str(e.value)
        with pytest.raises(PreflightError) as p:
            check_tracking(typo)
        assert str(p.value) == str(e.value), (str(p.value), str(e.value))
        with pytest.raises(TransferError) as t:
            check_uri(typo, "to")
        assert str(t.value).startswith(f"--to '{shown}': expected a tracking URI") and str(t.value).endswith(
            f"; did you mean {meant}?"), str(t.value)
    for typo in ("http//ana:s3cret@teambox:5000", "https:/ana:s3cret@teambox/mlflow", "http:/ana:s3@cret@teambox:1",
                 "ana:s3 cret@teambox:5000"):  # (a space in it was printed: a review)
        for check in (check_store_to_read, check_tracking, lambda u: check_uri(u, "to")):  # the password never
            with pytest.raises((StoreError, PreflightError, TransferError)) as e:  # shown (a review: it was)
                check(typo)
            assert "s3cret" not in str(e.value) and "cret@" not in str(e.value) and "s3 " not in str(e.value) and \
                ":***@" in str(e.value), str(e.value)  # fmt: skip
    # a user and password before the host, without the scheme: the server meant, its password masked (no hint before)
    for check in (check_store_to_read, check_tracking):
        with pytest.raises((StoreError, PreflightError)) as e:
            check("ana:s3cret@teambox:5000")
        assert str(e.value).startswith("--tracking-uri ana:***@teambox:5000: not a URI MLflow takes; did you mean "
                                       "http://ana:***@teambox:5000? (expected"), str(e.value)
    # another store's scheme with a number is not a server called sqlite or postgresql (it was offered one)
    # (`run --tracking-uri sqlite:5000` makes a store named 5000 here, as it takes sqlite:x.db for sqlite:///x.db)
    for check, typo in ((check_store_to_read, "sqlite:5000"), (lambda u: check_uri(u, "to"), "sqlite:5000"),
                        (check_store_to_read, "postgresql:5432"), (lambda u: check_uri(u, "to"), "postgresql:5432")):
        with pytest.raises((StoreError, TransferError)) as e:
            check(typo)
        assert "did you mean" not in str(e.value) and "http://" not in str(e.value).split("expected")[0], str(e.value)
    with pytest.raises(PreflightError, match=r"^--tracking-uri postgresql:5432: not a URI MLflow takes; expected a "
                                             r"database URI such as postgresql://USER@HOST:PORT/DATABASE$"):
        check_tracking("postgresql:5432")  # (it said "MLflow 3.17 refuses file stores")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "localhost:5000")  # named as where it came from
    with pytest.raises(StoreError, match=r"^\$MLFLOW_TRACKING_URI localhost:5000: not a URI MLflow takes; did you "
                                         r"mean http://localhost:5000\?"):  # fmt: skip
        check_store_to_read(None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "teambox")  # no port: no guess
    with pytest.raises(StoreError, match=r"^\$MLFLOW_TRACKING_URI teambox: not a tracking URI; expected"):
        check_store_to_read(None)


def test_a_folder_given_as_a_sqlite_store_names_the_store_to_pass(tmp_path):
    """export-best and report given a search's folder (or its storage folder) as the store suggested
    <folder>/mlflow.db, which such a folder never holds (a review): a search's folder names the store its search
    logged to; another folder its mlflow.db only where there is one."""
    import json

    from hsc_search.runs import StoreError, check_store_to_read

    search = tmp_path / "ray_results" / "s"
    search.mkdir(parents=True)
    (search / "hsc_search.json").write_text(json.dumps({"settings": {"tracking_uri": "http://127.0.0.1:5000"}}))
    with pytest.raises(StoreError) as e:
        check_store_to_read(f"sqlite:///{search}")
    assert str(e.value) == (f"--tracking-uri sqlite:///{search}: {search} is a folder; expected the MLflow database "
                            "file, not a search's folder: that search logged to http://127.0.0.1:5000"), str(e.value)
    with pytest.raises(StoreError) as e:
        check_store_to_read(f"sqlite:///{search.parent}")
    assert str(e.value).endswith("expected the MLflow database file, e.g. sqlite:///mlflow.db (the file itself)")
    (tmp_path / "mlflow.db").write_bytes(b"")
    with pytest.raises(StoreError) as e:
        check_store_to_read(f"sqlite:///{tmp_path}")
    assert str(e.value).endswith(f"expected the MLflow database file, e.g. sqlite:///{tmp_path / 'mlflow.db'}")


def test_a_server_behind_basic_auth_is_reached_with_the_uris_user_and_password():
    """http://user:password@host:port (MLflow's client sends it as HTTP basic auth): urllib read 'user:pw@127.0.0.1'
    as the host, and every command said it could not reach a server MLflow reaches (a walkthrough)."""
    import base64

    seen = []

    class Guarded(http.server.BaseHTTPRequestHandler):  # an MLflow server behind a proxy with basic auth
        def do_GET(self):
            seen.append((self.path.split("?")[0], self.headers.get("Authorization")))
            ok = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"ana:s3 cret").decode()
            self.send_response(200 if ok else 401)
            self.end_headers()
            if ok and self.path == "/health":
                self.wfile.write(b"OK")
            elif ok:
                self.wfile.write(b'{"experiment": {}}')

        def log_message(self, *args):
            pass

    with _serving(Guarded) as port:
        preflight.check_tracking(f"http://ana:s3%20cret@127.0.0.1:{port}", timeout_s=5.0)
    auth = "Basic " + base64.b64encode(b"ana:s3 cret").decode()
    assert seen == [("/health", auth), ("/api/2.0/mlflow/experiments/get-by-name", auth)], seen


def test_sqlite_and_file_tracking_uris(tmp_path, monkeypatch):
    preflight.check_tracking(f"sqlite:///{tmp_path}/mlflow.db")  # an existing folder: fine, nothing created
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(PreflightError, match="the folder /no/such/dir does not exist"):
        preflight.check_tracking("sqlite:////no/such/dir/x.db")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PreflightError, match="the folder sub does not exist"):
        preflight.check_tracking("sqlite:///sub/x.db")
    (tmp_path / "feats.h5").write_bytes(b"")  # a file where the folder goes: said as such (a walkthrough)
    with pytest.raises(PreflightError, match=r"^--tracking-uri sqlite:///feats\.h5/m\.db: feats\.h5 is a file, not a "
                                             r"folder; expected the database's path in a folder, e\.g\. "
                                             r"sqlite:///mlflow\.db$"):
        preflight.check_tracking("sqlite:///feats.h5/m.db")
    with pytest.raises(PreflightError, match=r"^--tracking-uri sqlite:///feats\.h5/sub/m\.db: feats\.h5 is a file, "
                                             r"not a folder; expected"):  # deeper: it said "folder does not exist"
        preflight.check_tracking("sqlite:///feats.h5/sub/m.db")
    with pytest.raises(PreflightError, match="refuses file stores"):
        preflight.check_tracking("mlflow.db")
    with pytest.raises(PreflightError, match=r"^--tracking-uri https:teambox:5000/: not a URI MLflow takes; did you "
                                             r"mean https://teambox:5000/\? \(expected sqlite"):  # "file stores"
        preflight.check_tracking("https:teambox:5000/")


def test_a_sqlite_store_a_search_cannot_write_is_refused(tmp_path):
    """A read-only store (or a folder SQLite cannot write its journal in) passed the pre-flight, and the search
    failed on its first run after Ray had started, with a 579-line traceback."""
    import sqlite3

    from conftest import read_only

    ro = tmp_path / "ro"
    ro.mkdir()
    sqlite3.connect(ro / "m.db").execute("create table t (x)").connection.close()
    with read_only(ro / "m.db"):
        with pytest.raises(PreflightError, match=f"{re.escape(str(ro / 'm.db'))} cannot be written \\(read-only\\)"):
            preflight.check_tracking(f"sqlite:///{ro / 'm.db'}")
    with read_only(ro):  # the folder: SQLite writes its journal there
        with pytest.raises(PreflightError, match=f"the folder {re.escape(str(ro))} cannot be written"):
            preflight.check_tracking(f"sqlite:///{ro / 'new.db'}")
    preflight.check_tracking(f"sqlite:///{ro / 'm.db'}")  # writable again: fine


def test_a_sqlite_store_another_process_holds_locked_is_refused(tmp_path):
    """Another process in a write transaction on the store (a sqlite3 shell left open): MLflow waited 30 s, then
    failed with two tracebacks of 422 lines (a walkthrough). Refused in one line after the bound; a lock held
    briefly (as searches writing one store hold it) waits and passes."""
    import sqlite3
    import subprocess
    import sys

    db = tmp_path / "m.db"
    sqlite3.connect(db).execute("create table t (x)").connection.close()
    hold = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); c.execute('BEGIN EXCLUSIVE'); "
            "print('held', flush=True); time.sleep(float(sys.argv[2])); c.rollback()")  # fmt: skip
    for seconds, locked in ((60, True), (1, False)):
        holder = subprocess.Popen([sys.executable, "-c", hold, str(db), str(seconds)], stdout=subprocess.PIPE,
                                  text=True)  # fmt: skip
        try:
            assert holder.stdout.readline() == "held\n"
            t0 = time.monotonic()
            if locked:
                with pytest.raises(PreflightError, match=f"{re.escape(str(db))} is locked by another process for over "
                                   "2 s"):  # fmt: skip
                    preflight.check_tracking(f"sqlite:///{db}", timeout_s=2.0)
                assert time.monotonic() - t0 < 10
            else:
                preflight.check_tracking(f"sqlite:///{db}", timeout_s=5.0)  # waited for the lock's end
        finally:
            holder.kill()
            holder.wait(timeout=30)


def test_the_default_store_and_the_environments_are_checked_too(tmp_path, monkeypatch):
    """Without --tracking-uri MLflow opens $MLFLOW_TRACKING_URI, else ./mlflow.db: the pre-flight checked neither
    (a read-only working folder, or a mistyped URI in the environment, failed after Ray had started)."""
    from conftest import read_only

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.chdir(ro)
    preflight.check_tracking(None)  # writable: fine, nothing made
    assert list(ro.iterdir()) == []
    with read_only(ro):
        with pytest.raises(PreflightError, match=f"the default store \\(no --tracking-uri, in {re.escape(str(ro))}\\) "
                                                 f"sqlite:///mlflow.db: the folder {re.escape(str(ro))} cannot be written"):
            preflight.check_tracking(None)
    # a store elsewhere (--tracking-uri): a new experiment's artifacts go to MLflow's ./mlruns here; in a read-only
    # folder that failed after Ray had started and left a FAILED run, and the store's new experiment pointed there
    # for every later search (a walkthrough). Refused before the experiment is made; an existing one whose artifacts
    # are in a folder that cannot be written, the same
    from mlflow.tracking import MlflowClient

    from hsc_search.driver import _experiment_id

    (tmp_path / "rw").mkdir()
    client = MlflowClient(f"sqlite:///{tmp_path / 'rw' / 'm.db'}")  # (its ./mlruns: the folder it was opened in)
    old = client.create_experiment("old", artifact_location=str(tmp_path / "ro" / "kept"))
    with read_only(ro):
        with pytest.raises(PreflightError, match=f"^--experiment new: a new experiment 'new' keeps its artifacts in "
                                                 f"{re.escape(str(ro / 'mlruns'))} \\(MLflow's ./mlruns"):
            _experiment_id(client, "new", "val/map_avg", "max")
        with pytest.raises(PreflightError, match=f"^--experiment old: experiment 'old' keeps its artifacts in "
                                                 f"{re.escape(str(ro / 'kept'))}, which cannot be written"):
            _experiment_id(client, "old", "val/map_avg", "max")
    assert client.get_experiment_by_name("new") is None  # nothing made
    assert _experiment_id(client, "old", "val/map_avg", "max") == old  # writable again: taken
    # a file on the way (a team server's root naming a path of its own disk, here under /dev/null): writable by
    # os.access, and MLflow failed in a 214-line traceback as the search logged its inputs (a walkthrough)
    (tmp_path / "a_file").write_text("")
    for where in (tmp_path / "a_file" / "mlart" / "1", Path("/dev/null/mlart/1")):
        client.create_experiment(f"under {where.parts[-3]}", artifact_location=str(where))
        with pytest.raises(PreflightError, match=f"^--experiment under {where.parts[-3]}: experiment 'under "
                                                 f"{where.parts[-3]}' keeps its artifacts in {re.escape(str(where))}, "
                                                 "which cannot be written"):  # fmt: skip
            _experiment_id(client, f"under {where.parts[-3]}", "val/map_avg", "max")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////no/such/dir/x.db")
    with pytest.raises(PreflightError, match="^\\$MLFLOW_TRACKING_URI sqlite:////no/such/dir/x.db: the folder /no/such/dir "
                                             "does not exist"):
        preflight.check_tracking(None)
    with pytest.raises(PreflightError, match="^--tracking-uri sqlite:////no/other/x.db: the folder"):
        preflight.check_tracking("sqlite:////no/other/x.db")  # the flag wins over the environment, as in MLflow
    with pytest.raises(PreflightError, match="^--tracking-uri SQLITE:///up.db: MLflow reads a URI's scheme in lower "
                                             "case only; write it sqlite:///up.db$"):  # (failed after Ray started)
        preflight.check_tracking("SQLITE:///up.db")
    with socket.socket() as sock:  # a port nothing answers on (bound, never accepting)
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{sock.getsockname()[1]}")
        with pytest.raises(PreflightError, match="^\\$MLFLOW_TRACKING_URI http://user:\\*\\*\\*@127.0.0.1") as e:
            preflight.check_tracking(None, timeout_s=1.0)
    assert "secret" not in str(e.value), e.value


def test_storage_is_probed_and_nothing_is_left_behind(tmp_path):
    exp = tmp_path / "a" / "b" / "search"
    preflight.check_storage(str(exp))
    assert list(tmp_path.iterdir()) == []  # the folders the probe made are gone again
    (tmp_path / "file").write_text("x")
    with pytest.raises(PreflightError, match="--storage: cannot write the search folder .*file/search"):
        preflight.check_storage(str(tmp_path / "file" / "search"))


def test_resources_name_what_was_asked_and_what_is_there(tmp_path, monkeypatch):
    have = preflight.local_resources()
    preflight.check_local_resources(1, 0)
    with pytest.raises(PreflightError) as info:
        preflight.check_local_resources(have["CPU"] + 1, 0)
    assert f"asked for {have['CPU'] + 1:g} CPU per trial" in str(info.value)
    assert f"this machine: {have['CPU']:g} CPU" in str(info.value)

    nodes = [("node 10.0.0.1", {"CPU": 8.0}), ("node 10.0.0.2", {"CPU": 4.0})]
    with pytest.raises(PreflightError) as info:
        preflight._check_fits(1, 1, nodes, launchable=[])
    msg = str(info.value)
    assert "1 CPU and 1 GPU per trial" in msg and "node 10.0.0.1: 8 CPU, 0 GPU" in msg
    assert "available_node_types" in msg  # what an autoscaling cluster could add is in its YAML
    gpu_type = [("node type gpu_worker", {"CPU": 8, "GPU": 1})]
    assert preflight._check_fits(1, 1, nodes, launchable=gpu_type) == ["node type gpu_worker"]
    with pytest.raises(PreflightError, match=r"the launcher can add node type gpu_worker \(8 CPU, 1 GPU\)"):
        preflight._check_fits(1, 2, nodes, launchable=gpu_type)


def test_launchable_node_types_come_from_the_head_nodes_bootstrap_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert preflight._launchable_node_types() == []  # not the head of a launcher-started cluster
    (tmp_path / "ray_bootstrap_config.yaml").write_text(
        "available_node_types:\n"
        "  head: {resources: {CPU: 4}, max_workers: 0}\n"
        "  gpu_worker: {resources: {CPU: 8, GPU: 1}, max_workers: 4}\n"
    )
    assert preflight._launchable_node_types() == [("node type gpu_worker", {"CPU": 8, "GPU": 1})]


def test_a_launcher_cluster_counts_its_trials_at_once_at_its_largest(tmp_path, monkeypatch):
    """The README's cluster (cluster.yaml: head CPU 0, up to 4 workers of 8 CPU + 1 GPU) with 2 CPUs and a quarter
    GPU per trial holds 4 x 4 = 16 trials at once; counted from the nodes up at the start it was 1."""
    import yaml

    monkeypatch.setenv("HOME", str(tmp_path))
    assert preflight.launcher_capacity(2, 0.25) is None  # not the head of a launcher-started cluster
    cfg = yaml.safe_load(Path(__file__).resolve().parents[1].joinpath("cluster.yaml").read_text())
    (tmp_path / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(cfg))
    assert preflight.launcher_capacity(2, 0.25) == 4 * min(8 // 2, 4)
    assert preflight.launcher_capacity(4, 0.25) == 4 * 2 and preflight.launcher_capacity(1, 0) == 4 * 8
    assert preflight.launcher_capacity(1, 2) == 0  # no node holds one: the pre-flight refuses such a search
    # two worker types under a cluster-wide max_workers of 3: the types holding the most trials first
    (tmp_path / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump({
        "max_workers": 3, "head_node_type": "head",
        "available_node_types": {"head": {"resources": {"CPU": 2}},
                                 "small": {"resources": {"CPU": 2}, "max_workers": 5},
                                 "big": {"resources": {"CPU": 8}, "max_workers": 2}}}))  # fmt: skip
    assert preflight.launcher_capacity(1, 0) == 2 + 2 * 8 + 1 * 2


def test_a_bad_mlflow_writer_placement_is_named(monkeypatch):
    monkeypatch.setenv("HSC_MLFLOW_WRITER", "fork")
    with pytest.raises(PreflightError, match="HSC_MLFLOW_WRITER='fork': expected 'process' or 'thread'"):
        preflight.writer_in_process()
    monkeypatch.delenv("HSC_MLFLOW_WRITER")
    # the end's wait for MLflow: a bad value was the default without a word, and inf waited for ever (a walkthrough)
    for bad in ("soon", "0", "-5", "nan", "inf"):
        monkeypatch.setenv("HSC_MLFLOW_FLUSH_S", bad)
        with pytest.raises(PreflightError, match=f"^HSC_MLFLOW_FLUSH_S='{bad}': expected a number of seconds > 0 "
                                                 "\\(default 120\\)$"):  # fmt: skip
            preflight.writer_in_process()
    monkeypatch.setenv("HSC_MLFLOW_FLUSH_S", "7.5")
    from hsc_search.runs import flush_seconds

    assert flush_seconds() == 7.5 and preflight.writer_in_process() in (True, False)


def test_a_database_uri_is_tried_before_ray_starts_and_its_password_never_shown(tmp_path, monkeypatch):
    """MLflow retries a database it cannot reach for minutes (a search hung there); the pre-flight names it in
    seconds: a TCP port nothing listens on, a unix socket folder with no server, a scheme it does not know, a
    sqlite path that holds something else."""
    with socket.socket() as s:  # a port nothing listens on (bound, never accepting)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(PreflightError) as e:
            preflight.check_tracking(f"postgresql://hsc:secret@127.0.0.1:{port}/mlflow", timeout_s=2.0)
        assert time.monotonic() - t0 < 5.0
    assert str(e.value).startswith(f"--tracking-uri postgresql://hsc:***@127.0.0.1:{port}/mlflow: no database "
                                   f"answers at 127.0.0.1:{port}")  # fmt: skip
    # the port libpq takes where the URI names none: ?port=, then $PGPORT (the pre-flight probed 5432: a review)
    for uri, env in ((f"postgresql://hsc@127.0.0.1/mlflow?port={port}", None), ("postgresql://hsc@127.0.0.1/mlflow",
                                                                              str(port))):  # fmt: skip
        with pytest.MonkeyPatch.context() as mp:
            if env:
                mp.setenv("PGPORT", env)
            with pytest.raises(PreflightError, match=f"no database answers at 127.0.0.1:{port} "):
                preflight.check_tracking(uri, timeout_s=2.0)
    assert "secret" not in str(e.value)
    # PostgreSQL over a unix socket (as the team server's) none listens on, in a folder that does not exist too: no
    # database answers there (it was "the database refused the connection" in the driver's words)
    with pytest.raises(PreflightError, match=re.escape(f"--tracking-uri postgresql://hsc@/mlflow?host={tmp_path}: no "
                                                       f"database answers at the socket folder {tmp_path} (no socket "
                                                       ".s.PGSQL.5432 there); start it")):  # fmt: skip
        preflight.check_tracking(f"postgresql://hsc@/mlflow?host={tmp_path}", timeout_s=2.0)
    with pytest.raises(PreflightError, match=re.escape(f"at the socket folder {tmp_path / 'pg'} (no such folder)")):
        preflight.check_tracking(f"postgresql://hsc@/mlflow?host={tmp_path / 'pg'}&port=5999", timeout_s=2.0)
    monkeypatch.setenv("PGPORT", "5998")  # libpq's port where the URI names none (the review: 5432 was assumed)
    with pytest.raises(PreflightError, match=re.escape("(no socket .s.PGSQL.5998 there)")):
        preflight.check_tracking(f"postgresql://hsc@/mlflow?host={tmp_path}", timeout_s=2.0)
    with pytest.raises(PreflightError, match="the database refused the connection: "):  # (a name too long: the
        preflight.check_tracking(f"postgresql://hsc@/mlflow?host=/tmp/{'a' * 300}", timeout_s=2.0)  # driver says)
    (tmp_path / ".s.PGSQL.5999").touch()  # a socket file no server holds: the driver's own words
    with pytest.raises(PreflightError, match="the database refused the connection: "):
        preflight.check_tracking(f"postgresql://hsc@/mlflow?host={tmp_path}&port=5999", timeout_s=2.0)
    with pytest.raises(PreflightError, match=r"--tracking-uri htp://x: unknown scheme 'htp'; expected sqlite"):
        preflight.check_tracking("htp://x")
    with pytest.raises(PreflightError, match="Databricks-hosted MLflow is not supported"):
        preflight.check_tracking("databricks")
    data = tmp_path / "clips.h5"
    data.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    with pytest.raises(PreflightError, match=f"{data} is not an SQLite database"):
        preflight.check_tracking(f"sqlite:///{data}")
    assert data.read_bytes() == b"\x89HDF\r\n\x1a\n" + bytes(200)  # read only, never written
    (tmp_path / "empty.db").write_bytes(b"")
    preflight.check_tracking(f"sqlite:///{tmp_path / 'empty.db'}")  # SQLite takes an empty file as a new database
    odd = tmp_path / "runs #2 %"  # characters SQLite's file: URIs treat specially
    odd.mkdir()
    preflight.check_tracking(f"sqlite:///{odd / 'mlflow.db'}")
    assert list(odd.iterdir()) == []  # nothing created
    import sqlite3

    con = sqlite3.connect(odd / "real.db")
    con.execute("create table t (x)")
    con.close()
    preflight.check_tracking(f"sqlite+pysqlite:///{odd / 'real.db'}")  # MLflow takes SQLAlchemy's driver suffix
    (odd / "clips.h5").write_bytes(data.read_bytes())
    with pytest.raises(PreflightError, match="is not an SQLite database"):
        preflight.check_tracking(f"sqlite:///{odd / 'clips.h5'}")
    preflight.check_tracking(f"sqlite:///{odd / 'real.db'}?timeout=30")  # SQLAlchemy's options: the file is real.db
    with pytest.raises(PreflightError, match="is not an SQLite database"):
        preflight.check_tracking(f"sqlite:///{odd / 'clips.h5'}?timeout=30")
    qmark = tmp_path / "runs?2"  # SQLAlchemy cuts the path at '?': MLflow would make a store named 'runs'
    qmark.mkdir()
    with pytest.raises(PreflightError, match=r"reads what follows '\?' as options, so MLflow would open the file"):
        preflight.check_tracking(f"sqlite:///{qmark / 'mlflow.db'}")
    with pytest.raises(PreflightError, match=r"reads what follows '\?' as options"):  # parses as ?runs=2/m.db
        preflight.check_tracking(f"sqlite:///{tmp_path}/x?runs=2/m.db")
    assert not (tmp_path / "runs").exists()


def _no_other_ray_found(monkeypatch) -> None:
    """Ray's `auto` takes the one Ray instance its process scan finds running on this machine over the address
    file a test writes: another job's Ray running beside the suite made the `auto` cases fail (the review)."""
    import ray._private.services as services

    def none_running() -> list:
        return []

    none_running.cache_clear = lambda: None  # as the cached function Ray's is
    monkeypatch.setattr(services, "find_gcs_addresses", none_running)


def test_a_ray_address_must_have_ray_s_form_and_answer(monkeypatch, tmp_path):
    """Ray retries an absent head for minutes (a search hung there); the pre-flight names it in seconds."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for bad in ("bogus", "http://10.0.0.5:6379", "10.0.0.5:port", "host:99999"):
        with pytest.raises(PreflightError, match=f"--address {re.escape(bad)}: expected host:port of a Ray head"):
            preflight.check_address(bad)
    with socket.socket() as s:  # bound, never accepting: nothing answers
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        t0 = time.monotonic()
        for address in (f"127.0.0.1:{port}",):
            with pytest.raises(PreflightError, match=f"{re.escape(address)}: no Ray head answers at 127.0.0.1:{port}"):
                preflight.check_address(address, timeout_s=2.0)
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # the variable, named as such
        with pytest.raises(PreflightError, match=f"RAY_ADDRESS 127.0.0.1:{port}: no Ray head answers"):
            preflight.check_address(None, timeout_s=2.0)
        with pytest.raises(PreflightError, match=f"address in r/hsc_search.json 127.0.0.1:{port}: no Ray head") as e:
            preflight.check_address(f"127.0.0.1:{port}", timeout_s=2.0, flag="address in r/hsc_search.json")
        # resume: its address is the search's record, so leaving --address out is what was done already
        assert str(e.value).endswith("or give --address local to search on a local Ray instance"), str(e.value)
        assert time.monotonic() - t0 < 10.0
        s.listen()  # now the kernel accepts connections, but nothing answers them (a Ray head answers gRPC)
        with pytest.raises(PreflightError, match=f"--address 127.0.0.1:{port}: something answers at 127.0.0.1:{port}, "
                           "but not a Ray head \\(it accepted a connection but sent nothing back within 2 s\\)"):
            preflight.check_address(f"127.0.0.1:{port}", timeout_s=2.0)
    # auto: the cluster Ray would join, checked as if given (the address file a killed `ray start --head` leaves:
    # Ray retried it for minutes, deaf to Ctrl-C; a walkthrough)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    _no_other_ray_found(monkeypatch)
    (tmp_path / "ray").mkdir()
    with socket.socket() as s:  # bound and not listening: refused, and no other process can take the port meanwhile
        s.bind(("127.0.0.1", 0))  # (a closed port was taken by a Ray another job started, once: a flaky failure)
        port = s.getsockname()[1]
        (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
        t0 = time.monotonic()
        with pytest.raises(PreflightError, match=f"^--address auto \\(Ray found 127.0.0.1:{port} on this machine: "
                           f"the address file of the last `ray start`, or another Ray running here\\): no Ray head "
                           f"answers at 127.0.0.1:{port} \\(Connection refused\\)"):  # fmt: skip
            preflight.check_address("auto", timeout_s=2.0)
        assert time.monotonic() - t0 < 10.0
    # no cluster here: the way out is the one that applies (RAY_ADDRESS=auto was told to leave out a flag not given).
    # Ray's own lookup would scan this machine's processes, where another job's Ray may run: none found, as Ray says
    from hsc_search import ray_internals

    def none_here():
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray_internals, "auto_address", none_here)
    with pytest.raises(PreflightError, match="^--address auto: no Ray cluster runs on this machine .*; leave "
                       "--address out to search"):  # fmt: skip
        preflight.check_address("auto", timeout_s=2.0)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(PreflightError, match="^RAY_ADDRESS auto: no Ray cluster runs on this machine .*; unset "
                       "RAY_ADDRESS to search"):  # fmt: skip
        preflight.check_address(None, timeout_s=2.0)


def test_a_ray_instance_bound_to_loopback_only_is_refused_in_seconds(monkeypatch, tmp_path):
    """Ray joins 127.0.0.1:PORT by the machine's own address: an instance that listens on 127.0.0.1 only (another
    search's local instance, found by `auto`) made a search hang for minutes where nothing answers (a walkthrough).
    Here a server on 127.0.0.1 only that answers an HTTP/2 preface with a SETTINGS frame, as gRPC (a Ray head's
    GCS) does; what Ray dials is pinned in test_ray_internals.py."""
    import threading

    from hsc_search.ray_internals import address_ray_dials

    own = address_ray_dials("127.0.0.1")
    if own == "127.0.0.1":
        pytest.skip("Ray joins 127.0.0.1 as such on this machine (no other address): nothing to refuse")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                conn.recv(64)
                conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS frame

    threading.Thread(target=answer, daemon=True).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(PreflightError) as e:
            preflight.check_address(f"127.0.0.1:{port}", timeout_s=2.0)
        assert str(e.value).startswith(f"--address 127.0.0.1:{port}: the Ray instance at 127.0.0.1:{port} listens on "
                                       f"127.0.0.1 only (as a search's own local instance does), and Ray joins a head "
                                       f"on this machine by the machine's address, {own}:{port}, where nothing answers "
                                       f"(Connection refused)"), str(e.value)  # fmt: skip
        assert str(e.value).endswith("or give --address local to search on a local Ray instance")
        # found by `auto` (the address file of a `ray start`, or the one instance running here): named as found
        monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
        _no_other_ray_found(monkeypatch)
        (tmp_path / "ray").mkdir()
        (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
        with pytest.raises(PreflightError, match=f"^--address auto \\(Ray found 127.0.0.1:{port} on this machine: .*"
                           f"\\): the Ray instance at 127.0.0.1:{port} listens on 127.0.0.1 only"):  # fmt: skip
            preflight.check_address("auto", timeout_s=2.0)
        assert time.monotonic() - t0 < 10.0
    finally:
        server.close()


def test_an_address_where_something_else_answers_is_not_taken_for_a_ray_head(monkeypatch):
    """A web server (e.g. Ray's dashboard at 8265, given by mistake): Ray would retry it for minutes (a search
    hung there); the pre-flight says what answers in seconds. A real head passes (tests/test_cluster.py)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    with _serving(Quiet) as port:
        address = f"127.0.0.1:{port}"
        t0 = time.monotonic()
        with pytest.raises(PreflightError) as e:
            preflight.check_address(address, timeout_s=2.0)
        assert time.monotonic() - t0 < 5.0
        assert str(e.value) == (f"--address {address}: something answers at {address}, but not a Ray head (it answers "
                                "as a web server does (HTTP/1), not as gRPC); the address is the one `ray start "
                                "--head` prints, port 6379 unless changed (8265 is the dashboard)")  # fmt: skip
        # Ray Client: not installed (ray[client]) and not how a search runs (its driver on the head); it was offered
        # and then said "no Ray head answers" of a running head (a walkthrough)
        with pytest.raises(PreflightError, match="Ray Client \\(ray://\\) is not supported: it needs ray\\[client\\]"):
            preflight.check_address(f"ray://{address}", timeout_s=2.0)


def test_a_name_in_use_is_refused_with_what_the_folder_holds(tmp_path, monkeypatch):
    """`run --name X` where <storage>/X exists: an unrelated folder, a search that finished, one that did not (its
    resume command, as pasted); before Ray starts, nothing touched."""
    from hsc_search.commands import exe
    from hsc_search.driver import SearchError, run_search
    from hsc_search.settings import SearchSettings

    monkeypatch.chdir(tmp_path)
    data = "synthetic:ave?n_train=64&n_val=32&n_test=32&dim_audio=8&dim_visual=8&num_classes=4"
    folder = tmp_path / "rr" / "x"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    settings = dict(name="x", storage=str(tmp_path / "rr"), data=data, mlflow=False)
    with pytest.raises(SearchError) as e:
        run_search(SearchSettings(**settings))
    assert str(e.value) == f"{folder} exists already and holds no hsc-search search; pick another --name"
    (folder / "hsc_search.json").write_text(json.dumps({"finished_at": "2026-12-03 09:00:00 UTC"}))
    with pytest.raises(SearchError, match="exists already and holds a search that finished; pick another --name$"):
        run_search(SearchSettings(**settings))
    (folder / "hsc_search.json").write_text("{}")
    # its driver died before Ray saved the search (resume can continue nothing): how to start it again
    with pytest.raises(SearchError) as e:
        run_search(SearchSettings(**settings))
    assert str(e.value) == (f"{folder} exists already and holds a search that stopped before Ray saved it (nothing to "
                            f"resume); to start it again under its name, remove the folder (`rm -r {folder}`) and run "
                            "the search again, or pick another --name")  # fmt: skip
    (folder / "experiment_state-2026-12-03_09-00-00.json").write_text("{}")
    with pytest.raises(SearchError) as e:
        run_search(SearchSettings(**settings))
    assert str(e.value) == (f"{folder} exists already (a search that did not finish: `{exe('hsc-search')} resume "
                            f"{folder}` continues it); pick another --name")  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == ["experiment_state-2026-12-03_09-00-00.json", "hsc_search.json",
                                                        "notes.txt"]
    # a name from a search config is named as its key there (told "pick another --name", she looked for a flag)
    from hsc_search.settings import load_settings

    config = tmp_path / "search.yaml"
    config.write_text(f"name: x\nstorage: {tmp_path / 'rr'}\ndata: '{data}'\nmlflow: false\n")
    with pytest.raises(SearchError) as e:
        run_search(load_settings(config, {}, []))
    assert str(e.value).endswith(f"continues it); pick another name ({config}: name)"), str(e.value)
    with pytest.raises(SearchError) as e:  # and a --name flag over the file's as the flag
        run_search(load_settings(config, {"name": "x"}, []))
    assert str(e.value).endswith("continues it); pick another --name"), str(e.value)


def test_resume_of_a_folder_that_is_not_there_or_not_a_search(tmp_path):
    from hsc_search.driver import SearchError, resume_search

    with pytest.raises(SearchError) as e:
        resume_search(tmp_path / "nope")
    assert str(e.value) == f"{tmp_path / 'nope'}: no such folder; pass the folder `hsc-search run` printed as folder:"
    with pytest.raises(SearchError, match=r"not a hsc-search experiment folder \(no hsc_search.json\)$"):
        resume_search(tmp_path)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "hsc_search.json").write_text("{}")
    with pytest.raises(SearchError) as e:  # the record given for its folder
        resume_search(tmp_path / "s" / "hsc_search.json")
    assert str(e.value) == f"{tmp_path / 's' / 'hsc_search.json'}: a file, not a search's folder: pass its folder, {tmp_path / 's'}"
    # the storage folder, or a trial's folder, given for the search's: where the search is
    with pytest.raises(SearchError) as e:
        resume_search(tmp_path)
    assert str(e.value).endswith(f"(no hsc_search.json); it holds the searches s: pass one, e.g. {tmp_path / 's'}")
    (tmp_path / "s" / "ab12cd34").mkdir()
    (tmp_path / "s" / "ab12cd34" / "params.json").write_text("{}")
    with pytest.raises(SearchError) as e:
        resume_search(tmp_path / "s" / "ab12cd34")
    assert str(e.value).endswith(f"(no hsc_search.json); it is a trial's folder of the search {tmp_path / 's'}: pass that")
    (tmp_path / "s" / "ab12cd34" / "checkpoint_000002").mkdir()  # two levels down: no hint before
    with pytest.raises(SearchError) as e:
        resume_search(tmp_path / "s" / "ab12cd34" / "checkpoint_000002")
    assert str(e.value).endswith(f"(no hsc_search.json); it is a trial's checkpoint of the search {tmp_path / 's'}: "
                                 "pass that"), str(e.value)
    # another folder of a search is not called a trial's (its summary/), and a path with a space is quoted
    (tmp_path / "my s" / "summary").mkdir(parents=True)
    (tmp_path / "my s" / "hsc_search.json").write_text("{}")
    with pytest.raises(SearchError) as e:
        resume_search(tmp_path / "my s" / "summary")
    assert str(e.value).endswith(f"(no hsc_search.json); it is a folder of the search '{tmp_path / 'my s'}': pass that")


def test_address_local_means_a_local_instance_of_the_search_s_own(monkeypatch):
    """`--address local` (what `resume` is told to use to leave a recorded cluster aside) starts the search's own
    local instance on 127.0.0.1 with its watchdog, as no address does; it went to ray.init(address="local")."""
    from hsc_search.driver import cluster_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(None) is None and cluster_address("local") is None
    assert cluster_address("10.0.0.5:6379") == "10.0.0.5:6379"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert cluster_address(None) == "10.0.0.5:6379" and cluster_address("local") is None
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert cluster_address(None) is None


def test_a_data_path_is_recorded_absolute_with_home_expanded_and_dots_folded(tmp_path, monkeypatch):
    """`--data ~/feats.h5` was read as <cwd>/~/feats.h5 (file not found), and `../data/x.h5` was recorded with its
    `..`, so the printed retrain and resume commands broke once the folder it was given from was gone."""
    import os

    from hsc_search.driver import absolute_data_spec

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert absolute_data_spec("~/feats.h5") == str(tmp_path / "home" / "feats.h5")
    assert absolute_data_spec("w6/../data/x.h5") == str(tmp_path / "data" / "x.h5")
    assert ".." not in absolute_data_spec("../x.h5") and os.path.isabs(absolute_data_spec("../x.h5"))
    assert absolute_data_spec("synthetic:ave?n_train=40") == "synthetic:ave?n_train=40"


def test_a_temporary_folder_too_long_for_rays_sockets_is_one_line(tmp_path, monkeypatch):
    """A batch scheduler's per-job TMPDIR (45 bytes) ended every local search in a 130-line traceback from Ray's
    socket check (a walkthrough). The pre-flight refuses exactly the folders Ray's own check refuses, with the
    variable to set; checked against Ray's validate_socket_filepath on the path Ray builds (node.py)."""
    import datetime
    import os

    from ray._private.utils import validate_socket_filepath

    def ray_accepts(temp: str) -> bool:
        date = datetime.datetime.today().strftime("%Y-%m-%d_%H-%M-%S_%f")
        try:
            validate_socket_filepath(f"{temp}/session_{date}_{os.getpid()}/sockets/plasma_store")
            return True
        except OSError:
            return False

    for n in range(20, 60):
        folder = "/t" + "x" * (n - 2)  # RAY_TMPDIR=<n bytes>: Ray's folder is <it>/ray
        monkeypatch.setenv("RAY_TMPDIR", folder)
        expected = ray_accepts(folder + "/ray")
        try:
            preflight.check_ray_temp_dir()
            ours = True
        except PreflightError as e:
            ours = False
            assert f"Ray's temporary folder {folder}/ray (from RAY_TMPDIR={folder}) is too long" in str(e)
            assert "set RAY_TMPDIR to a short folder, e.g. RAY_TMPDIR=/tmp" in str(e)
        assert ours == expected, (n, ours)
    monkeypatch.setenv("RAY_TMPDIR", "/t" + "x" * 20)
    preflight.check_ray_temp_dir()
    assert any(ray_accepts("/t" + "x" * (n - 2) + "/ray") for n in range(20, 60))  # both kinds were met above
    assert not ray_accepts("/t" + "x" * 57 + "/ray")


def test_a_search_under_a_long_tmpdir_stops_in_one_line_before_writing(tmp_path):
    """The same through `hsc-search run`: exit 2, the one line, nothing written (no store, no search folder)."""
    import os
    import subprocess
    import sys

    long_tmp = tmp_path / ("t" * 40) / "job_12345" / "tmp"  # tmp_path itself is long already
    long_tmp.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_TMPDIR"}
    env.update(TMPDIR=str(long_tmp), MLFLOW_DISABLE_TELEMETRY="true")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([str(Path(sys.executable).parent / "hsc-search"), "run", "--num-samples", "2",
                           "--max-epochs", "1", "--data", "synthetic:ave?n_train=200&dim_audio=8&dim_visual=8"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert f"Ray's temporary folder {long_tmp}/ray (from TMPDIR={long_tmp}) is too long" in proc.stderr
    assert list(work.iterdir()) == []


def test_the_address_of_a_ui_page_or_https_to_a_plain_server_says_the_address_meant(tmp_path):
    """The `MLflow UI:` line a search prints ends in `#/experiments/1?...`: pasted as --tracking-uri it was refused
    as a server that is not MLflow's, with a mangled address (`...machine_learning/health`), by run, export-best,
    report and import-runs (a walkthrough). Now each names the server's own address, before any connection; and
    https:// to a plain HTTP server (a real one here) says to use http:// (it was an SSL error's words)."""
    import socket
    import subprocess
    import sys

    from hsc_search.preflight import PreflightError, check_tracking
    from hsc_search.runs import StoreError, check_store_to_read
    from hsc_search.transfer import TransferError, check_uri

    page = "http://127.0.0.1:5091/#/experiments/1?workflowType=machine_learning"
    said = "the address of a page of the MLflow UI, not of its server (which is http://127.0.0.1:5091)"
    with pytest.raises(StoreError) as e:
        check_store_to_read(page)
    assert str(e.value) == f"{said}; fix --tracking-uri", str(e.value)
    with pytest.raises(PreflightError) as p:
        check_tracking(page)
    assert str(p.value) == f"--tracking-uri {page}: {said}; fix the URI, or search with --no-mlflow", str(p.value)
    with pytest.raises(TransferError) as t:
        check_uri("http://ana:s3cret@teambox:5000/mlflow/#/experiments/2", "to")
    assert str(t.value) == ("--to http://ana:***@teambox:5000/mlflow/#/experiments/2: the address of a page of the "
                            "MLflow UI, not of its server (which is http://ana:***@teambox:5000/mlflow)"), str(t.value)
    with pytest.raises(StoreError) as e:  # a query: MLflow adds its API's paths after the address
        check_store_to_read("http://127.0.0.1:5099/?token=abc")
    assert str(e.value) == ("a tracking server's address takes no query ('?token=abc'): MLflow adds its API's paths "
                            "after it; give http://127.0.0.1:5099; fix --tracking-uri"), str(e.value)
    from hsc_search.runs import tls_to_plain_http  # OpenSSL from 3.2 on says it otherwise (urllib3 #3271)

    assert tls_to_plain_http("https://h", OSError("[SSL] record layer failure (_ssl.c:1029)"))
    assert not tls_to_plain_http("http://h", OSError("[SSL] record layer failure"))
    with socket.socket() as s:  # a plain HTTP server on a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        import time
        import urllib.request

        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        with pytest.raises(StoreError) as e:
            check_store_to_read(f"https://127.0.0.1:{port}")
        assert str(e.value) == (f"the server at https://127.0.0.1:{port} answers in plain HTTP: use http:// (MLflow "
                                "servers speak no TLS themselves); fix --tracking-uri"), str(e.value)
    finally:
        server.terminate()
        server.wait(timeout=30)
