"""Warm starts against cold starts: does a search started from an earlier search's trials (`--warm-start`) reach
that search's best in fewer epochs than one started from nothing?

For each seed s: a source search (seed s), then a cold search and a warm-started search (both seed s + 100, so
that neither repeats the source's own TPE draws; the warm one from the source's Ray folder). All three: the same
space, data, trial count and budget, ASHA at the shipped settings (grace period 1, reduction factor 2), no MLflow
(the Ray folder is the warm start's source), a fresh local Ray instance each. Reported per seed:

- epochs to the source's best: every epoch of the new search's trials, in the order the driver received them
  (`asha_vs_fifo.epoch_curve`), counted until its best validation mAP so far first reaches the source's best
  validation mAP minus the tolerance (0.005); "never" when it does not within its trials;
- the best validation mAP each search found (a trial's score is its best epoch) and its epochs trained in all.

The warm search's epochs do not include the source's: the question is what the next search costs once the first
one has been paid for.

    python benchmarks/warm_start.py                        # quick space, 16 trials x 12 epochs, seeds 0-2
    python benchmarks/warm_start.py --quick --out /tmp/w   # 4 trials x 3 epochs, tiny data, one seed: < 90 s

Writes `warm_start.json` (raw: every trial and the epoch curves) and `warm_start.md` into --out (default
benchmarks/results/; a --quick run without --out writes to a new temporary folder). Text in the .md below the line
`<!-- analysis -->` is kept when the file is regenerated.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from asha_vs_fifo import (  # noqa: E402
    ANALYSIS_MARK,
    QUICK_DATA,
    _f,
    epoch_curve,
    first_reaching,
    machine_info,
    output_dir,
    parallel_capacity,
    provenance_lines,
    read_raw,
    rerender,
    timed_search,
    work_parent,
    write_outputs,
)

from hsc_search.settings import DEFAULT_DATA, SearchSettings  # noqa: E402

NAME = "warm_start"
SEED_OFFSET = 100  # the cold and warm searches' seed: s + 100


def one_search(kind: str, seed: int, args, warm_start: str | None = None) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"{NAME}-{kind}-s{seed}-", dir=args.workdir))
    settings = SearchSettings(
        space=args.space, data=args.data, num_samples=args.trials, max_epochs=args.epochs, scheduler="asha",
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, seed=seed, mlflow=False,
        name=f"{kind}-s{seed}", storage=str(work / "ray_results"), warm_start=warm_start,
    ).validate()  # fmt: skip
    capacity = parallel_capacity(2, 0.3 if args.quick else 1.0)
    outcome, events, t0, wall_s, ray_start_s, slots = timed_search(settings, work, args.keep_ray)
    trials = [{"trial_id": r.trial_id, "outcome": r.outcome, "epochs": r.epochs, "score": r.score,
               "params": dict(r.params)} for r in outcome.rows]  # fmt: skip
    scored = [t["score"] for t in trials if t["score"] is not None]
    meta = json.loads((Path(outcome.experiment_dir) / "hsc_search.json").read_text())
    return {
        "kind": kind,
        "seed": seed,
        "experiment_dir": outcome.experiment_dir,
        "warm_start": meta.get("warm_start"),
        "ray_start_s": ray_start_s,
        "wall_s": wall_s,
        "slots": slots,
        "capacity": capacity,
        "trials": trials,
        "total_epochs": sum(t["epochs"] for t in trials),
        "outcomes": {o: sum(t["outcome"] == o for t in trials) for o in sorted({t["outcome"] for t in trials})},
        "best_val": max(scored) if scored else None,
        "epoch_curve": epoch_curve(events, t0),
    }


def compare(source: dict, run: dict, tol: float) -> dict:
    threshold = source["best_val"] - tol
    hit = first_reaching(run["epoch_curve"], threshold)
    return {"target": source["best_val"], "threshold": threshold,
            "epochs_to_source_best": hit["cum_epochs"] if hit else None,
            "seconds_to_source_best": hit["t"] if hit else None}  # fmt: skip


def summarize(seeds: list[dict]) -> dict:
    def med(xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    s = {"seeds": len(seeds)}
    for kind in ("cold", "warm"):
        s[f"{kind}_reached"] = sum(p[kind]["cmp"]["epochs_to_source_best"] is not None for p in seeds)
        s[f"median_{kind}_epochs_to_source_best"] = med([p[kind]["cmp"]["epochs_to_source_best"] for p in seeds])
        s[f"median_{kind}_best_val"] = med([p[kind]["best_val"] for p in seeds])
        s[f"median_{kind}_total_epochs"] = med([p[kind]["total_epochs"] for p in seeds])
    s["warm_fewer_epochs"] = sum(_warm_wins(p) for p in seeds)
    return s


def _warm_wins(p: dict) -> bool:
    """The warm search reached the source's best in fewer epochs than the cold one (never counts as infinitely
    many)."""
    c, w = p["cold"]["cmp"]["epochs_to_source_best"], p["warm"]["cmp"]["epochs_to_source_best"]
    return w is not None and (c is None or w < c)


def render_markdown(doc: dict, keep: str = "") -> str:
    cfg = doc["config"]
    lines = [
        "# Warm start against cold start",
        "",
        "Generated by `benchmarks/warm_start.py`; raw figures (every trial, every epoch) in `warm_start.json`.",
        "",
        *provenance_lines(doc),
        f"- searches: space `{cfg['space']}`, {cfg['trials']} trials x {cfg['epochs']} epochs each, data "
        f"`{cfg['data']}`, {cfg['slots']} trials at once (1 CPU each), no MLflow; ASHA grace period "
        f"{cfg['grace_period']}, reduction factor {cfg['reduction_factor']:g}; tolerance {cfg['tolerance']}; a fresh "
        "Ray instance for each search" + (" (one for all in quick mode)" if cfg["keep_ray"] else ""),
        f"- per seed s: source search seed s; cold and warm searches seed s + {SEED_OFFSET}, the warm one "
        "`--warm-start <the source's folder>`",
        f"- benchmark run time: {doc['elapsed_s']:.0f} s",
        "",
        "| seed | source best val (epochs) | warm trials added | cold: epochs to source best | warm: epochs to "
        "source best | cold best val (epochs) | warm best val (epochs) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in doc["seeds"]:
        src, cold, warm = p["source"], p["cold"], p["warm"]
        w = warm["warm_start"] or {}
        states = ", ".join(f"{n} {s}" for s, n in sorted((w.get("states") or {}).items()))

        def hit(r):
            return _f(r["cmp"]["epochs_to_source_best"], "{}") if r["cmp"]["epochs_to_source_best"] else \
                f"never ({r['total_epochs']}+)"

        lines.append(f"| {p['seed']} | {_f(src['best_val'])} ({src['total_epochs']}) | {w.get('added')} of "
                     f"{w.get('of')} ({states}) | {hit(cold)} | {hit(warm)} | {_f(cold['best_val'])} "
                     f"({cold['total_epochs']}) | {_f(warm['best_val'])} ({warm['total_epochs']}) |")  # fmt: skip
    s = doc["summary"]
    if len(doc["seeds"]) > 1:
        lines.append(f"| **median** | | | **{_f(s['median_cold_epochs_to_source_best'], '{:g}')}** "
                     f"({s['cold_reached']}/{s['seeds']} reached) | **{_f(s['median_warm_epochs_to_source_best'], '{:g}')}** "
                     f"({s['warm_reached']}/{s['seeds']} reached) | {_f(s['median_cold_best_val'])} | "
                     f"{_f(s['median_warm_best_val'])} |")  # fmt: skip
    lines += [
        "",
        f"Warm reached the source's best in fewer epochs than cold in {s['warm_fewer_epochs']} of {s['seeds']} "
        "seed(s). Epochs to source best: epochs of the new search's trials, in the order the driver received them, "
        "until its best validation mAP so far first reached the source's best minus the tolerance; \"never (N+)\": "
        "not within the search's N epochs. The medians are over the seeds that reached it. The warm search's count "
        "leaves out the source's own epochs.",
        "",
        ANALYSIS_MARK,
    ]
    return "\n".join(lines) + (keep or "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="quick", help="search space name or YAML path (quick)")
    p.add_argument("--data", default=DEFAULT_DATA, help="data spec (the search's default: 1,000 synthetic AVE clips)")
    p.add_argument("--trials", type=int, default=16, help="trials of each search")
    p.add_argument("--epochs", type=int, default=12, help="full budget of a trial (ASHA's max_t)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--grace-period", type=int, default=1)
    p.add_argument("--reduction-factor", type=float, default=2.0)
    p.add_argument("--tolerance", type=float, default=0.005, help="reaching the source's best: within this of it")
    p.add_argument("--keep-ray", action="store_true", help="one Ray instance for all searches")
    p.add_argument("--quick", action="store_true", help="4 trials x 3 epochs, tiny data, seed 0, one Ray instance")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results; with --quick a "
                   "new temporary folder)")
    p.add_argument("--workdir", default=None, help="parent of the per-search working directories")
    p.add_argument("--from-json", type=Path, default=None, help="re-render the markdown from a raw JSON file")
    args = p.parse_args(argv)
    if args.from_json:  # the markdown again, beside the JSON (or in --out); nothing is searched
        rerender(read_raw(args.from_json, NAME, ("benchmark", "config", "seeds")), args.from_json, args.out,
                 render_markdown)  # fmt: skip
        return 0
    args.out = output_dir(args.out, args.quick, NAME)
    args.workdir = work_parent(args.workdir, args.quick)
    if args.quick:
        from quick import quick_defaults

        quick_defaults(p, args, argv, trials=4, epochs=3, data=QUICK_DATA, seeds=[0], keep_ray=True)
    os.environ.pop("RAY_ADDRESS", None)

    t_start, load_before, machine = time.perf_counter(), os.getloadavg(), machine_info()
    seeds = []
    for seed in args.seeds:
        runs = {"source": one_search("source", seed, args)}
        src = runs["source"]
        print(f"== seed {seed}: source best {_f(src['best_val'])} in {src['total_epochs']} epochs", file=sys.stderr)
        for kind in ("cold", "warm") if seed % 2 == 0 else ("warm", "cold"):  # alternate: the machine is shared
            runs[kind] = one_search(kind, seed + SEED_OFFSET, args, src["experiment_dir"] if kind == "warm" else None)
            runs[kind]["cmp"] = compare(src, runs[kind], args.tolerance)
            reached = runs[kind]["cmp"]["epochs_to_source_best"]
            print(f"== seed {seed}: {kind}: best {_f(runs[kind]['best_val'])}, source best "
                  + (f"reached after {reached} epochs" if reached is not None else "not reached"),
                  file=sys.stderr)  # fmt: skip
        seeds.append({"seed": seed, **runs})
    doc = {
        "benchmark": NAME,
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "machine": machine,
        "config": {"space": args.space, "data": args.data, "trials": args.trials, "epochs": args.epochs,
                   "seeds": args.seeds, "seed_offset": SEED_OFFSET, "grace_period": args.grace_period,
                   "reduction_factor": args.reduction_factor, "tolerance": args.tolerance, "quick": args.quick,
                   "keep_ray": args.keep_ray, "slots": seeds[0]["source"]["slots"]},  # fmt: skip
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "elapsed_s": time.perf_counter() - t_start,
        "seeds": seeds,
    }
    doc["summary"] = summarize(seeds)
    if args.keep_ray:
        import ray

        ray.shutdown()
    write_outputs(doc, args.out, NAME, render_markdown)
    print(json.dumps({"summary": doc["summary"], "elapsed_s": doc["elapsed_s"]}, indent=1))
    return 0


if __name__ == "__main__":
    from entry import run

    sys.exit(run(main))
