"""Shared fixtures: a small synthetic dataset (generated once per session) and an isolated cache dir."""

from __future__ import annotations

import contextlib
import os

import hsc_search  # noqa: F401 - first: it turns MLflow's and Ray's telemetry off before either is imported

import pytest

SMALL = "synthetic:ave?n_train=600&n_val=150&n_test=150&dim_audio=16&dim_visual=24&num_classes=6&seed=1"


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Synthetic datasets go to a per-session cache, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("hsc_cache")
    old = os.environ.get("HSC_CACHE_DIR")
    os.environ["HSC_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("HSC_CACHE_DIR", None)
    else:
        os.environ["HSC_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _mlflow_http_settings():
    """The read commands (export-best, report, replay, import-runs) bound MLflow's HTTP retries in their own
    process's environment; run in process by a test (CliRunner), that must not reach later tests' searches."""
    keys = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    before = {k: os.environ.get(k) for k in keys}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def small_spec() -> str:
    return SMALL


@pytest.fixture(scope="session")
def small_data(_cache_dir):
    from trainer import load_data

    return load_data(SMALL)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (sqlite backend), started and stopped by its process group."""

    def __init__(self, db_path, artifacts_dir, port: int | None = None, artifact_args: list[str] | None = None):
        self.db_path, self.artifacts_dir = db_path, artifacts_dir
        # how it keeps artifacts (default: it serves them from artifacts_dir)
        self.artifact_args = artifact_args or ["--artifacts-destination", str(artifacts_dir)]
        self.chosen = port is None  # a free port, found now and bound by the server later: another may take it
        self.port = port if port is not None else _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 90.0) -> "MlflowServer":
        import os
        import subprocess
        import sys
        import time
        import urllib.request
        from pathlib import Path

        mlflow = Path(sys.executable).parent / "mlflow"
        # no job runners (the team server turns them off too): a test needs none, and they loaded 2 cores
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.db_path}", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1", *self.artifact_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2)
                self.chosen = False  # its port now: a restart (a test's outage) comes back on it, or fails
                return self
            except BaseException as e:
                if not isinstance(e, OSError):  # (a bad URL, a Ctrl-C): the server is not left running
                    self.stop()
                    raise
                if self.proc.poll() is not None and self.chosen:  # its port taken since it was found free: once
                    self.chosen, self.port = False, _free_port()  # more on another
                    self.url = f"http://127.0.0.1:{self.port}"
                    return self.start(max(30.0, deadline - time.monotonic()))
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"mlflow server did not come up on {self.url} within {timeout} s")
                time.sleep(0.5)

    def stop(self, kill: bool = False) -> None:
        import os
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


@pytest.fixture()
def tracking_server(tmp_path):
    """A fresh `mlflow server` on 127.0.0.1 for one test."""
    server = MlflowServer(tmp_path / "mlflow.db", tmp_path / "artifacts").start()
    yield server
    server.stop()


# --------------------------------------------------------------------------------- helpers for search tests
SEARCH_DATA = "synthetic:ave?n_train=500&n_val=120&n_test=150&dim_audio=16&dim_visual=24&num_classes=6&seed=3"


def search_env(cache, **extra) -> dict:
    import os

    # not what importing hsc_search.cli set in this test process: the command must set it itself
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"}
    return {**env, "HSC_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1", **extra}


def search_cmd(*args) -> list[str]:
    import sys
    from pathlib import Path

    return [str(Path(sys.executable).parent / "hsc-search"), "run", "--data", SEARCH_DATA, *args]


def search_runs(url, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, [], []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return (client, [r for r in runs if r.data.tags.get("hsc.kind") == "search"],
            [r for r in runs if r.data.tags.get("hsc.kind") == "trial"])  # fmt: skip


def node_ids(run) -> list[str]:
    import re

    return re.findall(r"node ([0-9a-f]{6,})", run.data.tags.get("hsc.node", ""))


def assert_complete_histories(client, children):
    for c in children:
        steps = sorted(m.step for m in client.get_metric_history(c.info.run_id, "val/map_avg"))
        assert steps == list(range(1, int(c.data.metrics["epoch"]) + 1)), (c.info.run_name, steps)
        for key in ("loss/total", "weight/nce", "cca/rho_00"):
            assert sorted(m.step for m in client.get_metric_history(c.info.run_id, key)) == steps


@contextlib.contextmanager
def read_only(path):
    """`path` (a file or a folder) cannot be written while inside: by its permission bits, or as root (whom they do
    not stop) by the immutable flag. Where root lacks the capability for it (CAP_LINUX_IMMUTABLE, e.g. a default
    Docker container) nothing here can make a path read-only, and the test says so by skipping."""
    import os
    import subprocess

    root = os.geteuid() == 0
    lock, unlock = (["chattr", "+i"], ["chattr", "-i"]) if root else (["chmod", "a-w"], ["chmod", "u+w"])
    made = subprocess.run([*lock, str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make {path} read-only here ({made.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run([*unlock, str(path)], check=True)


@contextlib.contextmanager
def small_disk(path, size: str = "1m", prepare=None, read_only: bool = False):
    """A file system of its own at the new folder `path`: a tmpfs of `size` bytes (a disk that fills for real),
    made by `prepare(path)` while writable and then, with `read_only`, mounted read-only (what no permission lets
    anyone write, root included). Needs root with CAP_SYS_ADMIN (CI's machine); elsewhere the test says so by
    skipping."""
    import subprocess

    path.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a file system at {path} here ({made.stderr.strip()})")
    try:
        if prepare is not None:
            prepare(path)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True, timeout=30)
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True, capture_output=True, timeout=30)
