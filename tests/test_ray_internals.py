"""Pins exactly what `hsc_search.ray_internals` relies on in Ray 2.60: a Ray upgrade that moves any of it fails
here, with the name of the thing that moved, instead of in a search."""

from __future__ import annotations

from hsc_search import ray_internals as ri


def test_asha_brackets_are_live_rungs_highest_milestone_first():
    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(time_attr="epoch", metric="m", mode="max", max_t=8, grace_period=1, reduction_factor=2)
    (rungs,) = ri.asha_brackets(asha)
    assert [m for m, _ in rungs] == [8, 4, 2, 1]
    assert all(isinstance(recorded, dict) and not recorded for _, recorded in rungs)
    rungs[-1][1]["t1"] = 0.5  # the dicts are ASHA's own: what it later compares against
    assert ri.asha_brackets(asha)[0][-1][1] == {"t1": 0.5}
    assert ri.asha_reduction_factor(asha) == 2  # why_stopped's quantile, 1 - 1/this, is each bracket's cut-off
    assert all(b.rf == 2 for b in asha._brackets)
    assert ri.asha_num_stopped(asha) == 0
    ri.set_asha_num_stopped(asha, 3)
    assert ri.asha_num_stopped(asha) == 3


def test_asha_records_a_result_in_the_rung_the_adapter_exposes():
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    asha = ASHAScheduler(time_attr="epoch", metric="m", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    trial = Trial("__fake", trial_id="t1", stub=True)
    asha.on_trial_add(None, trial)
    assert asha.on_trial_result(None, trial, {"epoch": 1, "m": 0.25}) == TrialScheduler.CONTINUE
    (rungs,) = ri.asha_brackets(asha)
    assert dict(rungs)[1] == {"t1": 0.25}


def test_optuna_search_keeps_its_study_trials_and_told_set():
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    def space(trial):
        trial.suggest_float("x", 0.0, 1.0)

    searcher = OptunaSearch(space=space, metric="m", mode="max", seed=0)
    assert isinstance(ri.optuna_study(searcher), optuna.Study)
    searcher.suggest("t1")
    trials = ri.optuna_trials(searcher)
    assert set(trials) == {"t1"} and isinstance(trials["t1"], optuna.Trial)
    assert ri.optuna_trial_state(searcher, trials["t1"]) == "RUNNING"
    searcher.on_trial_complete("t1", {"m": 0.5, "training_iteration": 1})
    assert "t1" in ri.optuna_told(searcher)
    assert ri.optuna_trial_state(searcher, trials["t1"]) == "COMPLETE"

    from ray.tune.search import ConcurrencyLimiter

    assert ri.optuna_study(ConcurrencyLimiter(searcher, max_concurrent=2)) is ri.optuna_study(searcher)
    assert ri.optuna_study(object()) is None


def test_function_trainable_is_a_trainable_with_restore():
    from ray.tune import Trainable

    cls = ri.function_trainable(lambda config: None)
    assert issubclass(cls, Trainable) and callable(getattr(cls, "restore"))


def test_tuner_parts_are_the_objects_it_was_built_with(tmp_path):
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    callback, searcher, scheduler = tune.Callback(), BasicVariantGenerator(), FIFOScheduler()
    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), callbacks=[callback]))  # fmt: skip
    callbacks, got_searcher, got_scheduler = ri.tuner_parts(tuner)
    assert callback in callbacks and got_searcher is searcher and got_scheduler is scheduler


def test_ray_joins_a_loopback_address_by_the_machines_own():
    """What the pre-flight relies on (`address_ray_dials`): Ray connects to 127.0.0.1 / localhost by this machine's
    address, any other host as given, so an instance bound to 127.0.0.1 is probed where Ray will dial it."""
    import ray.util
    from ray._private.services import canonicalize_bootstrap_address

    from hsc_search.ray_internals import address_ray_dials

    assert address_ray_dials("10.1.2.3") == "10.1.2.3"
    own = address_ray_dials("127.0.0.1")
    assert own == address_ray_dials("localhost") == ray.util.get_node_ip_address()
    assert canonicalize_bootstrap_address("127.0.0.1:6379") == f"{own}:6379"


