"""On a real (local) Ray cluster: the launcher files, a multi-node search against an MLflow tracking server, and
the check that every node sees the storage. Faults are in test_faults.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import MlflowServer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = "synthetic:ave?n_train=500&n_val=120&n_test=150&dim_audio=16&dim_visual=24&num_classes=6&seed=3"


def _env(cache, **extra) -> dict:
    return {**os.environ, "HSC_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1", **extra}


def _search_cmd(*args) -> list[str]:
    return [str(BIN / "hsc-search"), "run", "--data", DATA, *args]


def _children(url, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, [], []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return (client, [r for r in runs if r.data.tags.get("hsc.kind") == "search"],
            [r for r in runs if r.data.tags.get("hsc.kind") == "trial"])  # fmt: skip


def _node_ids(run) -> list[str]:
    return re.findall(r"node ([0-9a-f]{6,})", run.data.tags.get("hsc.node", ""))


def _assert_complete_histories(client, children):
    for c in children:
        steps = sorted(m.step for m in client.get_metric_history(c.info.run_id, "val/map_avg"))
        assert steps == list(range(1, int(c.data.metrics["epoch"]) + 1)), (c.info.run_name, steps)
        for key in ("loss/total", "weight/nce", "cca/rho_00"):
            assert sorted(m.step for m in client.get_metric_history(c.info.run_id, key)) == steps


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
    assert "mlflow server" in starts and "--host 127.0.0.1" in starts and "--dashboard-host=127.0.0.1" in starts
    assert all("RAY_AUTH_MODE=token" in c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
               if "ray " in c)  # fmt: skip


def test_aws_file_has_a_gpu_worker_type():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"].get("CPU") == 0  # the head runs the driver, not trials
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())


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


@pytest.fixture()
def server(tmp_path):
    srv = MlflowServer(tmp_path / "mlflow.db", tmp_path / "artifacts").start()
    yield srv
    srv.stop()


def test_multi_node_search_reaches_the_tracking_server(ray_cluster, server, tmp_path, _cache_dir):
    cluster, _ = ray_cluster
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        _search_cmd("--address", cluster.address, "--tracking-uri", server.url, "--experiment", "multi",
                    "--num-samples", "4", "--max-epochs", "8", "--scheduler", "fifo", "--name", "multi"),
        cwd=work, env=_env(_cache_dir), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Ray: 3 node(s)" in proc.stdout
    client, parents, children = _children(server.url, "multi")
    assert len(parents) == 1 and len(children) == 4
    assert all(r.info.status == "FINISHED" for r in parents + children)
    _assert_complete_histories(client, children)
    nodes = {n for c in children for n in _node_ids(c)}
    assert len(nodes) >= 2, f"trials ran on {nodes}"
    assert not (work / "mlflow.db").exists()  # everything went to the server


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
    finally:
        ray.shutdown()
