"""Warm starts (`hsc-search run --warm-start`): a real source search (local Ray, sqlite MLflow) on tiny data; the
study a new search starts with, compared with what the source's MLflow runs and Ray folder record, read here
with MlflowClient and json alone; a warm search interrupted and resumed through the CLI; bad sources refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = "synthetic:ave?n_train=500&n_val=120&n_test=150&dim_audio=16&dim_visual=24&num_classes=6&seed=3"
MAX_EPOCHS, TRIALS = 4, 8
METRIC = "val/map_avg"


def _env(cache) -> dict:
    return {**os.environ, "HSC_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}


def _cli(*args, cwd, cache, timeout=300):
    return subprocess.run([str(BIN / "hsc-search"), *args], cwd=cwd, env=_env(cache), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _client(db: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{db}")


@pytest.fixture(scope="module")
def source(tmp_path_factory, _cache_dir):
    """The earlier search: the quick space, ASHA, 8 trials x 4 epochs. Returns (cwd, parent run id)."""
    cwd = tmp_path_factory.mktemp("source")
    proc = _cli("run", "--data", DATA, "--num-samples", str(TRIALS), "--max-epochs", str(MAX_EPOCHS), "--name",
                "src", cwd=cwd, cache=_cache_dir)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = _client(cwd / "mlflow.db")
    exp = client.get_experiment_by_name("hsc-search")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`hsc.kind` = 'search'")
    return cwd, parent.info.run_id


def _recorded_in_mlflow(db: Path, parent_id: str) -> dict[str, dict]:
    """trial id -> {outcome, params (text), values {epoch: value}}, from the source's child runs."""
    client = _client(db)
    exp_id = client.get_run(parent_id).info.experiment_id
    out = {}
    for c in client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"):
        out[c.data.tags["hsc.trial_id"]] = {
            "outcome": c.data.tags["hsc.outcome"],
            "params": {k: v for k, v in c.data.params.items() if not k.startswith("effective.")},
            "values": {m.step: m.value for m in client.get_metric_history(c.info.run_id, METRIC)},
        }
    return out


def _recorded_in_folder(folder: Path) -> dict[str, dict]:
    """trial id -> {params (text), values {epoch: value}}, from result.json / params.json of each trial folder."""
    searched = set(json.loads((folder / "hsc_search.json").read_text())["space"]["params"])
    out = {}
    for f in folder.glob("*/result.json"):
        values = {}
        for line in f.read_text().splitlines():
            result = json.loads(line)
            batch = json.loads(result["hsc/epochs_json"]) if "hsc/epochs_json" in result else [result]
            values.update({int(m["epoch"]): m[METRIC] for m in batch})
        params = json.loads((f.parent / "params.json").read_text())
        out[f.parent.name] = {"params": {k: str(v) for k, v in params.items() if k in searched}, "values": values}
    return out


def _narrow_space(path: Path, recorded: dict[str, dict]) -> tuple[Path, set[str]]:
    """The quick space with lr's lower bound between the 2nd and 3rd smallest recorded lr: the two trials below
    it no longer fit. Returns the file and the ids of the trials left out."""
    spec = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    lrs = sorted((float(r["params"]["lr"]), tid) for tid, r in recorded.items())
    low = (lrs[1][0] + lrs[2][0]) / 2
    spec["params"]["lr"]["low"] = low
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path, {tid for lr, tid in lrs if lr < low}


def _warm_trials(study) -> dict:
    return {t.user_attrs["warm_start_trial"]: t for t in study.trials if "warm_start_trial" in t.user_attrs}