def test_the_loopback_flag_and_temp_dir_exist():
    module, name = ri.loopback_cluster_flag()
    assert isinstance(getattr(module, name), bool)
    assert module.ENABLE_RAY_CLUSTERS_ENV_VAR == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    assert isinstance(ri.default_temp_dir(), str) and ri.default_temp_dir()
    # local_node() is exercised by tests/test_local_ray.py, which starts a real local instance


def test_ray_notice_that_token_auth_is_on_is_dropped_only_inside_the_quiet_block():
    import logging

    from ray._private.authentication import authentication_token_setup as ats

    assert ats.logger.name == ri.TOKEN_AUTH_LOGGER
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    keep = Keep(logging.WARNING)
    ats.logger.addHandler(keep)
    try:
        ats._warn_token_auth_enabled()  # what ray.init of a new local instance logs (RAY_AUTH_MODE unset)
        assert len(seen) == 1 and seen[0].startswith(ri.TOKEN_AUTH_ON_NOTICE), seen
        seen.clear()
        with ri.quiet_token_auth_notice():
            ats._warn_token_auth_enabled()
            ats._warn_token_auth_disabled()  # the warning that authentication is off still shows
        assert len(seen) == 1 and seen[0].startswith("Token authentication is disabled"), seen
        seen.clear()
        ats._warn_token_auth_enabled()
        assert len(seen) == 1, "the filter outlived the block"
    finally:
        ats.logger.removeHandler(keep)


PRELOAD_PROBE = """
import json, os, sys, tempfile
import ray
from ray import tune
from hsc_search import driver
from hsc_search.local_ray import stop_local_ray

def trial(config):
    tune.report({"torch": "torch" in sys.modules, "trainable": "hsc_search.trainable" in sys.modules,
                 "dynamo": "torch._dynamo" in sys.modules, "pl": os.environ.get("PL_DISABLE_FORK"), "pid": os.getpid()})

def probe():
    with tempfile.TemporaryDirectory() as d:
        tuner = tune.Tuner(trial, tune_config=tune.TuneConfig(num_samples=1),
                           run_config=tune.RunConfig(storage_path=d, name="p", verbose=0))
        r = tuner.fit()[0].metrics
    return {k: r[k] for k in ("torch", "trainable", "dynamo", "pl")}

out = {}
driver._init_ray(None)  # as a search starts its local instance
out["search"] = probe()
stop_local_ray()
driver._init_ray(None, preload=False)  # as a search with more than one CPU per trial starts it: Tune's own way
out["plain"] = probe()
stop_local_ray()
print(json.dumps(out))
"""


def test_a_search_local_instance_runs_trials_on_workers_that_preloaded_the_trial_modules():
    """Ray's `preload_python_modules` (no public API) and Tune's actor class cache: a trial of a search's local
    instance runs in a worker that imported torch and the trainable before it took the trial, with Tune's
    default environment (inherited); without the preload (trials of more than one CPU) a trial gets a fresh worker
    (what also shows the check can fail)."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PL_DISABLE_FORK")}
    proc = subprocess.run([sys.executable, "-c", PRELOAD_PROBE], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["search"] == {"torch": True, "trainable": True, "dynamo": True, "pl": "1"}
    assert out["plain"]["torch"] is False and out["plain"]["trainable"] is False and out["plain"]["dynamo"] is False
    assert out["plain"]["pl"] == "1"  # Tune's runtime env sets it there
    assert ri.preload_system_config() == {"preload_python_modules": ["hsc_search.trainable", "torch._dynamo"]}


STARTING_ACTORS_PROBE = """
import json, os, sys, tempfile
from ray import tune
from hsc_search import ray_internals as ri
from hsc_search.local_ray import start_local_ray, stop_local_ray

log = sys.argv[1]

def trial(config):
    tune.report({"pid": os.getpid()})

