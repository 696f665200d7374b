"""The benchmark scripts run (in their --quick mode) so they cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_trainer_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_trainer.py", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["ours_samples_per_s"] > 0 and result["reference_samples_per_s"] > 0
    assert result["speedup"] == result["reference_epoch_s"] / result["ours_epoch_s"]
