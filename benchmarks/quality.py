"""Retrieval quality: full HSC-MAE against each ablation and three baselines, several seeds, test mAP.

Every trained method is `trainer.fit` on the same data with the default config (`TrainConfig()`, i.e.
`trainer/configs/example.yaml`) plus the method's overrides; the seed is the trainer's `seed` (init, shuffling,
masking); the data stay the same. Each run reports the test mAP of the epoch that validation selected.

    full            HSC-MAE at its defaults (rec + dcca + soft top-k nce, EMA teacher, learned weights on
                    relative losses, tau 0.3)
    no_dcca         use_dcca: false
    no_topk         topk: 0 (plain symmetric InfoNCE instead of soft top-k positives)
    no_rec          use_rec: false (no masked reconstruction)
    no_teacher      topk: 0, distill: none, eval_model: student (no soft positives, no distillation)
    fixed_weights   loss_weighting: fixed (w = 1 for every loss)
    learned_raw     loss_weighting: learned_raw (Kendall weights on the raw losses, the paper's form)
    linear_cca      baseline: linear CCA on the standardised raw features (k and ridge chosen on val), cosine
    dcca_only       baseline: use_rec: false, use_nce: false, eval_embedding: h, eval_projection: cca
    infonce_only    baseline: use_rec: false, use_dcca: false, topk: 0

    python benchmarks/quality.py                          # both datasets, seeds 0,1,2 (~50 min on 2 CPU cores)
    python benchmarks/quality.py --quick --out /tmp/q     # tiny data, 1 seed, 2 epochs: seconds
    python benchmarks/quality.py --from-json benchmarks/results/quality.json   # table + plot only

Writes `quality.json` (raw per-run results, once every run is done; the runs so far are kept in
`quality.partial.json` after each, and `--resume` skips the runs it holds),
`quality.md` (tables) and `quality.png` (bar chart) into --out. Text in quality.md below the line
`<!-- analysis -->` is kept when the file is regenerated.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from trainer import TrainConfig, fit, load_data
from trainer.config import parse_overrides
from trainer.linear_cca import LinearCCA
from trainer.metrics import cross_modal_map

DATASETS = {"ave": "synthetic:ave", "vegas": "synthetic:vegas"}
QUICK_DATASETS = {
    "ave": "synthetic:ave?n_train=400&n_val=100&n_test=100&dim_audio=16&dim_visual=24&num_classes=5",
    "vegas": "synthetic:vegas?n_train=400&n_val=50&n_test=100&dim_audio=16&dim_visual=24&num_classes=5",
}
QUICK_OVERRIDES = {"hidden_dim": 32, "embed_dim": 16, "proj_dim": 16, "batch_size": 64}

# name -> (kind, trainer overrides, description)
METHODS: dict[str, tuple[str, dict, str]] = {
    "full": ("full", {}, "HSC-MAE, default config"),
    "no_dcca": ("ablation", {"use_dcca": False}, "use_dcca: false"),
    "no_topk": ("ablation", {"topk": 0}, "topk: 0 (plain InfoNCE)"),
    "no_rec": ("ablation", {"use_rec": False}, "use_rec: false"),
    "no_teacher": ("ablation", {"topk": 0, "distill": "none", "eval_model": "student"},
                   "topk: 0, distill: none, eval_model: student"),
    "fixed_weights": ("ablation", {"loss_weighting": "fixed"}, "loss_weighting: fixed"),
    "learned_raw": ("ablation", {"loss_weighting": "learned_raw"}, "loss_weighting: learned_raw (on raw losses)"),
    "linear_cca": ("baseline", {}, "linear CCA on raw standardised features"),
    "dcca_only": ("baseline", {"use_rec": False, "use_nce": False, "eval_embedding": "h", "eval_projection": "cca"},
                  "use_rec/use_nce: false, eval h + CCA projection"),
    "infonce_only": ("baseline", {"use_rec": False, "use_dcca": False, "topk": 0},
                     "use_rec/use_dcca: false, topk: 0"),
}  # fmt: skip
LINEAR_CCA_K = (8, 16, 32, 64, 128)
LINEAR_CCA_RIDGE = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # on standardised features (unit variances)
HISTORY_KEYS = ("epoch", "val/map_avg", "cca/mean", "time/epoch_s")  # plus loss/*, weight/*
ANALYSIS_MARK = "<!-- analysis -->"


# ----------------------------------------------------------------------------------------------- running


def linear_cca_baseline(data) -> dict:
    """Linear CCA on the standardised features: (k, ridge) with the best val mAP, then test mAP."""
    a, v = data.train.audio.reshape(len(data.train), -1), data.train.visual.reshape(len(data.train), -1)

    def flat(split):
        return split.audio.reshape(len(split), -1), split.visual.reshape(len(split), -1)

    best = None
    max_k = min(a.shape[1], v.shape[1])
    ks = sorted({k for k in LINEAR_CCA_K if k <= max_k} | {min(32, max_k)})
    for ridge in LINEAR_CCA_RIDGE:
        full = LinearCCA.fit(a, v, k=max_k, ridge=ridge)
        for k in ks:
            proj = LinearCCA(full.mean_a, full.mean_v, full.w_a[:, :k], full.w_v[:, :k], full.rho[:k])
            val = cross_modal_map(*proj.transform(*flat(data.val)), data.val.labels)["avg"]
            if best is None or val > best[0]:
                best = (val, k, ridge, proj)
    val, k, ridge, proj = best
    test = cross_modal_map(*proj.transform(*flat(data.test)), data.test.labels)
    return {
        "test": {f"test/map_{d}": test[d] for d in ("a2v", "v2a", "avg")},
        "best_val": {"val/map_avg": val},
        "chosen": {"k": k, "ridge": ridge},
    }


def train_method(data, overrides: dict, seed: int, epochs: int) -> dict:
    cfg = TrainConfig.from_dict({**overrides, "seed": seed, "epochs": epochs}, source="quality")
    result = fit(cfg, data, log=None, device="cpu")
    history = [
        {k: float(v) for k, v in h.items() if k in HISTORY_KEYS or k.startswith(("loss/", "weight/"))}
        for h in result.history
    ]
    return {
        "test": result.test,
        "best_val": result.best_val,
        "best_epoch": result.best_epoch,
        "history": history,
        "resolved": {k: getattr(result.config, k) for k in ("batch_size", "cca_dim", "cca_k", "topk")},
    }


def run_all(args, specs: dict[str, str], epochs: dict[str, int], extra: dict, log) -> dict:
    """Every run, kept after each in OUT/quality.partial.json (what --resume continues from); quality.json is
    written once all ran (each run went straight into quality.json: a Ctrl-C, or the first minute of a full run,
    left the recorded 61-run file holding one run; a walkthrough)."""
    final = args.out / "quality.json"
    path = args.out / PARTIAL
    results = {
        "meta": meta(args, specs, epochs, extra),
        "methods": {m: {"kind": METHODS[m][0], "overrides": METHODS[m][1], "description": METHODS[m][2]}
                    for m in args.methods},
        "runs": [],
    }  # fmt: skip
    if not args.resume:  # (an earlier interrupted run's: said as this run's, and taken by a later --resume)
        path.unlink(missing_ok=True)
    if args.resume and not path.exists():
        path = final
    if args.resume and path.exists():
        old = json.loads(path.read_text())
        same = all(old["meta"].get(k) == results["meta"][k] for k in ("specs", "epochs", "extra_overrides"))
        if same:
            results["runs"] = [r for r in old["runs"] if r["method"] in args.methods and r["seed"] in args.seeds]
            log(f"resume: {len(results['runs'])} runs already in {path}")
        else:
            log(f"resume: {path} was made with other settings; starting over")
    done = {(r["dataset"], r["method"], r["seed"]) for r in results["runs"]}
    for ds, spec in specs.items():
        t0 = time.perf_counter()
        data = load_data(spec)
        log(f"[{ds}] {data.summary()} (loaded in {time.perf_counter() - t0:.1f}s)")
        for method in args.methods:
            overrides = METHODS[method][1]
            seeds = args.seeds[:1] if method == "linear_cca" else args.seeds  # deterministic: one run
            for seed in seeds:
                if (ds, method, seed) in done:
                    continue
                t0 = time.perf_counter()
                if method == "linear_cca":
                    run = linear_cca_baseline(data)
                else:
                    run = train_method(data, {**extra, **overrides}, seed, epochs[ds])
                run.update(dataset=ds, method=method, seed=seed, wall_s=time.perf_counter() - t0)
                results["runs"].append(run)
                t = run["test"]
                log(f"[{ds}] {method:<14} seed {seed}: test mAP a2v {t['test/map_a2v']:.4f} "
                    f"v2a {t['test/map_v2a']:.4f} avg {t['test/map_avg']:.4f}  "
                    f"(epoch {run.get('best_epoch', '-')}, {run['wall_s']:.0f}s)")  # fmt: skip
                results["meta"]["wall_s"] = sum(r["wall_s"] for r in results["runs"])
                write_json(args.out / PARTIAL, results)
    results["meta"]["wall_s"] = sum(r["wall_s"] for r in results["runs"])
    write_json(final, results)
    (args.out / PARTIAL).unlink(missing_ok=True)
    return results


PARTIAL = "quality.partial.json"  # the runs so far, kept after each; --resume continues from it


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def meta(args, specs, epochs, extra) -> dict:
    try:
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
             .splitlines() if ln.startswith("Model name")), platform.processor() or "unknown")  # fmt: skip
    except OSError:
        cpu = platform.processor() or "unknown"
    argv = [a for a in sys.argv[1:] if a != "--resume"]  # a resumed run gives the same numbers as one in one go
    return {
        "command": " ".join(["python benchmarks/quality.py", *(shlex.quote(a) for a in argv)]),
        "date": _dt.date.today().isoformat(),
        "machine": f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, CPU",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "specs": specs,
        "epochs": epochs,
        "seeds": args.seeds,
        "extra_overrides": extra,
        "quick": bool(args.quick),
    }


# ----------------------------------------------------------------------------------------------- reporting


def summarise(results: dict) -> dict:
    """dataset -> method -> {a2v/v2a/avg: (mean, std, min, max), n, seeds, per-seed avg, epochs}."""
    out: dict = {}
    for ds in results["meta"]["specs"]:
        out[ds] = {}
        for method in results["methods"]:
            runs = sorted((r for r in results["runs"] if r["dataset"] == ds and r["method"] == method),
                          key=lambda r: r["seed"])  # fmt: skip
            if not runs:
                continue
            s = {"n": len(runs), "seeds": [r["seed"] for r in runs],
                 "best_epochs": [r.get("best_epoch") for r in runs], "chosen": runs[0].get("chosen")}  # fmt: skip
            for d in ("a2v", "v2a", "avg"):
                x = np.array([r["test"][f"test/map_{d}"] for r in runs])
                s[d] = (float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0, float(x.min()), float(x.max()))
                s[f"per_seed_{d}"] = x.tolist()
            out[ds][method] = s
    return out


def paired_deltas(summary: dict, ds: str, method: str) -> list[float]:
    """Per-seed (method - full) test avg mAP, paired by seed; a deterministic baseline (one run) is compared
    with every seed of full."""
    full, other = summary[ds].get("full"), summary[ds].get(method)
    if not full or not other or method == "full":
        return []
    f = dict(zip(full["seeds"], full["per_seed_avg"]))
    o = dict(zip(other["seeds"], other["per_seed_avg"]))
    if len(o) == 1 and len(f) > 1:
        o = {s: next(iter(o.values())) for s in f}
    return [o[s] - f[s] for s in sorted(set(f) & set(o))]


def paired_delta(summary: dict, ds: str, method: str) -> tuple[float, float] | None:
    """Mean and std over seeds of the paired (method - full) differences; None for full itself."""
    d = np.array(paired_deltas(summary, ds, method))
    if d.size == 0:
        return None
    return float(d.mean()), float(d.std(ddof=1)) if d.size > 1 else 0.0


def verdicts(summary: dict) -> list[str]:
    """One plain sentence per (dataset, method): does the full model beat it on every seed?"""
    lines = []
    for ds, methods in summary.items():
        if "full" not in methods:
            continue
        fm = methods["full"]["avg"][0]
        for method, s in methods.items():
            d = paired_deltas(summary, ds, method)
            if not d:
                continue
            mean, std = paired_delta(summary, ds, method)
            if len(d) < 2:
                word = "is ahead of" if mean < 0 else "**does not beat**"
                word += " (one seed: no spread to judge by)"
            elif all(x < 0 for x in d):
                word = f"beats, on all {len(d)} seeds,"
            elif all(x > 0 for x in d):
                word = f"**does NOT beat** (worse on all {len(d)} seeds)"
            else:
                wins = sum(x < 0 for x in d)
                word = f"**does not clearly beat** (ahead on {wins} of {len(d)} seeds)"
            lines.append(f"- {ds}: full HSC-MAE ({fm:.4f}) {word} {method} ({s['avg'][0]:.4f}); "
                         f"{method} - full = {mean:+.4f} ± {std:.4f}.")  # fmt: skip
    return lines


def markdown(results: dict, summary: dict, keep: str = "") -> str:
    m = results["meta"]
    eps = ", ".join(f"{ds} {e}" for ds, e in m["epochs"].items())
    lines = [
        "# Retrieval quality: HSC-MAE, its ablations and baselines",
        "",
        f"- command: `{m['command']}`" + (" (quick mode: tiny data and model, a smoke run)" if m.get("quick") else ""),
        f"- machine: {m['machine']}",
        f"- date: {m['date']}; torch {m['torch']}; python {m.get('python', '?')}",
        f"- epochs: {eps}; seeds (trainer `seed`; the data stay the same): {', '.join(map(str, m['seeds']))}",
        f"- time: {m.get('wall_s', 0) / 60:.1f} min (sum of the runs' wall times, data loading excluded)"
        + (f"; extra overrides on every trained method: `{m['extra_overrides']}`" if m.get("extra_overrides") else ""),
        "",
        (
            "Test mAP of the epoch that validation selected (cosine retrieval, relevant = same label), mean ± std "
            "over seeds (min-max of avg in brackets). Δ avg = method - full, paired by seed. Everything else is the "
            "default config (`trainer/configs/example.yaml`). linear_cca is deterministic (one run; k and ridge "
            "chosen on val)."
        ),
        "",
    ]
    for ds, methods in summary.items():
        lines += [f"## {ds}: `{m['specs'][ds]}`", "",
                  "| method | kind | change from default | a2v | v2a | avg | avg min-max | Δ avg vs full | selected epochs |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for method, s in methods.items():
            info = results["methods"][method]
            delta = paired_delta(summary, ds, method)
            dtxt = "-" if delta is None else f"{delta[0]:+.4f} ± {delta[1]:.4f}"
            change = info["description"]
            if s.get("chosen"):
                change += f" (k={s['chosen']['k']}, ridge={s['chosen']['ridge']:g})"
            ep = ", ".join(str(e) for e in s["best_epochs"] if e is not None) or "-"
            name = f"**{method}**" if method == "full" else method
            lines.append(
                f"| {name} | {info['kind']} | {change} | {s['a2v'][0]:.4f} ± {s['a2v'][1]:.4f} | "
                f"{s['v2a'][0]:.4f} ± {s['v2a'][1]:.4f} | **{s['avg'][0]:.4f}** ± {s['avg'][1]:.4f} | "
                f"[{s['avg'][2]:.4f}, {s['avg'][3]:.4f}] | {dtxt} | {ep} |"
            )
        lines.append("")
    lines += ["## Does the full model beat each ablation and baseline?", "",
              "Automatic reading (paired by seed; \"beats\" = full is ahead on every seed; gaps are mean ± std over seeds):", ""]  # fmt: skip
    lines += verdicts(summary) + ["", "![quality](quality.png)", "", ANALYSIS_MARK]
    if keep:
        lines.append(keep.rstrip("\n"))
    return "\n".join(lines) + "\n"


def plot(results: dict, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"full": "#1f77b4", "ablation": "#ff7f0e", "baseline": "#7f7f7f"}
    fig, axes = plt.subplots(1, len(summary), figsize=(6.5 * len(summary), 4.6), squeeze=False)
    for ax, (ds, methods) in zip(axes[0], summary.items()):
        names = list(methods)
        x = np.arange(len(names))
        means = [methods[n]["avg"][0] for n in names]
        stds = [methods[n]["avg"][1] for n in names]
        cols = [colours[results["methods"][n]["kind"]] for n in names]
        ax.bar(x, means, yerr=stds, color=cols, capsize=4, alpha=0.85)
        for i, n in enumerate(names):
            pts = methods[n]["per_seed_avg"]
            ax.scatter(np.full(len(pts), x[i]), pts, s=10, color="k", zorder=3)
        if "full" in methods:
            ax.axhline(methods["full"]["avg"][0], color=colours["full"], ls="--", lw=1)
        lo = min(min(means) - max(stds) - 0.02, min(min(methods[n]["per_seed_avg"]) for n in names) - 0.02)
        ax.set_ylim(max(0.0, lo), min(1.0, max(means) + max(stds) + 0.03))
        ax.set_xticks(x, names, rotation=35, ha="right")
        ax.set_ylabel("test mAP, avg of a2v and v2a (axis not from 0)")
        ep = results["meta"]["epochs"][ds]
        ax.set_title(f"synthetic:{ds} ({ep} epochs, {len(results['meta']['seeds'])} seeds; mean ± std, dots = seeds)",
                     fontsize=9)  # fmt: skip
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    fig.legend(handles, list(colours), loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: dict, out: Path, name: str = "quality") -> None:
    """<name>.md and <name>.png into `out` (`--from-json X.json`: X's own, e.g. quality-tau0.1, never quality.md,
    which a re-render of an older record replaced), keeping the analysis below the mark of an existing .md."""
    summary = summarise(results)
    md_path = out / f"{name}.md"
    keep = ""
    if md_path.exists():
        text = md_path.read_text()
        if ANALYSIS_MARK in text:
            keep = text.split(ANALYSIS_MARK, 1)[1].lstrip("\n")
    md_path.write_text(markdown(results, summary, keep).replace("![quality](quality.png)", f"![quality]({name}.png)"))
    plot(results, summary, out / f"{name}.png")


# ----------------------------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    from entry import at_least, int_list  # (benchmarks/ is on the path of a script run)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny data and model, 1 seed, 2 epochs (a smoke run)")
    p.add_argument("--datasets", default="ave,vegas", help="comma list of: ave, vegas")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of: {', '.join(METHODS)}")
    p.add_argument("--seeds", type=int_list(0), default="0,1,2", help="comma list of trainer seeds (default 0,1,2)")
    p.add_argument("--epochs-ave", type=at_least(1), default=30)
    p.add_argument("--epochs-vegas", type=at_least(1), default=10)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra trainer override applied to every trained method before its own (diagnostics)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared machine 2 threads ran ~7x slower than 1)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results; with --quick a "
                   "new temporary folder, so a smoke run never overwrites the recorded results)")
    p.add_argument("--resume", action="store_true", help="keep the runs already in OUT/quality.partial.json (an interrupted run's), else OUT/quality.json")
    p.add_argument("--from-json", type=Path, default=None, help="only rebuild the tables and chart of a JSON this script wrote: <its name>.md and .png, beside it or in --out")
    args = p.parse_args(argv)
    given_out = args.out
    # (a --quick run's temporary folder is made once its arguments are checked: a refused one left it empty)
    args.out = given_out or (None if args.quick else Path(__file__).resolve().parent / "results")

    if args.from_json is not None:
        try:
            results = json.loads(args.from_json.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            p.error(f"--from-json {args.from_json}: cannot read it as JSON ({getattr(e, 'strerror', None) or e}); "
                    "expected a quality.json that this script wrote")  # fmt: skip
        if not isinstance(results, dict) or not {"meta", "runs"} <= set(results):
            p.error(f"--from-json {args.from_json}: not a quality.json (no meta and runs); expected a quality.json "
                    "that this script wrote")  # fmt: skip
        out = given_out or args.from_json.parent
        out.mkdir(parents=True, exist_ok=True)
        name = args.from_json.stem
        report(results, out, name)
        print(f"wrote {out / (name + '.md')} and {out / (name + '.png')}")
        return 0

    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not args.methods or not datasets:  # (nothing to run: an empty record was written over the recorded one)
        p.error(f"--methods {','.join(args.methods)!r} --datasets {','.join(datasets)!r}: expected at least one of "
                "each")  # fmt: skip
    bad = [m for m in args.methods if m not in METHODS] + [d for d in datasets if d not in DATASETS]
    if bad:
        p.error(f"unknown method(s)/dataset(s) {bad}; methods: {', '.join(METHODS)}; datasets: {', '.join(DATASETS)}")
    if "full" in args.methods:
        args.methods = ["full"] + [m for m in args.methods if m != "full"]
    extra = parse_overrides(args.overrides)
    torch.set_num_threads(args.threads)
    if args.quick:  # flags given with it win (quick.py)
        from quick import quick_defaults

        quick_defaults(p, args, argv, seeds=args.seeds[:1], epochs_ave=2, epochs_vegas=2)
        specs = {d: QUICK_DATASETS[d] for d in datasets}
        epochs = {"ave": args.epochs_ave, "vegas": args.epochs_vegas}
        epochs = {d: epochs[d] for d in datasets}
        extra = {**QUICK_OVERRIDES, **extra}
    else:
        specs = {d: DATASETS[d] for d in datasets}
        epochs = {"ave": args.epochs_ave, "vegas": args.epochs_vegas}
        epochs = {d: epochs[d] for d in datasets}
    args.out = args.out or Path(tempfile.mkdtemp(prefix="quality-quick-"))
    args.out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    try:
        results = run_all(args, specs, epochs, extra, log)
    except KeyboardInterrupt:
        if (args.out / PARTIAL).exists():  # (a --quick run's own temporary folder: named, a new one is made else)
            log(f"interrupted: the runs so far are in {args.out / PARTIAL}; the same command with --resume"
                + ("" if given_out else f" --out {args.out}") + " continues from them")  # fmt: skip
        raise
    report(results, args.out)
    log(f"wrote {args.out / 'quality.json'}, quality.md, quality.png ({results['meta']['wall_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    from entry import run

    sys.exit(run(main))
