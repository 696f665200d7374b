"""The team tracking server for real: `hsc-search team-server` (PostgreSQL on a unix socket + `mlflow server` on
127.0.0.1), three searches logging to it at once while it is stopped and started again on the same database,
and `hsc-search import-runs` bringing an embedded-default search (sqlite:///mlflow.db) into it."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import assert_complete_histories, search_cmd, search_env, search_runs

HSC = str(Path(sys.executable).parent / "hsc-search")
EPOCHS, TRIALS = 3, 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> list[str]:
    """As root (CI), PostgreSQL needs an ordinary account: `postgres` where Debian's package made one."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return ["--run-as", name]
        except KeyError:
            continue
    raise RuntimeError("no ordinary account to run PostgreSQL as")


class TeamServerCommand:
    """`hsc-search team-server` as a subprocess, started and stopped (SIGINT, bounded waits) by its pid."""

    def __init__(self, data_dir: Path, port: int):
        self.data_dir, self.port = data_dir, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / "team-server.out"

    def start(self, timeout: float = 240.0) -> "TeamServerCommand":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([HSC, "team-server", "--data-dir", str(self.data_dir), "--port",
                                          str(self.port), *_run_as()], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"team-server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2)
                if "Ctrl-C stops both servers" in self.log.read_text():  # fully started (the banner comes last)
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"team-server not up within {timeout} s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.3)

    def tree(self) -> list[psutil.Process]:
        p = psutil.Process(self.proc.pid)
        return [p, *p.children(recursive=True)]

    def stop(self, timeout: float = 60.0, sig: int = signal.SIGINT) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        tree = self.tree()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in tree:
                p.kill()
            self.proc.wait(timeout=10)
            raise AssertionError("team-server did not stop within its bounded wait")
        gone, alive = psutil.wait_procs(tree, timeout=40)  # (its watchdogs SIGKILL what outlives 30 s)
        assert not alive, f"left running: {alive}"
        return code


@pytest.fixture(scope="module")
def team():
    # not tmp_path: as root PostgreSQL runs as another account, which cannot enter pytest's 0700 folders
    base = Path(tempfile.mkdtemp(prefix="hsc-team-"))
    base.chmod(0o711)
    server = TeamServerCommand(base / "data", _free_port()).start()
    yield server
    # the end of the module as a closed terminal or a dropped SSH session ends it: SIGHUP stops PostgreSQL and
    # MLflow too (they run in sessions of their own and outlived the command), through the same stop() as Ctrl-C;
    # the test's restart kills it with SIGKILL instead (its watchdogs stop them)
    assert server.stop(sig=signal.SIGHUP) == 0
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster (3 CPUs) that all the searches of this module share; shut down by its handle."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3})
    cluster.wait_for_nodes(timeout=120)
    yield cluster
    cluster.shutdown()


def _listeners(procs) -> list[tuple[str, int, str]]:
    out = []
    for p in procs:
        try:
            out += [(c.laddr.ip, c.laddr.port, p.name()) for c in p.net_connections(kind="inet") if c.status == "LISTEN"]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def _snapshot(url: str, experiment: str) -> dict[str, dict[str, int]]:
    """run id -> metric key -> number of points, for every run of the experiment."""
    client, parents, children = search_runs(url, experiment)
    return {r.info.run_id: {k: len(client.get_metric_history(r.info.run_id, k)) for k in r.data.metrics}
            for r in parents + children}  # fmt: skip


def test_three_searches_at_once_and_a_server_restart_lose_nothing(team, ray_cluster, tmp_path, _cache_dir):
    # nothing on a public port: mlflow on 127.0.0.1 only, PostgreSQL on no TCP port at all
    listening = _listeners(team.tree())
    assert listening and all(ip == "127.0.0.1" and port == team.port for ip, port, _ in listening), listening
    assert not [x for x in listening if "postgres" in x[2]]
    # its database says whose it is (the pre-flight refuses its URI by this tag: test_a_stale_lock_file_...)
    from mlflow.tracking import MlflowClient

    assert MlflowClient(team.url).get_experiment("0").tags.get("hsc.team_server") == team.url

    names = [f"s{i}" for i in range(3)]
    drivers = {}
    for name in names:
        (tmp_path / name).mkdir()
        drivers[name] = subprocess.Popen(
            search_cmd("--address", ray_cluster.address, "--tracking-uri", team.url, "--experiment", "team",
                       "--name", name, "--num-samples", str(TRIALS), "--max-epochs", str(EPOCHS), "--scheduler",
                       "fifo", "--max-concurrent", "1", "--space", "quick"),
            cwd=tmp_path / name, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=search_env(_cache_dir),
        )  # fmt: skip
    try:
        # mid-search: every search has its parent run and trials have started logging epochs
        deadline = time.monotonic() + 300
        while True:
            _, parents, children = search_runs(team.url, "team")
            if len(parents) == 3 and any(c.data.metrics.get("epoch", 0) >= 1 for c in children):
                break
            if time.monotonic() > deadline or any(d.poll() is not None for d in drivers.values()):
                pytest.fail("the three searches did not reach the server in time: "
                            + " ".join(d.stdout.read()[-2000:] for d in drivers.values() if d.poll() is not None))
            time.sleep(0.3)
        before = _snapshot(team.url, "team")
        running = [n for n, d in drivers.items() if d.poll() is None]
        assert running, "every search had finished before the stop: the restart would prove nothing"

        # kill the team server (SIGKILL: it stops nothing itself); its watchdogs stop MLflow and PostgreSQL (they
        # run in sessions of their own and outlived it, holding the port and the data folder); start it again on
        # the same data folder
        assert team.stop(sig=signal.SIGKILL) == -signal.SIGKILL
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", team.port))  # nothing listens there any more (a listener would make this fail)
        team.start()

        for name, d in drivers.items():
            out, _ = d.communicate(timeout=600)
            assert d.returncode == 0, f"{name}:\n{out[-5000:]}"
            assert "View run" not in out and "View experiment" not in out, out[-3000:]  # MLflow's own, per run
    finally:
        for d in drivers.values():
            if d.poll() is None:
                d.kill()
                d.wait(timeout=30)

    client, parents, children = search_runs(team.url, "team")
    assert sorted(p.info.run_name for p in parents) == names
    for p in parents:
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == p.info.run_id]
        trial_dirs = {d.name for d in (tmp_path / p.info.run_name / "ray_results" / p.info.run_name).iterdir()
                      if d.is_dir() and len(d.name) == 8}  # fmt: skip
        # exactly one child run per trial of this search, under this parent
        assert sorted(c.data.tags["hsc.trial_id"] for c in mine) == sorted(trial_dirs), p.info.run_name
        assert len(mine) == TRIALS
    assert len(children) == 3 * TRIALS
    assert all(r.info.status == "FINISHED" for r in parents + children)  # nothing left RUNNING
    for c in children:  # every epoch's metrics arrived: count them
        assert int(c.data.metrics["epoch"]) == EPOCHS
        # the trial's files went up through the server (the writer uploads to the run's artifact repository)
        assert c.info.artifact_uri.startswith("mlflow-artifacts:"), c.info.artifact_uri
        files = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert {"config.yaml", "cca_spectrum.csv", "plots"} <= files, (c.info.run_name, files)
        assert {a.path for a in client.list_artifacts(c.info.run_id, "plots")} >= {"plots/loss_weights.svg"}
        for key in ("val/map_avg", "loss/total", "weight/nce", "cca/rho_00", "time/epoch_s"):
            assert len(client.get_metric_history(c.info.run_id, key)) == EPOCHS, (c.info.run_name, key)
    assert_complete_histories(client, children)
    after = _snapshot(team.url, "team")
    for run_id, counts in before.items():  # what was there before the restart is still there
        assert run_id in after
        assert all(after[run_id].get(k, 0) >= n for k, n in counts.items()), run_id


