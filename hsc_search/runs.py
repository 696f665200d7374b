"""The MLflow layout of a search (tag names) and the lookups on it. No Ray here: `export-best` stays quick."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

TAG_TRIAL = "hsc.trial_id"
TAG_OUTCOME = "hsc.outcome"  # completed | stopped_early | failed | interrupted
OUTCOME_LABELS = {"completed": "completed", "stopped_early": "stopped by ASHA", "failed": "failed"}  # as people read
# them (the console, export-best, the report); the tag keeps its one-word values, what MLflow's search filters take

TAG_NODE = "hsc.node"
TAG_ERROR = "hsc.error"
TAG_NUMBER = "hsc.trial_number"  # Ray's count of a trial, from 1: the order the searcher proposed them in
TAG_STOPPED_BY = "hsc.stopped_by"  # on a trial ASHA stopped: the rung, its value there, the cut-off it missed
TAG_KIND = "hsc.kind"  # search | trial
TAG_PARENT = "mlflow.parentRunId"
TAG_SET_FROM = "hsc.set_from"  # on a search's parent run: where its set.* values were given ("--set", "<config>: set")
TAG_NOTES = "hsc.notes"  # on a search's parent run: what its start said besides its headline (a JSON list of lines)
TAG_DATA_FINGERPRINT = "hsc.data_fingerprint"  # on a search's parent run: its data's fingerprint (JSON; a warm start
# from the run compares data by it, not by path)
TAG_NO_SCORE = "hsc.no_score"  # on a search's parent run that ended with no scored trial (FAILED in MLflow): how
TAG_TEAM_SERVER = "hsc.team_server"  # on the Default experiment of a team server's database: the server's address
TAG_RAY_AUTH = "hsc.ray_auth_mode"  # on a search's parent run: the RAY_AUTH_MODE it was run or resumed with, for
# the resume commands other machines print (export-best on a laptop, of a search on a bucket: a review)
TAG_REPORT_LOGGED = "hsc.report.logged"  # when report.html was last logged to a parent run (UTC, ISO 8601)
CONFIG_ARTIFACT = "config.yaml"
CCA_SPECTRUM_ARTIFACT = "cca_spectrum.csv"  # a trial's every canonical correlation, one row per epoch
REPORT_ARTIFACT = "report.html"  # the search report, on the parent run
PLOT_KEYS = ("weight/", "logvar/", "cca/rho_")
# Result keys the trainable adds to the trainer's metrics (strings, never logged as metrics):
NODE_KEY = "hsc/node_id"  # the Ray node an epoch ran on
FAILED_KEY = "hsc/failed"  # "<ErrorType>: message" of a trial that failed in a way a retry cannot fix
EFFECTIVE_KEY = "hsc/effective_json"  # first report: {field: value} the trainer resolved differently from the config
EFFECTIVE_PARAM = "effective."  # prefix of a trial run's params that hold those values (`effective.batch_size`)


def shown(value: Any) -> str:
    """A param's value as people read it in a summary or report: a non-integer number to 4 significant digits
    (lr 0.0077035818606941 -> 0.007704, reduction_factor 2.0 -> 2); anything else as it is. The exact values are
    in the run's params and config.yaml."""
    text = str(value)
    if any(c in text for c in ".eE") and not text.lower().lstrip("+-").startswith(("inf", "nan")):
        try:
            x = float(text)
        except ValueError:
            return text
        if abs(x) < 1e15 and x.is_integer():
            return str(int(x))
        short = f"{x:.4g}"
        if abs(x) < 1e15 and float(short).is_integer():  # never rounded onto a whole number it is not
            return f"{x:.10g}"  # (an ema_momentum of 0.99995 is not a frozen teacher's 1)
        return short
    return text


def plural(count: int, noun: str) -> str:
    """'1 epoch', '2 epochs', '2 searches' (the one noun of ours that takes -es: 'epoch' does not)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}{'es' if noun.endswith('search') else 's'}"


def params_line(params: dict[str, str]) -> tuple[str, str]:
    """A trial's params for one line: ("lr=0.007704, tau=0.3", what the trainer resolved: "batch_size=64, ...")."""
    own, resolved = split_params(params)
    return tuple(", ".join(f"{k}={shown(v)}" for k, v in d.items()) for d in (own, resolved))  # type: ignore[return-value]