def search(patched):
    open(log, "w").close()
    start_local_ray(num_cpus=2, log_to_driver=False, _system_config=ri.preload_system_config(("slowstart",)))
    ri.trial_actors_on_inherited_env(dict(os.environ))  # as the driver: trial actors take the preloaded workers
    try:
        with tempfile.TemporaryDirectory() as d:
            tuner = tune.Tuner(trial, tune_config=tune.TuneConfig(num_samples=24, reuse_actors=True),
                               run_config=tune.RunConfig(storage_path=d, name="s", verbose=0))
            if patched:
                with ri.keep_starting_actors():
                    grid = tuner.fit()
            else:
                grid = tuner.fit()
        pids = sorted({r.metrics["pid"] for r in grid})
    finally:
        stop_local_ray()
    return {"trial_pids": len(pids), "workers_started": len(open(log).read().split())}

print(json.dumps({"patched": [search(True), search(True)], "tune": search(False)}))
"""

SLOW_START = """
import os, time
with open(os.environ["HSC_TEST_WORKER_LOG"], "a") as f:
    f.write(f"{os.getpid()}\\n")
time.sleep(1.0 + (os.getpid() % 7) * 0.15)  # workers become ready at different times, as importing torch does
"""


def test_a_trial_keeps_its_starting_actor_so_no_worker_is_killed_mid_start(tmp_path):
    """`keep_starting_actors`: with trials far shorter than a worker's start, Tune moved the trial waiting for the
    second worker onto the first (freed) actor and killed the starting worker, again and again, so one slot ran
    every trial. Patched, both slots' workers run trials (twice, as the race does not happen every time). Tune's
    own behaviour is run too and printed, not asserted (one worker ran every trial in 3 of 3 runs here, but it is
    a race); the patch is undone after the block."""
    import json
    import os
    import subprocess
    import sys

    from ray.tune.execution.tune_controller import TuneController

    (tmp_path / "slowstart.py").write_text(SLOW_START)
    log = tmp_path / "workers.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PL_DISABLE_FORK")}
    env.update(HSC_TEST_WORKER_LOG=str(log), PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]),
               PL_DISABLE_FORK="1")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", STARTING_ACTORS_PROBE, str(log)], env=env, capture_output=True,
                          text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(out)
    for run in out["patched"]:  # workers_started may exceed 2 even so: Ray starts workers of its own for leases
        assert run["trial_pids"] == 2, out  # that come before the preloaded ones are ready (not killed ones)
    original = TuneController._maybe_reuse_cached_actor
    with ri.keep_starting_actors():
        assert TuneController._maybe_reuse_cached_actor is not original
    assert TuneController._maybe_reuse_cached_actor is original


def test_a_driver_on_a_machine_that_runs_no_node_of_the_cluster_is_told_so_in_seconds(tmp_path, _cache_dir):
    """`nodes_running_here` (Ray's GCS client and its search for local raylets, both private) and what the pre-flight
    makes of it. Ray's driver joins a cluster through a raylet on its own machine: from a machine that runs none
    (a laptop that reaches the head's port) `ray.init` waited 60 s and said only "Failed to connect to Ray cluster",
    to which we added a hint about token authentication. Killing the head's raylet leaves its GCS answering and no
    raylet of that cluster here: what such a machine sees. (The local instance of another test may run: its raylets
    are not nodes of this cluster.)"""
    import re
    import subprocess
    import time

    from ray.cluster_utils import Cluster

    from hsc_search import preflight
    from conftest import search_cmd, search_env

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    address = cluster.address
    try:
        nodes, here = ri.nodes_running_here(address, timeout_s=10)
        assert here and nodes == [address.rsplit(":", 1)[0]]
        preflight.check_address(address, timeout_s=5)  # a node of it here: passes
        cluster.head_node.kill_raylet()
        assert ri.nodes_running_here(address, timeout_s=10)[1] is False
        t0 = time.monotonic()
        proc = subprocess.run(search_cmd("--address", address, "--num-samples", "2", "--no-mlflow"),
                              cwd=tmp_path, env=search_env(_cache_dir), capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
    finally:
        cluster.shutdown()
    assert proc.returncode != 0
    # (the GCS soon sees its node's raylet gone: a laptop's head would list its live nodes)
    assert re.search(f"--address {re.escape(address)}: this machine runs no node of the Ray cluster there "
                     rf"\((its node\(s\): {re.escape(nodes[0])}|it has no node alive)\), and a Ray driver joins a "
                     "cluster through a node on its own machine; run the search on the head", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "RAY_AUTH_MODE" not in proc.stderr
    assert f"node of it first (`ray start --address {address}`)" in proc.stderr  # with the search's RAY_AUTH_MODE
    assert took < 40, took  # the command's imports included; Ray alone waited 60 s before failing


def test_a_checkpoint_already_deleted_is_skipped_by_rays_checkpoint_manager(tmp_path):
    """Stock Ray raises FileNotFoundError deleting a checkpoint that is gone (logged as an ERROR with a traceback
    when a resumed search's snapshot lists one its killed driver deleted); with the adapter the deletion of a
    missing path is skipped and a present one is still deleted."""
    import pyarrow.fs as pafs
    import pytest
    from ray.train._internal import checkpoint_manager, storage

    fs = pafs.LocalFileSystem()
    with pytest.raises(FileNotFoundError):
        storage._delete_fs_path(fs=fs, fs_path=str(tmp_path / "checkpoint_000000"))  # Ray's own function
    before = checkpoint_manager._delete_fs_path  # the wrapper already, when a search ran in this process
    original = checkpoint_manager._delete_fs_path = storage._delete_fs_path
    try:
        ri.tolerate_deleted_checkpoints()
        ri.tolerate_deleted_checkpoints()  # idempotent: one wrapper
        assert checkpoint_manager._delete_fs_path.__closure__[0].cell_contents is original
        checkpoint_manager._delete_fs_path(fs=fs, fs_path=str(tmp_path / "checkpoint_000000"))
        (tmp_path / "checkpoint_000001").mkdir()
        (tmp_path / "checkpoint_000001" / "state.pt").write_bytes(b"x")
        checkpoint_manager._delete_fs_path(fs=fs, fs_path=str(tmp_path / "checkpoint_000001"))
        assert not (tmp_path / "checkpoint_000001").exists()
    finally:
        checkpoint_manager._delete_fs_path = before


def test_a_cluster_with_token_authentication_refuses_a_driver_without_its_token_in_seconds(tmp_path, _cache_dir):
    """A head started with RAY_AUTH_MODE=token (cluster.yaml's; a plain `ray start --head` of Ray 2.60 asks for it
    too) and a driver without the mode: `ray.init` said "Failed to connect" after 28 s and ~20 lines of Ray's
    InvalidAuthToken warnings, and an empty mlflow.db was left behind (a walkthrough). The pre-flight's GCS call
    is refused at once (ray.exceptions.AuthenticationError): one line saying what to set, nothing written. The
    head is `ray start --head --block` in a process group of its own, ended by that group (never `ray stop`,
    which ends every Ray of the machine)."""
    import os
    import secrets
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    import psutil

    from conftest import search_cmd, search_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="rauth")  # short: Ray's socket paths live under it
    env = {k: v for k, v in search_env(_cache_dir).items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port",
                             str(port), "--num-cpus", "0", "--temp-dir", temp, "--disable-usage-stats",
                             "--include-dashboard", "false"],
                            env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        work = tmp_path / "work"
        work.mkdir()
        address = None
        deadline = time.monotonic() + 90
        while address is None and time.monotonic() < deadline:
            nodes = [p for p in psutil.process_iter(["cmdline"]) if "raylet" in " ".join(p.info["cmdline"] or [])
                     and temp in " ".join(p.info["cmdline"] or [])]  # fmt: skip
            if nodes:
                address = next(a.split("=", 1)[1] for a in nodes[0].info["cmdline"] if a.startswith("--gcs-address="))
            time.sleep(0.5)
        assert address is not None and head.poll() is None, "the head did not start"
        t0 = time.monotonic()
        proc = subprocess.run(search_cmd("--address", address, "--num-samples", "1"), cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        took = time.monotonic() - t0
        wrong = subprocess.run(search_cmd("--address", address, "--num-samples", "1"), cwd=work,
                               env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}, capture_output=True,
                               text=True, timeout=120)  # fmt: skip
        # the address as `auto` found it: ray.init turns token authentication on by itself there, so the check
        # leaves the refusal of its own connection to Ray (a review: it refused a head that ray.init joins)
        auto = subprocess.run([sys.executable, "-c", "from hsc_search import preflight; "
                               f"preflight.check_address({address!r}, token_by_ray=True); print('passed')"],
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        for p in psutil.process_iter(["cmdline"]):  # anything of that head's that left the group
            if temp in " ".join(p.info["cmdline"] or []):
                p.kill()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: --address {address}: the Ray cluster there runs with token authentication "
                      "and RAY_AUTH_MODE is not 'token' here; set RAY_AUTH_MODE=token, with the cluster's token in "
                      "~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH, RAY_AUTH_TOKEN)"], proc.stderr[-3000:]
    assert len(proc.stderr.splitlines()) <= 3, proc.stderr  # Ray's own warning once, not twenty times
    assert took < 20, took  # the command's imports included; ray.init said it after 28 s
    assert wrong.returncode == 2 and "refused this driver's authentication token; give it the cluster's token" \
        in wrong.stderr, wrong.stderr[-3000:]  # fmt: skip
    assert sorted(p.name for p in work.iterdir()) == []  # no mlflow.db, no ray_results
    assert auto.returncode == 0 and "passed" in auto.stdout, auto.stderr[-2000:]


def test_a_head_of_another_python_or_ray_is_said_in_one_sentence():
    """A driver joining a head started from another Python (or Ray) got Ray's "Version mismatch" paragraph under a
    160-line traceback (a walkthrough): `driver.version_mismatch` reads Ray's own message, made here by the very
    check ray.init runs, into one sentence; other RuntimeErrors are left alone."""
    import platform

    import pytest
    import ray
    from ray._private.utils import check_version_info

    from hsc_search.driver import version_mismatch

    with pytest.raises(RuntimeError) as e:
        check_version_info({"ray_version": ray.__version__, "python_version": "3.12.1"}, "node 192.0.2.2",
                           raise_on_mismatch=True, python_version_match_level="patch")  # fmt: skip
    assert version_mismatch(str(e.value)) == (
        f"the Ray cluster there runs Ray {ray.__version__} on Python 3.12.1, and this search Ray {ray.__version__} "
        f"on Python {platform.python_version()}; a driver must run the cluster's versions of both (run the search "
        "on the head, or in an environment made as the cluster's was)")
    assert version_mismatch("Version mismatch: something else\n  entirely") == "Version mismatch: something else entirely"
    assert version_mismatch("Failed to connect to GCS") is None


RAY_IN_PROCESS_PROBE = """
import json, os, sys
from hsc_search import driver
from hsc_search.local_ray import stop_local_ray
from hsc_search.settings import SearchSettings

data = "synthetic:ave?n_train=64&n_val=32&n_test=32&dim_audio=8&dim_visual=8&num_classes=4"
out = {"before": driver.ray_in_process_problem("127.0.0.1:1")}
driver._init_ray(None)  # as an earlier search in this process started its local instance
out["local again"] = driver.ray_in_process_problem(None)
try:
    driver.run_search(SearchSettings(name="other", address="127.0.0.1:1", data=data, mlflow=False,
                                     storage=sys.argv[1]))
except driver.SearchError as e:
    out["refused"] = str(e)
out["written"] = sorted(os.listdir(sys.argv[1])) if os.path.exists(sys.argv[1]) else []
stop_local_ray()
out["after stop"] = driver.ray_in_process_problem("127.0.0.1:1")
import ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)  # the user's own Ray: used as it is
out["her own"] = driver.ray_in_process_problem("127.0.0.1:1")
ray.shutdown()
print(json.dumps(out))
"""


def test_a_search_that_asks_for_another_ray_than_the_one_its_process_runs_is_refused(tmp_path):
    """From one Python process (a notebook), a search with --address after a local search ran on the local
    instance and recorded the address it was given (a walkthrough): refused in the pre-flight, nothing written;
    the same kind of Ray again, or after it was stopped, is fine."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", RAY_IN_PROCESS_PROBE, str(tmp_path / "rr")], env=env,
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] is None and out["local again"] is None and out["after stop"] is None, out
    assert out["her own"] is None, out  # (a record of the stopped one refused it: the review)
    assert out["refused"] == ("Ray already runs in this process (a local instance of its own, joined by an earlier "
                              "search), and this search asks for the Ray at 127.0.0.1:1 (--address): call "
                              "hsc_search.local_ray.stop_local_ray() first, or run it in a new process"), out
    assert out["written"] == [], out


