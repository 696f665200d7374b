"""The benchmark scripts run (in their --quick mode) so they cannot rot."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_trainer_quick(tmp_path):
    out = tmp_path / "new" / "bench.json"  # its folder made when missing (a FileNotFoundError after the run)
    proc = subprocess.run([sys.executable, "benchmarks/bench_trainer.py", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["ours_samples_per_s"] > 0 and result["reference_samples_per_s"] > 0
    assert result["speedup"] == result["reference_epoch_s"] / result["ours_epoch_s"]


def test_bench_gpu_quick(tmp_path):
    """The GPU benchmark's quick mode runs anywhere (CPU here): one trial with FLOPs counted, 1 and 2 trials
    sharing the device in separate processes, and the eager and big-batch variants."""
    proc = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((tmp_path / "gpu.json").read_text())
    single = res["single"]
    # FLOPs per step against the model's own size: every Linear layer of the student runs forward (2 P B) and
    # backward (at least its weight gradient, 2 P B), and at most twice (MAE and CCA paths, 6 P B each) plus the
    # teacher's forward (2 P B); the few non-Linear matmuls (B x B logits, k x k covariances) are small here
    import torch

    from trainer import TrainConfig, load_data
    from trainer.fit import build_state

    data = load_data(res["meta"]["data"])
    cfg = TrainConfig(batch_size=single["batch_size"]).resolve(len(data.train), data.audio_dim, data.visual_dim)
    model = build_state(cfg, data, torch.device("cpu")).model
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert 4 * linear * cfg.batch_size <= single["flops_per_step"] <= 16 * linear * cfg.batch_size
    assert single["achieved_tflops"] * 1e12 == pytest.approx(single["flops_per_step"] * single["steps"] / single["seconds"])
    assert [r["trials"] for r in res["share"]] == [1, 2] and res["share"][0]["speedup_vs_first"] == 1.0
    assert all(r["aggregate_samples_per_s"] > 0 for r in res["share"])
    assert {v["variant"] for v in res["variants"]} == {"eager", "big_batch"}
    assert all("error" not in v for v in res["variants"])
    md = (tmp_path / "gpu.md").read_text()
    assert "| 2 |" in md and "big_batch" in md


def test_gpu_peak_rate_lookup():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_gpu

    assert bench_gpu.peak_tflops("NVIDIA H200") == 989.4
    assert bench_gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0  # the longest matching name wins over "H100"
    assert bench_gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bench_gpu.peak_tflops("Some Future Card") is None


def test_mlflow_writer_quick(tmp_path):
    out = tmp_path / "writer.json"
    proc = subprocess.run([sys.executable, "benchmarks/mlflow_writer.py", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    writer = res["writer"]
    messages = writer["messages"]
    assert messages["start"]["n"] == messages["finish"]["n"] == 4  # one child run per trial, each ended
    assert 4 <= messages["epoch"]["n"] <= 4 * 2
    assert writer["writer_s_per_trial"] == pytest.approx(sum(m["total_s"] for m in messages.values()) / 4)
    assert writer["mlflow_client_calls_per_trial"]["create_run"] == 1  # counted in the writer process
    assert writer["driver_hooks"]["on_trial_start"]["n"] == 4 and writer["driver_cpu_ms_per_trial"] > 0
    assert (writer["where"], res["writer_process"]["where"]) == ("thread", "process")
    assert res["writer_process"]["messages"]["finish"]["n"] == 4
    assert res["plots"]["both_plots_svg_s"] > 0 and res["plots"]["both_plots_matplotlib_png_s"] > 0
    up = res["uploads"]
    assert up["runs_each"] == 2 and up["client_log_artifacts_cpu_ms"] > 0 and up["repository_cpu_ms"] > 0


def test_tracking_throughput_quick_on_sqlite(tmp_path):
    """The store benchmark's quick mode (sqlite only: PostgreSQL is covered by test_teamserver.py) counts every
    point it sent on the server and writes its table where --out says (the folder is created)."""
    out = tmp_path / "new" / "out"
    proc = subprocess.run([sys.executable, "benchmarks/tracking_throughput.py", "--quick", "--backends", "sqlite",
                           "--out", str(out), "--workdir", str(tmp_path / "work")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "tracking_throughput.json").read_text())
    assert [r["loggers"] for r in report["rounds"]] == [1, 2]
    assert all(r["points_arrived"] == r["points_expected"] > 0 and r["errors"] == 0 for r in report["rounds"])
    assert "| sqlite | 2 |" in (out / "tracking_throughput.md").read_text()


def test_tracking_throughput_ctrl_c_is_one_line_and_leaves_no_temp_folder(tmp_path):
    """A Ctrl-C while the loggers log (the terminal sends it to the whole process group): each spawned logger
    printed a KeyboardInterrupt traceback and the temp folder of stores and server logs was left. Now one line,
    exit 130, the temp folders gone, no server left."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "benchmarks/tracking_throughput.py", "--quick", "--backends", "sqlite",
                             "--loggers", "2", "--epochs", "100000"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not any(tmp_path.glob("hsc-tracking-work-*/bench.db")) and time.monotonic() < deadline:
            time.sleep(0.5)  # the server made its store: the loggers start next
        assert any(tmp_path.glob("hsc-tracking-work-*/bench.db")), "the benchmark's server never started"

        def points() -> int:  # what the loggers logged so far, read from the server's store (read-only)
            try:
                db = next(tmp_path.glob("hsc-tracking-work-*/bench.db"))
                with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                    return con.execute("SELECT count(*) FROM metrics").fetchone()[0]
            except (sqlite3.Error, StopIteration):  # its tables not made yet, or being written
                return 0

        while not points() and time.monotonic() < deadline:  # every logger past the benchmark's barrier, logging:
            time.sleep(0.5)  # a fixed 8 s could end inside a logger's start on a loaded machine
        assert points(), "no logger logged"
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 130, stderr[-3000:]
    lines = stderr.strip().splitlines()  # (after the --quick notice of the values given)
    assert "Traceback" not in stderr and lines[1:] == [
        "tracking_throughput.py: interrupted; the results it writes when it ends were not written"], stderr[-3000:]
    assert not list(tmp_path.glob("hsc-tracking-*")), list(tmp_path.iterdir())
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert not left, left  # the mlflow server (its store is under tmp_path) is stopped


