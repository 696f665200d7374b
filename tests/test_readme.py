"""Every command `make demo` prints and every ```bash block of the README runs as printed, in a fresh copy of the
repository after `make demo`, from a shell that has activated nothing.

The rules (the README states them too):
- a block whose first line starts with `# not run by the README test` is skipped (cluster, cloud, a server that
  runs until Ctrl-C: `make ui` is started by this test instead, and its page is fetched);
- `make demo` ran first, as is; `make test` is this suite itself and is not run again;
- to keep the suite quick, every `hsc-search run` gets `--num-samples 2 --max-epochs 2` appended, every
  training command but a resume `--set epochs=2`, and data is small: a `synthetic:<name>` spec gets the options of SMALL and
  `trainer.synthetic` the same as `--set`s; `make train` is the README's next line, which runs (with these
  rules).
The copy shares this checkout's .venv (a symlink: the same packages `make setup` installs).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_MARK = "# not run by the README test"


def bash_blocks(text: str) -> list[list[str]]:
    """The README's ```bash blocks as lists of commands (backslash continuations joined, comments kept)."""
    blocks = []
    for body in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        lines, cur = [], ""
        for line in body.splitlines():
            cur += line.rstrip("\\") + (" " if line.endswith("\\") else "")
            if not line.endswith("\\"):
                lines.append(cur.strip())
                cur = ""
        blocks.append([line for line in lines if line])
    return blocks


SMALL = {"n_train": 500, "n_val": 120, "n_test": 150, "dim_audio": 16, "dim_visual": 24, "num_classes": 6}


def quick(cmd: str) -> str:
    """The test's speed rules (module docstring)."""
    body, _, comment = cmd.partition("  #")
    opts = "&".join(f"{k}={v}" for k, v in SMALL.items())
    body = re.sub(r"synthetic:(ave|vegas)(?![?\w])", lambda m: f"'synthetic:{m.group(1)}?{opts}'", body)
    if "-m trainer.synthetic" in body:
        body = body.rstrip() + "".join(f" --set {k}={v}" for k, v in SMALL.items())
    if "hsc-search run" in body:
        body = body.rstrip() + " --num-samples 2 --max-epochs 2"
    elif re.search(r"(-m trainer|hsc-search train)( |$)", body) and "--data" in body and "--resume" not in body:
        body = body.rstrip() + " --set epochs=2"
    return body.strip()


