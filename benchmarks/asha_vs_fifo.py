"""ASHA against FIFO: the same space, trial count and seed, one search with ASHA early stopping and one without.

For each seed the two searches run back to back (their order alternates between seeds, because this machine is
shared and noisy), each with its own local Ray instance (started before the search and timed separately), in
its own working directory under /tmp (so `mlflow.db` and `ray_results/` never collide). Reported per search:

- total epochs trained (every trial's epochs; FIFO trains trials x epochs),
- wall time of `run_search` (Ray already up; the Ray start is its own column),
- best validation mAP (a trial's score is its best `val/map_avg` over epochs, as the search ranks trials) and
  the test mAP of that best-validation trial (only trials that ran their full budget have a test mAP: if ASHA's
  best-val trial was stopped early, the best completed trial's test mAP is shown and marked),
- epochs to target: all epochs of all trials, in the order the driver received their results (recorded by a
  subclass of the driver's progress callback), counted until the search's best validation mAP first reaches the
  common target minus the tolerance, where the common target is the lower of the two searches' final bests.
  The FIFO/ASHA ratio of those counts is "the ratio of epochs at equal best validation mAP". The same count at
  trial granularity (whole trials in the order they ended) is also given.

    python benchmarks/asha_vs_fifo.py                       # quick space, 16 trials x 12 epochs, seeds 0-2
    python benchmarks/asha_vs_fifo.py --quick --out /tmp/a  # 4 trials x 3 epochs, tiny data, no MLflow: < 60 s
    python benchmarks/asha_vs_fifo.py --from-json benchmarks/results/asha_vs_fifo.json   # tables only

Writes `asha_vs_fifo.json` (raw, with every trial and the epoch curve) and `asha_vs_fifo.md` into --out. Text
in the .md below the line `<!-- analysis -->` is kept when the file is regenerated.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hsc_search.settings import DEFAULT_DATA, SearchSettings  # noqa: E402

QUICK_DATA = "synthetic:ave?n_train=300&n_val=100&n_test=100&dim_audio=16&dim_visual=24&num_classes=6"
ANALYSIS_MARK = "<!-- analysis -->"
NAME = "asha_vs_fifo"


# ---------------------------------------------------------------------------------------------- environment
def machine_info() -> dict:
    import mlflow
    import numpy
    import optuna
    import ray
    import torch

    def _run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    model = next((ln.split(":", 1)[1].strip() for ln in _run(["lscpu"]).splitlines() if ln.startswith("Model name")),
                 platform.processor() or "unknown")  # fmt: skip
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _run(["git", "rev-parse", "--short", "HEAD"]).strip() or None,
        "versions": {"python": platform.python_version(), "ray": ray.__version__, "optuna": optuna.__version__,
                     "mlflow": mlflow.__version__, "torch": torch.__version__, "numpy": numpy.__version__},  # fmt: skip
    }


_SPIN = "\n".join(["import sys, time", "t = time.perf_counter()", "x = 0", "for i in range(int(sys.argv[1])):",
                   "    x += i", "print(time.perf_counter() - t)"])  # fmt: skip


def parallel_capacity(slots: int = 2, seconds: float = 1.0) -> dict:
    """How many cores' worth of CPU `slots` busy processes get right now, from a pure-Python spin loop of about
    `seconds` run alone and then `slots` at once: cores = slots x alone / slowest of the group. 2.0 on an idle
    2-core machine; about 1 when other work holds a core. With the kernel's autogroup scheduling (on here), a
    `nice` process of another session still gets its session's full share, so nice does not free the core."""
    n = str(int(2.3e7 * seconds))

    def run(k: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN, n], stdout=subprocess.PIPE, text=True)
                 for _ in range(k)]  # fmt: skip
        return [float(proc.communicate()[0]) for proc in procs]

    alone = run(1)[0]
    group = run(slots)
    # at most `slots`: more is the lone run slowed by other work at that moment (2.52 of 2 once: a CI run failed on it)
    cores = min(float(slots), slots * alone / max(group))
    return {"alone_s": alone, "group_s": group, "cores": cores, "load": os.getloadavg()[0]}