def test_the_epoch_of_a_trials_checkpoint_is_read_from_rays_trial(tmp_path):
    """`checkpoint_epoch` (the progress line's "resumed after epoch N") reads Ray's Trial.latest_checkpoint_result:
    a real Trial, with no checkpoint and then with one registered as Tune registers a reported one."""
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult
    from ray.tune.experiment import Trial

    trial = Trial("__fake", config={}, stub=True)
    assert ri.checkpoint_epoch(trial) == 0
    trial.run_metadata.checkpoint_manager.register_checkpoint(
        _TrainingResult(checkpoint=Checkpoint.from_directory(str(tmp_path)), metrics={"epoch": 7, "val/map_avg": 0.3}))
    assert ri.checkpoint_epoch(trial) == 7


def test_the_copy_function_a_search_saves_names_nothing_of_ours_and_old_names_stay():
    """Ray saves `whole_state_files`' copy function with a search (pickled by value, with the module-level names it
    uses by reference): a name of ours it used is part of every saved search. `_disk_error` became
    `commands.disk_error`, and a search interrupted before that could not be restored: Ray started it over and the
    finished trials' runs were deleted as lost (a review). The function now names nothing of ours; the names earlier
    versions saved still resolve."""
    import io
    import pickle

    from ray import cloudpickle
    from ray.train._internal import storage as ray_storage

    from hsc_search.commands import disk_error

    with ri.whole_state_files([].append):
        saved = cloudpickle.dumps(ray_storage._upload_to_fs_path)
    named = []

    class Reader(pickle.Unpickler):
        def find_class(self, module, name):
            named.append((module, name))
            return super().find_class(module, name)

    Reader(io.BytesIO(saved)).load()
    assert named and not [m for m in named if m[0].split(".")[0] == "hsc_search"], named
    assert ri._disk_error is disk_error  # (13363e5 and before)


