"""Where the MLflow writer's time goes: every call the search's background writer makes, timed by kind, for one
small FIFO search with MLflow on (sqlite); plus the two per-trial plots rendered alone.

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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = "synthetic:ave?n_train=400&n_val=100&n_test=100&dim_audio=16&dim_visual=24"


def time_writer_calls(trials: int, epochs: int) -> dict:
    """Runs one search in a temporary folder with every writer call timed; returns seconds and counts by kind."""
    import hsc_search.tracking as tracking
    from hsc_search import driver
    from hsc_search.settings import SearchSettings

    total: dict[str, float] = collections.defaultdict(float)
    count: collections.Counter = collections.Counter()
    original = tracking.retry

    def timed(fn, what):
        t0 = time.perf_counter()
        try:
            return original(fn, what)
        finally:
            kind = " ".join(what.split()[:2])  # "finish child", "start child", "log epoch", ...
            total[kind] += time.perf_counter() - t0
            count[kind] += 1

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
            os.chdir(cwd)
    return {"trials": trials, "epochs": epochs, "wall_s": wall,
            "calls": {k: {"n": count[k], "total_s": total[k], "per_call_ms": 1000 * total[k] / count[k]}
                      for k in sorted(total, key=total.get, reverse=True)},
            "writer_s_per_trial": sum(total.values()) / trials}  # fmt: skip


def time_plots(epochs: int = 30, repeats: int = 5) -> dict:
    """Seconds to render and PNG-encode the two per-trial figures, as shipped and without constrained layout."""
    from matplotlib.figure import Figure

    from hsc_search import plots

    history = {}
    for n in ("rec", "dcca", "nce"):
        history[f"weight/{n}"] = [(e, 1.0 / e) for e in range(1, epochs + 1)]
        history[f"logvar/{n}"] = [(e, -0.1 * e) for e in range(1, epochs + 1)]
    for i in range(16):
        history[f"cca/rho_{i:02d}"] = [(e, 0.9 - 0.02 * i) for e in range(1, epochs + 1)]

    def render() -> float:
        t0 = time.perf_counter()
        for fig in (plots.weight_trajectories_figure(history), plots.cca_spectrum_figure(history)):
            fig.savefig(io.BytesIO(), format="png")
        return time.perf_counter() - t0

    init = Figure.__init__

    def plain(self, *args, **kwargs):
        kwargs["layout"] = None
        init(self, *args, **kwargs)

    shipped, no_layout = [], []
    render()  # warm-up: fonts, the Agg backend
    for _ in range(repeats):  # alternating, medians: the machine is shared
        shipped.append(render())
        Figure.__init__ = plain
        try:
            no_layout.append(render())
        finally:
            Figure.__init__ = init
    shipped, no_layout = statistics.median(shipped), statistics.median(no_layout)
    return {"both_plots_s": shipped, "both_plots_without_constrained_layout_s": no_layout}


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