def start_ray() -> float:
    """A fresh local Ray instance, started as `hsc-search run` starts it (`driver._init_ray`: 127.0.0.1 only, its
    workers preloading the trial's modules), never attached to another Ray cluster that happens to run on this
    machine. Returns the seconds it took (0 when one is up already: --quick keeps one instance for all its
    searches)."""
    import ray

    from hsc_search.driver import _init_ray, _quiet

    _quiet()
    if ray.is_initialized():
        return 0.0
    os.environ.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    _init_ray(None)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- reading a search
_EVENTS: list[tuple] = []  # (driver time, kind, trial id, epoch, val/map_avg), appended by _Recorder


def _recorder():
    """A Tune callback recording when the driver received each epoch's result and each trial's end (Tune runs
    callbacks in the driver process). The per-epoch `timestamp` in Ray's results has a resolution of one second,
    too coarse to order epochs of 0.05 s."""
    from ray.tune import Callback

    from hsc_search.runs import FAILED_KEY, epochs_of

    class _Recorder(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            now = time.perf_counter()  # a trial reports its epochs in batches (at ASHA's rungs, at its end)
            failed = FAILED_KEY in result  # its epochs before a divergence: trained, never the best (as the product)
            for m in epochs_of(result):
                _EVENTS.append((now, "result", trial.trial_id, int(m.get("epoch", 0)),
                                None if failed else m.get("val/map_avg")))  # fmt: skip

        def on_trial_complete(self, iteration, trials, trial, **info):
            _EVENTS.append((time.perf_counter(), "end", trial.trial_id, None, None))

        def on_trial_error(self, iteration, trials, trial, **info):
            _EVENTS.append((time.perf_counter(), "end", trial.trial_id, None, None))

    return _Recorder()


def epoch_curve(events: list[tuple], t0: float) -> list[dict]:
    """Every epoch of every trial in the order the driver received it, with the cumulative epoch count and the
    best validation mAP seen so far; t in seconds since the search started."""
    curve, best = [], float("-inf")
    for t, kind, tid, epoch, val in events:
        if kind != "result":
            continue
        if val is not None:
            best = max(best, val)
        curve.append({"t": round(t - t0, 3), "trial": tid, "epoch": epoch, "val": val, "cum_epochs": len(curve) + 1,
                      "best": best})  # fmt: skip
    return curve


def trial_curve(events: list[tuple], t0: float) -> list[dict]:
    """Whole trials in the order they ended: cumulative epochs and best score so far."""
    seen: dict[str, list] = {}
    curve, cum, best = [], 0, float("-inf")
    for t, kind, tid, epoch, val in events:
        if kind == "result":
            seen.setdefault(tid, []).append(val)
        elif tid in seen:
            vals = seen.pop(tid)
            cum += len(vals)
            best = max([best] + [v for v in vals if v is not None])
            curve.append({"t": round(t - t0, 3), "trial": tid, "epochs": len(vals), "cum_epochs": cum, "best": best})
    return curve


def first_reaching(curve: list[dict], threshold: float) -> dict | None:
    return next((c for c in curve if c["best"] >= threshold), None)


# ---------------------------------------------------------------------------------------------- one search
def timed_search(settings: SearchSettings, work: Path, keep_ray: bool):
    """Runs one search in `work` with a fresh Ray and the result recorder as an extra callback. Returns (outcome, events, t0, wall_s, ray_start_s, slots)."""
    import ray

    from hsc_search import driver

    cwd = os.getcwd()
    os.chdir(work)  # MLflow's artifacts (./mlartifacts) and anything else relative land in the work dir
    _EVENTS.clear()
    try:
        ray_start_s = start_ray()
        slots = int(ray.cluster_resources().get("CPU", 1) // settings.cpus_per_trial)
        t0 = time.perf_counter()
        outcome = driver.run_search(settings, echo=lambda m: print(m, file=sys.stderr), callbacks=[_recorder()])
        wall_s = time.perf_counter() - t0
        stop_if_interrupted(outcome, settings.name)
    finally:
        if not keep_ray:
            ray.shutdown()
        os.chdir(cwd)
    return outcome, list(_EVENTS), t0, wall_s, ray_start_s, slots


def stop_if_interrupted(outcome, name: str) -> None:
    """A search cut short by Ctrl-C (the driver returns its outcome, interrupted) ends the benchmark, exit 130:
    its figures would be recorded as a finished search's (an interrupted ASHA search was written up as 3 trials
    and 3.00x fewer epochs, with exit 0)."""
    if outcome.interrupted:
        print(f"interrupted: search {name} was cut short; nothing written (a benchmark records finished searches "
              "only)", file=sys.stderr)  # fmt: skip
        raise SystemExit(130)


def keep_curves(experiment_dir: str, dest: Path, metric: str) -> Path:
    """A FIFO search's curves, kept as data a replay reads (`hsc-search replay --ray-dir <dest>`): the search's
    `hsc_search.json` and, per trial, `params.json` and a `result.json` trimmed to what the replay uses (per
    epoch: the epoch, the objective and the epoch's seconds; per result: its time stamp and running time). No
    checkpoints: a few KB per trial instead of MBs."""
    import shutil

    from hsc_search.runs import EPOCHS_KEY, FAILED_KEY, epochs_of

    src = Path(experiment_dir)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy(src / "hsc_search.json", dest / "hsc_search.json")
    for result in sorted(src.glob("*/result.json")):
        trial = dest / result.parent.name
        trial.mkdir()
        lines = []
        for line in result.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            keep = {k: r[k] for k in ("timestamp", "time_total_s", "training_iteration", "trial_id", "epoch",
                                      FAILED_KEY) if k in r}  # fmt: skip
            keep[EPOCHS_KEY] = json.dumps([{k: m[k] for k in ("epoch", metric, "time/epoch_s") if k in m}
                                           for m in epochs_of(r)])  # fmt: skip
            lines.append(json.dumps(keep))
        (trial / "result.json").write_text("\n".join(lines) + "\n")
        for name in ("params.json", "error.txt"):
            if (result.parent / name).is_file():
                shutil.copy(result.parent / name, trial / name)
    return dest


def one_search(scheduler: str, seed: int, args) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"{NAME}-{scheduler}-s{seed}-", dir=args.workdir))
    name = f"{scheduler}-s{seed}"
    settings = SearchSettings(
        space=args.space, data=args.data, num_samples=args.trials, max_epochs=args.epochs, scheduler=scheduler,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, max_concurrent=args.max_concurrent,
        seed=seed, mlflow=not args.no_mlflow, name=name, storage=str(work / "ray_results"),
        tracking_uri=None if args.no_mlflow else f"sqlite:///{work / 'mlflow.db'}",
    ).validate()  # fmt: skip
    capacity = parallel_capacity(2, 0.3 if args.quick else 1.0)
    outcome, events, t0, wall_s, ray_start_s, slots = timed_search(settings, work, args.keep_ray)
    trials = []
    for r in outcome.rows:
        trials.append({"trial_id": r.trial_id, "outcome": r.outcome, "epochs": r.epochs, "score": r.score,
                       "test_map_avg": r.final.get("test/map_avg"), "seconds": r.seconds,
                       "params": {k: v for k, v in r.params.items()}})  # fmt: skip
    scored = [t for t in trials if t["score"] is not None and t["outcome"] != "failed"]
    best = max(scored, key=lambda t: t["score"]) if scored else None
    test_of_best, test_note = (best or {}).get("test_map_avg"), ""
    if best is not None and test_of_best is None:
        completed = [t for t in scored if t["test_map_avg"] is not None]
        if completed:
            alt = max(completed, key=lambda t: t["score"])
            test_of_best = alt["test_map_avg"]
            test_note = f"best-val trial stopped early; best completed {alt['trial_id']}"
    return {
        "scheduler": scheduler,
        "seed": seed,
        "workdir": str(work),
        "experiment_dir": outcome.experiment_dir,
        "ray_start_s": ray_start_s,
        "wall_s": wall_s,
        "slots": min(slots, args.max_concurrent or slots),
        "capacity": capacity,
        "trials": trials,
        "n_trials": len(trials),
        "outcomes": {o: sum(t["outcome"] == o for t in trials) for o in sorted({t["outcome"] for t in trials})},
        "total_epochs": sum(t["epochs"] for t in trials),
        "best_trial": best["trial_id"] if best else None,
        "best_val": best["score"] if best else None,
        "test_of_best": test_of_best,
        "test_note": test_note,
        "epoch_curve": epoch_curve(events, t0),
        "trial_curve": trial_curve(events, t0),
    }