def test_a_restore_is_refused_only_where_trials_were_saved(tmp_path):
    """A resume whose restore Ray cannot do is refused (its restart had deleted the finished trials' runs), but a
    search saved before its first trial started (a Ctrl-C as Tune began: `trial_data` empty, and Ray's restore
    fails on it with an IndexError) is started over as Ray did: nothing is lost (a review). The newest state
    Ray would read decides; one that cannot be read counts as holding trials."""
    import json
    import types

    import pyarrow.fs as pafs

    controller = types.SimpleNamespace(_storage=types.SimpleNamespace(experiment_fs_path=str(tmp_path),
                                                                      storage_filesystem=pafs.LocalFileSystem()))
    assert ri._saved_trials(controller) is False  # no state at all
    (tmp_path / "experiment_state-2026-12-07_10-00-00.json").write_text(json.dumps({"trial_data": [["{}", "{}"]]}))
    assert ri._saved_trials(controller) is True
    (tmp_path / "experiment_state-2026-12-07_11-00-00.json").write_text(json.dumps({"trial_data": []}))  # newer
    assert ri._saved_trials(controller) is False
    (tmp_path / "experiment_state-2026-12-07_12-00-00.json").write_text('{"trial_data": [["{}", ')  # cut short
    assert ri._saved_trials(controller) is True


