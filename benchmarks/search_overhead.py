"""Search overhead: the wall time of a search against the sum of its trials' own training time.

A FIFO search (every trial runs its full budget) of the quick space runs on a local Ray instance; then the very
configs its trials ran (read back from each trial's `params.json`) are trained one after another in THIS process
with `trainer.fit` and no Ray, with one torch thread, as a Ray trial with one CPU gets. That sequential time is
the compute. With `slots` trials at once (CPUs / CPUs per trial):

    efficiency           = compute / (wall x slots)             1.0 = no overhead at all
    overhead per trial s = (wall x slots - compute) / trials     slot-seconds a trial costs beyond its training

`wall` is `run_search` with Ray already started (the Ray start is timed on its own and also folded into a second
efficiency figure). Two trial sizes (about 1 s and about 10 s of training), each with MLflow logging off
(`mlflow=False`) and on (the default sqlite store), measured side by side: rounds alternate the order of the two
modes, and the tables give medians over rounds. The driver-side timeline (recorded by a subclass of the
driver's progress callback) splits the overhead into the start-up inside `run_search` (until the first epoch's
result), the training span, and the tail (last trial's end until `run_search` returns: MLflow summary, plots).

    python benchmarks/search_overhead.py                       # ~1 s and ~10 s trials, 3 rounds (~15 min here)
    python benchmarks/search_overhead.py --cases 1s --rounds 1
    python benchmarks/search_overhead.py --quick --out /tmp/o  # tiny trials, 1 round: < 60 s
    python benchmarks/search_overhead.py --from-json benchmarks/results/search_overhead.json   # tables only

Writes `search_overhead.json` (raw, every round) and `search_overhead.md` into --out. Text in the .md below the
line `<!-- analysis -->` is kept when the file is regenerated.
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

from asha_vs_fifo import (  # noqa: E402
    ANALYSIS_MARK,
    QUICK_DATA,
    machine_info,
    output_dir,
    parallel_capacity,
    provenance_lines,
    read_raw,
    rerender,
    timed_search,
    work_parent,
)
from asha_vs_fifo import write_outputs as _write_outputs  # noqa: E402

from hsc_search.settings import DEFAULT_DATA, SearchSettings  # noqa: E402

NAME = "search_overhead"
BIG_DATA = "synthetic:ave?n_train=6000&n_val=600&n_test=600&dim_audio=32&dim_visual=48&num_classes=10"
# trial sizes: data, epochs and trials chosen so that one trial trains for about 1 s / 10 s on one core here
CASES = {
    "1s": {"data": DEFAULT_DATA, "epochs": 16, "trials": 12},
    "10s": {"data": BIG_DATA, "epochs": 20, "trials": 6},
    "quick": {"data": QUICK_DATA, "epochs": 3, "trials": 4},
}
MODES = {False: "no MLflow", True: "MLflow (sqlite)"}


# ---------------------------------------------------------------------------------------------- measuring
def run_one_search(case: dict, mlflow: bool, seed: int, tag: str, args) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"{NAME}-{tag}-", dir=args.workdir))
    settings = SearchSettings(
        space=args.space, data=case["data"], num_samples=case["trials"], max_epochs=case["epochs"],
        scheduler="fifo", seed=seed, mlflow=mlflow, name=tag, storage=str(work / "ray_results"),
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}" if mlflow else None,
    ).validate()  # fmt: skip
    capacity = parallel_capacity(2, 0.3 if args.quick else 1.0)
    outcome, events, t0, wall_s, ray_start_s, slots = timed_search(settings, work, args.keep_ray)
    exp = Path(outcome.experiment_dir)
    trials = []
    for r in outcome.rows:
        d = exp / r.trial_id
        results = [json.loads(x) for x in (d / "result.json").read_text().splitlines() if x.strip()]
        trials.append({"trial_id": r.trial_id, "outcome": r.outcome, "epochs": r.epochs,
                       "config": json.loads((d / "params.json").read_text()),
                       "ray_time_total_s": results[-1]["time_total_s"] if results else None})  # fmt: skip
    results_t = [t for t, kind, *_ in events if kind == "result"]
    ends_t = [t for t, kind, *_ in events if kind == "end"]
    return {
        "workdir": str(work),
        "mlflow": mlflow,
        "ray_start_s": ray_start_s,
        "wall_s": wall_s,
        "slots": min(slots, case["trials"]),
        "capacity": capacity,
        "trials": trials,
        "startup_s": (min(results_t) - t0) if results_t else None,  # run_search start -> first epoch result
        "tail_s": (t0 + wall_s - max(ends_t)) if ends_t else None,  # last trial end -> run_search returns
        "epoch_results": len(results_t),
    }


def replay(trials: list[dict], data) -> tuple[list[float], float]:
    """Trains each trial's config with `trainer.fit` in this process, one after another. Returns the wall seconds
    per trial and the CPU seconds of them all (with one thread, CPU well below wall means other work took turns
    on the core)."""
    from trainer import TrainConfig, fit

    times, cpu0 = [], time.process_time()
    for t in trials:
        cfg = TrainConfig.from_dict(t["config"], source=f"trial {t['trial_id']}")
        t0 = time.perf_counter()
        fit(cfg, data, log=None, device="cpu")
        times.append(time.perf_counter() - t0)
    return times, time.process_time() - cpu0


def figures(m: dict) -> dict:
    """The derived figures of one measurement, from its raw times."""
    n, slots, wall, compute, start = m["n_trials"], m["slots"], m["wall_s"], m["compute_s"], m["ray_start_s"]
    cores = min(slots, m["capacity"]["cores"])  # the cores this session actually got, measured before the search
    return {
        "mean_trial_compute_s": compute / n,
        "efficiency": compute / (wall * slots),
        "efficiency_with_ray_start": compute / ((wall + start) * slots),
        "overhead_per_trial_s": (wall * slots - compute) / n,
        "overhead_per_trial_with_ray_start_s": ((wall + start) * slots - compute) / n,
        "cores_free": m["capacity"]["cores"],
        "efficiency_vs_free_cores": compute / (wall * cores),
        "overhead_per_trial_vs_free_cores_s": (wall * cores - compute) / n,
        # inside the trials: reporting and checkpointing every epoch, and CPU sharing when trials get < 1 core each
        "in_trial_overhead_per_trial_s": (m["ray_trials_s"] - compute) / n,
    }


def measure(case_name: str, mlflow: bool, rnd: int, args, data) -> dict:
    case = CASES[case_name]
    tag = f"{case_name}-{'mlflow' if mlflow else 'nomlflow'}-r{rnd}"
    print(f"== {tag}: search", file=sys.stderr, flush=True)
    s = run_one_search(case, mlflow, args.seed, tag, args)
    print(f"== {tag}: replaying {len(s['trials'])} trials without Ray", file=sys.stderr, flush=True)
    per_trial, compute_cpu = replay(s["trials"], data)
    m = {
        "case": case_name,
        "round": rnd,
        "mode": MODES[mlflow],
        **{k: v for k, v in s.items() if k != "trials"},
        "n_trials": len(s["trials"]),
        "epochs": case["epochs"],
        "compute_s": sum(per_trial),
        "compute_cpu_s": compute_cpu,
        "trial_compute_s": per_trial,
        "ray_trials_s": sum(t["ray_time_total_s"] or 0.0 for t in s["trials"]),
        "trials": s["trials"],
    }
    m.update(figures(m))
    wall, slots, compute = m["wall_s"], m["slots"], m["compute_s"]
    print(f"== {tag}: wall {wall:.1f} s x {slots} slots, compute {compute:.1f} s, efficiency {m['efficiency']:.2f}, "
          f"overhead/trial {m['overhead_per_trial_s']:.2f} s", file=sys.stderr, flush=True)  # fmt: skip
    return m


# ---------------------------------------------------------------------------------------------- report
KEYS = ("wall_s", "ray_start_s", "compute_s", "compute_cpu_s", "mean_trial_compute_s", "ray_trials_s", "efficiency",
        "efficiency_with_ray_start", "cores_free", "efficiency_vs_free_cores", "overhead_per_trial_s",
        "overhead_per_trial_with_ray_start_s", "overhead_per_trial_vs_free_cores_s", "in_trial_overhead_per_trial_s",
        "startup_s", "tail_s")  # fmt: skip


def summarize(measurements: list[dict]) -> list[dict]:
    out = []
    for case in dict.fromkeys(m["case"] for m in measurements):
        for mode in MODES.values():
            ms = [m for m in measurements if m["case"] == case and m["mode"] == mode]
            if not ms:
                continue
            row = {"case": case, "mode": mode, "rounds": len(ms), "n_trials": ms[0]["n_trials"],
                   "epochs": ms[0]["epochs"], "slots": ms[0]["slots"]}  # fmt: skip
            for k in KEYS:
                vals = [m.get(k) for m in ms if m.get(k) is not None]
                row[k] = statistics.median(vals) if vals else None
            out.append(row)
    return out


def _f(v, fmt="{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


S = "{:.1f}"  # seconds


def render_markdown(doc: dict, keep: str = "") -> str:
    cfg = doc["config"]
    lines = [
        "# Search overhead: wall time against the trials' own training time",
        "",
        "Generated by `benchmarks/search_overhead.py`; raw figures (every round, every trial) in "
        "`search_overhead.json`.",
        "",
        *provenance_lines(doc),
        f"- searches: FIFO, space `{cfg['space']}`, seed {cfg['seed']}, 1 CPU per trial, local Ray; "
        f"{cfg['rounds']} round(s), the two modes alternating; compute = the same configs trained one after "
        "another in one process without Ray (`trainer.fit`, 1 torch thread); "
        + ("one Ray instance for all searches" if cfg.get("keep_ray") else "a fresh Ray instance for each search"),
        f"- benchmark run time: {doc['elapsed_s']:.0f} s",
        "",
    ]
    for name in cfg["cases"]:
        c = CASES[name]
        lines.append(f"- case `{name}`: {c['trials']} trials x {c['epochs']} epochs, data `{c['data']}`")
    lines += [
        "",
        "## Medians over rounds",
        "",
        "| trials | mode | mean trial compute s | compute s | wall s (+ Ray start) | slots | efficiency "
        "(with Ray start) | overhead per trial s (with Ray start) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["summary"]:
        lines.append(
            f"| {r['n_trials']} x {r['epochs']} ep (`{r['case']}`) | {r['mode']} | {_f(r['mean_trial_compute_s'])} | "
            f"{_f(r['compute_s'], S)} | {_f(r['wall_s'], S)} (+{_f(r['ray_start_s'], S)}) | {r['slots']} | "
            f"{_f(r['efficiency'])} ({_f(r['efficiency_with_ray_start'])}) | "
            f"{_f(r['overhead_per_trial_s'])} ({_f(r['overhead_per_trial_with_ray_start_s'])}) |"
        )
    lines += [
        "",
        "Where the time goes, and the same figures against the cores this session actually got:",
        "",
        "| trials | mode | start-up s | tail s | Ray trial time - compute, per trial s | cores free | efficiency vs "
        "free cores | overhead per trial vs free cores s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["summary"]:
        lines.append(
            f"| {r['n_trials']} x {r['epochs']} ep (`{r['case']}`) | {r['mode']} | {_f(r['startup_s'], S)} | "
            f"{_f(r['tail_s'], S)} | {_f(r['in_trial_overhead_per_trial_s'])} | {_f(r.get('cores_free'), S)} | "
            f"{_f(r.get('efficiency_vs_free_cores'))} | {_f(r.get('overhead_per_trial_vs_free_cores_s'))} |"
        )
    stock = doc.get("stock")
    if stock:
        ours = [r for r in doc["summary"] if r["mode"] == MODES[True]]
        lines += [
            "",
            "## Stock Ray Tune beside ours (the same run)",
            "",
            f"Stock Ray Tune 2.60 (`OptunaSearch` + `ASHAScheduler`, `reuse_actors=True`, {stock['trials']} trivial "
            f"trials of {stock['reports']} reports each, no training): **{stock['per_trial_s']:.2f} s per trial** in "
            f"all ({stock['wall_s']:.1f} s). Ours, overhead per trial with MLflow on: "
            + ", ".join(f"{_f(r['overhead_per_trial_s'])} s (`{r['case']}`; "
                        f"{_f(r.get('overhead_per_trial_vs_free_cores_s'))} s vs free cores)" for r in ours)
            + ".",
        ]
    lines += [
        "",
        "## Every round",
        "",
        "| case | round | mode | wall s | Ray start s | compute s (CPU s) | efficiency | overhead per trial s | "
        "start-up s | tail s | cores free |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["measurements"]:
        lines.append(f"| {r['case']} | {r['round']} | {r['mode']} | {r['wall_s']:.1f} | {r['ray_start_s']:.1f} | "
                     f"{r['compute_s']:.1f} ({_f(r.get('compute_cpu_s'), '{:.1f}')}) | {r['efficiency']:.2f} | "
                     f"{r['overhead_per_trial_s']:.2f} | {_f(r['startup_s'], S)} | {_f(r['tail_s'], S)} | "
                     f"{_f(r.get('cores_free'), S)} |")
    lines += [
        "",
        "efficiency = compute / (wall x slots); overhead per trial = (wall x slots - compute) / trials. "
        "CPU s: the CPU time of the replay; with one thread it equals the compute unless other work on the machine "
        "took turns on the core. Cores free: how many cores' worth of CPU two busy processes got just before the "
        "search (a spin loop alone and two at once: 2 x alone / slowest of the two); efficiency vs free cores = "
        "compute / (wall x min(slots, cores free)), and the overhead likewise. "
        "Ray trial time - compute = (sum of Ray's `time_total_s` of the trials - compute) / trials: reporting and "
        "checkpointing (at ASHA's rungs, every checkpoint_every_s and at a trial's end), plus CPU sharing when the "
        "trials get less than a core each. "
        "Start-up = `run_search` start until the driver received the first epoch's "
        "result (data, MLflow parent run, Tuner, worker processes); tail = last trial's end until `run_search` "
        "returned (experiment state, MLflow summary table, plots, best config).",
        "",
        ANALYSIS_MARK,
    ]
    return "\n".join(lines) + (keep or "\n")  # keep: everything after the mark, its newline included


def write_outputs(doc: dict, out: Path) -> None:
    _write_outputs(doc, out, NAME, render_markdown)


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    from entry import at_least  # (benchmarks/ is on the path of a script run)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="1s,10s", help=f"comma-separated trial sizes among {', '.join(CASES)}")
    p.add_argument("--rounds", type=at_least(1), default=3, help="rounds; each measures both modes, alternating order")
    p.add_argument("--space", default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="off,on", help="MLflow modes to measure: off, on or both (off,on)")
    p.add_argument("--keep-ray", action="store_true", help="one Ray instance for all searches (default: a fresh one "
                   "for each, so no search inherits another's warm workers)")
    p.add_argument("--quick", action="store_true", help="4 tiny trials x 3 epochs, 1 round, one Ray instance: < 60 s")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results; with --quick a "
                   "new temporary folder, so a smoke run never overwrites the recorded results)")
    p.add_argument("--workdir", default=None, help="parent of the per-search working directories (created when "
                   "missing; default: the temporary folder)")
    p.add_argument("--from-json", type=Path, default=None, help="re-render the markdown from a raw JSON file")
    args = p.parse_args(argv)
    if args.from_json:  # figures and medians recomputed from the raw times (the formulas may have changed), into
        # the markdown beside the JSON (or in --out); the JSON, the record, is not rewritten
        doc = read_raw(args.from_json, NAME, ("benchmark", "measurements"))
        for m in doc["measurements"]:
            m.update(figures(m))
        doc["summary"] = summarize(doc["measurements"])
        rerender(doc, args.from_json, args.out, render_markdown)
        return 0
    args.out = output_dir(args.out, args.quick, NAME)
    args.workdir = work_parent(args.workdir, args.quick)
    if args.quick:
        from quick import quick_defaults

        quick_defaults(p, args, argv, cases="quick", rounds=1, keep_ray=True)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if not cases:  # (an empty list measured nothing and wrote its empty tables over the recorded ones)
        p.error(f"--cases {args.cases!r}: empty; expected some of {', '.join(CASES)}")
    if not [m for m in args.modes.split(",") if m.strip()]:
        p.error(f"--modes {args.modes!r}: empty; expected off, on or off,on")
    if unknown:
        p.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    bad = [m for m in args.modes.split(",") if m.strip() not in ("off", "on")]
    if bad:
        p.error(f"--modes: unknown {', '.join(map(repr, bad))}; expected off, on or off,on")
    modes = [{"off": False, "on": True}[m.strip()] for m in args.modes.split(",")]
    os.environ.pop("RAY_ADDRESS", None)  # always a local instance of our own

    import torch

    from trainer import TrainConfig, fit, load_data

    torch.set_num_threads(1)  # what a 1-CPU Ray trial gets (Ray sets OMP_NUM_THREADS=1 in its workers)
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    machine = machine_info()
    measurements = []
    for name in cases:
        data = load_data(CASES[name]["data"])
        fit(TrainConfig(epochs=1, hidden_dim=64, embed_dim=32, proj_dim=32, batch_size=128), data, log=None,
            device="cpu")  # warm-up (threads, allocator) outside the timed replays  # fmt: skip
        for rnd in range(args.rounds):
            for mlflow in modes if rnd % 2 == 0 else list(reversed(modes)):
                measurements.append(measure(name, mlflow, rnd, args, data))
    doc = {
        "benchmark": NAME,
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "machine": machine,
        "config": {"cases": cases, "case_defs": {c: CASES[c] for c in cases}, "rounds": args.rounds,
                   "space": args.space, "seed": args.seed, "modes": [MODES[m] for m in modes],
                   "quick": args.quick, "keep_ray": args.keep_ray,
                   "torch_threads": torch.get_num_threads()},  # fmt: skip
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "elapsed_s": time.perf_counter() - t_start,
        "measurements": measurements,
    }
    if args.keep_ray:
        import ray

        ray.shutdown()
    if not args.quick:  # the stock Ray Tune row, in the same run (a Ray instance of its own, started as stock)
        from search_machinery import stock_ray

        doc["stock"] = stock_ray()
    doc["summary"] = summarize(measurements)
    write_outputs(doc, args.out)
    print(json.dumps({"summary": doc["summary"], "elapsed_s": doc["elapsed_s"]}, indent=1))
    return 0


if __name__ == "__main__":
    from entry import run

    sys.exit(run(main))
