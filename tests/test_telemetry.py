"""No search phones home: importing hsc_search turns off MLflow's telemetry and Ray's usage stats (both on by
default) for the process and what it starts, unless the user chose otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# what MLflow reads to decide it runs under CI or a test (it sends nothing then): removed, so that the child sees
# what a user's shell would give it
CI_MARKERS = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE", "TF_BUILD",
              "CIRCLECI", "TRAVIS", "TEAMCITY_VERSION", "CODEBUILD_BUILD_ARN", "BITBUCKET_BUILD_NUMBER")  # fmt: skip


def _child(code: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in CI_MARKERS and k not in ("MLFLOW_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED", "DO_NOT_TRACK")}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_mlflow_and_ray_telemetry_are_off_after_importing_the_package():
    got = _child(
        "import json, os, hsc_search, mlflow\n"
        "from mlflow.telemetry.client import get_telemetry_client\n"
        "from mlflow.telemetry.utils import is_telemetry_disabled\n"
        "from ray._common.usage.usage_lib import usage_stats_enabled\n"
        "print(json.dumps({'mlflow_off': is_telemetry_disabled(), 'client': get_telemetry_client() is not None,"
        " 'ray_on': usage_stats_enabled()}))"
    )
    # MLflow's own test: disabled, so no telemetry client (and no thread posting records) was started at import
    assert got == {"mlflow_off": True, "client": False, "ray_on": False}


def test_a_users_own_choice_wins():
    # checked on the variables only: importing mlflow with telemetry on would try to reach MLflow's servers
    got = _child("import json, os, hsc_search\n"
                 "print(json.dumps({k: os.environ.get(k) for k in ('MLFLOW_DISABLE_TELEMETRY', 'RAY_USAGE_STATS_ENABLED')}))",
                 MLFLOW_DISABLE_TELEMETRY="false", RAY_USAGE_STATS_ENABLED="1")  # fmt: skip
    assert got == {"MLFLOW_DISABLE_TELEMETRY": "false", "RAY_USAGE_STATS_ENABLED": "1"}


# The first import of MLflow happens in three threads of a search at once (the store opening and the writer
# while Ray starts, the driver's thread after); MLflow's package imports in cycles, so unguarded that raised
# "partially initialized module" or _DeadlockError in 4 of 4 fresh processes on a slow 2-core VM.
RACE = """
import sys, tempfile, threading
from hsc_search import runs
uri = 'sqlite:///' + tempfile.mkdtemp() + '/mlflow.db'
errors, barrier = [], threading.Barrier(3)

def opening_or_writer():  # what driver._opening and the writer's _Sink do first
    barrier.wait()
    try:
        runs.client_for(uri)
    except BaseException as e:
        errors.append(repr(e))

def driver_thread():  # what driver._launch does after Ray is up
    barrier.wait()
    try:
        runs.import_mlflow()
        from mlflow.entities import RunTag  # noqa: F401
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository  # noqa: F401
    except BaseException as e:
        errors.append(repr(e))

threads = [threading.Thread(target=f) for f in (opening_or_writer, opening_or_writer, driver_thread)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(errors)
"""


def test_mlflow_imported_by_three_threads_at_once_in_a_fresh_process():
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", RACE], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-3000:]