def test_rays_syncer_replaces_state_files_whole_or_leaves_them_on_a_full_disk(tmp_path):
    """`whole_state_files`: Ray's syncer (what copies a search's experiment state into its folder) copied over a
    file in place, and on a full disk (a real one here: a 256 KB file system) left it cut off, so the search could
    not be resumed. In the block, the files of a save are replaced together or not at all (a file that fits is
    not replaced when another of the same save does not: a mixed set could not be resumed, a review), nothing is
    left beside them, and the refusal is handed on; an unchanged file is not copied again (the same inode); Ray's
    own copy is put back after the block, and cuts the file off on the same disk."""
    import errno

    import pyarrow.fs as pafs
    import pytest
    from conftest import small_disk
    from ray.train._internal import storage

    staging = tmp_path / "staging"
    (staging / "trial").mkdir(parents=True)
    old, new = "o" * 100_000, "n" * 300_000  # the new one does not fit on the disk at all
    original = storage._upload_to_fs_path

    def sync(dest) -> None:
        syncer = storage._FilesystemSyncer(pafs.LocalFileSystem(), sync_period=0, sync_timeout=30)
        syncer.sync_up(str(staging), str(dest))
        syncer.wait()  # raises what the copy raised

    with small_disk(tmp_path / "disk", size="256k") as disk:
        (staging / "state.json").write_text(old)
        (staging / "trial" / "result.json").write_text("{}\n")
        told = []
        with ri.whole_state_files(told.append):
            assert storage._upload_to_fs_path is not original
            sync(disk / "exp")
            kept = (disk / "exp" / "trial" / "result.json").stat().st_ino
            sync(disk / "exp")
            assert (disk / "exp" / "trial" / "result.json").stat().st_ino == kept  # not copied again
            (staging / "state.json").write_text(new)
            (staging / "trial" / "result.json").write_text("{}\n{}\n")  # fits alone, not with state.json
            with pytest.raises(OSError) as refused:
                sync(disk / "exp")
            assert refused.value.errno == errno.ENOSPC and [e.errno for e in told] == [errno.ENOSPC]
            assert (disk / "exp" / "state.json").read_text() == old  # the earlier save, whole: both of its files
            assert (disk / "exp" / "trial" / "result.json").read_text() == "{}\n"
            assert sorted(str(p.relative_to(disk / "exp")) for p in (disk / "exp").rglob("*")) == [
                "state.json", "trial", "trial/result.json"]  # nothing left beside them
            (staging / "state.json").write_text("x" * 1000)
            sync(disk / "exp")
            assert (disk / "exp" / "state.json").read_text() == "x" * 1000
            assert (disk / "exp" / "trial" / "result.json").read_text() == "{}\n{}\n"
        assert storage._upload_to_fs_path is original
        (staging / "state.json").write_text(new)  # Ray's own copy, on the same full disk: cut off in place
        (disk / "exp" / "state.json").write_text(old)
        with pytest.raises(OSError):
            sync(disk / "exp")
        assert (disk / "exp" / "state.json").read_text() not in (old, new)


