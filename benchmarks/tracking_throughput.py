"""Logging throughput one MLflow tracking server sustains, sqlite against PostgreSQL, side by side in one run.

Each logger process plays one search as `hsc_search.tracking.MlflowTracker` writes it: a parent run, `--trials`
child runs, and per trial epoch one `log_batch` of `--metrics` metrics (our tracker's pattern). N loggers (N
searches at once) start together behind a barrier; the figure is metric points per second over the wall time
from the barrier until the last logger is done. Both servers run the same `mlflow server` with the same worker
count, on 127.0.0.1; PostgreSQL listens on a unix socket only (hsc_search.teamserver). After each round every
run's history is counted on the server: a point that did not arrive is reported, never silently dropped.

    python benchmarks/tracking_throughput.py                  # the recorded run: results/tracking_throughput.*
    python benchmarks/tracking_throughput.py --quick          # a smoke run, written to a temp folder
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shlex
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _logger(*args) -> None:
    """`_log_search` in a spawned process; a Ctrl-C (the terminal sends it to every logger too) ends it quietly:
    each printed a KeyboardInterrupt traceback (a walkthrough). The benchmark says it was interrupted."""
    try:
        _log_search(*args)
    except KeyboardInterrupt:
        pass


def _log_search(url: str, experiment_id: str, index: int, trials: int, epochs: int, metrics: int, barrier,
                out) -> None:  # fmt: skip
    """One search: parent + trials child runs, one log_batch per trial epoch. Puts its latencies and errors."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    barrier.wait()
    parent = client.create_run(experiment_id, run_name=f"search-{index}", tags={"hsc.kind": "search"})
    pid = parent.info.run_id
    children = [client.create_run(experiment_id, run_name=f"search-{index}-trial-{t}",
                                  tags={"mlflow.parentRunId": pid, "hsc.kind": "trial"}).info.run_id
                for t in range(trials)]  # fmt: skip
    keys = [f"m/{k:02d}" for k in range(metrics)]
    lat, errors = [], 0
    for epoch in range(1, epochs + 1):
        for t, run_id in enumerate(children):
            now = int(time.time() * 1000)
            batch = [Metric(k, float(epoch * 0.01 + i + t), now, epoch) for i, k in enumerate(keys)]
            t0 = time.perf_counter()
            try:
                client.log_batch(run_id, metrics=batch)
            except Exception:
                errors += 1
            lat.append(time.perf_counter() - t0)
    for run_id in children:
        client.set_terminated(run_id)
    client.set_terminated(pid)
    out.put({"index": index, "latencies": lat, "errors": errors, "end": time.time()})


def _round(url: str, backend: str, n: int, args) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp_id = client.create_experiment(f"{backend}-{n}-{time.time_ns()}")
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=_logger, args=(url, exp_id, i, args.trials, args.epochs, args.metrics, barrier, out))
             for i in range(n)]  # fmt: skip
    try:
        for p in procs:
            p.start()
        barrier.wait(timeout=300)
        start = time.time()
        results = [out.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join(timeout=60)
    finally:  # interrupted (or a logger lost): none is left logging to a server that is stopping
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    wall = max(r["end"] for r in results) - start
    # count what arrived: every trial run, every key, point by point
    runs = client.search_runs([exp_id], max_results=5000)
    trials = [r for r in runs if r.data.tags.get("hsc.kind") == "trial"]
    arrived = sum(len(client.get_metric_history(r.info.run_id, k)) for r in trials for k in r.data.metrics)
    expected = n * args.trials * args.epochs * args.metrics
    lat = sorted(x for r in results for x in r["latencies"])
    return {
        "backend": backend, "loggers": n, "wall_s": round(wall, 3), "points_expected": expected,
        "points_arrived": arrived, "errors": sum(r["errors"] for r in results),
        "points_per_s": round(arrived / wall, 1), "batches_per_s": round(len(lat) / wall, 1),
        "log_batch_p50_ms": round(1000 * statistics.median(lat), 1),
        "log_batch_p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1),
        "runs_running_after": sum(r.info.status == "RUNNING" for r in runs),
    }  # fmt: skip


def _machine() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import mlflow

    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(), "mlflow": mlflow.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}  # fmt: skip