def split_params(params: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """A trial run's params as (searched and fixed values, as the config had them; values the trainer resolved
    from the data, their names without the `effective.` prefix), each sorted by name."""
    own = {k: params[k] for k in sorted(params) if not k.startswith(EFFECTIVE_PARAM)}
    resolved = {k[len(EFFECTIVE_PARAM):]: params[k] for k in sorted(params) if k.startswith(EFFECTIVE_PARAM)}
    return own, resolved
EPOCHS_KEY = "hsc/epochs_json"  # every epoch's metrics since the trial's previous report (JSON list of dicts)


def epochs_of(result: dict) -> list[dict[str, float]]:
    """The per-epoch metric dicts a Tune result carries, oldest first: the batch under `EPOCHS_KEY` (a trial
    reports only at milestones and checkpoints), or the result itself when it has no batch."""
    raw = result.get(EPOCHS_KEY)
    if raw is None:
        return [result] if "epoch" in result else []
    return json.loads(raw)


# trainer.fit.TEST_EPOCH (the writer, which may run as a process of its own, imports nothing that imports torch)
TEST_EPOCH = "test/epoch"
# the seconds a trial's trainable ran (Ray's time_total_s, over restores), logged with its end; its run's duration
# also counts the time its search was stopped before a resume
TRIAL_SECONDS = "time/total_s"


def score_key(metric: str, mode: str) -> str:
    """The metric a trial's run carries its score under: the best value of `metric` over its epochs."""
    return f"best/{mode}/{metric}"


def best_of(values, mode: str) -> float | None:
    """The best finite value (max or min by mode), or None: the one definition of a trial's score."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    return max(finite) if mode == "max" else min(finite)


def trial_outcome(status: str, last_result: dict | None, max_epochs: int) -> str:
    """What became of a trial, from Ray's status and its last result: completed | stopped_early | failed |
    unfinished. The one definition used by the progress lines, MLflow tags, the trials table and Optuna.

    A trial that reported `FAILED_KEY` ended without an error on Ray's side (so that Ray does not retry a
    deterministic failure) but failed; one that ended before `max_epochs` was stopped early (ASHA).
    """
    last = last_result or {}
    if status == "ERROR" or FAILED_KEY in last:
        return "failed"
    if int(last.get("epoch", 0)) >= max_epochs:  # its last epoch reported (with its test metrics): completed, also
        return "completed"  # where a Ctrl-C came before Ray marked it so (an interrupted search called it KILLED)
    return "stopped_early" if status == "TERMINATED" else "unfinished"
CCA_TOP_METRICS = 3  # cca/rho_00 .. cca/rho_02 go to MLflow as metrics (and cca/mean); the rest to the artifact

# What MLflow 3.17's UI reads from an experiment (checked in its JS bundle): `mlflow.experimentKind` is the
# experiment's kind (model training, not GenAI); the primary metric gets a chart in the experiment's chart view.
# The 3.17 UI picks GenAI or model-training *pages* from its own switch (top left, remembered by the browser,
# default GenAI) or the URL's `workflowType`, so the links we print carry `?workflowType=machine_learning`.
EXPERIMENT_KIND = "mlflow.experimentKind"
PRIMARY_METRIC = "mlflow.experiment.primaryMetric.name"
PRIMARY_METRIC_GREATER = "mlflow.experiment.primaryMetric.greaterIsBetter"
UI_QUERY = "?workflowType=machine_learning"


class StoreError(ValueError):
    """A tracking store cannot be read: the message names it and what was expected."""


def http_request(url: str):
    """A urllib request for `url`, its user:password@ (HTTP basic auth, which MLflow's client takes in a tracking URI)
    sent as an Authorization header: urllib read 'user:pw@127.0.0.1' as the host name, and every command refused a
    server that MLflow itself reaches ("Name or service not known", a walkthrough)."""
    import base64
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.request.Request(bare, headers={"Authorization": f"Basic {token}"})


# what a port that is not a web server's answers (http.client's BadStatusLine, RemoteDisconnected: bytes of a Ray
# GCS, PostgreSQL or SSH, or nothing); said, not its bytes (they were written to the terminal)
NOT_HTTP = "answered something that is not HTTP: is the port MLflow's, not a Ray, PostgreSQL or SSH port?"


def not_http(e: BaseException) -> bool:
    """Whether `e` is http.client's word for an answer that is not HTTP (BadStatusLine, ...), not a connection
    error (RemoteDisconnected is both: a server that hung up, said as not reached)."""
    import http.client

    return isinstance(e, http.client.HTTPException) and not isinstance(e, OSError)


def tls_to_plain_http(uri: str, error: BaseException) -> bool:
    """An https:// request that a plain HTTP server answered: OpenSSL says WRONG_VERSION_NUMBER before 3.2 and
    "record layer failure" from 3.2 on (urllib3 #3271)."""
    return uri.startswith("https://") and any(s in str(error) for s in ("WRONG_VERSION_NUMBER",
                                                                        "record layer failure"))  # fmt: skip


def not_a_page(uri: str) -> None:
    """A server's address, not the address of a page of its UI: the `MLflow UI:` line a search prints ends in
    `#/experiments/1?...`, and pasted as --tracking-uri it was refused as a server that is not MLflow's (its /health
    went after the fragment; a walkthrough). Raises StoreError with the address meant."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    if parts.fragment or "#" in uri:
        raise StoreError(f"the address of a page of the MLflow UI, not of its server (which is "
                         f"{without_password(base)})")  # fmt: skip
    if parts.query:  # MLflow adds its API's paths after the address: a query there is lost, or breaks them
        raise StoreError(f"a tracking server's address takes no query ('?{parts.query}'): MLflow adds its API's "
                         f"paths after it; give {without_password(base)}")  # fmt: skip


def check_server(uri: str, timeout_s: float = 10.0) -> None:
    """An MLflow tracking server answers its health check at `uri` within `timeout_s` (MLflow itself would retry
    an absent server for minutes)."""
    import http.client
    import urllib.error
    import urllib.request

    not_a_page(uri)
    url = uri.rstrip("/") + "/health"
    shown, shown_url = without_password(uri), without_password(url)  # the password is never printed
    try:
        with urllib.request.urlopen(http_request(url), timeout=timeout_s) as resp:
            body = resp.read(64).decode(errors="replace").strip()
    except urllib.error.HTTPError as e:
        raise StoreError(f"{shown_url} answered {e.code} {e.reason}; expected an MLflow tracking server") from None
    except (OSError, ValueError, http.client.HTTPException) as e:
        if not_http(e):  # (a traceback: a Ray head's port given for MLflow's, a walkthrough)
            raise StoreError(f"{shown_url} {NOT_HTTP} ({type(e).__name__}); expected an MLflow tracking server") \
                from None
        if tls_to_plain_http(uri, e):
            raise StoreError(f"the server at {shown} answers in plain HTTP: use http:// (MLflow servers speak no TLS "
                             "themselves)") from None  # fmt: skip
        raise StoreError(f"cannot reach the MLflow tracking server at {shown} within {timeout_s:.0f} s "
                         f"({getattr(e, 'reason', e)})") from None  # fmt: skip
    if body != "OK":
        raise StoreError(f"{shown_url} answered {body!r}; expected an MLflow tracking server")
    check_server_api(uri, timeout_s)


def check_server_api(uri: str, timeout_s: float = 10.0) -> None:
    """An MLflow tracking server whose health check answers also answers its API: /health is answered without the
    server's database, and one read of the API tells a server whose store is down or locked (MLflow's own client
    retried it for minutes, and neither Ctrl-C nor SIGTERM ended the wait)."""
    import urllib.error
    import urllib.request

    not_a_page(uri)
    shown = without_password(uri)
    api = uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"

    def mlflows(body: bytes, key: str) -> bool:  # MLflow's JSON: {"experiment": ...}, {"error_code": ...}
        try:
            return key in json.loads(body or b"null")
        except (ValueError, TypeError):
            return False

    not_mlflow = (f"the server at {shown} answers a health check, but not MLflow's API (%s at "
                  f"{without_password(api.split('?')[0])}); expected an MLflow tracking server")  # fmt: skip
    try:
        with urllib.request.urlopen(http_request(api), timeout=timeout_s) as resp:
            body = resp.read(100_000)
        if not mlflows(body, "experiment"):  # another web app with a /health (a walkthrough: a traceback later)
            raise StoreError(not_mlflow % "a page that is not MLflow's answer")
    except StoreError:
        raise
    except urllib.error.HTTPError as e:
        if e.code == 404 and not mlflows(e.read(100_000), "error_code"):  # MLflow says RESOURCE_DOES_NOT_EXIST
            raise StoreError(not_mlflow % "404 Not Found") from None
        # 404 (no such experiment), 401/403 (a server with authentication: the MLflow client's credentials): it works
        if e.code not in (401, 403, 404):  # (a database error comes back as 400 BAD_REQUEST, or a 5xx)
            try:
                said = json.loads(e.read(2000) or b"{}").get("message", "")
            except Exception:  # noqa: BLE001 - a body that is not MLflow's JSON: the status alone
                said = ""
            said = said.splitlines()[0][:160] if isinstance(said, str) and said else ""
            raise StoreError(f"the MLflow tracking server at {shown} answers its health check, but its API answered "
                             f"{e.code} {e.reason}{f' ({said})' if said else ''}: its database may be down, locked or "
                             "unreadable; see the server's log") from None  # fmt: skip
    except Exception as e:  # noqa: BLE001 - timeouts, resets, a broken HTTP answer (http.client's own errors)
        raise StoreError(f"the MLflow tracking server at {shown} answers its health check, but its API did not answer "
                         f"within {timeout_s:.0f} s ({getattr(e, 'reason', e)}; see the server's log)") from None  # fmt: skip


DB_SCHEMES = ("postgresql", "mysql", "mssql")  # MLflow's SQLAlchemy stores besides sqlite


def sqlite_path(uri: str) -> "Path | None":  # noqa: F821 (imported below)
    """The database file of a `sqlite:` URI (`sqlite:///relative.db`, `sqlite:////absolute.db`), else None. Options
    after `?` (`sqlite:///mlflow.db?timeout=30`, which SQLAlchemy and so MLflow take) are not part of the file."""
    from pathlib import Path

    if not uri.startswith("sqlite:"):
        return None
    path = uri.split(":", 1)[1].split("?", 1)[0].lstrip("/")
    return Path("/" + path) if uri.startswith("sqlite:////") else Path(path)


def sqlite_options_problem(uri: str) -> "str | None":
    """Why what follows '?' in a `sqlite:` URI is not options SQLAlchemy takes (`?timeout=30`), or None. SQLAlchemy
    cuts the path at the first '?', so a '?' in a folder's name would have MLflow open (or create) another file."""
    if not uri.startswith("sqlite:") or "?" not in uri:
        return None
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(uri.split("?", 1)[1], strict_parsing=True)
    except ValueError:
        pairs = None
    if pairs is None or any("/" in k or "/" in v for k, v in pairs):
        return (f"SQLAlchemy reads what follows '?' as options, so MLflow would open the file '{sqlite_path(uri)}'; "
                "expected options such as ?timeout=30 there, or a path without '?'")
    return None


def default_tracking_uri(uri: str | None) -> str:
    """The store MLflow opens for `uri`: `uri`, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    import os

    return uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def resolved_tracking_uri(uri: str | None) -> str:
    """The store a search logs to (`default_tracking_uri`), a relative sqlite path made absolute (it is read later
    from other folders)."""
    uri = default_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is None or db.is_absolute():
        return uri
    _, mark, options = uri.partition("?")  # `?timeout=30` and the like stay
    return f"sqlite:///{db.resolve()}{mark}{options}"


def _searched_without_mlflow(results: Path) -> bool:
    """Whether the searches in `results` (a folder's ./ray_results) all ran with --no-mlflow (their
    hsc_search.json says `"mlflow": false`), and there is at least one."""
    flags = []
    try:
        for meta in results.glob("*/hsc_search.json"):
            try:
                flags.append(json.loads(meta.read_text()).get("settings", {}).get("mlflow"))
            except (OSError, ValueError, AttributeError):
                continue
    except OSError:
        return False
    return bool(flags) and all(f is False for f in flags)


def check_store_to_read(tracking_uri: str | None, timeout_s: float = 10.0) -> None:
    """The store holds searches to read: a server answers, or the sqlite file exists (reading one that does not
    would create an empty database and then report 'no experiment'). Raises StoreError naming it."""
    import os

    uri = default_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        try:
            check_server(uri, timeout_s)
        except StoreError as e:  # what to do, as `run` says it (it named no flag here; a walkthrough)
            given = "--tracking-uri" if tracking_uri else "$MLFLOW_TRACKING_URI"
            start = "start it (hsc-search team-server or mlflow server), or " if str(e).startswith("cannot reach") \
                else ""  # (one that answers is not told to start; the second review)
            raise StoreError(f"{e}; {start}fix {given}") from None
        return
    meant = meant_server_uri(uri)  # a server's address mistyped (it was told "MLflow's file store")
    if meant:
        from .preflight import EXPECTED_URIS

        given = "--tracking-uri" if tracking_uri else "$MLFLOW_TRACKING_URI"
        raise StoreError(f"{given} {without_password(uri)}: not a URI MLflow takes; did you mean "
                         f"{without_password(meant)}? (expected {EXPECTED_URIS})")  # fmt: skip
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme in DB_SCHEMES:  # MLflow retries one that does not answer for minutes
        from .preflight import PreflightError, check_database

        try:  # (named as where it came from: a team server's database in $MLFLOW_TRACKING_URI said --tracking-uri)
            check_database(uri, scheme, timeout_s, advice="",
                           flag="--tracking-uri" if tracking_uri else "$MLFLOW_TRACKING_URI")  # fmt: skip
        except PreflightError as e:
            raise StoreError(str(e)) from None
        return
    if uri.split(":", 1)[0].lower() == "databricks":  # as `run`'s pre-flight says it
        raise StoreError(f"--tracking-uri {uri}: Databricks-hosted MLflow is not supported; expected "
                         "sqlite:///path/to/mlflow.db, a database URI or http://host:port")  # fmt: skip
    db = sqlite_path(uri)
    problem = sqlite_options_problem(uri)
    if problem:
        raise StoreError(f"--tracking-uri {uri}: {problem}")
    if db is not None and not db.is_file():
        where = ("" if tracking_uri else " ($MLFLOW_TRACKING_URI)" if os.environ.get("MLFLOW_TRACKING_URI")
                 else " (MLflow's default store in the working directory)")  # fmt: skip
        if db.is_dir():
            raise StoreError(f"--tracking-uri {uri}: {db} is a folder; expected the MLflow database file, "
                             + store_of_folder(db))  # fmt: skip
        if tracking_uri:  # given: the path is what to check, not where the command runs
            raise StoreError(f"--tracking-uri {uri}: no MLflow database at {db.resolve()}; expected the sqlite file "
                             "a search wrote (check the path: three slashes before a relative one, four before an "
                             "absolute one)")  # fmt: skip
        if _searched_without_mlflow(Path("ray_results")):  # the folder searched from, by searches without MLflow
            raise StoreError(f"no MLflow database at {db.resolve()}{where}: the searches in ./ray_results ran with "
                             "--no-mlflow, which records nothing for this command (their best config is in their "
                             "folder, best_config.yaml); pass --tracking-uri for a search that used MLflow")  # fmt: skip
        raise StoreError(f"no MLflow database at {db.resolve()}{where}: run this in the folder you searched from, "
                         "or pass --tracking-uri")  # fmt: skip
    if db is not None:
        what = mlflow_db_problem(db)
        if what:  # MLflow would make it a new store (an empty file), or fail with a traceback
            raise StoreError(f"--tracking-uri {uri}: {db} is not an MLflow database ({what}); expected the sqlite file a search "
                             "wrote, e.g. sqlite:///mlflow.db")  # fmt: skip
    elif (uri.startswith("file:") or ("://" not in uri and ("/" in uri or Path(uri).exists()))) and os.environ.get(
            "MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):  # MLflow 3.17 refuses them, in a traceback
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        hint = f"; did you mean sqlite:///{path / 'mlflow.db'}?" if (path / "mlflow.db").is_file() else ""
        raise StoreError(f"--tracking-uri {without_password(uri)}: not a tracking URI (a plain path is MLflow's file store, which MLflow 3.17 "
                         f"refuses); expected sqlite:///path/to/mlflow.db or http://host:port{hint}")  # fmt: skip
    elif db is None and not uri.startswith("file:"):  # what `run`'s pre-flight refuses too: MLflow's traceback, or
        # MLflow's words cut short, after the imports (a walkthrough: `htp://`; `127.0.0.1:5000`: meant_server_uri)
        from .preflight import EXPECTED_URIS, _plugin_schemes, scheme_hint

        given = "--tracking-uri" if tracking_uri else "$MLFLOW_TRACKING_URI"
        if "://" not in uri and "/" not in uri and not Path(uri).exists():
            raise StoreError(f"{given} {without_password(uri)}: not a tracking URI; expected {EXPECTED_URIS}")
        if "://" in uri and scheme not in ("sqlite", "file", "http", "https") and scheme not in _plugin_schemes():
            raise StoreError(f"{given} {without_password(uri)}: unknown scheme '{uri.split('://', 1)[0]}'"
                             f"{scheme_hint(uri)}; expected {EXPECTED_URIS}")  # fmt: skip


def without_password(uri: str, shown_as: str = ":***") -> str:
    """The URI with the password of its user:password@ part (if any) as `shown_as` (`""`: left out, `ana@host`,
    for a URI that is used again: libpq then reads the password from ~/.pgpass)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.query and re.search(r"(^|&)password=", parts.query):  # libpq's ?password=... (the second review)
        query = "&".join(p if not p.startswith("password=") else f"password={shown_as.lstrip(':')}"
                         for p in parts.query.split("&") if shown_as or not p.startswith("password="))  # fmt: skip
        uri = uri.replace(f"?{parts.query}", f"?{query}" if query else "", 1)
    if not parts.password:  # none, or an empty one (`ana:@host`: nothing to hide); or no netloc urlsplit sees:
        # a mistyped `http:/ana:pw@host` or `ana:pw@host:5000` printed its password (a review)
        if parts.netloc or "@" not in uri:
            return uri
        # (`http//ana:pw@host` and a password with an unencoded @ too: the last @ before the path ends it)
        # (a space in the password too: `ana:p w@host:5000` printed it: a review)
        return re.sub(r"^((?:[A-Za-z][\w+.-]*(?::/*|//))?[^/:@\s]+):([^/]*)@", lambda m: f"{m[1]}{shown_as}@",
                      uri, 1)  # fmt: skip
    return uri.replace(f":{parts.password}@", f"{shown_as}@", 1)


# a server's address with its scheme mistyped, or without one (`host:5000`, `ana:pw@host:5000`); not another store's
# scheme with a number (`sqlite:5000`: a sqlite file named 5000, not a server called sqlite)
SERVER_TYPO = re.compile(r"(?i)(https?)(?::/*|//)([^/\s]+?:\d+)(/\S*)?"
                         r"|(?!(?:sqlite|postgres(?:ql)?|mysql|mssql|file|databricks)[:+])"
                         r"((?:[^/\s@:]+(?::[^/\s]*)?@)?[\w.-]+:\d+)(/\S*)?")


def meant_server_uri(uri: str) -> str | None:
    """The tracking server's address a mistyped one meant (`http:/host:5000`, `http//host:5000`, `host:5000`),
    or None: each command said it was a file store, or expected another form without naming the one meant
    (walkthrough BB; one home for `run`, `export-best`, `report` and `import-runs`: the review)."""
    m = SERVER_TYPO.fullmatch(uri.strip()) if "://" not in uri else None
    if not m:
        return None
    return f"{m[1].lower()}://{m[2]}{m[3] or ''}" if m[1] else f"http://{m[4]}{m[5] or ''}"


def served_artifacts_problem(location: str | None, tracking_uri: str | None, flag: str, what: str) -> "str | None":
    """One line when `location` (an experiment's or a run's artifact location) is `mlflow-artifacts:`, which only
    an MLflow server's clients read or write, and `tracking_uri` is not that server's http(s) address (a team
    server's database URI, say: MLflow then failed mid-way with a paragraph about MLFLOW_TRACKING_URI). `what`
    names the holder ("experiment 'hsc-search'", "search run <id>"); the line then says which flag to change."""
    import os

    uri = default_tracking_uri(tracking_uri)
    if not str(location or "").startswith("mlflow-artifacts:") or uri.startswith(("http://", "https://")):
        return None
    named = flag if tracking_uri or not os.environ.get("MLFLOW_TRACKING_URI") else "$MLFLOW_TRACKING_URI"
    return (f"{named} {without_password(uri)}: {what} keeps its artifacts on an MLflow server ({location}), which "
            f"only that server's clients reach: give {flag} the server's http://HOST:PORT (`hsc-search team-server` "
            "prints it)")


def served_store_problem(client, tracking_uri: str | None, flag: str) -> "str | None":
    """`served_artifacts_problem` of a whole store (import-runs --to): any experiment of it that keeps served
    artifacts (`mlflow-artifacts:`, its Default one included: a store an MLflow server or `mlflow ui` made), where
    an experiment the import makes through the database URI would keep local artifacts that server's clients
    never see. (A search's pre-flight tells a team server's database by its tag instead: `preflight`.)"""
    from mlflow.entities import ViewType

    for exp in client.search_experiments(view_type=ViewType.ALL):
        served = served_artifacts_problem(exp.artifact_location, tracking_uri, flag,
                                          f"the store (its experiment '{exp.name}')")  # fmt: skip
        if served:
            return served
    return None


def search_status(run) -> str:
    """A search's parent run's MLflow status as its commands read it: FINISHED also for a search that ended with no
    scored trial (every trial failed), which MLflow shows as FAILED (its tag hsc.no_score): it is over, with
    nothing to resume."""
    status = run.info.status
    return "FINISHED" if status == "FAILED" and run.data.tags.get(TAG_NO_SCORE) else status


def outcome_label(outcome: str, interrupted: bool = False) -> str:
    """A trial's outcome as people read it; a trial cut off by an interrupted search (MLflow's tag says
    "unfinished" until the search's end marks it) reads "interrupted", with or without MLflow."""
    return "interrupted" if outcome == "unfinished" and interrupted else OUTCOME_LABELS.get(outcome, outcome)


CUT_SHORT = "a store whose creation or upgrade by MLflow was cut short"  # (mlflow_db_problem)


def mlflow_db_problem(path) -> "str | None":
    """Why the existing file at `path` is not an MLflow sqlite store (read-only: nothing is created or
    changed), or None: empty, not SQLite, SQLite without MLflow's tables, or a store whose schema migration was cut
    off (an alembic temporary table that stays: read again after 1.5 s, as one being migrated now has one too)."""
    import sqlite3

    path = Path(path)
    if path.stat().st_size == 0:
        return "an empty file"

    def read() -> tuple[set, list]:
        con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = list(con.execute("SELECT * FROM alembic_version")) if "alembic_version" in tables else []
            return tables, version
        finally:
            con.close()

    try:
        tables, version = read()
        cut = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
        if cut:  # alembic's copy of a table being migrated: a migration cut off, or one running now (another
            time.sleep(1.5)  # process creating or upgrading the store commits its steps as it goes: the review)
            again, version_again = read()
            cut = [t for t in cut if t in again] if version_again == version else []
    except sqlite3.DatabaseError as e:
        if "not a database" in str(e) or getattr(e, "sqlite_errorcode", None) == 26:  # SQLITE_NOTADB
            return "not an SQLite database"
        return None  # locked, unreadable: MLflow names that itself
    if not {"experiments", "runs"} <= tables:
        return "SQLite, but without MLflow's tables"
    if cut:
        return (f"{CUT_SHORT}: its table {cut[0]} is left from a schema migration that did not finish (none is "
                "running now), and MLflow cannot open it again; a store without runs you need: delete the file; "
                "otherwise keep a copy of it before anything else")  # fmt: skip
    return None


_MLFLOW_IMPORT = threading.Lock()


def import_mlflow() -> None:
    """Imports MLflow, one thread at a time. A search imports it in three threads at once (the store opening and
    the MLflow writer while Ray starts, the driver's own thread after), and MLflow's package imports in cycles
    (`mlflow.entities` -> `mlflow` -> ... -> `mlflow.entities`, its protobuf modules): two threads entering
    it by different modules meet Python's import-deadlock check, and one of them gets a half-initialised module
    ("cannot import name 'Run' from partially initialized module 'mlflow.entities'", a `_DeadlockError`) and the
    search dies before its first trial. Seen on a slow 2-core VM in 2 of 3 searches started from a fresh
    process. Call this before a thread's first `from mlflow... import`; after the first call it costs a lock."""
    with _MLFLOW_IMPORT:
        import mlflow  # noqa: F401 - the whole package, so later imports find their modules initialised
        import mlflow.store.artifact.artifact_repository_registry  # noqa: F401 - the writer's, not in `import mlflow`


def user_tag() -> dict[str, str]:
    """The `mlflow.user` tag a run is created with, as MLflow's fluent API makes it (the tracking server's login
    name, else the account's): `MlflowClient.create_run` without it records the user as "unknown", so a team
    server could not tell one person's searches from another's (a walkthrough)."""
    import getpass

    name = None
    try:
        from mlflow.utils.credentials import read_mlflow_creds

        name = read_mlflow_creds().username
    except Exception:  # noqa: BLE001 - a nicety: no user is MLflow's own "unknown"
        pass
    try:
        name = name or getpass.getuser()
    except Exception:  # noqa: BLE001 - (no name in the environment or the password database: a container)
        return {}
    return {"mlflow.user": name} if name else {}


def client_for(tracking_uri: str | None):
    import_mlflow()
    from mlflow.tracking import MlflowClient

    seed_sqlite_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def seed_sqlite_store(tracking_uri: str | None, artifact_root: str | None = None) -> None:
    """A new sqlite store starts as a copy of an empty one made once per MLflow version (in the cache dir):
    MLflow builds a new store by running every schema migration, 2.4-4 s here, on the search's start-up path.

    The copy is what MLflow would have made, but for the Default experiment's artifact location, which MLflow
    sets from the working directory at creation (`<cwd>/mlruns/0`) and which is set so here too. A store that
    exists (or appears meanwhile) is never touched; any failure leaves the creation to MLflow. `artifact_root`:
    where the Default experiment keeps its artifacts (`<root>/0`, as MLflow sets it for a store opened with that
    root), else `<cwd>/mlruns/0`. The store appears whole or not at all: an interrupted MLflow creation left a
    store it could not open again (`import-runs` interrupted as it created its destination; a walkthrough).
    """
    import contextlib
    import os
    import shutil
    import sqlite3
    import tempfile
    import uuid
    from pathlib import Path

    uri = default_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if not uri.startswith("sqlite:///") or db is None or sqlite_options_problem(uri):
        return
    if str(db) in ("", ".", ":memory:") or db.exists() or not db.parent.is_dir():
        return
    try:
        import mlflow

        cache = Path(os.environ.get("HSC_CACHE_DIR") or Path.home() / ".cache" / "hsc-search")
        template = cache / f"mlflow-{mlflow.__version__}-empty.db"
        if not template.exists():
            cache.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache, suffix=".db")
            os.close(fd)
            os.unlink(tmp)
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments(max_results=1)  # runs the migrations
            os.replace(tmp, template)
        tmp = db.parent / f".{db.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        try:  # gone in every case (a full disk left a copy cut short beside the store, at each start)
            with open(template, "rb") as src, open(tmp, "xb") as dst:  # the umask's permissions, as MLflow's
                shutil.copyfileobj(src, dst)
            with contextlib.closing(sqlite3.connect(tmp)) as con, con:
                con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                            (str((Path(artifact_root).absolute() if artifact_root else Path("mlruns").resolve())
                                 / "0"),))  # fmt: skip  (a root as given, as MLflow keeps it: not its links resolved)
            try:
                os.link(tmp, db)  # fails if the store appeared meanwhile: then it is left alone
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    except Exception as e:  # never fail a search over a shortcut: MLflow creates the store itself
        log.info("could not seed %s from a template (%s); MLflow creates it", db, e)