def test_the_full_disk_stop_patches_tunes_failure_handling_and_step_and_puts_them_back():
    """`stopping_at_a_full_disk` relies on TuneController._process_trial_failure (a trial's failure, with its
    exception), `_try_recover` and `TuneController.step` (where a refused save is seen, from Tune's thread), on a
    trial's `handle_error` and `run_metadata.num_failures`, and on Tune's SIGUSR1 handler (`tune_stop`, which is
    not there outside a Tune run). Pinned here: a Ray upgrade that moves them fails this test, not a search."""
    import inspect

    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment.trial import Trial

    assert list(inspect.signature(TuneController._process_trial_failure).parameters) == ["self", "trial",
                                                                                         "exception"]  # fmt: skip
    assert callable(TuneController._try_recover) and callable(Trial.handle_error)
    assert "num_failures" in inspect.getsource(Trial.handle_error)
    failure, step = TuneController._process_trial_failure, TuneController.step
    with ri.stopping_at_a_full_disk(lambda trial, error: True, []):
        assert TuneController._process_trial_failure is not failure and TuneController.step is not step
    assert TuneController._process_trial_failure is failure and TuneController.step is step
    assert ri.tune_stop() is None  # no Tune run here: nothing to stop with
    import errno

    from ray.exceptions import RayTaskError

    from hsc_search.commands import disk_error

    wrapped = RayTaskError("train", "Traceback ...", OSError(errno.ENOSPC, "No space left on device"))
    assert disk_error(wrapped, ri.STOPPING_ERRNOS).errno == errno.ENOSPC  # a trial's error, as Ray hands it
    assert disk_error(RayTaskError("train", "tb", OSError(errno.EFBIG, "File too large")), ri.STOPPING_ERRNOS) \
        is None  # fmt: skip