def test_the_study_starts_with_exactly_the_source_trials_that_fit(source, tmp_path):
    from hsc_search import driver
    from hsc_search.ray_internals import optuna_study
    from hsc_search.settings import SearchSettings
    from hsc_search.space import load_space
    from hsc_search.warm_start import plan

    cwd, parent_id = source
    in_mlflow = _recorded_in_mlflow(cwd / "mlflow.db", parent_id)
    in_folder = _recorded_in_folder(cwd / "ray_results" / "src")
    assert set(in_mlflow) == set(in_folder) and len(in_mlflow) == TRIALS
    outcomes = {r["outcome"] for r in in_mlflow.values()}
    assert outcomes == {"completed", "stopped_early"}, outcomes  # the source has both kinds
    space_file, outside = _narrow_space(tmp_path / "narrow.yaml", in_mlflow)
    space = load_space(space_file)
    settings = SearchSettings(space=str(space_file), max_epochs=MAX_EPOCHS)

    studies = {}
    for src in (parent_id, str(cwd / "ray_results" / "src")):
        warm = plan(src, space, METRIC, "max", f"sqlite:///{cwd / 'mlflow.db'}")
        assert (warm.added, warm.of) == (TRIALS - len(outside), TRIALS)
        assert warm.line().startswith(f"warm start: {TRIALS - len(outside)} of {TRIALS} trials from {src} (")
        assert f"left out: {len(outside)} outside this space: " in warm.line()
        assert {e.split(":")[0] for e in warm.left_out["outside this space"]} == outside
        study = optuna_study(driver._searcher(space, settings, {}, warm))
        studies[src] = study
        got = _warm_trials(study)
        assert len(study.trials) == len(got) == TRIALS - len(outside)
        assert set(got) == set(in_mlflow) - outside
        for tid, t in got.items():
            rec, folder_values = in_mlflow[tid], in_folder[tid]["values"]
            assert {k: str(v) for k, v in t.params.items()} == rec["params"] == in_folder[tid]["params"]
            assert t.intermediate_values == rec["values"] == folder_values
            assert sorted(t.intermediate_values) == list(range(1, len(rec["values"]) + 1))
            if rec["outcome"] == "completed":
                assert t.state.name == "COMPLETE" and t.value == max(rec["values"].values())
                assert len(rec["values"]) == MAX_EPOCHS
            else:
                assert t.state.name == "PRUNED" and t.value is None and len(rec["values"]) < MAX_EPOCHS
    # the distributions are the ones the live search suggests with (else TPE would not pool the trials)
    study = studies[parent_id]
    asked = study.ask()
    space.define_by_run()(asked)
    for t in _warm_trials(study).values():
        for name, dist in t.distributions.items():
            if name in asked.distributions:
                assert dist == asked.distributions[name], name
    assert sum(t.state.name == "COMPLETE" for t in study.trials) >= 1


def test_the_summary_compares_the_search_with_the_best_trial_it_started_from(source):
    """A warm-started search's summary named only its own best, so one that found nothing better looked like
    progress (a walkthrough). It names the source's best trial (its best epoch's value, from MLflow here, read
    independently) and says whether the search bettered it; nothing for a source on other data."""
    import dataclasses

    from hsc_search.driver import _warm_line
    from hsc_search.space import load_space
    from hsc_search.warm_start import plan

    cwd, parent_id = source
    recorded = _recorded_in_mlflow(cwd / "mlflow.db", parent_id)
    top = max(recorded, key=lambda t: max(recorded[t]["values"].values()))
    score = max(recorded[top]["values"].values())
    warm = plan(parent_id, load_space(ROOT / "search_spaces" / "quick.yaml"), METRIC, "max",
                f"sqlite:///{cwd / 'mlflow.db'}")  # fmt: skip

    class Row:
        def __init__(self, value):
            self.score = value

    head = f"the best trial it started from, {top} of {parent_id}, scored {score:.4f}; "
    assert _warm_line(warm, Row(score + 0.01), "max") == head + "this search's best is better"
    assert _warm_line(warm, Row(score), "max") == head + "this search's best is the same"
    assert _warm_line(warm, Row(score - 0.01), "max") == head + "this search did not reach it"
    assert _warm_line(warm, None, "max") == head + "this search did not reach it"
    assert _warm_line(dataclasses.replace(warm, other_data=True), Row(score), "max") is None
    assert _warm_line(dataclasses.replace(warm, epochs_differ=(2, 4)), Row(score), "max") is None  # not comparable
    assert _warm_line(dataclasses.replace(warm, fixed_differs={"hidden_dim": (64, 128)}), Row(score), "max") is None
    assert _warm_line(None, Row(score), "max") is None