def tag_experiment(client, experiment_id: str, metric: str, mode: str) -> None:
    """Marks an existing experiment as model training with `metric` as its primary metric."""
    have = client.get_experiment(experiment_id).tags
    for k, v in experiment_tags(metric, mode).items():
        if have.get(k) != v:
            client.set_experiment_tag(experiment_id, k, v)


def experiment_tags(metric: str, mode: str) -> dict[str, str]:
    """The tags a new experiment is created with (see `tag_experiment`). The primary metric is the score
    (`best/<mode>/<metric>`), which the search's parent run and every trial's run carry: the UI's chart view then
    has a chart with the runs table's parents collapsed (its default) too; the per-epoch metric is on trials only."""
    return {EXPERIMENT_KIND: "custom_model_development", PRIMARY_METRIC: score_key(metric, mode),
            PRIMARY_METRIC_GREATER: "true" if mode == "max" else "false"}  # fmt: skip


def ui_url(base: str, experiment_id: str, run_id: str | None = None, artifact: str | None = None) -> str:
    """The MLflow UI page of an experiment (or of one run, or of one of its artifacts, shown in the Artifacts tab),
    opened in model-training mode."""
    page = f"{base.rstrip('/')}/#/experiments/{experiment_id}"
    if run_id:
        page += f"/runs/{run_id}" + (f"/artifacts/{artifact}" if artifact else "")
    return page + UI_QUERY


