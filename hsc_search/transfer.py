"""Copies searches from one MLflow tracking store to another (e.g. the embedded default `sqlite:///mlflow.db`
into a team server), with MlflowClient only.

What a copied run keeps: its name, status, start and end times, user, lifecycle (a soft-deleted run is copied
and deleted again), params, tags, every metric's full history (step, value, timestamp), its artifacts, and
its parent (`mlflow.parentRunId` points at the parent's copy). Experiments are matched by name; experiment
tags are copied. Datasets, logged models, traces and the model registry are not copied (searches use none).

Why not `databricks-mlflow-export-import` (1.2.1, measured against MLflow 3.17.2 in docs/team-server.md): it
keeps histories, nesting and artifacts, but stamps every run with the import time as its start and end, so
`export-best` (which takes the latest search by start time) and the trial durations would go wrong, and a
second import duplicates every run.

A copy is idempotent: each copied run carries `hsc.import.source_run` (set when the copy starts) and
`hsc.import.source_uri` and `hsc.import.source_state` (set when it is complete; the state sums up the source run
as it was then: status, end time, its params', tags' and metrics' latest values). A run already copied completely
and not changed since is skipped; one whose copy was cut short, or that changed at the source since (a search
still running when it was imported, a report logged later, a resumed search), is deleted and copied again, and
the copies of its children are pointed at its new copy. A run still running at the source is copied as it is and
said; the next import brings the rest.

Mistakes stop before anything is created or changed: both stores are checked first (read-only: a sqlite source
must be an MLflow database; a sqlite destination an MLflow database or a new file in an existing folder; not the
same store twice), then everything about the source, and only then is the destination opened (which creates a
new sqlite store). An experiment created in a local sqlite destination keeps its artifacts beside that file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from .commands import restore_command
from .runs import (DB_SCHEMES, http_failure, meant_server_uri, store_of_folder, missing_artifact_dir, mlflow_db_problem,
                   moved_store_hint, resolved_tracking_uri, seed_sqlite_store, served_artifacts_problem, served_store_problem,
                   sqlite_options_problem, sqlite_path, without_password)

TAG_SOURCE_RUN = "hsc.import.source_run"
TAG_SOURCE_URI = "hsc.import.source_uri"
TAG_BEST_RUN = "hsc.best_run_id"  # on a search's parent run: its best trial's run id (driver._finish_parent)
TAG_PARENT = "mlflow.parentRunId"
TAG_SOURCE_STATE = "hsc.import.source_state"
IMPORT_TAGS = (TAG_SOURCE_RUN, TAG_SOURCE_URI, TAG_SOURCE_STATE)
BATCH_METRICS, BATCH_PARAMS, BATCH_TAGS = 1000, 100, 100  # MLflow's log_batch limits


class TransferError(Exception):
    """Bad input (a URI or experiment that does not exist); the message names it."""


@dataclass
class TransferReport:
    copied: int = 0
    skipped: int = 0  # already copied completely before
    redone: int = 0  # a copy cut short before, deleted and copied again
    updated: int = 0  # changed at the source since its copy: deleted and copied again
    running: int = 0  # still running at the source: copied as they were
    metric_points: int = 0
    artifact_files: int = 0
    experiments: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # source run id -> why its artifacts were not copied


def check_uri(uri: str, role: str) -> str:
    """A tracking URI that names a store that exists: an existing sqlite file, an http(s) server, a database."""
    flag = f"--{role}"
    if not uri or "://" not in uri and not uri.startswith("sqlite:"):
        meant = meant_server_uri(uri or "")  # (a server's address mistyped: the one meant, as `run` says it)
        raise TransferError(f"{flag} {without_password(uri)!r}: expected a tracking URI such as sqlite:///mlflow.db, "
                            "http://127.0.0.1:5000 or postgresql://user@host/db"
                            + (f"; did you mean {without_password(meant)}?" if meant else ""))  # fmt: skip
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        path = sqlite_path(uri) if uri.startswith("sqlite:///") else None
        if path is None or str(path) in ("", ".", "/", ":memory:"):
            raise TransferError(f"{flag} {uri}: expected sqlite:///RELATIVE/PATH.db or sqlite:////ABSOLUTE/PATH.db")
        problem = sqlite_options_problem(uri)
        if problem:
            raise TransferError(f"{flag} {uri}: {problem}")
        _check_sqlite(uri, path, role)
    elif scheme in ("http", "https"):
        import http.client
        import urllib.request

        from .runs import NOT_HTTP, StoreError, http_request, not_a_page, not_http, tls_to_plain_http

        try:
            not_a_page(uri)
        except StoreError as e:
            raise TransferError(f"{flag} {without_password(uri)}: {e}") from None
        try:
            urllib.request.urlopen(http_request(uri.rstrip("/") + "/health"), timeout=10)
        except (OSError, http.client.HTTPException) as e:
            if not_http(e):  # (a traceback: a Ray head's port, a walkthrough)
                raise TransferError(f"{flag} {without_password(uri)}: that address {NOT_HTTP} ({type(e).__name__})") \
                    from None
            plain = tls_to_plain_http(uri, e)
            raise TransferError(f"{flag} {without_password(uri)}: no MLflow server answers there ({e}); "
                                + ("it answers in plain HTTP: use http:// (MLflow servers speak no TLS themselves)"
                                   if plain else "is the server (or the SSH tunnel to it) up?")) from None  # fmt: skip
        from .runs import check_server_api

        try:  # its API too: /health is answered without the server's database
            check_server_api(uri)
        except StoreError as e:
            raise TransferError(f"{flag}: {e}") from None
    elif scheme in DB_SCHEMES:  # MLflow would retry one that does not answer for minutes
        from .preflight import PreflightError, check_database

        try:
            check_database(uri, scheme, 10.0, advice="", flag=flag)
        except PreflightError as e:
            raise TransferError(str(e)) from None
    elif scheme == "databricks":
        raise TransferError(f"{flag} {uri}: Databricks-hosted MLflow is not supported; expected sqlite, http(s) "
                            "or postgresql")  # fmt: skip
    elif scheme == "file":
        raise TransferError(f"{flag} {uri}: the file store is not supported by MLflow 3.17 without "
                            "MLFLOW_ALLOW_FILE_STORE; export it with MLflow first")
    else:
        raise TransferError(f"{flag} {uri}: unknown scheme {scheme!r}; expected sqlite, http(s) or postgresql")
    return uri


def _check_sqlite(uri: str, db: Path, role: str) -> None:
    """Read-only checks of a sqlite store, so that a mistake stops before MLflow creates or changes a file: the
    source must be an MLflow database; the destination an MLflow database or a new file in an existing folder
    (MLflow would create the missing folders, or turn any existing file, even an empty one, into a new store)."""
    flag = f"--{role}"
    if db.is_dir():
        raise TransferError(f"{flag} {uri}: {db.absolute()} is a folder; expected the MLflow database file, "
                            + store_of_folder(db, new_store=role == "to"))  # fmt: skip
    if role == "from" and not db.is_file():
        raise TransferError(f"{flag} {uri}: no such file {db.absolute()} (MLflow would create an empty "
                            "store; run this where the searches ran, or give the full path)")  # fmt: skip
    if role == "to" and not db.exists():
        folder = db.absolute().parent
        if not folder.is_dir():
            gone = "is a file, not a folder" if folder.exists() else "does not exist"
            raise TransferError(f"{flag} {uri}: the folder {folder} {gone}; expected an existing MLflow database "
                                "or a new file in an existing folder (create the folder or fix the path)")  # fmt: skip
        if not os.access(folder, os.W_OK | os.X_OK):
            raise TransferError(f"{flag} {uri}: cannot create {db.absolute()}: the folder {folder} is not "
                                "writable; expected a new file in a folder you can write to")  # fmt: skip
        return
    what = mlflow_db_problem(db)
    if what:
        expected = "the sqlite file a search wrote, e.g. sqlite:///mlflow.db"
        if role == "to":
            expected = ("an MLflow database to add the runs to, or a path where no file is yet (a new store is "
                        "made there)")
        raise TransferError(f"{flag} {uri}: {db.absolute()} is not an MLflow database ({what}); expected {expected}")
    if role == "to" and not (os.access(db, os.W_OK) and os.access(db.absolute().parent, os.W_OK | os.X_OK)):
        # (every import writes, if only the experiments' tags: it was a 340-line traceback; a walkthrough)
        what = "is read-only" if not os.access(db, os.W_OK) else "is in a folder that cannot be written (SQLite " \
            "writes its journal there)"  # fmt: skip
        raise TransferError(f"{flag} {uri}: {db.absolute()} {what}; expected a store the runs can be copied into")


def _canonical_url(uri: str) -> str:
    """A server or database URI with the spelling differences that name the same place removed: case of the
    scheme and host, localhost for 127.0.0.1, a default port, trailing slashes."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(uri.strip())
        host = (u.hostname or "").lower()
        host = "127.0.0.1" if host in ("localhost", "::1") else host
        port = u.port or {"http": 80, "https": 443}.get(u.scheme.lower())
    except ValueError:
        return uri.strip().rstrip("/")
    user = f"{u.username}@" if u.username else ""
    return f"{u.scheme.lower()}://{user}{host}:{port}{u.path.rstrip('/')}?{u.query}"