def test_a_source_on_other_data_is_said_and_its_default_is_not_taken_for_this_datas(source):
    """The trainer default a source search trained is not enqueued again, unless the source searched other data:
    there it was said to have been run already (it had not, on this data). Data is compared by the fingerprint both
    searches recorded (its MLflow parent run's tag, its folder's hsc_search.json): a file replaced at the same path
    is other data (it was taken as the same by its path), a copy of it at another path the same."""
    from hsc_search import driver
    from hsc_search.settings import SearchSettings
    from hsc_search.space import load_space
    from hsc_search.warm_start import default_among, plan
    from trainer.fit import data_fingerprint

    cwd, parent_id = source
    settings = SearchSettings(data=DATA, max_epochs=MAX_EPOCHS)
    space = load_space(settings.space_path())
    first, _ = driver._first_trial(space, settings, driver.load_search_data(settings, space))
    reordered = "synthetic:ave?seed=3&num_classes=6&dim_visual=24&dim_audio=16&n_test=150&n_val=120&n_train=500"
    other = DATA.replace("seed=3", "seed=4")

    def fingerprint(spec):
        return data_fingerprint(driver.load_search_data(SearchSettings(data=spec, max_epochs=MAX_EPOCHS), space))

    said = f"; it searched other data ({DATA}): its values are that data's"
    changed = (f"; it searched other data ({DATA} as it was then, or carved by another val_fraction: other clips, "
               "labels or values): its values are that data's")
    copy = str(cwd / "elsewhere" / "copy.h5")  # a spec naming the same data by another path
    for src in (parent_id, str(cwd / "ray_results" / "src")):
        for data, fp_of, differs, line in ((DATA, None, False, None), (reordered, None, False, None),
                                           (other, None, True, said), (DATA, DATA, False, None),
                                           (reordered, DATA, False, None), (other, other, True, said),
                                           (copy, DATA, False, None), (DATA, other, True, changed)):  # fmt: skip
            warm = plan(src, space, METRIC, "max", f"sqlite:///{cwd / 'mlflow.db'}", data=data,
                        fingerprint=fingerprint(fp_of) if fp_of else None)  # fmt: skip
            assert warm.data == DATA and warm.other_data is differs, (src, data, fp_of)
            assert warm.line().endswith(line) if line else "other data" not in warm.line(), warm.line()
            # the source's first trial is the trainer default (enqueued): taken as run on the same data only
            assert (default_among(first, warm) is None) is differs, (src, data)


def test_a_source_with_other_fixed_values_is_said_and_its_default_is_not_taken_for_this_ones(source):
    """A space that fixes hidden_dim 128 warm-started from a search that fixed 64 said "the trainer default is
    warm-start trial X; not enqueued again": that trial trained hidden_dim 64, so this search's default was never
    trained, and nothing said the values differ (a walkthrough). Compared from its folder's record and from its
    MLflow parent run's search_space.yaml."""
    from hsc_search import driver
    from hsc_search.settings import SearchSettings
    from hsc_search.space import load_space
    from hsc_search.warm_start import default_among, plan

    cwd, parent_id = source
    settings = SearchSettings(data=DATA, max_epochs=MAX_EPOCHS)
    for overrides, differs in (({}, {}), ({"hidden_dim": 128}, {"hidden_dim": (64, 128)}),
                               ({"grad_clip": 0.5}, {"grad_clip": (1.0, 0.5)})):  # fmt: skip
        space = load_space(settings.space_path(), overrides=overrides)
        first, _ = driver._first_trial(space, settings, driver.load_search_data(settings, space))
        for src in (parent_id, str(cwd / "ray_results" / "src")):
            warm = plan(src, space, METRIC, "max", f"sqlite:///{cwd / 'mlflow.db'}", data=DATA)
            assert warm.fixed_differs == differs, (src, overrides, warm.fixed_differs)
            assert (default_among(first, warm) is None) is bool(differs), (src, overrides)
            if differs:
                (name, (a, b)), = differs.items()
                assert warm.line().endswith(f"; its fixed values differ: {name} {a:g} (here {b:g}): its values were "
                                            "measured with them"), warm.line()  # fmt: skip
            else:
                assert "fixed" not in warm.line(), warm.line()
    # another --max-epochs: a complete trial's value is its best over the source's budget; it went into a study of
    # another budget without a word, and its trained default was not run again (a walkthrough)
    space = load_space(settings.space_path())
    first, _ = driver._first_trial(space, settings, driver.load_search_data(settings, space))
    for src in (parent_id, str(cwd / "ray_results" / "src")):
        for max_epochs, differs in ((MAX_EPOCHS, None), (MAX_EPOCHS + 3, (MAX_EPOCHS, MAX_EPOCHS + 3)), (None, None)):
            warm = plan(src, space, METRIC, "max", f"sqlite:///{cwd / 'mlflow.db'}", data=DATA, max_epochs=max_epochs)
            assert warm.epochs_differ == differs and (default_among(first, warm) is None) is bool(differs), (src, warm)
            said = (f"; it trained up to {MAX_EPOCHS} epochs a trial (here {MAX_EPOCHS + 3}): its values are of that "
                    "budget")  # fmt: skip
            assert warm.line().endswith(said) if differs else "epochs a trial" not in warm.line(), warm.line()