RETRY_ATTEMPTS = 8  # an MLflow call's attempts: waits of 0.5, 1, 2, 4, 8, 15, 15 s between them (~45 s)
RETRIES_ENV = "HSC_MLFLOW_RETRIES"  # a search writer's attempts per call, when set


def retry_attempts() -> int:
    """The attempts of each of a search's MLflow calls: $HSC_MLFLOW_RETRIES (a whole number >= 1), else 8. Fewer
    for a search that should give a store that is away up sooner (each call that fails for good waits ~45 s
    at 8); a bad value raises ValueError (the pre-flight says it in one line)."""
    value = os.environ.get(RETRIES_ENV, "").strip()
    if not value:
        return RETRY_ATTEMPTS
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{RETRIES_ENV}={value!r}: expected a whole number of attempts >= 1 (default "
                         f"{RETRY_ATTEMPTS})")  # fmt: skip
    return int(value)


FLUSH_S = 120.0  # default of HSC_MLFLOW_FLUSH_S: seconds a search's end waits for MLflow (then `resume` finishes)


def flush_seconds() -> float:
    """How long a search's end waits for MLflow to take its last records: $HSC_MLFLOW_FLUSH_S (seconds, finite,
    > 0), else FLUSH_S. A bad value raises ValueError, which the pre-flight says in one line (it was taken as the
    default without a word, and `inf` waited on a dead server for ever: a walkthrough)."""
    value = os.environ.get("HSC_MLFLOW_FLUSH_S", "").strip()
    if not value:
        return FLUSH_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):  # 0, negative, nan, inf
        raise ValueError(f"HSC_MLFLOW_FLUSH_S={value!r}: expected a number of seconds > 0 (default {FLUSH_S:g})")
    return seconds