def compare(asha: dict, fifo: dict, tol: float) -> dict:
    target = min(asha["best_val"], fifo["best_val"])
    threshold = target - tol
    out = {"target": target, "threshold": threshold, "tolerance": tol}
    for key, run in (("asha", asha), ("fifo", fifo)):
        hit = first_reaching(run["epoch_curve"], threshold)
        thit = first_reaching(run["trial_curve"], threshold)
        out[key] = {
            "epochs_to_target": hit["cum_epochs"] if hit else None,
            "seconds_to_target": hit["t"] if hit else None,
            "trial_epochs_to_target": thit["cum_epochs"] if thit else None,
        }
    a, f = out["asha"], out["fifo"]
    for key in ("epochs_to_target", "trial_epochs_to_target"):
        ratio = f[key] / a[key] if a[key] and f[key] else None
        out[key.replace("_to_target", "_ratio_at_target")] = ratio
    out["total_epochs_ratio"] = fifo["total_epochs"] / asha["total_epochs"]
    out["wall_ratio"] = fifo["wall_s"] / asha["wall_s"]
    return out


# ---------------------------------------------------------------------------------------------- report
def _f(v, fmt="{:.4f}") -> str:
    return "-" if v is None else fmt.format(v)


X = "{:.2f}x"  # a ratio
S = "{:.1f}"  # seconds


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def span(run: dict) -> tuple[float | None, float | None]:
    """(seconds from the search's start to its first epoch result, seconds from the first to the last epoch
    result): the search's start-up (data, MLflow, Tuner, worker processes) and its training span."""
    curve = run["epoch_curve"]
    return (curve[0]["t"], curve[-1]["t"] - curve[0]["t"]) if curve else (None, None)


