"""Every use of Ray Tune's (and Ray's) private internals, in one place.

The search relies on a few things Ray 2.60 has no public API for. Each function below names one, says why it is
needed, and is pinned by `tests/test_ray_internals.py`, so that a Ray upgrade that moves one of them fails that
one clear test instead of a search. Nothing else in the project touches an underscored attribute of Ray, Ray
Tune or Ray's OptunaSearch. Ray is imported inside the functions (`import hsc_search` starts nothing).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

from .commands import disk_error

# A search saved by an earlier version holds `whole_state_files`' copy function, pickled with the names it used:
# `resume` of it looks this one up (without it, Ray failed to restore the search, started it over, and the finished
# trials' runs were deleted as lost: a review). Keep every name such a copy ever used.
_disk_error = disk_error


# ---------------------------------------------------------------------------------------------- the Tuner
def tuner_parts(tuner) -> tuple[list, Any, Any]:
    """(callbacks, searcher, scheduler) a Tuner will run with: after `Tuner.restore` these are the restored
    objects (unpickled from the experiment), not the ones the driver built, and the driver needs them to read
    back what happened (the MLflow tracker's errors, Optuna's study, ASHA's rungs)."""
    local = tuner._local_tuner
    return list(local.get_run_config().callbacks or []), local._tune_config.search_alg, local._tune_config.scheduler


def function_trainable(fn: Callable) -> type:
    """Ray's class for a function trainable (what `Tuner(fn)` would build), so that `restore` can be extended."""
    from ray.tune.trainable.function_trainable import wrap_function

    return wrap_function(fn)


# ---------------------------------------------------------------------------------------------- worker start-up
# What a trial's worker imports: torch, Ray Tune, the trainer; and torch._dynamo, which torch imports on the first
# optimizer a process builds (`Optimizer.__init__` is wrapped by `_disable_dynamo`): 0.8 s of CPU that each
# worker's first trial paid inside its training time.
TRIAL_MODULES = ("hsc_search.trainable", "torch._dynamo")


def preload_system_config(modules: tuple[str, ...] = TRIAL_MODULES) -> dict[str, Any]:
    """Ray's `preload_python_modules` setting, for `ray.init(_system_config=...)` of a new local instance (a raylet
    option with no public API): every worker process of the instance imports `modules` as it starts, before it
    takes work. Ray starts one worker per CPU with the instance and Tune's trial actors take those, so their
    imports (about 2 s of CPU each: torch, Ray Tune, the trainer) run while the driver still sets up the search
    instead of after Tune asks for its first actors. Only a search's own local instance does this: on a cluster
    (`--address`) Tune's actors keep their runtime env, so they get workers of their own and each worker imports
    as it starts (cluster.yaml sets no preload; untested there)."""
    return {"preload_python_modules": list(modules)}


_INHERITED: dict[str, str] | None = None  # the environment the local instance's workers inherited (None: not ours)


def trial_actors_on_inherited_env(inherited: dict[str, str] | None) -> None:
    """Tune registers its trial actor class with a runtime env of a few environment variables (its defaults, such
    as `PL_DISABLE_FORK=1`, and the driver's values of a short list it propagates: `_ActorClassCache.get`). A
    runtime env of its own means workers of its own: Ray starts new worker processes for every trial actor and
    never uses the (preloaded) ones it started with the instance. The workers of a local instance inherit the
    driver's environment, so when every one of those variables already holds, there, the value Tune would set,
    the class is registered without the runtime env (the same variables, by inheritance) and the actors take the
    preloaded workers. `inherited`: the environment the instance was started with, or None (a cluster, or any
    other instance): then Tune's own behaviour."""
    import os

    from ray.tune.execution import class_cache

    global _INHERITED
    _INHERITED = dict(inherited) if inherited is not None else None
    cache_cls = class_cache._ActorClassCache
    if getattr(cache_cls.get, "_hsc_inherited_env", False):
        return
    original = cache_cls.get

    def get(self, trainable_cls):
        env = _INHERITED
        if env is not None and trainable_cls not in self._cache:
            wanted = dict(class_cache.DEFAULT_ENV_VARS)
            wanted.update({k: os.environ[k] for k in class_cache.ENV_VARS_TO_PROPAGATE if k in os.environ})
            if all(env.get(k) == v for k, v in wanted.items()):
                import ray

                self._cache[trainable_cls] = ray.remote(trainable_cls)
        return original(self, trainable_cls)

    get._hsc_inherited_env = True  # type: ignore[attr-defined]
    cache_cls.get = get


def _saved_trials(controller) -> bool:
    """Whether the newest experiment state a TuneController resumes from names any trial (True when it cannot be
    read: a state that cannot be read is not taken for an empty one)."""
    import json

    try:
        from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

        storage = controller._storage
        path = _find_newest_experiment_checkpoint(storage.experiment_fs_path, fs=storage.storage_filesystem)
        if path is None:
            return False
        with storage.storage_filesystem.open_input_stream(path) as f:  # (JSON; the trials' states are strings)
            return bool(json.loads(f.readall()).get("trial_data"))
    except Exception:  # noqa: BLE001 - unreadable: refused, not started over
        return True


class RestoreFailed(BaseException):
    """Ray could not read a resumed search's saved state (`TuneController.resume` raised): the search is not
    started over. A BaseException, so that Ray's `except Exception` around the restore lets it through."""


@contextlib.contextmanager
def restored_searcher_in_the_folder_now():
    """While in this block, a restored search's new trials are made in the search's folder where it is now.

    Ray Tune 2.60's restore (`TuneController.resume`) points the restored trials at the folder the search is in
    now (`_restore_trials`), but the search algorithm comes back with the `Experiment` it pickled when the search
    started, whose storage names the folder it started in (and `tune.run` adds no new one to a resumed run). A
    search folder moved or renamed, then resumed: the restored trials went on in the new folder and every trial
    started after the resume pointed at the old one and failed 3 times ("Unable to set up cluster storage"), so
    the search ended with them FAILED for good (a walkthrough). Here the experiment's storage is pointed where the
    trials' is, as Ray does for the trials (the same three fields). Tune's own method is put back on exit."""
    import copy

    from ray.tune.execution.tune_controller import TuneController

    original = TuneController.resume

    def resume(self, resume_config) -> None:
        try:
            original(self, resume_config)
            experiment = getattr(self._search_alg, "_experiment", None)  # (a SearchGenerator's: the one it makes
            storage = getattr(experiment, "storage", None)  # trials from)
            if storage is None:
                return
            now = copy.copy(storage)
            now.storage_filesystem = self._storage.storage_filesystem
            now.storage_fs_path = self._storage.storage_fs_path
            now.experiment_dir_name = self._storage.experiment_dir_name
            experiment.storage = now
            experiment.spec["storage"] = now
        except Exception as e:  # Ray logged it with a traceback and started the search over: its trials ran again
            # under new ids and the finished trials' MLflow runs were deleted as lost (a review: a state saved by an
            # earlier version that this one could not read). Raised past Ray's handler (not an Exception), unless
            # no trial was saved (a Ctrl-C before the first one started): starting that over loses nothing
            if not _saved_trials(self):
                raise
            raise RestoreFailed(f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from e

    TuneController.resume = resume
    try:
        yield
    finally:
        TuneController.resume = original


@contextlib.contextmanager
def keep_starting_actors():
    """While in this block, a Tune trial keeps its own trial actor once Ray started it, instead of being moved onto
    an actor that a finished trial just freed.

    Ray Tune 2.60 with `reuse_actors` (`TuneController._maybe_reuse_cached_actor`) moves a pending trial whose
    actor is still starting onto a freed cached actor, and removes the starting one: Ray kills its worker process
    mid-start, imports and all. When trials are shorter than a worker's start (2.8 s of imports here), the next
    trial asks for a new actor and the same happens again: in 3 of 5 searches of 64 tiny trials the second slot
    never ran a trial (7.7 s instead of 4.4 s) and 2 of the 4 workers started were killed while importing. Here
    such a trial waits for its own actor (the freed actor goes to the next trial); a trial whose actor is still
    waiting for resources (no worker yet) is moved as before, which costs nothing. Tune's own method is restored
    on exit, so other Tune runs in the process (the benchmarks' stock-Ray row) are untouched."""
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController._maybe_reuse_cached_actor

    def _maybe_reuse_cached_actor(self, trial) -> bool:
        own = self._trial_to_actor.get(trial)
        if own is not None and trial not in self._resetting_trials and own in self._actor_manager.live_actors:
            return False  # its actor has its resources and a worker starting: keep it
        return original(self, trial)

    TuneController._maybe_reuse_cached_actor = _maybe_reuse_cached_actor
    try:
        yield
    finally:
        TuneController._maybe_reuse_cached_actor = original


@contextlib.contextmanager
def stopping_at_a_full_disk(on_full: Callable[[Any, OSError], bool], refused_saves: list | None = None):
    """While in this block, a trial that fails because a disk refused a write (full, read-only, over quota:
    `STOPPING_ERRNOS`) is given to `on_full(trial, error)`, which stops the search (as Ctrl-C does) and says True,
    or cannot and says False; with True the trial is not counted as failed and goes back to wait, to go on from its
    last checkpoint when the search is resumed; with False Ray handles it. A save of the search's state that a
    disk refused (`refused_saves`, filled by `whole_state_files` from its copying thread) is given to
    `on_full(None, error)` at Tune's next step, from the thread that runs Tune.

    Ray Tune 2.60 (`TuneController._process_trial_failure`) retried such a trial `max_failures` times and then
    failed it for good, and every later trial the same way: a full disk under the search's folder ended a search
    with its trials FAILED as if their configs were at fault (a walkthrough); and a search whose state could no
    longer be saved went on, its end then read from the last state saved (a review: called interrupted, exit 130).
    Stopped at the first refusal, the search is resumed once the disk has room. Tune's own methods are put back
    on exit."""
    from ray.tune.execution.tune_controller import TuneController

    original, step = TuneController._process_trial_failure, TuneController.step

    def _process_trial_failure(self, trial, exception) -> None:
        refused = disk_error(exception, STOPPING_ERRNOS)
        if refused is None or trial.status not in ("RUNNING", "PENDING") or not on_full(trial, refused):
            return original(self, trial, exception)
        trial.handle_error(exception)  # its error file (the line Progress prints), and a failure counted...
        trial.run_metadata.num_failures = max(0, trial.run_metadata.num_failures - 1)  # ...which is not its own
        self._try_recover(trial, exc=exception)  # back to PENDING, from its last checkpoint

    def checked_step(self) -> None:
        step(self)
        if refused_saves:
            on_full(None, refused_saves[0])

    TuneController._process_trial_failure = _process_trial_failure
    TuneController.step = checked_step
    try:
        yield
    finally:
        TuneController._process_trial_failure, TuneController.step = original, step


STOPPING_ERRNOS = {28, 30, 122}  # ENOSPC, EROFS, EDQUOT: room or a writable disk again lets it go on (not EFBIG, a
# file size limit, which one trial's checkpoint would hit again at every resume: it fails that trial)


def tune_stop() -> Callable[[], None] | None:
    """A function that ends the Ray Tune run under way as Ctrl-C does (its trials stop where they are, its state
    is saved for `resume`), called from the thread that runs it; None when Tune's handler is not there to do it
    (a Tune run off the main thread installs none; a platform without SIGUSR1). Tune 2.60 (`tune.run`'s
    `_setup_signal_catching`) handles SIGUSR1 as SIGINT and keeps that handler for the whole run, where a Ctrl-C
    puts SIGINT's previous one back."""
    import signal

    usr1 = getattr(signal, "SIGUSR1", None)
    handler = signal.getsignal(usr1) if usr1 is not None else None
    if not callable(handler) or "_setup_signal_catching" not in getattr(handler, "__qualname__", ""):
        return None
    return lambda: handler(usr1, None)


@contextlib.contextmanager
def whole_state_files(on_refused: Callable[[OSError], None] | None = None):
    """While in this block, the files of a search's saved state that Ray Tune copies into a local search folder
    are replaced together or not at all: each changed file is written beside its old one first, and only when all
    are written are they renamed over the old ones (renames need no room); a write refused leaves the previous
    state whole and is given to `on_refused` (a disk's refusal: `STOPPING_ERRNOS`) before it is raised.

    Ray 2.60 (`ray.train._internal.storage._upload_to_fs_path`, called by its syncer for the experiment state and
    the trials' result files) copied over the files in place: on a full disk the copy stopped part way, the
    experiment state was cut off, and the search could not be resumed (a walkthrough, on a 3 MB file system); and
    replaced one file at a time, a refusal part way left a set of files from two saves, one that could not be
    finished (a review). A save now needs room for the changed files beside the old ones. A file that has not
    changed since it was last copied (same size and modification time, which the copy keeps) is not copied again.
    Storage that is not a local file system (S3, GCS: an object is written whole there anyway) is copied by Ray
    as before. The driver's process only (its syncer copies these); Ray's function is put back on exit."""
    import posixpath
    import shutil

    import pyarrow.fs as pafs
    from ray.train._internal import storage as ray_storage

    original = ray_storage._upload_to_fs_path

    def changed(src: str, dest: str) -> bool:
        try:
            have, had = os.stat(src), os.stat(dest)
        except OSError:
            return True
        return have.st_size != had.st_size or have.st_mtime_ns != had.st_mtime_ns

    def replace_all(pairs: list[tuple[str, str]]) -> None:
        pairs = [(src, dest) for src, dest in pairs if changed(src, dest)]
        # Ray's experiment_state-*.json last: the file `resume` restores from is the last one replaced
        pairs.sort(key=lambda pair: os.path.basename(pair[1]).startswith("experiment_state-"))
        written = []
        try:
            for src, dest in pairs:
                os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
                part = f"{dest}.hsc-part"
                written.append(part)
                for _ in range(5):  # Tune rewrites a state file in place as its next save starts, which can be
                    before = os.stat(src)  # while this copies it (its final save): copied again until it held still
                    shutil.copy2(src, part)
                    after = os.stat(src)
                    if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
                        break
                else:
                    raise OSError(f"{src} kept changing while it was copied (the next save copies it again)")
            for src, dest in pairs:  # (a rename needs no room, except on copy-on-write file systems: btrfs, ZFS)
                os.replace(f"{dest}.hsc-part", dest)
        except BaseException as e:
            for part in written:
                with contextlib.suppress(OSError):
                    os.unlink(part)
            # imported here, not named from this module: Ray saves this function with a search, and a module-level
            # name it uses becomes part of every saved search (`_disk_error` above)
            from hsc_search.commands import disk_error as refusal
            from hsc_search.ray_internals import STOPPING_ERRNOS as stopping

            refused = refusal(e, stopping) if isinstance(e, Exception) else None
            if refused is not None and on_refused is not None:
                on_refused(refused)
            raise

    def _upload_to_fs_path(local_path, fs, fs_path, exclude=None) -> None:
        if exclude or not isinstance(fs, pafs.LocalFileSystem):
            return original(local_path=local_path, fs=fs, fs_path=fs_path, exclude=exclude)
        if os.path.isfile(local_path):
            return replace_all([(local_path, fs_path)])
        os.makedirs(fs_path, exist_ok=True)
        pairs = []
        for root, _, files in os.walk(local_path):
            rel = os.path.relpath(root, local_path)
            pairs += [(os.path.join(root, name),
                       posixpath.normpath(posixpath.join(fs_path, rel.replace(os.sep, "/"), name))) for name in files]
        replace_all(pairs)

    ray_storage._upload_to_fs_path = _upload_to_fs_path
    try:
        yield
    finally:
        ray_storage._upload_to_fs_path = original

# ---------------------------------------------------------------------------------------------- ASHA
def asha_brackets(scheduler) -> list[list[tuple[float, dict]]]:
    """Per bracket, its rungs as Ray keeps them: [(milestone, {trial_id: recorded reward}), ...], highest milestone
    first. The dicts are Ray's own (updating one updates ASHA): Ray does not checkpoint the scheduler (ray issue
    #30838), so the rungs are saved and put back through these."""
    return [bracket._rungs for bracket in scheduler._brackets]


def asha_reduction_factor(scheduler) -> float:
    """ASHA's reduction factor as its brackets use it (each bracket's cut-off quantile is 1 - 1/this)."""
    return scheduler._reduction_factor


def asha_num_stopped(scheduler) -> int:
    return scheduler._num_stopped


def set_asha_num_stopped(scheduler, n: int) -> None:
    scheduler._num_stopped = n


# ---------------------------------------------------------------------------------------------- OptunaSearch
def optuna_study(searcher):
    """The optuna.Study inside Ray's OptunaSearch (or inside a searcher wrapping one, e.g. a ConcurrencyLimiter):
    to tell Optuna a trial's true state and to compute parameter importances. None if there is none."""
    for s in (searcher, getattr(searcher, "searcher", None)):
        study = getattr(s, "_ot_study", None)
        if study is not None:
            return study
    return None


def optuna_trials(searcher) -> dict:
    """Ray trial id -> the optuna.Trial it was asked for (live)."""
    return searcher._ot_trials


def optuna_told(searcher) -> set:
    """Ray trial ids already told to Optuna (live; OptunaSearch skips them)."""
    return searcher._completed_trials


def optuna_trial_state(searcher, ot_trial) -> str:
    """The state Optuna's storage holds for a trial (COMPLETE, PRUNED, FAIL, RUNNING...)."""
    study = optuna_study(searcher)
    return study._storage.get_trial(ot_trial._trial_id).state.name


def saved_trial_statuses(exp_dir) -> dict[str, str]:
    """{trial id: status} as Ray Tune last saved the experiment (`experiment_state-<time>.json`, the newest; its
    `trial_data` holds each trial's JSON state as the first item of a pair): TERMINATED, ERROR, or PENDING/RUNNING/
    PAUSED for a trial that had not ended when the search stopped. Empty when there is none or it is unreadable.
    Read without importing Ray (a replay reads folders in milliseconds)."""
    import json
    from pathlib import Path

    files = sorted(Path(exp_dir).glob("experiment_state-*.json"))
    if not files:
        return {}
    try:
        out = {}
        for item in json.loads(files[-1].read_text())["trial_data"]:
            state = json.loads(item[0]) if isinstance(item[0], str) else item[0]
            out[str(state["trial_id"])] = str(state["status"])
        return out
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}


# ---------------------------------------------------------------------------------------------- the local instance
def local_node():
    """The Ray node this driver started (`ray.init(address="local")`): its session dir and node IP."""
    import ray

    return ray._private.worker.global_worker.node


def loopback_cluster_flag():
    """The module and attribute that let a Ray node keep 127.0.0.1 as its address (Ray rewrites a loopback
    node address to the machine's unless `ray_constants.ENABLE_RAY_CLUSTER` is false; its environment variable
    is `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`)."""
    import ray._private.ray_constants as ray_constants

    return ray_constants, "ENABLE_RAY_CLUSTER"


def nodes_running_here(address: str, timeout_s: float) -> tuple[list[str], bool]:
    """(the addresses of the alive nodes of the cluster whose head (GCS) is at `address`, whether a raylet of one of
    them runs on this machine). Ray's driver joins through a raylet on its own machine: `ray.init(address=...)`
    from a machine that runs none of the cluster's nodes waits 60 s for one and then says only "Failed to connect
    to Ray cluster" (Ray's `get_node_to_connect_for_driver`, which finds local raylets by their command lines, as
    `find_node_ids` does here). The GCS client and `find_node_ids` are private."""
    from ray._private.services import find_node_ids
    from ray._raylet import GcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    infos = GcsClient(address=address).get_all_node_info(timeout=timeout_s)
    alive = {k.hex(): v.node_manager_address for k, v in infos.items() if v.state == GcsNodeInfo.GcsNodeState.ALIVE}
    return sorted(set(alive.values())), bool(set(alive) & set(find_node_ids()))


class AmbiguousAuto(LookupError):
    """`--address auto` could mean several Ray instances of this machine; the message names them."""


def auto_address() -> str:
    """The cluster `address="auto"` connects to: RAY_ADDRESS, else the one GCS process found running here (Ray's `ps`
    scan; it wins over the address file), else the address file of the last `ray start` on this machine
    (<temp dir>/ray/ray_current_cluster; with several running, that file decides).
    Raises ConnectionError when there is none. Ray's own lookup (ray._private.services), so that the pre-flight
    checks the cluster Ray would join (a stale address file, a killed head, made Ray retry for minutes, deaf to
    Ctrl-C), except where Ray picks at random: with no address file and several instances running here (another
    job's, a `ray start --temp-dir` elsewhere, another search's own local instance), Ray joined any one of them,
    silently (a walkthrough: a search ran on another job's cluster). AmbiguousAuto then, naming them; and when the
    one instance found is bound to 127.0.0.1 while another hsc-search search runs its own local instance here (the
    only kind we start there), it is that search's."""
    from ray._private.services import find_bootstrap_address, find_gcs_addresses, get_ray_address_from_environment

    env = os.environ.get("RAY_ADDRESS")
    if env and env != "auto":
        return env
    find_gcs_addresses.cache_clear()  # Ray caches what it found in this process (a notebook's earlier search)
    if find_bootstrap_address(None) is not None:
        return get_ray_address_from_environment("auto", None)  # the last `ray start` here (Ray's choice)
    found = sorted(find_gcs_addresses())
    if len(found) > 1:
        raise AmbiguousAuto(f"{len(found)} Ray instances run on this machine ({', '.join(found)}) and no `ray start` "
                            "here left an address file saying which is the cluster; give the head's host:port "
                            "(`ray start --head` printed it)")  # fmt: skip
    if len(found) == 1 and found[0].startswith("127.0.0.1:"):
        from .local_ray import other_drivers

        others = other_drivers()
        if others:
            raise AmbiguousAuto(f"the one Ray instance running here ({found[0]}) is bound to 127.0.0.1, as the "
                                f"local instance of another hsc-search search is (driver pid {others[0].get('pid')}): "
                                "not a cluster to join; give the head's host:port, or leave --address out")  # fmt: skip
    return get_ray_address_from_environment("auto", None)


def address_ray_dials(host: str) -> str:
    """The host Ray connects to for a cluster address of `host`: Ray 2.60 turns a loopback host (localhost,
    127.0.0.1, ::1) into this machine's own address before it connects (`canonicalize_bootstrap_address` ->
    `resolve_ip_for_localhost`), any other host is kept. So a Ray instance bound to 127.0.0.1 (a search's own local
    instance) cannot be joined by address: Ray retried the machine's address for minutes (a walkthrough)."""
    from ray._private.services import resolve_ip_for_localhost

    return resolve_ip_for_localhost(host)


def default_temp_dir() -> str:
    """Where Ray puts its session folders unless told otherwise."""
    from ray._common.utils import get_default_ray_temp_dir

    return get_default_ray_temp_dir()


TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
TOKEN_AUTH_ON_NOTICE = "Token authentication is enabled"


class _DropTokenAuthOnNotice:
    def filter(self, record) -> bool:
        return not str(record.msg).startswith(TOKEN_AUTH_ON_NOTICE)


@contextlib.contextmanager
def quiet_token_auth_notice():
    """Around `ray.init` of a new local instance: drops Ray's notice that the instance has token authentication on
    ("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out."), logged as a
    warning by a private module at every local start. Token authentication stays on (Ray's default for a new local
    instance, which we keep); Ray's warning that authentication is *off* still shows."""
    import logging

    logger, drop = logging.getLogger(TOKEN_AUTH_LOGGER), _DropTokenAuthOnNotice()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@contextlib.contextmanager
def ray_processes_in_their_own_group():
    """Around `ray.init` of a new local instance: gcs_server, raylet and Ray's agents (and, through the raylet, the
    workers) start in a process group of their own, not the driver's. `timeout`, a batch scheduler's end of job
    and `kill -TERM -- -PGID` send SIGTERM to the driver's whole group: Ray's processes died with it, and the
    driver, ending its search as after Ctrl-C, waited 60 s on a dead GCS and exited 1 in Ray's words, its parent
    run left RUNNING and no resume command said (a walkthrough). Ray already keeps them out of a terminal's Ctrl-C
    (it blocks SIGINT in them) and, on Windows, starts them in a new group; on Linux they die with the driver all
    the same (Ray's fate sharing: PR_SET_PDEATHSIG), and our watchdog ends them from the instance's record.
    Private: `ray._private.services.ConsolePopen`, the Popen class `start_ray_process` starts every one with. Only
    where Ray has kernel fate sharing (Linux); elsewhere nothing changes."""
    import sys

    import ray._private.services as services
    import ray._private.utils as utils

    if not sys.platform.startswith("linux") or not utils.detect_fate_sharing_support():
        yield
        return
    original = services.ConsolePopen

    class OwnGroupPopen(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            ray_own = kwargs.get("preexec_fn")

            def preexec() -> None:
                if ray_own is not None:
                    ray_own()
                os.setpgid(0, 0)

            kwargs["preexec_fn"] = preexec
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnGroupPopen
    try:
        yield
    finally:
        services.ConsolePopen = original


# ---------------------------------------------------------------------------------------------- checkpoints
def tolerate_deleted_checkpoints() -> None:
    """Ray's checkpoint manager deletes a trial's older checkpoints as new ones arrive
    (`checkpoint_manager._delete_fs_path`), and a path that is gone raised out of its existence check before
    the deletion's own try: after `hsc-search resume` of a driver that was killed between deleting a checkpoint and
    Ray's next experiment snapshot, the snapshot still listed the deleted one, and its deletion logged "ERROR ...
    Error handling checkpoint" with a FileNotFoundError traceback (and skipped the rest of that checkpoint's
    bookkeeping). A path already gone is what the deletion wants: skipped. Idempotent; the driver's process only
    (the checkpoint manager runs there)."""
    import pyarrow.fs as pafs
    from ray.train._internal import checkpoint_manager

    delete = checkpoint_manager._delete_fs_path
    if getattr(delete, "_hsc_tolerant", False):
        return

    def delete_if_there(fs, fs_path: str):
        if fs.get_file_info(fs_path).type == pafs.FileType.NotFound:
            return None
        return delete(fs=fs, fs_path=fs_path)

    delete_if_there._hsc_tolerant = True
    checkpoint_manager._delete_fs_path = delete_if_there


def checkpoint_epoch(trial) -> int:
    """The epoch of the checkpoint a trial goes on from (Ray's result saved with it: `Trial.latest_checkpoint_result`
    and `_TrainingResult.metrics`), 0 for none."""
    saved = getattr(getattr(trial, "latest_checkpoint_result", None), "metrics", None) or {}
    return int(saved.get("epoch", 0) or 0)
