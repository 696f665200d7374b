"""Which process drives a search: the lock a driver holds on its search's folder (`hold_search`), and what a
command that reads a search (export-best, report, replay, a warm start) says of one that has not finished
(`search_state`). Apart from the driver so that those commands ask it without importing Ray and the driver (about
2 s on a 2-core machine)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable

from . import storage
from .commands import auth_prefix, resume_command
from .export import search_in
from .preflight import PreflightError as SearchError

DRIVER_LOCK = ".hsc_driver.lock"  # in a local experiment folder: held by the driver running the search

_HELD: dict = {}  # experiment folder -> the open lock file this process holds on it (until released or it exits)


def hold_search(exp_dir: str) -> None:
    """Marks the search in `exp_dir` as driven by this process, or refuses if another live driver holds it: a
    second driver on one folder (a `resume` of a search still running) trained the same trials again beside the
    first, overwrote its experiment state, and the first then ended as `interrupted`. An flock on a file in a
    local (or NFS) experiment folder; it is released when the process ends, SIGKILL included. A URI storage is
    not locked (nothing shared to lock)."""
    import fcntl
    import socket

    if storage.is_uri(exp_dir) or exp_dir in _HELD:  # (this process's own: a run then a resume in one process)
        return
    path = Path(exp_dir) / DRIVER_LOCK
    for _ in range(5):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+")  # not inherited by the processes the driver starts (Python's default)
        except OSError as e:
            raise SearchError(f"{exp_dir}: cannot write in the search's folder ({e.strerror or e}); a search writes "
                              "its state there") from None  # fmt: skip
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            who = fh.read().strip() or "another process"
            fh.close()
            raise SearchError(f"{exp_dir}: its search is running ({who}); a second driver would train the same "
                              "trials again: wait for it to end, or stop it first (Ctrl-C)") from None  # fmt: skip
        except OSError:  # a file system without locks: nothing to guard with
            fh.close()
            return
        try:  # the file locked is the one at the path (a `run` that let go of its claim unlinks it as it goes)
            if os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino:
                break
        except OSError:
            pass
        fh.close()
    else:
        raise SearchError(f"{exp_dir}: its lock file keeps being replaced (another process is starting and stopping "
                          "searches there); try again")  # fmt: skip
    fh.seek(0)
    fh.truncate()
    fh.write(f"driver pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    fh.flush()
    _HELD[exp_dir] = fh


def _probe_lock(exp_dir: str) -> tuple[str, str]:
    """The search folder's driver lock: ("held", its text) while a live process holds it; ("free", its text) when
    none does and the lock test can be trusted (the last driver's host is this machine, or unknown), or when there
    is no lock file (every driver makes one); else "unknown": a URI, a lock test that failed (a file system
    without locks), or a lock last taken on another host (NFS mounted with local locks cannot see that host's)."""
    import fcntl
    import socket

    if storage.is_uri(exp_dir):
        return "unknown", ""
    if not (Path(exp_dir) / DRIVER_LOCK).is_file():  # every driver makes it (`hold_search`): none drove it since
        return "free", ""  # the lock existed
    try:
        with open(Path(exp_dir) / DRIVER_LOCK) as fh:
            text = fh.read().strip()
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return "held", text or "another process"
            # (closing the file lets go of the probe)
    except OSError:
        return "unknown", ""
    host = text.split(" on ", 1)[1].split(",", 1)[0] if " on " in text else None
    return ("free", text) if host in (None, socket.gethostname()) else ("unknown", text)


def search_driver(exp_dir: str) -> str | None:
    """Who drives the search in `exp_dir` now (the lock's text), or None when no live process holds its lock."""
    if exp_dir in _HELD:
        return None
    state, text = _probe_lock(exp_dir)
    return text if state == "held" else None


def search_state(name: str, status: str, exp_dir: str | None, parent_run_id: str,
                 status_now: Callable[[], str] | None = None,
                 auth_mode: str | None = None) -> tuple[str | None, str | None]:  # fmt: skip
    """Whether a search whose parent run has MLflow status `status` is still going, and what to say of it, from its
    folder's lock when the folder is on this machine and still its own: ("running", note) while its driver runs it
    (no `resume` then: it is refused), ("stopped", note) when its driver is gone (`resume` continues it; its trials
    MLflow still shows as running were cut off), ("unknown", note) when the folder cannot tell, and (None, None)
    for a finished search and for this process's own search (its driver writing it up as it ends, before its
    status is set). `status_now`: the parent run's status read again, asked when the lock is free: a driver that
    finished the search (its status set, then its lock let go as it exited) while the caller read it was told
    "did not finish and no driver runs it", with a resume command (a walkthrough); ("ended", note) then.
    `auth_mode`: the parent run's `runs.TAG_RAY_AUTH`, for the resume command."""
    if status == "FINISHED" or exp_dir in _HELD:
        return None, None
    owner = search_in(Path(exp_dir)) if exp_dir is not None and not storage.is_uri(exp_dir) else None
    local = owner == parent_run_id
    if owner is not None and not local:
        exp_dir = None  # its folder holds another search now (one of the same --name): not named
    lock, who = _probe_lock(exp_dir) if local else ("unknown", "")
    if lock == "held":
        return "running", f"search {name} is still running ({who})"
    resume = (f"`{resume_command(exp_dir, auth_mode)}` continues it" if exp_dir
              else f"`{auth_prefix(auth_mode)}hsc-search resume <its folder>` continues it")  # fmt: skip
    if lock == "free":  # (a lock test that failed, or a driver on another host, cannot tell: said as unknown)
        with contextlib.suppress(Exception):  # (a store that fails now: the status read first stands)
            if status_now is not None and status_now() == "FINISHED":
                return "ended", f"search {name} finished while this read it"
        return "stopped", f"search {name} did not finish and no driver runs it (MLflow status {status}): {resume}"
    return "unknown", (f"search {name} has not finished (MLflow status {status}: still running, interrupted, or "
                       f"its driver died): {resume} if it is not running")  # fmt: skip


def release_search(exp_dir: str) -> None:
    """Lets go of the search in `exp_dir` when this process's run or resume of it returns (a notebook or a
    benchmark that ran it stays alive, and a resume from a shell must not be refused)."""
    fh = _HELD.pop(exp_dir, None)
    if fh is not None:
        fh.close()
