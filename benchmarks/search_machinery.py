"""What a search costs beyond its trials' training: per epoch, per trial, and after the last trial.

Three measurements, each side by side in one run (MLflow off and on alternate), on tiny synthetic data so that
training is near zero and what is left is the machinery (reporting, checkpoints, tracking, scheduling). Each
search runs on a fresh local Ray instance, started as `hsc-search run` starts it (its start is not timed);
`--keep-ray` shares one instance between searches:

1. **Per epoch**: FIFO searches of `--trials` trials at two budgets (`--epochs-short`, `--epochs-long`). The
   machinery of a search is `span x slots - training`, where span runs from the first trial's start to the last
   trial's end (as the driver saw them) and training is the sum of every epoch's `time/epoch_s` (the trainer's
   own clock). Per trial it grows as a + b x epochs; b, the slope between the two budgets, is the machinery per
   epoch (the rest, a, is per trial).
2. **Many tiny trials**: FIFO searches of N trials x 2 epochs (N in `--counts`), MLflow off and on: the wall time,
   when the last trial ended, the tail (last trial's end until `run_search` returns: MLflow's queue, the summary,
   the report), the ratio of wall times, and the cost per trial as N grows. With MLflow on, each search runs twice:
   the MLflow writer as a thread of the driver and as a process of its own (`HSC_MLFLOW_WRITER`); the "on"
   column is the place this machine uses by default.
3. **Stock Ray Tune** beside ours: `OptunaSearch` + `ASHAScheduler`, `reuse_actors=True`, 16 trivial trials of 10
   reports each (no training at all), the configuration measured at 0.62 s per trial when issue 9 was written (this 2-core VM).

    python benchmarks/search_machinery.py                 # ~6 min here
    python benchmarks/search_machinery.py --quick         # smoke run, < 90 s, writes to a temporary folder

Writes `search_machinery.json` and `.md` into --out (default benchmarks/results/; --quick: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from asha_vs_fifo import machine_info, output_dir, start_ray, stop_if_interrupted, work_parent  # noqa: E402

from hsc_search.writer import writer_in_process  # noqa: E402

NAME = "search_machinery"
TINY = "synthetic:ave?n_train=64&n_val=32&n_test=32&dim_audio=8&dim_visual=8&num_classes=4&seed=1"


def _timeline():
    from ray.tune import Callback

    from hsc_search.runs import epochs_of

    class Timeline(Callback):
        def __init__(self):
            self.starts, self.ends, self.train_s, self.epochs = [], [], 0.0, 0

        def on_trial_start(self, iteration, trials, trial, **info):
            self.starts.append(time.perf_counter())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            for m in epochs_of(result):
                self.train_s += float(m.get("time/epoch_s", 0.0))
                self.epochs += 1

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ends.append(time.perf_counter())

    return Timeline()


def search(n: int, epochs: int, mlflow: bool, work: Path, tag: str, writer: str | None = None,
           fresh_ray: bool = True) -> dict:  # fmt: skip
    """One FIFO search of the quick space on tiny data; times as the driver saw them. `writer`: where the MLflow
    writer runs ("thread" or "process"; None: the default for this machine). `fresh_ray`: on a Ray instance of
    its own, started (not timed) just before, as `hsc-search run` starts one; else on the instance running."""
    import ray

    if fresh_ray:
        ray.shutdown()
        start_ray()
    try:
        return _search(n, epochs, mlflow, work, tag, writer)
    finally:
        if fresh_ray:
            ray.shutdown()


def _search(n: int, epochs: int, mlflow: bool, work: Path, tag: str, writer: str | None) -> dict:
    import ray

    from hsc_search.driver import run_search
    from hsc_search.settings import SearchSettings
    from hsc_search.writer import PROCESS_ENV

    folder = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=work))
    settings = SearchSettings(data=TINY, num_samples=n, max_epochs=epochs, scheduler="fifo", mlflow=mlflow, name=tag,
                              storage=str(folder / "ray_results"),
                              tracking_uri=f"sqlite:///{folder / 'mlflow.db'}" if mlflow else None).validate()  # fmt: skip
    timeline = _timeline()
    slots = int(ray.cluster_resources().get("CPU", 1))
    cwd = os.getcwd()
    os.chdir(folder)
    before = os.environ.get(PROCESS_ENV)
    if writer:
        os.environ[PROCESS_ENV] = writer
    placed = ("process" if writer_in_process() else "thread") if mlflow else None
    try:
        t0 = time.perf_counter()
        outcome = run_search(settings, echo=lambda m: None, callbacks=[timeline])
        wall = time.perf_counter() - t0
        stop_if_interrupted(outcome, tag)
    finally:
        os.chdir(cwd)
        os.environ.pop(PROCESS_ENV, None)
        if before is not None:
            os.environ[PROCESS_ENV] = before
    span = max(timeline.ends) - min(timeline.starts)
    return {
        "trials": n, "epochs": epochs, "mlflow": mlflow, "writer": placed, "slots": min(slots, n), "wall_s": wall,
        "first_start_s": min(timeline.starts) - t0, "last_end_s": max(timeline.ends) - t0,
        "tail_s": t0 + wall - max(timeline.ends), "span_s": span, "train_s": timeline.train_s,
        "epochs_seen": timeline.epochs,
        "machinery_s": span * min(slots, n) - timeline.train_s,
    }  # fmt: skip


def stock_ray(trials: int = 16, reports: int = 10) -> dict:
    """Stock Ray Tune: OptunaSearch + ASHA, reuse_actors, trivial trials; seconds per trial in all. On a Ray
    instance of its own, started as stock (`ray.init`, no preloading workers): any instance running is shut down
    first, and this one after."""
    import logging

    import ray

    ray.shutdown()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=True,
             logging_level=logging.WARNING)  # fmt: skip
    try:
        return _stock_ray(trials, reports)
    finally:
        ray.shutdown()


def _stock_ray(trials: int, reports: int) -> dict:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    def trivial(config):
        for i in range(1, reports + 1):
            tune.report({"m": config["x"] * i, "epoch": i})

    work = Path(tempfile.mkdtemp(prefix="stock-"))
    os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)  # stock: Ray's default loggers, as shipped
    tuner = tune.Tuner(
        trivial,
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(search_alg=OptunaSearch(seed=0), scheduler=ASHAScheduler(time_attr="epoch",
                                    max_t=reports), metric="m", mode="max", num_samples=trials, reuse_actors=True,
                                    max_concurrent_trials=2),  # fmt: skip
        run_config=tune.RunConfig(storage_path=str(work), name="stock", verbose=0),
    )
    t0 = time.perf_counter()
    try:
        tuner.fit()
    finally:  # (each run left a /tmp/stock-* folder: a walkthrough)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - t0
    return {"trials": trials, "reports": reports, "wall_s": wall, "per_trial_s": wall / trials}


def summarize(doc: dict) -> dict:
    out: dict = {}
    per_epoch = {}
    for mlflow in (False, True):
        rows = [r for r in doc["per_epoch"] if r["mlflow"] == mlflow]
        short = [r for r in rows if r["epochs"] == doc["config"]["epochs_short"]]
        long = [r for r in rows if r["epochs"] == doc["config"]["epochs_long"]]
        if short and long:
            ms = statistics.median(r["machinery_s"] for r in short)
            ml = statistics.median(r["machinery_s"] for r in long)
            n, d = short[0]["trials"], long[0]["epochs"] - short[0]["epochs"]
            per_epoch["on" if mlflow else "off"] = {"per_epoch_ms": 1000 * (ml - ms) / (n * d),
                                                    "per_trial_s": (ms - (ml - ms) / d * short[0]["epochs"]) / n}
    out["per_epoch"] = per_epoch
    tiny = {}
    default = doc.get("default_writer", "thread")
    for n in doc["config"]["counts"]:
        rows = {m: [r for r in doc["tiny"] if r["trials"] == n and r.get("writer", "thread" if r["mlflow"] else None) == m]
                for m in (None, "thread", "process")}  # fmt: skip
        if rows[None] and rows[default]:
            off, on = (statistics.median(r["wall_s"] for r in rows[m]) for m in (None, default))
            tiny[str(n)] = {"wall_off_s": off, "wall_on_s": on, "ratio": on / off,
                            "tail_on_s": statistics.median(r["tail_s"] for r in rows[default]),
                            "per_trial_on_s": on / n, "per_trial_off_s": off / n}  # fmt: skip
            for m in ("thread", "process"):  # both places of the writer, side by side
                if rows[m]:
                    wall = statistics.median(r["wall_s"] for r in rows[m])
                    tiny[str(n)][m] = {"wall_s": wall, "ratio": wall / off,
                                       "tail_s": statistics.median(r["tail_s"] for r in rows[m]),
                                       "first_start_s": statistics.median(r["first_start_s"] for r in rows[m])}  # fmt: skip
    out["tiny"] = tiny
    if doc.get("stock"):
        out["stock_per_trial_s"] = doc["stock"]["per_trial_s"]
        ours = tiny.get(str(doc["config"]["counts"][0]))
        if ours:
            out["ours_per_trial_s"] = {"trials": doc["config"]["counts"][0], "off": ours["per_trial_off_s"],
                                       "on": ours["per_trial_on_s"]}  # fmt: skip
    return out


def render(doc: dict) -> str:
    s, m = doc["summary"], doc["machine"]
    lines = [f"# Search machinery ({doc['date']})", "", f"Command: `{doc['command']}`", "",
             f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; load before {doc['load_before'][0]:.1f}, "
             f"after {doc['load_after'][0]:.1f}; {doc['elapsed_s']:.0f} s in all. "
             + ("A fresh Ray instance for each search (its start not timed)."
                if doc["config"].get("fresh_ray_per_search") else "One Ray instance for all searches."), "",
             "## Per epoch (slope between the two budgets)", "", "| MLflow | machinery per epoch ms | per trial s |",
             "| --- | --- | --- |"]  # fmt: skip
    for k, v in s["per_epoch"].items():
        lines.append(f"| {k} | {v['per_epoch_ms']:.1f} | {v['per_trial_s']:.3f} |")
    lines += ["", "## Many tiny trials (2 epochs each, FIFO)", "",
              f"MLflow on: the writer where it runs by default on this machine ({doc.get('default_writer', 'thread')}).",
              "", "| trials | wall off s | wall on s | on / off | tail on s | per trial on s |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for n, v in s["tiny"].items():
        lines.append(f"| {n} | {v['wall_off_s']:.1f} | {v['wall_on_s']:.1f} | {v['ratio']:.2f} | {v['tail_on_s']:.1f} "
                     f"| {v['per_trial_on_s']:.3f} |")  # fmt: skip
    if any("process" in v and "thread" in v for v in s["tiny"].values()):
        lines += ["", "The MLflow writer as a thread of the driver and as a process of its own, same run:", "",
                  "| trials | thread: wall s | on / off | first trial starts s | tail s | process: wall s | on / off "
                  "| first trial starts s | tail s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for n, v in s["tiny"].items():
            if "process" in v and "thread" in v:
                t, p = v["thread"], v["process"]
                lines.append(f"| {n} | {t['wall_s']:.1f} | {t['ratio']:.2f} | {t['first_start_s']:.1f} | {t['tail_s']:.1f} "
                             f"| {p['wall_s']:.1f} | {p['ratio']:.2f} | {p['first_start_s']:.1f} | {p['tail_s']:.1f} |")  # fmt: skip
    if "stock_per_trial_s" in s:
        lines += ["", "## Stock Ray Tune beside ours", "",
                  f"Stock (OptunaSearch + ASHA, reuse_actors, {doc['stock']['trials']} trivial trials x "
                  f"{doc['stock']['reports']} reports): {s['stock_per_trial_s']:.3f} s per trial in all. Ours, "
                  f"{s['ours_per_trial_s']['trials']} tiny trials x 2 epochs (training included): "
                  f"{s['ours_per_trial_s']['off']:.3f} s without MLflow, {s['ours_per_trial_s']['on']:.3f} s with."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from entry import at_least, int_list  # (benchmarks/ is on the path of a script run)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=at_least(1), default=8, help="trials of the per-epoch searches")
    p.add_argument("--epochs-short", type=at_least(1), default=5)
    p.add_argument("--epochs-long", type=at_least(1), default=40)
    p.add_argument("--counts", type=int_list(1), default="16,64,256", help="trial counts of the tiny-trial searches")
    p.add_argument("--rounds", type=at_least(1), default=2, help="rounds; MLflow off and on alternate their order")
    p.add_argument("--quick", action="store_true", help="2 trials, 1/3 epochs, 4 tiny trials, a small stock run, "
                   "1 round: a smoke run (< 90 s), written to a temporary folder unless --out")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results; with --quick a "
                   "new temporary folder)")
    p.add_argument("--workdir", default=None, help="parent of the searches' folders (created when missing)")
    p.add_argument("--keep-ray", action="store_true", help="one Ray instance for all searches (default: a fresh one "
                   "for each, as `hsc-search run` starts it: on a shared instance a search's second slot sometimes "
                   "waits for a new worker's imports, which made 64-trial searches bimodal, 4.8 s or 7.9 s)")
    args = p.parse_args(argv)
    if args.quick:  # a smoke run: one Ray instance (7 starts would double its time)
        from quick import quick_defaults

        quick_defaults(p, args, argv, trials=2, epochs_short=1, epochs_long=3, counts=[4], rounds=1, keep_ray=True)
    args.out = output_dir(args.out, args.quick, NAME)
    work = Path(work_parent(args.workdir, args.quick))
    counts = args.counts
    os.environ.pop("RAY_ADDRESS", None)
    t_start, load_before, machine = time.perf_counter(), os.getloadavg(), machine_info()
    fresh = not args.keep_ray
    if not fresh:
        start_ray()
        if not args.quick:
            search(2, 1, False, work, "warm", fresh_ray=False)  # warms Ray's workers (imports): not measured
    per_epoch, tiny = [], []
    for rnd in range(args.rounds):
        modes = (False, True) if rnd % 2 == 0 else (True, False)
        for mlflow in modes:
            for e in (args.epochs_short, args.epochs_long):
                per_epoch.append(search(args.trials, e, mlflow, work, f"pe{rnd}{int(mlflow)}{e}", None, fresh))
                print(f"per-epoch {per_epoch[-1]}", file=sys.stderr, flush=True)
            for n in counts:
                for writer in ("thread", "process") if mlflow else (None,):
                    tiny.append(search(n, 2, mlflow, work, f"t{rnd}{int(mlflow)}{n}{writer or ''}", writer, fresh))
                    print(f"tiny {tiny[-1]}", file=sys.stderr, flush=True)
    import ray

    ray.shutdown()
    stock = stock_ray(4, 2) if args.quick else stock_ray()
    doc = {
        "benchmark": NAME,
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine,
        "config": {"trials": args.trials, "epochs_short": args.epochs_short, "epochs_long": args.epochs_long,
                   "counts": counts, "rounds": args.rounds, "quick": args.quick, "data": TINY,
                   "fresh_ray_per_search": fresh},  # fmt: skip
        "load_before": load_before, "per_epoch": per_epoch, "tiny": tiny, "stock": stock,
        "default_writer": "process" if writer_in_process() else "thread",
    }  # fmt: skip
    doc["load_after"], doc["elapsed_s"] = os.getloadavg(), time.perf_counter() - t_start
    doc["summary"] = summarize(doc)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / f"{NAME}.md").write_text(render(doc))
    print(json.dumps(doc["summary"], indent=1))
    print(f"wrote {args.out / (NAME + '.md')}")
    return 0


if __name__ == "__main__":
    from entry import run

    sys.exit(run(main))
