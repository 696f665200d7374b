"""A team tracking server: PostgreSQL and `mlflow server` on one machine, both reachable from this machine only.

PostgreSQL listens on no TCP port at all (`listen_addresses = ''`): only on a unix socket in a folder that only
its owner can enter, with `trust` for local connections and every host connection rejected. `mlflow server`
listens on 127.0.0.1; colleagues reach it through an SSH tunnel (docs/team-server.md). The data folder holds
everything that must outlive the server: `pgdata/` (the database) and `artifacts/` (served by MLflow).

PostgreSQL's binaries come from the `pgserver` wheel (PyPI, PostgreSQL 16, the project's `team` and `test`
extras) when it is installed, otherwise from the system (`pg_ctl` on PATH or Debian's /usr/lib/postgresql/*/bin).
PostgreSQL refuses to run as root: as root, the database runs as another account (`run_as`, default `postgres`
when that account exists), which then owns `pgdata/`.

Both servers run in sessions of their own (a Ctrl-C in the terminal reaches the team server, which stops them in
order). So that they never outlive it, even when it is killed with SIGKILL or by the OOM killer (nothing of it
runs then), each server has a watchdog: a small process (standard library only) that waits on the team server's
and the server's pidfds; when the team server is gone first, it stops the server as `stop()` would (PostgreSQL:
fast shutdown; MLflow: SIGTERM to its process group), then SIGKILLs what is left after 30 s. Without it, the
next start failed on a port in use and a data folder "already" served.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .commands import exe

PG_DIR = "pgdata"
ARTIFACTS_DIR = "artifacts"
DB_USER = "hsc"  # the database's superuser, created by initdb; reachable only through the socket
DB_NAME = "mlflow"
SOCKET_NAME = ".s.PGSQL.5432"
MAX_SOCKET_PATH = 100  # unix socket paths are capped at 107 bytes on Linux; keep a margin


class TeamServerError(Exception):
    """Bad input or a server that did not start; the message says which setting and what was expected."""


# ------------------------------------------------------------------------------------------ PostgreSQL binaries
def postgres_bin_dirs() -> list[Path]:
    """Folders with `initdb` and `postgres`, best first: the pgserver wheel's, then the system's."""
    dirs = []
    spec = importlib.util.find_spec("pgserver")  # not imported: importing it creates lock files
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "pginstall" / "bin")
    for name in ("pg_ctl", "postgres"):
        found = _which(name)
        if found:
            dirs.append(Path(os.path.realpath(found)).parent)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version_key(p.parent.name))
    dirs.extend(reversed(debian))
    out = []
    for d in dirs:
        if (d / "postgres").is_file() and (d / "initdb").is_file() and d not in out:
            out.append(d)
    return out


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def _version_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in name.split("."))


def _blocked_for(path: Path, uid: int, gid: int) -> Path | None:
    """The first folder above `path` (or `path` itself if a folder), from the root down, that the account (uid,
    gid) cannot enter; None when it can enter them all."""
    p = path.resolve()
    for d in reversed([p, *p.parents] if p.is_dir() else list(p.parents)):
        st = d.stat()
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return d
    return None


@dataclass
class _Account:
    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str) -> "_Account":
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise TeamServerError(f"--run-as {name}: no such account on this machine") from None
        if pw.pw_uid == 0:
            raise TeamServerError(f"--run-as {name}: PostgreSQL refuses to run as root; name an ordinary account")
        return cls(name, pw.pw_uid, pw.pw_gid)


def default_run_as() -> str | None:
    """None for an ordinary user (PostgreSQL runs as that user); as root, `postgres` if that account exists."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        return None


