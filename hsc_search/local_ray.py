"""The embedded local Ray instance of a search: bound to 127.0.0.1, recorded, and never left behind.

`start_local_ray(**init_kwargs)` replaces ``ray.init(address="local", ...)`` in the driver:

1. it ends the leftovers of earlier local instances started by hsc-search whose driver is gone (see
   `cleanup_leftovers`);
2. it records the new instance (``<cache>/local_ray/<id>.json``: boot id, driver pid and start time, Ray temp
   dir, and, once known, the session dir and the pid + start time of each of its processes) and starts a small
   watchdog process (this file run as a script, standard library only) that waits for the driver to die and
   then ends whatever is left of that instance;
3. it starts the instance with node IP 127.0.0.1, which makes every server of it listen on the loopback only.

Why the watchdog: Ray already ties gcs_server and raylet to the driver (``PR_SET_PDEATHSIG``), and the workers
exit when the raylet dies, but after a SIGKILL of the driver ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent``
notice the dead raylet and then hang for about a minute in ``publish_error_to_driver`` (a blocking call to the
dead GCS), ignoring SIGTERM. The watchdog SIGKILLs them at once; if it was killed too (``kill -9`` of the whole
group, OOM killer), the next `start_local_ray` / `cleanup_leftovers` does the same from the record.

What is killed, and only that: processes of the current user, in the current boot, belonging to a recorded
instance whose driver (pid + start time) is no longer alive, where "belonging" is proven by either the exact pid
+ start time recorded for that instance, or by being a Ray process (``ray::`` title, or the executable or a
script in the recorded Ray package dir) whose command line, working directory or an open file is inside the
recorded session dir (every Ray process of a session keeps its log files there). A Ray cluster the user started,
another live hsc-search, or a recycled pid therefore never match. Every signal is sent through a pidfd opened
and checked against the recorded start time, so a pid reused in between cannot be hit either.

Binding: ``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough, Ray rewrites a loopback node address
to the machine's address (``services.resolve_ip_for_localhost`` -> ``get_node_ip_address``) unless
``ray_constants.ENABLE_RAY_CLUSTER`` is false, i.e. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's own setting,
the default on macOS and Windows). With node IP 127.0.0.1 the C++ gRPC servers (gcs_server, raylet node manager
and object manager, core workers incl. the driver) listen on 127.0.0.1 instead of the wildcard, and the Python
agents bind to the node IP (runtime env agent) or to localhost when the node IP is localhost (dashboard agent
gRPC / HTTP, metrics export: ``dashboard/agent.py``, ``dashboard/http_server_agent.py``,
``dashboard/modules/reporter/reporter_agent.py``). Only the local instance is affected; connecting to a cluster
(``--address`` / RAY_ADDRESS) does not go through this module.

Linux only for the process part (it reads /proc); elsewhere `start_local_ray` only starts Ray on 127.0.0.1.
Ray is imported inside the functions, never at module import. psutil is not used (it is only in the test extra).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
RECORD_SUBDIR = "local_ray"
RECORD_VERSION = 1
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # ray._private.ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
_PROC = Path("/proc")

# the instance started by this process (one at a time, like ray.init)
_current: "LocalRay | None" = None


@dataclass
class LocalRay:
    """The local instance started by `start_local_ray`."""

    session_dir: str
    record_path: Path | None  # None when the record could not be written
    node_ip: str
    watchdog: subprocess.Popen | None


# ---------------------------------------------------------------------------------------------- /proc helpers
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks since boot) of a process, None when it does not exist."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2 :].split()  # the command name may contain spaces and parentheses
    try:
        return rest[0].decode(), int(rest[1]), int(rest[19])
    except (IndexError, ValueError):
        return None


def _alive(pid: int, start: int) -> bool:
    """True when the process `pid` started at `start` still runs (a zombie or a reused pid counts as gone)."""
    st = _stat(pid)
    return st is not None and st[2] == start and st[0] not in ("Z", "X", "x")


def _start_of(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st[2]


def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _open_paths(pid: int) -> Iterable[str]:
    """The working directory and every open file of a process (only readable for our own processes)."""
    yield _readlink(_PROC / str(pid) / "cwd")
    try:
        fds = os.listdir(_PROC / str(pid) / "fd")
    except OSError:
        return
    for fd in fds:
        yield _readlink(_PROC / str(pid) / "fd" / fd)


def _own(pid: int) -> bool:
    try:
        return os.stat(_PROC / str(pid)).st_uid == os.getuid()
    except OSError:
        return False


def _pids() -> list[int]:
    try:
        return [int(n) for n in os.listdir(_PROC) if n.isdigit()]
    except OSError:
        return []


def _ancestors(pid: int) -> set[int]:
    """`pid` and its ancestors: never targets."""
    out: set[int] = set()
    while pid > 0 and pid not in out:
        out.add(pid)
        st = _stat(pid)
        if st is None:
            break
        pid = st[1]
    return out


def _inside(path: str, root: str) -> bool:
    return bool(path) and (path == root or path.startswith(root.rstrip("/") + "/"))


def _mentions(text: str, root: str) -> bool:
    """`text` names `root` or a path inside it (not merely a longer name that starts like it)."""
    root = root.rstrip("/")
    i = text.find(root)
    while i >= 0:
        end = i + len(root)
        if end == len(text) or text[end] in "/ \"',:;=":
            return True
        i = text.find(root, i + 1)
    return False


def _is_ray_process(pid: int, cmd: list[str], ray_dirs: list[str]) -> bool:
    if cmd and cmd[0].startswith("ray::"):
        return True
    exe = _readlink(_PROC / str(pid) / "exe")
    return any(_inside(exe, d) or any(_mentions(a, d) for a in cmd) for d in ray_dirs)


def session_processes(
    session_dir: str, ray_dirs: list[str], recorded: dict[int, int] | None = None
) -> dict[int, int]:
    """The live processes (pid -> start time) of the Ray session in `session_dir`: those recorded (exact pid and
    start time), and the Ray processes of the current user whose command line, working directory or an open file
    lies inside the session dir. Never this process or its ancestors."""
    recorded = recorded or {}
    exclude = _ancestors(os.getpid())
    found: dict[int, int] = {}
    for pid in _pids():
        if pid in exclude:
            continue
        st = _stat(pid)
        if st is None or st[0] in ("Z", "X", "x") or not _own(pid):
            continue
        start = st[2]
        if recorded.get(pid) == start:
            found[pid] = start
            continue
        cmd = _cmdline(pid)
        if not _is_ray_process(pid, cmd, ray_dirs):
            continue
        if any(_mentions(a, session_dir) for a in cmd) or any(_inside(p, session_dir) for p in _open_paths(pid)):
            if _start_of(pid) == start:  # still the same process after reading it
                found[pid] = start
    return found


# ---------------------------------------------------------------------------------------------- ending processes
def _signal(pid: int, start: int, sig: int) -> bool:
    """Sends `sig` to the process `pid` only if it is still the one that started at `start`. A pidfd opened
    before the check makes this exact: it keeps referring to that process even if the pid is reused."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): check, then kill by pid
        if not _alive(pid, start):
            return False
        try:
            os.kill(pid, sig)
            return True
        except OSError:
            return False
    try:
        if not _alive(pid, start):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _wait_gone(procs: dict[int, int], timeout: float) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    left = {p: s for p, s in procs.items() if _alive(p, s)}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {p: s for p, s in left.items() if _alive(p, s)}
    return left


