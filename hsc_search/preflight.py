"""The search's pre-flight: every check that can fail a search for a user's mistake, run before Ray starts and
before anything is written, so that a mistake costs seconds and one sentence naming the culprit.

Each check raises `PreflightError` (the driver's `SearchError`) with the flag or file to blame and what was expected. The
resource check of a Ray cluster needs a connection to it (`check_cluster_resources`, right after `ray.init`,
still before any trial or MLflow run exists).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from trainer import TrainConfig
from trainer.config import why_unwritable
from trainer.fit import OBJECTIVE

from . import storage
from .runs import (CUT_SHORT, DB_SCHEMES, StoreError, check_server, meant_server_uri, mlflow_db_problem,
                   sqlite_options_problem, sqlite_path, without_password)

TRACKING_TIMEOUT_S = 10.0


class PreflightError(RuntimeError):
    """A search setting cannot work; the message names it and says what was expected."""


# ---------------------------------------------------------------------------------------------- metric
def reported_keys(cfg: TrainConfig) -> list[str]:
    """The metric keys every epoch of a trial with this (resolved) config reports: what ASHA and Optuna can
    rank by. test/* is reported once, after the last epoch, and is never an objective."""
    losses = cfg.active_losses()
    kinds = ("loss", "weight", "logvar") if cfg.loss_weighting != "fixed" else ("loss", "weight")  # fixed: no s_i
    return (
        list(_ALWAYS_FIRST)
        + [f"{p}/{n}" for p in kinds for n in losses]
        + [f"cca/rho_{i:02d}" for i in range(cfg.cca_k)]
        + list(_ALWAYS_LAST)
    )


_ALWAYS_FIRST = ("epoch", "val/map_a2v", "val/map_v2a", "val/map_avg", "loss/total")
_ALWAYS_LAST = ("cca/mean", "time/epoch_s", "perf/samples_per_s")
EVERY_TRIALS = _ALWAYS_FIRST + _ALWAYS_LAST  # reported whatever the config: no space can take them away
SPACE_DRAWS = 200  # random trials of the space the metric is checked against (about 0.1 s per 100)


def a_valid_draw(space, epochs: int, dims: tuple[int, int, int], seed: int = 0):
    """The first of `SPACE_DRAWS` random trials of the space (Optuna's RandomSampler, in memory) that the trainer
    takes on this data (`dims`), resolved as it trains; with no such trial, a PreflightError saying why the first
    one is refused: every trial the search would sample fails (a walkthrough: `cca_k` 20 to 30 beside an auto
    `cca_dim` of 16 on the data was noted for 20 alone, then every trial failed after Ray had started)."""
    import optuna

    from trainer.config import ConfigError

    from .space import validate_sampled

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    suggest = space.define_by_run()
    first_error = None
    for _ in range(SPACE_DRAWS):
        trial = study.ask()
        suggest(trial)
        study.tell(trial, 0.0)
        try:
            return validate_sampled(space, dict(trial.params), epochs).resolve(*dims)
        except ConfigError as e:
            if first_error is None:
                first_error = "; ".join(e.problems) if getattr(e, "problems", None) else str(e)
                shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}"
                                  for k, v in trial.params.items())  # fmt: skip
    raise PreflightError(f"space {space.source}: none of {SPACE_DRAWS} trials drawn from it at random trains on this "
                         f"data (the first, {shown}: {first_error}); change the space's ranges or fixed values")


def check_metric_in_space(metric: str, space, epochs: int, dims: tuple[int, int, int], first: dict[str, Any],
                          seed: int = 0) -> None:
    """`metric` must be reported by every trial the space can sample, not only by its first: `logvar/nce` is not
    reported by a trial with fixed weights, `loss/rec` by one without reconstruction, `cca/rho_15` by one with
    cca_dim 8. Such a trial made Ray end the whole search with a 300-line traceback (strict metric checking) once
    the sampler drew it. Checked on `SPACE_DRAWS` random trials of the space (Optuna's RandomSampler, in memory),
    each resolved for the data (`dims`: train clips, audio and visual dims) as the trainer resolves it. The
    sentence names the values that take the metric away: those which, set back to the first trial's (`first`,
    which reports it), give it back; where no one value does, those that differ from the first trial's."""
    if metric in EVERY_TRIALS or not space.params:
        return
    import optuna

    from trainer.config import ConfigError

    from .space import validate_sampled

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    suggest = space.define_by_run()
    def reports(params: dict[str, Any]) -> bool | None:  # None: the trainer refuses the combination
        try:
            return metric in reported_keys(validate_sampled(space, params, epochs).resolve(*dims))
        except ConfigError:  # a trial the trainer refuses fails on its own; not this check's business
            return None

    for _ in range(SPACE_DRAWS):
        trial = study.ask()
        suggest(trial)
        params = dict(trial.params)
        study.tell(trial, 0.0)
        if reports(params) is False:
            differ = [k for k in params if k not in first or params[k] != first[k]]
            names = [k for k in differ if k in first and reports({**params, k: first[k]})] or differ or list(params)
            shown = ", ".join(f"{k}={params[k]}" for k in names)
            names = sorted(names)
            raise PreflightError(
                f"--metric {metric}: not reported by every trial of space {space.source}: a trial with {shown} "
                f"reports no {metric} (the search would end at the first such trial); rank by a metric every trial "
                f"reports, such as {OBJECTIVE}" + (f", or fix {', '.join(names)} with --set" if names else ""))


def check_metric(metric: str, cfg: TrainConfig, flag: str = "--metric") -> None:
    """`metric` must be a key each epoch reports (for the search's default config). `flag`: where it was given
    (a config file's `metric:` was blamed on --metric, a walkthrough)."""
    if metric.startswith("test/"):
        raise PreflightError(f"{flag} {metric}: test metrics are evaluated once, after the last epoch, and must "
                             f"never select models; rank by a validation metric such as {OBJECTIVE}")  # fmt: skip
    keys = reported_keys(cfg)
    if metric not in keys:
        import difflib

        near = difflib.get_close_matches(metric.lower(), keys, n=1, cutoff=0.85)  # (not loss/nce for loss/rec)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise PreflightError(f"{flag} {metric}: not a metric the trainer reports every epoch{hint}; expected one of "
                             f"{', '.join(keys)}")  # fmt: skip


# ---------------------------------------------------------------------------------------------- MLflow
DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
EXPECTED_URIS = "sqlite:///mlflow.db, a database URI (postgresql://...) or an http:// tracking server"


def check_tracking(uri: str | None, timeout_s: float = TRACKING_TIMEOUT_S,
                   advice: str = ", or search with --no-mlflow") -> None:  # fmt: skip
    """The MLflow tracking URI can be used: a server answers its health check within `timeout_s`; a database
    server accepts a connection within `timeout_s` (MLflow itself retries one for minutes); a sqlite file's
    folder exists (MLflow would silently create a new database at a mistyped path) and the file, when there,
    is a database. `advice`: what ends an unreachable store's message beside fixing it (`resume` has no
    --no-mlflow: it was told to search with it, a walkthrough)."""
    if uri:
        flag = "--tracking-uri"
    elif os.environ.get("MLFLOW_TRACKING_URI"):  # MLflow's default when no --tracking-uri: checked the same way
        uri, flag = os.environ["MLFLOW_TRACKING_URI"], "$MLFLOW_TRACKING_URI"
    else:  # MLflow's default: ./mlflow.db (a read-only folder failed after Ray had started)
        uri, flag = "sqlite:///mlflow.db", f"the default store (no --tracking-uri, in {os.getcwd()})"
    name = f"{flag} {without_password(uri)}"
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    given = uri.split("://", 1)[0] if "://" in uri else ""
    if given != given.lower():  # MLflow knows its schemes in lower case only: SQLITE:/// failed after Ray started
        lower = given.lower()  # Postgres:// was told postgres://, then that postgres:// is unknown (a review)
        lower = "postgresql" + lower[len("postgres"):] if scheme == "postgres" else lower
        raise PreflightError(f"{name}: MLflow reads a URI's scheme in lower case only; write it "
                             f"{lower}://{without_password(uri).split('://', 1)[1]}")  # fmt: skip
    if scheme == "sqlite" and not uri.startswith("sqlite:"):  # sqlite+pysqlite:///..., as MLflow takes it
        uri = "sqlite:" + uri.split(":", 1)[1]
    if scheme in DB_SCHEMES:
        check_database(uri, scheme, timeout_s, advice=advice, flag=flag)
        return
    if uri.startswith(("http://", "https://")):
        try:
            check_server(uri, timeout_s)
        except StoreError as e:
            start = "start it (hsc-search team-server or mlflow server), " if str(e).startswith("cannot reach") \
                else ""  # (one that answers is not told to start; the second review)
            raise PreflightError(f"{name}: {e}; {start}fix the URI{advice}") from None
        return
    db = sqlite_path(uri)
    if db is not None:
        if str(db) in ("", "/", ".") or str(db).endswith(":memory:"):
            raise PreflightError(f"{name}: expected sqlite:///relative.db or sqlite:////absolute.db")
        problem = sqlite_options_problem(uri)  # SQLAlchemy's options (?timeout=30), or a '?' in a folder's name
        if problem:
            raise PreflightError(f"{name}: {problem}")
        # a file on the way (x.h5, or x.h5/sub): it said "the folder x.h5 does not exist" (walkthroughs)
        if file := next((p for p in (db.parent, *db.parent.parents) if p.resolve().is_file()), None):
            raise PreflightError(f"{name}: {file} is a file, not a folder; expected the database's path in a "
                                 "folder, e.g. sqlite:///mlflow.db")  # fmt: skip
        if not db.parent.resolve().is_dir():
            raise PreflightError(f"{name}: the folder {db.parent} does not exist; MLflow would not "
                                 "find an existing database there. Create the folder or fix the path")  # fmt: skip
        # read once (a store another process holds locked waits out its timeout): an empty file or one without
        # MLflow's tables yet MLflow makes a store of; a locked or unreadable one MLflow names itself
        what = mlflow_db_problem(db) if db.exists() and not db.is_dir() else None
        if db.is_dir() or what == "not an SQLite database":
            raise PreflightError(f"{name}: {db} is not an SQLite database; expected an MLflow "
                                 "sqlite store, or a path where a new one can be made")  # fmt: skip
        if what and what.startswith(CUT_SHORT):  # MLflow failed on it after Ray had started, in a traceback
            raise PreflightError(f"{name}: {db} is {what}, or give another store")
        # a search writes there (MLflow failed on its first run, after Ray had started, with a long traceback);
        # SQLite also writes its journal beside the file
        if db.exists() and not os.access(db, os.W_OK):
            raise PreflightError(f"{name}: {db} cannot be written (read-only); a search logs its runs "
                                 "there: make it writable, or give another store")  # fmt: skip
        if not os.access(db.parent.resolve(), os.W_OK):
            raise PreflightError(f"{name}: the folder {db.parent.resolve()} cannot be written; SQLite "
                                 "writes the database and its journal there: give a writable folder")  # fmt: skip
        if db.exists() and _sqlite_write_locked(db, timeout_s):
            raise PreflightError(f"{name}: {db} is locked by another process for over {timeout_s:.0f} s (an open "
                                 "write transaction: a sqlite3 shell, a stuck program); end it, or give another "
                                 "store")  # fmt: skip
        return
    if uri.split(":", 1)[0].lower() == "databricks":
        raise PreflightError(f"{name}: Databricks-hosted MLflow is not supported; use {EXPECTED_URIS}")
    if uri.startswith("file:") or "://" not in uri:
        # a server's address mistyped (`http:/host:port`, `host:port`) was told "file stores" (a walkthrough)
        meant = meant_server_uri(uri)
        if meant:
            raise PreflightError(f"{name}: not a URI MLflow takes; did you mean {without_password(meant)}? "
                                 f"(expected {EXPECTED_URIS})")  # fmt: skip
        if uri.split(":", 1)[0].split("+", 1)[0].lower() in (*DB_SCHEMES, "postgres"):  # `postgresql:5432` was
            raise PreflightError(f"{name}: not a URI MLflow takes; expected a database URI such as "  # "file stores"
                                 "postgresql://USER@HOST:PORT/DATABASE")  # fmt: skip
        raise PreflightError(f"{name}: MLflow 3.17 refuses file stores; use {EXPECTED_URIS}")
    if scheme in _plugin_schemes():
        return  # a tracking store an installed MLflow plugin serves: MLflow checks it
    raise PreflightError(f"{name}: unknown scheme '{uri.split('://', 1)[0]}'{scheme_hint(uri)}; expected "
                         f"{EXPECTED_URIS}")  # fmt: skip


def scheme_hint(uri: str) -> str:
    """" (did you mean postgresql://...?)" for a URI in the old `postgres://` spelling (Heroku's, and psql's own, which
    SQLAlchemy and so MLflow no longer take: told only "unknown scheme", a walkthrough); else ""."""
    scheme, rest = uri.split("://", 1) if "://" in uri else (uri, "")
    if scheme.lower().split("+", 1)[0] == "postgres":  # (postgres+psycopg2:// too)
        return f" (did you mean {without_password('postgresql' + scheme[len('postgres'):] + '://' + rest)}?)"
    return ""


def _plugin_schemes() -> set[str]:
    """URI schemes of tracking stores that installed MLflow plugins register (entry points, read without
    importing MLflow)."""
    from importlib.metadata import entry_points

    return {e.name.lower() for e in entry_points(group="mlflow.tracking_store")}


def _sqlite_write_locked(path: Path, timeout_s: float) -> bool:
    """Another process holds a write lock on the database for longer than `timeout_s` (MLflow waited 30 s, then
    failed with two tracebacks of 422 lines). Searches writing the same store lock it for milliseconds at a time."""
    import sqlite3

    try:
        con = sqlite3.connect(str(path), timeout=timeout_s)
    except sqlite3.Error:
        return False  # said by MLflow, which names the reason
    try:
        con.execute("BEGIN IMMEDIATE")
        con.rollback()
        return False
    except sqlite3.OperationalError as e:
        return "locked" in str(e)
    except sqlite3.Error:
        return False
    finally:
        con.close()


def tcp_problem(host: str, port: int, timeout_s: float) -> str | None:
    """Why nothing accepts a TCP connection at host:port within `timeout_s`, or None when something does."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__


# an HTTP/2 client's connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5)
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def grpc_problem(host: str, port: int, timeout_s: float) -> str | None:
    """Why what answers at host:port is not a gRPC server (a Ray head's GCS, Ray Client), or None when it is:
    a gRPC server answers an HTTP/2 connection preface with a SETTINGS frame; an HTTP server, Redis or a listening
    socket with nothing behind it does not. Plain-text only (with Ray's TLS on, RAY_USE_TLS, it is not asked)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            conn.sendall(_H2_PREFACE)
            got = b""
            while len(got) < 9:
                chunk = conn.recv(9 - len(got))
                if not chunk:
                    break
                got += chunk
    except socket.timeout:
        return f"it accepted a connection but sent nothing back within {timeout_s:g} s"
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__
    if len(got) == 9 and got[3] == 4:  # the server's SETTINGS frame
        return None
    if not got:
        return "it closed the connection without a word"
    text = got.decode("ascii", "replace")
    if text.startswith(("HTTP/", "<")):
        return "it answers as a web server does (HTTP/1), not as gRPC"
    shown = "".join(c if c.isprintable() else "." for c in text)
    return f"it answered {shown!r}..., not HTTP/2 as gRPC does"


def check_database(uri: str, scheme: str, timeout_s: float, advice: str = ", or search with --no-mlflow",
                    flag: str = "--tracking-uri") -> None:
    """A database server behind a postgresql://, mysql:// or mssql:// URI accepts a connection (the password
    is never printed); `advice` ends the sentence of a server that does not answer, `flag` starts it."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        url = sqlalchemy.engine.make_url(uri)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's ArgumentError, or a bad port
        raise PreflightError(f"{flag}: not a database URL ({e}); expected e.g. "
                             "postgresql://user:password@host:5432/mlflow") from None  # fmt: skip
    shown = without_password(uri)  # as given (SQLAlchemy's rendering wrote ?host=/a/b as ?host=%2Fa%2Fb)
    host, port = url.host, (_pg_port(url) if scheme == "postgresql" else url.port or DB_PORTS[scheme])
    # only a TCP server is probed first: not a unix socket (?host=/folder, ?unix_socket=..., mysql's localhost),
    # not an ODBC data source name (mssql); the connection below, bounded by connect_timeout, says the rest
    tcp = bool(host) and port is not None and not {"host", "unix_socket"} & set(url.query) and scheme != "mssql" \
        and not (scheme == "mysql" and host == "localhost")  # fmt: skip
    why = tcp_problem(host, port, timeout_s) if tcp else None
    if why is None and scheme == "postgresql" and (sock := _pg_socket(url)) is not None and _absent(sock):
        # PostgreSQL over a unix socket none listens on: said by the driver as "the database refused the connection"
        # (a folder that does not exist too: a walkthrough)
        host, port = sock.parent, ""
        why = f"no socket {sock.name} there" if sock.parent.is_dir() else "no such folder"
    if why is not None:
        at = f"{host}:{port}" if port else f"the socket folder {host}"
        raise PreflightError(f"{flag} {shown}: no database answers at {at} ({why}); start it"
                             f"{', fix the URI' if advice else ' or fix the URI'}{advice}")  # fmt: skip
    args = {"connect_timeout": max(1, int(timeout_s))} if scheme in ("postgresql", "mysql") else {}
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=args)
        with engine.connect() as conn:
            team = _team_server_of(conn)
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as e:
        raise PreflightError(f"{flag} {shown}: the database driver is not installed ({e})") from None
    except Exception as e:  # noqa: BLE001 - the driver's own error: wrong password, no such database, ...
        first = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise PreflightError(f"{flag} {shown}: the database refused the connection: {first}") from None
    if team is not None:  # a team server's database: its artifacts are the server's, which only its HTTP clients
        # reach; a search through the URI failed after Ray had started (34 s here), or, in a new experiment, kept its
        # artifacts in ./mlruns, out of the server's reach and backup (a walkthrough). (Not any store an MLflow
        # server touched: `mlflow ui` gives a store's Default experiment served artifacts too, the review)
        raise PreflightError(f"{flag} {without_password(uri)}: the database of hsc-search's team server ({team} as it "
                             "was started), which keeps the artifacts that only its own clients reach: give "
                             f"{flag.removeprefix('$')} the server's http://HOST:PORT (`hsc-search team-server` "
                             "prints it)")  # fmt: skip


def _pg_socket(url) -> Path | None:
    """The unix socket file a postgresql:// URL connects to (?host=/folder, or a host that is a folder), else None."""
    folder = url.query.get("host") or url.host or ""
    if not isinstance(folder, str) or not folder.startswith("/") or "," in folder:
        return None  # TCP, or several hosts (libpq tries each): the connection says
    port = _pg_port(url)
    return Path(folder) / f".s.PGSQL.{port}" if port is not None else None


def _pg_port(url) -> int | None:
    """The port libpq connects to: the URI's ?port=, its :port, $PGPORT, else 5432 (None: one it cannot read, or
    several: the driver says). The pre-flight took 5432 where PGPORT or ?port= named another (a review)."""
    port = url.query.get("port") or url.port or os.environ.get("PGPORT") or DB_PORTS["postgresql"]
    return int(port) if str(port).isdigit() else None


def _absent(path: Path) -> bool:
    """`path` is not there (False where it cannot tell: a folder one may not enter, a name too long; said by the
    driver, which connects there, not as a traceback: the review)."""
    try:
        return not path.exists()
    except OSError:
        return False


def _team_server_of(conn) -> str | None:
    """The address of the team server whose database `conn` is (the tag `hsc-search team-server` puts on its
    Default experiment, `runs.TAG_TEAM_SERVER`), else None (also where MLflow's tables are not there yet)."""
    import sqlalchemy

    from .runs import TAG_TEAM_SERVER

    key, value = sqlalchemy.column("key"), sqlalchemy.column("value")
    query = sqlalchemy.select(value).select_from(sqlalchemy.table("experiment_tags")).where(
        key == TAG_TEAM_SERVER).limit(1)  # fmt: skip
    try:
        row = conn.execute(query).first()
    except Exception:  # noqa: BLE001 - no such table (a new store), or one of another schema: MLflow's to say
        return None
    return str(row[0]) if row else None


# ---------------------------------------------------------------------------------------------- storage
def writer_in_process() -> bool:
    """Where the MLflow writer runs (`writer.writer_in_process`); a bad HSC_MLFLOW_WRITER fails here."""
    from .runs import flush_seconds, retry_attempts
    from .writer import writer_in_process

    try:
        retry_attempts()
        flush_seconds()
        return writer_in_process()
    except ValueError as e:
        raise PreflightError(str(e)) from None


def check_storage(exp_dir: str) -> None:
    """The experiment folder can be created and written (a probe file, removed again)."""
    probe = storage.join(exp_dir, ".hsc_preflight")
    created = Path(exp_dir)  # the topmost folder the probe creates: removed again afterwards
    while not storage.is_uri(exp_dir) and not created.parent.exists() and created.parent != created:
        created = created.parent
    try:
        storage.write_text(probe, "ok")
        storage.delete_file(probe)
    except storage.StorageError as e:
        raise PreflightError(f"--storage: {e}") from None
    except OSError as e:
        raise PreflightError(f"--storage: cannot write the search folder {exp_dir} ({e.strerror or e}); expected a "
                             "folder this user can create, or a URI pyarrow can write (s3://...)") from None  # fmt: skip
    if not storage.is_uri(exp_dir):  # folders appear only once the search starts
        folder = Path(exp_dir)
        while True:
            try:
                folder.rmdir()  # empty folders only
            except OSError:
                break
            if folder == created:
                break
            folder = folder.parent


# ---------------------------------------------------------------------------------------------- Ray
RAY_TIMEOUT_S = 5.0


def check_address(address: str | None, timeout_s: float = RAY_TIMEOUT_S, flag: str = "--address",
                  token_by_ray: bool = False) -> None:  # fmt: skip
    """A Ray cluster address (`flag`, else RAY_ADDRESS) has the form Ray takes and something answers at it
    within `timeout_s`: Ray itself would retry an absent head for minutes. `auto` is resolved as Ray resolves it
    (the cluster started on this machine), and refused where that is not one cluster. The search still joins
    `auto` as `auto`: Ray turns token authentication on by itself only for that (ray.init), which a `cluster.yaml`
    head needs."""
    if address is None:
        address, flag = os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS"
    if not address or address == "local":
        return
    if address == "auto":  # the cluster Ray would join, checked as if given
        from .ray_internals import AmbiguousAuto, auto_address

        try:
            found = auto_address()
        except ConnectionError:
            way_out = "unset RAY_ADDRESS" if flag == "RAY_ADDRESS" else "leave --address out"
            raise PreflightError(f"{flag} auto: no Ray cluster runs on this machine (`ray start --head` starts one); "
                                 f"{way_out} to search on a local Ray instance of the search's own") from None  # fmt: skip
        except AmbiguousAuto as e:
            said = str(e) if flag != "RAY_ADDRESS" else str(e).replace("leave --address out", "unset RAY_ADDRESS")
            raise PreflightError(f"{flag} auto: {said}") from None
        except Exception:  # noqa: BLE001 - Ray's own connection says what is wrong
            return
        if found and found != "auto":
            try:
                check_address(found, timeout_s, flag=flag, token_by_ray=True)
            except PreflightError as e:  # named as given, with what Ray found for it
                raise PreflightError(str(e).replace(f"{flag} {found}:", f"{flag} auto (Ray found {found} on this "
                                                    "machine: the address file of the last `ray start`, or another "
                                                    "Ray running here):", 1)) from None  # fmt: skip
        return
    from .settings import address_form_problem

    why = address_form_problem(address)  # (a search's --address said it already; RAY_ADDRESS and a resume's not)
    if why:
        raise PreflightError(f"{flag} {address}: {why}")
    host, _, port = address.rpartition(":")
    from .ray_internals import address_ray_dials

    # (for resume, leaving --address out reuses the search's recorded address: `local` is the way out)
    local = ("unset it to search on a local Ray instance" if flag == "RAY_ADDRESS" else
             "give --address local to search on a local Ray instance")  # fmt: skip
    given = host.strip("[]")
    dial = address_ray_dials(given)  # Ray joins 127.0.0.1 / localhost by this machine's own address
    why = tcp_problem(dial, int(port), timeout_s)
    plain = os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true")  # Ray's own test (grpc_utils)
    if why is not None and dial != given and tcp_problem(given, int(port), timeout_s) is None:
        # something listens at the loopback address only: Ray would retry the machine's address for minutes (a
        # walkthrough: `auto` found another search's local instance, bound to 127.0.0.1, and hung there)
        not_ray = grpc_problem(given, int(port), timeout_s) if plain else None
        if not_ray is None:
            what = "the Ray instance" if plain else "what answers"  # (with TLS on, gRPC is not asked)
            raise PreflightError(f"{flag} {address}: {what} at {host}:{port} listens on {given} only (as a search's "
                                 "own local instance does), and Ray joins a head on this machine by the machine's "
                                 f"address, {dial}:{port}, where nothing answers ({why}); start the cluster's head "
                                 f"with `ray start --head`, or {local}")  # fmt: skip
        why, dial = None, given  # not Ray at all: said as such below
    if why is not None:
        raise PreflightError(f"{flag} {address}: no Ray head answers at {host}:{port} ({why}); start one with "
                             f"`ray start --head`, fix the address, or {local}")  # fmt: skip
    if plain:
        why = grpc_problem(dial, int(port), timeout_s)
        if why is not None:
            raise PreflightError(f"{flag} {address}: something answers at {host}:{port}, but not a Ray head ({why}); "
                                 "the address is the one `ray start --head` prints, port 6379 unless changed (8265 is "
                                 "the dashboard)")  # fmt: skip
    _check_a_node_runs_here(address, timeout_s, flag, token_by_ray)


def _check_a_node_runs_here(address: str, timeout_s: float, flag: str, token_by_ray: bool = False) -> None:
    """A driver given host:port joins the cluster through a node (raylet) of it on its own machine; from any other
    machine (a laptop, with the head's port reachable) Ray waits 60 s and then says only "Failed to connect".
    Whatever stops the question being asked (token authentication, TLS, another Ray) is left to Ray to name."""
    from .ray_internals import nodes_running_here

    deadline = time.monotonic() + min(timeout_s, 5.0)  # a node just started here may take a moment to register
    while True:
        try:
            nodes, here = nodes_running_here(address, timeout_s)
        except Exception as e:  # noqa: BLE001 - Ray's own connection says what is wrong
            # (`auto`, `token_by_ray`: ray.init turns token authentication on by itself when a token is found, so
            # a refusal of this check's connection says nothing of the search's: left to Ray)
            if not token_by_ray and (type(e).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(e)):
                # a head with token authentication (Ray 2.60's default for `ray start --head`, and cluster.yaml's):
                # ray.init said so after 28 s and ~20 lines of Ray's warnings (a walkthrough); here in 2 s
                token = "the cluster's token in ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH, RAY_AUTH_TOKEN)"
                raise PreflightError(f"{flag} {address}: " + (
                    "the Ray cluster there runs with token authentication and RAY_AUTH_MODE is not 'token' here; "
                    f"set RAY_AUTH_MODE=token, with {token}" if os.environ.get("RAY_AUTH_MODE", "").lower() != "token"
                    else f"the Ray cluster there refused this driver's authentication token; give it {token}"
                )) from None  # fmt: skip
            return
        if here:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    at = f"its node(s): {', '.join(nodes)}" if nodes else "it has no node alive"
    # a node joins a cluster with token authentication only with RAY_AUTH_MODE=token (without it, `ray start`
    # retried for ever, printing InvalidAuthToken every second: a walkthrough); this driver reached it with it
    token = "RAY_AUTH_MODE=token " if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else ""
    raise PreflightError(f"{flag} {address}: this machine runs no node of the Ray cluster there ({at}), and a Ray "
                         "driver joins a cluster through a node on its own machine; run the search on the head with "
                         "`--address auto` (`ray exec`, as in the README's \"On a cluster\"), or make this machine a "
                         f"node of it first (`{token}ray start --address {address}`)")  # fmt: skip


# ---------------------------------------------------------------------------------------------- resources
def local_resources() -> dict[str, float]:
    """What a local Ray instance started here will have: the CPUs this process may use, the CUDA devices torch
    sees."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count() if torch.cuda.is_available() else 0)}


# what Ray adds below its temporary folder for its longest socket, the driver's pid aside:
# /session_<date>_<time>_<usec>_<pid>/sockets/plasma_store
RAY_SOCKET_SUFFIX = len("/session_2026-12-05_11-05-17_710537_") + len("/sockets/plasma_store")
# the AF_UNIX limit, as Ray checks it (with the terminating zero: 108 bytes on Linux, 104 on macOS)
MAX_SOCKET_PATH = (104 if sys.platform == "darwin" else 108) - 1


def check_cache_dir() -> None:
    """$HSC_CACHE_DIR, when set, is a folder (or not there yet): the synthetic data's cache, the record of local Ray
    instances and MLflow's store template go there; a file there made them anew in temporary folders (or skipped
    the record) for every search, said at best in a line among Ray's (a walkthrough)."""
    from trainer.data import cache_dir_problem

    problem = cache_dir_problem("hsc-search keeps its caches there: the synthetic data, the record of local Ray "
                                "instances", "~/.cache/hsc-search")  # fmt: skip
    if problem:
        raise PreflightError(problem)


def check_ray_temp_dir() -> None:
    """The local Ray instance's socket paths fit in a unix socket's 107 bytes: a temporary folder of more than about
    40 bytes (a batch scheduler's per-job TMPDIR) ended every search in a 130-line traceback (a walkthrough)."""
    from .ray_internals import default_temp_dir

    temp = default_temp_dir()
    suffix = RAY_SOCKET_SUFFIX + len(str(os.getpid()))  # the session is named after the process that starts Ray
    if len(temp.encode()) + suffix > MAX_SOCKET_PATH:
        which = next((v for v in ("RAY_TMPDIR", "TMPDIR") if os.environ.get(v)), None)
        given = f" (from {which}={os.environ[which]})" if which else ""
        raise PreflightError(f"Ray's temporary folder {temp}{given} is too long for its socket paths "
                             f"({len(temp.encode())} + {suffix} bytes, unix sockets take at most "
                             f"{MAX_SOCKET_PATH}): set RAY_TMPDIR to a short folder, e.g. RAY_TMPDIR=/tmp")  # fmt: skip


def check_ray_token_home() -> None:
    """Ray 2.60 turns token authentication on for a local instance and keeps its token in ~/.ray/auth_token,
    made at the first start: with a HOME that cannot be written (a container run with --user, a read-only home on
    a compute node) every search ended in a 127-line traceback from Ray (a walkthrough)."""
    from pathlib import Path

    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" or os.environ.get("RAY_AUTH_TOKEN") or \
            os.environ.get("RAY_AUTH_TOKEN_PATH"):  # fmt: skip
        return
    folder = Path.home() / ".ray"
    if (folder / "auth_token").is_file():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        problem = why_unwritable(folder)
    except OSError as e:
        problem = e.strerror or str(e)
    if problem:
        raise PreflightError(f"{folder}: cannot be written ({problem}), where Ray keeps the local instance's "
                             "authentication token (auth_token, made at its first start): set HOME to a folder that "
                             "can be written, or RAY_AUTH_MODE=disabled for this local search")  # fmt: skip


def check_local_resources(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """A trial fits on this machine (the embedded local Ray instance)."""
    have = local_resources()
    _check_fits(cpus_per_trial, gpus_per_trial, [("this machine", have)], launchable=[], cluster=False)


def check_cluster_resources(cpus_per_trial: float, gpus_per_trial: float) -> list[str]:
    """A trial fits on some node of the connected Ray cluster, or on a node type its launcher can add.

    Returns the node types that would have to be launched (empty when a node that fits is up already).
    """
    import ray

    nodes = [(f"node {n['NodeManagerAddress']}", n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
    launchable = _launchable_node_types()
    return _check_fits(cpus_per_trial, gpus_per_trial, nodes, launchable)


def _fits(res: dict[str, Any], cpus: float, gpus: float) -> bool:
    return float(res.get("CPU", 0)) >= cpus and float(res.get("GPU", 0)) >= gpus


def _check_fits(cpus: float, gpus: float, nodes: list[tuple[str, dict]], launchable: list[tuple[str, dict]],
                cluster: bool = True) -> list[str]:  # fmt: skip
    if any(_fits(res, cpus, gpus) for _, res in nodes):
        return []
    can_add = [name for name, res in launchable if _fits(res, cpus, gpus)]
    if can_add:
        return can_add
    asked = f"{cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus else "") + " per trial"
    present = "; ".join(f"{name}: {float(res.get('CPU', 0)):g} CPU, {float(res.get('GPU', 0)):g} GPU"
                        for name, res in nodes) or "no node"  # fmt: skip
    if launchable:
        extra = "; the launcher can add " + ", ".join(
            f"{name} ({float(res.get('CPU', 0)):g} CPU, {float(res.get('GPU', 0)):g} GPU)" for name, res in launchable)
    else:
        extra = ("; an autoscaling cluster lists what it can add under available_node_types in its cluster YAML"
                 if cluster else "")  # fmt: skip
    raise PreflightError(f"--cpus-per-trial/--gpus-per-trial: no trial can ever start: asked for {asked}, but "
                         f"{present}{extra}. Lower the request or add a node that has it.")  # fmt: skip


def launcher_capacity(cpus_per_trial: float, gpus_per_trial: float) -> int | None:
    """Trials that fit at once in a launcher-started cluster at its largest: the head once, and each worker type
    up to its `max_workers`, all workers together up to the cluster's `max_workers` (the types holding the most
    trials first), from the bootstrap config `ray up` leaves on the head; None when this is not such a head.
    A search with --max-concurrent 0 started while only the head (CPU 0) was up ran one trial at a time, and so
    never asked the autoscaler for a second worker."""
    cfg = _bootstrap_config()
    types = cfg.get("available_node_types") or {}
    if not isinstance(types, dict) or not types:
        return None

    def per_node(spec: Any) -> int:
        res = (spec or {}).get("resources") or {}
        fits = [int(float(res.get("CPU", 0)) // cpus_per_trial)] if cpus_per_trial > 0 else []
        if gpus_per_trial > 0:
            fits.append(int(float(res.get("GPU", 0)) // gpus_per_trial))
        return max(0, min(fits)) if fits else 0

    head = cfg.get("head_node_type")
    total = per_node(types.get(head)) if head in types else 0
    budget = int(cfg.get("max_workers", sum(int((s or {}).get("max_workers", 0)) for s in types.values())))
    workers = sorted(((per_node(s), int((s or {}).get("max_workers", 0 if n == head else budget)))
                      for n, s in types.items()), reverse=True)  # fmt: skip
    for slots, most in workers:
        n = max(0, min(most, budget))
        total, budget = total + n * slots, budget - n
    return total


def _bootstrap_config() -> dict:
    """The cluster launcher's config on the head node of a cluster `ray up` started, else {}."""
    import yaml

    try:
        cfg = yaml.safe_load((Path.home() / "ray_bootstrap_config.yaml").read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _launchable_node_types() -> list[tuple[str, dict]]:
    """Node types the cluster launcher may add, from the bootstrap config `ray up` leaves on the head node
    (`~/ray_bootstrap_config.yaml`); empty when this is not the head of a launcher-started cluster."""
    cfg = _bootstrap_config()
    out = []
    for name, spec in (cfg.get("available_node_types") or {}).items():
        if (spec or {}).get("max_workers", 1) > 0:
            out.append((f"node type {name}", (spec or {}).get("resources") or {}))
    return out