def _markdown(report: dict) -> str:
    a, m = report["args"], report["machine"]
    lines = [
        "# MLflow tracking throughput: sqlite against PostgreSQL",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, MLflow {m['mlflow']}, {report['postgres']}; "
        f"{m['date']}",
        "",
        f"Each logger is one search: {a['trials']} child runs x {a['epochs']} epochs, one `log_batch` of "
        f"{a['metrics']} metrics per trial epoch; `mlflow server --workers {a['workers']}` on 127.0.0.1, the loggers "
        "on the same machine.",
        "",
        "| backend | searches at once | metric points/s | log_batch calls/s | p50 ms | p95 ms | points arrived / sent | failed calls | wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]  # fmt: skip
    for r in report["rounds"]:
        lines.append(f"| {r['backend']} | {r['loggers']} | {r['points_per_s']:.0f} | {r['batches_per_s']:.1f} | "
                     f"{r['log_batch_p50_ms']} | {r['log_batch_p95_ms']} | {r['points_arrived']} / "
                     f"{r['points_expected']} | {r['errors']} | {r['wall_s']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loggers", default="1,4,8", help="Searches at once, comma-separated rounds. [1,4,8]")
    p.add_argument("--trials", type=int, default=4, help="Child runs per search. [4]")
    p.add_argument("--epochs", type=int, default=25, help="Epochs per trial (one log_batch each). [25]")
    p.add_argument("--metrics", type=int, default=40, help="Metrics per epoch (a trial of ours logs ~40). [40]")
    p.add_argument("--workers", type=int, default=2, help="mlflow server workers, both backends. [2]")
    p.add_argument("--backends", default="sqlite,postgresql", help="Which stores. [sqlite,postgresql]")
    p.add_argument("--quick", action="store_true", help="Small smoke run (1 and 2 loggers); writes to a temp "
                   "folder unless --out is given.")  # fmt: skip
    p.add_argument("--out", type=Path, help="Folder for tracking_throughput.json/.md (created if missing). "
                   "[benchmarks/results; with --quick a temp folder]")  # fmt: skip
    p.add_argument("--workdir", type=Path, help="Folder for the stores and servers (created if missing). "
                   "[a temp folder]")  # fmt: skip
    args = p.parse_args(argv)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run ..." line per run
    if args.quick:
        from quick import quick_defaults

        quick_defaults(p, args, argv, loggers="1,2", trials=2, epochs=3, metrics=10)
    try:
        loggers = [int(x) for x in args.loggers.split(",") if x.strip()]
    except ValueError:
        p.error(f"--loggers {args.loggers!r}: expected comma-separated integers, e.g. 1,4,8")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not loggers or min(loggers) < 1 or not backends or set(backends) - {"sqlite", "postgresql"}:
        p.error("--loggers needs positive integers; --backends is a subset of sqlite,postgresql")
    out = args.out or (Path(tempfile.mkdtemp(prefix="hsc-tracking-bench-")) if args.quick else ROOT / "benchmarks"
                       / "results")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hsc-tracking-work-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _measure(args, argv, loggers, backends, out, work)
    except KeyboardInterrupt:
        if args.out is None and args.quick and not any(out.iterdir()):
            out.rmdir()  # the smoke run's own temp folder, empty: nothing to look at (it was left)
        raise
    finally:
        if args.workdir is None:  # our own temp folder: the stores are of no use after the run (it was left
            import shutil  # after a Ctrl-C)

            shutil.rmtree(work, ignore_errors=True)


def _measure(args, argv, loggers: list[int], backends: list[str], out: Path, work: Path) -> int:
    """The rounds on each backend, then the report written to `out`; exit code 1 if a point was lost."""
    if os.geteuid() == 0:
        work.chmod(0o711)  # PostgreSQL runs as another account when we are root

    from hsc_search.teamserver import MlflowServerProcess, Postgres

    rounds, pg_version = [], "PostgreSQL not used"
    for backend in backends:
        pg = None
        if backend == "sqlite":
            uri = f"sqlite:///{work / 'bench.db'}"
        else:
            pg = Postgres(work / "pgdata").start()
            uri, pg_version = pg.uri(), pg.version.replace("postgres (PostgreSQL)", "PostgreSQL")
        server = MlflowServerProcess(uri, work / f"artifacts-{backend}", _free_port(), workers=args.workers,
                                     log_path=work / f"mlflow-{backend}.log")  # fmt: skip
        try:
            server.start(timeout=300)
            for n in loggers:
                r = _round(server.url, backend, n, args)
                print(json.dumps(r), flush=True)
                rounds.append(r)
        finally:
            server.stop()
            if pg is not None:
                pg.stop()
    report = {"command": "python " + shlex.join([f"benchmarks/{Path(__file__).name}", *(argv or sys.argv[1:])]),
              "machine": _machine(), "postgres": pg_version, "args": vars(args) | {"out": str(out), "workdir": str(work)},
              "rounds": rounds}  # fmt: skip
    (out / "tracking_throughput.json").write_text(json.dumps(report, indent=1))
    (out / "tracking_throughput.md").write_text(_markdown(report))
    print(f"wrote {out / 'tracking_throughput.md'}")
    lost = [r for r in rounds if r["points_arrived"] != r["points_expected"] or r["runs_running_after"]]
    return 1 if lost else 0


if __name__ == "__main__":
    from entry import run

    sys.exit(run(main))