# ------------------------------------------------------------------------------------------ PostgreSQL
class Postgres:
    """One PostgreSQL server on a data folder, on a unix socket only; started and stopped by its own pid.

    Args:
        data_dir: the cluster folder (`initdb` runs on first start; later starts reuse it).
        run_as: account that runs PostgreSQL when this process is root (None: the current user).
        bin_dir: folder with PostgreSQL's binaries (default: the first of `postgres_bin_dirs()` that fits).
    """

    def __init__(self, data_dir: Path, run_as: str | None = None, bin_dir: Path | None = None):
        self.data_dir = Path(data_dir).absolute()
        if os.geteuid() == 0:
            run_as = run_as or default_run_as()
            if run_as is None:
                raise TeamServerError("PostgreSQL refuses to run as root and there is no `postgres` account: "
                                      "give --run-as USER (an ordinary account) or start as an ordinary user")
            self.account: _Account | None = _Account.lookup(run_as)
        else:
            if run_as is not None and run_as != pwd.getpwuid(os.geteuid()).pw_name:
                raise TeamServerError(f"--run-as {run_as}: only root can run PostgreSQL as another account")
            self.account = None
        self._check_owner()
        self.bin_dir = Path(bin_dir) if bin_dir else self._pick_bin_dir()
        self.proc: subprocess.Popen | None = None
        self.watchdog: subprocess.Popen | None = None
        self.socket_dir: Path | None = None
        self._own_socket_dir = False

    # -------------------------------------------------------------- helpers
    def _check_owner(self) -> None:
        """PostgreSQL runs only as the owner of an existing data folder (started as another account it exited
        with 20 lines of its log ending in 'Permission denied'): said in one sentence, before it starts."""
        if not (self.data_dir / "PG_VERSION").is_file():
            return
        owner = self.data_dir.stat().st_uid
        runs_as = self.account.uid if self.account is not None else os.geteuid()
        if owner == runs_as:
            return
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = f"uid {owner}"
        how = f"pass --run-as {name}" if os.geteuid() == 0 else f"start the team server as {name}"
        raise TeamServerError(f"--data-dir: {self.data_dir} belongs to {name} and PostgreSQL runs only as the "
                              f"owner of its data: {how}")  # fmt: skip

    def _pick_bin_dir(self) -> Path:
        dirs = postgres_bin_dirs()
        if not dirs:
            raise TeamServerError("no PostgreSQL found: `pip install 'hsc-search[team]'` (the pgserver wheel) or "
                                  "`apt-get install postgresql`")
        if self.account is None:
            return dirs[0]
        for d in dirs:  # the account must be able to reach the binaries (a venv under /root is not)
            if _blocked_for(d / "postgres", self.account.uid, self.account.gid) is None:
                return d
        raise TeamServerError(f"account {self.account.name} cannot reach any PostgreSQL binaries "
                              f"({', '.join(map(str, dirs))}); install Debian's postgresql or run as that account")

    def _popen_args(self) -> dict:
        if self.account is None:
            return {}
        return {"user": self.account.uid, "group": self.account.gid, "extra_groups": []}

    def _run(self, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run([str(self.bin_dir / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=timeout, **self._popen_args())  # fmt: skip
        if proc.returncode != 0:
            raise TeamServerError(f"{args[0]} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")

    @property
    def version(self) -> str:
        out = subprocess.run([str(self.bin_dir / "postgres"), "--version"], capture_output=True, text=True)
        return out.stdout.strip()

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def uri(self, database: str = DB_NAME) -> str:
        """The SQLAlchemy URI MLflow uses, over the unix socket (no host, no port, no password). The driver is
        named (`+psycopg`, psycopg 3, a dependency): a bare `postgresql://` means psycopg 3 to SQLAlchemy 2.1 but
        psycopg2 (not installed) to SQLAlchemy 2.0, which is what Python 3.10 gets."""
        assert self.socket_dir is not None, "start() first"
        return f"postgresql+psycopg://{DB_USER}@/{database}?host={self.socket_dir}"

    # -------------------------------------------------------------- life cycle
    def init(self) -> None:
        """`initdb` on an empty or missing data folder (owned by the account that runs PostgreSQL)."""
        if self.initialised:
            return
        blocked = self.account and _blocked_for(self.data_dir.parent, self.account.uid, self.account.gid)
        if blocked:  # before the folder is made (it was left behind, the account's; said without the folder: a
            # walkthrough)
            raise TeamServerError(f"{self.data_dir}: account {self.account.name}, which runs PostgreSQL, cannot enter "
                                  f"{blocked} (mode {stat.S_IMODE(blocked.stat().st_mode):o}); choose a data folder "
                                  f"that account can reach, or let it in (e.g. chmod o+x {blocked})")  # fmt: skip
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise TeamServerError(f"{self.data_dir}: not a PostgreSQL data folder (no PG_VERSION) and not empty")
        if self.account is not None:
            os.chown(self.data_dir, self.account.uid, self.account.gid)
        self._run("initdb", "-D", str(self.data_dir), "-U", DB_USER, "--auth-local=trust", "--auth-host=reject",
                  "-E", "UTF8", "--locale=C", "--no-instructions")  # fmt: skip

    def start(self, timeout: float = 60.0) -> "Postgres":
        self.init()
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            if _alive(pid):
                other = _program_of(pid)
                if other is not None and "postgres" not in other and "postmaster" not in other:
                    # a lock file left by a server that ended uncleanly (a crash, a reboot), its pid now another
                    # program's: said as a running server, with no way out (a walkthrough)
                    raise TeamServerError(f"{self.data_dir}: its lock file postmaster.pid names pid {pid}, which is "
                                          f"now {other}, not PostgreSQL: a server that ended without removing it (a "
                                          f"crash or a reboot). Check no PostgreSQL runs on this folder, then remove "
                                          f"{pid_file} and start again")  # fmt: skip
                raise TeamServerError(f"{self.data_dir}: a PostgreSQL server (pid {pid}) already runs on it")
        self.socket_dir = self.data_dir
        if len(str(self.data_dir / SOCKET_NAME)) > MAX_SOCKET_PATH:  # too long for a socket: a short private folder
            self.socket_dir = Path(tempfile.mkdtemp(prefix="hsc-pg-"))
            self._own_socket_dir = True
            if self.account is not None:
                os.chown(self.socket_dir, self.account.uid, self.account.gid)
        try:
            log = open(self.data_dir / "server.log", "ab")
        except OSError as e:  # (a traceback: a walkthrough's data folder made read-only)
            raise TeamServerError(f"{self.data_dir}: cannot be written ({e.strerror}); PostgreSQL keeps its lock "
                                  "file and log there") from None  # fmt: skip
        said_before = log.tell()  # (the log keeps earlier starts' lines: a failed start says only its own)
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-c", "listen_addresses=",
             "-c", f"unix_socket_directories={self.socket_dir}", "-c", "unix_socket_permissions=0700"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            **self._popen_args(),
        )  # fmt: skip
        log.close()
        self.watchdog = _guard(self.proc, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                with open(self.data_dir / "server.log", "rb") as f:
                    f.seek(said_before)
                    lines = f.read().decode(errors="replace").splitlines()
                self.proc = None
                _end_watchdog(self.watchdog)
                # its FATAL line says why (2,000 characters of the log's earlier runs buried it: a walkthrough)
                fatal = [i for i, ln in enumerate(lines) if "FATAL:" in ln]
                why = [lines[fatal[-1]].split("FATAL:", 1)[1].strip()] if fatal else []
                for ln in lines[fatal[-1] + 1:] if fatal else []:  # its DETAIL and HINT say how to mend it (the review)
                    more = re.search(r"\b(?:DETAIL|HINT):\s*(.*)", ln)
                    if more is None:
                        break
                    why.append(more.group(1).strip())
                tail = "\n".join(lines[-8:])
                raise TeamServerError(f"PostgreSQL on {self.data_dir} exited at start: {' '.join(why)}" if why else
                                      f"PostgreSQL on {self.data_dir} exited at start:\n{tail}")  # fmt: skip
            try:
                self._ensure_database()
                return self
            except _NotReady:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TeamServerError(f"PostgreSQL on {self.data_dir} not ready within {timeout:.0f} s") from None
                time.sleep(0.2)

    def _ensure_database(self) -> None:
        import psycopg

        try:
            conn = psycopg.connect(host=str(self.socket_dir), user=DB_USER, dbname="postgres", connect_timeout=3,
                                   autocommit=True)  # fmt: skip
        except psycopg.OperationalError as e:
            raise _NotReady(str(e)) from None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {DB_NAME}")
        finally:
            conn.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: open sessions are ended, everything committed stays), then SIGKILL if stuck."""
        if self.proc is not None and self.proc.poll() is None:
            _stop(self.proc, signal.SIGINT, timeout)
        self.proc = None
        _end_watchdog(self.watchdog)
        self.watchdog = None
        if self._own_socket_dir and self.socket_dir is not None:
            import shutil

            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self._own_socket_dir = False


class _NotReady(Exception):
    pass


# The watchdog's program (`python -I -S -c`): argv = the pidfds of the team server and of the server (opened by
# the team server and handed over, so neither can name another process, however early the team server dies),
# the signal and the server's process group (its pid: a session leader). Exits at once when the server ends first
# (a normal stop); otherwise signals the group as `_stop` does, while the server's pidfd says it still runs.
_WATCHDOG = """
import os, select, signal, sys, time
owner, server, sig, pgid = (int(a) for a in sys.argv[1:5])
for s in (signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
if server in select.select([owner, server], [], [])[0]:
    sys.exit(0)
try:
    os.killpg(pgid, sig)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if select.select([server], [], [], 0.2)[0]:
            sys.exit(0)
    os.killpg(pgid, signal.SIGKILL)
except ProcessLookupError:
    pass
"""


def _guard(proc: subprocess.Popen, sig: int) -> subprocess.Popen | None:
    """Starts the watchdog that stops `proc` (a session leader) with `sig` if this process dies without doing so."""
    if not hasattr(os, "pidfd_open"):  # not Linux: the servers are stopped only by stop()
        return None
    fds = []
    try:
        fds = [os.pidfd_open(os.getpid()), os.pidfd_open(proc.pid)]  # proc is not reaped yet: its pid is its own
        return subprocess.Popen([sys.executable, "-I", "-S", "-c", _WATCHDOG, *map(str, fds), str(int(sig)),
                                 str(proc.pid)], pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd="/", start_new_session=True)  # fmt: skip
    except OSError:
        return None
    finally:
        for fd in fds:
            os.close(fd)


def _end_watchdog(watchdog: subprocess.Popen | None) -> None:
    """Reaps a watchdog whose server was stopped (it exits by itself then)."""
    if watchdog is not None:
        try:
            watchdog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait(timeout=5)


def _program_of(pid: int) -> str | None:
    """The program a process runs (Linux's /proc/<pid>/comm), None where that cannot be read."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or None
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _stop(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------ mlflow server
def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    if not 1 <= port <= 65535:
        raise TeamServerError(f"--port {port}: expected a TCP port between 1 and 65535")
    with socket.socket() as s:
        # SO_REUSEADDR: connections of a server just stopped (TIME_WAIT) do not count; a listener still does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise TeamServerError(f"--port {port}: {host}:{port} is already in use ({e.strerror}); "
                                  "stop what listens there or choose another port") from None


class MlflowServerProcess:
    """`mlflow server` on 127.0.0.1 with a given backend store, serving artifacts from a folder.

    The backend URI goes through the environment (MLFLOW_BACKEND_STORE_URI), not the command line, so that a
    URI with a password never shows in `ps`.
    """

    def __init__(self, backend_uri: str, artifacts_dir: Path, port: int, workers: int = 2,
                 log_path: Path | None = None):  # fmt: skip
        self.backend_uri, self.artifacts_dir, self.port, self.workers = backend_uri, Path(artifacts_dir), port, workers
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.watchdog: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> "MlflowServerProcess":
        check_port_free(self.port)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        mlflow = Path(sys.executable).parent / "mlflow"
        cmd = [str(mlflow) if mlflow.exists() else "mlflow", "server", "--host", "127.0.0.1", "--port",
               str(self.port), "--workers", str(self.workers), "--artifacts-destination", str(self.artifacts_dir)]
        # MLflow 3.17 also starts seven `huey` job consumers (GenAI jobs) next to a database store; tracking needs
        # none of them, and on a small team box they cost memory and start-up time
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_BACKEND_STORE_URI": self.backend_uri}
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)  # fmt: skip
        self.watchdog = _guard(self.proc, signal.SIGTERM)
        if self.log_path:
            out.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2)
                return self
            except KeyboardInterrupt:
                self.stop()
                raise
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    why = "exited" if self.proc.poll() is not None else f"did not answer within {timeout:.0f} s"
                    self.stop()
                    hint = f"; see {self.log_path}" if self.log_path else ""
                    raise TeamServerError(f"mlflow server on {self.url} {why}{hint}") from None
                time.sleep(0.25)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _stop(self.proc, signal.SIGTERM, timeout)
        self.proc = None
        _end_watchdog(self.watchdog)
        self.watchdog = None


# ------------------------------------------------------------------------------------------ the team server
def check_data_dir(data_dir: Path) -> Path:
    """The team server's folder: created if missing (its parent must exist); an existing one must be ours."""
    data_dir = Path(data_dir).expanduser().absolute()
    if data_dir.exists() and not data_dir.is_dir():
        raise TeamServerError(f"--data-dir {data_dir}: is a file; expected a folder (created if missing)")
    if not data_dir.exists():
        if not data_dir.parent.is_dir():
            raise TeamServerError(f"--data-dir {data_dir}: its parent folder {data_dir.parent} does not exist")
        if not os.access(data_dir.parent, os.W_OK | os.X_OK):
            raise TeamServerError(f"--data-dir {data_dir}: cannot create it in {data_dir.parent} (not writable)")
        return data_dir
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise TeamServerError(f"--data-dir {data_dir}: cannot write in it (a read-only folder or file system); "
                              "expected a folder this account can write")  # fmt: skip
    extra = sorted(p.name for p in data_dir.iterdir() if p.name not in (PG_DIR, ARTIFACTS_DIR, "mlflow.log"))
    if extra:
        raise TeamServerError(f"--data-dir {data_dir}: holds other files ({', '.join(extra[:5])}); expected an "
                              f"empty folder or one this command made ({PG_DIR}/, {ARTIFACTS_DIR}/)")
    return data_dir


class TeamServer:
    """PostgreSQL + `mlflow server` on one data folder. `start()` then `stop()`; `url` is the tracking URI."""

    def __init__(self, data_dir: Path, port: int = 5000, workers: int = 2, run_as: str | None = None):
        self.data_dir = check_data_dir(data_dir)
        check_port_free(port)
        if workers < 1:
            raise TeamServerError(f"--workers {workers}: expected at least 1")
        self.port, self.workers, self.run_as = port, workers, run_as
        self.postgres: Postgres | None = None
        self.mlflow: MlflowServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "TeamServer":
        """Starts PostgreSQL, then MLflow on it; on any failure (or Ctrl-C) whatever started is stopped."""
        # the account and PostgreSQL's binaries first: a wrong --run-as left an empty data folder behind
        self.postgres = Postgres(self.data_dir / PG_DIR, run_as=self.run_as)
        try:  # root passes os.access where the file system still refuses (e.g. /sys)
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            if os.geteuid() == 0:  # PostgreSQL runs as another account, which must be able to enter this folder
                self.data_dir.chmod(0o711)
        except OSError as e:
            raise TeamServerError(f"--data-dir {self.data_dir}: cannot create or set up the folder "
                                  f"({e.strerror or e}); expected a folder this account can write") from None
        try:
            self.postgres.start()
            self.mlflow = MlflowServerProcess(self.postgres.uri(), self.data_dir / ARTIFACTS_DIR, self.port,
                                              self.workers, log_path=self.data_dir / "mlflow.log")  # fmt: skip
            self.mlflow.start()
            _mark_as_team_store(self.mlflow.url)
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self) -> bool:
        return all(p is not None and p.proc is not None and p.proc.poll() is None for p in (self.postgres, self.mlflow))

    def stop(self) -> None:
        if self.mlflow is not None:
            self.mlflow.stop()
        if self.postgres is not None:
            self.postgres.stop()


def _mark_as_team_store(url: str) -> None:
    """Tags the Default experiment with the server's address (`runs.TAG_TEAM_SERVER`), through the server: a
    search, report or export given the database URI instead finds the tag and refuses it before Ray starts
    (`preflight.check_database`). Best effort: a store whose Default experiment is gone keeps the older checks."""
    import json

    from .runs import TAG_TEAM_SERVER

    body = json.dumps({"experiment_id": "0", "key": TAG_TEAM_SERVER, "value": url}).encode()
    request = urllib.request.Request(url + "/api/2.0/mlflow/experiments/set-experiment-tag", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30):
            pass
    except OSError:  # (urllib's HTTPError too: a deleted Default experiment)
        pass


def tunnel_hint(port: int) -> str:
    return f"ssh -N -L {port}:127.0.0.1:{port} {_login()}@{socket.gethostname()}"


def _login() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "USER"


def serve(data_dir: Path, port: int = 5000, workers: int = 2, run_as: str | None = None, echo=print) -> int:
    """Runs the team server in the foreground until SIGINT / SIGTERM (exit 0) or until one of its two servers
    dies (exit 1); both are stopped either way."""
    server = TeamServer(data_dir, port=port, workers=workers, run_as=run_as)

    hung_up = False

    def on_signal(signum, frame):
        nonlocal hung_up
        hung_up = hung_up or signum == signal.SIGHUP
        raise KeyboardInterrupt  # also during start-up: `finally` stops whatever started

    # SIGHUP: the terminal (an SSH session) went away. Both servers run in sessions of their own, so without this
    # they outlived the command, holding the port and the data folder
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        server.start()
        pg = server.postgres
        echo(f"PostgreSQL: {pg.version}, data in {pg.data_dir}, unix socket only (no TCP port)")
        echo(f"artifacts:  {server.data_dir / ARTIFACTS_DIR}")
        echo(f"MLflow:     {server.url}   (bound to 127.0.0.1; log: {server.data_dir / 'mlflow.log'})")
        echo(f"searches:   {exe('hsc-search')} run --tracking-uri {server.url}   (with any other flags of run)")
        echo(f"colleagues: {tunnel_hint(port)}")
        echo(f"            (on their machine; then they open http://127.0.0.1:{port})")
        echo("Ctrl-C stops both servers; the data folder keeps everything for the next start.")
        while server.alive():
            time.sleep(0.5)
        which = "PostgreSQL" if server.postgres.proc.poll() is not None else "mlflow server"
        echo(f"{which} exited; stopping (logs in {server.data_dir})")
        return 1
    except KeyboardInterrupt:
        if not hung_up:  # nobody reads a hung-up terminal, and writing to it may fail
            echo("stopping ...")
        return 0
    finally:
        for s in (signal.SIGINT, signal.SIGHUP):  # a second Ctrl-C must not cut the shutdown short
            signal.signal(s, signal.SIG_IGN)
        server.stop()
        for s, h in old.items():
            signal.signal(s, h)
