"""How a command of this environment is written in what we print or write, so that it works when pasted."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


DISK_ERRNOS = {28, 30, 27, 122}  # ENOSPC, EROFS, EFBIG, EDQUOT: the disk, not the program


def disk_error(error: BaseException | None, errnos=DISK_ERRNOS, words: tuple[str, ...] = ()) -> BaseException | None:
    """The exception in `error`'s chain that is a disk's refusal to write: an OSError with one of `errnos`, or one
    whose text holds one of `words` (sqlite's and a server's wording); None if there is none. The chain: `error`,
    what it was raised from or during, and what Ray's RayTaskError keeps as `cause` (a trial's exception).
    One walker for the search's three readers of it (Ray's state saves, the CLI's last line, MLflow's retries)."""
    seen = set()
    todo = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in errnos or words and any(w in str(e) for w in words):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


def exe(name: str, relative: bool = True) -> str:
    """One of this environment's commands (`python`, `hsc-search`, `mlflow`), as printed now (`relative`): the
    bare name when the shell finds this very one on PATH (an activated venv), else its absolute path; as written
    into a file (`relative=False`), which may be read from anywhere and in another shell: always its absolute
    path. (A path relative to the working directory, `.venv/bin/hsc-search resume ...`, failed when pasted in
    another folder, beside printed folders and data that are absolute: a walkthrough.)"""
    path = Path(os.path.abspath(Path(sys.executable).parent / name))
    if not relative:
        return shlex.quote(os.fspath(path))
    found = shutil.which(name)
    # the same file by its path, not by where its links lead: a venv's python links to the system's, which a
    # shell finds as `python` without the venv (and without its packages)
    if found and os.path.abspath(found) == os.fspath(path):
        return name
    return shlex.quote(os.fspath(path))


def absolute_data_spec(spec: str) -> str:
    """A data file's spec as an absolute, normalised path (`~` expanded, as for the other paths a search takes;
    `..` folded, so the printed commands work after the folder it was given from is gone); a synthetic spec or a
    URI as given. (Here, not in the driver: `resume` prints it before the driver's imports.)"""
    from trainer.data import SYNTHETIC_PREFIX

    if spec.startswith(SYNTHETIC_PREFIX) or "://" in spec:
        return spec
    return os.path.abspath(os.path.expanduser(spec))


def resume_command(exp_dir, auth_mode: str | None = None) -> str:
    """`hsc-search resume <folder>` as printed: with `RAY_AUTH_MODE=token ` in front when the user ran this command
    with it, or the search was run with it (its record's `ray_auth_mode`: a cluster with token authentication;
    pasted without it in a new shell, the resume was refused, also as export-best printed it: a walkthrough), or
    `auth_mode` says so (the parent run's tag, `runs.TAG_RAY_AUTH`, where the folder is not on this machine). The
    value from before Ray started: ray.init sets it to token for a local instance of its own."""
    from . import USER_RAY_AUTH_MODE

    # any value the user gave: `disabled` too, the pre-flight's way out for a HOME Ray cannot write (the review)
    mode = USER_RAY_AUTH_MODE or recorded_auth_mode(exp_dir) or auth_mode  # (the record, where here, is the newer)
    return f"{auth_prefix(mode)}{exe('hsc-search')} resume {shlex.quote(str(exp_dir))}"


def auth_prefix(mode: str | None) -> str:
    """`RAY_AUTH_MODE=<mode> ` in front of a printed command, or "" (one home: resume lines with and without a
    folder)."""
    return f"RAY_AUTH_MODE={shlex.quote(mode)} " if mode else ""


def recorded_auth_mode(exp_dir) -> str | None:
    """The RAY_AUTH_MODE a search in a folder on this disk was run or last resumed with (its record), else None."""
    import json

    from .runs import META_FILE
    from .storage import is_uri

    try:
        if is_uri(str(exp_dir)):
            return None  # (a bucket's: not read for a line's sake)
        mode = json.loads((Path(exp_dir) / META_FILE).read_text(encoding="utf-8")).get("ray_auth_mode")
        return mode if isinstance(mode, str) and mode else None
    except (OSError, ValueError, AttributeError):
        return None


def retrain_command(config_path, data: str | None) -> str:
    """The command that retrains an exported config, as printed and written into the file's header: this
    environment's `hsc-search train` by its absolute path (the same program as `python -m trainer`, which a
    `trainer.py` or `trainer/` folder in the working directory would shadow when pasted there: a walkthrough)."""
    spec = shlex.quote(data) if data else "<SPEC: the data the search ran on>"
    return f"{exe('hsc-search', relative=False)} train --config {shlex.quote(str(config_path))} --data {spec}"


def restore_command(tracking_uri: str | None, what: str, ident: str) -> str:
    """`mlflow experiments restore` / `mlflow runs restore` of a deleted experiment or run in the store a search
    used, pasted in any folder: the store resolved (a relative sqlite path made absolute), without its password
    (libpq reads ~/.pgpass, or MLFLOW_TRACKING_PASSWORD for a server, as the search did)."""
    from .runs import resolved_tracking_uri, without_password

    store = shlex.quote(without_password(resolved_tracking_uri(tracking_uri), ""))
    flag = {"experiments": "--experiment-id", "runs": "--run-id"}[what]
    return f"MLFLOW_TRACKING_URI={store} {exe('mlflow')} {what} restore {flag} {ident}"
