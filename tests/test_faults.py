"""Faults survived: a worker node killed mid-search, trials that fail, the tracking server down for a while."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from conftest import assert_complete_histories, node_ids, search_cmd, search_env, search_runs


def test_worker_node_killed_mid_search(tmp_path, tracking_server, _cache_dir):
    """Trials on a killed node retry from their last checkpoint on the nodes left; the search completes."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes(timeout=120)
        # --checkpoint-every-s 0.001: a report (and checkpoint) every epoch, so a trial on the killed node has
        # reported from it (and is seen on both nodes) as soon as it ran one epoch there. 120 epochs: a trial seen
        # busy in MLflow (whose writer may lag the trials by seconds on a loaded machine) is still running when
        # its node is killed
        driver = subprocess.Popen(
            search_cmd("--address", cluster.address, "--tracking-uri", tracking_server.url, "--experiment", "kill",
                        "--num-samples", "4", "--max-epochs", "120", "--scheduler", "fifo", "--name", "kill",
                        "--checkpoint-every-s", "0.001"),
            cwd=tmp_path, env=search_env(_cache_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            victim = _wait_for_busy_worker(driver, tracking_server.url, workers)
            cluster.remove_node(victim, allow_graceful=False)
            out, _ = driver.communicate(timeout=600)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait(timeout=30)
        assert driver.returncode == 0, out[-5000:]
        client, parents, children = search_runs(tracking_server.url, "kill")
        assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
        assert all(c.data.tags["hsc.outcome"] == "completed" for c in children)
        moved = [c for c in children if c.data.tags.get("hsc.retried") == "true"]
        assert moved, "no trial was retried after its node died"
        assert all(victim.node_id[:12] in c.data.tags["hsc.node"] and len(node_ids(c)) == 2 for c in moved)
        assert_complete_histories(client, children)
        # each retry said in one line (Tune logged the error's whole traceback, 24 lines, for each: a walkthrough)
        for c in moved:
            tid = c.data.tags["hsc.trial_id"]
            assert re.search(rf"^    {tid} \S.* \(it last reported from node [\d.]+, id {victim.node_id[:12]}\): retried "
                             r"from its last checkpoint, if it has one \(failure 1 of at most \d+\)$", out,
                             re.M), out[-5000:]  # fmt: skip (the node it ran on named: a walkthrough)
        assert "Trial task failed" not in out and "Traceback" not in out and "\x1b[" not in out, out[-5000:]
    finally:
        cluster.shutdown()


def _wait_for_busy_worker(driver, url, workers, timeout=300):
    """A worker node that runs a trial with at least 2 epochs logged (so it has a checkpoint to resume from) and
    many epochs to go (120), so the trial is still running when the node dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            pytest.fail("search ended early:\n" + driver.stdout.read()[-3000:])
        try:
            _, _, children = search_runs(url, "kill")
        except Exception:
            children = []
        for c in children:
            if c.info.status == "RUNNING" and c.data.metrics.get("epoch", 0) >= 2:
                for w in workers:
                    if w.node_id[:12] in node_ids(c):
                        return w
        time.sleep(0.5)
    pytest.fail("no trial reached epoch 2 on a worker node in time")


# ------------------------------------------------------------------------------------------ faults, one node
def test_failing_trials_are_marked_failed_and_the_search_goes_on(tmp_path, _cache_dir):
    space = tmp_path / "space.yaml"
    space.write_text(
        "description: half of the trials diverge\n"
        "fixed: {hidden_dim: 32, embed_dim: 16, proj_dim: 16, batch_size: 100, grad_clip: 0.0}\n"
        "params:\n"
        "  # 1e30 diverges on the first step (the non-finite guard stops the trial)\n"
        "  lr: {type: categorical, choices: [0.001, 1.0e+30]}\n"
    )
    search = tmp_path / "search.yaml"
    # the default max_failures (2): a divergence is not retried, since a retry would only repeat it
    search.write_text(f"space: {space}\nnum_samples: 4\nmax_epochs: 2\nscheduler: fifo\n")
    proc = subprocess.run(search_cmd("--config", str(search), "--name", "fails"), cwd=tmp_path,
                          env=search_env(_cache_dir), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    client, parents, children = search_runs(f"sqlite:///{tmp_path}/mlflow.db", "hsc-search")
    assert len(children) == 4 and parents[0].info.status == "FINISHED"
    failed = [c for c in children if c.info.status == "FAILED"]
    ok = [c for c in children if c.info.status == "FINISHED"]
    assert failed and ok and len(failed) + len(ok) == 4
    for c in failed:
        assert c.data.params["lr"] == "1e+30" and c.data.tags["hsc.outcome"] == "failed"
        assert "NonFiniteLossError" in c.data.tags["hsc.error"] and "non-finite" in c.data.tags["hsc.error"]
    assert all(c.data.params["lr"] == "0.001" and c.data.tags["hsc.outcome"] == "completed" for c in ok)
    assert "failed" in proc.stdout and "best trial:" in proc.stdout
    # one clear line per failed trial, no traceback, no retry
    assert "Traceback" not in proc.stdout + proc.stderr
    reasons = [l for l in proc.stderr.splitlines() if " failed: NonFiniteLossError: " in l]
    assert len(reasons) == len(failed), proc.stderr[-3000:]
    # the failed trial's line: no score ("-"; it said "val/map_avg nan", as if training had diverged to nan)
    lines = [l for l in proc.stderr.splitlines() if re.match(r"^\[[ \d]\d?/4 ", l)]
    bad = [l for l in lines if " FAILED " in l]
    assert len(bad) == len(failed) and all(" val/map_avg -  best " in l for l in bad), lines
    assert "nan" not in " ".join(lines), lines
    assert all("hsc.retried" not in c.data.tags for c in children)
    import pyarrow.parquet as pq  # and in the summary table, beside the outcome (it had stopped_by only)

    table = pq.read_table(client.download_artifacts(parents[0].info.run_id, "summary/trials.parquet",
                                                    str(tmp_path))).to_pylist()  # fmt: skip
    assert sorted(r["run_id"] for r in table if r["error"]) == sorted(c.info.run_id for c in failed), table
    assert all(r["error"].startswith("NonFiniteLossError: ") for r in table if r["error"]), table
    report = (tmp_path / "ray_results" / "fails" / "report.html").read_text()  # the reason is in the report too
    assert "<th>why it failed</th>" in report and report.count("NonFiniteLossError: ") >= len(failed)


def test_a_trial_that_diverges_after_good_epochs_keeps_them_in_mlflow_and_the_report(tmp_path, _cache_dir):
    """A FIFO trial reports at its end (or every --checkpoint-every-s): one that diverged at epoch 5 lost epochs 1-4,
    its run had no metric at all, and the report said it "ended before its first epoch" (a walkthrough). The failure
    report carries the epochs trained since the last report: MLflow has each of them, the curve is drawn."""
    space = tmp_path / "space.yaml"
    # the learning rate rises over the warm-up without clipping: good epochs first, then a loss that overflows (the
    # assertions hold for any epoch after the first). Where it overflows depends on the CPU's float kernels: lr 100
    # diverged at epoch 5 on an Intel VM and not at all in 6 epochs on an AMD EPYC one (the CI failed there); on the
    # EPYC lr 150 diverges at epoch 4, 300 at 3, 600 at 2, 3000 at 1: 300 leaves a margin of 2x on each side
    space.write_text("fixed: {hidden_dim: 32, embed_dim: 16, proj_dim: 16, batch_size: 100, grad_clip: 0.0, "
                     "warmup_epochs: 6, lr: 300.0}\nparams:\n  tau: {type: categorical, choices: [0.1]}\n")
    proc = subprocess.run(search_cmd("--space", str(space), "--num-samples", "1", "--max-epochs", "6", "--scheduler",
                                     "fifo", "--name", "late"),
                          cwd=tmp_path, env=search_env(_cache_dir), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # its one trial failed: no score
    client, _, children = search_runs(f"sqlite:///{tmp_path}/mlflow.db", "hsc-search")
    [run] = children
    assert run.info.status == "FAILED" and run.data.tags["hsc.outcome"] == "failed"
    failed_at = int(re.search(r"NonFiniteLossError: epoch (\d+):", run.data.tags["hsc.error"]).group(1))
    assert failed_at > 1, run.data.tags["hsc.error"]  # (the space must diverge late for this test to say anything)
    steps = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/map_avg")]
    assert [s for s, _ in steps] == list(range(1, failed_at)), steps
    assert all(0.0 < v < 1.0 for _, v in steps), steps
    assert run.data.metrics["epoch"] == failed_at - 1 and run.data.metrics["time/total_s"] > 0
    # no score: a diverged trial's epochs before it failed topped MLflow's ranking by the primary metric (the review)
    assert "best/max/val/map_avg" not in run.data.metrics, run.data.metrics
    assert [ln for ln in proc.stderr.splitlines() if " FAILED " in ln and " val/map_avg -  best - " in ln], proc.stderr
    # `resume` after a driver's death reads Ray's last report: a failure report's epochs count as reported
    import types

    from hsc_search.runs import EPOCHS_KEY, FAILED_KEY
    from hsc_search.tracking import MlflowTracker

    tracker = MlflowTracker.__new__(MlflowTracker)
    tracker.experiment_id, tracker.parent_run_id, tracker._ended = run.info.experiment_id, run.data.tags.get(
        "mlflow.parentRunId"), set()  # fmt: skip
    report = {FAILED_KEY: "x", EPOCHS_KEY: json.dumps([{"epoch": e} for e in range(1, failed_at + 1)])}
    trial = types.SimpleNamespace(trial_id=run.data.tags["hsc.trial_id"], status="TERMINATED", last_result=report)
    assert tracker.lacking(client, [trial]) == [trial]  # one epoch more than MLflow holds
    report[EPOCHS_KEY] = json.dumps([{"epoch": e} for e in range(1, failed_at)])
    assert tracker.lacking(client, [trial]) == []
    report = (tmp_path / "ray_results" / "late" / "report.html").read_text()
    assert "ended before" not in report and "NonFiniteLossError: epoch" in report


def test_a_search_whose_every_trial_failed_ends_failed_in_mlflow_and_over_for_its_commands(tmp_path, _cache_dir):
    """Every trial failed: the search exits 1, and its MLflow run showed FINISHED, a success's green tick in the
    runs table (a walkthrough). It ends FAILED, with the tag hsc.no_score saying why; the commands that read it take
    it as over (nothing to resume), as `resume` does."""
    import sys
    from pathlib import Path

    space = tmp_path / "space.yaml"
    space.write_text("fixed: {hidden_dim: 32, embed_dim: 16, proj_dim: 16, batch_size: 100, grad_clip: 0.0}\n"
                     "params:\n  lr: {type: categorical, choices: [1.0e+30, 1.0e+31]}\n")  # both diverge at once
    env = search_env(_cache_dir)
    proc = subprocess.run(search_cmd("--space", str(space), "--num-samples", "2", "--max-epochs", "1", "--scheduler",
                                     "fifo", "--name", "allfail"),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 1 and "no trial produced a score: all 2 trials failed" in proc.stdout, (
        proc.stdout[-3000:] + proc.stderr[-3000:])
    _, parents, children = search_runs(f"sqlite:///{tmp_path}/mlflow.db", "hsc-search")
    assert [c.info.status for c in children] == ["FAILED", "FAILED"]
    assert parents[0].info.status == "FAILED", parents[0].info
    assert parents[0].data.tags["hsc.no_score"] == "no trial produced a score (2 failed)"
    allfail = parents[0].info.run_id
    hsc = str(Path(sys.executable).parent / "hsc-search")
    # a search whose driver failed (here: its progress callback raises at the first result) before a trial scored
    # is not over: no tag, FAILED as before, and the read commands keep saying `resume` continues it (the review)
    crash = tmp_path / "crash.py"
    crash.write_text("import sys\nfrom hsc_search import progress\n\n\ndef boom(self, *a, **k):\n"
                     "    raise RuntimeError('a driver-side failure at the first result')\n\n\n"
                     "progress.Progress.on_trial_result = boom\nfrom hsc_search.cli import main\n\nsys.exit(main())\n")
    args = search_cmd("--num-samples", "2", "--max-epochs", "2", "--scheduler", "fifo", "--name", "crashed")[1:]
    proc = subprocess.run([sys.executable, str(crash), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    _, parents, _ = search_runs(f"sqlite:///{tmp_path}/mlflow.db", "hsc-search")
    crashed = next(p for p in parents if p.info.run_name == "crashed")
    assert crashed.info.status == "FAILED" and "hsc.no_score" not in crashed.data.tags, crashed.data.tags
    out = subprocess.run([hsc, "report"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "note: search crashed did not finish and no driver runs it (MLflow status FAILED): `" in out.stderr, (
        out.stdout + out.stderr)
    for args, said in ((["report", "--run-id", allfail], "report of search allfail (2 trials): "),
                       (["export-best", "--run-id", allfail], "all 2 of its trials failed"),
                       (["resume", str(tmp_path / "ray_results" / "allfail")],  # (not "finished" alone: a walkthrough)
                        "nothing to resume; no trial produced a score, so it has no best config")):  # fmt: skip
        out = subprocess.run([hsc, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        text = out.stdout + out.stderr
        assert said in text and "did not finish" not in text and "has not finished" not in text, (args, text[-2000:])
        assert "Traceback" not in text, text[-3000:]


def test_a_config_larger_than_the_machine_fails_at_once_and_is_not_retried(tmp_path, _cache_dir):
    """A space with a model size a few zeros too large (here hidden_dim 1e11: its first layer alone is terabytes, so
    nothing is allocated before the failure; a walkthrough asked for 12 PB): Ray
    retried the trial twice, each failing the same way. One allocation above the machine's whole memory is the
    config's fault: one line, no retry, the search goes on. (Out-of-memory on memory that other trials held is
    still retried.) CUDA's message is read the same way."""
    from trainer.fit import larger_than_the_device  # (the trainable's reason, and `python -m trainer`'s)

    space = tmp_path / "space.yaml"
    space.write_text("fixed: {hidden_dim: 100000000000, embed_dim: 16, proj_dim: 16, batch_size: 100}\n"
                     "params:\n  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")  # fmt: skip
    proc = subprocess.run(search_cmd("--space", str(space), "--num-samples", "1", "--max-epochs", "1", "--scheduler",
                                     "fifo", "--name", "huge", "--no-mlflow"),
                          cwd=tmp_path, env=search_env(_cache_dir), capture_output=True, text=True, timeout=600)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "retried" not in out, out[-3000:]
    failed = [ln for ln in proc.stderr.splitlines() if " failed: RuntimeError: the config needs " in ln]
    assert len(failed) == 1 and "GiB in one allocation, more than this machine has in all (" in failed[0], out[-3000:]
    cuda = RuntimeError("CUDA out of memory. Tried to allocate 120.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
                        "of which 70.1 GiB is free.")  # fmt: skip
    assert "needs 120 GiB in one allocation, more than the GPU has in all (79.19 GiB)" in larger_than_the_device(cuda)
    shared = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
                          "of which 1.1 GiB is free.")  # fmt: skip
    assert larger_than_the_device(shared) is None  # other trials' memory: a retry may fit
    assert larger_than_the_device(RuntimeError("you tried to allocate 1024 bytes")) is None


