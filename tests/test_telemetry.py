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
