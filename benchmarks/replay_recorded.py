"""Replays every recorded FIFO search in benchmarks/results/ under the default settings of `hsc-search replay`.

The recorded searches are the FIFO halves of `benchmarks/asha_vs_fifo.py --keep-curves ...` runs, kept as
trimmed Ray results folders: `fifo_curves` (16 trials x 12 epochs, 1,000 synthetic clips), `fifo_curves_e30`
(30 epochs) and `fifo_curves_n4000` (4,000 clips), seeds 0-2 each. Each folder is replayed exactly as
`hsc-search replay --ray-dir <folder>` replays it (200 orders, 2 trials at once), and the tables go into one
Markdown file, with a summary of `FIFO/x to best` per setting and folder at the top.

    python benchmarks/replay_recorded.py            # ~1-2 min here; writes benchmarks/results/replay.md and .json
    python benchmarks/replay_recorded.py --quick    # smoke run: 20 orders, one folder, a temporary folder

What a replay cannot show is printed under every table (`hsc_search.replay.CANNOT_SHOW`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from asha_vs_fifo import machine_info, output_dir  # noqa: E402

from hsc_search.replay import curves_from_ray_dir, render, replay, to_json  # noqa: E402

NAME = "replay"
SETS = {  # folder -> what it holds, and its column heading
    "fifo_curves": ("16 trials x 12 epochs, 1,000 clips", "1k clips, 12 ep"),
    "fifo_curves_e30": ("16 trials x 30 epochs, 1,000 clips", "1k clips, 30 ep"),
    "fifo_curves_n4000": ("16 trials x 12 epochs, 4,000 clips", "4k clips, 12 ep"),
}


def _summary(doc: dict) -> dict:
    """`hsc-search replay --json`'s document without the per-order figures (megabytes over nine searches; the
    command gives them for one)."""
    for setting in doc["settings"]:
        for v in setting.values():
            if isinstance(v, dict):
                v.pop("per_order", None)
    return doc


def main() -> None:
    from entry import at_least  # (benchmarks/ is on the path of a script run)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=at_least(1), default=200)
    p.add_argument("--quick", action="store_true", help="20 orders, the first folder only; a temporary --out")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results; with --quick "
                   "a new temporary folder)")  # fmt: skip
    args = p.parse_args()
    out = output_dir(args.out, args.quick, NAME)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:  # flags given with it win (quick.py): --quick --orders 3 ran 20 (a walkthrough)
        from quick import quick_defaults

        quick_defaults(p, args, orders=20)
    orders = args.orders
    folders = [ROOT / "benchmarks" / "results" / s / f"fifo-s{seed}" for s in SETS for seed in (0, 1, 2)]
    if args.quick:
        folders = folders[:1]
    t0 = time.perf_counter()
    reports = []
    for folder in folders:
        rep = replay(curves_from_ray_dir(folder), orders=orders)
        rep.curves.source = f"Ray folder {folder.relative_to(ROOT)}"
        reports.append((folder, rep))
        print(f"{folder.relative_to(ROOT)}: {rep.seconds:.1f} s", flush=True)
    machine = machine_info()
    labels = [x.setting.label for x in reports[0][1].settings]
    cols = [f"{SETS[f.parent.name][1]}, seed {f.name[-1]}" for f, _ in reports]
    lines = [
        "# Replays of the recorded FIFO searches",
        "",
        f"Command: `python benchmarks/replay_recorded.py{' --quick' if args.quick else ''}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.perf_counter() - t0:.0f} s). "
        f"commit {machine.get('git_commit')}. Machine: {machine.get('cpu', 'unknown')}, {machine.get('cores', '?')} cores. Each folder replayed as "
        f"`hsc-search replay --ray-dir <folder> --orders {orders}` does (2 trials at once). What the columns mean: "
        "docs/replay.md.",
        "",
        "The recorded searches: " + "; ".join(f"`benchmarks/results/{k}/fifo-s{{0,1,2}}`: {v}" for k, (v, _) in SETS.items())
        + " (the FIFO halves of `benchmarks/asha_vs_fifo.py --keep-curves` runs, seeds 0-2).",
        "",
        "## FIFO/x to best, every setting and folder (median over the orders; the share of orders that reached "
        "the best in brackets)",
        "",
        "| setting | " + " | ".join(cols) + " |",
        "| --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for i, label in enumerate(labels):
        cells = [f"{r.settings[i].fifo_ratio_to_best:.2f}x ({r.settings[i].reached:.0%})" for _, r in reports]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for folder, rep in reports:
        lines += ["", f"## {folder.relative_to(ROOT / 'benchmarks' / 'results')}", "", "```", render(rep), "```"]
    (out / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    doc = {"machine": machine, "orders": orders, "replays": {str(f.relative_to(ROOT)): _summary(to_json(r))
                                                             for f, r in reports}}  # fmt: skip
    (out / f"{NAME}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out / (NAME + '.md')} and {NAME}.json")


if __name__ == "__main__":
    from entry import run

    sys.exit(run(main))