def test_bytecode_quick(tmp_path):
    """The bytecode benchmark's smoke run: both modes measured, the .md written where --out says. That the
    installed packages have their .pyc at all is what `make setup` (compileall) guarantees; without
    them the benchmark refuses (exit 2) instead of comparing a state with itself."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "benchmarks/bytecode.py", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.loads((out / "bytecode.json").read_text())
    assert [m["mode"] for m in doc["measurements"]] == ["installed .pyc", "no .pyc"]
    assert all(m["worker_imports_s"] > 0 and m["cli_help_s"] > 0 for m in doc["measurements"])
    assert "| `hsc-search --help` s |" in (out / "bytecode.md").read_text()


def test_replay_recorded_quick(tmp_path):
    """The recorded FIFO searches replay (one of them, 20 orders), with the oracle row in the summary table."""
    proc = subprocess.run([sys.executable, "benchmarks/replay_recorded.py", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "replay.json").read_text())
    assert doc["orders"] == 20  # --quick's; a given --orders wins (--quick --orders 3 ran 20: a walkthrough)
    given = subprocess.run([sys.executable, "benchmarks/replay_recorded.py", "--quick", "--orders", "3", "--out",
                            str(tmp_path / "three")], cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert given.returncode == 0 and json.loads((tmp_path / "three" / "replay.json").read_text())["orders"] == 3, (
        given.stderr[-2000:])
    (only,) = doc["replays"].values()
    by = {s["setting"]: s for s in only["settings"]}
    assert by["fifo"]["epochs"]["median"] == 16 * 12  # FIFO trains every epoch of the 16 recorded trials
    # the oracle gives every trial at least one epoch, and reaches the best in every order
    assert by["oracle:grace=1"]["reached"] == 1.0 and by["oracle:grace=1"]["epochs"]["median"] >= 16
    assert "| oracle:grace=1 |" in (tmp_path / "replay.md").read_text()


def test_from_json_renders_the_markdown_beside_the_record_and_never_rewrites_a_json(tmp_path):
    """--from-json wrote the JSON it was given over benchmarks/results/<name>.json before reading it (another
    benchmark's JSON then failed with a KeyError, the record replaced), and re-rendered a variant's JSON
    (asha_vs_fifo_e30.json) into the main record's .md. Now: <the file's stem>.md beside it, the JSON untouched;
    another benchmark's file, a missing one or one that is not JSON is one line (a walkthrough)."""
    import hashlib
    import shutil

    recorded = ROOT / "benchmarks" / "results"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in recorded.iterdir() if p.is_file()}
    for name in ("asha_vs_fifo_e30.json", "warm_start.json", "search_overhead.json"):
        shutil.copy(recorded / name, tmp_path / name)
    runs = {"asha_vs_fifo.py": "asha_vs_fifo_e30.json", "warm_start.py": "warm_start.json",
            "search_overhead.py": "search_overhead.json"}  # fmt: skip
    for script, name in runs.items():
        data = (tmp_path / name).read_bytes()
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--from-json", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        md = tmp_path / name.replace(".json", ".md")
        assert proc.returncode == 0 and f"wrote {md}" in proc.stdout, proc.stderr[-2000:]
        assert md.read_text().startswith("#") and (tmp_path / name).read_bytes() == data
        wrong = tmp_path / ("warm_start.json" if script != "warm_start.py" else "asha_vs_fifo_e30.json")
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--from-json", str(wrong)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0, proc.stderr[-2000:]
        assert f"--from-json {wrong}: the " in proc.stderr and "benchmark's; expected the" in proc.stderr
    for bad, said in ((tmp_path / "none.json", "no such file"), (ROOT / "README.md", "not readable as JSON")):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "asha_vs_fifo.py"), "--from-json", str(bad)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode != 0 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in recorded.iterdir() if p.is_file()}
    assert after == before  # the recorded results, untouched


