"""The embedded local Ray instance (hsc_search/local_ray.py): listens on the loopback only, and nothing of it
outlives its driver for long: its watchdog ends it when the driver dies, and if the watchdog died too, the next
`start_local_ray` ends the leftovers. Processes that are not provably ours are never touched.

Real Ray in subprocesses, no mocks; every process a test starts is ended by pid in a `finally`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

REPO = Path(__file__).resolve().parents[1]

# A driver: starts the local instance through the API, runs a remote task, says READY (with the facts the tests
# need as JSON), then waits to be killed.
DRIVER = textwrap.dedent(
    """
    import json, logging, os, sys, time
    from hsc_search.local_ray import start_local_ray
    lr = start_local_ray(num_cpus=1, log_to_driver=False, configure_logging=True, logging_level=logging.WARNING)
    import ray
    @ray.remote
    def f(x):
        return x + 1
    assert ray.get(f.remote(1)) == 2
    info = {"session_dir": lr.session_dir, "record": str(lr.record_path), "node_ip": lr.node_ip,
            "watchdog": lr.watchdog.pid if lr.watchdog else None, "auth_mode": os.environ.get("RAY_AUTH_MODE")}
    print("READY " + json.dumps(info), flush=True)
    time.sleep(600)
    """
)


# ---------------------------------------------------------------------------------------------- helpers
def _env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "HSC_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)  # Ray's default for a new local instance
    return env


class Driver:
    def __init__(self, cache: Path, log: Path):
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER],
            env=_env(cache),
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )
        self.info: dict = {}

    def wait_ready(self, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        buf = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                buf += line
                if line.startswith("READY "):
                    self.info = json.loads(line[len("READY ") :])
                    return self.info
        self.log.flush()
        raise AssertionError(f"driver not ready (rc={self.proc.poll()}): {buf}\n{Path(self.log.name).read_text()}")


def _mentions(text: str, root: str) -> bool:
    i = text.find(root)
    return i >= 0 and (len(text) == i + len(root) or text[i + len(root)] in "/ '\",:;=")


def _instance_procs(driver_pid: int | None, session_dir: str) -> dict[int, "psutil.Process"]:
    """The processes of one instance: the driver's process tree, and every process whose command line, working
    dir or an open file names its session dir."""
    out: dict[int, psutil.Process] = {}
    if driver_pid is not None:
        try:
            d = psutil.Process(driver_pid)
            out[d.pid] = d
            out.update({c.pid: c for c in d.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    for p in psutil.process_iter():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            paths = [p.cwd(), *(f.path for f in p.open_files())]
            if any(_mentions(a, session_dir) for a in p.cmdline()) or any(_mentions(x, session_dir) for x in paths):
                out[p.pid] = p
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return {pid: p for pid, p in out.items() if pid != os.getpid()}


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _listening(procs: dict[int, "psutil.Process"]) -> list[tuple[int, str, str, int]]:
    """(pid, name, ip, port) of every listening TCP socket and unconnected bound UDP socket of `procs` (what
    `ss -ltnp` / `ss -lunp` show); unix sockets are not inet and do not appear."""
    socks = []
    for pid, p in procs.items():
        try:
            name = p.name()
            for c in p.net_connections(kind="inet"):
                tcp_listen = c.type == socket.SOCK_STREAM and c.status == psutil.CONN_LISTEN
                udp_bound = c.type == socket.SOCK_DGRAM and not c.raddr
                if (tcp_listen or udp_bound) and c.laddr:
                    socks.append((pid, name, c.laddr.ip, c.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return socks


def _alive(procs: dict[int, "psutil.Process"]) -> dict[int, str]:
    out = {}
    for pid, p in procs.items():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out[pid] = " ".join(p.cmdline())[:100] or p.name()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return out


def _wait_all_gone(procs: dict[int, "psutil.Process"], timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    left = _alive(procs)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _alive(procs)
    return left


def _kill_all(procs: dict[int, "psutil.Process"]) -> None:
    """Test cleanup: SIGKILL exactly the processes we found (psutil checks the pid was not reused)."""
    for p in procs.values():
        try:
            p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    psutil.wait_procs(list(procs.values()), timeout=5)


def _stop_driver(drv: Driver) -> None:
    if drv.proc.poll() is None:
        drv.proc.kill()
    try:
        drv.proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    drv.log.close()


# ---------------------------------------------------------------------------------------------- the instance
@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A first local instance started through the API in a driver subprocess (killed by the tests below)."""
    cache = tmp_path_factory.mktemp("local_ray_cache")
    drv = Driver(cache, cache / "driver1.log")
    seen: dict[int, psutil.Process] = {}
    try:
        info = drv.wait_ready()
        procs = _instance_procs(drv.proc.pid, info["session_dir"])
        seen.update(procs)
        yield {"drv": drv, "info": info, "procs": procs, "cache": cache, "seen": seen}
    finally:
        _stop_driver(drv)
        _kill_all({**seen, **_instance_procs(None, drv.info["session_dir"])} if drv.info else seen)


