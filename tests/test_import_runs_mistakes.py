"""`hsc-search import-runs` given the wrong store: the same store twice (spelled differently), a file that is not an
MLflow database (text, HDF5, empty, SQLite of something else), a destination folder that does not exist, an
experiment or runs that are not in the source. Each stops in well under a second with exit code 2 and one line
naming the flag and the file, before anything is created or changed. And a copy into a local sqlite file keeps
its artifacts beside that file, not in the folder the command ran in. A tiny store, no server: seconds in all."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HSC = str(Path(sys.executable).parent / "hsc-search")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """An MLflow sqlite store with experiment `hsc-search`: a search run and one trial (a metric history and a
    config.yaml artifact), its artifacts under mlruns/ beside the database. Built once; tests copy it."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("template")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.create_experiment("hsc-search", artifact_location=str(folder / "mlruns" / "1"))
    parent = client.create_run(exp, run_name="search", start_time=1_000).info.run_id
    trial = client.create_run(exp, run_name="trial_a", start_time=2_000, tags={"mlflow.parentRunId": parent})
    trial = trial.info.run_id
    client.log_batch(trial, metrics=[Metric("val/map_avg", 0.1 * s, 5_000 + s, s) for s in (1, 2, 3)])
    client.log_text(trial, "lr: 0.001\n", "config.yaml")
    client.set_terminated(trial, end_time=9_000)
    client.set_terminated(parent, end_time=9_999)
    return folder