def terminate(procs: dict[int, int], term_timeout: float = 2.0, kill_timeout: float = 3.0) -> dict[int, int]:
    """SIGTERM, wait up to `term_timeout` s, SIGKILL what is left, wait up to `kill_timeout` s. Returns the
    processes still alive after that (normally none; a process in uninterruptible sleep may take longer)."""
    for pid, start in procs.items():
        _signal(pid, start, signal.SIGTERM)
    left = _wait_gone(procs, term_timeout)
    for pid, start in left.items():
        _signal(pid, start, signal.SIGKILL)
    return _wait_gone(left, kill_timeout)


# ---------------------------------------------------------------------------------------------- records
def record_dir() -> Path:
    """Where instances are recorded: $HSC_CACHE_DIR/local_ray, else ~/.cache/hsc-search/local_ray."""
    base = os.environ.get("HSC_CACHE_DIR") or "~/.cache/hsc-search"
    return Path(base).expanduser() / RECORD_SUBDIR


def _write_record(path: Path, rec: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, path)


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("version") == RECORD_VERSION else None


def _guess_session_dirs(rec: dict[str, Any]) -> list[str]:
    """The session dir(s) of an instance whose driver died inside ray.init, before it was recorded: Ray names it
    <temp_dir>/session_<local date and time>_<driver pid> (ray/_private/node.py), named after the record."""
    import datetime

    temp = rec.get("temp_dir")
    pid = rec.get("driver", {}).get("pid")
    if not temp or not pid:
        return []
    found = []
    for d in Path(temp).glob(f"session_*_{pid}"):
        stamp = d.name[len("session_") : -len(f"_{pid}")]
        try:
            t = datetime.datetime.strptime(stamp, "%Y-%m-%d_%H-%M-%S_%f").timestamp()
        except ValueError:
            continue
        if t >= float(rec.get("created", 0)) - 1.0 and d.is_dir() and not d.is_symlink():
            found.append(str(d))
    return sorted(found)