def same_store(source_uri: str, dest_uri: str) -> bool:
    """Whether two tracking URIs name one store: sqlite files compared as files (relative, absolute, `./`,
    symlinked spellings of one file), other URIs as normalised text."""
    a, b = sqlite_path(source_uri), sqlite_path(dest_uri)
    if a is not None or b is not None:
        if a is None or b is None:
            return False
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    return _canonical_url(source_uri) == _canonical_url(dest_uri)


def _local_artifact_root(uri: str) -> str | None:
    """For a local sqlite store: `mlruns/` beside its database file (absolute), where the experiments a copy
    creates keep their artifacts, so that the copy does not depend on the folder import-runs ran in (MLflow's
    default is ./mlruns of the working directory). None for any other store (a server decides itself)."""
    db = sqlite_path(uri)
    return None if db is None else str(db.absolute().parent / "mlruns")


def _store(uri: str, artifact_root: str | None = None):
    from mlflow.tracking._tracking_service.utils import _get_store

    return _get_store(uri, artifact_root)


def _all_runs(client, experiment_id: str) -> list:
    from mlflow.entities import ViewType

    out, token = [], None
    while True:
        page = client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _parents_first(runs: list) -> list:
    """Runs ordered so that every parent comes before its children (then by start time)."""
    by_id = {r.info.run_id: r for r in runs}
    depth: dict[str, int] = {}

    def d(run) -> int:
        rid = run.info.run_id
        if rid not in depth:
            depth[rid] = 0  # guards against a cycle
            parent = by_id.get(run.data.tags.get(TAG_PARENT, ""))
            depth[rid] = 0 if parent is None else d(parent) + 1
        return depth[rid]

    return sorted(runs, key=lambda r: (d(r), r.info.start_time or 0, r.info.run_id))