DISK_REFUSALS = ("database or disk is full", "No space left on device", "Read-only file system", "Disk quota exceeded",
                 "File too large")


def refused_by_disk(error: BaseException) -> bool:
    """Whether `error` is, or was raised from, a disk's refusal to write (full, read-only, over quota, a file size
    limit: an OSError of `commands.DISK_ERRNOS`, or sqlite's or a server's words for it)."""
    from .commands import disk_error

    return disk_error(error, words=DISK_REFUSALS) is not None


def retry(fn: Callable[[], Any], what: str, attempts: int = RETRY_ATTEMPTS, first_wait: float = 0.5,
          max_wait: float = 15.0):
    """Calls fn, retrying with exponential back-off (0.5, 1, 2, ... s, capped) on any exception but a full (or
    read-only) disk's, which seconds do not mend: each call that met one waited 46 s in 7 retries, and a search
    whose store's disk filled took 2-3 minutes and 25 retry lines to end (a walkthrough)."""
    wait = first_wait
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:  # the server may be briefly unreachable; everything else fails the same way again
            if attempt == attempts or refused_by_disk(e):
                raise
            log.warning("mlflow: %s failed (%s); retry %d/%d in %.1fs", what, http_failure(e), attempt, attempts - 1,
                        wait)  # fmt: skip
            time.sleep(wait)
            wait = min(wait * 2, max_wait)