def span_ratio(pair: dict) -> float | None:
    a, f = span(pair["asha"])[1], span(pair["fifo"])[1]
    return f / a if a and f else None


def summarize(pairs: list[dict]) -> dict:
    s = {}
    for key in ("total_epochs_ratio", "wall_ratio", "epochs_ratio_at_target", "trial_epochs_ratio_at_target"):
        s[f"median_{key}"] = _median([p["comparison"][key] for p in pairs])
    s["median_span_ratio"] = _median([span_ratio(p) for p in pairs])
    for sched in ("asha", "fifo"):
        for key in ("total_epochs", "wall_s", "best_val", "test_of_best", "ray_start_s"):
            s[f"median_{sched}_{key}"] = _median([p[sched][key] for p in pairs])
    return s


def provenance_lines(doc: dict) -> list[str]:
    """The command, machine and date lines that head both search benchmarks' reports."""
    m, v = doc["machine"], doc["machine"]["versions"]
    quick = " (quick mode: a smoke run, figures mean little)" if doc["config"]["quick"] else ""
    return [
        f"- command: `{doc['command']}`{quick}",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; CPU only; shared with other work "
        f"(load average {doc['load_before'][0]:.1f} before, {doc['load_after'][0]:.1f} after)",
        f"- date: {m['date']}; commit {m['git_commit']}; python {v['python']}, ray {v['ray']}, optuna {v['optuna']}, "
        f"mlflow {v['mlflow']}, torch {v['torch']}",
    ]