def _copied_runs(dst, experiment_id: str) -> dict[str, object]:
    """Source run id -> its copy in the destination experiment (complete or not): an active copy before a
    deleted one, then a complete one before a half one (a copy cut short, or replaced, is soft-deleted and stays
    in the store: taking a deleted half copy for the run made the next import copy a complete run again, a
    duplicate; taking a replaced complete copy over the active half copy of its re-copy left that half copy)."""
    best: dict[str, object] = {}

    def rank(r) -> tuple:
        return r.info.lifecycle_stage == "active", bool(r.data.tags.get(TAG_SOURCE_URI)), r.info.start_time or 0

    for r in _all_runs(dst, experiment_id):
        sid = r.data.tags.get(TAG_SOURCE_RUN)
        if sid is not None and (sid not in best or rank(r) > rank(best[sid])):
            best[sid] = r
    return best


def source_state(run) -> str:
    """What a copy is compared with on the next import: the run's status, end time and its params', tags' and
    latest metrics' values (a digest)."""
    import hashlib
    import json

    tags = {k: v for k, v in run.data.tags.items() if k not in IMPORT_TAGS}
    text = json.dumps([run.info.status, run.info.end_time, run.data.params, tags, run.data.metrics], sort_keys=True,
                      default=str)  # fmt: skip
    return f"{run.info.status}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _changed(copy, run) -> bool:
    """The source run changed since `copy` (complete) was made. Copies from before the state tag count as
    current unless their status differs (a copy of a run that was running then)."""
    state = copy.data.tags.get(TAG_SOURCE_STATE)
    return state != source_state(run) if state else copy.info.status != run.info.status