@pytest.fixture()
def here(template, tmp_path) -> Path:
    """A folder searched in: mlflow.db and its mlruns/ (copied from the template, so the store's artifact
    locations still name the template's folder), plus files that are not MLflow stores."""
    shutil.copy(template / "mlflow.db", tmp_path / "mlflow.db")
    (tmp_path / "notadb.db").write_text("not a database\n")
    (tmp_path / "features.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(504))  # an HDF5 file's signature
    (tmp_path / "empty.txt").write_bytes(b"")
    import sqlite3

    con = sqlite3.connect(tmp_path / "other.sqlite")
    con.execute("CREATE TABLE notes (text TEXT)")
    con.commit()
    con.close()
    return tmp_path


def _snapshot(*folders: Path) -> dict[str, str]:
    """Every file and folder under `folders` with a hash of its bytes: what must stay as it was."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _refused(cwd: Path, *args: str, needle: str) -> str:
    """Runs `hsc-search import-runs ARGS` in `cwd`; it must fail in seconds, exit 2, with one line holding
    `needle`, and leave `cwd` as it was."""
    before = _snapshot(cwd)
    r = subprocess.run([HSC, "import-runs", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr[-3000:])
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, (args, lines)
    assert _snapshot(cwd) == before, args  # nothing created, nothing changed
    return lines[0]


def test_the_same_store_spelled_differently_is_refused(here):
    """The default --from sqlite:///mlflow.db against an absolute, `./`, symlinked or `?option` spelling of the same
    file: the runs were copied into their own store again."""
    db = here / "mlflow.db"
    (here / "link.db").symlink_to(db)
    for args in (["--to", f"sqlite:///{db}"], ["--to", "sqlite:///./mlflow.db"], ["--to", "sqlite:///link.db"],
                 ["--to", "sqlite:///mlflow.db?timeout=30"],
                 ["--from", f"sqlite:///{db}", "--to", "sqlite:///mlflow.db"]):  # fmt: skip
        line = _refused(here, *args, needle="the same store as --from")
        assert line.startswith(f"error: --to {args[-1]}:") and str(db) in line, line


def test_the_same_server_spelled_differently_is_one_store():
    from hsc_search.transfer import same_store

    assert same_store("http://localhost:5000/", "http://127.0.0.1:5000")
    assert same_store("HTTP://127.0.0.1", "http://127.0.0.1:80/")
    assert not same_store("http://127.0.0.1:5000", "http://127.0.0.1:5001")
    assert not same_store("sqlite:///mlflow.db", "http://127.0.0.1:5000")


def test_sqlite_options_are_not_part_of_the_file(tmp_path, monkeypatch):
    """`sqlite:///mlflow.db?timeout=30` (SQLAlchemy's options, which MLflow takes) names the file mlflow.db; a
    search records it made absolute with its options kept."""
    from hsc_search.runs import resolved_tracking_uri, sqlite_path

    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///mlflow.db?timeout=30") == Path("mlflow.db")
    assert sqlite_path("sqlite:////abs/m.db?timeout=30&uri=true") == Path("/abs/m.db")
    assert resolved_tracking_uri("sqlite:///m.db?timeout=30") == f"sqlite:///{tmp_path.resolve()}/m.db?timeout=30"


@pytest.mark.parametrize("name, what", [("notadb.db", "not an SQLite database"),
                                        ("features.h5", "not an SQLite database"),
                                        ("empty.txt", "an empty file"),
                                        ("other.sqlite", "SQLite, but without MLflow's tables")])  # fmt: skip
def test_a_file_that_is_not_an_mlflow_store_is_refused(here, name, what):
    """--from: it was a traceback (text, HDF5), or an empty file became a new store and '0 run(s) copied' (exit 0)
    with a new destination; --to: a traceback, or MLflow's tables written into someone else's file."""
    path = here / name
    _refused(here, "--from", f"sqlite:///{name}", "--to", "sqlite:///copy.db",
             needle=f"--from sqlite:///{name}: {path} is not an MLflow database ({what})")
    _refused(here, "--to", f"sqlite:///{name}",
             needle=f"--to sqlite:///{name}: {path} is not an MLflow database ({what})")
    _refused(here, "--to", f"sqlite:///{here}", needle=f"--to sqlite:///{here}: {here} is a folder")


def test_a_store_mlflow_did_not_finish_creating_is_refused_and_a_new_one_appears_whole(here, tmp_path_factory,
                                                                                        monkeypatch):
    """import-runs interrupted while MLflow built its new destination left alembic's temporary table in it: the
    same command (its own advice) then failed with a traceback, and so did every command given that store (a
    walkthrough). Such a store is named as what it is, by import-runs, the read commands and a search's pre-flight;
    a new destination is now made from a whole empty store (the search's template), moved into place at once."""
    import sqlite3

    from hsc_search import preflight

    half = here / "half.db"
    shutil.copy(here / "mlflow.db", half)
    with sqlite3.connect(half) as con:  # as alembic's batch migration leaves it when cut off
        con.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
    what = ("is not an MLflow database (a store whose creation or upgrade by MLflow was cut short: its table "
            "_alembic_tmp_experiments is left from a schema migration that did not finish (none is running now), and "
            "MLflow cannot open it again; a store without runs you need: delete the file; otherwise keep a copy of it "
            "before anything else)")
    _refused(here, "--to", "sqlite:///half.db", needle=f"--to sqlite:///half.db: {half} {what}")
    _refused(here, "--from", "sqlite:///half.db", "--to", "sqlite:///new.db", needle=f"{half} {what}")
    r = subprocess.run([HSC, "export-best", "--tracking-uri", "sqlite:///half.db"], cwd=here, capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and f"sqlite:///half.db: half.db {what}" in r.stderr and "Traceback" not in r.stderr, \
        r.stderr[-2000:]
    monkeypatch.chdir(here)
    with pytest.raises(preflight.PreflightError, match="_alembic_tmp_experiments is left from a schema migration"):
        preflight.check_tracking("sqlite:///half.db")
    # a migration running now (another process creating or upgrading the store) is not taken for one cut off: it
    # finishes while the check waits to look again (done in its wait itself: a thread's timing could miss it)
    from hsc_search import runs

    waited = []

    def finish_migration(seconds):
        waited.append(seconds)
        with sqlite3.connect(half) as con:
            con.execute("DROP TABLE _alembic_tmp_experiments")

    import types

    with monkeypatch.context() as mp:  # (runs' own time only: another thread's sleep is not the check's wait)
        mp.setattr(runs, "time", types.SimpleNamespace(sleep=finish_migration))
        assert runs.mlflow_db_problem(half) is None
    assert waited == [1.5], waited
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("HSC_CACHE_DIR", str(cache))
    (here / "sub").mkdir()
    r = subprocess.run([HSC, "import-runs", "--to", f"sqlite:///{here / 'sub' / 'new.db'}"], cwd=here,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert list(cache.glob("mlflow-*-empty.db")), "the new store was not made from the template"
    from mlflow.tracking import MlflowClient

    default = MlflowClient(f"sqlite:///{here / 'sub' / 'new.db'}").get_experiment("0")
    assert default.artifact_location == str(here / "sub" / "mlruns" / "0")  # beside the store, as MLflow made it
    assert sorted(p.name for p in (here / "sub").iterdir()) == ["mlruns", "new.db"]  # no temporary file left


def test_a_destination_that_cannot_take_the_runs_is_refused_in_one_line(here, tmp_path):
    """A read-only store (every import writes, if only its experiments' tags) was a 340-line traceback; so was an
    experiment of the same name deleted in the destination (MLflow: "must be in the 'active' state")."""
    from mlflow.tracking import MlflowClient

    from conftest import small_disk

    dst = here / "dst.db"
    shutil.copy(here / "mlflow.db", dst)
    client = MlflowClient(f"sqlite:///{dst}")
    exp_id = client.get_experiment_by_name("hsc-search").experiment_id
    client.delete_experiment(exp_id)
    line = _refused(here, "--to", "sqlite:///dst.db", needle="--to sqlite:///dst.db: experiment 'hsc-search' is "
                                                              "deleted there (its runs in the trash, its name still "
                                                              "taken); restore it (`MLFLOW_TRACKING_URI=")
    assert line.endswith(f"/mlflow experiments restore --experiment-id {exp_id}`), or copy into another store"), line
    assert f"sqlite:///{dst}" in line  # the restore command pasted in any folder opens this store
    ro = tmp_path / "ro"
    with small_disk(ro, prepare=lambda p: shutil.copy(here / "mlflow.db", p / "team.db"), read_only=True):
        _refused(here, "--to", f"sqlite:///{ro / 'team.db'}",
                 needle=f"--to sqlite:///{ro / 'team.db'}: {ro / 'team.db'} is read-only; expected a store the runs "
                        "can be copied into")  # fmt: skip


def test_an_experiment_named_twice_is_copied_and_counted_once(here):
    r = subprocess.run([HSC, "import-runs", "--to", "sqlite:///twice.db", "--experiment", "hsc-search",
                        "--experiment", "hsc-search"], cwd=here, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0 and r.stdout.count("experiment hsc-search: ") == 1, r.stdout + r.stderr[-2000:]
    assert "experiment hsc-search: 2 run(s) copied\n" in r.stdout, r.stdout
    # a new store is said (a mistyped --to made one without a word); an existing one is not
    assert f"note: {here / 'twice.db'} is a new store (no file was there); its artifacts go to {here / 'mlruns'}\n" \
        in r.stdout, r.stdout
    r = subprocess.run([HSC, "import-runs", "--to", "sqlite:///twice.db"], cwd=here, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0 and "new store" not in r.stdout, r.stdout


def test_a_question_mark_in_a_sqlite_folder_is_refused(here):
    """SQLAlchemy cuts a sqlite path at '?': `runs?2/new.db` would have made a store named `runs`."""
    (here / "runs?2").mkdir()
    _refused(here, "--to", "sqlite:///runs?2/new.db", needle="--to sqlite:///runs?2/new.db: SQLAlchemy reads what "
                                                             "follows '?' as options, so MLflow would open the file 'runs'")
    _refused(here, "--to", "sqlite:///a?b=c/m.db", needle="SQLAlchemy reads what follows '?' as options")


def test_a_database_that_does_not_answer_is_refused_in_seconds(here):
    """A postgresql:// store nothing answers at (MLflow retried it for minutes), as --from and as --to; the password
    is never shown. And a Databricks URI (a traceback from MLflow)."""
    import time

    dead = "postgresql://ana:s3cret@127.0.0.1:1/mlflow"
    t0 = time.monotonic()
    line = _refused(here, "--to", dead, needle="--to postgresql://ana:***@127.0.0.1:1/mlflow: no database answers")
    assert "s3cret" not in line
    _refused(here, "--from", dead, "--to", "sqlite:///copy.db", needle="--from postgresql://ana:***@127.0.0.1:1/mlflow")
    _refused(here, "--to", "databricks://team", needle="--to databricks://team: Databricks-hosted MLflow is not")
    assert time.monotonic() - t0 < 45  # three commands, each a Python start-up and a refused connection


def test_a_destination_folder_that_does_not_exist_is_refused(here):
    missing = here / "nonexistent4"
    _refused(here, "--to", f"sqlite:///{missing / 'team.db'}",
             needle=f"--to sqlite:///{missing / 'team.db'}: the folder {missing} does not exist")
    assert not missing.exists()


def test_source_mistakes_stop_before_the_destination_is_created(here, tmp_path_factory):
    """An experiment not in the source was refused after the destination store had been created."""
    team = here / "team3.db"
    _refused(here, "--to", f"sqlite:///{team}", "--experiment", "hsc-serch",
             needle="--experiment 'hsc-serch': not in sqlite:///mlflow.db; it has: Default, hsc-search")
    assert not team.exists()
    from mlflow.tracking import MlflowClient

    bare = tmp_path_factory.mktemp("bare")
    MlflowClient(f"sqlite:///{bare / 'mlflow.db'}").search_experiments()  # a store without runs
    _refused(bare, "--to", f"sqlite:///{team}",
             needle="--from sqlite:///mlflow.db: no runs to copy (experiments: Default)")
    assert not team.exists()
    # a search's folder as --from names the store its search logged to (it suggested <folder>/mlflow.db, which a
    # search's folder never holds); without MLflow, that nothing of it is there
    import json

    for settings, said in (({"mlflow": True, "tracking_uri": f"sqlite:///{here / 'mlflow.db'}"},
                            f"is a folder; expected the MLflow database file, not a search's folder: that search "
                            f"logged to sqlite:///{here / 'mlflow.db'}"),
                           ({"mlflow": False}, "that search ran with --no-mlflow, so nothing of it is in MLflow")):
        folder = here / "ray_results" / "s"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hsc_search.json").write_text(json.dumps({"settings": settings}))
        _refused(here, "--from", f"sqlite:///{folder}", "--to", f"sqlite:///{team}", needle=said)
    assert not team.exists()
    (here / "backup").mkdir()  # a folder as --to: the new store to make there (not the source's mlflow.db: a review)
    _refused(here, "--to", "sqlite:///backup", needle=f"is a folder; expected the MLflow database file, e.g. "
                                                      f"sqlite:///{here / 'backup' / 'mlflow.db'}")  # fmt: skip


def test_a_copy_into_a_local_sqlite_file_keeps_its_artifacts_beside_it(template, tmp_path, monkeypatch):
    """They went to ./mlruns of the folder import-runs ran in: deleting that folder lost the copy's artifacts.
    An experiment that is already in the destination keeps its own artifact location."""
    from mlflow.tracking import MlflowClient

    from hsc_search.transfer import copy_searches

    src = tmp_path / "laptop"
    src.mkdir()
    shutil.copy(template / "mlflow.db", src / "mlflow.db")  # its artifact locations name the template's mlruns/
    (tmp_path / "team").mkdir()
    monkeypatch.chdir(src)
    dst_uri = f"sqlite:///{tmp_path / 'team' / 'team.db'}"
    report = copy_searches("sqlite:///mlflow.db", dst_uri, echo=lambda s: None)
    assert (report.copied, report.artifact_files) == (2, 1)
    assert not (src / "mlruns").exists()  # where MLflow put the copy's artifacts
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(src)
    dst = MlflowClient(dst_uri)
    exp = dst.get_experiment_by_name("hsc-search")
    assert exp.artifact_location == str(tmp_path / "team" / "mlruns" / exp.experiment_id)
    trial = dst.search_runs([exp.experiment_id], "attributes.run_name = 'trial_a'")[0]
    assert trial.info.artifact_uri.startswith(str(tmp_path / "team" / "mlruns"))
    got = dst.download_artifacts(trial.info.run_id, "config.yaml", dst_path=str(tmp_path))
    assert Path(got).read_text() == "lr: 0.001\n"

    other, team2 = tmp_path / "elsewhere", f"sqlite:///{tmp_path / 'team' / 'team2.db'}"
    MlflowClient(team2).create_experiment("hsc-search", artifact_location=str(other))
    copy_searches(f"sqlite:///{template / 'mlflow.db'}", team2, echo=lambda s: None)
    client2 = MlflowClient(team2)
    copied = client2.search_runs([client2.get_experiment_by_name("hsc-search").experiment_id],
                                 "attributes.run_name = 'trial_a'")[0]  # fmt: skip
    assert copied.info.artifact_uri.startswith(str(other))


@contextlib.contextmanager
def _serving(get):
    """A plain HTTP server on 127.0.0.1 whose GET and POST requests `get(handler)` answers; yields its port."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            get(self)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def _answer(handler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_https_to_a_plain_http_server_says_to_use_http(here):
    """A team server reached through its tunnel speaks plain HTTP: https:// failed with 'SSL WRONG_VERSION_NUMBER'
    and the advice to check the tunnel, which was up."""
    with _serving(lambda h: _answer(h, b"OK")) as port:
        _refused(here, "--to", f"https://127.0.0.1:{port}",
                 needle=f"--to https://127.0.0.1:{port}: no MLflow server answers there (")
        line = _refused(here, "--to", f"https://127.0.0.1:{port}", needle="it answers in plain HTTP: use http://")
        assert "tunnel" not in line, line


def test_a_server_that_stops_answering_after_its_check_is_one_line(here):
    """A team server stopped in the seconds after import-runs found it answering: a 300-line traceback, exit 1 (a
    walkthrough). A server that answers the check (/health and one API read) and then drops every other request
    stands in for it."""
    import json

    def check_then_drop(h):
        if h.path.startswith("/health"):
            _answer(h, b"OK")
        elif h.path.startswith("/api/2.0/mlflow/experiments/get-by-name"):
            _answer(h, json.dumps({"experiment": {"experiment_id": "0", "name": "Default"}}).encode())
        else:
            h.close_connection = True  # no answer: the connection dropped, as by a server that stopped

    with _serving(check_then_drop) as port:
        line = _refused(here, "--to", f"http://127.0.0.1:{port}",
                        needle=f"--to http://127.0.0.1:{port}: the store failed (")
        assert line.endswith("); nothing was copied"), line
        line = _refused(here, "--from", f"http://127.0.0.1:{port}", "--to", f"sqlite:///{here / 'copy.db'}",
                        needle=f"--from http://127.0.0.1:{port}: the store failed (")  # (and no copy.db made)
        assert line.endswith("); nothing was copied"), line


def test_a_copy_into_a_new_store_prints_only_its_own_lines(here):
    """MLflow's INFO lines ("Creating initial MLflow database tables...", "Updating database tables") came
    between import-runs' own when the destination was a new sqlite file (a walkthrough of the console)."""
    proc = subprocess.run([str(Path(sys.executable).parent / "hsc-search"), "import-runs", "--from",
                           "sqlite:///mlflow.db", "--to", f"sqlite:///{here / 'new.db'}"], cwd=here,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "run(s) copied" in proc.stdout, proc.stdout
    assert " INFO " not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