def _artifacts(client, run_id, into: Path) -> dict[str, str]:
    """Every artifact file of a run: relative path -> sha256 of its content."""
    local = Path(client.download_artifacts(run_id, "", dst_path=str(into)))
    return {str(f.relative_to(local)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(local.rglob("*")) if f.is_file()}  # fmt: skip


def test_import_of_an_embedded_default_search_keeps_everything(team, ray_cluster, tmp_path, _cache_dir):
    from mlflow.tracking import MlflowClient

    from hsc_search.transfer import IMPORT_TAGS

    # a search with no --tracking-uri: MLflow's embedded default, sqlite:///mlflow.db (+ ./mlruns) in its folder
    proc = subprocess.run(
        search_cmd("--address", ray_cluster.address, "--experiment", "laptop", "--name", "local-1",
                   "--num-samples", "2", "--max-epochs", "2", "--space", "quick"),
        cwd=tmp_path, env=search_env(_cache_dir), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "mlflow.db").is_file()

    imp = [HSC, "import-runs", "--to", team.url, "--experiment", "laptop"]
    first = subprocess.run(imp, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 run(s) copied" in first.stdout

    src, dst = MlflowClient("sqlite:///" + str(tmp_path / "mlflow.db")), MlflowClient(team.url)
    a = {r.info.run_name: r for r in src.search_runs([src.get_experiment_by_name("laptop").experiment_id])}
    b = {r.info.run_name: r for r in dst.search_runs([dst.get_experiment_by_name("laptop").experiment_id])}
    assert sorted(a) == sorted(b) and len(a) == 3
    names_a = {r.info.run_id: n for n, r in a.items()}
    names_b = {r.info.run_id: n for n, r in b.items()}
    for name, ra in a.items():
        rb = b[name]
        for f in ("status", "start_time", "end_time", "user_id", "lifecycle_stage"):
            assert getattr(ra.info, f) == getattr(rb.info, f), (name, f)
        assert ra.data.params == rb.data.params
        ids = ("mlflow.parentRunId", "hsc.best_run_id")  # run ids: the copies' own, checked by name below
        tags_a = {k: v for k, v in ra.data.tags.items() if k not in ids}
        tags_b = {k: v for k, v in rb.data.tags.items() if k not in ids and k not in IMPORT_TAGS}
        assert tags_a == tags_b, name
        if "hsc.best_run_id" in ra.data.tags:  # the search's best trial: its copy here
            assert names_b[rb.data.tags["hsc.best_run_id"]] == names_a[ra.data.tags["hsc.best_run_id"]], name
        assert rb.data.tags["hsc.import.source_run"] == ra.info.run_id
        # nesting: the copy's parent is the copy of the original's parent
        parent_a = names_a.get(ra.data.tags.get("mlflow.parentRunId"))
        assert names_b.get(rb.data.tags.get("mlflow.parentRunId")) == parent_a
        assert ra.data.metrics == rb.data.metrics
        for key in ra.data.metrics:  # full histories, point by point (step, value, timestamp)
            ha = sorted((m.step, m.value, m.timestamp) for m in src.get_metric_history(ra.info.run_id, key))
            hb = sorted((m.step, m.value, m.timestamp) for m in dst.get_metric_history(rb.info.run_id, key))
            assert ha == hb, (name, key)
        arts = _artifacts(src, ra.info.run_id, tmp_path / "art" / ra.info.run_id)
        assert arts and arts == _artifacts(dst, rb.info.run_id, tmp_path / "art" / rb.info.run_id), name
    assert sum(1 for r in a.values() if "mlflow.parentRunId" in r.data.tags) == 2

    # running it again copies nothing twice
    again = subprocess.run(imp, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 run(s) copied" in again.stdout and "3 already" in again.stdout, again.stdout
    assert len(dst.search_runs([dst.get_experiment_by_name("laptop").experiment_id])) == 3


def test_bad_input_gets_a_clear_error_and_exit_2(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([HSC, "team-server", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and f"--port {port}" in r.stderr and "in use" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    cases = [
        (["team-server", "--data-dir", str(tmp_path / "no" / "such" / "dir")], "its parent folder"),
        (["team-server", "--data-dir", str(tmp_path / "mine")], "holds other files (notes.txt)"),
        (["team-server", "--data-dir", "/sys/hsc-team-data"], "--data-dir /sys/hsc-team-data: cannot "),  # a traceback
        (["import-runs", "--to", "http://127.0.0.1:1"], "no such file"),  # no mlflow.db in tmp_path
        (["import-runs", "--from", "mlflow.db", "--to", "http://127.0.0.1:1"], "expected a tracking URI"),
        (["import-runs", "--from", "ftp://x/y", "--to", "http://127.0.0.1:1"], "unknown scheme 'ftp'"),
    ]
    for args, message in cases:
        r = subprocess.run([HSC, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_an_import_from_a_servers_own_database_is_refused_before_anything_is_copied(tmp_path):
    """The team server's database URI as --from: its experiments keep their artifacts at mlflow-artifacts:/, which
    only the server's clients read; the import created a half copy in the destination, left RUNNING, then failed
    with MLflow's truncated text (a walkthrough)."""
    from mlflow.tracking import MlflowClient

    from hsc_search.transfer import TransferError, copy_searches

    src_uri, dst_uri = f"sqlite:///{tmp_path / 'server.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    src = MlflowClient(src_uri)
    exp = src.create_experiment("hsc-search", artifact_location="mlflow-artifacts:/1")
    src.set_terminated(src.create_run(exp, run_name="s").info.run_id)
    with pytest.raises(TransferError, match=r"experiment 'hsc-search' keeps its artifacts on an MLflow server "
                                            r"\(mlflow-artifacts:/1\).*--from the server's http://HOST:PORT"):
        copy_searches(src_uri, dst_uri, echo=lambda s: None)
    assert not (tmp_path / "dst.db").exists()


def test_a_deleted_search_with_a_best_trial_is_imported_and_imported_again(tmp_path, monkeypatch):
    """Its best-trial tag is named by the copy's id, but a deleted run takes no tags: every import failed on it,
    saying the next one would finish (the review)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from hsc_search.transfer import TAG_SOURCE_RUN, copy_searches

    monkeypatch.chdir(tmp_path)
    src_uri, dst_uri = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    src = MlflowClient(src_uri)
    exp = src.create_experiment("e")
    kept = src.create_run(exp, run_name="kept", tags={"hsc.kind": "search"}).info.run_id
    gone = src.create_run(exp, run_name="gone", tags={"hsc.kind": "search"}).info.run_id
    for parent in (kept, gone):
        child = src.create_run(exp, run_name="t", tags={"mlflow.parentRunId": parent}).info.run_id
        src.set_terminated(child)
        src.set_tag(parent, "hsc.best_run_id", child)
        src.set_terminated(parent)
    src.delete_run(gone)
    for _ in range(2):
        copy_searches(src_uri, dst_uri, echo=lambda s: None)
    dst = MlflowClient(dst_uri)
    copies = {r.data.tags[TAG_SOURCE_RUN]: r for r in dst.search_runs([dst.get_experiment_by_name("e").experiment_id],
                                                                      run_view_type=ViewType.ALL)}  # fmt: skip
    assert copies[gone].info.lifecycle_stage == "deleted" and copies[kept].info.lifecycle_stage == "active"
    best = src.get_run(kept).data.tags["hsc.best_run_id"]
    assert copies[kept].data.tags["hsc.best_run_id"] == copies[best].info.run_id


def test_copy_resumes_a_cut_short_import_and_keeps_deleted_runs(tmp_path, monkeypatch):
    """sqlite to sqlite, no server: a copy cut short is made again (once), a soft-deleted run stays deleted."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from hsc_search.transfer import TAG_SOURCE_RUN, copy_searches

    monkeypatch.chdir(tmp_path)  # both stores keep their artifacts under ./mlruns
    src_uri, dst_uri = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    src = MlflowClient(src_uri)
    exp = src.create_experiment("e")
    parent = src.create_run(exp, run_name="search", start_time=1_000).info.run_id
    kids = [src.create_run(exp, run_name=f"t{i}", start_time=2_000 + i, tags={"mlflow.parentRunId": parent}).info.run_id
            for i in range(2)]  # fmt: skip
    for i, k in enumerate(kids):
        src.log_batch(k, metrics=[Metric("val/map_avg", 0.1 * s + i, 5_000 + s, s) for s in range(1, 4)])
        src.log_text(k, f"trial {i}", "config.yaml")
        src.set_terminated(k, "FINISHED", end_time=9_000 + i)
    src.set_terminated(parent, "FINISHED", end_time=9_999)
    src.delete_run(kids[1])

    dst = MlflowClient(dst_uri)
    half = dst.create_run(dst.create_experiment("e"), run_name="t0", tags={TAG_SOURCE_RUN: kids[0]})  # cut short
    report = copy_searches(src_uri, dst_uri, ["e"], echo=lambda s: None)
    assert (report.copied, report.redone, report.skipped) == (3, 1, 0)
    assert dst.get_run(half.info.run_id).info.lifecycle_stage == "deleted"
    from mlflow.entities import ViewType

    copies = {r.info.run_name: r for r in dst.search_runs([dst.get_experiment_by_name("e").experiment_id],
                                                          run_view_type=ViewType.ALL) if r.info.run_id != half.info.run_id}
    assert sorted(copies) == ["search", "t0", "t1"]
    assert copies["t1"].info.lifecycle_stage == "deleted" and copies["t0"].info.lifecycle_stage == "active"
    assert copies["t0"].info.start_time == 2_000 and copies["t0"].info.end_time == 9_000
    assert copies["t1"].data.tags["mlflow.parentRunId"] == copies["search"].info.run_id
    hist = [(m.step, m.value, m.timestamp) for m in dst.get_metric_history(copies["t1"].info.run_id, "val/map_avg")]
    assert sorted(hist) == [(s, 0.1 * s + 1, 5_000 + s) for s in range(1, 4)]
    again = copy_searches(src_uri, dst_uri, ["e"], echo=lambda s: None)
    assert (again.copied, again.skipped) == (0, 3)
    # the search changes at the source (a resume): its copy is made again, and its trials' copies point at the new
    # one, the deleted trial's too, which stays deleted (it stayed under the deleted old copy: a walkthrough)
    src.set_tag(parent, "note", "changed")
    third = copy_searches(src_uri, dst_uri, ["e"], echo=lambda s: None)
    assert (third.copied, third.skipped, third.updated) == (1, 2, 1)
    new_parent = next(r for r in dst.search_runs([dst.get_experiment_by_name("e").experiment_id])
                      if r.info.run_name == "search").info.run_id  # (the active one: the old copy is deleted)
    assert new_parent != copies["search"].info.run_id
    for name, stage in (("t0", "active"), ("t1", "deleted")):
        run = dst.get_run(copies[name].info.run_id)
        assert run.data.tags["mlflow.parentRunId"] == new_parent and run.info.lifecycle_stage == stage, (name, run)


def test_runs_that_change_after_their_import_are_copied_again_once(tmp_path, monkeypatch):
    """sqlite to sqlite, no server. Importing a search still running froze its copies (the parent RUNNING without
    its best-trial tag, a trial with the points it had then), and every later import said 'already there'; a
    soft-deleted half copy could hide the complete copy of its run, which was then copied a second time."""
    from mlflow.entities import Metric, ViewType
    from mlflow.tracking import MlflowClient

    from hsc_search.transfer import TAG_SOURCE_RUN, copy_searches

    monkeypatch.chdir(tmp_path)
    src_uri, dst_uri = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    src = MlflowClient(src_uri)
    exp = src.create_experiment("e")
    parent = src.create_run(exp, run_name="search", start_time=1_000).info.run_id
    kids = [src.create_run(exp, run_name=f"t{i}", start_time=2_000 + i, tags={"mlflow.parentRunId": parent}).info.run_id
            for i in range(2)]  # fmt: skip
    src.log_batch(kids[0], metrics=[Metric("val/map_avg", 0.1 * s, 5_000 + s, s) for s in (1, 2, 3)])
    src.set_terminated(kids[0], "FINISHED", end_time=9_000)
    src.log_batch(kids[1], metrics=[Metric("val/map_avg", 0.2 * s, 6_000 + s, s) for s in (1, 2)])  # running
    said = []
    first = copy_searches(src_uri, dst_uri, ["e"], echo=said.append)
    assert (first.copied, first.running) == (3, 2), said
    assert any(line.startswith("note: 2 run(s) still running at ") for line in said), said

    src.log_batch(kids[1], metrics=[Metric("val/map_avg", 0.6, 6_003, 3)])  # the search goes on and ends
    src.set_terminated(kids[1], "FINISHED", end_time=9_001)
    src.set_tag(parent, "hsc.best_run_id", kids[1])
    src.set_terminated(parent, "FINISHED", end_time=9_999)
    said = []
    second = copy_searches(src_uri, dst_uri, ["e"], echo=said.append)
    assert (second.copied, second.updated, second.skipped, second.running) == (2, 2, 1, 0), said
    assert "experiment e: 2 run(s) copied, 1 already there (2 changed at the source since their copy, copied again)" \
        in said  # fmt: skip

    dst = MlflowClient(dst_uri)
    dst_exp = dst.get_experiment_by_name("e").experiment_id

    def active() -> dict:
        runs = dst.search_runs([dst_exp], run_view_type=ViewType.ACTIVE_ONLY)
        assert len(runs) == 3, [(r.info.run_name, r.data.tags.get(TAG_SOURCE_RUN)) for r in runs]  # one copy each
        return {r.data.tags[TAG_SOURCE_RUN]: r for r in runs}

    copies = active()
    for sid in (parent, *kids):  # each copy as its source run is now
        s, c = src.get_run(sid), copies[sid]
        assert (c.info.status, c.info.end_time) == (s.info.status, s.info.end_time)
        assert [(m.step, m.value) for m in dst.get_metric_history(c.info.run_id, "val/map_avg")] == \
            [(m.step, m.value) for m in src.get_metric_history(sid, "val/map_avg")]  # fmt: skip
    # the search's best trial by its copy's id (the source's id named a run this store does not have: a walkthrough)
    assert copies[parent].data.tags["hsc.best_run_id"] == copies[kids[1]].info.run_id != kids[1]
    for k in kids:  # the trials point at the parent's new copy
        assert copies[k].data.tags["mlflow.parentRunId"] == copies[parent].info.run_id

    # soft-deleted half copies of t0 (imports cut short), with t0's start time as copies have: whatever their
    # order in the store (by run id among equal start times), the complete copy is still taken as t0's copy
    for _ in range(6):
        half = dst.create_run(dst_exp, run_name="t0", start_time=2_000, tags={TAG_SOURCE_RUN: kids[0]}).info.run_id
        dst.delete_run(half)
    third = copy_searches(src_uri, dst_uri, ["e"], echo=lambda s: None)
    assert (third.copied, third.updated, third.skipped) == (0, 0, 3)
    assert {k: r.info.run_id for k, r in active().items()} == {k: r.info.run_id for k, r in copies.items()}

    # t0 changes at the source; the import that copies it again is cut short after deleting the old copy and
    # starting the new one (an active half copy beside the deleted complete one): the next import replaces the
    # half copy, leaving one copy of t0, complete
    src.set_tag(kids[0], "note", "changed")
    dst.delete_run(copies[kids[0]].info.run_id)
    dst.create_run(dst_exp, run_name="t0", start_time=2_000, tags={TAG_SOURCE_RUN: kids[0]})
    fourth = copy_searches(src_uri, dst_uri, ["e"], echo=lambda s: None)
    assert (fourth.copied, fourth.redone, fourth.skipped) == (1, 1, 2)
    t0 = active()[kids[0]]
    assert t0.data.tags["note"] == "changed" and t0.data.tags.get("hsc.import.source_uri") == src_uri

    # a report logged to the search after its import (`hsc-search report` logs report.html, an artifact alone
    # changed nothing the import compared): the next import copies the parent again, the report with it
    from hsc_search.report import _log_as_artifact

    (tmp_path / "r.html").write_text("<html>report</html>")
    _log_as_artifact(src, parent, tmp_path / "r.html")
    fifth = copy_searches(src_uri, dst_uri, ["e"], echo=lambda s: None)
    assert (fifth.copied, fifth.updated, fifth.skipped) == (1, 1, 2)
    new_parent = active()[parent]
    assert [f.path for f in dst.list_artifacts(new_parent.info.run_id)] == ["report.html"]
    assert all(r.data.tags["mlflow.parentRunId"] == new_parent.info.run_id for k, r in active().items() if k != parent)


def test_a_destination_that_fails_mid_copy_is_one_line_and_the_next_import_finishes(tmp_path, monkeypatch):
    """A destination that stops taking writes in the middle of a copy (here: its artifact folder made read-only;
    a server going away fails in the same place) ended in a traceback."""
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from conftest import read_only
    from hsc_search.cli import app

    monkeypatch.chdir(tmp_path)
    src_uri, dst_uri = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    src = MlflowClient(src_uri)
    exp = src.create_experiment("e", artifact_location=str(tmp_path / "src_art"))
    run = src.create_run(exp, run_name="t0").info.run_id
    src.log_text(run, "lr: 0.001\n", "config.yaml")
    src.set_terminated(run)
    (tmp_path / "ro").mkdir()
    MlflowClient(dst_uri).create_experiment("e", artifact_location=str(tmp_path / "ro"))
    with read_only(tmp_path / "ro"):
        result = CliRunner().invoke(app, ["import-runs", "--from", src_uri, "--to", dst_uri])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines[-1].startswith(f"error: run {run}: the copy failed (") and lines[-1].endswith(
        "the runs copied so far are kept, and the same import-runs copies this one and the rest"), result.output
    result = CliRunner().invoke(app, ["import-runs", "--from", src_uri, "--to", dst_uri])  # writable again
    assert result.exit_code == 0 and "1 run(s) copied" in result.output and "1 half-copied before" in result.output, \
        result.output  # fmt: skip


def test_a_data_folder_of_another_account_is_one_sentence(tmp_path):
    """Started on a data folder made with another --run-as, PostgreSQL exited with 20 lines of its log ending in
    'Permission denied'; now one sentence naming the owner, before anything starts."""
    import os
    import pwd

    from hsc_search.teamserver import Postgres, TeamServerError

    if os.geteuid() != 0:
        pytest.skip("needs root, to give the folder to another account")
    accounts = [p for p in pwd.getpwall() if p.pw_uid != 0]
    owner, other = accounts[0], accounts[1]
    data = tmp_path / "pgdata"
    data.mkdir()
    (data / "PG_VERSION").write_text("16\n")
    os.chown(data, owner.pw_uid, owner.pw_gid)
    with pytest.raises(TeamServerError, match=f"^--data-dir: {data} belongs to {owner.pw_name} and PostgreSQL runs "
                                              f"only as the owner of its data: pass --run-as {owner.pw_name}$"):
        Postgres(data, run_as=other.pw_name)


def test_an_unknown_run_as_account_leaves_no_folder(tmp_path):
    r = subprocess.run([HSC, "team-server", "--data-dir", str(tmp_path / "three"), "--run-as", "no-such-user-x"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "--run-as no-such-user-x: no such account on this machine" in r.stderr, r.stderr
    assert not (tmp_path / "three").exists()


def test_a_stale_lock_file_and_a_read_only_data_folder_are_one_sentence_each():
    """A postmaster.pid left by a crash, its pid now another program's, was called a running PostgreSQL with no
    way out; a data folder PostgreSQL cannot write said 2,000 characters of its log, the cause in the last line,
    or (without a log yet) a traceback (a walkthrough)."""
    base = Path(tempfile.mkdtemp(prefix="hsc-team-"))  # (not tmp_path: as in `team`)
    try:
        if _run_as():  # as root: a folder above that PostgreSQL's account cannot enter (mkdtemp's 0700) is named,
            # and no data folder is left behind, the account's (a walkthrough)
            from hsc_search.teamserver import Postgres, TeamServerError

            with pytest.raises(TeamServerError) as e:
                Postgres(base / "pgdata", run_as=_run_as()[1]).init()
            assert str(e.value) == (f"{base / 'pgdata'}: account {_run_as()[1]}, which runs PostgreSQL, cannot enter "
                                    f"{base} (mode 700); choose a data folder that account can reach, or let it in "
                                    f"(e.g. chmod o+x {base})"), str(e.value)
            assert list(base.iterdir()) == []
        base.chmod(0o711)
        _stale_lock_and_read_only(base / "pgdata", _run_as())
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _stale_lock_and_read_only(data: Path, run_as: list[str]) -> None:
    from conftest import read_only

    from hsc_search.teamserver import Postgres, TeamServerError

    pg = Postgres(data, run_as=run_as[1] if run_as else None)
    pg.start(timeout=60)  # first (read_only below skips where root cannot lock a folder: the review)
    try:
        _a_servers_database_is_refused_before_ray(pg.uri())
    finally:
        pg.stop()
    other = subprocess.Popen(["sleep", "120"])
    try:
        deadline = time.monotonic() + 10  # until the child runs sleep (forked, it is python a moment)
        while Path(f"/proc/{other.pid}/comm").read_text().strip() != "sleep" and time.monotonic() < deadline:
            time.sleep(0.05)
        (data / "postmaster.pid").write_text(f"{other.pid}\n{data}\n")
        with pytest.raises(TeamServerError) as e:
            pg.start(timeout=30)
        assert str(e.value) == (f"{data}: its lock file postmaster.pid names pid {other.pid}, which is now sleep, not "
                                "PostgreSQL: a server that ended without removing it (a crash or a reboot). Check no "
                                f"PostgreSQL runs on this folder, then remove {data / 'postmaster.pid'} and start "
                                "again"), str(e.value)
    finally:
        other.kill()
        other.wait(timeout=10)
    (data / "postmaster.pid").unlink()
    (data / "server.log").unlink()
    with read_only(data):  # no log yet: it cannot be made
        with pytest.raises(TeamServerError, match=f"^{data}: cannot be written \\(.*\\); PostgreSQL keeps its lock "
                                                  "file and log there$"):  # fmt: skip
            pg.start(timeout=30)
    (data / "server.log").write_text("2026-12-06 LOG:  an earlier start's line\n" * 100)
    if run_as:
        shutil.chown(data / "server.log", user=run_as[1])
    with read_only(data):  # a log of earlier starts: PostgreSQL's own reason, alone
        with pytest.raises(TeamServerError) as e:
            try:
                pg.start(timeout=30)
            finally:  # (one that started after all is not left running)
                pg.stop()
    assert str(e.value).startswith(f"PostgreSQL on {data} exited at start: could not create lock file "
                                   '"postmaster.pid"'), str(e.value)
    assert "earlier start" not in str(e.value)
    (data / "server.log").write_text("")
    data.chmod(0o777)  # PostgreSQL's FATAL, then its DETAIL: how to mend it (the review: it was left out)
    with pytest.raises(TeamServerError) as e:
        pg.start(timeout=30)
    assert str(e.value).endswith("has invalid permissions Permissions should be u=rwx (0700) or u=rwx,g=rx (0750)."), \
        str(e.value)
    data.chmod(0o700)
    pg.start(timeout=60)  # writable again: it starts, and stops
    pg.stop()


def _a_servers_database_is_refused_before_ray(uri: str) -> None:
    """A team server's database URI given to a search: refused once Ray had started (34 s into a loaded machine's
    start, and not at all for a new experiment: a walkthrough); now by the pre-flight's connection, which finds the
    tag the team server puts on its Default experiment (a store without it, e.g. one `mlflow ui` gave a served
    Default experiment, is not refused: the review)."""
    from mlflow.tracking import MlflowClient

    from hsc_search import preflight
    from hsc_search.runs import StoreError, check_store_to_read

    preflight.check_tracking(uri, timeout_s=10)  # the database alone, no MLflow tables yet
    client = MlflowClient(uri)
    client.create_experiment("served", artifact_location="mlflow-artifacts:/1")  # as `mlflow ui` makes them
    preflight.check_tracking(uri, timeout_s=10)  # not a team server's: fine
    client.set_experiment_tag("0", "hsc.team_server", "http://127.0.0.1:5731")  # as `hsc-search team-server` does
    said = (f"--tracking-uri {uri}: the database of hsc-search's team server (http://127.0.0.1:5731 as it was "
            "started), which keeps the artifacts that only its own clients reach: give --tracking-uri the server's "
            "http://HOST:PORT (`hsc-search team-server` prints it)")  # fmt: skip
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check_tracking(uri, timeout_s=10)
    assert str(e.value) == said, str(e.value)
    with pytest.raises(StoreError) as e:  # export-best, report, replay
        check_store_to_read(uri)
    assert str(e.value) == said, str(e.value)
    with pytest.MonkeyPatch.context() as mp:  # named as where it came from (it said --tracking-uri: the review)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        with pytest.raises(StoreError, match=r"^\$MLFLOW_TRACKING_URI postgresql.*: give MLFLOW_TRACKING_URI the "):
            check_store_to_read(None)
