"""User mistakes with `replay` and `run --warm-start` that used to cost time before the error, or named the
wrong flag. No Ray instance, no search: a few seconds in all."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hsc_search.cli import app


def _ray_folder(root):
    """A search folder of two complete trials of 3 epochs (as tests/test_replay.py writes them)."""
    root.mkdir(parents=True)
    (root / "hsc_search.json").write_text(json.dumps({"settings": {"metric": "val/map_avg", "mode": "max",
                                                                   "max_epochs": 3}}))  # fmt: skip
    for i, tid in enumerate(["t1", "t2"]):
        (root / tid).mkdir()
        (root / tid / "result.json").write_text("".join(
            json.dumps({"epoch": e, "val/map_avg": 0.1 * e + 0.05 * i, "timestamp": 1000 + 10 * i + e,
                        "time_total_s": e}) + "\n" for e in (1, 2, 3)))  # fmt: skip
    return root


def _fails_fast(args, needle, bounded=True):
    """Exit 2 with `needle`; `bounded`: in seconds, where the replay asked for (10,000 orders) would take minutes
    (the bound is loose: the machine is shared)."""
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["replay", *args])
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output, result.output
    if bounded:
        assert time.monotonic() - t0 < 15, "the check must come before the replay"
    return result


def test_orders_has_an_upper_bound(tmp_path):
    root = _ray_folder(tmp_path / "search")
    _fails_fast(["--ray-dir", str(root), "--orders", "1000000000"], "--orders 1000000000: at most 10000")


def test_numbers_numpy_or_the_table_cannot_take_are_one_line(tmp_path):
    """--seed -1 was numpy's traceback ("expected non-negative integer"), as `run --seed -1` is not; --tolerance
    inf made every rule "reach the best" at its first epoch."""
    root = _ray_folder(tmp_path / "search")
    _fails_fast(["--ray-dir", str(root), "--seed", "-1"], "--seed -1: must be in [0, 2**32 - 1]")
    _fails_fast(["--ray-dir", str(root), "--seed", str(2**32)], f"--seed {2**32}: must be in [0, 2**32 - 1]")
    _fails_fast(["--ray-dir", str(root), "--tolerance", "inf"], "--tolerance inf: must be a number, 0 or more")
    assert CliRunner().invoke(app, ["replay", "--ray-dir", str(root), "--seed", str(2**32 - 1),
                                    "--orders", "5"]).exit_code == 0  # fmt: skip


def test_a_search_that_did_not_finish_is_told_to_be_finished_not_recorded_again(tmp_path):
    """A FIFO search interrupted before any trial ran all its epochs was told to "record a FIFO search"."""
    root = _ray_folder(tmp_path / "search")
    (root / "hsc_search.json").write_text(json.dumps({"settings": {"metric": "val/map_avg", "mode": "max",
                                                                   "max_epochs": 3, "scheduler": "fifo"}}))  # fmt: skip
    for tid in ("t1", "t2"):  # each cut off after its first epoch
        lines = (root / tid / "result.json").read_text().splitlines()
        (root / tid / "result.json").write_text(lines[0] + "\n")
    result = _fails_fast(["--ray-dir", str(root)], "no complete curves in Ray folder")
    assert "the search did not finish (interrupted, or still running): replay it once `hsc-search resume` has " \
           "finished it" in result.output and "record a FIFO search" not in result.output, result.output


def test_a_search_whose_every_trial_failed_is_not_told_to_record_a_fifo_search(tmp_path):
    """Its trials failed, none was stopped: "record a FIFO search" was no way on (a walkthrough)."""
    root = _ray_folder(tmp_path / "search")
    meta = json.loads((root / "hsc_search.json").read_text())
    (root / "hsc_search.json").write_text(json.dumps({**meta, "finished_at": "2026-12-06 11:00:00 UTC"}))
    for tid in ("t1", "t2"):  # each failed in its second epoch
        first = json.loads((root / tid / "result.json").read_text().splitlines()[0])
        (root / tid / "result.json").write_text(json.dumps(first) + "\n" + json.dumps({"hsc/failed": "diverged"})
                                                + "\n")  # fmt: skip
    result = _fails_fast(["--ray-dir", str(root)], "no complete curves in Ray folder")
    assert "(t1: failed; t2: failed)" in result.output and "every trial failed, so there is nothing to replay" in \
        result.output and "record a FIFO search" not in result.output, result.output


def test_json_that_is_a_folder_is_refused_before_the_replay(tmp_path):
    root = _ray_folder(tmp_path / "search")
    folder = tmp_path / "out"
    folder.mkdir()
    _fails_fast(["--ray-dir", str(root), "--orders", "10000", "--json", str(folder)],
                f"--json {folder}: is a folder; expected the file to write, e.g. {folder / 'replay.json'}")
    assert list(folder.iterdir()) == []


def test_a_trial_run_id_names_its_search(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("hsc-search")
    parent = client.create_run(exp, run_name="s", tags={"hsc.kind": "search"}).info.run_id
    trial = client.create_run(exp, run_name="t", tags={"mlflow.parentRunId": parent, "hsc.kind": "trial"}).info.run_id
    _fails_fast(["--tracking-uri", uri, "--run-id", trial],
                f"--run-id {trial} is a trial run of search {parent}: pass --run-id {parent}", bounded=False)


def test_warm_start_given_a_searchs_name_names_its_folder(tmp_path, monkeypatch):
    """`--warm-start first` (the --name of a search) said "no such search folder here, and as a parent run id: ...
    no such run", without the folder it meant (a walkthrough)."""
    from hsc_search.preflight import PreflightError
    from hsc_search.space import load_space_dict
    from hsc_search.warm_start import plan

    root = _ray_folder(tmp_path / "runs" / "first")
    monkeypatch.chdir(tmp_path)
    space = load_space_dict({"params": {"lr": {"type": "float", "low": 3.0e-4, "high": 1.0e-2, "log": True}}})
    with pytest.raises(PreflightError) as e:
        plan("first", space, "val/map_avg", "max", None, storage_root=str(tmp_path / "runs"))
    assert str(e.value).startswith("--warm-start first: no such search folder here, and as a parent run id: ")
    assert str(e.value).endswith(f"; the search named first is the folder {root}: pass --warm-start {root}"), e.value
    with pytest.raises(PreflightError) as e:  # no such search either: nothing more said
        plan("second", space, "val/map_avg", "max", None, storage_root=str(tmp_path / "runs"))
    assert "the search named" not in str(e.value)