def _artifact_files(client, run_id: str, path: str | None = None) -> list:
    out = []
    for f in client.list_artifacts(run_id, path):
        out.extend(_artifact_files(client, run_id, f.path) if f.is_dir else [f])
    return out


def copy_run(src, dst, dst_store, run, dst_experiment_id: str, parent_copy: str | None, source_uri: str,
             report: TransferReport) -> str:  # fmt: skip
    """Copies one run into `dst_experiment_id`; returns the new run id."""
    from mlflow.entities import Metric, Param, RunTag

    info, data = run.info, run.data
    tags = {k: v for k, v in data.tags.items() if k not in IMPORT_TAGS}
    if parent_copy is not None:
        tags[TAG_PARENT] = parent_copy
    else:
        tags.pop(TAG_PARENT, None)  # its parent is not in this store: the copy stands alone
    tags[TAG_SOURCE_RUN] = info.run_id
    new = dst_store.create_run(experiment_id=dst_experiment_id, user_id=info.user_id or "unknown",
                               start_time=info.start_time, tags=[RunTag(k, v) for k, v in tags.items()],
                               run_name=info.run_name)  # fmt: skip
    new_id = new.info.run_id
    params = [Param(k, v) for k, v in data.params.items()]
    for i in range(0, len(params), BATCH_PARAMS):
        dst.log_batch(new_id, params=params[i : i + BATCH_PARAMS])
    points = []
    for key in data.metrics:
        points.extend(Metric(m.key, m.value, m.timestamp, m.step) for m in src.get_metric_history(info.run_id, key))
    for i in range(0, len(points), BATCH_METRICS):
        dst.log_batch(new_id, metrics=points[i : i + BATCH_METRICS])
    report.metric_points += len(points)
    files, why = [], None
    missing = missing_artifact_dir(info.artifact_uri)
    if missing and missing_artifact_dir(str(PurePosixPath(missing).parent.parent)):
        # neither the run's artifact folder nor its experiment's is there: the store was moved without them (a run
        # that logged no artifact has no folder of its own, but its experiment's folder is there)
        why = moved_store_hint(info.artifact_uri)
    else:
        with tempfile.TemporaryDirectory(prefix="hsc-import-") as tmp:
            try:
                files = _artifact_files(src, info.run_id)
                local = src.download_artifacts(info.run_id, "", dst_path=tmp) if files else None
            except Exception as e:  # e.g. an artifact server that does not answer: this copy is not marked complete,
                # so the next import-runs copies the run again (files included) instead of skipping it
                raise TransferError(f"run {info.run_id}: cannot read its artifacts from {info.artifact_uri} "
                                    f"({http_failure(e)}); the runs copied so far are kept, and import-runs "
                                    "again copies this one and the rest") from None  # fmt: skip
            if files:
                dst.log_artifacts(new_id, local)
    if why:
        report.unreadable[info.run_id] = why
    report.artifact_files += len(files)
    if info.status != "RUNNING":
        dst.set_terminated(new_id, status=info.status, end_time=info.end_time)
    dst.set_tag(new_id, TAG_SOURCE_STATE, source_state(run))
    # marks the copy complete (a deleted run takes no tags); a relative sqlite path made absolute (it named no
    # folder); a password never
    dst.set_tag(new_id, TAG_SOURCE_URI, without_password(resolved_tracking_uri(source_uri)))
    if info.lifecycle_stage == "deleted":
        dst.delete_run(new_id)  # if cut short just before this, the next copy deletes it (see copy_searches)
    return new_id