def test_tracking_server_down_for_a_while_loses_nothing(tmp_path, tracking_server, _cache_dir):
    """The server dies as the first trial starts and comes back 6 s later on the same port and store: trials keep
    running and every epoch of every trial reaches it (the writer retries with back-off). (It died once an epoch
    had reached it, by when a CI run's tiny trials had all ended: the outage hit only the search's end.)"""
    server = tracking_server
    driver = subprocess.Popen(
        search_cmd("--tracking-uri", server.url, "--experiment", "outage", "--num-samples", "4", "--max-epochs",
                    "12", "--scheduler", "fifo", "--name", "outage", "--checkpoint-every-s", "0.2"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=search_env(_cache_dir, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1"),
    )  # fmt: skip
    try:
        lines = []
        for line in driver.stdout:  # (bounded: the driver ends, and its stdout with it)
            lines.append(line)
            if " started " in line:
                break
        else:
            pytest.fail("no trial started:\n" + "".join(lines)[-3000:])
        server.stop(kill=True)
        time.sleep(6)
        server.start()
        out, _ = driver.communicate(timeout=600)
        out = "".join(lines) + out
        assert driver.returncode == 0, out[-5000:]
        client, parents, children = search_runs(server.url, "outage")
        assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children + parents)
        assert all(int(c.data.metrics["epoch"]) == 12 for c in children)
        assert_complete_histories(client, children)
        # the outage hit the search's writes (an audit of the tests: nothing showed it did): the writer's calls
        # failed and were retried (its warning lines), and what they carried reached the server (above)
        assert re.search(r"^.*mlflow: .+ failed \(.+\); retry \d+/\d+ in ", out, re.M), out[-5000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)


def test_restore_falls_back_to_the_newest_readable_checkpoint(tmp_path):
    """Ray's snapshot can name a checkpoint it has since deleted (see `restorable_trainable`): the restore puts
    the sibling with the latest epoch that loads back at that path (chosen by content, not by folder name; a torn
    one is skipped) and tells Ray its iteration, or starts over when none is left."""
    import shutil

    import pyarrow.fs as pafs
    import torch
    from ray import tune
    from ray.train._internal.session import _TrainingResult

    from hsc_search.trainable import usable_checkpoint
    from trainer.fit import CHECKPOINT_FILE, load_state

    fs = pafs.LocalFileSystem()
    trial = tmp_path / "abc123"
    # folder names and epochs disagree on purpose: after a fallback new checkpoints reuse older names
    for i, content in [(3, {"epoch": 9}), (4, {"epoch": 5}), (5, None)]:
        (trial / f"checkpoint_00000{i}").mkdir(parents=True)
        if content is None:  # torn: the upload was cut short
            (trial / f"checkpoint_00000{i}" / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04trunc")
        else:
            torch.save(content, trial / f"checkpoint_00000{i}" / CHECKPOINT_FILE)
    present = _TrainingResult(tune.Checkpoint(str(trial / "checkpoint_000003"), filesystem=fs), {"epoch": 9})
    assert usable_checkpoint(present) is present
    missing = trial / "checkpoint_000002"
    gone = _TrainingResult(tune.Checkpoint(str(missing), filesystem=fs), {"epoch": 3, "training_iteration": 3})
    picked = usable_checkpoint(gone)
    assert picked.checkpoint.path == str(missing) and load_state(missing) == {"epoch": 9}
    assert picked.metrics == {"epoch": 3, "training_iteration": 9}
    for d in trial.iterdir():
        if d.name != "checkpoint_000005":
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
    assert usable_checkpoint(gone) is None  # only the torn one is left: start over
    # a trial whose last epoch's checkpoint is the newest (its driver killed as it completed): an earlier one is
    # restored, whose remaining epochs report again; the last one restored left nothing to train or report
    for name, content in [("checkpoint_000006", {"epoch": 6, "config": {"epochs": 8}}),
                          ("checkpoint_000007", {"epoch": 8, "config": {"epochs": 8}})]:  # fmt: skip
        (trial / name).mkdir()
        torch.save(content, trial / name / CHECKPOINT_FILE)
    usable_checkpoint(gone)
    assert load_state(missing) == {"epoch": 6, "config": {"epochs": 8}}
    shutil.rmtree(missing)
    shutil.rmtree(trial / "checkpoint_000006")
    assert usable_checkpoint(gone) is None  # the last epoch's alone: start over (the same metrics again)
    assert usable_checkpoint(_TrainingResult(None, {})).checkpoint is None


@pytest.mark.parametrize("end", ["sigterm", "timeout"])
def test_a_tracking_server_that_stalls_is_said_and_resume_logs_what_it_missed(end, tmp_path, tracking_server,
                                                                              _cache_dir):  # fmt: skip
    """The server stops answering mid-search (frozen with SIGSTOP: a hung server, a dead SSH tunnel). The driver
    waited on it in silence after the last trial, deaf to SIGTERM, until killed; the `resume` after it then named
    another trial the best from what MLflow held (a walkthrough). Now the wait is said with the way out, SIGTERM
    ends it, and `resume` logs what MLflow lacks from Ray's saved results: every epoch of every trial. Left to
    run out (HSC_MLFLOW_FLUSH_S), the wait ended in "no trial produced a score", exit 1, and the search marked
    finished, which `resume` then could not repair (a walkthrough): now one line with the resume command, exit 1,
    and the search left for `resume`."""
    import json
    import os
    import re
    import signal
    import sys
    import threading
    from pathlib import Path

    server = tracking_server
    driver = subprocess.Popen(
        search_cmd("--tracking-uri", server.url, "--experiment", "stall", "--num-samples", "2", "--max-epochs", "6",
                   "--scheduler", "fifo", "--name", "stall"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**search_env(_cache_dir), "HSC_MLFLOW_FLUSH_S": "20"} if end == "timeout" else search_env(_cache_dir),
    )  # fmt: skip
    lines: list[str] = []
    seen_at: list[float] = []  # when each line came

    def read():
        for line in iter(driver.stdout.readline, ""):
            seen_at.append(time.monotonic())
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    frozen = False
    try:
        deadline = time.monotonic() + 300
        # frozen once both trials have their run: what they report comes after (they ran together and report at
        # their end; frozen after a first epoch was logged, the other trial's record could be logged too before
        # the freeze, and nothing was left to wait for: a race found reading the tests)
        while len(search_runs(server.url, "stall")[2]) < 2:
            if time.monotonic() > deadline or driver.poll() is not None:
                pytest.fail("no trial run made in time:\n" + "".join(lines)[-3000:])
            time.sleep(0.2)
        os.killpg(server.proc.pid, signal.SIGSTOP)
        frozen = True
        deadline = time.monotonic() + 180
        while not any(ln.startswith("waiting for MLflow") for ln in lines):
            if time.monotonic() > deadline or driver.poll() is not None:
                pytest.fail("the wait was not said:\n" + "".join(lines)[-3000:])
            time.sleep(0.5)
        at = next(i for i, ln in enumerate(lines) if ln.startswith("waiting for MLflow"))
        said = lines[at]
        assert f"resume {tmp_path / 'ray_results' / 'stall'}` then logs what MLflow lacks" in said, said
        # said about 10 s after the last trial ended: the end of Tune's run waited on MLflow first, in silence, for
        # up to 120 s more (it flushed the writer itself; the search's end flushes it, and says so)
        last = max(i for i, ln in enumerate(lines) if re.match(r"\[2/2 ", ln))
        assert seen_at[at] - seen_at[last] < 45, "".join(lines)[-3000:]
        t0 = time.monotonic()
        if end == "sigterm":
            driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=90)
        assert time.monotonic() - t0 < (30 if end == "sigterm" else 60), "".join(lines)[-3000:]
    finally:
        if frozen:
            os.killpg(server.proc.pid, signal.SIGCONT)
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
    reader.join(10)
    out = "".join(lines)
    folder = tmp_path / "ray_results" / "stall"
    if end == "sigterm":
        assert driver.returncode == 143 and "Traceback" not in out, out[-3000:]  # SIGTERM's
    else:
        assert driver.returncode == 1 and "Traceback" not in out, out[-3000:]
        assert "no trial produced a score" not in out and "trials:" not in out, out[-3000:]
        assert out.rstrip().splitlines()[-1].startswith("error: MLflow did not take the search's last records in "
                                                        "time"), out[-3000:]  # fmt: skip
        assert f"resume {folder}` logs what MLflow lacks once it answers" in out, out[-3000:]
        assert "finished_at" not in json.loads((folder / "hsc_search.json").read_text())
    again = subprocess.run([str(Path(sys.executable).parent / "hsc-search"), "resume", str(folder)], cwd=tmp_path,
                           env=search_env(_cache_dir), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    client, parents, children = search_runs(server.url, "stall")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children + parents), again.stdout
    assert all(int(c.data.metrics["epoch"]) == 6 for c in children)
    assert_complete_histories(client, children)
    # the best, as Ray's saved results have it, is the one MLflow and the console name
    best = {}
    for f in folder.glob("*/result.json"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            for m in json.loads(r["hsc/epochs_json"]) if "hsc/epochs_json" in r else [r]:
                best[f.parent.name] = max(best.get(f.parent.name, -1.0), m["val/map_avg"])
    top = max(best, key=best.get)
    assert f"best trial: train_trial_{top} (completed, 6 epochs) score {best[top]:.4f}" in again.stdout, again.stdout


def test_a_checkpoint_that_cannot_be_read_is_retried_by_ray_not_failed_as_the_configs_fault(tmp_path):
    """A torn checkpoint (a kill mid-upload) or a storage hiccup is no property of the config: the trial is
    retried as after any failure (`max_failures`), not failed at once as a config that cannot train (the review:
    the trainer's one-line error for it was a DataError, which the trainable treats as deterministic)."""
    from hsc_search.trainable import DETERMINISTIC
    from trainer.fit import CheckpointError, load_state

    (tmp_path / "state.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint") as info:
        load_state(tmp_path)
    assert not isinstance(info.value, DETERMINISTIC)


def test_a_server_whose_artifact_store_fails_ends_the_start_in_seconds(tmp_path, _cache_dir):
    """A tracking server that answers, whose artifact store fails (HTTP 500 on each upload: its destination a path
    that cannot be made), held a search's start in silence for 4.4 minutes, MLflow's 7 retries per upload, before
    its one line (a walkthrough). The start's calls retry as the tail's do: the same line, in seconds."""
    from conftest import MlflowServer  # (its destination a path under a file)

    server = MlflowServer(tmp_path / "m.db", "/dev/null/served").start()
    try:
        t0 = time.monotonic()
        proc = subprocess.run(search_cmd("--tracking-uri", server.url, "--num-samples", "1", "--max-epochs", "1",
                                         "--name", "art"), cwd=tmp_path, env=search_env(_cache_dir),
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        took = time.monotonic() - t0
    finally:
        server.stop()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: MLflow's store {server.url} failed as the search started (") and \
        "nothing was trained" in last, last  # fmt: skip
    assert took < 120, took  # 264 s before (MLflow's default retries), about 30 s here
    assert not (tmp_path / "ray_results" / "art").exists()


def test_a_server_whose_artifact_root_cannot_be_written_is_refused_before_any_run(tmp_path):
    """A server that does not serve artifacts (`--no-serve-artifacts`) names a root its clients write themselves,
    here one under a file that no machine can write: the search's first upload failed in a 214-line traceback and
    left a FAILED run (a walkthrough). A new experiment's root is known only once made: refused then, as an existing
    one's is, before the search's run is made, with what to do."""
    from conftest import MlflowServer

    from hsc_search.driver import _experiment_id
    from hsc_search.preflight import PreflightError
    from hsc_search.runs import client_for

    server = MlflowServer(tmp_path / "m.db", None, artifact_args=["--no-serve-artifacts", "--default-artifact-root",
                                                                  "/dev/null/mlart"]).start()  # fmt: skip
    try:
        client = client_for(server.url)
        for _ in ("new", "existing"):
            with pytest.raises(PreflightError) as e:
                _experiment_id(client, "team", "val/map_avg", "max", server.url, notes=[])
            assert str(e.value).startswith("--experiment team: ") and "/dev/null/mlart/" in str(e.value) and \
                "which cannot be written from this machine; MLflow's client writes there itself unless the server " \
                "serves artifacts" in str(e.value), str(e.value)  # fmt: skip
        assert client.get_experiment_by_name("team") is not None  # kept: the next search is refused as existing
    finally:
        server.stop()


def test_a_store_that_refuses_records_ends_the_search_resumable(tmp_path, _cache_dir):
    """MLflow's sqlite store can no longer grow (its disk full: here the writer process's own file-size limit, so
    that nothing else of the search is touched) while every trial trains and scores. Each record failed after ~45 s
    of retries, the search ended "no trial produced a score", was marked finished, and `resume` refused to log what
    MLflow lacked: the record was lost for good (a walkthrough). Now: exit 1 with one line naming the store's own
    words and the resume command, not marked finished; the resume logs every epoch from Ray's results. A bad
    HSC_MLFLOW_RETRIES is the pre-flight's one line."""
    import contextlib
    import json
    import os
    import resource
    import sqlite3
    import sys
    from pathlib import Path

    import psutil

    # the writer in a process of its own, to limit it alone; 2 attempts per call (each waited ~45 s at the default)
    env = search_env(_cache_dir, HSC_MLFLOW_WRITER="process", HSC_MLFLOW_RETRIES="2")
    # a module of the user's in the folder searched in, named as one the writer imports: `python -m` put the
    # working directory first on the writer's path, and the writer died at its start (a walkthrough)
    (tmp_path / "mlflow.py").write_text("raise SystemExit('the folder own mlflow.py was imported')\n")
    # 3 trials on 2 cores: the third starts once one of the first two has ended, so at least one trial's record
    # comes after the limit, however quickly the writer logged the first two (a CI run saw one logged in full)
    n = 3
    driver = subprocess.Popen(search_cmd("--num-samples", str(n), "--max-epochs", "2", "--scheduler", "fifo",
                                         "--name", "full"), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def trial_runs() -> int:  # read with sqlite itself: an MlflowClient per look made the window wider
        try:
            with contextlib.closing(sqlite3.connect(f"file:{tmp_path / 'mlflow.db'}?mode=ro", uri=True)) as db:
                return db.execute("SELECT count(*) FROM tags WHERE key = 'hsc.kind' AND value = 'trial'").fetchone()[0]
        except sqlite3.Error:  # not made yet, or being written
            return 0

    try:
        writer, deadline = None, time.monotonic() + 180
        while writer is None:  # the writer process, found first (it is up from the search's start)
            for child in psutil.Process(driver.pid).children(recursive=True):
                try:
                    if "hsc_search.writer" in " ".join(child.cmdline()):
                        writer = child
                except psutil.Error:
                    pass
            if writer is None and (time.monotonic() > deadline or driver.poll() is not None):
                pytest.fail("no writer process")
            time.sleep(0.1)
        while not trial_runs():  # once it has made a trial's run: its store is open and in use
            if time.monotonic() > deadline or driver.poll() is not None:
                pytest.fail("the writer made no trial run")
            time.sleep(0.05)
        resource.prlimit(writer.pid, resource.RLIMIT_FSIZE, (1, 1))  # no file of it can grow past 1 byte
        out, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
    folder = tmp_path / "ray_results" / "full"
    assert driver.returncode == 1 and "Traceback" not in out, out[-5000:]
    assert "no trial produced a score" not in out and "SQL:" not in out, out[-5000:]
    last = out.rstrip().splitlines()[-1]
    # the first record refused: a database write (the database's words: "database or disk is full", or "disk I/O
    # error" where the write that hit the limit was its journal's, as a CI run saw) or an artifact's upload (the file
    # system's, EFBIG under the file-size limit), whichever came first after the limit was set; never SQLAlchemy's
    assert re.match(r"error: MLflow refused \d+ records? of the search \(the first: (the database: (database or disk "
                    r"is full|disk I/O error)|\[Errno 27\] File too large)", last), last  # fmt: skip
    assert f"every trial's results are kept in {folder}: `" in last and f"resume {folder}` logs" in last, last
    # each call tried at most twice (HSC_MLFLOW_RETRIES), none 8 times; "database or disk is full" not again at all
    # (seconds do not mend a full disk: a walkthrough's search took minutes of retries to end)
    assert not re.search(r"retry \d/7 in", out) and not re.search(r"\(the database: database or disk is full\); "
                                                                r"retry", out), out[-5000:]  # fmt: skip
    assert "finished_at" not in json.loads((folder / "hsc_search.json").read_text())
    _, parents, children = search_runs(uri, "hsc-search")
    assert [p.info.status for p in parents] == ["KILLED"], [p.info.status for p in parents]
    # what MLflow lacks, by Ray's record (every trial ended after 2 epochs): a trial whose whole record was logged
    # before the limit took hold (the writer is quick; a CI run saw one) is held in full and not caught up
    held = sum(c.info.status != "RUNNING" and int(c.data.metrics.get("epoch", 0)) >= 2 for c in children)
    assert held < n, "every trial was recorded before the store refused: nothing to resume"
    lacked = f"{n - held} trial{'s' if n - held > 1 else ''}"

    resumed_at = time.time()
    again = subprocess.run([str(Path(sys.executable).parent / "hsc-search"), "resume", str(folder)], cwd=tmp_path,
                           env={k: v for k, v in env.items() if k != "HSC_MLFLOW_WRITER"}, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"MLflow lacked what {lacked} ended before this resume reported" in again.stdout, again.stdout
    client, parents, children = search_runs(uri, "hsc-search")
    assert len(children) == n and all(c.info.status == "FINISHED" for c in children + parents)
    # every trial ended before the resume, and its run says so, over at least the seconds it trained (a run the
    # resume made or ended lasted 0.2 s, at the resume's time: a walkthrough)
    times = [(c.info.start_time, c.info.end_time, c.data.metrics.get("time/total_s")) for c in children]
    assert all(end <= resumed_at * 1000 and (end - start) / 1000 >= total - 1 for start, end, total in times), \
        (resumed_at, times)  # fmt: skip
    assert all(int(c.data.metrics["epoch"]) == 2 for c in children)
    assert_complete_histories(client, children)
    assert "finished_at" in json.loads((folder / "hsc_search.json").read_text())
    assert os.path.isfile(folder / "best_config.yaml")
    bad = subprocess.run(search_cmd("--name", "bad"), cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**env, "HSC_MLFLOW_RETRIES": "0"})  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: HSC_MLFLOW_RETRIES='0': expected a whole number of attempts >= 1 (default 8)"), bad.stderr


def test_a_cluster_head_that_stops_answering_is_said_in_seconds_with_the_resume_command(tmp_path):
    """A head killed mid-search: Ray said nothing for 60 s, then ended the driver with its own "Failed to connect
    to GCS" and no way on (a walkthrough). The driver's watch of the head's port (a real listener here, closed
    and opened again) says it within HEAD_SILENT_S, with the resume command, and says when it answers again."""
    import socket
    import threading

    from hsc_search.driver import watching_the_head

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    said: list[tuple[float, str]] = []
    got = threading.Event()

    def echo(line: str) -> None:
        said.append((time.monotonic(), line))
        got.set()

    folder = str(tmp_path / "ray_results" / "s1")
    with watching_the_head(f"127.0.0.1:{port}", folder, echo, interval_s=0.2, silent_s=1.0):
        time.sleep(1.0)
        assert said == []  # it answers: nothing said
        server.close()
        lost = time.monotonic()
        assert got.wait(10), "the silent head was never said"
        at, line = said[0]
        assert 1.0 <= at - lost < 5.0, at - lost
        assert line.startswith(f"the Ray head at 127.0.0.1:{port} does not answer (Connection refused): the search "
                               "cannot go on without it (Ray ends this driver after a minute); once the head runs "
                               "again, `")
        assert line.endswith(f" resume {folder}` continues it"), line
        got.clear()
        server = socket.create_server(("127.0.0.1", port))
        assert got.wait(10)
        assert said[1][1] == f"the Ray head at 127.0.0.1:{port} answers again" and len(said) == 2
    server.close()
    n = len(said)
    time.sleep(1.0)
    assert len(said) == n  # the watch ended with the search
    with watching_the_head(None, folder, echo):  # a local instance of its own: not watched
        pass
    # an IPv6 head, as Ray writes it ([::1]:port): watched, not a false alarm in every search (the review)
    if socket.has_ipv6:
        try:
            v6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        except OSError:  # no IPv6 loopback here
            v6 = None
        if v6 is not None:
            said.clear()
            with watching_the_head(f"[::1]:{v6.getsockname()[1]}", folder, echo, interval_s=0.2, silent_s=0.5):
                time.sleep(1.5)
            v6.close()
            assert said == [], said
    # where the watch is on: a cluster only, not a local instance of its own, not with Ray's TLS
    from hsc_search.driver import _head_address
    from hsc_search.settings import SearchSettings

    assert _head_address(SearchSettings(address=None)) is None and _head_address(SearchSettings(address="local")) is None


def test_a_store_gone_in_the_search_tail_costs_seconds_and_names_resume(tmp_path):
    """A tracking server that stopped as the search ended held the user 7.5 minutes in silence: the tail's calls
    (reconcile, summary, best config, report) ran under MLflow's default retries, about 4 minutes a request (a
    walkthrough). In the tail they are bounded, a slow tail is said, and the failure is one line naming resume.
    The server here is gone for good: a port that nothing listens on (connection refused, as after its end)."""
    import os
    import socket

    from hsc_search.commands import resume_command
    from hsc_search.driver import TAIL_HTTP, TrackingIncomplete, tail_guard
    from hsc_search.runs import client_for

    hold = socket.socket()  # bound and not listening, to the test's end: refused, and no other process takes it
    hold.bind(("127.0.0.1", 0))  # (a closed port was once taken by another job's Ray: test_preflight)
    uri = f"http://127.0.0.1:{hold.getsockname()[1]}"
    for k in TAIL_HTTP:
        os.environ.pop(k, None)  # (the conftest fixture puts back what was there)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "25"  # a value the user set wins, and stays
    said: list[str] = []
    exp_dir = str(tmp_path / "s")
    t0 = time.monotonic()
    with pytest.raises(TrackingIncomplete) as info:
        with tail_guard(uri, exp_dir, said.append, slow_s=0.5):
            client_for(uri).search_runs(["0"])
    took = time.monotonic() - t0
    assert took < 30, took  # MLflow's defaults: minutes
    message = str(info.value)
    assert message.startswith("MLflow failed as the search ended (") and "Connection refused" in message, message
    assert message.endswith(f"`{resume_command(exp_dir)}` logs what MLflow lacks once it answers, then writes the "
                            "best config and the report")  # fmt: skip
    assert said == [f"waiting for MLflow to take the search's summary (0.5 s so far: its server at {uri} may be slow "
                     f"or not answering); Ctrl-C stops waiting, and `{resume_command(exp_dir)}` then writes it"]
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "25"
    # the report's writer, which makes a failure a warning, lets a store that is gone through (it was a warning,
    # then 4 minutes of retries on the next call and a 490-line traceback: the review)
    from hsc_search.driver import _write_report

    with pytest.raises(TrackingIncomplete, match="Connection refused"):
        with tail_guard(uri, exp_dir, said.append):
            _write_report(client_for(uri), "0" * 32, tmp_path, exp_dir, uri, said.append)
    assert not [ln for ln in said if ln.startswith("warning")], said
    hold.close()
    # what is not the store failing is not told as such; nor is a full disk under the search's own files (the
    # command says that one: `cli._disk_full`)
    with pytest.raises(ZeroDivisionError):
        with tail_guard(uri, exp_dir, said.append):
            1 / 0
    with pytest.raises(OSError, match="No space left"):
        with tail_guard(uri, exp_dir, said.append):
            raise OSError(28, "No space left on device", str(tmp_path / "summary" / "trials.parquet"))