def test_a_search_folder_or_name_given_as_run_id_names_its_parent_run(tmp_path, monkeypatch):
    """`export-best --run-id ray_results/wc1` and `--run-id wc1` said "no such run" without a word of the search
    folder it was (resume and --warm-start take folders; a walkthrough)."""
    from mlflow.tracking import MlflowClient

    from hsc_search.runs import StoreError, search_of

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("hsc-search")
    folder = tmp_path / "ray_results" / "wc1"
    folder.mkdir(parents=True)
    (folder / "hsc_search.json").write_text(json.dumps({"parent_run_id": "ab" * 16, "settings": {}}))
    for given, shown in ((str(folder), folder), ("wc1", Path("ray_results") / "wc1")):
        with pytest.raises(StoreError) as e:
            search_of(client, given, uri)
        assert str(e.value) == (f"--run-id {given}: no such run at {uri}; {shown} is a search folder, whose search's "
                                f"parent run id is {'ab' * 16}: pass --run-id {'ab' * 16}"), e.value
    with pytest.raises(StoreError, match="no such run at [^;]*$"):
        search_of(client, "0" * 32, uri)
    # one that logged to another store says it (the run id alone then failed there too: the review); one run with
    # --no-mlflow has nothing in MLflow
    (folder / "hsc_search.json").write_text(json.dumps({"parent_run_id": "ab" * 16, "settings": {
        "tracking_uri": "postgresql://ana:s3cret@db:5432/mlflow"}}))  # fmt: skip
    with pytest.raises(StoreError) as e:
        search_of(client, "wc1", uri)
    assert str(e.value).endswith(f"pass --run-id {'ab' * 16} --tracking-uri postgresql://ana@db:5432/mlflow"), e.value
    (folder / "hsc_search.json").write_text(json.dumps({"parent_run_id": None, "settings": {"mlflow": False}}))
    with pytest.raises(StoreError) as e:
        search_of(client, "wc1", uri)
    assert str(e.value).endswith("; ray_results/wc1 is the folder of a search run with --no-mlflow: nothing of it is "
                                 "in MLflow"), e.value


def test_warm_start_from_a_corrupt_search_folder_names_warm_start(tmp_path):
    from hsc_search.preflight import PreflightError
    from hsc_search.space import load_space_dict
    from hsc_search.warm_start import plan

    root = _ray_folder(tmp_path / "search")
    (root / "hsc_search.json").write_text('{"settings": {"metric": "val/m')  # cut short
    space = load_space_dict({"params": {"lr": {"type": "float", "low": 3.0e-4, "high": 1.0e-2, "log": True}}})
    with pytest.raises(PreflightError) as e:
        plan(str(root), space, "val/map_avg", "max", None)
    assert str(e.value).startswith(f"--warm-start {root}: unreadable hsc_search.json (")
    assert "--ray-dir" not in str(e.value)