def _sweep(rec: dict[str, Any], term_timeout: float, kill_timeout: float) -> tuple[list[int], dict[int, int]]:
    """Ends every process of the recorded instance. Returns (pids ended, pids still alive)."""
    session_dirs = [rec["session_dir"]] if rec.get("session_dir") else _guess_session_dirs(rec)
    ray_dirs = [d for d in rec.get("ray_dirs", []) if d]
    recorded = {int(p["pid"]): int(p["start"]) for p in rec.get("procs", [])}
    ended: list[int] = []
    left: dict[int, int] = {}
    for _ in range(3):  # a second pass catches a child spawned while the first one was ending its parent
        procs = {p: s for p, s in recorded.items() if _alive(p, s) and p not in _ancestors(os.getpid())}
        for session_dir in session_dirs:
            procs.update(session_processes(session_dir, ray_dirs, recorded))
        if not procs:
            break
        left = terminate(procs, term_timeout, kill_timeout)
        ended += [p for p in procs if p not in left]
        if left:
            break
    return ended, left


def cleanup_leftovers(term_timeout: float = 2.0, kill_timeout: float = 3.0) -> list[int]:
    """Ends what is left of earlier local instances started by hsc-search (this user, this boot) whose driver is
    no longer alive, and removes their records. A record whose driver still runs (another search) is left
    alone. Returns the pids ended. Bounded: at most about (term_timeout + kill_timeout) per leftover instance."""
    if not sys.platform.startswith("linux"):
        return []
    ended: list[int] = []
    boot = _boot_id()
    for path in sorted(record_dir().glob("*.json")):
        rec = _read_record(path)
        if rec is None:
            log.warning("ignoring unreadable local Ray record %s", path)
            continue
        if rec.get("boot_id") != boot:  # from an earlier boot: nothing of it can be running
            path.unlink(missing_ok=True)
            continue
        drv = rec.get("driver", {})
        if _alive(int(drv.get("pid", 0)), int(drv.get("start", -1))):
            continue
        done, left = _sweep(rec, term_timeout, kill_timeout)
        ended += done
        if done:
            log.warning(
                "ended %d leftover process(es) of an earlier local Ray instance (%s)",
                len(done),
                rec.get("session_dir") or "session dir unknown",
            )
        if left:
            log.warning("could not end leftover local Ray process(es) %s; record kept: %s", sorted(left), path)
        else:
            path.unlink(missing_ok=True)
    return ended