def render_markdown(doc: dict, keep: str = "") -> str:
    cfg = doc["config"]
    lines = [
        "# ASHA against FIFO",
        "",
        "Generated by `benchmarks/asha_vs_fifo.py`; raw figures (every trial, every epoch) in `asha_vs_fifo.json`.",
        "",
        *provenance_lines(doc),
        f"- search: space `{cfg['space']}`, {cfg['trials']} trials x {cfg['epochs']} epochs, data `{cfg['data']}`, "
        f"{cfg['slots']} trials at once (1 CPU each), MLflow {'off' if cfg['no_mlflow'] else 'on (sqlite)'}; "
        f"ASHA grace period {cfg['grace_period']}, reduction factor {cfg['reduction_factor']:g}; "
        f"tolerance {cfg['tolerance']}; "
        + ("one Ray instance for all searches" if cfg.get("keep_ray") else "a fresh Ray instance for each search"),
        f"- benchmark run time: {doc['elapsed_s']:.0f} s",
        "",
        "## Per seed",
        "",
        "| seed | scheduler | trials (completed / stopped) | epochs trained | wall s (+ Ray start) | start-up s, "
        "training span s | cores free | best val mAP | test mAP of best | epochs to target | s to target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in doc["pairs"]:
        c = p["comparison"]
        for sched in ("asha", "fifo"):
            r, h = p[sched], c[sched]
            oc = r["outcomes"]
            test = _f(r["test_of_best"]) + (" *" if r["test_note"] else "")
            first, train = span(r)
            lines.append(
                f"| {p['seed']} | {sched.upper()} | {r['n_trials']} ({oc.get('completed', 0)} / "
                f"{oc.get('stopped_early', 0)}) | {r['total_epochs']} | {r['wall_s']:.1f} (+{r['ray_start_s']:.1f}) | "
                f"{_f(first, S)}, {_f(train, S)} | {_f(r.get('capacity', {}).get('cores'), S)} | "
                f"{_f(r['best_val'])} | {test} | {_f(h['epochs_to_target'], '{}')} | "
                f"{_f(h['seconds_to_target'], '{:.1f}')} |"
            )
    lines += [
        "",
        "| seed | target (lower best) | FIFO/ASHA epochs trained | FIFO/ASHA wall | FIFO/ASHA training span | "
        "FIFO/ASHA epochs at equal best val (within tol.) | same, counted in whole trials |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in doc["pairs"]:
        c = p["comparison"]
        lines.append(f"| {p['seed']} | {c['target']:.4f} | {c['total_epochs_ratio']:.2f}x | {c['wall_ratio']:.2f}x | "
                     f"{_f(span_ratio(p), X)} | {_f(c['epochs_ratio_at_target'], X)} | "
                     f"{_f(c['trial_epochs_ratio_at_target'], X)} |")  # fmt: skip
    s = summarize(doc["pairs"])
    if len(doc["pairs"]) > 1:
        cells = [_f(s[f"median_{k}"], X) for k in ("total_epochs_ratio", "wall_ratio", "span_ratio",
                                                    "epochs_ratio_at_target", "trial_epochs_ratio_at_target")]
        lines.append("| **median** | | " + " | ".join(f"**{c}**" for c in cells) + " |")
    if any(p[s_]["test_note"] for p in doc["pairs"] for s_ in ("asha", "fifo")):
        lines += ["", "\\* ASHA's best-validation trial was stopped early (no test mAP): the best completed trial's "
                      "test mAP is shown."]  # fmt: skip
    lines += [
        "",
        "Epochs to target: epochs of all trials counted in the order they finished until the search's best "
        "validation mAP first reached the target minus the tolerance; the target is the lower of the two searches' "
        "final bests, so both reach it. Wall time is `run_search` with Ray already started (the Ray start is in "
        "brackets); its start-up is the time until the driver received the first epoch's result (data, MLflow parent "
        "run, Tuner, worker processes), the training span the time from the first to the last epoch's result. "
        "Cores free: how many cores' worth of CPU two busy processes got just before the search (a spin loop alone "
        "and two at once). The two searches of a seed run back to back, their order alternating between seeds.",
        "",
        ANALYSIS_MARK,
    ]
    return "\n".join(lines) + (keep or "\n")  # keep: everything after the mark, its newline included


def output_dir(out: Path | None, quick: bool, name: str) -> Path:
    """Where a benchmark writes: --out when given; else benchmarks/results/, except that a --quick (smoke) run
    without --out writes to a new temporary folder, so that it never overwrites the recorded results."""
    if out is not None:
        if out.exists() and not out.is_dir():  # found before the run, not after it (minutes later)
            raise SystemExit(f"--out {out}: exists and is not a folder; expected a folder to write {name}.md into")
        return out
    path = Path(tempfile.mkdtemp(prefix=f"{name}-quick-")) if quick else ROOT / "benchmarks" / "results"
    if quick:
        print(f"quick run: results go to {path}", file=sys.stderr)
        import atexit
        import contextlib

        def empty_gone() -> None:  # a run refused or stopped before writing: no empty folder left (a walkthrough)
            with contextlib.suppress(OSError):
                path.rmdir()  # only an empty one

        atexit.register(empty_gone)
    return path


def work_parent(workdir: str | None, quick: bool = False) -> str:
    """The parent folder of the per-search working directories (created when missing). A --quick run without
    --workdir gets a temporary one, removed at exit (its searches' folders and checkpoints, ~14 MB a run, stayed
    in the temporary folder)."""
    if workdir is None and quick:
        import atexit
        import shutil

        path = tempfile.mkdtemp(prefix="hsc-bench-quick-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        return path
    path = Path(workdir or tempfile.gettempdir())
    if path.exists() and not path.is_dir():
        raise SystemExit(f"--workdir {path}: exists and is not a folder; expected a folder for the searches' files")
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def write_outputs(doc: dict, out: Path, name: str = NAME, render=None) -> None:
    """Writes NAME.json and NAME.md (rendered by `render(doc, keep)`), keeping the hand-written text after the
    analysis mark of an existing NAME.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = out / f"{name}.md"
    keep = md.read_text().split(ANALYSIS_MARK, 1)[1] if md.exists() and ANALYSIS_MARK in md.read_text() else ""
    md.write_text((render or render_markdown)(doc, keep))


def read_raw(path: Path, name: str, keys: tuple[str, ...] = ("benchmark",)) -> dict:
    """The raw JSON a benchmark wrote, for --from-json: one line (exit 2) when the file is missing, not JSON, or
    another benchmark's (it was a traceback, after the wrong file had been copied over the recorded one)."""
    expected = f"expected the {name}.json that this script writes"
    if not path.is_file():
        raise SystemExit(f"--from-json {path}: no such file; {expected}")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SystemExit(f"--from-json {path}: not readable as JSON ({e}); {expected}") from None
    if not isinstance(doc, dict) or any(k not in doc for k in keys) or doc.get("benchmark", name) != name:
        what = (f"the {doc['benchmark']} benchmark's" if isinstance(doc, dict) and "benchmark" in doc
                else "not a benchmark's raw JSON")  # fmt: skip
        raise SystemExit(f"--from-json {path}: {what}; {expected}")
    return doc


def rerender(doc: dict, path: Path, out: Path | None, render=None) -> Path:
    """--from-json: the markdown of `path` (a recorded JSON, e.g. asha_vs_fifo_e30.json) rendered again as
    <its stem>.md beside it, or into `out`; the JSON itself is never written (it is the record), and the
    hand-written text after the analysis mark of that .md is kept."""
    md = (out or path.parent) / f"{path.stem}.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    keep = md.read_text().split(ANALYSIS_MARK, 1)[1] if md.exists() and ANALYSIS_MARK in md.read_text() else ""
    md.write_text((render or render_markdown)(doc, keep))
    print(f"wrote {md}")
    return md


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    from entry import at_least  # (benchmarks/ is on the path of a script run)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="quick", help="search space name or YAML path (quick)")
    p.add_argument("--data", default=DEFAULT_DATA, help="data spec (the search's default small synthetic AVE)")
    p.add_argument("--trials", type=at_least(1), default=16)
    p.add_argument("--epochs", type=at_least(1), default=12, help="full budget of a trial (ASHA's max_t)")
    p.add_argument("--seed", type=int, default=0, help="first Optuna seed")
    p.add_argument("--repeats", type=at_least(1), default=3, help="seed pairs: seeds seed .. seed+repeats-1")
    p.add_argument("--grace-period", type=int, default=1)
    p.add_argument("--reduction-factor", type=float, default=2.0)
    p.add_argument("--max-concurrent", type=int, default=0, help="0 = as many as the CPUs allow")
    p.add_argument("--tolerance", type=float, default=0.005, help="equal best val mAP: within this of the target")
    p.add_argument("--no-mlflow", action="store_true", help="searches without MLflow tracking")
    p.add_argument("--keep-ray", action="store_true", help="one Ray instance for all searches (default: a fresh one "
                   "for each, so no search inherits another's warm workers)")
    p.add_argument("--quick", action="store_true", help="4 trials x 3 epochs, tiny data, no MLflow, one seed, one Ray "
                   "instance: < 60 s")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results; with --quick a "
                   "new temporary folder, so a smoke run never overwrites the recorded results)")
    p.add_argument("--workdir", default=None, help="parent of the per-search working directories (created when "
                   "missing; default: the temporary folder)")
    p.add_argument("--keep-curves", type=Path, default=None, help="keep each FIFO search's curves in DIR/fifo-s<seed> "
                   "(a trimmed Ray results folder that `hsc-search replay --ray-dir` reads)")
    p.add_argument("--from-json", type=Path, default=None, help="re-render the markdown from a raw JSON file")
    args = p.parse_args(argv)
    if args.from_json:  # the markdown again, beside the JSON (or in --out); nothing is searched
        rerender(read_raw(args.from_json, NAME, ("benchmark", "config", "pairs")), args.from_json, args.out)
        return 0
    args.out = output_dir(args.out, args.quick, NAME)
    args.workdir = work_parent(args.workdir, args.quick)
    if args.quick and args.keep_curves is not None and any(args.keep_curves.glob("fifo-s*/hsc_search.json")):
        raise SystemExit(f"--keep-curves {args.keep_curves}: holds kept curves already, which a --quick run would "
                         "replace with its smoke search's; give a new folder")  # fmt: skip
    if args.quick:
        from quick import quick_defaults

        quick_defaults(p, args, argv, trials=4, epochs=3, data=QUICK_DATA, no_mlflow=True, repeats=1, keep_ray=True)
    os.environ.pop("RAY_ADDRESS", None)  # always a local instance of our own

    staging = None  # kept curves wait here until the run ends: an interrupted run replaces none of the recorded
    if args.keep_curves is not None:  # ones (each seed's folder replaced the record as its search ended)
        args.keep_curves.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".kept-curves-", dir=args.keep_curves))
    try:
        return _run(args, staging)
    finally:
        if staging is not None:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)