def test_a_source_that_has_not_finished_is_said(source, tmp_path):
    """A warm start from a search still running (or interrupted) said nothing of the trials still to come (a
    walkthrough), where `replay` of it says it did not finish."""
    import shutil

    from hsc_search.settings import SearchSettings
    from hsc_search.space import load_space
    from hsc_search.warm_start import plan

    cwd, _ = source
    space = load_space(SearchSettings(data=DATA, max_epochs=MAX_EPOCHS).space_path())
    said = "; it has not finished (interrupted, or still running): only the trials it had ended are added"
    done = plan(str(cwd / "ray_results" / "src"), space, METRIC, "max", None, data=DATA)
    assert said not in done.line(), done.line()
    running = tmp_path / "running"
    shutil.copytree(cwd / "ray_results" / "src", running)
    meta = json.loads((running / "hsc_search.json").read_text())
    del meta["finished_at"]  # as a search still running (or cut off) records itself
    (running / "hsc_search.json").write_text(json.dumps(meta))
    warm = plan(str(running), space, METRIC, "max", None, data=DATA)
    assert warm.line().endswith(said) and warm.added == done.added, warm.line()


def test_a_trial_still_training_before_its_first_report_is_unfinished_not_without_values():
    """A source search's trial still training before its first report was left out as "without values" (read as a
    broken trial), where the same trial with a report was "unfinished" (a walkthrough)."""
    from hsc_search.space import load_space
    from hsc_search.warm_start import NO_EPOCH, _trial

    space = load_space(ROOT / "search_spaces" / "quick.yaml")
    for outcome, values, said in (("running", {}, ("unfinished", "running")),
                                  ("interrupted", {"1": None}, ("unfinished", "interrupted")),
                                  (None, {}, (NO_EPOCH, "")), ("completed", {"1": float("nan")}, (NO_EPOCH, ""))):
        trial, *why = _trial({"outcome": outcome, "values": values, "trial_id": "t1", "params": {}}, space, "max", 3)
        assert trial is None and tuple(why) == said, (outcome, values, why)


def test_names_either_search_searches_are_not_compared_as_fixed_values():
    """A name the source searched and this search fixes (a conditional one: its trials without it still fit) was
    compared against the trainer default, as if the source had fixed it there (a review)."""
    from hsc_search.warm_start import fixed_differences

    assert fixed_differences({"hidden_dim": 64}, {"hidden_dim": 64, "weight_lr": 0.05}, set()) == {
        "weight_lr": (0.01, 0.05)}  # what a source that searched nothing would be told  # fmt: skip
    assert fixed_differences({"hidden_dim": 64}, {"hidden_dim": 64, "weight_lr": 0.05}, {"weight_lr"}) == {}
    assert fixed_differences(None, {"hidden_dim": 128}, set()) == {}  # unknown: nothing claimed
    assert fixed_differences({"epochs": 4, "select_metric": "val/map_a2v"}, {"epochs": 12}, set()) == {}