def find_child_run(client, experiment_id: str, parent_run_id: str, trial_id: str):
    """The child run of `parent_run_id` tagged with `trial_id`, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.`{TAG_TRIAL}` = '{trial_id}'",
        max_results=5,
    )
    return runs[0] if runs else None


def child_runs(client, experiment_id: str, parent_run_id: str) -> list:
    """All trial runs of one search."""
    out, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'", max_results=1000,
            page_token=token,
        )  # fmt: skip
        out.extend(page)
        token = page.token
        if not token:
            return out


def missing_artifact_dir(artifact_uri: str | None) -> "str | None":
    """The local folder an artifact URI names (`/abs/path`, `file:///abs/path`) when it does not exist, else None
    (also for remote artifact stores, which cannot be checked this cheaply). MLflow keeps absolute artifact paths
    in the store, so a store moved or copied elsewhere points at folders that are no longer there."""
    import os
    from urllib.parse import urlparse

    if not artifact_uri:
        return None
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        path = parsed.path
    elif not parsed.scheme and artifact_uri.startswith("/"):
        path = artifact_uri
    else:
        return None
    return None if os.path.isdir(path) else path


def moved_store_hint(artifact_uri: str) -> str:
    """What to do about a run whose local artifact folder is missing (see `missing_artifact_dir`)."""
    from pathlib import PurePosixPath

    parents = PurePosixPath(artifact_uri.removeprefix("file://")).parents
    root = parents[2] if len(parents) > 3 else parents[0]  # <root>/<experiment id>/<run id>/artifacts
    return (f"the store says its artifacts are in {artifact_uri}, which does not exist (MLflow keeps absolute "
            f"artifact paths, so a store moved or copied elsewhere loses them): run this where the searches ran, "
            f"or copy the store's artifact folder (mlruns/) back to {root}")


def _ours_report(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"<title>hsc-search report" in f.read(4096)


def _json_object(path: Path) -> dict | None:
    if path.stat().st_size > 256 * 2**20:  # no output of ours is near this
        return None
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _ours_replay(path: Path) -> bool:
    value = _json_object(path)
    return value is not None and {"source", "metric", "settings", "orders"} <= set(value)


def _ours_config(path: Path) -> bool:
    from trainer.config import TrainConfig

    with open(path, "rb") as f:
        if f.read(64).startswith(b"# Best HSC-MAE config exported by hsc-search"):
            return True
    value = _json_object(path)  # a complete trainer config, also of a version with a few fields more or less
    fields = set(TrainConfig.field_names())
    return value is not None and {"lr", "epochs", "batch_size"} <= set(value) and len(set(value) & fields) >= 0.8 * len(
        set(value) | fields)


# what each command writes, and how a file it wrote before (and may replace) is known
OUTPUTS = {"report": ("a report hsc-search wrote", _ours_report),
           "replay": ("a replay JSON hsc-search wrote", _ours_replay),
           "config": ("a config export-best wrote", _ours_config)}  # fmt: skip


def out_file_problem(out, example: str, flag: str, kind: str | None = None) -> "str | None":
    """Why `out` cannot be written as a file (a folder, a file where one of its folders should be, a folder that
    cannot be written, an existing file that is not an earlier output of the same kind (`OUTPUTS`): a search's
    best config, its MLflow database, a data file), naming `flag`, or None. Checked before the work whose result
    goes there."""
    from trainer.config import why_unwritable

    out = Path(out)
    if out.is_dir():
        return f"{flag} {out}: is a folder; expected the file to write, e.g. {out / example}"
    if kind is not None and (out.exists() or out.is_symlink()):
        what, ours = OUTPUTS[kind]
        try:
            replaceable = out.is_file() and ours(out)
        except OSError:
            replaceable = False
        if not replaceable:
            return (f"{flag} {out}: exists and is not {what}, so it is not overwritten; pick another file, or "
                    "delete this one first")  # fmt: skip
    for folder in out.parents:
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                return f"{flag} {out}: {folder} is not a folder"
            why = why_unwritable(folder)
            if why is not None:
                return f"{flag} {out}: cannot write in {folder} ({why})"
            break
    return None


def latest_search(client, experiment_id: str, experiment: str | None = None) -> str:
    """The most recently started search (parent run) of the experiment that has trial runs: a search that failed
    before its first trial has nothing to export, report or replay, and is passed over (one still running is
    said, on stderr). Raises StoreError."""
    where = f"MLflow experiment '{experiment}'" if experiment else f"experiment {experiment_id}"
    empty, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'search'",
                                  order_by=["attributes.start_time DESC"], max_results=100,
                                  page_token=token)  # fmt: skip
        for run in page:
            if client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{run.info.run_id}'",
                                  max_results=1):  # fmt: skip
                # a newer search still running without a trial (one just started) was passed over silently: the
                # report and export of the one before it read as the new one's (a walkthrough)
                live = [r.info for r in empty if r.info.status == "RUNNING"]
                if live:  # (on stderr as the commands' own notes: a warning of the module's logger would be lost
                    # where logging is configured)
                    named = ", ".join(f"search {i.run_name or 'unnamed'} (run {i.run_id})" for i in live)
                    print(f"note: {named} started after this one, is RUNNING in MLflow and has no trial run: passed "
                          f"over (still starting, or its driver was killed before its first trial; give --run-id "
                          f"{live[0].run_id} for it once it has one)", file=sys.stderr)  # fmt: skip
                return run.info.run_id
            empty.append(run)
        token = page.token
        if not token:
            break
    if not empty:
        raise StoreError(f"{where} has no search (parent) run")
    last = empty[0].info
    raise StoreError(f"{where} has no search with trial runs: none of its {len(empty)} search run(s) got to a trial "
                     f"(the latest: {last.run_id} ({last.run_name or 'unnamed'}, {last.status}))")


META_FILE = "hsc_search.json"  # in a search's folder: its settings and space, what `resume` needs (driver.META_FILE)


def store_of_folder(folder: Path, new_store: bool = False) -> str:
    """What to pass instead of a folder given as a sqlite store: a search's folder names the store its search
    logged to (it suggested <folder>/mlflow.db, which a search's folder never holds: a walkthrough); another
    folder its mlflow.db where there is one, else the form expected."""
    try:
        settings = json.loads((folder / META_FILE).read_text()).get("settings") or {}
    except (OSError, ValueError, AttributeError):  # `new_store`: a destination, which may be a new file there
        db = folder / "mlflow.db"
        return f"e.g. sqlite:///{db.absolute()}" if db.is_file() or new_store else \
            "e.g. sqlite:///mlflow.db (the file itself)"  # fmt: skip
    if settings.get("mlflow") is False:
        return "not a search's folder: that search ran with --no-mlflow, so nothing of it is in MLflow"
    store = settings.get("tracking_uri")
    return (f"not a search's folder: that search logged to {without_password(store)}" if store else
            "not a search's folder: pass the store its search logged to (its --tracking-uri)")


def folder_hint(folder: str) -> str:
    """Where the search is, for a local folder given by mistake: a trial's folder (its search is the one above)
    or the storage folder (its searches are below); for `resume`, `--warm-start`."""
    from . import storage

    if storage.is_uri(folder):
        return ""
    here = Path(folder).resolve()
    if (here.parent / META_FILE).is_file():  # (a trial's, or any other folder of a search: its summary/)
        what = "a trial's folder" if (here / "params.json").is_file() or (here / "result.json").is_file() else \
            "a folder"  # fmt: skip
        return f"; it is {what} of the search {shlex.quote(str(here.parent))}: pass that"
    if (here.parent.parent / META_FILE).is_file():  # a trial's checkpoint_000003/ (the resume a user reached for)
        what = "a trial's checkpoint" if here.name.startswith("checkpoint_") else "a folder"
        return f"; it is {what} of the search {shlex.quote(str(here.parent.parent))}: pass that"
    try:
        below = sorted(p.name for p in here.iterdir() if (p / META_FILE).is_file())
    except OSError:
        return ""
    if below:
        names = ", ".join(below[:5]) + (f" and {len(below) - 5} more" if len(below) > 5 else "")
        return f"; it holds the searches {names}: pass one, e.g. {shlex.quote(str(here / below[0]))}"
    return ""


def _search_folder_hint(given: str) -> str:
    """Where `--run-id` was given a search's folder or its name (as `resume` and `--warm-start` take them; a
    walkthrough): its parent run id, from the folder's record."""
    for folder in (Path(given).expanduser(), Path("ray_results") / given):
        try:
            meta = json.loads((folder / META_FILE).read_text())
            pid, settings = meta.get("parent_run_id"), meta.get("settings") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if not pid and settings.get("mlflow") is False:
            return f"; {folder} is the folder of a search run with --no-mlflow: nothing of it is in MLflow"
        if pid:  # with the store it logged to, where that is not the default
            store = settings.get("tracking_uri")
            also = f" --tracking-uri {shlex.quote(without_password(store, ''))}" if store else ""
            return (f"; {folder} is a search folder, whose search's parent run id is {pid}: pass --run-id "
                    f"{pid}{also}")
    return ""


