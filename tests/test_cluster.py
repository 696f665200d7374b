"""On a real (local) Ray cluster: the launcher files, a multi-node search against an MLflow tracking server, and
the check that every node sees the storage. Faults are in test_faults.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import assert_complete_histories, node_ids, search_cmd, search_env, search_runs

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ launcher files
@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_files_pass_rays_validator(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / name).read_text())
    validate_config(prepare_config(cfg))  # raises on anything Ray's schema rejects
    for node_type in cfg.get("available_node_types", {}).values():
        for resource, amount in node_type.get("resources", {}).items():
            assert isinstance(amount, int), f"{name}: {resource} must be an integer on a node type"
    starts = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts
    assert "sqlite" not in starts  # the tracking data must not live on a disk that `ray down` deletes
    if "mlflow server" in starts:  # AWS: a stateless MLflow server on the head, its runs in PostgreSQL
        assert "--host 127.0.0.1" in starts and "postgresql+psycopg://" in starts and "s3://" in starts
        assert "MLFLOW_DISABLE_TELEMETRY=true nohup mlflow server" in starts  # no usage records sent to MLflow
    else:  # on-prem: the head's 127.0.0.1:5000 is a tunnel to the team server on a machine that stays
        assert "-L 127.0.0.1:5000:127.0.0.1:5000" in starts
    assert all("RAY_AUTH_MODE=token" in c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
               if "ray " in c)  # fmt: skip
    # `pkill -f PATTERN` must not match the shell Ray runs the command in, whose command line is the command
    # itself (`pkill -f "mlflow server"` killed it: exit 143, and `ray up` failed; a walkthrough)
    import re
    import shlex

    for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        for m in re.finditer(r"pkill -f (\"[^\"]+\"|'[^']+'|\S+)", c):
            assert re.search(shlex.split(m.group(1))[0], c) is None, (name, c)
    # every node gets the `cluster` extra: ray[default] at the project's Ray pin (the dashboard; a walkthrough found
    # the head in minimal mode, with no dashboard for `ray dashboard cluster.yaml` to open)
    assert '-e "$HOME/hsc-search[cluster]"' in " ".join(cfg["setup_commands"]), cfg["setup_commands"]
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pin = next(d for d in project["dependencies"] if d.startswith("ray[tune]")).split("==")[1]
    assert project["optional-dependencies"]["cluster"] == [f"ray[default]=={pin}"]
    # no usage stats sent to Ray's makers from a head with a dashboard (hsc_search/__init__.py)
    assert all("RAY_USAGE_STATS_ENABLED=0 ray start" in c for c in cfg["head_start_ray_commands"]
               + cfg["worker_start_ray_commands"] if "ray start" in c)  # fmt: skip


def test_aws_file_has_a_gpu_worker_type():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"].get("CPU") == 0  # the head runs the driver, not trials
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())


def test_aws_file_keeps_the_database_password_out_of_the_repository():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert cfg["file_mounts"]["~/.pgpass"] == "~/.hsc-search/pgpass"  # libpq reads the password there
    assert cfg["provider"]["security_group"]["GroupName"] == "hsc-search-nodes"  # the RDS instance's group too
    assert "chmod 600 ~/.pgpass" in " ".join(cfg["head_start_ray_commands"])


# ------------------------------------------------------------------------------------------ a 3-node cluster
@pytest.fixture(scope="module")
def ray_cluster():
    """A head with no CPUs and two worker nodes of 1 CPU each, in this process tree; shut down by its handle."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes(timeout=120)
    yield cluster, workers
    cluster.shutdown()


def test_multi_node_search_reaches_the_tracking_server(ray_cluster, tracking_server, tmp_path, _cache_dir):
    cluster, _ = ray_cluster
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(  # the cluster as RAY_ADDRESS (`--address` in test_faults.py)
        search_cmd("--tracking-uri", tracking_server.url, "--experiment", "multi",
                    "--num-samples", "4", "--max-epochs", "8", "--scheduler", "fifo", "--name", "multi"),
        cwd=work, env={**search_env(_cache_dir), "RAY_ADDRESS": cluster.address}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Ray: 3 node(s)" in proc.stdout
    # recorded: the printed `resume`, pasted in a shell without RAY_ADDRESS, must join this cluster again (it
    # started a local Ray of its own; a walkthrough)
    import json

    assert json.loads((work / "ray_results" / "multi" / "hsc_search.json").read_text())["settings"]["address"] \
        == cluster.address  # fmt: skip
    client, parents, children = search_runs(tracking_server.url, "multi")
    assert len(parents) == 1 and len(children) == 4
    assert all(r.info.status == "FINISHED" for r in parents + children)
    assert_complete_histories(client, children)
    nodes = {n for c in children for n in node_ids(c)}
    assert len(nodes) >= 2, f"trials ran on {nodes}"
    assert not (work / "mlflow.db").exists()  # everything went to the server
    assert "is a file on the driver's machine" not in proc.stdout  # (said of a sqlite store only, below)


def test_a_cluster_search_with_a_sqlite_store_is_told_where_its_runs_stay(ray_cluster):
    """A search on a cluster logging to a sqlite file works (only the driver writes it), and its runs stay on the
    driver's machine: a cloud head's disk went at `ray down`, unsaid (a walkthrough). Said once, of several nodes."""
    import ray

    from hsc_search.driver import _echo_cluster

    cluster, _ = ray_cluster
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        said: list[str] = []
        _echo_cluster(said.append, 3, None, "sqlite:////home/ana/mlflow.db")
        assert said[0].startswith("Ray: 3 node(s)") and said[1].startswith(
            "note: MLflow's store sqlite:////home/ana/mlflow.db is a file on the driver's machine"), said  # fmt: skip
        for nodes, store in ((3, "http://127.0.0.1:5000"), (3, None), (1, "sqlite:///mlflow.db")):
            said.clear()
            _echo_cluster(said.append, nodes, None, store)
            assert len(said) == 1, (nodes, store, said)
    finally:
        ray.shutdown()


def test_storage_check_names_a_node_that_cannot_see_the_storage(ray_cluster, tmp_path):
    import ray

    from hsc_search.storage import StorageError, check_visible_from_all_nodes

    cluster, _ = ray_cluster
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        assert check_visible_from_all_nodes(str(tmp_path / "shared")) == 3
        # the nodes look where the marker is not: what a worker without the shared mount would see
        with pytest.raises(StorageError, match=r"not visible from every Ray node(.|\n)*FileNotFoundError"):
            check_visible_from_all_nodes(str(tmp_path / "shared"), marker_dir=str(tmp_path / "elsewhere"))
        # a node that dies as a search starts: Ray lists it as alive for a while, and the check's task for it is
        # unschedulable; that was a traceback out of `run` (a walkthrough). It is left out: no trial goes there
        # either. (The last test of this module's cluster: it loses a node here.)
        cluster.remove_node(ray_cluster[1][1], allow_graceful=False)
        assert check_visible_from_all_nodes(str(tmp_path / "shared"), timeout_s=60) == 2
    finally:
        ray.shutdown()
