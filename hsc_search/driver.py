"""The search driver: builds the Ray Tune `Tuner` (OptunaSearch + ASHA), runs or resumes it, and closes the
MLflow parent run with the best config, a summary table and search plots.

Ray is imported inside the functions, never at module import (it is slow and `import hsc_search` starts
nothing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from trainer import AVData, DataError, TrainConfig, load_data
from trainer.fit import data_fingerprint

from . import preflight, runs, storage, warm_start
from .commands import DISK_ERRNOS, absolute_data_spec, exe, restore_command, resume_command
from .export import (CCA_SHAPERS, LOSS_SHAPERS, ExportError, TrialRow, best_row, on_scales, outcome_counts,
                     provenance, search_in, start_order, trial_config, trial_rows, write_config)
from .plots import best_so_far_figure, importance_figure
from .progress import Progress
from .ray_internals import RestoreFailed, keep_starting_actors, restored_searcher_in_the_folder_now, tuner_parts
from .report import _reason, publish_report
from .runs import (DB_SCHEMES, REPORT_ARTIFACT, TAG_DATA_FINGERPRINT, TAG_KIND, TAG_NO_SCORE, TAG_NOTES, TAG_RAY_AUTH, TAG_SET_FROM, client_for, default_tracking_uri,
                   experiment_tags, folder_hint, http_failure, import_mlflow, moved_store_hint, resolved_tracking_uri,
                   score_key, search_status,
                   served_artifacts_problem, sqlite_path, tag_experiment, trial_outcome, typed_column,
                   user_tag, without_password, write_csv)
from .schedulers import AshaStateCallback, PersistentASHA, asha_milestones
from .searchlock import (_HELD, DRIVER_LOCK, _probe_lock, hold_search, release_search,  # noqa: F401 (here too: callers and
                         search_driver, search_state)  # tests of the driver name them)
from .settings import SPACES_DIR, SearchSettings
from .space import SearchSpace, load_space, load_space_dict
from .tracking import MlflowTracker, reconcile
from .writer import Writer
from .warm_start import WarmStart

log = logging.getLogger(__name__)

META_FILE = runs.META_FILE  # in the experiment folder: what `resume` needs
BEST_CONFIG = "best_config.yaml"
ASHA_RUNGS = "asha_rungs.json"


SearchError = preflight.PreflightError  # the search cannot start or continue; the message says why and what to do


class NothingToResume(Exception):
    """`resume` of a search that finished: the message says when, and where its results are (not an error)."""


@dataclass
class SearchOutcome:
    experiment_dir: str  # <storage>/<name>, a path or a URI
    parent_run_id: str | None  # None when run without MLflow
    rows: list[TrialRow]
    best: TrialRow | None
    best_config_path: Path | None
    interrupted: bool
    tracking_errors: list[str]
    report_path: Path | None = None  # the search report (HTML), beside the best config
    num_samples: int | None = None  # the trials asked for (an interrupted search has started fewer)
    warm_line: str | None = None  # a warm-started search's best against its source's (on the same data)


# ---------------------------------------------------------------------------------------------- building blocks
def experiment_dir(settings: SearchSettings) -> str:
    """<storage>/<name>: an absolute local path or a URI."""
    return storage.join(storage.resolve(settings.storage), settings.name)


def outputs_dir(exp: str) -> Path:
    """Where the best config and the summary table are written locally: the experiment folder itself, or
    ./hsc_outputs/<name> when the storage is a URI (they are uploaded there too)."""
    return Path.cwd() / "hsc_outputs" / storage.split(exp)[1] if storage.is_uri(exp) else Path(exp)


STOPPING_AT_SETUP = ("stopping: the search stops when the start-up step under way ends (Ray's start can take up to "
                     "about 20 s)")


class _SetupInterrupts:
    """Ctrl-C while a search sets up is taken at the next step of the set-up, not wherever the main thread is.

    From the moment MLflow's store starts opening (and its writer starting) in threads until Ray Tune takes over
    SIGINT in `tuner.fit()`, a KeyboardInterrupt raised at an arbitrary point could land inside `logging`'s
    module lock and leave it held; the threads still importing MLflow then wait on it forever, and so does the
    interpreter's exit, which joins them (seen: `run` interrupted 7 s in hung for good; a little later, it
    segfaulted at exit). Here SIGINT only notes the interrupt; `check()` raises it at the set-up's steps and
    `release()` gives SIGINT back, raising a pending one. Only from the main thread with Python's own handler in
    place: an application that set its own keeps it."""

    def __init__(self) -> None:
        self.pending = False
        self.previous: Any = None
        self.fitting = False  # Ray Tune has SIGINT: an interrupt there is the search's (it ends as interrupted)

    def defer(self) -> "_SetupInterrupts":
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum, frame) -> None:
        if not self.pending:  # said at once: Ray's start-up, the step most often under way, can take 10-20 s
            try:  # os.write: a print here could land inside a write the main thread is making to stderr
                os.write(2, (STOPPING_AT_SETUP + "\n").encode())
            except OSError:
                pass
        self.pending = True

    def check(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def release(self, pending_too: bool = True) -> None:
        """Gives SIGINT back; raises an interrupt noted meanwhile unless `pending_too` is false. Called once Ray
        Tune is about to take SIGINT over."""
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None
        if pending_too:
            self.check()


class TrackingIncomplete(Exception):
    """The search's trials ended, but MLflow did not take their last records in time (a tracking server that
    stopped answering): nothing is summed up from what MLflow half holds, and `resume` finishes the record."""


class SearchRestoreFailed(Exception):
    """`resume` of a search whose saved state Ray could not read: nothing ran (one line, exit 1)."""


class TrackingUnavailable(Exception):
    """MLflow's store failed as the search started (a sqlite store on a full disk, a server whose database refuses
    writes), after the pre-flight found it answering: nothing was trained, and the search's folder and a store it
    created are removed as after any failed start. One line in the store's words (it was a 589-line traceback)."""


def _store_failure(e: BaseException) -> bool:
    """`e` is MLflow's store failing: its database's error (SQLAlchemy's), a disk that refused a write, a server
    that did not answer, raised as it is or inside MLflow's own error. Not MLflow refusing a request (a deleted
    experiment, a permission): those say what they are as before (the review: one was told to free its disk)."""
    import sys

    kinds = []
    for module, name in (("sqlalchemy.exc", "SQLAlchemyError"), ("requests.exceptions", "RequestException")):
        if module in sys.modules:  # imported by MLflow when it could raise one
            kinds.append(getattr(sys.modules[module], name))
    for cause in _causes(e):
        if isinstance(cause, tuple(kinds)) or (isinstance(cause, OSError) and cause.errno in DISK_ERRNOS):
            return True
        # a server's error answer (a database behind it that refuses writes: 500; credentials it refuses: 401/403)
        if getattr(cause, "error_code", None) in SERVER_FAILURES:  # (the second review: a traceback again)
            return True
    return False


def _causes(e: BaseException | None):
    """`e` and what it was raised from or during, in turn (each once)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _store_gone(e: BaseException) -> bool:
    """`e` is a tracking server that does not answer (refused or timed-out connections, retries run out), raised as
    it is or inside MLflow's own error: not one that answered with a refusal."""
    import sys

    kinds = tuple(getattr(sys.modules[m], n) for m, n in (("requests.exceptions", "ConnectionError"),
                                                          ("requests.exceptions", "Timeout"))
                  if m in sys.modules)  # fmt: skip
    return bool(kinds) and any(isinstance(cause, kinds) for cause in _causes(e))


# MLflow's error codes of a tracking server that failed or refused the search, not a request of ours it refused
SERVER_FAILURES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "PERMISSION_DENIED", "UNAUTHENTICATED",
                   "REQUEST_LIMIT_EXCEEDED"}  # fmt: skip


class SetupInterrupted(Exception):
    """Ctrl-C while a search was starting, before Ray Tune ran it. `exp_dir`: the search's folder, None when
    nothing was written; `resumable`: it holds a search Ray saved (a `resume` that was interrupted)."""

    def __init__(self, exp_dir: str | None, resumable: bool = False, removed: bool = False):
        super().__init__("interrupted while the search was starting")
        self.exp_dir, self.resumable, self.removed = exp_dir, resumable, removed


@contextlib.contextmanager
def _interrupt_in_preflight(exp_dir: str | None = None, resumable: bool = False):
    """Ctrl-C in a pre-flight (reading the data, checking the store; before Ray starts) is a `SetupInterrupted`:
    nothing was written, so an existing folder is named only by a `resume` (`hsc-search resume` of it continues)."""
    try:
        yield
    except KeyboardInterrupt:
        raise SetupInterrupted(exp_dir, resumable=resumable) from None


# what a new search's folder holds before Ray Tune runs it: our record, the driver's lock, and what
# `tune.Tuner(...)` writes
_UNSTARTED = (META_FILE, DRIVER_LOCK, "tuner.pkl", ".validate_storage_marker")
_CLAIMED: dict = {}  # experiment folder -> the topmost folder its claim created (removed with it: the storage)


def _refuse_existing(exp_dir: str, name_from: str = "--name") -> None:
    """Refuses a new search's folder that exists already, saying what it holds (a live search first: never told
    to delete it). A folder with nothing but the unheld lock of a `run` stopped in its pre-flight is free.
    `name_from`: where the search's name was given ("--name", or "cfg.yaml: name" from a search config)."""
    other = _another_name(name_from)
    if not storage.exists(exp_dir):
        return
    driver = search_driver(exp_dir)
    if driver is None and not storage.is_uri(exp_dir):
        try:
            if {p.name for p in Path(exp_dir).iterdir()} <= {DRIVER_LOCK}:
                return
        except OSError:
            pass
    if driver:  # before Ray's first save too, and while another `run` of this --name is in its pre-flight
        what = f"(its search is running: {driver})"
    elif not storage.exists(storage.join(exp_dir, META_FILE)):
        what = "and holds no hsc-search search"
    elif _finished_at(exp_dir):
        what = "and holds a search that finished"
    elif not storage.has_experiment_state(exp_dir):  # its driver died before Ray saved anything
        raise SearchError(f"{exp_dir} exists already and holds a search that stopped before Ray saved it "
                          f"(nothing to resume); {_start_again(exp_dir)}, or {other}")
    else:
        what = f"(a search that did not finish: `{resume_command(exp_dir)}` continues it)"
    raise SearchError(f"{exp_dir} exists already {what}; {other}")


def _another_name(name_from: str) -> str:
    """What to change to name a search anew: its --name flag, or the config file's `name:` that gave it (told to
    pick another --name, a user whose name came from her config looked for a flag she never gave)."""
    return "pick another --name" if name_from.startswith("--") else f"pick another name ({name_from})"


def _claim_named(settings: SearchSettings, name_from: str = "--name") -> str:
    """The folder of a search its user named: refused when it holds something, else claimed."""
    exp_dir = experiment_dir(settings)
    local = _local_path(exp_dir)
    if local is not None:  # (accepted without a word: moving or deleting that search took this one with it, and
        # its trial folders sat beside this search's; `--out` there is refused too: a walkthrough)
        inside = next((p for p in Path(local).resolve().parents if _is_file(p / META_FILE)), None)
        if inside is not None:
            given = settings.given_by.get("storage", "--storage")
            raise SearchError(f"{given} {settings.storage or './ray_results (the default)'}: inside the folder of search {inside.name} ({inside}), "
                              "whose own files this search's would sit among; give a --storage outside it, e.g. "
                              f"{inside.parent}")  # fmt: skip
    _refuse_existing(exp_dir, name_from)
    _claim_new_folder(exp_dir, name_from)
    return exp_dir


def _claim_default_name(settings: SearchSettings) -> str:
    """The folder of a search named by default (hsc-<date>-<time>): one taken by another search started in the
    same second, or left by an earlier one, makes it -2, -3, ... as the trainer names its runs (the second of two
    searches a shell loop started in one second was refused, its user having named neither: a walkthrough)."""
    base, n = settings.name, 1
    while True:
        try:
            return _claim_named(settings)
        except SearchError:
            exp_dir = experiment_dir(settings)
            if n >= 99 or storage.is_uri(exp_dir) or not Path(exp_dir).exists():  # not taken: cannot be written
                raise
        n += 1
        settings.name = f"{base}-{n}"


def _claim_new_folder(exp_dir: str, name_from: str = "--name") -> None:
    """Makes a new search's folder and holds it (`hold_search`) before the rest of the pre-flight, so that of two
    `run`s of one --name started together one goes on and the other is refused in its pre-flight (both passed it:
    the second then left a FAILED parent run in MLflow, and a Ctrl-C of it removed the first one's record files).
    Checked again under the lock. A URI storage is probed instead (nothing to lock there)."""
    if storage.is_uri(exp_dir):
        preflight.check_storage(exp_dir)
        return
    path = Path(exp_dir)
    created = path  # the topmost folder made here: removed again with the claim
    while not created.parent.exists() and created.parent != created:
        created = created.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SearchError(f"--storage: cannot write the search folder {exp_dir} ({e.strerror or e}); expected a "
                          "folder this user can create, or a URI pyarrow can write (s3://...)") from None  # fmt: skip
    _CLAIMED[exp_dir] = created
    try:
        hold_search(exp_dir)
    except SearchError:
        _CLAIMED.pop(exp_dir, None)
        who = search_driver(exp_dir)
        if who is None:  # the folder cannot be written
            raise
        raise SearchError(f"{exp_dir} exists already (its search is running: {who}); "
                          f"{_another_name(name_from)}") from None
    try:
        _refuse_existing(exp_dir, name_from)  # what it holds, now that no other `run` can write there
    except BaseException:
        release_search(exp_dir)
        _CLAIMED.pop(exp_dir, None)
        raise


def _remove_unstarted(exp_dir: str) -> bool:
    """After Ctrl-C in `run` before Ray Tune ran the search (or a pre-flight check that failed after the folder was
    claimed): removes the folder this run created if it holds only the files written before the search
    (`_UNSTARTED`), and the empty folders above it that the claim made, so that its name is free again (a `resume`
    of it would start the search, and `run` refuses a folder that exists). Called while this process holds the
    folder. Local folders only; True if removed."""
    if storage.is_uri(exp_dir):
        return False
    path = Path(exp_dir)
    try:
        names = {p.name for p in path.iterdir()}
    except OSError:
        return False
    if not names <= set(_UNSTARTED):
        return False
    try:
        for name in names:
            (path / name).unlink()
        path.rmdir()
    except OSError:
        return False
    created = _CLAIMED.pop(exp_dir, None)
    while created is not None and path != created:
        path = path.parent
        try:
            path.rmdir()  # empty folders only
        except OSError:
            break
    return True


def _quiet() -> None:
    """Silences noise that is not for users: MLflow's download bars, Ray's snapshot-frequency warning (we
    checkpoint every epoch on purpose)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ray's CSV and TensorBoard loggers write every result again (MLflow has them); its JSON logger is kept
    # (result.json per trial: the benchmarks read it), given explicitly in _run_config
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # a trial's error: one line from our progress callback (the traceback stays in the trial's error file), where
    # Tune logged 20 lines of traceback for each, retried ones too
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    # Ray's lines of its own (a worker that died) without colour codes, which a log file kept as raw escapes
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # after Ctrl-C Ray suggests `Tuner.restore(...)` in Python; our summary prints `hsc-search resume <folder>`
    tune_log = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoRayResumeHint) for f in tune_log.filters):
        tune_log.addFilter(_NoRayResumeHint())
    if not any(isinstance(f, _OwnStopNotice) for f in tune_log.filters):
        tune_log.addFilter(_OwnStopNotice())
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    if not any(isinstance(f, _NoUnreportedTrialWarning) for f in analysis_log.filters):
        analysis_log.addFilter(_NoUnreportedTrialWarning())
    state_log = logging.getLogger("ray.tune.execution.experiment_state")
    if not any(isinstance(f, _OneLineSyncError) for f in state_log.filters):
        state_log.addFilter(_OneLineSyncError())
    worker_log = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _OneLineUnhandledError) for f in worker_log.filters):
        worker_log.addFilter(_OneLineUnhandledError())


class _OneLineSyncError(logging.Filter):
    """Ray Tune's failed save of its experiment state to the storage path, one line: it logged the exception's
    whole traceback (a file its sync thread was copying changed under it, once in a CI run on a loaded machine;
    the next save syncs again, and the search ended normally). The exception's type and text stay in the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.getMessage().startswith("Saving experiment state to storage"):
            error = record.exc_info[1]
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            record.msg = (f"{record.getMessage()}{type(error).__name__}: {first} (a local search folder keeps the "
                          "state saved before it; the next save tries again)")
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


