"""The search benchmarks run (in their --quick mode) and write sane figures, so they cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, out: Path, cache: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HSC_CACHE_DIR": str(cache)}
    env.pop("RAY_ADDRESS", None)
    work.mkdir(exist_ok=True)
    cmd = [sys.executable, f"benchmarks/{script}", "--quick", "--out", str(out), "--workdir", str(work), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_asha_vs_fifo_quick(tmp_path, _cache_dir):
    kept = tmp_path / "kept"
    proc = _run("asha_vs_fifo.py", tmp_path / "out", _cache_dir, tmp_path / "work", "--keep-curves", str(kept))
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the FIFO search's curves, moved into place once the run ended (they waited in a staging folder: an
    # interrupted run replaced the recorded curves of the seeds it had finished; a walkthrough)
    assert sorted(p.name for p in kept.iterdir()) == ["fifo-s0"]
    assert len(list((kept / "fifo-s0").glob("*/result.json"))) == 4
    doc = json.loads((tmp_path / "out" / "asha_vs_fifo.json").read_text())
    md = (tmp_path / "out" / "asha_vs_fifo.md").read_text()
    assert "python benchmarks/asha_vs_fifo.py --quick" in md and doc["machine"]["cores"] >= 1
    (pair,) = doc["pairs"]
    asha, fifo, cmp = pair["asha"], pair["fifo"], pair["comparison"]
    trials, epochs = doc["config"]["trials"], doc["config"]["epochs"]
    # FIFO runs every trial to the end; ASHA never trains more
    assert fifo["n_trials"] == asha["n_trials"] == trials
    assert fifo["total_epochs"] == trials * epochs
    assert all(t["outcome"] == "completed" and t["test_map_avg"] is not None for t in fifo["trials"])
    assert trials <= asha["total_epochs"] <= fifo["total_epochs"]
    assert asha["total_epochs"] == sum(t["epochs"] for t in asha["trials"]) == len(asha["epoch_curve"])
    for run in (asha, fifo):
        assert run["wall_s"] > 0 and run["ray_start_s"] >= 0
        assert 0 < run["best_val"] <= 1 and 0 < run["test_of_best"] <= 1
        assert run["epoch_curve"][-1]["best"] == pytest.approx(run["best_val"])
        assert run["capacity"]["cores"] > 0
        assert [c["cum_epochs"] for c in run["epoch_curve"]] == list(range(1, run["total_epochs"] + 1))
    assert cmp["target"] == min(asha["best_val"], fifo["best_val"])
    for key in ("asha", "fifo"):
        assert 1 <= cmp[key]["epochs_to_target"] <= pair[key]["total_epochs"]
    assert cmp["epochs_ratio_at_target"] == cmp["fifo"]["epochs_to_target"] / cmp["asha"]["epochs_to_target"]
    assert cmp["total_epochs_ratio"] >= 1


@pytest.mark.timeout(300)
def test_search_overhead_quick(tmp_path, _cache_dir):
    proc = _run("search_overhead.py", tmp_path / "out", _cache_dir, tmp_path / "work")
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((tmp_path / "out" / "search_overhead.json").read_text())
    assert "python benchmarks/search_overhead.py --quick" in (tmp_path / "out" / "search_overhead.md").read_text()
    modes = {m["mode"] for m in doc["measurements"]}
    assert modes == {"no MLflow", "MLflow (sqlite)"}
    for m in doc["measurements"]:
        assert m["n_trials"] == len(m["trial_compute_s"]) == 4
        assert all(t["outcome"] == "completed" and t["epochs"] == m["epochs"] for t in m["trials"])
        assert m["wall_s"] > 0 and m["compute_s"] > 0 and m["slots"] >= 1
        assert 0 < m["efficiency"] <= 1.5
        assert m["efficiency"] == pytest.approx(m["compute_s"] / (m["wall_s"] * m["slots"]))
        assert m["overhead_per_trial_s"] == pytest.approx((m["wall_s"] * m["slots"] - m["compute_s"]) / m["n_trials"])
        assert 0 <= m["startup_s"] < m["wall_s"] and 0 <= m["tail_s"] < m["wall_s"]
        assert m["epoch_results"] == m["n_trials"] * m["epochs"]
        assert 0 < m["cores_free"] <= 2.5 and m["efficiency_vs_free_cores"] >= m["efficiency"]
    assert len(doc["summary"]) == 2


@pytest.mark.timeout(300)
def test_search_machinery_quick(tmp_path, _cache_dir):
    proc = _run("search_machinery.py", tmp_path / "out", _cache_dir, tmp_path / "work")
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((tmp_path / "out" / "search_machinery.json").read_text())
    assert "python benchmarks/search_machinery.py --quick" in (tmp_path / "out" / "search_machinery.md").read_text()
    for r in doc["per_epoch"] + doc["tiny"]:
        assert r["epochs_seen"] == r["trials"] * r["epochs"]  # every epoch of every trial reached the driver
        assert 0 < r["span_s"] <= r["last_end_s"] < r["wall_s"] and r["tail_s"] == pytest.approx(r["wall_s"] - r["last_end_s"])
        assert r["machinery_s"] == pytest.approx(r["span_s"] * r["slots"] - r["train_s"])
    assert {r["mlflow"] for r in doc["tiny"]} == {False, True}
    assert {r["writer"] for r in doc["tiny"]} == {None, "thread", "process"}  # both places of the MLflow writer
    assert {"thread", "process"} <= set(doc["summary"]["tiny"]["4"])
    assert set(doc["summary"]["per_epoch"]) == {"off", "on"} and doc["stock"]["per_trial_s"] > 0


def test_quick_runs_never_write_into_the_recorded_results_and_workdir_is_created(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from asha_vs_fifo import output_dir, work_parent
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    recorded = ROOT / "benchmarks" / "results"
    quick = output_dir(None, True, "x")
    assert quick.is_dir() and recorded not in quick.parents and quick != recorded
    assert output_dir(None, False, "x") == recorded
    assert output_dir(tmp_path / "o", True, "x") == tmp_path / "o"  # --out given: as asked
    work = tmp_path / "a" / "b"
    assert work_parent(str(work)) == str(work) and work.is_dir()
    scratch = Path(work_parent(None, True))  # a quick run's own folder, removed at exit
    assert scratch.is_dir() and scratch != Path(work_parent(None, True))


def test_mistakes_cost_a_line_before_any_search_and_an_interrupted_search_writes_nothing(tmp_path):
    """An --out that is a file failed after the whole run; --quick --keep-curves onto kept curves replaced the
    recorded FIFO search with its smoke search; bad flags were tracebacks; a search cut short by Ctrl-C was
    written up as a finished one (exit 0)."""
    import types

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import asha_vs_fifo
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    (tmp_path / "file").write_text("x")
    kept = tmp_path / "curves"
    (kept / "fifo-s0").mkdir(parents=True)
    (kept / "fifo-s0" / "hsc_search.json").write_text("{}")
    cases = [
        (["asha_vs_fifo.py", "--quick", "--out", str(tmp_path / "file")], 2, "is a file; expected a folder"),
        (["asha_vs_fifo.py", "--quick", "--workdir", str(tmp_path / "file")], 2, "is a file; expected a folder"),
        (["asha_vs_fifo.py", "--quick", "--keep-curves", str(kept)], 2, "holds kept curves already"),
        (["asha_vs_fifo.py", "--quick", "--space", "nosuch", "--out", str(tmp_path / "o")], 2,
         "asha_vs_fifo.py: error: search settings: space 'nosuch'"),
        (["search_overhead.py", "--quick", "--modes", "bogus"], 2, "--modes: unknown 'bogus'"),
        (["replay_recorded.py", "--orders", "0"], 2,
         "replay_recorded.py: error: argument --orders: 0: must be at least 1"),  # (the option's type says it)
    ]  # fmt: skip
    for args, code, needle in cases:
        proc = subprocess.run([sys.executable, f"benchmarks/{args[0]}", *args[1:]], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert proc.returncode == code and needle in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert (kept / "fifo-s0" / "hsc_search.json").read_text() == "{}" and not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as e:
        asha_vs_fifo.stop_if_interrupted(types.SimpleNamespace(interrupted=True), "asha-s0")
    assert e.value.code == 130
    asha_vs_fifo.stop_if_interrupted(types.SimpleNamespace(interrupted=False), "asha-s0")  # a finished one goes on


@pytest.mark.timeout(300)
def test_warm_start_quick(tmp_path, _cache_dir):
    proc = _run("warm_start.py", tmp_path / "out", _cache_dir, tmp_path / "work")
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((tmp_path / "out" / "warm_start.json").read_text())
    assert "python benchmarks/warm_start.py --quick" in (tmp_path / "out" / "warm_start.md").read_text()
    (s,) = doc["seeds"]
    src, cold, warm = s["source"], s["cold"], s["warm"]
    trials, epochs = doc["config"]["trials"], doc["config"]["epochs"]
    for run in (src, cold, warm):
        assert len(run["trials"]) == trials  # warm trials are not the new search's trials
        assert trials <= run["total_epochs"] <= trials * epochs == len(run["trials"]) * epochs
        assert run["total_epochs"] == len(run["epoch_curve"]) and 0 < run["best_val"] <= 1
    assert cold["seed"] == warm["seed"] == src["seed"] + doc["config"]["seed_offset"]
    assert cold["warm_start"] is None and warm["warm_start"]["of"] == trials
    assert 1 <= warm["warm_start"]["added"] <= trials
    for run in (cold, warm):
        hit = run["cmp"]["epochs_to_source_best"]
        assert run["cmp"]["target"] == src["best_val"]
        assert hit is None or 1 <= hit <= run["total_epochs"]
        assert (hit is not None) == (run["best_val"] >= src["best_val"] - doc["config"]["tolerance"])


@pytest.mark.timeout(300)
def test_starting_actors_quick(tmp_path, _cache_dir):
    """The starting-actors benchmark's smoke run: both modes measured, each a whole search."""
    proc = _run("starting_actors.py", tmp_path / "out", _cache_dir, tmp_path / "work")
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((tmp_path / "out" / "starting_actors.json").read_text())
    assert sorted(m["mode"] for m in doc["measurements"]) == ["Tune's own", "kept (the driver)"]
    for m in doc["measurements"]:
        assert m["trials"] == 8 and m["wall_s"] > 0 and 1 <= m["worker_processes_with_trials"] <= 2
    assert "| Tune's own |" in (tmp_path / "out" / "starting_actors.md").read_text()
