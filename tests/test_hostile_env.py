"""A hostile machine (a walkthrough): a disk that fills gives one line, no traceback, and nothing half-written in
place of an earlier file or that a new run then refuses; a cache that cannot be written; `~` no shell expanded.

The disk is "full" through the trainer process's own file-size limit (RLIMIT_FSIZE, set for that process only:
writes past it fail as on a full disk, without root or a separate file system)."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest


def _train(out: Path, spec: str, limit: int | None):
    def limited():  # in the child only
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "trainer", "--data", spec, "--out", str(out), "--set", "epochs=2",
                           "--set", "hidden_dim=64", "--set", "embed_dim=32", "--set", "proj_dim=32"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1],
                          preexec_fn=limited if limit is not None else None)  # fmt: skip


@pytest.mark.parametrize("limit, culprit", [(100, "config.yaml"), (4096, "checkpoint/state.pt")])
def test_a_full_disk_is_one_line_and_the_same_command_starts_over(small_data, small_spec, tmp_path, limit, culprit):
    """A full disk was a 19-line traceback and left an empty config.yaml; the same command then refused the folder
    as holding someone else's run, and --resume refused it as holding nothing to resume, each sending the user to
    the other (a walkthrough). The config is written whole or not at all; a checkpoint that cannot be written is
    named, in the system's words (torch said only "unexpected pos": a search then took a full disk for its trial's
    fault, a review); the same command, with space again, trains."""
    out = tmp_path / "run"
    proc = _train(out, small_spec, limit)  # (small_data: the synthetic cache file exists already, not written here)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {out / culprit}: "), error
    assert error.endswith("; nothing of the run is kept; the same command starts it over"), error
    assert "File too large" in error, error
    if culprit == "config.yaml":
        assert not (out / "config.yaml").exists(), error
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], list(out.rglob("*"))
    again = _train(out, small_spec, None)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert (out / "summary.json").is_file() and (out / "checkpoint" / "state.pt").is_file()


def test_an_exported_config_that_cannot_be_written_leaves_the_earlier_file(tmp_path):
    """`export-best --out` (and the report, `replay --json`) wrote in place: on a full disk the earlier file was
    cut to what fitted (a 4.8 MB report left as a truncated page; a walkthrough). Now through a temporary file and
    a rename: the earlier file stays whole, and no temporary file is left."""
    out = tmp_path / "best.yaml"
    earlier = "# an earlier export\n" + "lr: 0.001\n" * 400
    out.write_text(earlier)
    code = ("import sys\nfrom hsc_search.export import write_config\nfrom trainer import TrainConfig\n"
            "write_config(TrainConfig(), sys.argv[1], data='synthetic:ave')\n")
    limit = 300  # the new file is ~0.9 KB: cut off past 300 bytes

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120,
                          preexec_fn=limited, cwd=Path(__file__).parents[1])  # fmt: skip
    assert proc.returncode != 0 and "File too large" in proc.stderr, proc.stderr[-2000:]
    assert out.read_text() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.yaml"]
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[1])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert len(text) > limit and text.startswith("# Best HSC-MAE config exported by hsc-search")


def test_the_trainer_alone_without_a_writable_cache_and_with_an_unexpanded_home(tmp_path):
    """A read-only HOME (a container run with --user, a compute node): the synthetic data's cache could not be
    written, and that was an error, for data that is only cached. Now made in a temporary folder, read back the
    same way and removed: the same data (the same fingerprint) as from a cache. And `--out=~/run` (no shell expands
    `~` after `=`) made a folder named `~` in the working directory: now the home folder's, as hsc-search reads it."""
    import json
    import os

    spec = "synthetic:ave?n_train=120&n_val=40&n_test=40&dim_audio=6&dim_visual=6&num_classes=4&seed=5"
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    temp = tmp_path / "tmp"
    temp.mkdir()
    args = ["--data", spec, "--set", "epochs=1", "--set", "hidden_dim=32", "--set", "embed_dim=16",
            "--set", "proj_dim=16", "--set", "batch_size=60"]  # fmt: skip
    env = {**os.environ, "HSC_CACHE_DIR": str(blocked / "cache"), "HOME": str(home), "TMPDIR": str(temp)}
    proc = subprocess.run([sys.executable, "-m", "trainer", *args, "--out=~/run"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "train 120 / val 40 / test 40 clips" in proc.stdout, proc.stdout
    assert (home / "run" / "summary.json").is_file() and list(work.iterdir()) == []
    assert not list(temp.glob("hsc-synthetic-*"))  # the temporary copy is gone (torch keeps a folder of its own)
    # the same data as read from a cache that can be written
    cached = {**env, "HSC_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "trainer", *args, "--out", str(tmp_path / "run2")], cwd=work,
                          env=cached, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = json.loads((home / "run" / "summary.json").read_text())
    second = json.loads((tmp_path / "run2" / "summary.json").read_text())
    assert first["best_val"] == second["best_val"] and first["test"] == second["test"]


def test_a_search_with_a_home_that_cannot_be_written_is_one_line(tmp_path, _cache_dir, monkeypatch):
    """Ray keeps a local instance's token in ~/.ray/auth_token, made at its first start: with a read-only HOME
    every search ended in a 127-line traceback from Ray (a walkthrough). Now the pre-flight's one line, with both
    ways out, exit 2, nothing written; and with RAY_AUTH_MODE=disabled, one of them, the pre-flight lets it by."""
    import os

    from conftest import read_only, search_cmd, search_env

    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in search_env(_cache_dir).items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                                                                         "RAY_AUTH_TOKEN_PATH")}  # fmt: skip
    env.update(HOME=str(home), MPLCONFIGDIR=str(tmp_path / "mpl"))
    with read_only(home):
        proc = subprocess.run(search_cmd("--num-samples", "1", "--max-epochs", "1"), cwd=work, env=env,
                              capture_output=True, text=True, timeout=180)  # fmt: skip
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines() == [
            f"error: {home / '.ray'}: cannot be written (Operation not permitted), where Ray keeps the local "
            "instance's authentication token (auth_token, made at its first start): set HOME to a folder that can "
            "be written, or RAY_AUTH_MODE=disabled for this local search"] or (
            os.geteuid() != 0 and "(Permission denied)" in proc.stderr), proc.stderr  # fmt: skip
        assert list(work.iterdir()) == [] and list(home.iterdir()) == []
        # matplotlib (the report's figures) then works in a temporary folder of its own, which it said in two lines
        # of advice at every start: quiet (the driver's and the report's imports; a search's own lines are below)
        bare = {k: v for k, v in env.items() if k != "MPLCONFIGDIR"}
        proc = subprocess.run([sys.executable, "-c", "import hsc_search.driver, hsc_search.report, hsc_search.plots"],
                              env=bare, cwd=work, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        from hsc_search import preflight

        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        preflight.check_ray_token_home()  # the way out it names
        monkeypatch.delenv("RAY_AUTH_MODE")
        with pytest.raises(preflight.PreflightError, match="where Ray keeps the local instance's authentication"):
            preflight.check_ray_token_home()


def test_a_search_whose_disk_fills_midway_ends_in_one_line_and_resumes(tmp_path, _cache_dir):
    """The search's folder fills up mid-search (here the driver process's own file-size limit, set once its first
    trial started: Ray's result files, its experiment state and ours are the driver's writes). It ended in a
    263-line traceback without the resume command (a walkthrough). Now one line, exit 1, the command that continues
    it; which, once the disk can be written again, completes the search."""
    import os

    from conftest import search_cmd, search_env

    env = search_env(_cache_dir)
    driver = subprocess.Popen(search_cmd("--num-samples", "3", "--max-epochs", "3", "--scheduler", "fifo", "--name",
                                         "full", "--no-mlflow"), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines = []
    try:
        for line in driver.stdout:
            lines.append(line)
            if " started " in line:
                resource.prlimit(driver.pid, resource.RLIMIT_FSIZE, (1, 1))
                break
        lines.append(driver.stdout.read())
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
    out = "".join(lines)
    folder = tmp_path / "ray_results" / "full"
    assert driver.returncode == 1 and "Traceback" not in out, out[-5000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith(
        f"(a disk that is full or read-only); once it can be written, `{Path(sys.executable).parent / 'hsc-search'} "
        f"resume {folder}` continues the search"), out[-3000:]  # fmt: skip
    again = subprocess.run([str(Path(sys.executable).parent / "hsc-search"), "resume", str(folder)], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "trials: 3 completed" in again.stdout and os.path.isfile(folder / "best_config.yaml"), again.stdout


def test_a_working_folder_deleted_under_the_shell_is_said(tmp_path):
    """From a folder another shell deleted, every command said only "Intel oneMKL FATAL ERROR: Cannot load
    libtorch_cpu.so", sending the user to reinstall torch (a walkthrough)."""
    import os

    gone = tmp_path / "gone"
    gone.mkdir()
    program = str(Path(sys.executable).parent / "hsc-search")
    code = f"import os, subprocess, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); " \
           f"sys.exit(subprocess.run([{program!r}, 'export-best', '--out', 'x.yaml']).returncode)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == ("error: the working folder no longer exists (deleted by another shell?): cd to "
                                   "one that does"), proc.stderr  # fmt: skip
    # bytes that are not UTF-8 (a latin-1 name) in the working folder or an argument: one line each, not a traceback
    # deep in a path's use or in Ray's start (a walkthrough)
    latin = os.fsdecode(bytes(tmp_path) + b"/lat\xe9")
    os.mkdir(latin)
    for cwd, args, said in ((latin, ["run"], f"the working folder {tmp_path}/lat\\xe9 holds"),
                            (str(tmp_path), ["run", "--name", os.fsdecode(b"bad\xffname")],
                             "the argument bad\\xffname holds")):
        proc = subprocess.run([program, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.strip() == (
            f"error: {said} bytes that are not UTF-8 text; name it in UTF-8 (rename the file or folder)"), proc.stderr


def test_the_trainer_run_as_hsc_search_train_names_itself_by_its_path_to_continue(small_data, small_spec, tmp_path):
    """The printed retrain command is `<venv>/bin/hsc-search train ...`; interrupted, the run said to continue with a
    bare `hsc-search train ... --resume`, which a shell without the venv does not find (the review)."""
    import signal

    program = Path(sys.executable).parent / "hsc-search"
    out = tmp_path / "run"
    proc = subprocess.Popen([str(program), "train", "--data", small_spec, "--out", str(out), "--set", "epochs=200",
                             "--set", "hidden_dim=32", "--set", "embed_dim=16", "--set", "proj_dim=16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)  # fmt: skip
    try:
        for line in proc.stdout:
            if line.startswith("epoch   2/"):  # a completed epoch is kept: the run can be continued
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 130, err[-2000:]
    assert f"`{program} train --data '{small_spec}' --out {out} --resume` continues it" in err, err[-2000:]


def test_a_read_only_file_system_is_called_so_not_permission_denied(tmp_path, small_spec, small_data, monkeypatch):
    """A folder on a read-only mount (a read-only home or data disk on a compute node) was said to be "permission
    denied", which sends a user to chmod, which cannot help: the trainer's --out, an export's --out and the
    folder of Ray's token now name a read-only file system (and a folder this user may not write, as before, is
    "permission denied": tests/test_synthetic.py, test_preflight.py)."""
    import os

    from conftest import small_disk

    from hsc_search import preflight
    from hsc_search.runs import out_file_problem

    with small_disk(tmp_path / "ro", prepare=lambda p: (p / ".ray").mkdir(), read_only=True) as ro:
        proc = subprocess.run([sys.executable, "-m", "trainer", "--data", small_spec, "--out", str(ro), "--set",
                               "epochs=1"], capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).parents[1])  # fmt: skip
        assert proc.returncode == 2 and proc.stderr.strip() == (
            f"error: --out {ro}: cannot write in the run folder (Read-only file system); expected a folder path that "
            "can be written"), proc.stderr  # fmt: skip
        assert out_file_problem(ro / "best.yaml", "best.yaml", "--out", kind="config") == (
            f"--out {ro / 'best.yaml'}: cannot write in {ro} (read-only file system)")
        for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HOME", str(ro))
        with pytest.raises(preflight.PreflightError, match=f"^{ro / '.ray'}: cannot be written \\(read-only file "
                           "system\\), where Ray keeps"):  # fmt: skip
            preflight.check_ray_token_home()
        assert os.listdir(ro) == [".ray"]


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_a_new_store_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, _cache_dir, writer):
    """MLflow's new sqlite store on a disk too full for its tables (the pre-flight finds the folder writable): a
    589-line traceback (the writer thread's and the driver's), a copy of the store cut short left beside it at
    each try, and the half-made store left in place. Now one line in the database's words, exit 1, and nothing
    left: not on that disk, not in the search's folder. The writer, a thread or a process, opens the store only
    once the driver made it (both made its tables at once, and the race was named instead of the disk)."""
    from conftest import search_cmd, search_env, small_disk

    work = tmp_path / "work"
    work.mkdir()
    with small_disk(tmp_path / "full", size="100k") as full:
        proc = subprocess.run(search_cmd("--num-samples", "1", "--max-epochs", "1", "--name", "full",
                                         "--tracking-uri", f"sqlite:///{full}/mlflow.db"),
                              cwd=work, env=search_env(_cache_dir, HSC_MLFLOW_WRITER=writer), capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1 and "Traceback" not in out and "Exception in thread" not in out, out[-3000:]
        assert proc.stderr.strip().splitlines() == [
            f"error: MLflow's store sqlite:///{full}/mlflow.db failed as the search started (the database: database "
            "or disk is full); nothing was trained. Mend what it says (a full or read-only disk, a database that "
            "refuses writes, the server's credentials), or give another --tracking-uri"], proc.stderr[-3000:]  # fmt: skip
        assert sorted(p.name for p in full.iterdir()) == []
    assert not (work / "ray_results" / "full").exists(), sorted(p.name for p in work.rglob("*"))


def test_a_disk_that_refuses_the_rung_record_still_ends_the_search_run(tmp_path, _cache_dir, monkeypatch):
    """A real full disk under the search's folder (a walkthrough, on a 3 MB tmpfs): the write of ASHA's rung
    record, first in the search's tail, raised before the tail ended the search's MLflow run, which stayed RUNNING
    for good (`export-best` then said `resume` continues it; Ray's record was cut off, so it could not). Here that
    one write is refused (ENOSPC, as the disk said) in a real search with MLflow: the error still comes out, after
    the run has ended."""
    import json
    import os

    from conftest import SEARCH_DATA, search_env, search_runs

    script = f"""
import errno, json, sys
from hsc_search import storage
from hsc_search.driver import run_search
from hsc_search.settings import load_settings

write = storage.write_text
def refusing(path, text):
    if str(path).endswith("asha_rungs.json"):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return write(path, text)
storage.write_text = refusing
import hsc_search
hsc_search.USER_RAY_AUTH_MODE = "token"  # as if run with RAY_AUTH_MODE=token (a cluster's; the local Ray has none)
settings = load_settings(None, dict(data={SEARCH_DATA!r}, num_samples=2, max_epochs=2, name="rungs"), [])
try:
    run_search(settings)
    print(json.dumps({{"raised": None}}))
except OSError as e:
    print(json.dumps({{"raised": e.errno}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=search_env(_cache_dir),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"raised": 28}, proc.stdout[-3000:]
    _, parents, children = search_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "hsc-search")
    assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == 2, [p.info.status for p in parents]
    assert all(c.info.status == "FINISHED" for c in children)
    assert not os.path.exists(tmp_path / "ray_results" / "rungs" / "asha_rungs.json")
    # the search ran with RAY_AUTH_MODE=token: recorded, so that the resume line another process prints (export-best's)
    # carries it (pasted without it, the cluster refused the resume: a walkthrough)
    import hsc_search
    from hsc_search.commands import resume_command

    folder = tmp_path / "ray_results" / "rungs"
    assert json.loads((folder / "hsc_search.json").read_text())["ray_auth_mode"] == "token"
    monkeypatch.setattr(hsc_search, "USER_RAY_AUTH_MODE", None)
    assert resume_command(folder).startswith("RAY_AUTH_MODE=token "), resume_command(folder)
    assert not resume_command(tmp_path).startswith("RAY_AUTH_MODE"), resume_command(tmp_path)  # (no record there)
    # and on its parent run, for the machines that cannot read its folder (export-best on a laptop, of a search on
    # a bucket or on a cluster's shared disk: a review)
    from hsc_search.searchlock import search_state

    assert parents[0].data.tags.get("hsc.ray_auth_mode") == "token", parents[0].data.tags
    _, said = search_state("s", "RUNNING", "s3://bucket/ray_results/s", "p", None, "token")
    assert f": `RAY_AUTH_MODE=token {resume_command('s3://bucket/ray_results/s')}` continues it" in said, said
    _, said = search_state("s", "RUNNING", None, "p", None, "token")  # its folder not known: said all the same
    assert "`RAY_AUTH_MODE=token hsc-search resume <its folder>` continues it" in said, said
    assert resume_command(folder, "disabled").startswith("RAY_AUTH_MODE=token "), resume_command(folder, "disabled")


def test_a_full_disk_under_the_search_stops_it_resumable_and_fails_no_trial(tmp_path, _cache_dir):
    """A real full disk under the search's folder (a walkthrough, on a 3 MB file system): each later trial failed
    (ENOSPC, retried twice, then FAILED as if its config were at fault), and Ray's record of the search was cut off
    as it was copied over in place, so the search could not be resumed. Now the search stops at the first trial
    whose write the disk refuses, that trial not counted as failed; Ray's state files are replaced whole or left
    as they were; and once the disk has room, the command it printed finishes the search with no trial failed."""
    import re

    from conftest import search_cmd, search_env, search_runs, small_disk

    work = tmp_path / "work"
    work.mkdir()
    db = f"sqlite:///{work}/mlflow.db"
    with small_disk(tmp_path / "full", size="1600k") as full:
        proc = subprocess.run(search_cmd("--num-samples", "3", "--max-epochs", "4", "--name", "fill", "--storage",
                                         str(full), "--tracking-uri", db),
                              cwd=work, env=search_env(_cache_dir), capture_output=True, text=True, timeout=300)  # fmt: skip
        out = proc.stdout + proc.stderr
        print(out[-4000:])
        assert proc.returncode == 1, out[-3000:]
        assert "Traceback" not in out and " FAILED " not in out, out[-3000:]
        assert "Trials did not complete" not in out, out[-3000:]  # (Ray's ERROR line: the summary says it)
        assert "the search's state is saved (Ctrl-C again" not in out, out[-3000:]  # (as if a Ctrl-C had come)
        folder = full / "fill"
        error = proc.stderr.strip().splitlines()[-1]
        said = re.fullmatch(r"error: trial (\w+)'s write was refused: No space left on device \(a disk that is full "
                            r"or read-only: the search's folder (.+) or the temporary folder its trials write in\); "
                            r"the search stopped, so that no trial failed for it, and once there is room `(.+)` "
                            r"continues it from its last saved state \(a trial that ended or started after that save "
                            r"runs again\)", error)  # fmt: skip
        assert said and said[2] == str(folder), error
        assert f"stopping: trial {said[1]}'s write was refused: No space left on device" in proc.stdout, out[-3000:]
        subprocess.run(["mount", "-o", "remount,size=64m", str(full)], check=True, timeout=30)  # room again
        resumed = subprocess.run(said[3], shell=True, cwd=work, env=search_env(_cache_dir), capture_output=True,
                                 text=True, timeout=300)  # fmt: skip
        print(resumed.stdout[-3000:] + resumed.stderr[-3000:])
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        _, parents, trials = search_runs(db, "hsc-search")
        assert [p.info.status for p in parents] == ["FINISHED"], [p.info.status for p in parents]
        outcomes = sorted(t.data.tags.get("hsc.outcome") for t in trials)
        assert len(trials) == 3 and "failed" not in outcomes, outcomes
        assert (folder / "best_config.yaml").exists()


def test_a_cache_folder_that_is_a_file_is_refused_in_one_line(tmp_path):
    """HSC_CACHE_DIR naming a file (a walkthrough): the synthetic data was made anew in a temporary folder for every
    run and the local Ray instance went unrecorded, said at best in a line among Ray's. Now `run`, `resume` and
    `train` refuse it in one line naming the variable, exit 2, before anything is written."""
    import os

    from conftest import SEARCH_DATA

    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    exe = str(Path(sys.executable).parent / "hsc-search")
    env = {**os.environ, "HSC_CACHE_DIR": str(cache)}
    for args in (["run", "--data", SEARCH_DATA, "--num-samples", "1", "--no-mlflow", "--name", "c"],
                 ["resume", str(tmp_path / "ray_results" / "c")],
                 ["train", "--data", SEARCH_DATA, "--out", str(tmp_path / "t")]):  # fmt: skip
        proc = subprocess.run([exe, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.startswith(f"error: HSC_CACHE_DIR={cache}: not a folder ("), \
            (args[0], proc.stdout[-2000:], proc.stderr[-2000:])  # fmt: skip
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # nothing written
    dangling = tmp_path / "gone"
    dangling.symlink_to(tmp_path / "nowhere")  # a link to nothing: as refused (it fell back to a temporary folder)
    proc = subprocess.run([exe, "train", "--data", SEARCH_DATA, "--out", str(tmp_path / "t")], cwd=tmp_path,
                          env={**env, "HSC_CACHE_DIR": str(dangling)}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: HSC_CACHE_DIR={dangling}: a link to "
                                                           f"{tmp_path / 'nowhere'}, which does not exist ("), proc.stderr