def test_a_count_that_measures_nothing_is_refused_before_anything_is_written(tmp_path):
    """`--rounds 0` (or an empty --cases / --seeds) ran nothing, then wrote its empty tables over the recorded
    results in benchmarks/results and exited 0 (a walkthrough). Refused by the option's own type, exit 2, one line;
    the recorded results untouched."""
    import argparse
    import hashlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from entry import at_least, int_list
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert at_least(1)("3") == 3 and int_list(0)(" 0, 2,") == [0, 2] and int_list(1)("16,64") == [16, 64]
    for parse, text in ((at_least(1), "0"), (at_least(1), "-1"), (at_least(1), "x"), (int_list(0), ","),
                        (int_list(0), ""), (int_list(1), "bogus"), (int_list(1), "4,0")):  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
    recorded = ROOT / "benchmarks" / "results"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in recorded.iterdir() if p.is_file()}
    for argv, said in ((["search_overhead.py", "--rounds", "0"], "argument --rounds: 0: must be at least 1"),
                       (["search_overhead.py", "--cases", ","], "--cases ',': empty; expected some of 1s, 10s, quick"),
                       (["quality.py", "--seeds", ","],
                        "argument --seeds: empty; expected whole numbers separated by commas, e.g. 0,1,2")):  # fmt: skip
        proc = subprocess.run([sys.executable, f"benchmarks/{argv[0]}", *argv[1:]], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == f"{argv[0]}: error: {said}", (
            proc.stderr[-2000:])
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in recorded.iterdir() if p.is_file()}
    assert after == before
    # a --quick run refused for its arguments makes no temporary folder (quality.py's was left empty: a walkthrough)
    temp = tmp_path / "temp"
    temp.mkdir()
    proc = subprocess.run([sys.executable, "benchmarks/quality.py", "--quick", "--methods", "foo"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "TMPDIR": str(temp)})  # fmt: skip
    assert proc.returncode == 2 and "unknown method(s)/dataset(s) ['foo']" in proc.stderr, proc.stderr[-2000:]
    assert list(temp.iterdir()) == [], list(temp.iterdir())