def test_a_warm_search_does_not_draw_its_sources_configs_again():
    """Below TPE's start-up trials Optuna samples at random from its seed alone: a warm-started search with the
    source's seed (both the default) proposed the source's configs again, one by one (helper walkthrough: both new
    trials of a 2-trial warm search were warm trials, one with the identical score)."""
    from hsc_search import driver
    from hsc_search.ray_internals import optuna_study
    from hsc_search.settings import SearchSettings
    from hsc_search.space import load_space
    from hsc_search.warm_start import WarmStart

    space = load_space(ROOT / "search_spaces" / "quick.yaml")
    settings = SearchSettings(space="quick", max_epochs=MAX_EPOCHS)  # seed 0
    source = optuna_study(driver._searcher(space, settings, {}))
    for i in range(4):  # the source search: 4 configs drawn with seed 0, told
        t = source.ask()
        space.define_by_run()(t)
        source.tell(t, 0.1 * i)
    drawn = [t.params for t in source.trials]
    assert len({tuple(sorted(p.items())) for p in drawn}) == 4
    warm = WarmStart(source="src", read_from="test", of=4, trials=list(source.trials))
    study = optuna_study(driver._searcher(space, settings, {}, warm))
    assert len(study.trials) == 4
    new = []
    for _ in range(4):
        t = study.ask()
        space.define_by_run()(t)
        new.append(t.params)
        study.tell(t, 0.0)
    assert not [p for p in new if p in drawn], (new, drawn)


def test_a_chain_of_warm_starts_does_not_draw_the_configs_of_the_search_before():
    """README: "start each from the one before it". B, warm-started from A's 4 trials, and C from B's 4 trials,
    both with the default seed: the sampler's seed mixed in only the source's trial count, so C drew B's own
    configs again, one by one (a walkthrough: 3 of C's 4 trials were B's configs, with B's scores)."""
    import optuna

    from hsc_search import driver
    from hsc_search.ray_internals import optuna_study
    from hsc_search.settings import SearchSettings
    from hsc_search.space import load_space
    from hsc_search.warm_start import WarmStart

    space = load_space(ROOT / "search_spaces" / "quick.yaml")
    settings = SearchSettings(space="quick", max_epochs=MAX_EPOCHS)  # seed 0 in all three

    def search(warm, prefix):  # 4 trials drawn as the search's searcher draws them; as a warm source, named
        study = optuna_study(driver._searcher(space, settings, {}, warm))
        own = []
        for i in range(4):
            t = study.ask()
            space.define_by_run()(t)
            study.tell(t, 0.1 * i)
            own.append(optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, value=0.1 * i,
                intermediate_values={1: 0.1 * i}, user_attrs={"warm_start_trial": f"{prefix}{i}"}))  # fmt: skip
        return own

    a = search(None, "a")
    b = search(WarmStart(source="a", read_from="test", of=4, trials=a), "b")
    c = search(WarmStart(source="b", read_from="test", of=4, trials=b), "c")
    drawn_b, drawn_c = [t.params for t in b], [t.params for t in c]
    assert not [p for p in drawn_c if p in drawn_b], (drawn_c, drawn_b)
    assert not [p for p in drawn_b if p in [t.params for t in a]]


def test_the_warm_start_setting_is_typed_like_the_others(tmp_path):
    from hsc_search.settings import SearchSettings, SettingsError, load_settings

    (tmp_path / "s.yaml").write_text("warm_start: ray_results/src\nnum_samples: 3\n")
    assert load_settings(tmp_path / "s.yaml", {}, []).warm_start == "ray_results/src"
    assert load_settings(tmp_path / "s.yaml", {"warm_start": "abc"}, []).warm_start == "abc"  # the flag wins
    (tmp_path / "bad.yaml").write_text("warm_start: 12\n")
    with pytest.raises(SettingsError, match="warm_start: expected a string, got 12"):
        load_settings(tmp_path / "bad.yaml", {}, [])
    with pytest.raises(SettingsError, match="warm_start"):
        SearchSettings(warm_start=" ").validate()
    assert SearchSettings().warm_start is None


