"""The quality benchmark runs end to end in --quick mode and writes its JSON, table and plot."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality


def test_quality_quick(tmp_path):
    # HSC_CACHE_DIR is inherited from the session fixture in conftest.py
    proc = subprocess.run([sys.executable, "benchmarks/quality.py", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "quality.json").read_text())
    assert set(results["methods"]) == set(quality.METHODS)
    assert set(results["meta"]["specs"]) == {"ave", "vegas"}
    seen = {(r["dataset"], r["method"]) for r in results["runs"]}
    assert seen == {(d, m) for d in ("ave", "vegas") for m in quality.METHODS}
    for run in results["runs"]:
        for key in ("test/map_a2v", "test/map_v2a", "test/map_avg"):
            value = run["test"][key]
            assert not math.isnan(value) and 0.0 <= value <= 1.0, (run["dataset"], run["method"], key, value)
    md = (tmp_path / "quality.md").read_text()
    assert "| **full** |" in md and "| linear_cca |" in md and "## vegas" in md
    assert (tmp_path / "quality.png").stat().st_size > 1000
    assert not (tmp_path / quality.PARTIAL).exists()  # the runs so far: kept while it runs, gone once all ran

    # an interrupted run's runs (each went straight into quality.json: a Ctrl-C, or the first minute of a full run,
    # left the recorded file with one run; a walkthrough) are in quality.partial.json, which --resume continues
    kept = {**results, "runs": [r for r in results["runs"] if (r["dataset"], r["method"]) != ("vegas", "full")]}
    (tmp_path / quality.PARTIAL).write_text(json.dumps(kept))
    (tmp_path / "quality.json").unlink()
    proc = subprocess.run([sys.executable, "benchmarks/quality.py", "--quick", "--out", str(tmp_path), "--resume"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"resume: {len(kept['runs'])} runs already in {tmp_path / quality.PARTIAL}" in proc.stdout, proc.stdout
    assert [ln for ln in proc.stdout.splitlines() if " seed " in ln and "test mAP" in ln][0].split()[1:3] == [
        "[vegas]", "full"], proc.stdout  # the one run it lacked, alone
    again = json.loads((tmp_path / "quality.json").read_text())
    assert len(again["runs"]) == len(results["runs"]) and not (tmp_path / quality.PARTIAL).exists()
    assert "Traceback" not in proc.stderr, proc.stderr

    # the table and plot regenerate from the JSON alone; text below the analysis mark survives
    (tmp_path / "quality.md").write_text(md + "hand-written notes\n")
    (tmp_path / "quality.png").unlink()
    assert quality.main(["--from-json", str(tmp_path / "quality.json")]) == 0
    assert (tmp_path / "quality.png").exists()
    assert (tmp_path / "quality.md").read_text().endswith(quality.ANALYSIS_MARK + "\nhand-written notes\n")