class _OneLineUnhandledError(logging.Filter):
    """Ray's "Unhandled error" of a task whose result no one read, one line (its exception's): a trial that failed
    as the search stopped (its task's result dropped by Tune's stop) logged its whole traceback, 40 lines, after
    the search's own line had said why (a disk that refused the trials' writes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Unhandled error"):
            lines = [l.strip() for l in message.splitlines() if l.strip()]
            named = [l for l in lines[1:] if re.match(r"^(?:[\w.]*\.)?\w*(?:Error|Exception)\b", l)]
            record.msg = f"a task no one waited for ended with an error: {(named or lines)[-1][:300]}"
            record.args = ()
        return True


class _OwnStopNotice(logging.Filter):
    """Tune's notice of a Ctrl-C (a log line with a timestamp, "ending Ray Tune run... Press CTRL+C (or send
    SIGINT/SIGKILL/SIGTERM) to skip") said in our words, as the start-up's Ctrl-C is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Stop signal received"):
            return True
        if _DISK_STOP[0]:  # our own stop at a disk that refused a write: its line said why (not "state saved")
            return False
        again = "another SIGTERM or Ctrl-C" if _TERMINATED[0] else "Ctrl-C again"  # a SIGTERM acts as Ctrl-C
        print(f"stopping: the running trials end where they are and the search's state is saved ({again} "
              "skips the save)", file=sys.stderr, flush=True)  # fmt: skip
        return False


class _NoRayResumeHint(logging.Filter):
    """Ray Tune's own end-of-run lines that our summary says in its words: its resume hint (`Tuner.restore(...)`
    in Python) and its "ERROR ... Trials did not complete: [train_trial_..., ...]" after an interrupted search or
    one with failed trials (each said by its own line as it ended; the summary counts them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Resume experiment with:" not in message and not message.startswith("Trials did not complete")


class _NoUnreportedTrialWarning(logging.Filter):
    """Ray's analysis of a search warns "Failed to fetch metrics for N trial(s)" with a FileNotFoundError per
    trial that has not reported yet (twice after a Ctrl-C: in Tune's result grid and in our read of the saved
    state); such trials are expected (pending, or started just before the interrupt). Any other failure shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        lines = record.getMessage().splitlines()
        return not (lines and lines[0].startswith("Failed to fetch metrics for") and len(lines) > 1
                    and all("both result.json and progress.csv were not found" in ln for ln in lines[1:]))


def cluster_address(address: str | None) -> str | None:
    """The Ray cluster a search joins: `address`, else RAY_ADDRESS; None for a new local instance of its own
    (neither given, or `local`: Ray's word for it, which `resume --address local` uses to leave a recorded
    cluster address aside)."""
    target = address or os.environ.get("RAY_ADDRESS")
    return None if not target or target == "local" else target


STOPPED = [False]  # the search's trials were stopped by a signal (not all ended): its tail writes what they did
_TERMINATED = [False]  # a SIGTERM came: the command exits 143 (128 + SIGTERM, what `timeout` and schedulers expect)
_DISK_STOP = [False]  # the search stopped itself at a disk that refused a write (`_fit_and_tail`)


def interrupted_exit_code() -> int:
    """The exit status of a command that a signal ended: 143 after SIGTERM, 130 after Ctrl-C (128 + the signal)."""
    return 143 if _TERMINATED[0] else 130


def _sigterm_as_ctrl_c() -> None:
    """SIGTERM (`kill`, `timeout`, `docker stop`, a batch scheduler's end of job) from here on acts as Ctrl-C
    does: the SIGINT handler of the moment (ours in the set-up, Ray Tune's in the search) takes it, so the search
    ends as interrupted, with its runs ended and the resume command printed (exit 143, not Ctrl-C's 130). Ray's
    own handler, installed by `ray.init` in the driver, printed a C++ stack dump and aborted (SIGABRT), leaving the
    parent run FAILED or RUNNING and no word on how to continue."""
    if threading.current_thread() is not threading.main_thread():
        return

    def forward(signum, frame) -> None:
        _TERMINATED[0] = True
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, forward)


def version_mismatch(message: str) -> str | None:
    """Ray's "Version mismatch" paragraph (the cluster's Ray and Python, then this process's) as one sentence;
    None for any other message."""
    if not message.startswith("Version mismatch"):
        return None
    import re

    rays, pythons = re.findall(r"Ray: (\S+)", message), re.findall(r"Python: (\S+)", message)
    if len(rays) != 2 or len(pythons) != 2:
        return " ".join(message.split())
    return (f"the Ray cluster there runs Ray {rays[0]} on Python {pythons[0]}, and this search Ray {rays[1]} on "
            f"Python {pythons[1]}; a driver must run the cluster's versions of both (run the search on the head, "
            "or in an environment made as the cluster's was)")


_JOINED: list = []  # what `_init_ray` joined in this process: [address as given (None: a local instance), GCS address]


def _record_joined(target: str | None) -> None:
    """Notes the Ray `_init_ray` joined: its address as given (None: a local instance) and its GCS address."""
    import ray

    _JOINED[:] = [target, ray.get_runtime_context().gcs_address]


def ray_in_process_problem(address: str | None, flag: str = "--address") -> str | None:
    """Why a search cannot run on the Ray this process runs already, or None: an earlier search from the same
    Python process (a notebook) joined another (a local instance of its own, or another cluster). `_init_ray`
    keeps a running Ray: a search given another --address ran where the first one had, and recorded the address
    it was given (a walkthrough). A Ray the user started herself is used as it is."""
    ray = sys.modules.get("ray")
    if ray is None or not _JOINED or not ray.is_initialized():
        return None
    target, (joined, gcs) = cluster_address(address), _JOINED
    try:
        now_gcs = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - a Ray too old or too new to say: as before
        now_gcs = gcs
    if now_gcs != gcs:  # not the Ray our search joined (stopped since; the user's own): used as it is
        return None
    if target == joined or target is not None and joined is not None and (target == gcs or "auto" in (target, joined)):
        return None  # the same cluster, named another way (`auto`, or its head's address)
    now = "a local instance of its own" if joined is None else f"the Ray cluster at {joined}"
    wanted = f"the Ray at {target} ({flag})" if target else "a local instance of its own (no address)"
    stop = "hsc_search.local_ray.stop_local_ray()" if joined is None else "ray.shutdown()"
    return (f"Ray already runs in this process ({now}, joined by an earlier search), and this search asks for "
            f"{wanted}: call {stop} first, or run it in a new process")


def _init_ray(address: str | None, preload: bool = True, flag: str = "--address") -> None:
    """Connects to `address` (or RAY_ADDRESS), else starts a new local instance. With `preload`, the local
    instance's workers (one per CPU) import the trial's modules as they start and Tune's trial actors run in them;
    a search passes it only when each trial takes at most one CPU, so that every such worker is used by a trial
    (an idle one holds about 230 MB of its own)."""
    import ray

    _quiet()

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": True, "logging_level": logging.WARNING}
    from .ray_internals import preload_system_config, trial_actors_on_inherited_env

    target = cluster_address(address)
    _JOINED[:] = []  # what was joined, once it is (a failed join leaves no record)
    if target is not None:
        trial_actors_on_inherited_env(None)
        try:
            ray.init(address=target, **kwargs)
        except ConnectionError as e:  # the pre-flight found a gRPC server there, but Ray could not join it
            # a head started with RAY_AUTH_MODE=token (cluster.yaml's) refuses a driver without it: Ray says only
            # "Failed to connect", after its own InvalidAuthToken warnings
            # (or a gRPC server of another service: Ray's warnings then say rpc_code 12, and it is no Ray head at all)
            auth = ("; if the cluster runs with token authentication (RAY_AUTH_MODE=token, as cluster.yaml starts "
                    "it), set RAY_AUTH_MODE=token here too, with its token in ~/.ray/auth_token; else what answers "
                    "there may be no Ray head (the address is the one `ray start --head` prints)"
                    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token" else "")  # fmt: skip
            raise SearchError(f"{flag if address else 'RAY_ADDRESS'} {target}: "
                              f"{str(e).strip().splitlines()[0]}{auth}") from None  # fmt: skip
        except RuntimeError as e:  # a head of another Ray or Python: Ray's paragraph under a 160-line traceback
            said = version_mismatch(str(e))
            if said is None:
                raise
            raise SearchError(f"{flag if address else 'RAY_ADDRESS'} {target}: {said}") from None
        _record_joined(target)
    else:  # always a new instance, on 127.0.0.1, never a cluster that happens to run on this machine
        from .local_ray import start_local_ray

        # Its workers import the trial's modules as they start, and Tune's trial actors take those workers (a warm
        # pool: the first trials start sooner, by up to a worker's imports, 2.8 s here). Tune's default for its actors, inherited by the workers.
        if not preload:
            trial_actors_on_inherited_env(None)
            start_local_ray(**kwargs)
            _record_joined(None)
            return
        os.environ.setdefault("PL_DISABLE_FORK", "1")
        start_local_ray(**kwargs, _system_config=preload_system_config())
        _record_joined(None)
        trial_actors_on_inherited_env(dict(os.environ))


def _echo_cluster(echo: Callable[[str], None], n_nodes: int, shared_by: list[dict] | None = None,
                  store: str | None = None) -> None:  # fmt: skip
    """The cluster's line; with `shared_by` (other searches' local instances on this machine, when this search
    sizes itself by the machine: `--max-concurrent 0`) a note that they share its cores; with `store` (the search's
    MLflow store) a note where a cluster's search keeps its runs in a sqlite file of the driver's machine."""
    import ray

    total = ray.cluster_resources()
    echo(f"Ray: {n_nodes} node(s), {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs, storage visible "
         f"from all; driver on node {ray.get_runtime_context().get_node_id()[:12]}")  # fmt: skip
    if n_nodes > 1 and store and sqlite_path(store) is not None:  # it works (the driver alone writes it), and went
        # with a cloud head at `ray down`, unsaid (a walkthrough; README: "the tracking data outlives the cluster")
        echo(f"note: MLflow's store {store} is a file on the driver's machine: the runs stay with that machine (a "
             "cloud head's disk goes at `ray down`); a tracking server or a database outside the cluster keeps them "
             "(README, \"On a cluster\")")  # fmt: skip
    if shared_by:
        def named(d: dict) -> str:  # "pid 123 (hsc-search run)"
            argv = [os.path.basename(str(a)) for a in (d.get("argv") or [])[:2]]
            return f"pid {d.get('pid')}" + (f" ({' '.join(argv)})" if argv else "")

        who = ", ".join(named(d) for d in shared_by[:3])
        echo(f"note: {_n(len(shared_by), 'other search')} on this machine run{'s' * (len(shared_by) == 1)} a local "
             f"Ray instance of {'its' if len(shared_by) == 1 else 'their'} own ({who}): each sizes itself for all "
             f"{total.get('CPU', 0):g} CPUs, so their trials share the cores and each runs slower; --max-concurrent "
             "divides them (e.g. half each)")  # fmt: skip


def _capacity_note(settings: SearchSettings) -> str | None:
    """A --max-concurrent above what the cluster holds (with as many trials to run) is said: Ray runs what fits
    and the rest wait, so the user asked for N at once and got fewer without a word (a walkthrough). At a new
    search's start only: a resume has fewer trials left than --num-samples (it spoke of others that were not)."""
    wanted = min(settings.max_concurrent, settings.num_samples)
    if not settings.max_concurrent or wanted <= (slots := _slots(settings)):
        return None
    per = f"{settings.cpus_per_trial:g} CPU" + (f" and {settings.gpus_per_trial:g} GPU"
                                               if settings.gpus_per_trial > 0 else "")  # fmt: skip
    return (f"note: --max-concurrent {settings.max_concurrent}, but the cluster holds {_n(slots, 'trial')} at once "
            f"({per} each): that many run at a time, the others wait for a free slot")


def _sharing(settings: SearchSettings, local: bool) -> list[dict]:
    """Other searches' local Ray instances on this machine, when this one is local and sizes itself by it."""
    if not local or settings.max_concurrent:
        return []
    from .local_ray import other_drivers

    try:
        return other_drivers()
    except Exception:  # noqa: BLE001 - a note, never a reason to stop a search
        return []


def _trainable(data: AVData, settings: SearchSettings):
    """The trial function with its data, objective and reporting policy: a trial reports (with a checkpoint) at
    the scheduler's rung milestones, every `checkpoint_every_s` seconds of training and after its last epoch."""
    from ray import tune

    from .trainable import restorable_trainable, train_trial

    scheduler = _scheduler(settings)
    report_at = tuple(asha_milestones(scheduler)) if isinstance(scheduler, PersistentASHA) else ()
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    trainable = tune.with_parameters(train_trial, data=data, metric=settings.metric, report_at=report_at,
                                     checkpoint_every_s=settings.checkpoint_every_s,
                                     threads=max(1, int(settings.cpus_per_trial)))  # fmt: skip
    return tune.with_resources(restorable_trainable(trainable), resources)


def _searcher(space: SearchSpace, settings: SearchSettings, first: dict[str, Any], warm: WarmStart | None = None):
    """The searcher, its study holding the warm-start trials (if any) before anything is sampled."""
    from .schedulers import BudgetAwareOptunaSearch

    searcher = BudgetAwareOptunaSearch(
        space=space.define_by_run(),
        metric=settings.metric,
        mode=settings.mode,
        seed=settings.seed if warm is None else warm_start.sampler_seed(settings.seed, warm),
        points_to_evaluate=[first] if first else None,
        max_epochs=settings.max_epochs,
    )
    if warm is not None:
        warm_start.add_to_searcher(searcher, warm)
    return searcher


def _scheduler(settings: SearchSettings):
    from ray.tune.schedulers import FIFOScheduler

    if settings.scheduler == "fifo":
        return FIFOScheduler()
    return PersistentASHA(
        time_attr="epoch",
        max_t=settings.max_epochs,
        grace_period=settings.grace_period,
        reduction_factor=settings.reduction_factor,
    )


def _run_config(settings: SearchSettings, exp_dir: str, callbacks: list):
    from ray import tune

    from ray.tune.logger import JsonLoggerCallback

    parent, name = storage.split(exp_dir)  # (a URI's query, e.g. an S3 endpoint, stays on the storage path)
    return tune.RunConfig(
        name=name,
        storage_path=parent,
        callbacks=list(callbacks) + [JsonLoggerCallback()],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=settings.keep_checkpoints),
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        verbose=0,
    )


def _tune_config(settings: SearchSettings, searcher, scheduler):
    from ray import tune

    return tune.TuneConfig(
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=settings.num_samples,
        max_concurrent_trials=settings.max_concurrent or _slots(settings),
        reuse_actors=True,
        metric=settings.metric,
        mode=settings.mode,
        trial_dirname_creator=_trial_dirname,
    )