@pytest.fixture(scope="module")
def clone(tmp_path_factory, _cache_dir):
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    installed = ROOT / ".venv" / ".installed"
    assert installed.exists(), "run `make setup` first"
    dest = tmp_path_factory.mktemp("readme") / "hsc-search"
    files = subprocess.run([git, "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\n")  # fmt: skip
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    old = installed.stat().st_mtime - 10  # `make` must see the venv as up to date, never rebuild the shared one
    os.utime(dest / "pyproject.toml", (old, old))
    os.utime(dest / "Makefile", (old, old))
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {**os.environ, "PATH": path, "HSC_CACHE_DIR": str(_cache_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    demo = subprocess.run(["make", "demo"], cwd=dest, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    return dest, env, demo.stdout


def _sh(cmd: str, cwd, env, timeout=420) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _serve_until(cmd: str, url: str, cwd, env, timeout=60.0, then: tuple = ()) -> str:
    """Starts a server command, fetches `url` once it answers (and then each of `then`, a URL or (URL, JSON body
    to POST), their answers joined to its with NUL characters), stops the server (its process group)."""

    def fetch(item) -> str:
        url, body = (item, None) if isinstance(item, str) else (item[0], json.dumps(item[1]).encode())
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        return urllib.request.urlopen(request, timeout=30).read().decode()

    # `env`: a printed command may start with VAR=value (bash's exec takes no assignments)
    proc = subprocess.Popen(["bash", "-c", "exec env " + cmd], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                first = urllib.request.urlopen(url, timeout=5).read().decode()
                return "\0".join([first, *(fetch(item) for item in then)])
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"`{cmd}` did not serve {url} within {timeout:.0f} s")
                time.sleep(0.5)
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen, term_s: float = 30.0) -> None:
    """SIGTERM to the server's process group, then SIGKILL to what is left of it after `term_s`. Its leader (make)
    exits at once, but `mlflow ui` starts its job runners after it answers and took over 20 s to end: waiting on
    the leader alone left the server serving port 5000 after the test (found an hour later)."""
    import psutil

    def members() -> list:
        out = []
        for p in psutil.process_iter(["status"]):
            try:
                if os.getpgid(p.pid) == proc.pid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except (OSError, psutil.Error):
                continue
        return out

    os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + term_s
    while members() and time.monotonic() < deadline:
        time.sleep(0.5)
    for p in members():
        with contextlib.suppress(OSError, psutil.Error):
            p.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _port_5000_free() -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", 5000)) != 0


def test_commands_printed_by_make_demo_run_as_printed(clone, tmp_path):
    """Pasted in another folder than the one searched in (the programs were printed relative to it,
    `.venv/bin/mlflow ui ...`, and failed there: a walkthrough)."""
    dest, env, out = clone
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    printed = [ln for ln in out.splitlines() if ln.startswith(("retrain:", "MLflow UI:"))]
    assert len(printed) == 2 and not any(" .venv/" in ln for ln in printed), out  # no program by a relative path
    retrain = re.search(r"^retrain:\s+(.+)$", out, re.M).group(1)
    proc = _sh(quick(retrain), elsewhere, env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = Path(re.search(r"^report:\s+(\S+)", out, re.M).group(1))
    assert report.is_file() and report.stat().st_size > 1_000_000  # plotly inside
    ui = re.search(r"^MLflow UI:\s+(.+)$", out, re.M).group(1)
    page = re.search(r"then open (\S+)", out).group(1)
    # (where something holds port 5000, the printed command names a free port: run as printed all the same)
    # the page's `#/experiments/N` is never sent to the server (any store serves the same app shell: an empty store
    # made at a wrong path passed, an audit of the tests): the server's API must hold that experiment and the search
    base, experiment = re.fullmatch(r"(http://[^/]+)/#/experiments/(\d+)\S*", page).groups()
    name = re.search(r"^search (\S+): ", out, re.M).group(1)
    body = _serve_until(ui, page, elsewhere, env, then=(
        f"{base}/api/2.0/mlflow/experiments/get?{urllib.parse.urlencode({'experiment_id': experiment})}",
        (f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment],
                                                 "filter": f"attributes.run_name = '{name}'"})))  # fmt: skip
    html, got, runs = body.split("\0")[0], *(json.loads(x) for x in body.split("\0")[1:])
    assert "<title>MLflow</title>" in html, html[:500]
    assert got["experiment"]["name"] == "hsc-search", got
    assert [r["info"]["run_name"] for r in runs.get("runs", [])] == [name], runs


def test_readme_blocks_run_as_printed(clone):
    dest, env, _ = clone
    blocks = bash_blocks((dest / "README.md").read_text())
    assert len(blocks) >= 6
    ran, skipped = [], []
    for block in blocks:
        if block[0].startswith(SKIP_MARK):
            skipped.append(block[0])
            if any(c.startswith("make ui") for c in block) and _port_5000_free():  # serves until stopped
                assert "MLflow" in _serve_until("make ui", "http://127.0.0.1:5000/", dest, env)
                assert _port_5000_free(), "make ui still serves after the test stopped it"
            continue
        for cmd in block:
            if cmd.startswith("#"):
                continue
            if cmd.split("#")[0].strip() in ("make demo", "make test", "make train"):
                continue  # ran first / this suite / the next line
            proc = _sh(quick(cmd), dest, env)
            assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            assert "Traceback" not in proc.stderr, cmd
            ran.append(cmd)
    assert any("hsc-search report" in c for c in ran) and any("export-best" in c for c in ran)
    # every report names its store, the one `hsc-search report` rewrote with the default store too (it lost it)
    reports = list((dest / "ray_results").glob("*/report.html"))
    assert reports and all(f" at sqlite:///{dest.resolve()}/mlflow.db; written " in r.read_text() for r in reports)
    # AWS access, the cluster, `make ui` (started above instead), and the team server's three (a server that runs
    # until Ctrl-C, an SSH tunnel to it, an import into it: tests/test_teamserver.py runs them for real)
    assert len(skipped) == 6, skipped
    print(f"\nran {len(ran)} README commands; skipped blocks: {skipped}")


def test_the_readme_python_block_runs_as_printed(tmp_path, _cache_dir):
    """README's ```python block (a search from Python), with this suite's speed rules: small synthetic data for
    its features.h5, 2 trials of 2 epochs; its last line's values printed."""
    (block,) = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    opts = "&".join(f"{k}={v}" for k, v in SMALL.items())
    code = block.replace('data="features.h5"', f'data="synthetic:ave?{opts}"')
    code = re.sub(r"num_samples=\d+", "num_samples=2", re.sub(r"max_epochs=\d+", "max_epochs=2", code))
    assert code != block and "features.h5" not in code
    last = code.strip().splitlines()[-1].split("#")[0].strip()
    code += f"\nprint('VALUES', repr(({last})))\n"
    env = {**os.environ, "HSC_CACHE_DIR": str(_cache_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=420)  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout[-2000:] + proc.stderr[-3000:]
    values = next(ln for ln in proc.stdout.splitlines() if ln.startswith("VALUES"))
    assert f"PosixPath('{tmp_path.resolve()}/ray_results/nb1/best_config.yaml'), False)" in values, values
    assert (tmp_path / "ray_results" / "nb1" / "best_config.yaml").is_file() and (tmp_path / "mlflow.db").is_file()
