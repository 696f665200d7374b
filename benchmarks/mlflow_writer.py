"""Where the MLflow writer's time goes: every call the search's background writer makes, timed by kind, for one
small FIFO search with MLflow on (sqlite); plus the two per-trial pictures made alone (SVG text, against the
matplotlib PNGs they replaced).

The writer (`hsc_search.tracking._Writer`) runs each MLflow call through `hsc_search.tracking.retry`; this script
wraps that function with a timer for the duration of one search, so the figures are the calls' own time on the
driver, not the trials'.

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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = "synthetic:ave?n_train=400&n_val=100&n_test=100&dim_audio=16&dim_visual=24"


def time_writer_calls(trials: int, epochs: int) -> dict:
    """Runs one search in a temporary folder with every writer call timed; returns seconds and counts by kind."""
    import hsc_search.tracking as tracking
    from hsc_search import driver
    from hsc_search.settings import SearchSettings

    from mlflow.tracking import MlflowClient

    total: dict[str, float] = collections.defaultdict(float)
    cpu: dict[str, float] = collections.defaultdict(float)
    count: collections.Counter = collections.Counter()
    client_calls: collections.Counter = collections.Counter()  # MLflow client calls made by the writer thread
    original = tracking.retry

    def timed(fn, what):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return original(fn, what)
        finally:
            kind = " ".join(what.split()[:2])  # "finish child", "start child", "log epoch", ...
            total[kind] += time.perf_counter() - t0
            cpu[kind] += time.thread_time() - c0  # this thread's CPU: what the load of other work does not change
            count[kind] += 1

    methods = {}
    for name in ("create_run", "log_batch", "log_text", "log_artifact", "log_artifacts", "set_terminated", "set_tag",
                 "update_run", "get_metric_history", "search_runs", "get_run", "log_figure"):  # fmt: skip
        methods[name] = getattr(MlflowClient, name)

        def counted(self, *a, _name=name, **k):
            if threading.current_thread().name == "hsc-mlflow-writer":
                client_calls[_name] += 1
            return methods[_name](self, *a, **k)

        setattr(MlflowClient, name, counted)

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="hsc-writer-") as work:
        os.chdir(work)
        tracking.retry = timed
        try:
            t0 = time.perf_counter()
            driver.run_search(SearchSettings(data=DATA, num_samples=trials, max_epochs=epochs, name="writer"),
                              echo=lambda m: None)  # fmt: skip
            wall = time.perf_counter() - t0
        finally:
            tracking.retry = original
            for name, fn in methods.items():
                setattr(MlflowClient, name, fn)
            os.chdir(cwd)
    return {"trials": trials, "epochs": epochs, "wall_s": wall,
            "calls": {k: {"n": count[k], "total_s": total[k], "per_call_ms": 1000 * total[k] / count[k],
                          "cpu_ms_per_call": 1000 * cpu[k] / count[k]}
                      for k in sorted(total, key=total.get, reverse=True)},
            "writer_s_per_trial": sum(total.values()) / trials,
            "writer_cpu_s_per_trial": sum(cpu.values()) / trials,
            "mlflow_client_calls_per_trial": {k: n / trials for k, n in sorted(client_calls.items())},
            "mlflow_client_calls_per_trial_all": sum(client_calls.values()) / trials}  # fmt: skip


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="4 trials x 2 epochs, 1 plot repeat")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.epochs = 4, 2
    plots = time_plots(repeats=1 if args.quick else 5)  # before the search: nothing of Ray's is left running then
    result = {"writer": time_writer_calls(args.trials, args.epochs), "plots": plots}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