def test_a_place_a_benchmark_cannot_write_is_said_before_it_measures(tmp_path):
    """A --out under a file (or a --json naming a folder) was found when the script wrote its results: a traceback
    after the whole run (a walkthrough: 71 s of search_machinery's --quick). Now one line, exit 2, before any
    measuring; a --rounds below 1 names --rounds (it was "config: epochs must be >= 1, got -2")."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from entry import output_problem
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert output_problem(["--quick", "--out", str(afile / "x" / "y")]) == (
        f"--out {afile / 'x' / 'y'}: {afile} is a file, not a folder")
    assert output_problem([f"--workdir={afile}"]) == f"--workdir {afile}: is a file; expected a folder"
    assert output_problem(["--wor", str(afile)]) == f"--workdir {afile}: is a file; expected a folder"  # argparse's
    assert output_problem(["-w", str(afile), "--x", str(afile), "--", str(afile)]) is None  # none of them
    assert output_problem(["--json", str(tmp_path)]) == f"--json {tmp_path}: is a folder; expected a file name"
    assert output_problem(["--out", str(tmp_path / "new" / "deeper"), "--json", str(tmp_path / "b.json")]) is None
    for argv, said in ((["benchmarks/search_machinery.py", "--quick", "--out", str(afile / "x")],
                        f"search_machinery.py: error: --out {afile / 'x'}: {afile} is a file, not a folder"),
                       (["benchmarks/bytecode.py", "--quick", "--out", str(afile / "x")],
                        f"bytecode.py: error: --out {afile / 'x'}: {afile} is a file, not a folder"),
                       (["benchmarks/bench_gpu.py", "--quick", "--out", str(afile / "x")],  # its own parser's line
                        f"bench_gpu.py: error: --out {afile / 'x'}: {afile} is a file, not a folder"),
                       (["benchmarks/bench_trainer.py", "--quick", "--rounds", "-1"],
                        "bench_trainer.py: error: --rounds must be >= 1, got -1")):  # fmt: skip
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == said, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "quick run" not in proc.stdout, proc.stdout
    # last: read_only skips where nothing can make a folder read-only (root without CAP_LINUX_IMMUTABLE)
    from conftest import read_only

    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):  # (as root, CI's user, by the immutable flag: the permission bits stop no root)
        assert output_problem(["--out", str(locked / "x")]) == f"--out {locked / 'x'}: the folder {locked} cannot be written"


@pytest.mark.parametrize("argv, said", [
    (["bench_gpu.py", "--quick", "--share", "0"], "argument --share: 0: each must be at least 1"),
    (["bench_gpu.py", "--quick", "--share", ""], "argument --share: empty; expected whole numbers separated by "
                                                 "commas, e.g. 1,2,3"),
    (["mlflow_writer.py", "--quick", "--trials", "0"], "argument --trials: 0: must be at least 1"),
    (["export_import_check.py", "--experiment", "ei", "--from", "sqlite:///empty.db"], "is not an MLflow database"),
    (["export_import_check.py", "--experiment", "nope", "--from", "sqlite:///m.db"],
     "--experiment 'nope': not in sqlite:///m.db; it has: Default"),
])  # fmt: skip
def test_a_benchmark_refuses_what_measures_nothing_in_one_line(argv, said, tmp_path):
    """`bench_gpu.py --share 0` was a ZeroDivisionError (`--share ''` an empty table), `mlflow_writer.py --quick
    --trials 0` named --quick's epochs wrong, `export_import_check.py --experiment nope` was a traceback after its
    team server's start and, checked with a bare MlflowClient, made an empty --from file a store (walkthrough NN,
    review QQ). Each: one line, exit 2, before any measurement; the empty file left as it was."""
    (tmp_path / "empty.db").write_bytes(b"")
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").search_experiments()  # a store without the experiment
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / argv[0]), *argv[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and said in lines[-1], proc.stderr[-2000:]
    assert (tmp_path / "empty.db").stat().st_size == 0