def copy_searches(source_uri: str, dest_uri: str, experiments: list[str] | None = None,
                  echo: Callable[[str], None] = print) -> TransferReport:  # fmt: skip
    """Copies every run of the named experiments (default: all active experiments) from `source_uri` to
    `dest_uri`. Safe to run again: what was copied completely before is skipped."""
    check_uri(source_uri, "from")
    check_uri(dest_uri, "to")
    if same_store(source_uri, dest_uri):
        where = sqlite_path(source_uri)
        raise TransferError(f"--to {dest_uri}: the same store as --from {source_uri}"
                            + (f" ({where.absolute()})" if where is not None else "")
                            + "; expected another store to copy the runs into")  # fmt: skip
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from requests.exceptions import RequestException

    # everything about the source is checked before the destination is opened (opening a sqlite store creates it)
    src = MlflowClient(tracking_uri=source_uri)
    try:  # (a server that stopped answering since the check that it answers: a traceback, as --to's below)
        if experiments:
            exps = []
            for name in dict.fromkeys(experiments):  # one copy each (a name given twice was counted twice)
                exp = src.get_experiment_by_name(name)
                if exp is None:
                    names = sorted(e.name for e in src.search_experiments())
                    raise TransferError(f"--experiment {name!r}: not in {source_uri}; it has: {', '.join(names)}")
                exps.append(exp)
        else:
            exps = src.search_experiments()
        for e in exps:  # artifacts only a server's client reads: the import failed after a half copy in the
            # destination
            served = served_artifacts_problem(e.artifact_location, source_uri, "--from", f"experiment '{e.name}'")
            if served:
                raise TransferError(served)
        runs_of = {exp.experiment_id: _all_runs(src, exp.experiment_id) for exp in exps}
    except (MlflowException, OSError, RequestException) as e:
        raise TransferError(f"--from {without_password(source_uri)}: the store failed "
                            f"({http_failure(e)}); nothing was copied") from None  # fmt: skip
    if not any(runs_of.values()):
        names = ", ".join(e.name for e in exps) or "none"
        raise TransferError(f"--from {source_uri}: no runs to copy (experiments: {names}); expected the store "
                            "a search logged to")  # fmt: skip
    root = _local_artifact_root(dest_uri)
    new_db = sqlite_path(dest_uri) if root is not None and not sqlite_path(dest_uri).exists() else None
    if root is not None:  # a new sqlite store appears whole (MLflow's own creation, interrupted, left a store that
        seed_sqlite_store(dest_uri, root)  # neither MLflow nor the same import could open again; a walkthrough)
    dst_store = _store(dest_uri, root)  # first: a new sqlite store gets its Default experiment's folder there too
    dst = MlflowClient(tracking_uri=dest_uri)
    # a destination whose artifacts a server keeps (any of its experiments, its Default one included: a server
    # makes them all so, and an experiment the import creates would keep local artifacts the server's clients never
    # see): refused before anything is copied
    from mlflow.entities import ViewType

    try:  # (a server that stopped answering since the check that it answers: a 300-line traceback, a walkthrough)
        served = served_store_problem(dst, dest_uri, "--to")
        targets = dst.search_experiments(view_type=ViewType.ALL)
    except (MlflowException, OSError, RequestException) as e:
        raise TransferError(f"--to {without_password(dest_uri)}: the store failed ({http_failure(e)}); "
                            "nothing was copied") from None  # fmt: skip
    if served:
        raise TransferError(served)
    for target in targets:
        if target.lifecycle_stage == "deleted" and target.name in {e.name for e in exps}:  # MLflow refused every
            # write into it, in a traceback (a walkthrough)
            raise TransferError(
                f"--to {without_password(dest_uri)}: experiment '{target.name}' is deleted there (its runs in the "
                f"trash, its name still taken); restore it "
                f"(`{restore_command(dest_uri, 'experiments', target.experiment_id)}`), or copy into another store")
    report = TransferReport()
    if new_db is not None:  # a mistyped --to made a second store without a word (a walkthrough)
        echo(f"note: {new_db.absolute()} is a new store (no file was there); its artifacts go to {root}")
    for exp in exps:
        runs = runs_of[exp.experiment_id]
        if not runs and exp.name == "Default":
            continue
        try:
            target = dst.get_experiment_by_name(exp.name)
            # a new experiment in a local sqlite store keeps its artifacts beside that store (_local_artifact_root)
            dst_exp_id = target.experiment_id if target else dst_store.create_experiment(exp.name, None, None)
            for k, v in exp.tags.items():
                if not k.startswith("mlflow.") or k in ("mlflow.note.content", "mlflow.experimentKind"):
                    dst.set_experiment_tag(dst_exp_id, k, v)
            done = _copied_runs(dst, dst_exp_id)
        except (MlflowException, OSError, RequestException) as e:  # a store that stopped answering or taking writes
            raise TransferError(f"experiment {exp.name}: the copy failed ({http_failure(e)}); the runs copied so far "
                                "are kept, and the same import-runs copies the rest") from None  # fmt: skip
        report.experiments.append(exp.name)
        copies: dict[str, str] = {}  # source run id -> copy id
        n_before = (report.copied, report.skipped, report.redone)
        n_updated = report.updated
        for run in _parents_first(runs):
            rid = run.info.run_id
            old = done.get(rid)
            parent = copies.get(run.data.tags.get(TAG_PARENT, ""))
            try:
                if old is not None and old.data.tags.get(TAG_SOURCE_URI) and not _changed(old, run):
                    copies[rid] = old.info.run_id
                    deleted = old.info.lifecycle_stage == "deleted"
                    repoint = parent is not None and old.data.tags.get(TAG_PARENT) != parent  # its parent was
                    if repoint:  # copied again; a deleted copy too (a review: it stayed under the deleted parent
                        if deleted:  # copy, so a restored trial hung under a deleted search): a deleted run takes
                            dst.restore_run(old.info.run_id)  # no tags, so restored for the moment
                        dst.set_tag(old.info.run_id, TAG_PARENT, parent)
                    if (deleted and repoint) or (run.info.lifecycle_stage == "deleted" and not deleted):
                        dst.delete_run(old.info.run_id)
                    report.skipped += 1
                    continue
                if old is not None:  # a copy cut short, or of a run that changed since: start it over
                    if old.info.lifecycle_stage == "active":
                        if old.info.status == "RUNNING":  # a half copy is no run that runs: its deleted copy
                            # stayed RUNNING in the store (a walkthrough)
                            dst.set_terminated(old.info.run_id, status="KILLED")
                        dst.delete_run(old.info.run_id)
                    if old.data.tags.get(TAG_SOURCE_URI):
                        report.updated += 1
                    else:
                        report.redone += 1
                copies[rid] = copy_run(src, dst, dst_store, run, dst_exp_id, parent, source_uri, report)
            except (MlflowException, OSError, RequestException) as e:  # a store stopped answering or taking writes
                raise TransferError(f"run {rid}: the copy failed ({http_failure(e)}); the runs copied so far are "
                                    "kept, and the same import-runs copies this one and the rest") from None  # fmt: skip
            report.copied += 1
            report.running += run.info.status == "RUNNING" and run.info.lifecycle_stage == "active"
        for run in runs:  # a search's best trial, named by its id: the copy's id here (it named the source's)
            best = run.data.tags.get(TAG_BEST_RUN)
            mine, theirs = copies.get(run.info.run_id), copies.get(best or "")
            if mine is not None and theirs is not None:
                try:
                    copy = dst.get_run(mine)  # (a deleted run takes no tags: a copy of a deleted search stays as is)
                    if copy.info.lifecycle_stage == "active" and copy.data.tags.get(TAG_BEST_RUN) != theirs:
                        dst.set_tag(mine, TAG_BEST_RUN, theirs)
                except (MlflowException, OSError, RequestException) as e:
                    raise TransferError(f"run {run.info.run_id}: the copy failed ({http_failure(e)}); the runs "
                                        "copied so far are kept, and the same import-runs finishes it") from None
        c, s, r = (a - b for a, b in zip((report.copied, report.skipped, report.redone), n_before))
        u = report.updated - n_updated
        echo(f"experiment {exp.name}: {c} run(s) copied" + (f", {s} already there" if s else "")
             + (f" ({r} half-copied before, copied again)" if r else "")
             + (f" ({u} changed at the source since their copy, copied again)" if u else ""))  # fmt: skip
    if report.running:
        echo(f"note: {report.running} run(s) still running at {source_uri} were copied as they are now (e.g. a "
             "search that has not ended); import-runs again once they end copies the rest")  # fmt: skip
    if report.unreadable:
        rid, why = next(iter(report.unreadable.items()))
        echo(f"warning: {len(report.unreadable)} run(s) copied without artifacts: their artifact folders "
             f"(config.yaml, reports, plots, where a run had any) are not where {source_uri} says; e.g. run {rid}: "
             f"{why}. A later import-runs "
             "skips these copies: to bring the artifacts, make them readable and import into a store without "
             "these runs (or delete them there first)")  # fmt: skip
    return report