def test_a_warm_search_records_its_source_and_keeps_the_warm_trials_once_across_resume(source, tmp_path, _cache_dir):
    """Through the CLI: warm-start from the parent run id, interrupt the search (SIGINT), resume it; Ray's saved
    searcher state holds each warm trial exactly once, beside exactly the search's own trials."""
    from hsc_search.ray_internals import optuna_study
    from hsc_search.schedulers import BudgetAwareOptunaSearch
    from hsc_search.space import load_space

    cwd, parent_id = source
    in_mlflow = _recorded_in_mlflow(cwd / "mlflow.db", parent_id)
    space_file, outside = _narrow_space(cwd / "narrow.yaml", in_mlflow)
    samples = 6
    proc = subprocess.Popen(
        [str(BIN / "hsc-search"), "run", "--data", DATA, "--space", "narrow.yaml", "--num-samples", str(samples),
         "--max-epochs", str(MAX_EPOCHS), "--name", "warm", "--warm-start", parent_id],
        cwd=cwd, env=_env(_cache_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    for line in proc.stdout:  # interrupt once the first trial has ended
        lines.append(line)
        if line.startswith("[1/"):
            proc.send_signal(signal.SIGINT)
            break
    out = "".join(lines) + proc.communicate(timeout=240)[0]
    assert proc.returncode == 130, out[-3000:]
    assert "hsc-search resume" in out and "Tuner.restore" not in out, out[-3000:]  # our command, not Ray's Python
    assert "Failed to fetch metrics" not in out, out[-3000:]  # Ray's warning about trials that had not reported
    added = TRIALS - len(outside)
    assert f"warm start: {added} of {TRIALS} trials from {parent_id} (" in out
    exp_dir = cwd / "ray_results" / "warm"
    meta = json.loads((exp_dir / "hsc_search.json").read_text())
    assert meta["settings"]["warm_start"] == parent_id and meta["warm_start"]["added"] == added

    # this interrupted search as a source: its folder (Ray's saved trial states) and its parent run (MLflow's tags)
    # tell the same trials apart (from the folder a trial cut off with its search went in as pruned)
    from hsc_search.warm_start import plan

    narrow = load_space(space_file)
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    by_folder, by_run = plan(str(exp_dir), narrow, METRIC, "max", uri), plan(meta["parent_run_id"], narrow, METRIC,
                                                                             "max", uri)  # fmt: skip
    assert by_folder.states() == by_run.states(), (by_folder.line(), by_run.line())
    assert {k: sorted(v) for k, v in by_folder.left_out.items()} == {k: sorted(v) for k, v in by_run.left_out.items()}
    original = space_file.read_text()  # edited before the resume: said, and the recorded space goes on
    edited = yaml.safe_load(original)
    edited["params"]["lr"]["high"] = 0.5
    space_file.write_text(yaml.safe_dump(edited, sort_keys=False))
    resumed = _cli("resume", str(exp_dir), cwd=cwd, cache=_cache_dir)
    space_file.write_text(original)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    noted = [ln for ln in resumed.stdout.splitlines() if "has changed since the search started" in ln]
    assert len(noted) == 1 and noted[0].startswith("note: ") and f"{space_file.name} has changed" in noted[0] \
        and "the search goes on with the space it started with" in noted[0], resumed.stdout[-3000:]  # fmt: skip
    assert "come back with the Optuna study (not added again)" in resumed.stdout
    assert "warm start: " + str(added) + " of" not in resumed.stdout

    client = _client(cwd / "mlflow.db")
    exp = client.get_experiment_by_name("hsc-search")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`hsc.kind` = 'search'")
    (parent,) = [p for p in parents if p.info.run_id != parent_id]
    assert parent.data.tags["hsc.warm_start"] == parent_id and parent.data.tags["hsc.warm_start.added"] == str(added)
    assert parent.data.params["warm_start"] == parent_id and parent.info.status == "FINISHED"
    # the sampler's seed, which is not --seed (a warm search mixes in the source's trial count), is recorded in both
    seed = meta["warm_start"]["sampler_seed"]
    assert isinstance(seed, int) and seed != meta["settings"]["seed"], meta["warm_start"]
    assert parent.data.tags["hsc.warm_start.sampler_seed"] == str(seed)
    own = _recorded_in_mlflow(cwd / "mlflow.db", parent.info.run_id)
    assert len(own) == samples and not set(own) & set(in_mlflow)  # warm trials are no Ray trials or child runs

    searcher = BudgetAwareOptunaSearch(space=load_space(space_file).define_by_run(), metric=METRIC, mode="max",
                                       max_epochs=MAX_EPOCHS)  # fmt: skip
    searcher.restore_from_dir(str(exp_dir))  # the study Ray saved last, after the resume
    study = optuna_study(searcher)
    warm_ids = [t.user_attrs["warm_start_trial"] for t in study.trials if "warm_start_trial" in t.user_attrs]
    assert sorted(warm_ids) == sorted(set(in_mlflow) - outside)  # each once
    new = [t for t in study.trials if "warm_start_trial" not in t.user_attrs]
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in new) == samples, [t.state.name for t in new]
    # the search's own trials are told every epoch, and a completed one its best epoch (as the warm ones are)
    best = {tid: max(r["values"].values()) for tid, r in own.items() if r["outcome"] == "completed"}
    completed = sorted(t.value for t in new if t.state.name == "COMPLETE")
    assert completed == pytest.approx(sorted(best.values()))
    assert all(len(t.intermediate_values) >= 1 for t in new if t.state.name in ("COMPLETE", "PRUNED"))


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--warm-start", "no/such/folder"], ["--warm-start no/such/folder: no such folder"]),
        (["--warm-start", "0123abcd", "--tracking-uri", "{db}"], ["--warm-start 0123abcd: no such search folder here, and as a parent run id: 0123abcd: no such run at"]),
        (["--warm-start", "{pid}", "--tracking-uri", "{db}", "--mode", "min"],
         ["that search ranked trials by val/map_avg (max), this one by val/map_avg (min)"]),
    ],
)
def test_bad_sources_are_refused_before_anything_starts(args, needles, source, tmp_path, _cache_dir):
    cwd, parent_id = source
    subs = {"{db}": f"sqlite:///{cwd / 'mlflow.db'}", "{pid}": parent_id}
    args = [subs.get(a, a) for a in args]
    runs_before = len(_recorded_in_mlflow(cwd / "mlflow.db", parent_id))
    proc = _cli("run", "--data", DATA, *args, cwd=tmp_path, cache=_cache_dir, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for n in needles:
        assert n in proc.stderr
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()
    assert len(_recorded_in_mlflow(cwd / "mlflow.db", parent_id)) == runs_before


def test_sources_without_a_usable_trial_are_refused(source, tmp_path):
    """The same pre-flight error as above (the CLI turns it into exit 2), without a CLI start each."""
    from hsc_search.preflight import PreflightError
    from hsc_search.space import load_space, load_space_dict
    from hsc_search.warm_start import plan

    cwd, _ = source
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    with pytest.raises(PreflightError, match=r"is not a hsc-search search folder \(no hsc_search.json\)"):
        plan(str(tmp_path), load_space(ROOT / "search_spaces" / "quick.yaml"), METRIC, "max", uri)
    (tmp_path / "best_config.yaml").write_text("lr: 0.001\n")  # a search's file: it said "no such folder"
    with pytest.raises(PreflightError, match=rf"best_config.yaml: a file, not a search folder; pass the folder that "
                                             rf"holds it \({tmp_path.resolve()}, if it is a search's\)"):
        plan(str(tmp_path / "best_config.yaml"), load_space(ROOT / "search_spaces" / "quick.yaml"), METRIC, "max", uri)
    # a trial's folder, and the storage folder, name the search (they said only "pass the folder ... printed")
    search = (cwd / "ray_results" / "src").resolve()
    trial = next(p for p in search.iterdir() if (p / "result.json").is_file())
    with pytest.raises(PreflightError, match=rf"no hsc_search.json\); it is a trial's folder of the search "
                                             rf"{search}: pass that$"):  # fmt: skip
        plan(str(trial), load_space(ROOT / "search_spaces" / "quick.yaml"), METRIC, "max", uri)
    with pytest.raises(PreflightError, match=rf"no hsc_search.json\); it holds the searches src(, \w+)*: pass one, "
                                             rf"e.g. {search}$"):  # fmt: skip (other tests add searches beside it)
        plan(str(search.parent), load_space(ROOT / "search_spaces" / "quick.yaml"), METRIC, "max", uri)
    # a space that searches lr alone trains the others at their defaults: only the source's default trial drew
    # them all, and its lr 0.001 is below this space's
    lr_only = load_space_dict({"params": {"lr": {"type": "float", "low": 2.0e-3, "high": 1.0e-2, "log": True}}})
    with pytest.raises(PreflightError, match=f"none of its {TRIALS} trials can start this search "
                                             f"\\({TRIALS} outside this space \\(.*(where this search trains "
                                             "|lr=0.001 outside)"):  # fmt: skip
        plan(str(cwd / "ray_results" / "src"), lr_only, METRIC, "max", uri)
    # one that fixes lr at the default takes that trial (the others drew another lr): it trained what this trains
    fixed_lr = load_space_dict({"params": {k: v for k, v in yaml.safe_load((ROOT / "search_spaces" / "quick.yaml")
                                                                           .read_text())["params"].items()}},
                               overrides={"lr": 0.001})  # fmt: skip
    warm = plan(str(cwd / "ray_results" / "src"), fixed_lr, METRIC, "max", uri)
    assert warm.added == 1 and warm.of == TRIALS, warm.line()
    assert all("where this search trains 0.001" in e for e in warm.left_out["outside this space"]), warm.left_out


def test_a_trials_run_id_names_its_search(source):
    from hsc_search.preflight import PreflightError
    from hsc_search.runs import client_for
    from hsc_search.space import load_space
    from hsc_search.warm_start import plan

    cwd, parent_id = source
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    client = client_for(uri)
    trial = client.search_runs([client.get_run(parent_id).info.experiment_id],
                               filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1)[0]  # fmt: skip
    with pytest.raises(PreflightError) as e:
        plan(trial.info.run_id, load_space(ROOT / "search_spaces" / "quick.yaml"), METRIC, "max", uri)
    t = trial.info.run_id
    assert str(e.value) == (f"--warm-start {t}: no such search folder here, and as a parent run id: {t} is a trial "
                            f"run of search {parent_id}: pass --warm-start {parent_id}")  # fmt: skip


def test_a_completed_warm_trial_is_told_its_best_epoch_in_either_mode(tmp_path):
    """Each completed source trial reaches the new study with the value our searcher told Optuna in the source
    search: the best over its epochs (the lowest loss for `--mode min`), not its last epoch; else TPE starts from
    other numbers than the search it continues, and ranks a trial that peaked early below one that did not.
    A hand-made source (sqlite MLflow) whose trials' best epochs are not their last."""
    from mlflow.tracking import MlflowClient

    from hsc_search.space import load_space_dict
    from hsc_search.warm_start import plan

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("hsc-search", artifact_location=str(tmp_path / "mlruns"))
    space = load_space_dict({"params": {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True}}})
    cases = {  # metric, mode, {trial: values per epoch}, the value Optuna must hold, worked out by hand
        "max": ("val/map_avg", {"a": [0.2, 0.7, 0.5], "b": [0.1, 0.3, 0.4]}, {"a": 0.7, "b": 0.4}),
        "min": ("loss/total", {"a": [0.9, 0.3, 0.5], "b": [0.8, 0.45, 0.6]}, {"a": 0.3, "b": 0.45}),
    }
    for mode, (metric, trials, expected) in cases.items():
        parent = client.create_run(exp, run_name=mode, tags={"hsc.kind": "search"}).info.run_id
        for k, v in {"metric": metric, "mode": mode, "max_epochs": "3"}.items():
            client.log_param(parent, k, v)
        for i, (tid, values) in enumerate(trials.items()):
            run = client.create_run(exp, run_name=f"trial_{tid}", tags={
                "mlflow.parentRunId": parent, "hsc.kind": "trial", "hsc.trial_id": tid,
                "hsc.outcome": "completed"}).info.run_id  # fmt: skip
            client.log_param(run, "lr", str(0.001 * (i + 1)))
            for e, v in enumerate(values, 1):
                client.log_metric(run, metric, v, step=e)
            client.set_terminated(run)
        client.set_terminated(parent)
        warm = plan(parent, space, metric, mode, f"sqlite:///{tmp_path / 'mlflow.db'}")
        got = {t.user_attrs["warm_start_trial"]: t for t in warm.trials}
        assert set(got) == {"a", "b"} and all(t.state.name == "COMPLETE" for t in got.values()), warm.line()
        assert {tid: t.value for tid, t in got.items()} == pytest.approx(expected), mode
        assert got["a"].intermediate_values == dict(enumerate(trials["a"], 1))