def search_of(client, run_id: str, tracking_uri: str | None) -> tuple[str, str]:
    """(run id, experiment id) of a search given by `--run-id`. Raises StoreError for a run that is not there and
    for a trial's run id (naming its search)."""
    try:
        run = client.get_run(run_id)
    except Exception as e:  # not there; or the store failed (said as such: the run was never looked at)
        where = without_password(tracking_uri or "sqlite:///mlflow.db")
        if getattr(e, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or (
                "not found" in str(e).lower()):
            raise StoreError(f"--run-id {run_id}: no such run at {where}{_search_folder_hint(run_id)}") from None
        raise StoreError(f"cannot read run '{run_id}' at {where}: {http_failure(e)}") from None
    tags = run.data.tags
    if tags.get(TAG_KIND) != "search" and (tags.get(TAG_KIND) == "trial" or tags.get(TAG_PARENT)):
        parent = tags.get(TAG_PARENT)
        raise StoreError(f"--run-id {run_id} is a trial run" + (f" of search {parent}: pass --run-id {parent}"
                                                                if parent else ", not a search's parent run"))
    return run.info.run_id, run.info.experiment_id


def http_failure(e: BaseException) -> str:
    """What went wrong in a failed MLflow call, in a few words, also when MLflow wrapped the error in one of its
    own: an error answer of the server (requests' HTTPError): the status, the address and the server's message;
    a server that kept answering with an error until the retries ran out ("... (Caused by ResponseError('too many
    500 error responses'))"): the status and the address; a server that did not answer ("... [Errno 111]
    Connection refused"): the address and the reason; a database store's error (SQLAlchemy's, whose own text can
    be a hint about autoflush): the database's words ("the database: database or disk is full"); otherwise the
    error's first line, cut at 200 characters.
    A password in an address is shown as ***."""
    import re

    def cut(text: str) -> str:
        return text if len(text) <= 200 else text[:200] + "..."

    seen, cause, where = set(), e, "the server"
    while cause is not None and id(cause) not in seen:  # MLflow wraps the HTTP error ("Failed to download ...")
        seen.add(id(cause))
        said = str(cause)
        url = re.search(r"API request to (\S+) failed", said)
        where = url.group(1) if url else where  # (MLflow's error names it; the error it wraps, not)
        inner = [a for a in getattr(cause, "args", ()) if isinstance(a, BaseException)]  # requests' ("aborted", err)
        if any(not_http(c) for c in (cause, *inner)):
            return _hide_password(f"{where.split('?', 1)[0]} {NOT_HTTP}")
        response = getattr(cause, "response", None)  # requests' HTTPError: the server's own answer
        if getattr(response, "status_code", None) is not None:
            try:
                message = response.json().get("message") or ""
            except Exception:
                message = response.text or ""
            message = cut(" ".join(str(message).split()))
            where = str(getattr(response, "url", "") or where).split("?", 1)[0]
            return _hide_password(f"{where} answered HTTP {response.status_code}" + (f": {message}" if message else ""))
        orig = getattr(cause, "orig", None)  # SQLAlchemy's DBAPIError: the database driver's own words
        if isinstance(orig, BaseException) and str(orig).strip():  # (its own text can be an autoflush hint)
            return _hide_password(cut(f"the database: {str(orig).strip().splitlines()[0]}"))
        m = re.search(r"too many (\d{3}) error responses", said)
        if m:
            return _hide_password(f"{where} kept answering HTTP {m.group(1)}; see the server's log")
        m = re.search(r"\[Errno -?\d+\] [^'\"()\]]+", said)
        if m and "Max retries exceeded" in said:
            return _hide_password(f"{where} did not answer ({m.group(0).strip()})")
        cause = cause.__cause__ or cause.__context__
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return _hide_password(cut("".join(c if c.isprintable() else "?" for c in first)))  # (no bytes to the terminal)


def _hide_password(text: str) -> str:
    """user:password@ in any address of `text` as user:***@."""
    import re

    return re.sub(r"(://[^/:@\s]+):[^/@\s]*@", r"\1:***@", text)


def write_csv(table, path) -> None:
    """A pyarrow table as CSV that a reader types as the parquet file is typed: pyarrow writes a whole float as
    `1`, which pandas and pyarrow read back as an int column (a float param whose values in a search were all
    whole, a walkthrough). Floats are written as Python writes them (1.0, 0.0005, nan), booleans as pyarrow
    writes them (true, false); nulls stay empty; a value is quoted only where CSV needs it (a comma, a quote, a
    line break): pyarrow quoted every value of a text column, and the floats written as text with them."""
    import csv

    import pyarrow as pa

    floats = [pa.types.is_floating(c.type) for c in table.columns]

    def cell(v, is_float: bool) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        return repr(float(v)) if is_float else str(v)

    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(table.column_names)
        for row in zip(*(c.to_pylist() for c in table.columns)):
            out.writerow([cell(v, f) for v, f in zip(row, floats)])


def typed_column(texts: list[str | None]) -> list:
    """A column of params as MLflow holds them (text), as the values they were: ints, else floats, else booleans, else text
    (None where a trial has no such param: a condition that did not hold)."""
    given = [t for t in texts if t is not None]
    if not given:
        return texts
    for kind in (int, float):
        try:
            return [None if t is None else kind(t) for t in texts]
        except ValueError:
            continue
    if set(given) <= {"True", "False"}:
        return [None if t is None else t == "True" for t in texts]
    return texts