def _slots(settings: SearchSettings) -> int:
    """How many trials fit in the cluster at once (by CPUs, and by GPUs when trials take GPUs).

    `max_concurrent_trials=N` wraps the searcher in a ConcurrencyLimiter (since Ray 2.60 a custom searcher such as
    OptunaSearch then has up to N trials pending instead of 1), so
    --max-concurrent 0 means this. A cluster the launcher started counts itself at its largest
    (`preflight.launcher_capacity`): the trials waiting for nodes are what makes the autoscaler add them.
    """
    import ray

    total = ray.cluster_resources()
    slots = int(total.get("CPU", 0) // settings.cpus_per_trial)
    if settings.gpus_per_trial > 0:
        slots = min(slots, int(total.get("GPU", 0) // settings.gpus_per_trial))
    if cluster_address(settings.address) is not None:  # not a Ray instance of our own on a head node
        slots = max(slots, preflight.launcher_capacity(settings.cpus_per_trial, settings.gpus_per_trial) or 0)
    return max(1, slots)


def _trial_dirname(trial) -> str:
    """Short trial folders (Ray's default spells out every parameter)."""
    return trial.trial_id


# ---------------------------------------------------------------------------------------------- run / resume
def _preflight_rest(settings: SearchSettings, space: SearchSpace, first: dict, notes: list[str],
                    fingerprint: dict) -> tuple[WarmStart | None, bool, bool]:  # fmt: skip
    """The pre-flight checks after the folder is claimed: the tracking store, the warm start, the resources.
    Returns (warm start, local, MLflow's writer in this process); may empty `first` and add to `notes`."""
    in_process = False
    if settings.mlflow:
        preflight.check_tracking(settings.tracking_uri)
        in_process = preflight.writer_in_process()
        # the store by what it resolved to (MLflow's default: ./mlflow.db, made absolute): the search's record
        # keeps it, and `resume` is run from other folders (a relative default opened a new database there)
        resolved = resolved_tracking_uri(settings.tracking_uri)
        if settings.tracking_uri or sqlite_path(resolved) is not None:  # not a URI from the environment with a
            settings.tracking_uri = resolved  # password in it: the record is a file on shared storage
    warm = None
    if settings.warm_start:
        source = Path(settings.warm_start).expanduser()
        if not storage.is_uri(settings.warm_start) and source.is_dir():  # recorded as read from anywhere
            settings.warm_start = str(source.resolve())
        root = storage.resolve(settings.storage)
        warm = warm_start.plan(settings.warm_start, space, settings.metric, settings.mode, settings.tracking_uri,
                               data=settings.data, fingerprint=fingerprint,
                               storage_root=None if storage.is_uri(root) else root,
                               max_epochs=settings.max_epochs)  # fmt: skip
        warm.sampler_seed = warm_start.sampler_seed(settings.seed, warm)  # recorded: the draws are this seed's
        # the trainer default has usually been trained by the source search already: not again
        among = warm_start.default_among(first, warm)
        if among is not None:
            first.clear()
            notes.append(f"the trainer default is warm-start trial {among}; not enqueued again")
    problem = ray_in_process_problem(settings.address)
    if problem:
        raise SearchError(problem)
    local = cluster_address(settings.address) is None
    if local:
        preflight.check_ray_temp_dir()
        preflight.check_ray_token_home()
        preflight.check_local_resources(settings.cpus_per_trial, settings.gpus_per_trial)
    else:  # (`auto` stays `auto` for ray.init: Ray turns token authentication on by itself only for `auto`)
        preflight.check_address(settings.address)
        # recorded as joined: the printed `resume`, pasted in a shell without RAY_ADDRESS, started a local Ray
        settings.address = cluster_address(settings.address)
    return warm, local, in_process


def run_search(
    settings: SearchSettings, echo: Callable[[str], None] = print, callbacks: Sequence = ()
) -> SearchOutcome:
    """Starts a new search. Every user mistake (settings, space, data, metric, storage, tracking URI, trial
    resources) fails in the pre-flight, before Ray starts and before anything is written.

    Args:
        settings: the search settings.
        echo: where progress lines go.
        callbacks: extra `ray.tune.Callback`s, run in the driver after the search's own (progress, MLflow, ASHA
            state); they are saved with the experiment, so they must pickle.
    """
    _TERMINATED[0] = False  # this search's own signal (a process may run several)
    STOPPED[0] = False
    with _interrupt_in_preflight():  # nothing is written here: the same command starts it again
        # the CLI's settings are checked as they are read; a settings object built in Python was not checked at
        # all (scheduler="bogus" searched with ASHA and recorded "bogus": a walkthrough)
        settings.validate()
        preflight.check_cache_dir()
        # a name this function filled in earlier is a default still: a settings object used again (a notebook's
        # loop) was refused as "exists already; pick another --name", its user having named nothing (a walkthrough)
        defaulted = not settings.name or settings.name == getattr(settings, "_default_name", None)
        settings.name = time.strftime("hsc-%Y%m%d-%H%M%S") if defaulted else settings.name
        space = load_space(settings.space_path(), overrides=settings.overrides, set_from=settings.set_from)
        # a data file is read and recorded by its absolute path (the parent run's `data`, the search's record, the
        # retrain lines): `resume` and the printed retrain command are run from other folders
        settings.data = absolute_data_spec(settings.data)
        data = load_search_data(settings, space)
        fingerprint = data_fingerprint(data)
        first, notes = _first_trial(space, settings, data)
        select_checkpoints_by_metric(space, settings)
        name_from = settings.given_by.get("name", "--name")  # a config's `name:` is said as such
        # before anything else is written; let go of if the pre-flight fails
        exp_dir = _claim_default_name(settings) if defaulted else _claim_named(settings, name_from)
        if defaulted:
            settings._default_name = settings.name  # (not a field: not recorded)
        try:
            warm, local, in_process = _preflight_rest(settings, space, first, notes, fingerprint)
        except BaseException:
            _remove_unstarted(exp_dir)
            release_search(exp_dir)
            raise

    _quiet()
    interrupts = _SetupInterrupts().defer()
    writer = opening = None
    db = sqlite_path(default_tracking_uri(settings.tracking_uri)) if settings.mlflow else None
    new_db = db if db is not None and not db.exists() else None  # made by this search: gone again if it fails here
    try:
        # MLflow's import and store set-up (about 2.5 s of the driver's CPU on a new sqlite store) run while Ray
        # starts, which is mostly waiting on Ray's own processes; only reads happen there (nothing is written
        # before Ray is up).
        opening = _opening(settings.tracking_uri, settings.experiment) if settings.mlflow else None
        # the trials' MLflow calls are made by the writer (a thread, or a process of its own: writer.py), which
        # starts (a process: imports MLflow) while Ray starts, and opens its store at its first record
        writer = Writer(settings.tracking_uri, settings.metric, settings.mode, in_process) \
            if settings.mlflow else None  # fmt: skip
        plan = _Plan(settings, space, data, fingerprint, exp_dir, first, notes, warm, local)
        return _launch(plan, opening, writer, callbacks, echo, interrupts)
    except BaseException as e:
        interrupts.release(pending_too=False)
        if writer is not None:
            writer.stop()
        if not interrupts.fitting:
            # (a folder with nothing but the claim's lock is not news: "nothing was written")
            recorded = storage.exists(storage.join(exp_dir, META_FILE))
            if isinstance(e, KeyboardInterrupt):
                if not recorded:
                    _remove_new_store(new_db, opening)
                removed = _remove_unstarted(exp_dir)  # while this process holds it: the folder is this run's own
                if removed and not recorded:
                    raise SetupInterrupted(None) from None
                raise SetupInterrupted(exp_dir if removed or storage.exists(exp_dir) else None,
                                       removed=removed) from None  # fmt: skip
            if not recorded:  # failed before its record was written (Ray's start, the cluster's resources): the
                _remove_unstarted(exp_dir)  # claim is taken back, as a pre-flight failure leaves nothing
                _remove_new_store(new_db, opening)
        raise
    finally:
        release_search(exp_dir)
        _CLAIMED.pop(exp_dir, None)


@dataclass
class _Plan:
    """A new search as the pre-flight resolved it: nothing of it is read again from the user's files."""

    settings: SearchSettings
    space: SearchSpace
    data: AVData
    fingerprint: dict  # the data's (trainer.fit.data_fingerprint): what `resume` and a warm start check data by
    exp_dir: str
    first: dict  # the first trial's values (the trainer default, as it trains on this data)
    notes: list[str]  # what the first trial's values differ in, said to the user
    warm: WarmStart | None
    local: bool  # Ray is started here (no address)


def _launch(plan: _Plan, opening, writer: Writer | None, callbacks: Sequence, echo,
            interrupts: _SetupInterrupts) -> SearchOutcome:  # fmt: skip
    """`run_search` once MLflow's store is opening and the writer starting: Ray, the parent run, the Tuner, the
    search."""
    from ray import tune

    settings, space, data, exp_dir = plan.settings, plan.space, plan.data, plan.exp_dir
    first, notes, warm, local = plan.first, plan.notes, plan.warm, plan.local
    _init_ray(settings.address, preload=settings.cpus_per_trial <= 1)
    _sigterm_as_ctrl_c()
    interrupts.check()
    to_launch = preflight.check_cluster_resources(settings.cpus_per_trial, settings.gpus_per_trial)
    if to_launch:
        echo(f"no node can run a trial yet; the autoscaler can add: {', '.join(to_launch)}")
    # one local node writes its own folder: nothing to prove (the check costs a Ray worker start)
    n_nodes = 1 if local else storage.check_visible_from_all_nodes(exp_dir)
    headline = search_headline(settings, space, data.summary())
    said = [*(f"note: {n}" for n in start_notes(settings, space, data)), *(f"first trial: {n}" for n in notes),
            *([warm.line()] if warm is not None else [])]  # fmt: skip
    for line in (headline, *said):
        echo(line)
    _echo_cluster(echo, n_nodes, _sharing(settings, local),
                  resolved_tracking_uri(settings.tracking_uri) if settings.mlflow else None)  # fmt: skip
    if capped := _capacity_note(settings):
        echo(capped)

    client = experiment_id = parent_id = None
    try:
        if settings.mlflow:
            import_mlflow()  # the opening and the writer threads may still be importing it (runs.import_mlflow)
            try:
                client = opening.result()
                interrupts.check()
                n_said = len(said)
                # (a server whose artifact store failed, HTTP 500 on each upload, was 4.4 minutes of silence here, in
                # MLflow's 7 retries per call, before the one line below: a walkthrough)
                with bounded_retries():
                    experiment_id = _experiment_id(client, settings.experiment, settings.metric, settings.mode,
                                                   settings.tracking_uri, notes=said)  # fmt: skip
                for line in said[n_said:]:
                    echo(line)
                with bounded_retries():
                    parent_id = _start_parent(client, experiment_id, settings, space, plan, headline, said)
            except Exception as e:
                if not _store_failure(e):
                    raise
                raise TrackingUnavailable(
                    f"MLflow's store {without_password(resolved_tracking_uri(settings.tracking_uri))} failed as the "
                    f"search started ({http_failure(e)}); nothing was trained. Mend what it says (a full or read-only "
                    "disk, a database that refuses writes, the server's credentials), or give another "
                    "--tracking-uri") from None  # fmt: skip
        # the warm-start record: `resume` restores the warm trials with the Optuna study (the searcher's
        # checkpoint) and never adds them again
        meta = {"settings": settings.to_dict(), "space": space.to_dict(), "experiment_id": experiment_id,
                "parent_run_id": parent_id, "warm_start": warm.to_dict() if warm is not None else None,
                "data_fingerprint": plan.fingerprint}  # fmt: skip
        from . import USER_RAY_AUTH_MODE

        if USER_RAY_AUTH_MODE:  # for the resume commands printed by other processes (export-best: a walkthrough)
            meta["ray_auth_mode"] = USER_RAY_AUTH_MODE
        hold_search(exp_dir)
        storage.write_text(storage.join(exp_dir, META_FILE), json.dumps(meta, indent=2))
        # every trial trains the full schedule of max_epochs (ASHA may stop it earlier): epochs is part of each
        # trial's config, so its logged config.yaml (and the exported best config) retrains exactly what was searched
        space = dataclasses.replace(space, fixed={**space.fixed, "epochs": settings.max_epochs})
        scheduler = _scheduler(settings)
        own = [Progress(settings.num_samples, settings.max_epochs, settings.metric, settings.mode, space.names())]
        if settings.mlflow:
            own.append(MlflowTracker(settings.tracking_uri, experiment_id, parent_id, settings.max_epochs,
                                     space.names(), settings.metric, settings.mode, writer, scheduler))  # fmt: skip
        if isinstance(scheduler, PersistentASHA):
            own.append(AshaStateCallback(scheduler))
        tuner = tune.Tuner(
            _trainable(data, settings),
            tune_config=_tune_config(settings, _searcher(space, settings, first, warm), scheduler),
            run_config=_run_config(settings, exp_dir, own + list(callbacks)),
        )
        interrupts.release()  # Ray Tune takes SIGINT over in fit()
    except BaseException as e:
        if client is not None and parent_id is not None:
            _end_parent(client, parent_id, e)
        raise
    interrupts.fitting = True
    outcome = _fit_and_finish(tuner, client, settings, exp_dir, experiment_id, parent_id, echo)
    outcome.warm_line = _warm_line(warm, outcome.best, settings.mode)
    return outcome


def _warm_line(warm: WarmStart | None, best: TrialRow | None, mode: str) -> str | None:
    """Whether a warm-started search bettered the trials it started from: its summary named only its own best, so
    a search that found nothing better looked like progress (a walkthrough). None without a warm start, or with
    one from other data, another --max-epochs or other fixed values (scores not comparable: a review)."""
    comparable = warm is not None and not (warm.other_data or warm.epochs_differ or warm.fixed_differs)
    theirs = warm.best(mode) if comparable else None  # (another budget or fixed values: scores not comparable)
    if theirs is None:
        return None
    trial, score = theirs
    mine = best.score if best is not None else None
    if mine is not None and mine == score:
        verdict = "this search's best is the same"
    elif mine is not None and (mine > score if mode == "max" else mine < score):
        verdict = "this search's best is better"
    else:
        verdict = "this search did not reach it"
    return f"the best trial it started from, {trial} of {warm.source}, scored {score:.4f}; {verdict}"


def _remove_new_store(db: Path | None, opening) -> None:
    """A sqlite store this search created, while its start failed before any run (a cluster that refused the
    driver: walkthrough V found an empty mlflow.db left behind), is removed once its opening thread is done with
    it; a store with any run in it, or one that is not there, is left as it is."""
    if db is None:
        return
    if opening is not None:
        try:
            opening.result(timeout=30)
        except BaseException:  # noqa: BLE001 - its failure (or a second Ctrl-C) is not this one's business
            pass
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            try:
                if con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]:
                    return
            except sqlite3.OperationalError as e:  # made, and its tables not (its disk filled as MLflow made them)
                if "no such table" not in str(e):
                    raise
        if _open_in_another_process(db):  # another search that started beside this one, in the same folder,
            return  # with the same new store (a review): it is that search's too
        for path in (db, db.with_name(db.name + "-journal"), db.with_name(db.name + "-wal"),
                     db.with_name(db.name + "-shm")):  # fmt: skip
            path.unlink(missing_ok=True)
    except (sqlite3.Error, OSError):  # not a store we can read: left alone
        return
    try:  # MLflow keeps one engine per URI for the process (private): one on the removed file would make the next
        # search of this process (the Python API, a benchmark) fail with "attempt to write a readonly database"
        # and one store object per URI, which made its tables on the removed file
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        for uri in [u for u in SqlAlchemyStore._engine_map if sqlite_path(u) is not None
                    and sqlite_path(u).resolve() == db.resolve()]:  # fmt: skip
            SqlAlchemyStore._engine_map.pop(uri).dispose()
        _tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    except (ImportError, AttributeError):
        pass


def _open_in_another_process(path: Path) -> bool:
    """Whether a process other than this one has `path` open (Linux: /proc/<pid>/fd); True where that cannot be
    told (no /proc), so that nothing another process may use is removed."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return True
    try:
        target = os.stat(path)
    except OSError:
        return False
    me = str(os.getpid())
    for pid in os.listdir(proc):
        if not pid.isdigit() or pid == me:
            continue
        try:
            fds = os.listdir(proc / pid / "fd")
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                st = os.stat(proc / pid / "fd" / fd)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                return True
    return False


def _opening(tracking_uri: str | None, experiment: str):
    """A future of the MLflow client, its store opened (a read of the experiment) in a background thread."""
    from concurrent.futures import ThreadPoolExecutor

    def open_store():
        client = client_for(tracking_uri)
        client.get_experiment_by_name(experiment)
        return client

    pool = ThreadPoolExecutor(1, thread_name_prefix="hsc-mlflow-open")
    future = pool.submit(open_store)
    pool.shutdown(wait=False)  # the thread ends after its one call
    return future


def _fixed_clamp_notes(space: SearchSpace, data: AVData, max_epochs: int) -> list[str]:
    """Fixed values (the space's, --set's, or the trainer defaults) every trial trains smaller because of the data
    (`trainer.fit.clamp_notes`: a batch_size above the train split's clips, a topk not below the batch): the
    trainer alone says so as it starts, a search did not (its trials say nothing), and only the trials'
    effective.* params told it (a walkthrough: --set topk=8 recorded as 8, trained as 7). Not for a value a
    searched field can change (a searched batch_size: `_alike_notes`)."""
    from trainer.config import ConfigError
    from trainer.fit import clamp_notes

    searched = set(space.names())
    fixed = {**space.fixed, "epochs": max_epochs}
    batch = next((p for p in space.params if p.name == "batch_size"), None)
    if batch is not None:  # a fixed topk not below even the largest batch a trial can take (a walkthrough: topk 220
        # beside batch_size [256, 512] on 200 clips: every trial trained 199 neighbours, and the start was silent)
        largest = max(batch.choices if batch.type == "categorical" else (batch.high,))
        if batch.when:  # trials where its condition does not hold train the fixed or default batch
            largest = max(largest, fixed.get("batch_size", TrainConfig().batch_size))
        fixed["batch_size"] = largest
    try:
        asked = TrainConfig(**fixed)
        trained = asked.resolve(len(data.train), data.audio_dim, data.visual_dim)
    except (ConfigError, ValueError):  # the first trial's checks say what is wrong
        return []
    if batch is not None:
        if not trained.topk < asked.topk or not trained.use_nce or {"topk", "use_nce"} & searched:
            return []
        return [f"topk {asked.topk} is not below any trial's batch (at most {trained.batch_size} clips): each trains "
                f"with its batch - 1 neighbours (at most {trained.topk}), in every trial (recorded as given; each "
                "trial's effective.topk param holds what it trained with)"]  # fmt: skip
    # (topk: read only by trials with use_nce, which a space that searches use_nce does not say of every trial)
    return [f"{note}, in every trial (recorded as given; each trial's effective.{note.split(' ', 1)[0]} param holds "
            "what it trained with)" for note in clamp_notes(asked, trained, len(data.train))
            if note.split(" ", 1)[0] not in searched and not (note.startswith("topk") and "use_nce" in searched)]


_RESOLVED_WITH = ("batch_size", "cca_dim", "cca_k", "topk")  # the fields `TrainConfig.resolve` checks together


def _data_clash_notes(space: SearchSpace, data: AVData, max_epochs: int) -> list[str]:
    """Searched values of the fields `TrainConfig.resolve` checks against the data (`_RESOLVED_WITH`: a cca_k above
    the cca_dim auto picks for the data's dimensions, a cca_dim not below the batch) with which a trial fails at its
    start: the search said nothing (`space.clashes` checks pairs of values, not the data), and 3 of 4 trials of a
    walkthrough's search failed so. Each end of a range (or choice) is tried with the values the other such fields
    can take in the same trial (their choices or ends where their own `when` holds, else their fixed or default
    value; the param's own `when`), and only where the param's `when` holds: a note names the first combination
    that fails, each combination once. Other fields (lr, loss_weighting) play no part and are not named."""
    import itertools

    from trainer.config import ConfigError

    dims = (len(data.train), data.audio_dim, data.visual_dim)
    base = {**space.fixed, "epochs": max_epochs}
    try:
        TrainConfig(**base).resolve(*dims)
    except (ConfigError, ValueError, TypeError):  # the defaults themselves fail: the first trial's note says why
        return []
    by_name = {p.name: p for p in space.params}
    constant = {**TrainConfig().to_dict(), **base}  # what a field not drawn in a trial has

    def candidates(p) -> list:
        return list(p.choices) if p.type == "categorical" else [p.low, p.high]

    def shown_value(x) -> str:
        return _number(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)

    notes, said = [], set()
    for p in (q for q in space.params if q.name in _RESOLVED_WITH):
        others = [n for n in _RESOLVED_WITH if n != p.name and n in by_name]
        for v in candidates(p):
            for combo in itertools.product(*(candidates(by_name[n]) for n in others)):
                values = {**constant, p.name: v, **dict(zip(others, combo))}
                for n in others:  # a field whose own `when` fails keeps its fixed or default value
                    if not by_name[n].holds(values):
                        values[n] = constant[n]
                if not p.holds(values):  # the param is not drawn beside these values
                    continue
                drawn = {n: values[n] for n in others}
                key = frozenset({(p.name, repr(v)), *((n, repr(x)) for n, x in drawn.items())})
                if key in said:
                    continue
                problem = _fails_on(base, drawn, p.name, v, dims)
                if problem is not None:
                    said.add(key)
                    with_ = "".join(f", {n} {shown_value(x)}" for n, x in drawn.items() if n in by_name)
                    what = shown_value(v)
                    edge = _first_failing(p, v, lambda x: _fails_on(base, drawn, p.name, x, dims))
                    if edge is not None:  # a range fails from a value on, not at its end alone (a walkthrough:
                        # "cca_k 40" said of cca_k 10 to 40, and trials of cca_k 19, 20 and 32 failed)
                        what = f"{shown_value(edge[0])} to {what}" if edge[0] < v else f"{what} to {shown_value(edge[0])}"
                        problem = edge[1]
                    notes.append(f"trials that draw {p.name} {what}{with_} fail on this data ({problem})")
                    break
            else:
                continue
            break
    return notes


def _fails_on(base: dict, drawn: dict, name: str, value, dims) -> str | None:
    """The trainer's problem with the data (`TrainConfig.resolve` on data of `dims`) of a trial of `name` =
    `value` beside `drawn`, or None; None too for a config refused by itself (the space's checks say that)."""
    from trainer.config import ConfigError

    try:
        cfg = TrainConfig(**{**base, **drawn, name: value})
    except (ConfigError, ValueError, TypeError):
        return None
    try:
        cfg.resolve(*dims)
    except ConfigError as e:
        return "; ".join(e.problems).removeprefix("data: ")
    return None


def _first_failing(p, v, fails: Callable[[Any], str | None]) -> tuple[Any, str] | None:
    """For an int range `p` whose end `v` fails (`fails` gives the trainer's problem) and whose other end does not:
    the value nearest that other end that fails, with its problem, by bisection on the range's grid (the data's
    limits on batch_size, cca_dim, cca_k and topk are thresholds). None for a choice, a float or both ends failing."""
    if p.type != "int" or p.low == p.high:
        return None
    step = int(p.step or 1)
    grid = lambda k: int(p.low) + k * step  # noqa: E731
    n = (int(p.high) - int(p.low)) // step
    bad_k = 0 if v == p.low else n
    good_k = n if bad_k == 0 else 0
    if fails(grid(good_k)) is not None:
        return None
    while abs(good_k - bad_k) > 1:
        mid = (good_k + bad_k) // 2
        if fails(grid(mid)) is not None:
            bad_k = mid
        else:
            good_k = mid
    return grid(bad_k), fails(grid(bad_k))


def start_notes(settings: SearchSettings, space: SearchSpace, data: AVData) -> list[str]:
    """What the search's start says about its data (`AVData.notes`: a modality that is constant) and about values
    it was given and does not use: settings of another scheduler, space parameters fixed by --set, a val_fraction
    for data with a val split of its own."""
    notes = [*data.notes, *settings.unused()]
    for name, where in space.unsearched.items():
        notes.append(f"{name} is in the space but {where} fixes it at {space.fixed[name]!r}: not searched")
    notes += list(space.refixed.values())
    never = space.never_searched()
    notes += [f"{name} is never searched: {why}" for name, why in never.items()]
    notes += [why for name, why in space.unused_by_trainer().items() if name not in never]
    notes += list(space.unused_fixed().values())
    searched = set(space.names())
    if "seq_layers" in searched and not (data.audio_is_sequence or data.visual_is_sequence):
        notes.append(f"seq_layers is searched, but the data's features are vectors (audio {data.audio_dim}-d, visual "
                     f"{data.visual_dim}-d): the trainer reads it only for sequence features, so its values change "
                     "nothing")  # fmt: skip
    if "amp" in searched and settings.gpus_per_trial == 0:
        notes.append("amp is searched, but trials run on CPUs (--gpus-per-trial 0), where the trainer ignores it: "
                     "its values change nothing")  # fmt: skip
    notes += _alike_notes(space, len(data.train), settings.max_epochs)
    notes += _fixed_clamp_notes(space, data, settings.max_epochs)
    notes += _data_clash_notes(space, data, settings.max_epochs)
    notes += space.clashes()
    if not selectable(settings):
        from trainer.config import select_metrics, select_mode

        kept = space.fixed.get("select_metric", TrainConfig().select_metric)  # the trainer's default
        takes = "; ".join(f"{', '.join(m for m in select_metrics() if select_mode(m) == mode)} {word}"
                          for mode, word in (("max", "highest"), ("min", "lowest")))  # fmt: skip
        notes.append(f"each trial keeps and tests the checkpoint of its best {kept}: --metric {settings.metric} "
                     f"--mode {settings.mode} cannot select checkpoints (the trainer's select_metric takes "
                     f"{takes}), so a trial's score, its best {settings.metric}, can be of another epoch than its "
                     "test metrics")  # fmt: skip
    shaping = [n for n in space.names() if n in LOSS_SHAPERS.get(settings.metric, ())]
    if shaping:
        notes.append(f"--metric {settings.metric} is a training loss, and {', '.join(shaping)} (searched) change how it "
                     f"is computed: trials with different values are {on_scales(shaping)}")  # fmt: skip
    shaping = [n for n in space.names() if n in CCA_SHAPERS] if settings.metric.startswith("cca/") else []
    if shaping:
        notes.append(f"--metric {settings.metric} is a canonical correlation of each trial's own CCA head, and "
                     f"{', '.join(shaping)} (searched) change how it is computed (a larger cca_ridge shrinks every "
                     "correlation; with use_dcca off nothing trains the head): trials with different values are "
                     f"{on_scales(shaping)}")  # fmt: skip
    if "val_fraction" in space.fixed and not data.val_carved:  # given, but there is nothing to carve
        notes.append(f"val_fraction {space.fixed['val_fraction']!r} is not used: the data has a val split of its "
                     f"own ({len(data.val)} clips)")  # fmt: skip
    return notes


def selectable(settings: SearchSettings) -> bool:
    """Whether the trainer can keep each trial's checkpoint by the search's metric (`TrainConfig.select_metric`
    takes a few validation metrics, each better in its own direction)."""
    from trainer.config import select_mode, select_metrics

    return settings.metric in select_metrics() and settings.mode == select_mode(settings.metric)


def select_checkpoints_by_metric(space: SearchSpace, settings: SearchSettings) -> None:
    """Every trial keeps (and tests) the checkpoint of its best epoch under the search's --metric, the epoch its
    score is of: the trainer selected by val/map_avg whatever the metric, so with --metric val/map_a2v a trial's
    score could be of another epoch than the model it kept (and the exported config retrained). Fixed in the space
    (the record and every trial's config.yaml hold it)."""
    if not selectable(settings):  # said at the start (start_notes)
        return
    if "select_metric" in space.names():
        raise SearchError(f"{space.source}: params.select_metric: searched, but a search keeps each trial's "
                          "checkpoint by its --metric (select_metric follows it); take it out of the space")  # fmt: skip
    given = space.fixed.get("select_metric", settings.metric)
    if given != settings.metric:
        where = space.unsearched.get("select_metric") or settings.set_from.get("select_metric") or (
            f"--set select_metric={given}" if "select_metric" in settings.overrides else "the space's fixed")
        raise SearchError(f"{where}: select_metric {given!r} differs from --metric {settings.metric}: a search keeps "
                          f"each trial's checkpoint by its --metric; give --metric {given} instead")  # fmt: skip
    space.fixed["select_metric"] = settings.metric


def _beyond(space: SearchSpace, name: str, limit: float, *, inclusive: bool = False) -> tuple[str, bool] | None:
    """The values a space searches for `name` above `limit` (from `limit` on with `inclusive`), as they would be
    written ("128, 256" of a choice; "3.5-5" of a range, from the first value its step grid reaches), and whether
    they are several; None if the space does not search `name` or reaches no such value."""
    param = next((p for p in space.params if p.name == name), None)
    if param is None:
        return None
    past = (lambda v: v >= limit) if inclusive else (lambda v: v > limit)
    if param.type == "categorical":
        over = [_number(c) for c in param.choices
                if isinstance(c, (int, float)) and not isinstance(c, bool) and past(round(c, 9))]  # fmt: skip
        return (", ".join(over), len(over) > 1) if over else None
    if not past(round(param.high, 9)):
        return None
    step = param.step or (1 if param.type == "int" else 0)
    if not step:  # a continuous range
        return f"{'from' if inclusive else 'above'} {_number(limit)} to {_number(param.high)}", True
    first = round(param.low + max(0, math.ceil(round((limit - param.low) / step, 9))) * step, 9)
    if not past(first):  # (rounded first: a grid of 0.1 steps reaches 3 as 3.0000000000000004)
        first = round(first + step, 9)
    if first > param.high + 1e-9:  # the grid ends before it
        return None
    several = first < param.high - 1e-9
    return (f"{_number(first)}-{_number(param.high)}" if several else _number(first)), several


def _number(v: float) -> str:
    """A value as written: 512, not 512.0 nor 5.12e+02; 2.5."""
    return str(int(v)) if float(v).is_integer() else f"{v:.6g}"


def _alike_notes(space: SearchSpace, n_train: int, max_epochs: int) -> list[str]:
    """Searched values the trainer clamps, so that such trials train alike while the sampler takes them for
    different values: batch sizes above the train split (TrainConfig.resolve, logged as effective.batch_size), a
    learning-rate warm-up as long as a trial or longer (trainer.fit clamps its steps to the run's: it spans the
    run, peaking at its last step) and a loss-weight warm-up as long as a trial (the weights never learn; not said
    where the weights are fixed, which the trainer then never reads); then the warm-ups the space does not search
    (`_unsearched_warmup_notes`: one value, so said of every trial, not as alike)."""
    def alike(several: bool) -> str:
        return " (alike, though the sampler takes them for different values)" if several else ""

    notes = []
    over = _beyond(space, "batch_size", n_train)
    if over:
        notes.append(f"batch_size {over[0]} exceeds the {n_train} training clips: such trials train with batches of "
                     f"{n_train}{alike(over[1])}")
    over = _beyond(space, "warmup_epochs", max_epochs, inclusive=True)
    if over:
        notes.append(f"warmup_epochs {over[0]} is not shorter than a trial (--max-epochs {max_epochs}): such trials "
                     f"warm up over the whole run, their learning rate peaking at its last step{alike(over[1])}")
    over = _beyond(space, "weight_warmup_epochs", max_epochs, inclusive=True)  # (not where the trainer never reads
    # it: fixed weights, said by unused_by_trainer / never_searched, trainer.config.USED_ONLY_WHEN)
    if over and "weight_warmup_epochs" not in {**space.never_searched(), **space.unused_by_trainer()}:
        notes.append(f"weight_warmup_epochs {over[0]} is not shorter than a trial (--max-epochs {max_epochs}): such "
                     f"trials never learn their loss weights{alike(over[1])}")
    return notes + _unsearched_warmup_notes(space, max_epochs)


def _unsearched_warmup_notes(space: SearchSpace, max_epochs: int) -> list[str]:
    """Warm-ups no trial can finish that the space does not search: its fixed value (the space's or --set's) or
    the trainer's default (1 epoch each: a search of --max-epochs 1 never learns its loss weights). The weights'
    only where some trial learns them (`trainer.config.USED_ONLY_WHEN`)."""
    from trainer.config import USED_ONLY_WHEN

    searched, constant = set(space.names()), {**TrainConfig().to_dict(), **space.fixed}

    def source(name: str) -> str:
        return (f"fixed by {space.unsearched[name]}" if name in space.unsearched else "fixed" if name in space.fixed
                else "the trainer's default")  # (a space's own fixed values and --set's are one dict)

    notes = []
    if "warmup_epochs" not in searched and constant["warmup_epochs"] >= max_epochs - 1e-9:
        notes.append(f"warmup_epochs {_number(constant['warmup_epochs'])} ({source('warmup_epochs')}) is not shorter "
                     f"than a trial (--max-epochs {max_epochs}): every trial warms up over its whole run, its learning "
                     "rate peaking at its last step")  # fmt: skip
    (field, learned), = USED_ONLY_WHEN["weight_warmup_epochs"]
    some = field in searched or constant[field] in learned  # (a searched loss_weighting: the trials that learn them;
    # a choice of no learned value is said by unused_by_trainer, and weight_warmup_epochs is then never read)
    if "weight_warmup_epochs" not in searched and some and constant["weight_warmup_epochs"] >= max_epochs:
        src = next((p for p in space.params if p.name == field), None)
        takes = [c for c in src.choices if c in learned] if src is not None and src.type == "categorical" else learned
        if src is not None and src.when and constant[field] in learned and constant[field] not in takes:
            takes = [*takes, constant[field]]  # where its `when` fails a trial keeps the default (the review)
        who = f"trials with {field} {' or '.join(takes)}" if field in searched else "no trial learns"
        what = (f"{who} never learn their loss weights" if field in searched else f"{who} its loss weights")
        notes.append(f"weight_warmup_epochs {constant['weight_warmup_epochs']} ({source('weight_warmup_epochs')}) is "
                     f"not shorter than a trial (--max-epochs {max_epochs}): {what}")  # fmt: skip
    return notes


def load_search_data(settings: SearchSettings, space: SearchSpace) -> AVData:
    """The search's data, with the validation split every trial is scored on: carved with the space's or
    --set's val_fraction when the data has no val split of its own (val_fraction is never searched)."""
    from trainer.fit import check_enough_to_train

    fraction = space.fixed.get("val_fraction", TrainConfig().val_fraction)
    data = load_data(settings.data, val_fraction=fraction)
    check_enough_to_train(data)  # with the file and the carving (the config's own check names neither)
    return data


def resume_search(path: str | Path, echo: Callable[[str], None] = print, address: str | None = None,
                  tracking_uri: str | None = None, data: str | None = None) -> SearchOutcome:  # fmt: skip
    """Continues a search whose driver died: unfinished trials resume from their checkpoints, the ASHA rung
    history and the Optuna study are restored, and each trial keeps its one MLflow child run. `tracking_uri`: the
    store the search logged to, where it has moved since (default: the one in the search's record). `data`: the
    search's data file where it is now (checked against the record's fingerprint of the data it started on)."""
    _TERMINATED[0] = False  # as in run_search
    STOPPED[0] = False
    exp_dir = str(path).rstrip("/") if storage.is_uri(str(path)) else str(Path(path).resolve())
    try:
        return _resume_search(exp_dir, echo, address, tracking_uri, data)
    finally:
        release_search(exp_dir)


def _check_parent_run(client, parent_id: str, uri: str | None, given: str | None, exp_dir: str | None = None) -> None:
    """The store a resume logs to holds the search's parent run (a store given with --tracking-uri may be
    another one), and the run has not finished from another folder (`exp_dir`: the one resumed): else one
    sentence, before any trial runs."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(parent_id)
        if run.info.lifecycle_stage == "deleted":  # MLflow refused to mark it running (the review)
            exp = client.get_experiment(run.info.experiment_id)
            if exp.lifecycle_stage == "deleted":  # its runs went with it, and come back with it (the second review:
                raise SearchError(  # the run alone restored, its new trials had no experiment to go to)
                    f"the search's experiment '{exp.name}' is deleted in MLflow (its runs, the search's among them, "
                    f"are in the trash); restore it (`{restore_command(uri, 'experiments', exp.experiment_id)}`), "
                    "then resume again")  # fmt: skip
            raise SearchError(f"the search's parent run {parent_id} is deleted in MLflow (in the trash); restore it "
                              f"(`{restore_command(uri, 'runs', parent_id)}`), then resume again")  # fmt: skip
    except MlflowException as e:
        if getattr(e, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
        flag = f"--tracking-uri {given}" if given else f"the search's MLflow store {uri or 'sqlite:///mlflow.db'}"
        raise SearchError(f"{flag}: has no run {parent_id} (the search's parent run): not the store the search "
                          "logged to; give resume --tracking-uri with the store it logged to") from None
    # a store moved with its artifact folder (a project folder moved whole): MLflow keeps absolute artifact paths,
    # so the resumed search's records went to the old path, made again, or failed there for 150 s and were called
    # a server not answering (a review)
    artifacts = run.info.artifact_uri or ""
    local = artifacts.removeprefix("file://") if artifacts.startswith(("file://", "/")) else None
    if local is not None and not os.path.isdir(local):
        raise SearchError(f"the search's parent run {parent_id}: {moved_store_hint(artifacts)}; a resume would "
                          "write the search's new records there")  # fmt: skip
    elsewhere = run.data.tags.get("hsc.experiment_dir")
    if exp_dir is None or elsewhere in (None, exp_dir) or _same_folder(elsewhere, exp_dir):
        return
    # a resume of a copy MLflow no longer follows trained the other copy's trials again in the one run and took
    # their runs for lost (deleted; a walkthrough, and two reviews: whether or not that copy's resume had finished
    # the search, and whether or not that copy is still there when the search finished)
    if search_status(run) == "FINISHED":  # (this folder's own record says finished_at where it finished here)
        raise SearchError(f"{exp_dir}: its search (MLflow run {parent_id}) finished from the folder {elsewhere}: this "
                          "folder is an older copy of it, with nothing to resume; its results are that folder's and "
                          "MLflow's")  # fmt: skip
    if not storage.is_uri(elsewhere) and search_in(Path(elsewhere)) == parent_id:
        raise SearchError(f"{exp_dir}: its search (MLflow run {parent_id}) last ran from the folder {elsewhere}, a copy "
                          "of this one that holds it too: resuming both would train trials twice in one run; resume "
                          "that folder (or move it away first, if this one is to go on)")  # fmt: skip


def _is_file(path: Path) -> bool:
    """`path.is_file()`, False where the name cannot even be looked at (too long: ENAMETOOLONG, which the storage
    check after it says in one line; a CI run's traceback)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _local_path(where: str) -> str | None:
    """The path of a folder of this machine's that `where` names (a path, a file:// URI), else None (a URI)."""
    return where[len("file://"):] if where.startswith("file://") else None if storage.is_uri(where) else where


def _same_folder(a: str, b: str) -> bool:
    """Two names of one folder (a link, a bind mount, a file:// URI of a path), as far as this machine can tell."""
    la, lb = _local_path(a), _local_path(b)
    if la is None or lb is None:
        return False
    try:
        return os.path.samefile(la, lb)
    except OSError:
        return False


def _check_same_data(meta: dict, data, spec: str, given: bool = True) -> None:
    """A resume trains on the data the search started on, or not at all: a file changed since (other clips,
    labels, values or dimensions) made the restored trials fail one by one while the trials not yet started
    trained on the new file, and the search named one of those its best (exit 0). Searches recorded before the
    fingerprint pass."""
    from trainer.fit import same_data

    saved = meta.get("data_fingerprint")
    if saved is not None and not same_data(saved, data_fingerprint(data)):
        started = (meta.get("settings") or {}).get("data")
        same = started is None or os.path.realpath(str(started)) == os.path.realpath(str(spec))  # (a link to it)
        if not same:  # other data given: no file changed (a walkthrough: a synthetic spec was told its "file
            raise SearchError(  # changed since")
                f"--data {spec}: not the data this search started on ({started}: other clips, labels, values or "
                "dimensions); its trials must all train on one dataset: give its data (moved: --data <where it "
                "is now>), or start a new search on this one")  # fmt: skip
        named = f"--data {spec}" if given else f"the search's data {spec}"  # (no --data given: a review)
        raise SearchError(f"{named}: not the data this search started on (other clips, labels, values or "
                          "dimensions: the file changed since); its trials must all train on one dataset: put the "
                          "search's file back, or start a new search on this one")  # fmt: skip


def _space_file_changed(settings: SearchSettings, recorded: dict) -> str | None:
    """A note when the search's space file now holds other parameters than the search started with (edited
    since, or a shipped space changed by an upgrade): a resume goes on with the recorded space, as it must for the
    Optuna study and ASHA's rungs to stay true, and says so. None when unchanged or not found from here."""
    path = settings.space_path()
    if not path.is_file():
        return None
    try:
        now = load_space(path, overrides=settings.overrides).to_dict()["params"]
    except Exception:  # noqa: BLE001 - unreadable now: changed all the same
        now = None
    if now == (recorded or {}).get("params"):
        return None
    return (f"note: {path} has changed since the search started; the search goes on with the space it started "
            f"with (recorded in its {META_FILE}); start a new search to search the new one")


def _resume_search(exp_dir: str, echo: Callable[[str], None], address: str | None,
                   tracking_uri: str | None = None, data_spec: str | None = None) -> SearchOutcome:  # fmt: skip
    preflight.check_cache_dir()
    meta_path = storage.join(exp_dir, META_FILE)
    if not storage.exists(meta_path):
        if not storage.exists(exp_dir):
            raise SearchError(f"{exp_dir}: no such folder; pass the folder `hsc-search run` printed as folder:")
        if not storage.is_uri(exp_dir) and Path(exp_dir).is_file():  # e.g. the record itself
            folder = Path(exp_dir).parent
            hint = f": pass its folder, {folder}" if Path(exp_dir).name == META_FILE else ""
            raise SearchError(f"{exp_dir}: a file, not a search's folder{hint}")
        raise SearchError(f"{exp_dir}: not a hsc-search experiment folder (no {META_FILE}){folder_hint(exp_dir)}")
    try:
        with _interrupt_in_preflight(exp_dir, resumable=True):  # reading a remote record can take seconds
            meta = json.loads(storage.read_text(meta_path))
        settings = SearchSettings(**meta["settings"])
        for key in ("space", "parent_run_id", "experiment_id"):
            if key not in meta:
                raise KeyError(key)
    except (ValueError, KeyError, TypeError) as e:  # cut short, edited by hand, or from another version
        what = f"no {e} in it" if isinstance(e, KeyError) else str(e).splitlines()[0]
        raise SearchError(f"{meta_path}: not a readable search record ({what}); it is written when a search "
                          "starts, so this folder cannot be resumed") from None  # fmt: skip
    if meta.get("finished_at"):
        best = storage.join(exp_dir, BEST_CONFIG)
        where = (f"; its best config: {best}" if storage.exists(best) else  # (a search whose every trial failed:
                 "; no trial produced a score, so it has no best config")  # "finished" alone read as a success)
        raise NothingToResume(f"{exp_dir}: search {settings.name} finished at {meta['finished_at']}: nothing to "
                              f"resume{where}")  # fmt: skip
    hold_search(exp_dir)  # before anything is changed: refused while the search's driver runs
    with _interrupt_in_preflight(exp_dir, resumable=True):  # nothing changed: the same resume continues it
        if address is not None:  # (an empty one was taken for none: `run` refuses it, the review)
            from .settings import address_form_problem

            why = address_form_problem(address)
            if why:
                raise preflight.PreflightError(f"--address {address!r}: {why}")
            settings.address = address
        address_flag = "--address" if address else f"address in {meta_path}"  # where the address came from
        if tracking_uri:  # the store moved (a folder moved or renamed, a copy on another machine)
            if not settings.mlflow:
                raise SearchError(f"--tracking-uri {tracking_uri}: search {settings.name} runs without MLflow "
                                  "(--no-mlflow): it has no store to point at")  # fmt: skip
            settings.tracking_uri = tracking_uri
        if data_spec:  # the data file moved: safe only where it can be checked against what the search trained on
            if "data_fingerprint" not in meta:
                raise SearchError(f"--data {data_spec}: the record of search {settings.name} holds no fingerprint of "
                                  "its data (searches started before 2026-12-04) to check this file against; put "
                                  f"the search's file back at {settings.data}")  # fmt: skip
            settings.data = absolute_data_spec(data_spec)
        from ray import tune

        # a folder whose driver died before Ray saved the search: said before Ray starts (the check reads a file)
        if not (tune.Tuner.can_restore(str(exp_dir)) and storage.has_experiment_state(exp_dir)):
            raise SearchError(f"{exp_dir}: Ray Tune has no restorable experiment state here (the search stopped "
                              f"before Ray saved it): nothing of it can be continued; {_start_again(exp_dir)}")
        cut = storage.cut_off_experiment_state(exp_dir)
        if cut is not None:
            raise SearchError(f"{cut}: Ray Tune's record of the search is cut off (written when the disk was full?), "
                              "so Ray cannot restore it: nothing of it can be continued; its trials' results are kept "
                              f"(`--warm-start {shlex.quote(exp_dir)}` gives them to a new search of the same space, "
                              f"data and metric); {_start_again(exp_dir)}")  # fmt: skip
        problem = ray_in_process_problem(settings.address, address_flag)
        if problem:
            raise SearchError(problem)
        if cluster_address(settings.address) is not None:  # named as given: the flag, or the search's record
            preflight.check_address(settings.address, flag=address_flag)
        else:
            preflight.check_ray_temp_dir()
            preflight.check_ray_token_home()
        space = load_space_dict(meta["space"], source=str(meta_path))  # still valid against this trainer version
        try:
            data = load_search_data(settings, space)
        except DataError:
            recorded = Path(settings.data)
            if data_spec or storage.is_uri(settings.data) or recorded.exists() or not recorded.is_absolute():
                raise
            raise SearchError(f"{settings.data}: file not found: the data this search started on; if it moved, give "
                              "resume --data <where it is now> (checked against the data the search started "
                              "on)") from None  # fmt: skip
        _check_same_data(meta, data, settings.data, given=bool(data_spec))
        in_process = False
        if settings.mlflow:
            # the search logged there: a missing file is the wrong store (MLflow would make an empty one and fail
            # on the parent run after Ray started). Records before 2026-12-03 keep MLflow's default as None: the
            # mlflow.db of the folder the search was started in. Said before the store's other checks (which
            # would name a read-only folder, not the folder to resume in).
            uri = default_tracking_uri(settings.tracking_uri)
            db = sqlite_path(uri)
            if db is not None and not db.exists():
                if tracking_uri:
                    raise SearchError(f"--tracking-uri {tracking_uri}: no such file ({db.absolute()}); expected the "
                                      "MLflow store the search logged to, where it is now")  # fmt: skip
                where = (f"is not in this folder ({Path.cwd()}): run resume in the folder the search was started in"
                         if not db.is_absolute() else "does not exist (moved or deleted?): the search logged there; "
                         "if it moved, give resume --tracking-uri sqlite:///<where it is now>")  # fmt: skip
                raise SearchError(f"{meta_path}: the search's MLflow store {uri} {where}")
            preflight.check_tracking(settings.tracking_uri, advice=" (--tracking-uri with where it is now, if it "
                                     "moved); the search's trials are kept and wait for it")  # fmt: skip
            in_process = preflight.writer_in_process()
        # where the data, the store or the cluster is now, checked above: kept in the record, for the resume command
        # printed later names the folder only (pasted after `resume --data <moved>`, it looked for the old file)
        # (a --tracking-uri once the store is found to hold the search, below: a store refused was kept: the review)
        from . import USER_RAY_AUTH_MODE

        if USER_RAY_AUTH_MODE and meta.get("ray_auth_mode") != USER_RAY_AUTH_MODE:  # (as a run records it)
            meta["ray_auth_mode"] = USER_RAY_AUTH_MODE
            storage.write_text(meta_path, json.dumps(meta, indent=2))
        _keep_in_record(meta_path, meta, {"data": settings.data if data_spec else None, "address": address or None})
    parent_id, experiment_id = meta["parent_run_id"], meta["experiment_id"]
    # as in `run_search`: MLflow's store opens, and the writer starts, while Ray starts
    interrupts = _SetupInterrupts().defer()
    writer = client = None
    running = False
    try:
        opening = _opening(settings.tracking_uri, settings.experiment) if settings.mlflow else None
        writer = Writer(settings.tracking_uri, settings.metric, settings.mode, in_process) \
            if settings.mlflow else None  # fmt: skip
        _init_ray(settings.address, preload=settings.cpus_per_trial <= 1, flag=address_flag)
        _sigterm_as_ctrl_c()
        interrupts.check()
        _echo_cluster(echo, storage.check_visible_from_all_nodes(exp_dir),
                      _sharing(settings, cluster_address(settings.address) is None),
                      resolved_tracking_uri(settings.tracking_uri) if settings.mlflow else None)  # fmt: skip
        tuner = tune.Tuner.restore(str(exp_dir), trainable=_trainable(data, settings), resume_unfinished=True,
                                   resume_errored=False)  # fmt: skip
        echo(f"resuming search {settings.name} from {exp_dir}")
        changed = _space_file_changed(settings, meta["space"])
        if changed:
            echo(changed)
        if meta.get("warm_start"):
            w = meta["warm_start"]
            echo(f"warm start: the {w['added']} trials from {w['source']} come back with the Optuna study "
                 "(not added again)")  # fmt: skip
        if writer is not None:
            callbacks, _, restored_scheduler = tuner_parts(tuner)
            tracker = next((c for c in callbacks if isinstance(c, MlflowTracker)), None)
            if tracker is not None:  # the restored tracker (Ray pickled it without its writer)
                tracker.attach(writer)
                if tracker.scheduler is None and isinstance(restored_scheduler, PersistentASHA):  # pickled before
                    tracker.scheduler = restored_scheduler  # it had one: its trials stopped from now on say why
            else:
                writer.stop()
            try:
                client = opening.result()
                interrupts.check()
                _check_parent_run(client, parent_id, settings.tracking_uri, tracking_uri, str(exp_dir))
                client.update_run(parent_id, status="RUNNING")
                tags = client.get_run(parent_id).data.tags
                if TAG_NO_SCORE in tags:  # it runs again: its end decides anew
                    client.delete_tag(parent_id, TAG_NO_SCORE)
                if tags.get("hsc.experiment_dir") not in (None, str(exp_dir)):  # the folder moved: the commands
                    client.set_tag(parent_id, "hsc.experiment_dir", str(exp_dir))  # read from MLflow name it
                if USER_RAY_AUTH_MODE and tags.get(TAG_RAY_AUTH) != USER_RAY_AUTH_MODE:  # (as the record keeps it)
                    client.set_tag(parent_id, TAG_RAY_AUTH, USER_RAY_AUTH_MODE)
                if tracking_uri:
                    _keep_in_record(meta_path, meta, {"tracking_uri": resolved_tracking_uri(tracking_uri)})
            except Exception as e:
                if not _store_failure(e):
                    raise
                raise TrackingUnavailable(
                    f"MLflow's store {without_password(resolved_tracking_uri(settings.tracking_uri))} failed as the "
                    f"search resumed ({http_failure(e)}); nothing more was trained. Once it answers and can be "
                    f"written, `{resume_command(exp_dir)}` continues the search") from None  # fmt: skip
            running = True
        interrupts.release()  # Ray Tune takes SIGINT over in fit()
    except BaseException as e:
        interrupts.release(pending_too=False)
        if writer is not None:
            writer.stop()
        if isinstance(e, KeyboardInterrupt):
            if running:  # as after any interrupted search; the parent's earlier status is left as it was
                client.set_terminated(parent_id, status="KILLED")
            raise SetupInterrupted(exp_dir, resumable=True) from None
        raise
    return _fit_and_finish(tuner, client, settings, exp_dir, experiment_id, parent_id, echo, resumed=True)


HEAD_SILENT_S = 6.0  # a head not taking connections this long is said (Ray waits 60 s, then ends the driver)


@contextlib.contextmanager
def watching_the_head(gcs_address: str | None, exp_dir: str, echo: Callable[[str], None], interval_s: float = 2.0,
                      silent_s: float = HEAD_SILENT_S):  # fmt: skip
    """While a search runs on a cluster: a head that stops taking connections (killed, its machine down) is said
    `silent_s` after a probe first failed (8-12 s after it went), with the `resume` command. Ray itself said
    nothing for 60 s and then ended the driver with its own "Failed to connect to GCS" and no way on (a
    walkthrough). A head that answers again is said too."""
    if not gcs_address:
        yield
        return
    host, _, port = gcs_address.rpartition(":")
    host = host.strip("[]")  # Ray writes an IPv6 head as [::1]:6379 (a false alarm in every search: the review)
    stop = threading.Event()

    def watch() -> None:
        lost, said = None, False
        while not stop.wait(interval_s):
            problem = preflight.tcp_problem(host, int(port), min(interval_s, 2.0))
            if problem is None:
                if said and not stop.is_set():
                    echo(f"the Ray head at {gcs_address} answers again")
                lost, said = None, False
            elif lost is None:
                lost = time.monotonic()
            elif not said and time.monotonic() - lost >= silent_s and not stop.is_set():
                echo(f"the Ray head at {gcs_address} does not answer ({problem}): the search cannot go on without "
                     "it (Ray ends this driver after a minute); once the head runs again, "
                     f"`{resume_command(exp_dir)}` continues it")  # fmt: skip
                said = True

    thread = threading.Thread(target=watch, name="hsc-head-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def _head_address(settings: SearchSettings) -> str | None:
    """The GCS address of the cluster a search joined (None on a local instance of its own, and with Ray's TLS on,
    whose server would log a failed handshake for every probe of a plain connection)."""
    if cluster_address(settings.address) is None or os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true"):
        return None
    try:
        import ray

        return ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - not watched, as before
        return None


class StoppedByDisk(Exception):
    """The search stopped itself, its state saved, when a disk refused a trial's write (full, read-only, over
    quota): one line naming the trial, the disk's words and the command that continues it once there is room."""


def _fit_and_finish(tuner, client, settings, exp_dir, experiment_id, parent_id, echo,
                    resumed: bool = False) -> SearchOutcome:  # fmt: skip
    """Runs the search and its tail (`_fit_and_tail`); a search that stopped itself at a disk that refused a
    trial's write raises `StoppedByDisk` once its tail is done, or instead of what its tail raised (on that disk
    the tail's own writes fail too, and `resume` writes them again)."""
    refused: list[str] = []  # the first trial's write a disk refused: the search stopped itself there
    try:
        outcome = _fit_and_tail(tuner, client, settings, exp_dir, experiment_id, parent_id, echo, resumed, refused)
    except Exception as e:
        if refused:
            raise StoppedByDisk(_stopped_by_disk(refused[0], exp_dir)) from e
        raise
    if refused and outcome.interrupted:
        raise StoppedByDisk(_stopped_by_disk(refused[0], exp_dir))
    return outcome


def _stopped_by_disk(refused: str, exp_dir: str) -> str:
    return (f"{refused} (a disk that is full or read-only: the search's folder {exp_dir} or the temporary folder "
            f"its trials write in); the search stopped, so that no trial failed for it, and once there is room "
            f"`{resume_command(exp_dir)}` continues it from its last saved state (a trial that ended or started "
            "after that save runs again)")


def _fit_and_tail(tuner, client, settings, exp_dir, experiment_id, parent_id, echo, resumed: bool,
                  refused: list[str]) -> SearchOutcome:  # fmt: skip
    from ray.tune import ExperimentAnalysis

    from .ray_internals import stopping_at_a_full_disk, tolerate_deleted_checkpoints, tune_stop, whole_state_files

    tolerate_deleted_checkpoints()  # a resumed search's snapshot can list checkpoints its killed driver deleted
    _DISK_STOP[0] = False
    refused_saves: list[OSError] = []  # saves of Ray's state a disk refused (whole_state_files' copying thread)

    def on_full(trial, error: OSError) -> bool:
        """A disk refused a trial's write (`trial`), or a save of the search's state (None): the search stops."""
        if refused:  # stopping already (trials running then can fail the same way)
            return True
        stop = tune_stop()
        if stop is None:  # (off the main thread Tune has no handler to stop with: failed as before)
            return False
        what = f"trial {trial.trial_id}'s write" if trial is not None else "a save of the search's state"
        refused.append(f"{what} was refused: {_disk_words(error)}")
        echo(f"stopping: {refused[0]}; the search stops here and keeps its last saved state, so that no trial "
             "fails for a disk (not its config's fault)")  # fmt: skip
        _DISK_STOP[0] = True  # (Tune's "stop signal" notice is not said as a Ctrl-C's)
        stop()
        return True

    callbacks, _, scheduler = tuner_parts(tuner)  # the restored ones after resume
    tracker = next((c for c in callbacks if isinstance(c, MlflowTracker)), None)
    interrupted, trials, status, errors = False, [], "FINISHED", []
    restore_failed = False  # Ray could not read a resumed search's state: nothing ran, nothing of it is written
    # Tune installs its SIGINT handler in fit() and leaves it there unless a Ctrl-C came: a Ctrl-C in the tail
    # would only print "ending Ray Tune run" and do nothing. Given back after fit, so it ends the tail.
    sigint = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:
        # (keep_starting_actors: a trial whose actor is starting is not moved onto a freed one; a resumed search's
        # new trials are made in the folder it is in now, not where it started: ray_internals)
        # (a full disk: the search stops at the first trial it fails, and Ray's state files are replaced whole, so
        # the search is resumed once there is room: ray_internals)
        with keep_starting_actors(), restored_searcher_in_the_folder_now(), whole_state_files(refused_saves.append), \
                stopping_at_a_full_disk(on_full, refused_saves), \
                watching_the_head(_head_address(settings), exp_dir, echo):  # fmt: skip
            tuner.fit()
        if refused_saves and not refused and tune_stop() is not None:  # Ray's last save, as the search ended, was
            # refused: what is read below is older (off the main thread nothing stopped: trials failed as before)
            refused.append(f"a save of the search's state was refused: {_disk_words(refused_saves[0])}")
        # the saved experiment state is the truth (what `resume` would continue from); after Ctrl-C the in-memory
        # trials of the returned ResultGrid can read TERMINATED while Ray saved them as PENDING
        trials = list(ExperimentAnalysis(str(exp_dir)).trials)
        interrupted = sum(t.status in ("TERMINATED", "ERROR") for t in trials) < settings.num_samples
    except KeyboardInterrupt:
        interrupted = True
    except RestoreFailed as e:  # nothing of the search ran: its record stays as it was (its rungs, its tail), for
        interrupted = restore_failed = True  # a resume that can read it
        raise SearchRestoreFailed(
            f"{exp_dir}: Ray could not read the search's saved state ({e}), so nothing of it ran and its trials, their "
            f"MLflow runs and its record are as they were: if its storage failed, resume again once it answers; a "
            f"search saved by another version of hsc-search or Ray resumes with that version, or "
            f"`{exe('hsc-search')} run --warm-start {shlex.quote(str(exp_dir))}` with the flags it started with "
            "starts a new search from its trials") from None  # fmt: skip
    except BaseException:
        status = "FAILED"
        raise
    finally:
        STOPPED[0] = interrupted  # (a Ctrl-C in the tail of a stopped search is said as one: the cli)
        if sigint is not None:
            signal.signal(signal.SIGINT, sigint)
        rung_state = (scheduler.rung_record(settings.metric, settings.mode) if isinstance(scheduler, PersistentASHA)
                      and not restore_failed else None)  # (not restored: empty, and written over the record's)
        rung_failed = None
        if rung_state is not None:  # the rung history, for the record (and the resume test)
            try:
                storage.write_text(storage.join(exp_dir, ASHA_RUNGS), json.dumps(rung_state, indent=1))
            except OSError as e:  # a full disk: raised once the search's run has ended below (raised here, it
                rung_failed = e  # skipped that, and the run stayed RUNNING in MLflow for good: a walkthrough)
        if client is None and restore_failed:
            pass  # nothing of the record is written: no best config from Ray's results (a review)
        elif client is None:
            if not trials:  # a second Ctrl-C left fit() before the trials were read: what Ray saved of them
                try:
                    trials = list(ExperimentAnalysis(str(exp_dir)).trials)
                except Exception:  # noqa: BLE001 - nothing saved yet: the summary says no trial reported
                    pass
            progress = next((c for c in callbacks if isinstance(c, Progress)), None)
            rows = ray_rows(trials, settings, progress.scores() if progress is not None else None,
                            progress.searched if progress is not None else None,
                            progress.effective() if progress is not None else None)  # fmt: skip
            best = best_row(rows, settings.mode)
            best_path = None
            if best is not None:
                try:
                    best_path = _best_config_from_ray(exp_dir, trials, best, settings)
                except Exception as e:  # the search is done; only this file is missing
                    echo(f"warning: best config not written: {e}")
            outcome = SearchOutcome(exp_dir, None, rows, best, best_path, interrupted, [])
        else:
            if resumed and trials and not interrupted:  # what its killed driver never got into MLflow (Ray's results)
                try:
                    caught = tracker.catch_up(client, trials, exp_dir)
                except Exception as e:  # noqa: BLE001 - the store is away: reconcile and the summary say so below
                    echo(f"warning: could not compare MLflow's records with Ray's: {http_failure(e)}")
                    caught = []
                if caught:
                    echo(f"MLflow lacked what {_n(len(caught), 'trial')} ended before this resume reported "
                         f"({', '.join(caught[:4])}{', ...' if len(caught) > 4 else ''}): logged from Ray's saved "
                         "results")  # fmt: skip
            # a server is slow or does not answer; a local store (sqlite on a full or locked disk) does not take
            # them: it was called a server that does not answer (a walkthrough)
            uri = resolved_tracking_uri(settings.tracking_uri)
            stuck = (f"its server at {without_password(uri)} is slow or not answering" if
                     uri.startswith(("http://", "https://")) else
                     f"its store {without_password(uri)} is not taking them: the lines above say why")  # fmt: skip

            def waiting() -> None:  # a tracking server that stalls: said, and how to go on (it was silent)
                echo(f"waiting for MLflow to take the search's last records ({stuck}); Ctrl-C stops waiting, and "
                     f"`{resume_command(exp_dir)}` then logs what MLflow lacks")  # fmt: skip

            errors = tracker.close(interrupted=interrupted, on_slow=waiting)
            ended = "KILLED" if interrupted and status == "FINISHED" else status
            try:
                if not interrupted and status == "FINISHED" and not getattr(tracker, "flushed", True):
                    # the summary read MLflow without the trials it had not taken: "no trial produced a score",
                    # exit 1, and the search marked finished, which `resume` could then not repair (a walkthrough)
                    ended = "KILLED"
                    raise TrackingIncomplete(
                        f"MLflow did not take the search's last records in time ({stuck}); every trial's results "
                        f"are kept in {exp_dir}: `{resume_command(exp_dir)}` logs what MLflow lacks once it "
                        "answers, then writes the best config and the report")  # fmt: skip
                if not interrupted and status == "FINISHED" and errors and trials:
                    # MLflow refused records for good (a store whose disk filled: every trial's epochs): marked
                    # finished, the search summed up "no trial produced a score" and `resume` refused to log what
                    # MLflow lacked (a walkthrough). When what it lacks is what `resume` gives it (a trial's run,
                    # its end, its last epochs: `catch_up`), the search ends as an interrupted one, for `resume`;
                    # other losses (a plot, an epoch in the middle) stay warnings of a finished search (the review)
                    try:
                        lacking = [t.trial_id for t in tracker.lacking(client, trials)]
                    except Exception:  # noqa: BLE001 - the store cannot even be read: resume once it can
                        lacking = ["?"]
                    if lacking:
                        ended = "KILLED"
                        # (a disk's refusal is not retried: "failed: ", not "failed after retries: "; the message
                        # named the writer's call where the store's own words belong, a CI run)
                        reason = re.split(r" failed(?: after retries)?: ", errors[0], maxsplit=1)[-1]
                        raise TrackingIncomplete(
                            f"MLflow refused {_n(len(errors), 'record')} of the search (the first: {reason}); every "
                            f"trial's results are kept in {exp_dir}: `{resume_command(exp_dir)}` logs what MLflow "
                            "lacks once its store takes them again, then writes the best config and the "
                            "report")  # fmt: skip
                if restore_failed:  # its parent run ends as an interrupted search's; its tail (rungs, summary,
                    ended = "KILLED"  # best config, report) stays the last one's
                else:
                    try:
                        with tail_guard(settings.tracking_uri, exp_dir, echo):
                            if trials:
                                reconcile(client, experiment_id, parent_id, trials, settings.max_epochs)
                            if rung_state is not None:
                                client.log_text(parent_id, json.dumps(rung_state, indent=1), ASHA_RUNGS)
                            outcome = _finish_parent(client, settings, exp_dir, parent_id, experiment_id, interrupted,
                                                     errors, echo)  # fmt: skip
                            if outcome.best is None and ended == "FINISHED":  # every trial ran and none scored: over,
                                # and FAILED in MLflow (its green tick read as a success), tag hsc.no_score saying so;
                                # not a search whose fit raised (FAILED already, and `resume` continues it: the review)
                                said = (", ".join(f"{n} {o}" for o, n in outcome_counts(outcome.rows).items())
                                        or "no trial ran")  # fmt: skip
                                client.set_tag(parent_id, TAG_NO_SCORE, f"no trial produced a score ({said})")
                                ended = "FAILED"
                    except TrackingIncomplete:  # for `resume`, which writes the tail again
                        ended = "KILLED"
                        raise
            except KeyboardInterrupt:  # in the tail: the parent is not done (no best config, report, best tag)
                ended = "KILLED"
                raise
            except BaseException:
                ended = "FAILED" if ended == "FINISHED" else ended
                raise
            finally:
                if ended == "KILLED":  # stopped by the user: a server that does not answer must not hold them
                    failed = _bounded(lambda: client.set_terminated(parent_id, status=ended), 15.0)
                    if failed is not None:  # (a store on a full disk: its thread printed an 80-line traceback)
                        echo(f"warning: the search's MLflow run could not be ended: {http_failure(failed)}")
                elif ended == "FINISHED":  # (the store gone here: one line naming resume, the review)
                    with tail_guard(settings.tracking_uri, exp_dir, echo):
                        client.set_terminated(parent_id, status=ended)
                else:  # an error is on its way out: the parent's end failing too (a full disk) must not hide it
                    try:
                        with tail_guard(settings.tracking_uri, exp_dir, echo):  # (its retries bounded)
                            client.set_terminated(parent_id, status=ended)
                    except Exception as e:  # noqa: BLE001
                        cause = e.__context__ if isinstance(e, TrackingIncomplete) and e.__context__ else e
                        echo(f"warning: the search's MLflow run could not be ended: {http_failure(cause)}")
        if rung_failed is not None:  # (the tail's own error, where it had one, was raised instead)
            raise rung_failed
    if not interrupted:  # every trial ended and the tail is done: `resume` has nothing left to do
        _mark_finished(exp_dir)
    outcome.num_samples = settings.num_samples
    return outcome


def _disk_words(error: OSError) -> str:
    """A disk's refusal in the system's words and where, as far as the error says: "No space left on device:
    /path" (pyarrow's copies say "Error writing bytes to file" and no path)."""
    import errno as errnos

    what = os.strerror(error.errno) if error.errno in errnos.errorcode else str(error)
    where = getattr(error, "filename2", None) or getattr(error, "filename", None)  # (a copy's: where it went)
    return f"{what}: {where}" if where else what


# MLflow's HTTP retries in a search's tail (reconcile, rungs, summary, best config, report), all of which `resume`
# writes again: its defaults (7 retries, a doubling backoff: about 4 minutes a request) held a user 7.5 minutes
# in silence when the server stopped as the search ended (a walkthrough). A value the user set wins.
# (its request timeout stays: a server slow to answer a large query is not a server gone, the review)
TAIL_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
TAIL_SLOW_S = 30.0  # a tail slower than this on a tracking server is said, with how to go on


@contextlib.contextmanager
def bounded_retries():
    """MLflow's HTTP retries bounded as in a search's tail (`TAIL_HTTP`) while in this block, unless the user set
    them: for the calls that can simply be made again (a search's start: nothing was trained yet)."""
    given = {k: v for k, v in TAIL_HTTP.items() if k not in os.environ}
    os.environ.update(given)
    try:
        yield
    finally:
        for k in given:
            os.environ.pop(k, None)


@contextlib.contextmanager
def tail_guard(tracking_uri: str | None, exp_dir: str, echo: Callable[[str], None], slow_s: float = TAIL_SLOW_S):
    """Around a search's tail: MLflow's retries bounded (`TAIL_HTTP`), a tail slower than `slow_s` said, and the
    store failing in it (a server that stopped answering, a database that refuses writes) raised as
    `TrackingIncomplete`, one line naming `resume`, which writes the tail once the store answers. (A report of many
    trials takes a while: only a tracking server's tail is said as slow.)"""
    where = resolved_tracking_uri(tracking_uri)  # ($MLFLOW_TRACKING_URI when not given)
    served = where.startswith(("http://", "https://"))  # (a local store's tail is only slow)
    where = without_password(where)
    slow = threading.Timer(slow_s, lambda: echo(
        f"waiting for MLflow to take the search's summary ({slow_s:g} s so far: its server at {where} may be slow or "
        f"not answering); Ctrl-C stops waiting, and `{resume_command(exp_dir)}` then writes it"))
    slow.daemon = True
    if served:
        slow.start()
    try:
        with bounded_retries():
            yield
    except Exception as e:
        # a full or read-only disk under the search's own files (summary, best config) is said as such by the
        # command (`cli._disk_full`), not blamed on MLflow (the review)
        if not _store_failure(e) or isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            raise
        raise TrackingIncomplete(
            f"MLflow failed as the search ended ({http_failure(e)}); every trial's results are kept in {exp_dir}: "
            f"`{resume_command(exp_dir)}` logs what MLflow lacks once it answers, then writes the best config and the "
            "report") from None
    finally:
        slow.cancel()


def _keep_in_record(meta_path: str, meta: dict, moved: dict) -> None:
    """Where a resume found the search's data, store or cluster now (checked), written into its record: the resume
    command printed later names the folder only (pasted after `resume --data <moved>`, it looked for the old file)."""
    moved = {k: v for k, v in moved.items() if v is not None and meta["settings"].get(k) != v}
    if moved:
        meta["settings"].update(moved)
        storage.write_text(meta_path, json.dumps(meta, indent=2))


def _bounded(call: Callable[[], Any], timeout_s: float) -> BaseException | None:
    """Runs `call` in a daemon thread for at most `timeout_s` (an MLflow call to a server that does not answer
    retries for minutes; the process may end without it). Returns what it raised in that time, None otherwise (it
    was the thread's traceback on stderr)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - returned to the caller, which says it in a line
            raised.append(e)

    t = threading.Thread(target=run, daemon=True, name="hsc-bounded-call")
    t.start()
    t.join(timeout_s)
    return raised[0] if raised else None


def _start_again(exp_dir: str) -> str:
    """How to start a search again under its name when its folder holds nothing to resume."""
    gone = f"`rm -r {shlex.quote(exp_dir)}`" if not storage.is_uri(exp_dir) else f"delete {exp_dir}"
    return f"to start it again under its name, remove the folder ({gone}) and run the search again"


def _finished_at(exp_dir: str) -> str | None:
    """When the search in `exp_dir` finished, from its record; None if it did not (or has no readable record)."""
    try:
        return json.loads(storage.read_text(storage.join(exp_dir, META_FILE))).get("finished_at")
    except Exception:
        return None


def _mark_finished(exp_dir: str) -> None:
    """Adds the time the search finished to its record (`resume` reads it)."""
    path = storage.join(exp_dir, META_FILE)
    meta = json.loads(storage.read_text(path))
    meta["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    storage.write_text(path, json.dumps(meta, indent=2))


def _recorded_fingerprint(exp_dir: str) -> dict | None:
    """The fingerprint of the search's data, from its record (None where it holds none or cannot be read: the best
    config is written all the same, without that header line)."""
    try:
        saved = json.loads(storage.read_text(storage.join(exp_dir, META_FILE))).get("data_fingerprint")
    except Exception:  # noqa: BLE001 - a header line, never a reason to lose the best config
        return None
    return saved if isinstance(saved, dict) else None


def _best_config_from_ray(exp_dir: str, trials: list, best: TrialRow, settings: SearchSettings) -> Path:
    """A search without MLflow: the best trial's trainer config from what Ray holds (its sampled values) and the
    search's record (the space's fixed values), written where a tracked search writes it. The trainer resolves
    it as the trial did: the same data gives the same derived values."""
    from .space import validate_sampled

    meta = json.loads(storage.read_text(storage.join(exp_dir, META_FILE)))
    space = load_space_dict(meta["space"], source=storage.join(exp_dir, META_FILE))
    trial = next(t for t in trials if t.trial_id == best.trial_id)
    cfg = validate_sampled(space, dict(trial.config), settings.max_epochs)
    path = write_config(cfg, outputs_dir(exp_dir) / BEST_CONFIG, data=settings.data,
                        source=provenance(best, settings.name, None, settings.metric) + " (no MLflow)",
                        fingerprint=meta.get("data_fingerprint"))  # fmt: skip
    if storage.is_uri(exp_dir):
        storage.write_text(storage.join(exp_dir, BEST_CONFIG), path.read_text())
    return path


def ray_rows(trials: list, settings: SearchSettings, scores: dict[str, float] | None = None,
             searched: list[str] | None = None, effective: dict[str, dict] | None = None) -> list[TrialRow]:  # fmt: skip
    """Trial rows from Ray's own records (searches run without MLflow). A trial's score is its best epoch:
    `scores` (trial id -> best value over every epoch, as `Progress` kept them); Ray's own analysis of a metric
    sees only the epochs a trial reported at (rungs, checkpoints, its last), so it is the fallback. Params: the
    `searched` names (as a tracked trial's run logs them), else the trial's whole config; then what the trainer
    resolved from the data (`effective`: trial id -> values, as `Progress` kept them), as `effective.*` params."""
    from .runs import EFFECTIVE_PARAM

    rows = []
    for t in trials:
        last = t.last_result or {}
        epochs = int(last.get("epoch", 0))
        if scores is not None and t.trial_id in scores:
            score = scores[t.trial_id]
        else:
            values = t.metric_analysis.get(settings.metric, {})
            score = values.get(settings.mode) if values else None
        score = score if score is not None and math.isfinite(score) else None
        rows.append(TrialRow(run_id="", trial_id=t.trial_id, name=str(t),
                             outcome=trial_outcome(t.status, last, settings.max_epochs), status=t.status,
                             epochs=epochs, seconds=last.get("time_total_s"), score=score,
                             params={**{k: str(v) for k, v in t.config.items() if searched is None or k in searched},
                                     **{EFFECTIVE_PARAM + k: str(v)
                                        for k, v in (effective or {}).get(t.trial_id, {}).items()}},
                             final={k: v for k, v in last.items() if isinstance(v, (int, float))}))  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------- helpers
def _n(count: int, noun: str) -> str:
    from .runs import plural

    return plural(count, noun)


def _first_trial(space: SearchSpace, settings: SearchSettings, data: AVData) -> tuple[dict[str, Any], list[str]]:
    """The first trial's params (the trainer default as it trains on this data) and notes on params that cannot
    take it; empty, with a note, when no such trial is a valid trainer config for this data (the sampled trials
    may still be). Fails fast if the metric is not one the trainer reports."""
    from .space import validate_sampled

    from trainer.config import AUTO_FIELDS, ConfigError

    dims = (len(data.train), data.audio_dim, data.visual_dim)
    fixed_error = None
    try:  # the fixed values beside the trainer defaults of the rest
        resolved = TrainConfig(**{**space.fixed, "epochs": settings.max_epochs}).resolve(*dims)
        given = resolved.to_dict()
    except ConfigError as e:  # a fixed value that only a searched field's default clashes with (cca_dim 300 fixed beside
        # the default batch 256, batch_size searched over [512, 1024]): the space was refused for a value no trial
        # trains (a walkthrough); the defaults as they are, unresolved
        resolved, given = None, {**TrainConfig().to_dict(), **space.fixed, "epochs": settings.max_epochs}
        fixed_error = e
    first, notes = space.defaults(given)
    try:
        cfg = validate_sampled(space, first, settings.max_epochs).resolve(*dims)
        try:  # the notes' "(trains as N)" of an auto field: as it resolves beside this trial's other values (cca_k's
            # default said "trains as 16", auto cca_dim of the trainer defaults, beside the trial's cca_dim 8)
            if resolved is None:
                raise ConfigError("no resolved trainer defaults to word the notes by")  # (the notes as they are)
            beside = resolved.to_dict()  # (the trainer defaults as resolved; the auto fields beside this trial's)
            for f in AUTO_FIELDS:
                others = {k: v for k, v in first.items() if k != f}
                beside[f] = getattr(TrainConfig(**{**space.fixed, **others, "epochs": settings.max_epochs})
                                    .resolve(*dims), f)  # fmt: skip
            mine = space.defaults(beside)
            notes = mine[1] if mine[0] == first else notes
        except ConfigError:
            pass
    except ConfigError:
        # auto fields (cca_dim 0) were resolved for the trainer defaults (batch_size 256): resolved again with the
        # first trial's own values (batch_size 16 of choices [12, 16] and cca_dim of [8, 16] took 16: invalid)
        try:
            own = {k: v for k, v in first.items() if k not in AUTO_FIELDS}
            again = TrainConfig(**{**space.fixed, **own, "epochs": settings.max_epochs}).resolve(*dims)
            first, notes = space.defaults(again.to_dict())
            cfg = validate_sampled(space, first, settings.max_epochs).resolve(*dims)
        except ConfigError as e2:  # the space's sampled trials may still be valid: the search samples them all
            why = "; ".join(e2.problems) if getattr(e2, "problems", None) else str(e2)
            values = ", ".join(f"{k}={v!r}" for k, v in first.items())
            # every trial is sampled: refused here if none the space gives trains on this data (each was noted,
            # then every trial failed after Ray had started: a walkthrough)
            try:
                cfg = preflight.a_valid_draw(space, settings.max_epochs, dims, settings.seed)
            except preflight.PreflightError:
                if fixed_error is not None:  # the fixed values (a --set, the space's fixed:) clash whatever is
                    raise fixed_error from None  # drawn: said of them, as before (it blamed the space: a review)
                raise
            first, notes = {}, [f"the trainer default, as near as this space allows ({values}), is not a valid "
                                f"trial ({why}): not enqueued; every trial is sampled"]  # fmt: skip
    preflight.check_metric(settings.metric, cfg, settings.given_by.get("metric", "--metric"))
    preflight.check_metric_in_space(settings.metric, space, settings.max_epochs, dims, first, settings.seed)
    return first, notes


def _start_parent(client, experiment_id: str, settings: SearchSettings, space: SearchSpace, plan: "_Plan",
                  headline: str, said: list[str]) -> str:  # fmt: skip
    """Creates the search's parent run with its description, inputs and warm-start record. Returns its id."""
    from mlflow.entities import RunTag

    from . import USER_RAY_AUTH_MODE

    warm = plan.warm
    # what the start said, kept with the search: the run page's Description, and the report (hsc.notes)
    # tag values: 8000 characters in MLflow 3, 5000 in servers before it (as the writer's error tag)
    description = (headline + "".join(f"\n- {line}" for line in said))[:4900]
    kept = list(said)
    while len(json.dumps(kept)) > 4900:
        kept.pop()
    parent = client.create_run(experiment_id, run_name=settings.name,
                               tags={TAG_KIND: "search", "hsc.experiment_dir": str(plan.exp_dir), **user_tag(),
                                     **({TAG_RAY_AUTH: USER_RAY_AUTH_MODE} if USER_RAY_AUTH_MODE else {}),
                                     **({TAG_NOTES: json.dumps(kept)} if kept else {}),  # ([] in the UI)
                                     "mlflow.note.content": description,
                                     TAG_DATA_FINGERPRINT: json.dumps(plan.fingerprint)})  # fmt: skip
    parent_id = parent.info.run_id
    try:
        _log_search_inputs(client, parent_id, settings, space)
        if warm is not None:
            client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in _warm_tags(warm).items()])
    except BaseException as e:
        _end_parent(client, parent_id, e)
        raise
    return parent_id


def _end_parent(client, parent_id: str, e: BaseException) -> None:
    """A search that failed to start: its parent run ends KILLED (Ctrl-C) or FAILED, where the store still takes it."""
    try:
        client.set_terminated(parent_id, status="KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
    except Exception:  # noqa: BLE001 - a store that failed: the start's own error says so
        pass


_DATE_WORDS = frozenset(  # months and weekdays, in full and as their usual abbreviations
    [w for full in ("january february march april may june july august september october november december monday "
                    "tuesday wednesday thursday friday saturday sunday").split() for w in (full, full[:3])]
    + ["sept", "tues", "thur", "thurs"])


def near_typo(a: str, b: str) -> bool:
    """Whether name `a` reads as a typo of `b`: the same but for case, one letter added, dropped or changed, or two
    neighbours swapped; names that differ only in digits (runs numbered or dated) are not."""
    import re

    x, y = a.casefold(), b.casefold()
    if a == b or re.sub(r"\d", "", x) == re.sub(r"\d", "", y):
        return a != b and x == y
    if x == y:
        return True
    if min(len(x), len(y)) < 5:  # `lr` and `l2`, `run-a` and `run-b`: names, not typos (the second review)
        return False
    px, py = re.split(r"[-_./ ]", x), re.split(r"[-_./ ]", y)
    if len(px) == len(py):  # one short part changed (run-a / run-b, 2026-12-05 / 2026-12-05b): a series, not a typo
        changed = [(p, q) for p, q in zip(px, py) if p != q]
        if len(changed) == 1 and min(len(changed[0][0]), len(changed[0][1])) <= 2 or \
                any(re.search(r"\d", p + q) for p, q in changed) or \
                changed and all(p in _DATE_WORDS and q in _DATE_WORDS for p, q in changed):  # fmt: skip
            return False  # (sweep-jan / sweep-jun, ave-mon / ave-sun: dated, not a typo)
    if abs(len(x) - len(y)) > 1:
        return False
    if len(x) == len(y):
        diff = [i for i in range(len(x)) if x[i] != y[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and x[diff[0]] == y[diff[1]]
                                  and x[diff[1]] == y[diff[0]])  # fmt: skip
    short, long = (x, y) if len(x) < len(y) else (y, x)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def _artifacts_unwritable(location: str | None) -> str | None:
    """A local artifact location (a path, or a file: URI) that cannot be written: its nearest existing folder is
    read-only (a read-only working folder or file system). None for a writable one, or one not on this disk (a
    server's, a bucket's: MLflow checks those itself)."""
    if not location:
        return None
    if location.startswith("file:"):
        from urllib.parse import unquote, urlparse

        location = unquote(urlparse(location).path)
    elif "://" in location or not location.startswith("/"):
        return None
    folder = Path(location)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    # (a file on the way, not a folder: /dev/null/mlart, a team server's root that names a path of its own disk,
    # failed in a 214-line traceback as the search logged its inputs: a walkthrough)
    return None if folder.is_dir() and os.access(folder, os.W_OK) else location


def _experiment_id(client, name: str, metric: str, mode: str, tracking_uri: str | None = None,
                   notes: list[str] | None = None) -> str:  # fmt: skip
    """The experiment's id (created if new), tagged so that MLflow's UI shows it as model training. An experiment
    whose artifacts an MLflow server serves (`mlflow-artifacts:`) cannot take this search's artifacts through a
    database URI: refused before anything is written (it was a 200-line traceback after Ray had started, and a
    FAILED parent run in the team's store; a walkthrough). A new experiment whose name is near one the store has
    (a typo: `--experiment hsc-serach` made a new experiment on the team's server without a word, a walkthrough)
    adds a `note:` to `notes`."""
    exp = client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "deleted":  # MLflow refused its runs: "must be in the 'active'
        raise preflight.PreflightError(  # state", after Ray had started (the review)
            f"--experiment {name}: deleted in MLflow (its runs are in the trash, its name still taken); restore it "
            f"(`{restore_command(tracking_uri, 'experiments', exp.experiment_id)}`), or give another "
            "--experiment")  # fmt: skip
    served = exp and served_artifacts_problem(exp.artifact_location, tracking_uri, "--tracking-uri",
                                              f"experiment '{name}'")  # fmt: skip
    if served:
        raise preflight.PreflightError(f"{served}, or give another --experiment")
    unwritable = _artifacts_unwritable(exp.artifact_location if exp is not None else getattr(
        getattr(getattr(client, "_tracking_client", None), "store", None), "artifact_root_uri", None))  # fmt: skip
    if unwritable:  # MLflow failed on the first artifact after Ray had started, left a FAILED run, and every later
        # search of a new experiment in that store went there too (a walkthrough: a read-only working folder)
        where = (f"experiment '{name}' keeps its artifacts in {unwritable}" if exp is not None else
                 f"a new experiment '{name}' keeps its artifacts in {unwritable} (MLflow's ./mlruns of the folder "
                 "the search starts in, for a sqlite store)")  # fmt: skip
        raise _artifacts_refusal(name, where, _ARTIFACTS_ADVICE if exp is not None else
                                 "run the search from a folder that can be written")  # fmt: skip
    if exp is not None:
        tag_experiment(client, exp.experiment_id, metric, mode)
        _note_local_artifacts(exp.artifact_location, tracking_uri, name, notes)
        return exp.experiment_id
    if notes is not None:
        try:  # a hint only: a store that will not list its experiments is not a failed start (the review)
            names, token = [], None
            for _ in range(20):  # a team server's experiments, 1,000 a page (the first page alone missed older ones)
                page = client.search_experiments(max_results=1000, page_token=token)
                names += [e.name for e in page]
                token = getattr(page, "token", None)
                if not token:
                    break
            near = next((n for n in names if near_typo(name, n)), None)
        except Exception:  # noqa: BLE001
            near = None
        if near:
            notes.append(f"note: experiment '{name}' is new in this store, beside '{near}' (a typo? export-best, "
                         "report and the MLflow UI find this search under the name given)")  # fmt: skip
    try:
        made = client.create_experiment(name, tags=experiment_tags(metric, mode))
    except Exception:  # another search on the same server created it in the meantime (RESOURCE_ALREADY_EXISTS)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        made = exp.experiment_id
    try:
        location = client.get_experiment(made).artifact_location
    except Exception:  # noqa: BLE001 - (a hint and a check only: the search's first upload says what is wrong)
        return made
    # a server's new experiment, whose artifact root it names only now (a `--default-artifact-root` under a file:
    # a 214-line traceback and a FAILED run; a walkthrough): refused as an existing one is, the experiment kept
    if unwritable := _artifacts_unwritable(location):
        raise _artifacts_refusal(name, f"the new experiment '{name}' keeps its artifacts in {unwritable}")
    with contextlib.suppress(Exception):  # (a hint only)
        _note_local_artifacts(location, tracking_uri, name, notes)
    return made


def _artifacts_refusal(name: str, where: str, advice: str | None = None) -> preflight.PreflightError:
    """The start's refusal of an experiment whose artifact folder (`where` it is) this machine cannot write."""
    return preflight.PreflightError(f"--experiment {name}: {where}, which cannot be written from this machine; "
                                    f"{advice or _ARTIFACTS_ADVICE}")  # fmt: skip


# what to do about an experiment whose artifact folder this machine cannot write: MLflow's client writes a run's
# artifacts itself wherever the experiment keeps them unless its server serves them (`--no-serve-artifacts` with a
# `--default-artifact-root` path: the client writes that path on its own disk; a review)
_ARTIFACTS_ADVICE = ("MLflow's client writes there itself unless the server serves artifacts (`mlflow server "
                     "--artifacts-destination`, its default; hsc-search team-server does): have it serve them, make "
                     "that folder writable here, or give an --experiment that keeps its artifacts elsewhere")


def _note_local_artifacts(location: str | None, tracking_uri: str | None, name: str, notes: list[str] | None) -> None:
    """A shared store (a tracking server, a database) whose experiment keeps its artifacts in a folder of the disk
    of each machine that writes them (a path, a file: URI: what MLflow gives an experiment made through a database
    URI, ./mlruns of the folder its search started in): each search's artifacts then go to that folder on its
    driver's machine, which colleagues' UIs and a server elsewhere do not see (a walkthrough: silent, and the
    report said it was "also in MLflow"). Adds a `note:` to `notes`; a sqlite store's own folder is expected."""
    uri = resolved_tracking_uri(tracking_uri)
    shared = uri.startswith(("http://", "https://")) or uri.split("://", 1)[0].split("+", 1)[0].lower() in DB_SCHEMES
    if notes is None or not shared or not location:
        return
    if not (location.startswith("file:") or ("://" not in location and location.startswith("/"))):
        return
    from urllib.parse import unquote, urlsplit

    path = unquote(urlsplit(location).path) if location.startswith("file:") else location
    if urlsplit(uri).hostname in ("127.0.0.1", "localhost", "::1") and Path(path).exists():
        return  # a server of this machine's own (`mlflow ui` over a local store) whose artifacts are here: as expected
    notes.append(f"note: experiment '{name}' keeps its artifacts (plots, configs, the report) in {location}, a folder "
                 "this machine writes itself: other machines and the MLflow UI of a server elsewhere see them only if "
                 "that folder is shared with them (a team server's experiments keep theirs on the server: "
                 "docs/team-server.md)")  # fmt: skip


TAG_WARM_START = "hsc.warm_start"  # on the parent run: the source as given; .added, .of, .read_from, .line,
# .sampler_seed


def _warm_tags(warm: WarmStart) -> dict[str, str]:
    return {TAG_WARM_START: warm.source, f"{TAG_WARM_START}.added": str(warm.added),
            f"{TAG_WARM_START}.of": str(warm.of), f"{TAG_WARM_START}.read_from": warm.read_from[:5000],
            f"{TAG_WARM_START}.sampler_seed": str(warm.sampler_seed),
            f"{TAG_WARM_START}.line": warm.line()[:5000]}  # fmt: skip


def _space_named(settings: SearchSettings) -> str:
    """The space as recorded: a shipped one by its name, a file of the user's by its absolute path."""
    path = settings.space_path()
    if path.is_file() and path != SPACES_DIR / f"{settings.space}.yaml":
        return str(path.resolve())
    return settings.space


def search_headline(settings: SearchSettings, space: SearchSpace, data: str) -> str:
    """The search's first line: its name, size, space and data, and the values --set (or a config's `set:`) fixes
    for every trial as the trials take them (a walkthrough: the line left them out; the report's head has them)."""
    line = (f"search {settings.name}: {_n(settings.num_samples, 'trial')} x up to "
            f"{_n(settings.max_epochs, 'epoch')}, space {space.source}, data {data}")  # fmt: skip
    if settings.overrides:  # named by where they were given (a config's `set:` was said as --set: a review)
        line += f"; fixed for every trial ({set_where(settings)}): " + ", ".join(
            f"{k} {space.fixed.get(k, v)}" for k, v in sorted(settings.overrides.items()))
    return line


def set_where(settings: SearchSettings) -> str:
    """Where the values fixed for every trial were given: "--set", "<config>: set", or both joined by "and" (the
    headline says it, and the parent run's tag hsc.set_from keeps it for the report's head)."""
    files = sorted({settings.set_from[k] for k in settings.overrides if k in settings.set_from})
    flags = ["--set"] if any(k not in settings.set_from for k in settings.overrides) else []
    return " and ".join(flags + files)


def search_config_text(settings: SearchSettings, trained: dict[str, Any]) -> str:
    """The search as a search config that `hsc-search run --config` takes again: its settings with `set:` for the
    fixed trainer values (as trained), a space file by its absolute path, no name (a new search needs its own)
    and no password in a database URI (the parent run is read by everyone with the store; a rerun's libpq reads
    it from ~/.pgpass or PGPASSWORD)."""
    shown = {k: v for k, v in settings.to_dict().items() if k not in ("overrides", "name")}
    shown["space"] = _space_named(settings)
    shown["storage"] = storage.resolve(settings.storage)  # as resolved (None: ./ray_results of the folder it ran in)
    if shown.get("tracking_uri"):  # without its password: libpq then reads ~/.pgpass or PGPASSWORD
        shown["tracking_uri"] = without_password(shown["tracking_uri"], shown_as="")  # not ':***' (sent as is)
    if trained:
        shown["set"] = dict(trained)
    return yaml.safe_dump(shown, sort_keys=False)


def _log_search_inputs(client, parent_id: str, settings: SearchSettings, space: SearchSpace) -> None:
    from mlflow.entities import Param, RunTag

    flat = {k: v for k, v in settings.to_dict().items() if k != "overrides"}
    # the defaults as they resolved (a param `None` told nothing): the store and folder this search is in
    flat["tracking_uri"] = without_password(resolved_tracking_uri(settings.tracking_uri))  # params are public
    flat["storage"] = storage.resolve(settings.storage)
    flat["address"] = cluster_address(settings.address) or "local"  # a local instance of its own
    flat["space"] = _space_named(settings)  # a file of the user's: "space.yaml" named no folder
    import ray

    if not settings.max_concurrent and ray.is_initialized():  # 0: as many as fit in the cluster as it is now (what
        flat["max_concurrent"] = _slots(settings)  # the search runs with; Ray is up when a search logs this)
    trained = {k: space.fixed.get(k, v) for k, v in settings.overrides.items()}  # as the trials take them
    flat.update({f"set.{k}": v for k, v in trained.items()})
    client.log_batch(parent_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()],
                     tags=[RunTag(TAG_SET_FROM, set_where(settings))] if trained else [])  # fmt: skip
    client.log_text(parent_id, search_config_text(settings, trained), "search_config.yaml")
    client.log_text(parent_id, yaml.safe_dump(space.to_dict(), sort_keys=False), "search_space.yaml")


def _finish_parent(client, settings, exp_dir, parent_id, experiment_id, interrupted, errors,
                   echo) -> SearchOutcome:  # fmt: skip
    rows = trial_rows(client, experiment_id, parent_id, settings.metric, settings.mode)
    rows = sorted(rows, key=start_order(rows))  # the order they were proposed in
    best = best_row(rows, settings.mode)
    best_path = None
    out_dir = outputs_dir(exp_dir)
    if rows:
        _log_summary_table(client, parent_id, rows, out_dir)
        storage.upload_dir(out_dir / "summary", storage.join(exp_dir, "summary"))
        client.log_figure(parent_id, best_so_far_figure([r.score for r in rows], [r.outcome for r in rows],
                                                        settings.mode, settings.metric), "plots/best_so_far.png")  # fmt: skip
    if best is not None:
        try:
            cfg = trial_config(client, best.run_id)
        except ExportError as e:  # its config.yaml never reached MLflow (its upload refused): the search's end and
            cfg = None  # every resume ended in a traceback (the review); the rest of the end is done
            echo(f"warning: best config not written: {e}")
        if cfg is not None:
            best_path = write_config(cfg, out_dir / BEST_CONFIG, data=settings.data,
                                     source=provenance(best, settings.name, parent_id, settings.metric),
                                     fingerprint=_recorded_fingerprint(exp_dir))  # fmt: skip
            if storage.is_uri(exp_dir):
                storage.write_text(storage.join(exp_dir, BEST_CONFIG), best_path.read_text())
            client.log_artifact(parent_id, str(best_path))
        client.set_tag(parent_id, "hsc.best_run_id", best.run_id)
        metrics = {score_key(settings.metric, settings.mode): best.score}  # as its trials name their score
        metrics.update({f"best/{k}": v for k, v in best.final.items() if k.startswith("test/")})
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client.log_batch(parent_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
    counts = outcome_counts(rows)
    client.set_tag(parent_id, "hsc.outcomes", json.dumps(counts))
    computed: dict = {}  # the report computes the parameter importances once; the PNG shows the same numbers
    if interrupted:  # the report it writes as it ends (the copy in MLflow too) said nothing of it (a walkthrough)
        computed["unfinished"] = f"search {settings.name} was interrupted: `{resume_command(exp_dir)}` continues it"
    report = _write_report(client, parent_id, out_dir, exp_dir, settings.tracking_uri, echo, computed) if rows else None
    if computed.get("importances"):
        client.log_figure(parent_id, importance_figure(computed["importances"], computed["importance_title"]),
                          "plots/param_importance.png")  # fmt: skip
    if best is not None:
        try:  # the Description is a convenience: a store that refuses it does not fail a finished search (the review)
            _note_result(client, parent_id, settings, best, best_path, interrupted)
        except Exception as e:  # noqa: BLE001
            if _store_gone(e):  # the tail's guard says resume (a store that refuses it is a warning, as before)
                raise
            echo(f"warning: the search run's Description was not updated with its result ({http_failure(e)})")
    for e in errors:
        echo(f"warning: {e}")
    return SearchOutcome(exp_dir, parent_id, rows, best, best_path, interrupted, errors, report)


RESULT_MARK = "\n\n**Result**\n\n"  # in a parent run's Description, after what its start said


def _note_result(client, parent_id: str, settings: SearchSettings, best: TrialRow, best_path: Path | None,
                 interrupted: bool) -> None:  # fmt: skip
    """The search's result on its run page's Description, after what its start said: the best trial and the
    command that retrains it, as the console printed them (the page said only the start; a walkthrough). A
    resumed search's end replaces the earlier result."""
    from .commands import retrain_command
    from .runs import outcome_label, plural

    note = client.get_run(parent_id).data.tags.get("mlflow.note.content", "").split(RESULT_MARK)[0]
    outcome = outcome_label(best.outcome, interrupted)
    lines = [f"best trial{' so far' if interrupted else ''}: {best.name} ({outcome}, {plural(best.epochs, 'epoch')}), "
             f"{settings.metric} {best.score:.4f}"]  # fmt: skip
    if best_path is not None:  # the paths are this machine's (import-runs copies the Description to a team's server)
        import socket

        lines.append(f"retrain (on {socket.gethostname()}): `{retrain_command(best_path, settings.data)}`")
    result = RESULT_MARK + "\n\n".join(lines)
    client.set_tag(parent_id, "mlflow.note.content", note[:max(0, 4900 - len(result))] + result)  # (MLflow 2: 5000)


def _write_report(client, parent_id: str, out_dir: Path, exp_dir: str, tracking_uri, echo,
                  computed: dict | None = None) -> Path | None:  # fmt: skip
    """The search report beside the best config, logged to the parent run; a failure is a warning only."""
    try:
        path = publish_report(client, parent_id, out_dir / REPORT_ARTIFACT, source=resolved_tracking_uri(tracking_uri),
                              computed=computed)  # fmt: skip
        if storage.is_uri(exp_dir):
            storage.write_text(storage.join(exp_dir, REPORT_ARTIFACT), path.read_text())
        return path
    except Exception as e:  # the search's results are safe in MLflow; `hsc-search report` can try again
        if _store_gone(e):  # (4 minutes of retries, then a 490-line traceback: the review): the tail's guard
            raise  # says resume, which writes the report
        echo(f"warning: the search report was not written ({e}); `hsc-search report --run-id {parent_id}` retries")
        return None


def _log_summary_table(client, parent_id: str, rows: list[TrialRow], out_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    param_names = sorted({k for r in rows for k in r.params})
    metric_names = sorted({k for r in rows for k in r.final if k.startswith(("val/", "test/", "loss/total", "cca/mean"))})
    table = pa.table(
        {
            "number": pa.array([r.number for r in rows], pa.int64()),  # Ray's count: the order they were proposed in
            "trial": [r.name for r in rows],
            "trial_id": [r.trial_id for r in rows],
            "run_id": [r.run_id for r in rows],
            "outcome": [r.outcome for r in rows],
            "epochs": [r.epochs for r in rows],
            "seconds": [r.seconds for r in rows],
            "score": [r.score for r in rows],
            # a trial ASHA stopped: its rung and the cut-off it missed (typed: a column of nulls is null otherwise)
            "stopped_by": pa.array([r.stopped_by for r in rows], pa.string()),
            # a failed trial: the exception's line, as the report's table gives it (the summary had no reason)
            "error": pa.array([_reason(r.error) if r.error else None for r in rows], pa.string()),
            **{f"param.{p}": typed_column([r.params.get(p) for r in rows]) for p in param_names},
            **{f"final.{m}": [r.final.get(m) for r in rows] for m in metric_names},
        }
    )
    out = out_dir / "summary"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "trials.parquet")
    write_csv(table, out / "trials.csv")
    client.log_artifacts(parent_id, str(out), "summary")