def test_local_instance_listens_on_loopback_only(first):
    procs, info = first["procs"], first["info"]
    assert info["node_ip"] == "127.0.0.1"
    # token authentication on (Ray's default for a new local instance), without Ray's notice asking to opt out
    assert info["auth_mode"] == "token"
    first["drv"].log.flush()
    assert "Token authentication is enabled" not in Path(first["drv"].log.name).read_text()
    names = {p.name() for p in procs.values()}
    assert {"gcs_server", "raylet"} <= names, names
    socks = _listening(procs)
    assert len({pid for pid, *_ in socks}) >= 3, socks  # gcs_server, raylet, the driver, workers listen
    exposed = [s for s in socks if not _loopback(s[2])]
    assert not exposed, f"listening beyond the loopback: {exposed}"


def test_a_search_beside_another_local_instance_says_they_share_the_cores(first, tmp_path):
    """Two searches on one machine each started a local Ray instance sized for every core and ran twice the
    trials the cores hold, with nothing said (a walkthrough of two searches at once). The second says so, naming
    the other's driver; with --max-concurrent given it does not (the user has divided them). A --max-concurrent
    above the cores, with as many trials, is said (Ray ran what fit and the rest waited, without a word)."""
    drv = first["drv"].proc.pid
    data = "synthetic:ave?n_train=64&n_val=32&n_test=32&dim_audio=8&dim_visual=8&num_classes=4&seed=1"
    env = _env(first["cache"])  # (not TMPDIR=tmp_path: Ray's socket paths there were over the 107-byte limit)
    said, capped, cpus = [], [], None
    for extra in ([], ["--max-concurrent", "1"], "more than fit"):
        if extra == "more than fit":  # one more trial than the local instance's CPUs hold, as many to run
            extra = ["--max-concurrent", str(cpus + 1), "--num-samples", str(cpus + 1)]
        proc = subprocess.run([str(Path(sys.executable).parent / "hsc-search"), "run", "--num-samples", "1",
                               "--max-epochs", "1", "--data", data, "--no-mlflow", "--name", f"s{len(said)}",
                               "--storage", str(tmp_path / "rr"), *extra], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        said.append([ln for ln in proc.stdout.splitlines() if "other search" in ln])
        capped.append([ln for ln in proc.stdout.splitlines() if "--max-concurrent" in ln and "holds" in ln])
        cpus = int(float(re.search(r"Ray: 1 node\(s\), ([\d.]+) CPUs", proc.stdout).group(1)))
    assert len(said[0]) == 1 and said[0][0].startswith(f"note: 1 other search on this machine runs a local Ray "
                                                       f"instance of its own (pid {drv} ("), said  # fmt: skip
    assert "--max-concurrent divides them" in said[0][0], said
    assert said[1] == [] and said[2] == [], said
    assert capped[:2] == [[], []] and capped[2] == [
        f"note: --max-concurrent {cpus + 1}, but the cluster holds {cpus} trial{'s' * (cpus != 1)} at "
        "once (1 CPU each): that many run at a time, the others wait for a free slot"], (capped, proc.stdout)
    assert first["drv"].proc.poll() is None  # the other instance is left alone


def test_address_auto_does_not_join_another_searchs_own_instance(first, tmp_path):
    """With no `ray start` address file, Ray's `auto` joins whatever GCS it finds running here: another search's
    own local instance, or one of several instances at random (a walkthrough: a search ran on another job's
    cluster). Refused in one line, before Ray is started or joined."""
    env = {**_env(first["cache"]), "RAY_TMPDIR": str(tmp_path)}  # no address file there
    proc = subprocess.run([str(Path(sys.executable).parent / "hsc-search"), "run", "--address", "auto",
                           "--no-mlflow", "--name", "a", "--storage", str(tmp_path / "rr")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert err.startswith("error: --address auto: "), err
    # this instance alone (127.0.0.1, another search's), or it among others when another Ray runs on this machine
    assert (f"local instance of another hsc-search search is (driver pid {first['drv'].proc.pid})" in err
            or "Ray instances run on this machine" in err), err  # fmt: skip
    assert not (tmp_path / "rr" / "a").exists()


def test_leftovers_are_ended_by_the_watchdog_or_the_next_start(first, tmp_path):
    drv1, info1, cache = first["drv"], first["info"], first["cache"]
    seen = first["seen"]
    drv2 = None
    try:
        # 1. SIGKILL the driver *and* its watchdog (as an OOM kill or `kill -9` of everything would): Ray's own
        #    fate sharing ends gcs_server, raylet and the workers, but its agents linger
        watchdog = psutil.Process(info1["watchdog"])
        seen[watchdog.pid] = watchdog
        procs1 = _instance_procs(drv1.proc.pid, info1["session_dir"])
        seen.update(procs1)
        watchdog.kill()
        os.kill(drv1.proc.pid, signal.SIGKILL)
        drv1.proc.wait(10)
        time.sleep(2.0)
        left1 = _alive(procs1)
        assert any(c.startswith("ray::") for c in left1.values()), f"expected lingering agents: {left1}"
        assert Path(info1["record"]).exists()

        # 2. the next start ends them before starting its own instance, which works (READY = a task ran)
        drv2 = Driver(cache, tmp_path / "driver2.log")
        info2 = drv2.wait_ready()
        procs2 = _instance_procs(drv2.proc.pid, info2["session_dir"])
        seen.update(procs2)
        still = _wait_all_gone({**procs1, **_instance_procs(None, info1["session_dir"])}, 10.0)
        assert not still, f"leftovers of the first instance survived the second start: {still}"
        assert not Path(info1["record"]).exists()
        assert not [s for s in _listening(procs2) if not _loopback(s[2])]

        # 3. SIGKILL of the second driver alone: its watchdog ends the whole instance within seconds
        assert info2["watchdog"] and psutil.pid_exists(info2["watchdog"])
        procs2 = _instance_procs(drv2.proc.pid, info2["session_dir"])
        seen.update(procs2)
        t0 = time.monotonic()
        os.kill(drv2.proc.pid, signal.SIGKILL)
        drv2.proc.wait(10)
        still2 = _wait_all_gone({**procs2, **_instance_procs(None, info2["session_dir"])}, 15.0)
        assert not still2, f"the watchdog left processes of the second instance: {still2}"
        print(f"watchdog ended the instance {time.monotonic() - t0:.1f} s after the driver's SIGKILL")
        deadline = time.monotonic() + 5
        while Path(info2["record"]).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(info2["record"]).exists()
    finally:
        if drv2 is not None:
            _stop_driver(drv2)
            if drv2.info:
                seen.update(_instance_procs(None, drv2.info["session_dir"]))
        _kill_all(seen)


# ---------------------------------------------------------------------------------------------- never the others
def _spawn(args: list[str], cwd: Path, started: list[subprocess.Popen]) -> psutil.Process:
    p = subprocess.Popen(args, cwd=str(cwd), stdin=subprocess.DEVNULL, start_new_session=True)
    started.append(p)
    return psutil.Process(p.pid)


def _ticks(p: psutil.Process) -> int:
    raw = Path(f"/proc/{p.pid}/stat").read_bytes()
    return int(raw[raw.rfind(b")") + 2 :].split()[19])


def test_cleanup_touches_only_provable_leftovers(tmp_path, monkeypatch):
    from hsc_search import local_ray

    monkeypatch.setenv("HSC_CACHE_DIR", str(tmp_path / "cache"))
    ray_dir = tmp_path / "site-packages" / "ray"
    ours, other, live = (tmp_path / "ray" / f"session_x_{n}" for n in ("1", "2", "3"))
    for d in (ray_dir, ours, other, live, ours / "logs"):
        d.mkdir(parents=True)
    started: list[subprocess.Popen] = []
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()
        # a plain `sleep` whose pid is recorded with another start time: a recycled pid
        recycled = _spawn(["sleep", "60"], tmp_path, started)
        # an unrelated python process working inside our session dir (a user reading its logs): not Ray
        reader = _spawn([sys.executable, "-c", "import time; f = open('logs/x.log', 'w'); time.sleep(60)"],
                        ours, started)  # fmt: skip
        # a Ray-looking process of another session (a cluster the user started)
        foreign = _spawn(["bash", "-c", "exec -a 'ray::UserCluster' sleep 60"], other, started)
        # a Ray-looking process of an instance whose driver is alive (another search running now)
        busy = _spawn(["bash", "-c", "exec -a 'ray::RuntimeEnvAgent' sleep 60"], live, started)
        # the positive control: a Ray-titled process inside our dead instance's session dir is ended
        leftover = _spawn(["bash", "-c", "exec -a 'ray::DashboardAgent' sleep 60"], ours, started)
        titled = ((foreign, "ray::UserCluster"), (busy, "ray::RuntimeEnvAgent"), (leftover, "ray::DashboardAgent"))
        deadline = time.monotonic() + 20  # the exec's happen (0.3 s of sleep could be short on a loaded machine)
        while any(p.cmdline()[:1] != [title] for p, title in titled) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftover.cmdline()[0] == "ray::DashboardAgent"

        rec_dir = local_ray.record_dir()
        rec_dir.mkdir(parents=True)
        base = {"version": 1, "boot_id": local_ray._boot_id(), "created": time.time() - 5, "temp_dir": None,
                "ray_dirs": [str(ray_dir)]}  # fmt: skip
        dead_rec = {**base, "driver": {"pid": dead.pid, "start": 1}, "session_dir": str(ours),
                    "procs": [{"pid": recycled.pid, "start": _ticks(recycled) + 1}]}  # fmt: skip
        me = psutil.Process()
        live_rec = {**base, "driver": {"pid": me.pid, "start": _ticks(me)}, "session_dir": str(live),
                    "procs": [{"pid": busy.pid, "start": _ticks(busy)}]}  # fmt: skip
        (rec_dir / "dead.json").write_text(json.dumps(dead_rec))
        (rec_dir / "live.json").write_text(json.dumps(live_rec))
        (rec_dir / "old-boot.json").write_text(json.dumps({**dead_rec, "boot_id": "another-boot"}))

        t0 = time.monotonic()
        ended = local_ray.cleanup_leftovers(term_timeout=1.0, kill_timeout=2.0)
        assert time.monotonic() - t0 < 5
        assert ended == [leftover.pid]
        psutil.wait_procs([leftover], timeout=3)
        assert not leftover.is_running() or leftover.status() == psutil.STATUS_ZOMBIE
        for p in (recycled, reader, foreign, busy):
            assert p.is_running() and p.status() != psutil.STATUS_ZOMBIE, p
        assert sorted(f.name for f in rec_dir.glob("*.json")) == ["live.json"]
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
            p.wait(5)
