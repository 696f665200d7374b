"""Checks a copy of MLflow runs field by field: `databricks-mlflow-export-import` (the kept tool) or our
`hsc-search import-runs`, from an embedded-default store into a PostgreSQL-backed team server.

The tool pins old packages (databricks-cli 0.18.0, tabulate 0.9.0), so it lives in a venv of its own:

    python3 -m venv /path/eivenv && /path/eivenv/bin/pip install mlflow==3.17.2 databricks-mlflow-export-import==1.2.1
    cd FOLDER_WITH_A_SEARCH   # hsc-search run --experiment ei ... made mlflow.db here
    python benchmarks/export_import_check.py --experiment ei --tool /path/eivenv/bin     # the tool
    python benchmarks/export_import_check.py --experiment ei                             # ours

Prints one line per run: what differs between the original and its copy (OK when nothing does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _artifacts(client, run_id, path=None) -> list:
    out = []
    for f in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, f.path) if f.is_dir else [(f.path, f.file_size)]
    return sorted(out)


def compare(src_uri: str, dst_uri: str, experiment: str, ignore_tags=None):
    from hsc_search.transfer import TAG_BEST_RUN

    if ignore_tags is None:  # the copy's own marks (transfer.IMPORT_TAGS: source run, URI and state)
        from hsc_search.transfer import IMPORT_TAGS as ignore_tags
    from mlflow.tracking import MlflowClient

    a, b = MlflowClient(src_uri), MlflowClient(dst_uri)
    ra = a.search_runs([a.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    eb = b.get_experiment_by_name(experiment)
    rb = b.search_runs([eb.experiment_id], max_results=1000) if eb else []
    print(f"runs: {len(ra)} in the source, {len(rb)} in the copy")
    by_name = {}
    for r in rb:
        by_name.setdefault(r.info.run_name, []).append(r)
    ida = {r.info.run_id: r.info.run_name for r in ra}
    idb = {r.info.run_id: r.info.run_name for r in rb}
    for r in ra:
        copies = by_name.get(r.info.run_name, [])
        if len(copies) != 1:
            print(r.info.run_name, f"{len(copies)} copies")
            continue
        s, diffs = copies[0], []
        for f in ("status", "start_time", "end_time", "user_id", "lifecycle_stage"):
            if getattr(r.info, f) != getattr(s.info, f):
                diffs.append(f"{f}: {getattr(r.info, f)} -> {getattr(s.info, f)}")
        ta = {k: v for k, v in r.data.tags.items() if k != "mlflow.parentRunId"}
        tb = {k: v for k, v in s.data.tags.items() if k != "mlflow.parentRunId" and k not in ignore_tags}
        # a search's best trial, by run id: the copy names its own copy of that trial (compared by run name)
        if ida.get(ta.get(TAG_BEST_RUN)) is not None and ida.get(ta[TAG_BEST_RUN]) == idb.get(tb.get(TAG_BEST_RUN)):
            tb[TAG_BEST_RUN] = ta[TAG_BEST_RUN]
        if ta != tb:
            diffs.append(f"tags: missing {sorted(set(ta) - set(tb))}, added {sorted(set(tb) - set(ta))}, "
                         f"changed {sorted(k for k in ta if k in tb and ta[k] != tb[k])}")  # fmt: skip
        if ida.get(r.data.tags.get("mlflow.parentRunId")) != idb.get(s.data.tags.get("mlflow.parentRunId")):
            diffs.append("parent differs")
        if r.data.params != s.data.params:
            diffs.append("params differ")
        points = 0
        for k in r.data.metrics:
            ha = sorted((m.step, m.value, m.timestamp) for m in a.get_metric_history(r.info.run_id, k))
            hb = sorted((m.step, m.value, m.timestamp) for m in b.get_metric_history(s.info.run_id, k))
            points += len(ha)
            if ha != hb:
                diffs.append(f"history of {k} differs")
        arts = _artifacts(a, r.info.run_id)
        if arts != _artifacts(b, s.info.run_id):
            diffs.append("artifacts differ")
        print(f"{r.info.run_name}: {len(r.data.metrics)} metrics, {points} points, {len(arts)} artifact files:",
              "OK" if not diffs else "; ".join(diffs))  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Run it from the folder of a search "
                                "(its mlflow.db), or give --from.")  # fmt: skip
    p.add_argument("--experiment", required=True)
    p.add_argument("--from", dest="src", default="sqlite:///mlflow.db", help="the store to copy from "
                   "(default: ./mlflow.db, the embedded default of the folder a search ran in)")
    p.add_argument("--tool", type=Path, help="bin/ of a venv with databricks-mlflow-export-import [ours if absent]")
    p.add_argument("--twice", action="store_true", help="import twice (does a second import duplicate runs?)")
    args = p.parse_args(argv)
    from hsc_search.runs import sqlite_path
    from hsc_search.teamserver import TeamServer

    db = sqlite_path(args.src)
    if db is not None and not db.is_file():  # before a team server starts (15 s) for nothing to copy
        p.error(f"--from {args.src}: no such file ({db.absolute()}); run it from the folder a search ran in "
                "(`hsc-search run --experiment NAME` makes mlflow.db there), or give --from")  # fmt: skip
    from mlflow.tracking import MlflowClient

    from hsc_search.transfer import check_uri

    check_uri(args.src, "from")  # as import-runs checks it (a bare MlflowClient made an empty file a store: review)
    src = MlflowClient(args.src)  # (a name not there was a traceback after the team server's 15 s start)
    if src.get_experiment_by_name(args.experiment) is None:
        names = sorted(e.name for e in src.search_experiments())
        raise SystemExit(f"--experiment {args.experiment!r}: not in {args.src}; it has: {', '.join(names) or 'none'}")

    work = Path(tempfile.mkdtemp(prefix="hsc-eicheck-"))
    work.chmod(0o711)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = TeamServer(work / "data", port=port).start()
    try:
        for _ in range(2 if args.twice else 1):
            t = time.time()
            if args.tool:
                env = {**os.environ, "MLFLOW_TRACKING_URI": args.src}
                subprocess.run([str(args.tool / "export-experiment"), "--experiment", args.experiment, "--output-dir",
                                str(work / "export")], env=env, check=True, capture_output=True)  # fmt: skip
                env["MLFLOW_TRACKING_URI"] = server.url
                subprocess.run([str(args.tool / "import-experiment"), "--experiment-name", args.experiment,
                                "--input-dir", str(work / "export")], env=env, check=True, capture_output=True)  # fmt: skip
            else:
                from hsc_search.transfer import copy_searches

                copy_searches(args.src, server.url, [args.experiment])
            print(f"copied in {time.time() - t:.1f} s")
        compare(args.src, server.url, args.experiment)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from entry import run

    sys.exit(run(main))