def _run(args, staging: Path | None) -> int:
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    machine = machine_info()
    pairs = []
    for i in range(args.repeats):
        seed = args.seed + i
        order = ("asha", "fifo") if i % 2 == 0 else ("fifo", "asha")
        runs = {}
        for sched in order:
            print(f"== seed {seed}: {sched}", file=sys.stderr, flush=True)
            runs[sched] = one_search(sched, seed, args)
            r = runs[sched]
            if sched == "fifo" and staging is not None:
                keep_curves(r["experiment_dir"], staging / f"fifo-s{seed}", "val/map_avg")
                r["kept_curves"] = str(args.keep_curves / f"fifo-s{seed}")  # where it is once the run ends
            print(f"== seed {seed}: {sched}: {r['total_epochs']} epochs, {r['wall_s']:.1f} s, best val "
                  f"{_f(r['best_val'])}", file=sys.stderr, flush=True)  # fmt: skip
        pairs.append({"seed": seed, "order": list(order), **runs,
                      "comparison": compare(runs["asha"], runs["fifo"], args.tolerance)})  # fmt: skip
    slots = pairs[0]["asha"]["slots"]
    doc = {
        "benchmark": NAME,
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "machine": machine,
        "config": {"space": args.space, "data": args.data, "trials": args.trials, "epochs": args.epochs,
                   "seed": args.seed, "repeats": args.repeats, "grace_period": args.grace_period,
                   "reduction_factor": args.reduction_factor, "max_concurrent": args.max_concurrent, "slots": slots,
                   "tolerance": args.tolerance, "no_mlflow": args.no_mlflow, "quick": args.quick,
                   "keep_ray": args.keep_ray,
                   "keep_curves": str(args.keep_curves) if args.keep_curves else None},  # fmt: skip
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "elapsed_s": time.perf_counter() - t_start,
        "pairs": pairs,
    }
    doc["summary"] = summarize(pairs)
    if args.keep_ray:
        import ray

        ray.shutdown()
    write_outputs(doc, args.out)
    if staging is not None:
        for kept in sorted(p for p in staging.iterdir() if p.name.startswith("fifo-s")):  # the run is complete:
            final = args.keep_curves / kept.name  # its curves replace the recorded ones (the old set aside first,
            if final.exists():  # removed with the staging folder: never a moment with neither)
                final.rename(staging / f"replaced-{kept.name}")
            kept.rename(final)
    print(json.dumps({"summary": doc["summary"], "elapsed_s": doc["elapsed_s"]}, indent=1))
    return 0


if __name__ == "__main__":
    from entry import run

    sys.exit(run(main))
