"""User mistakes with `replay` and `run --warm-start` that used to cost time before the error, or named the
wrong flag. No Ray instance, no search: a few seconds in all."""

from __future__ import annotations

import json
import time

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