def other_drivers() -> list[dict[str, Any]]:
    """The drivers (pid, start, argv) of the other local instances hsc-search started on this machine that still
    run (this user's records, this boot): searches that size themselves for the same cores."""
    if not sys.platform.startswith("linux"):
        return []
    boot, me, out = _boot_id(), os.getpid(), []
    for path in sorted(record_dir().glob("*.json")):
        rec = _read_record(path)
        drv = rec.get("driver", {}) if rec is not None and rec.get("boot_id") == boot else {}
        pid = int(drv.get("pid", 0) or 0)
        if pid and pid != me and _alive(pid, int(drv.get("start", -1))):
            out.append(drv)
    return out


# ---------------------------------------------------------------------------------------------- watchdog
def _start_watchdog(path: Path) -> subprocess.Popen | None:
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), "--watch", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            close_fds=True,
            start_new_session=True,  # a Ctrl-C or hang-up of the driver's terminal must not end it first
        )
    except OSError as e:
        log.warning("no watchdog for the local Ray instance (%s); leftovers are ended on the next start", e)
        return None


def _wait_for_exit(pid: int, start: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        import select

        try:
            if _alive(pid, start):  # the pidfd refers to the driver: wait for it
                select.select([fd], [], [])
            return
        finally:
            os.close(fd)
    while _alive(pid, start):
        time.sleep(0.5)


def _watch(path: Path) -> int:
    """The watchdog: waits for the driver of the recorded instance to exit, then ends what is left of it."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    rec = _read_record(path)
    if rec is None:
        return 0
    drv = rec["driver"]
    _wait_for_exit(int(drv["pid"]), int(drv["start"]))
    rec = _read_record(path)  # updated with the session dir and processes after ray.init
    if rec is None:  # stopped cleanly (stop_local_ray removed the record)
        return 0
    _, left = _sweep(rec, 2.0, 3.0)
    if not left:
        path.unlink(missing_ok=True)
    return 0


# ---------------------------------------------------------------------------------------------- public API
def start_local_ray(**init_kwargs: Any) -> LocalRay:
    """Starts the embedded local Ray instance of a search, listening on 127.0.0.1 only.

    First ends the leftovers of earlier hsc-search local instances whose driver is gone (`cleanup_leftovers`),
    then records this one and starts its watchdog, then calls
    ``ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, **init_kwargs)`` with
    Ray's loopback mode on (see the module docstring). `init_kwargs` are passed to ray.init (``log_to_driver``,
    ``logging_level``, ``num_cpus``, ``_temp_dir``...); ``address`` and ``_node_ip_address`` are not accepted.
    """
    global _current
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        if _current is not None:
            return _current
        raise RuntimeError("Ray is already initialized in this process; start_local_ray starts a new instance")
    if _current is not None:  # ours, shut down with ray.shutdown(): end what is left of it, stop its watchdog
        stop_local_ray()
    for key in ("address", "_node_ip_address"):
        if init_kwargs.get(key) not in (None, "local", LOOPBACK):
            raise ValueError(f"start_local_ray starts a local instance on {LOOPBACK}; {key} cannot be given")
        init_kwargs.pop(key, None)
    init_kwargs.setdefault("include_dashboard", False)

    linux = sys.platform.startswith("linux")
    if linux:
        try:
            cleanup_leftovers()
        except Exception as e:  # never block a search on the cleanup of an earlier one
            log.warning("cleaning up earlier local Ray instances failed: %s", e)

    import ray

    from .ray_internals import (default_temp_dir, local_node, loopback_cluster_flag, quiet_token_auth_notice,
                                ray_processes_in_their_own_group)

    ray_constants, flag = loopback_cluster_flag()

    ray_dir = os.path.dirname(os.path.abspath(ray.__file__))
    me = os.getpid()
    path = record_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{me}-{uuid.uuid4().hex[:8]}.json"
    rec: dict[str, Any] = {
        "version": RECORD_VERSION,
        "boot_id": _boot_id(),
        "created": time.time(),
        "driver": {"pid": me, "start": _start_of(me) if linux else 0, "argv": sys.argv[:4]},
        "temp_dir": init_kwargs.get("_temp_dir") or default_temp_dir(),
        "ray_dirs": sorted({ray_dir, os.path.realpath(ray_dir)}),
        "session_dir": None,
        "procs": [],
    }
    watchdog = None
    if linux:
        try:
            _write_record(path, rec)
            watchdog = _start_watchdog(path)
        except OSError as e:
            log.warning("cannot record the local Ray instance in %s (%s); it may be left behind", path, e)
            path = None  # type: ignore[assignment]

    old_env = os.environ.get(_CLUSTER_ENV)
    old_flag = getattr(ray_constants, flag)
    os.environ[_CLUSTER_ENV] = "0"  # inherited by gcs_server, raylet, agents and (through raylet) the workers
    setattr(ray_constants, flag, False)  # this process may have imported ray before the variable was set
    try:
        with quiet_token_auth_notice(), ray_processes_in_their_own_group():  # a SIGTERM to the driver's group
            ray.init(address="local", _node_ip_address=LOOPBACK, **init_kwargs)  # ends the search, not Ray first
    except BaseException:
        if path is not None:
            _sweep(_read_record(path) or rec, 1.0, 2.0)
            path.unlink(missing_ok=True)
        _stop_watchdog(watchdog)
        raise
    finally:
        setattr(ray_constants, flag, old_flag)
        if old_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = old_env

    node = local_node()
    session_dir = node.get_session_dir_path()
    if node.node_ip_address != LOOPBACK:  # would mean Ray changed how it resolves the node address
        log.warning("local Ray node address is %s, not %s", node.node_ip_address, LOOPBACK)
    if path is not None:
        rec["session_dir"] = session_dir
        procs = session_processes(session_dir, rec["ray_dirs"])
        rec["procs"] = [{"pid": p, "start": s, "cmd": (_cmdline(p) or ["?"])[0][:80]} for p, s in sorted(procs.items())]
        if watchdog is not None:
            rec["watchdog"] = {"pid": watchdog.pid, "start": _start_of(watchdog.pid)}
        try:
            _write_record(path, rec)
        except OSError as e:
            log.warning("cannot update the local Ray record %s (%s)", path, e)
    _current = LocalRay(session_dir=session_dir, record_path=path, node_ip=node.node_ip_address, watchdog=watchdog)
    return _current


def _stop_watchdog(watchdog: subprocess.Popen | None) -> None:
    if watchdog is None or watchdog.poll() is not None:
        return
    watchdog.terminate()
    try:
        watchdog.wait(2.0)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        try:
            watchdog.wait(2.0)
        except subprocess.TimeoutExpired:
            pass


def stop_local_ray(term_timeout: float = 2.0, kill_timeout: float = 3.0) -> list[int]:
    """Shuts down the instance started by `start_local_ray` in this process (``ray.shutdown()``), ends any of its
    processes Ray left running (bounded), removes its record and stops its watchdog. Returns the pids it had to
    end itself. Does nothing when no local instance was started here."""
    global _current
    cur, _current = _current, None
    if cur is None:
        return []
    import ray

    ray.shutdown()
    ended: list[int] = []
    if cur.record_path is not None:
        rec = _read_record(cur.record_path)
        if rec is not None:
            ended, left = _sweep(rec, term_timeout, kill_timeout)
            if left:
                log.warning("local Ray process(es) %s did not exit; record kept: %s", sorted(left), cur.record_path)
            else:
                cur.record_path.unlink(missing_ok=True)
    _stop_watchdog(cur.watchdog)
    return ended


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--watch":
    sys.exit(_watch(Path(sys.argv[2])))
