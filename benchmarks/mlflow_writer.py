"""Where the MLflow writer's time goes: the writer process's own time per kind of message and the MLflow client
calls it makes, for one small FIFO search with MLflow on (sqlite); what the tracker's Tune hooks cost the driver
(the process of Ray Tune's event loop); plus the two per-trial pictures made alone (SVG text, against the
matplotlib PNGs they replaced); and one trial's file upload both ways, side by side (MlflowClient.log_artifacts
against the run's artifact repository, as the writer uploads).

The writer process (`hsc_search/writer.py`) writes its figures when it stops to the file named by
`HSC_WRITER_STATS`; the hooks of `hsc_search.tracking.MlflowTracker` are wrapped here with a CPU timer of the
driver's thread for the duration of one search.

Both places of the writer run, one after the other: a thread of the driver (the default) and a process of its
own (HSC_MLFLOW_WRITER=process).

    python benchmarks/mlflow_writer.py               # 12 trials x 3 epochs of 400 clips
    python benchmarks/mlflow_writer.py --quick       # 4 trials x 2 epochs
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = "synthetic:ave?n_train=400&n_val=100&n_test=100&dim_audio=16&dim_visual=24"
HOOKS = ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error")


def time_writer_calls(trials: int, epochs: int, where: str, root: str) -> dict:
    """Runs one search in a temporary folder with the writer in a "thread" or a "process"; returns the writer's
    seconds and calls by kind, and the driver's CPU seconds in the tracker's hooks."""
    from hsc_search import driver
    from hsc_search.settings import SearchSettings
    from hsc_search.tracking import MlflowTracker
    from hsc_search.writer import PROCESS_ENV, STATS_ENV

    hook_cpu: dict[str, float] = collections.defaultdict(float)
    hook_n: collections.Counter = collections.Counter()
    originals = {name: getattr(MlflowTracker, name) for name in HOOKS}

    def timed(name):
        def hook(self, *a, **k):
            c0 = time.thread_time()
            try:
                return originals[name](self, *a, **k)
            finally:
                hook_cpu[name] += time.thread_time() - c0
                hook_n[name] += 1

        return hook

    cwd = os.getcwd()
    # a folder that outlives both searches: Ray's processes, started by the first, keep it as their working
    # directory (a worker started in a deleted one cannot load torch's MKL)
    work = tempfile.mkdtemp(prefix=f"hsc-writer-{where}-", dir=root)
    os.chdir(work)
    os.environ[STATS_ENV] = str(Path(work, "writer.json"))
    os.environ[PROCESS_ENV] = where
    for name in HOOKS:
        setattr(MlflowTracker, name, timed(name))
    try:
        t0 = time.perf_counter()
        outcome = driver.run_search(SearchSettings(data=DATA, num_samples=trials, max_epochs=epochs, name="writer",
                                                   scheduler="fifo"),
                                    echo=lambda m: None)  # fmt: skip
        wall = time.perf_counter() - t0
        from asha_vs_fifo import stop_if_interrupted

        stop_if_interrupted(outcome, f"writer ({where})")
        stats = json.loads(Path(work, "writer.json").read_text())
    finally:
        os.environ.pop(STATS_ENV, None)
        os.environ.pop(PROCESS_ENV, None)
        for name, fn in originals.items():
            setattr(MlflowTracker, name, fn)
        os.chdir(cwd)
    messages = stats["messages"]
    return {"where": where, "trials": trials, "epochs": epochs, "wall_s": wall,
            "messages": {k: {"n": m["n"], "total_s": m["wall_s"], "per_message_ms": 1000 * m["wall_s"] / m["n"],
                             "cpu_ms_per_message": 1000 * m["cpu_s"] / m["n"]}
                         for k, m in sorted(messages.items(), key=lambda kv: -kv[1]["wall_s"])},
            "writer_s_per_trial": sum(m["wall_s"] for m in messages.values()) / trials,
            "writer_cpu_s_per_trial": sum(m["cpu_s"] for m in messages.values()) / trials,
            "mlflow_client_calls_per_trial": {k: n / trials for k, n in sorted(stats["mlflow_client_calls"].items())},
            "mlflow_client_calls_per_trial_all": sum(stats["mlflow_client_calls"].values()) / trials,
            "driver_hooks": {k: {"n": hook_n[k], "cpu_ms_per_call": 1000 * hook_cpu[k] / hook_n[k]} for k in hook_n},
            "driver_cpu_ms_per_trial": 1000 * sum(hook_cpu.values()) / trials}  # fmt: skip


def _matplotlib_figures(history: dict) -> list:
    """The two per-trial figures as matplotlib drew them until they became SVG text (hsc_search/trial_plots.py):
    kept here as the reference the SVG writer is timed against."""
    from matplotlib.figure import Figure

    def series(prefix):
        out = {}
        for key in sorted(k for k in history if k.startswith(prefix)):
            pts = sorted(history[key])
            out[key[len(prefix):]] = ([x for x, _ in pts], [y for _, y in pts])
        return out

    weights = Figure(figsize=(9, 3.5), layout="constrained")
    ax_w, ax_s = weights.subplots(1, 2)
    for name, (x, y) in series("weight/").items():
        ax_w.plot(x, y, marker="o", ms=3, label=name)
    for name, (x, y) in series("logvar/").items():
        ax_s.plot(x, y, marker="o", ms=3, label=name)
    for ax in (ax_w, ax_s):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    spectrum = Figure(figsize=(9, 3.5), layout="constrained")
    ax_spec, ax_time = spectrum.subplots(1, 2)
    rho = series("cca/rho_")
    names = sorted(rho, key=int)
    epochs = sorted({e for x, _ in rho.values() for e in x})
    for e in sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]}):
        ax_spec.plot(range(len(names)), [dict(zip(*rho[n])).get(e) for n in names], marker="o", ms=3, label=f"epoch {e}")
    for n in names[:8]:
        ax_time.plot(*rho[n], label=f"rho_{n}")
    ax_spec.legend(fontsize=8)
    ax_time.legend(fontsize=7, ncol=2)
    return [weights, spectrum]


def time_plots(epochs: int = 30, repeats: int = 5) -> dict:
    """Seconds to make the two per-trial pictures: the SVG text the tracker writes, against the matplotlib PNGs
    it wrote before (alternating, medians)."""
    from hsc_search.trial_plots import cca_spectrum_svg, loss_weights_svg

    history = {}
    for n in ("rec", "dcca", "nce"):
        history[f"weight/{n}"] = [(e, 1.0 / e) for e in range(1, epochs + 1)]
        history[f"logvar/{n}"] = [(e, -0.1 * e) for e in range(1, epochs + 1)]
    for i in range(16):
        history[f"cca/rho_{i:02d}"] = [(e, 0.9 - 0.02 * i) for e in range(1, epochs + 1)]

    def png() -> float:
        t0 = time.perf_counter()
        for fig in _matplotlib_figures(history):
            fig.savefig(io.BytesIO(), format="png")
        return time.perf_counter() - t0

    def svg() -> float:
        t0 = time.perf_counter()
        loss_weights_svg(history), cca_spectrum_svg(history)
        return time.perf_counter() - t0

    png(), svg()  # warm-up: fonts, the Agg backend
    pngs, svgs = [], []
    for _ in range(repeats):
        pngs.append(png())
        svgs.append(svg())
    p, v = statistics.median(pngs), statistics.median(svgs)
    return {"both_plots_svg_s": v, "both_plots_matplotlib_png_s": p, "ratio": p / v}


def time_uploads(runs: int = 24, metrics: int = 35, epochs: int = 2) -> dict:
    """One trial's files (config, two pictures, the spectrum: 4 small files) uploaded after its metrics, the two
    ways side by side on one sqlite store, alternating run by run: `MlflowClient.log_artifacts` (which reads the
    whole run back to find its artifact repository the first time) and the run's artifact repository, built from
    the URI `create_run` returned (what the writer does: `_Sink._upload`). CPU of the calling thread per upload."""
    from mlflow.entities import Metric, Param

    from hsc_search.runs import client_for
    from hsc_search.writer import _Sink

    with tempfile.TemporaryDirectory(prefix="hsc-uploads-") as root:
        sink = _Sink(f"sqlite:///{root}/mlflow.db", "val/map_avg", "max")
        client = sink.client
        exp = client.create_experiment("uploads", artifact_location=f"{root}/artifacts")
        files = {"config.yaml": "lr: 0.001\n" * 40, "plots/loss_weights.svg": "<svg/>" * 400,
                 "plots/cca_spectrum.svg": "<svg/>" * 400, "cca_spectrum.csv": "epoch,rho_00\n1,0.5\n" * 20}
        cpu: dict[str, list[float]] = {"client": [], "repository": []}
        for i in range(runs + 2):  # the first pair warms up
            run = client.create_run(exp, run_name=f"t{i}")
            rid, now = run.info.run_id, int(time.time() * 1000)
            client.log_batch(rid, metrics=[Metric(f"m/{k}", 0.5, now, e) for e in range(1, epochs + 1)
                                           for k in range(metrics)],
                             params=[Param(f"p{k}", str(k)) for k in range(12)])  # fmt: skip
            way = "repository" if i % 2 else "client"
            if way == "repository":
                sink.repos[rid] = sink._artifact_repository(run.info.artifact_uri)
            c0 = time.thread_time()
            sink._upload(rid, files)
            if i >= 2:
                cpu[way].append(time.thread_time() - c0)
            listed = {a.path for a in client_for(sink.client.tracking_uri).list_artifacts(rid)}
            assert {"config.yaml", "plots", "cca_spectrum.csv"} <= listed, listed  # both land in the same place
    c, r = statistics.median(cpu["client"]), statistics.median(cpu["repository"])
    return {"runs_each": len(cpu["client"]), "client_log_artifacts_cpu_ms": 1000 * c,
            "repository_cpu_ms": 1000 * r, "ratio": c / r}  # fmt: skip


def main(argv=None) -> int:
    from entry import at_least  # (benchmarks/ is on the path of a script run)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=at_least(1), default=12)
    p.add_argument("--epochs", type=at_least(1), default=3)
    p.add_argument("--quick", action="store_true", help="4 trials x 2 epochs, 1 plot repeat")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if args.quick:
        from quick import quick_defaults

        quick_defaults(p, args, argv, trials=4, epochs=2)
    plots = time_plots(repeats=1 if args.quick else 5)  # before the search: nothing of Ray's is left running then
    uploads = time_uploads(runs=4 if args.quick else 24)
    # the writer as a thread of the driver (the default) and as a process of its own, one after the other
    with tempfile.TemporaryDirectory(prefix="hsc-writer-") as root:
        result = {"writer": time_writer_calls(args.trials, args.epochs, "thread", root),
                  "writer_process": time_writer_calls(args.trials, args.epochs, "process", root), "plots": plots,
                  "uploads": uploads}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:  # (its folder made when missing, as the other output flags' are: it was a FileNotFoundError)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from entry import run

    sys.exit(run(main))
