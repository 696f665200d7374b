"""Search settings: a search config file, CLI flags on top, and every problem reported with its name."""

from __future__ import annotations

import pytest

from hsc_search.settings import SPACES_DIR, SearchSettings, SettingsError, load_settings


def test_file_then_flags_then_sets(tmp_path):
    f = tmp_path / "search.yaml"
    f.write_text("space: hsc_mae\nnum_samples: 20\nmax_epochs: 9\nset:\n  hidden_dim: 256\n  lr: 3.0e-4\n")
    s = load_settings(f, {"num_samples": 5, "max_epochs": None}, ["lr=1e-3", "distill=relational"])
    assert s.space == "hsc_mae" and s.num_samples == 5 and s.max_epochs == 9
    assert s.overrides == {"hidden_dim": 256, "lr": 1e-3, "distill": "relational"}
    assert s.space_path() == SPACES_DIR / "hsc_mae.yaml"


def test_defaults_are_the_embedded_search():
    s = load_settings(None, {}, [])
    assert s == SearchSettings() and s.space_path() == SPACES_DIR / "quick.yaml" and s.scheduler == "asha"


def test_unknown_file_keys_are_named(tmp_path):
    f = tmp_path / "search.yaml"
    f.write_text("num_sample: 3\nspace: quick\n")
    with pytest.raises(SettingsError, match=r"search.yaml: unknown settings \['num_sample'\].*num_samples"):
        load_settings(f, {}, [])
    f.write_text("num_sample: 3\nmax_epochs: two\nset: 5\n")  # every mistake of the file at once, not the first
    with pytest.raises(SettingsError) as e:
        load_settings(f, {}, [])
    lines = str(e.value).splitlines()
    assert len(lines) == 3 and "unknown settings ['num_sample']" in lines[0], lines
    assert lines[1] == f"{f}: 'set' must be a mapping of trainer field: value" and f"{f}: max_epochs: " in lines[2]
    f.write_text("num_sample: 3\nset: {epochs: 5}\n")  # epochs said as alone, not as a search space's mistake
    with pytest.raises(SettingsError) as e:
        load_settings(f, {}, [])
    assert str(e.value).splitlines()[1] == (f"{f}: set: epochs=5: do not set epochs: the search's budget is "
                                            "max_epochs (--max-epochs)"), str(e.value)


def test_unknown_file_keys_get_a_hint(tmp_path):
    """A near setting name, a flag's spelling, and a trainer field beside the settings (it belongs under `set:`)
    were told only the list of valid settings (a walkthrough); a key like none gets no hint."""
    f = tmp_path / "search.yaml"
    f.write_text("schedulr: fifo\nmax-epochs: 3\nlr: 0.01\nfoo: 1\n")
    with pytest.raises(SettingsError) as e:
        load_settings(f, {}, [])
    assert str(e.value).startswith(
        f"{f}: unknown settings ['foo', 'lr', 'max-epochs', 'schedulr'] (lr is a trainer field: fixed trainer values "
        "go under set:, e.g. set: {lr: ...}; max-epochs: did you mean 'max_epochs'?; schedulr: did you mean "
        "'scheduler'?); valid: address, "), str(e.value)
    f.write_text("--no-mlflow: true\n")  # the flag's spelling: not told "did you mean 'mlflow'" (mlflow: true)
    with pytest.raises(SettingsError) as e:
        load_settings(f, {}, [])
    assert str(e.value).startswith(f"{f}: unknown settings ['--no-mlflow'] (--no-mlflow is mlflow: false); valid:")
    f.write_text("on: 1\nno_mlflow: true\nsets: {lr: 0.01}\n")  # a YAML boolean key (a traceback: the review);
    with pytest.raises(SettingsError) as e:  # --no-mlflow's own hint alone; `sets` is `set`
        load_settings(f, {}, [])
    assert str(e.value).startswith(f"{f}: unknown settings [True, 'no_mlflow', 'sets'] (--no-mlflow is mlflow: "
                                   "false) (sets: did you mean 'set'?); valid:"), str(e.value)
    f.write_text("".join(f"key_{i:03d}: 1\n" for i in range(500)) + "schedulr: fifo\n")  # 500 unknown keys: one
    with pytest.raises(SettingsError) as e:  # line of 4,000 characters; the first ten named, the rest counted
        load_settings(f, {}, [])
    named = ", ".join(f"'key_{i:03d}'" for i in range(10))
    assert str(e.value).startswith(f"{f}: unknown settings [{named}] and 491 more; valid:"), str(e.value)
    assert len(str(e.value)) < 600, len(str(e.value))
    f.write_text("num_sample: 2\nset: {hiden_dim: 64, lr: 0.01}\n")  # two mistakes: both said at once (the set:
    with pytest.raises(SettingsError) as e:  # one was said at the next run: a walkthrough)
        load_settings(f, {}, [])
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{f}: unknown settings ['num_sample']"), lines
    assert lines[1].startswith(f"{f}: set: hiden_dim=64: 'hiden_dim' is not a trainer config field (did you mean "
                               "'hidden_dim'?)"), lines


def test_all_bad_values_reported_together():
    with pytest.raises(SettingsError) as e:
        load_settings(None, {"num_samples": 0, "mode": "up", "grace_period": 9, "max_epochs": 3}, ["epochs=4"])
    msg = str(e.value)
    for needle in ("--num-samples", "--mode", "--grace-period", "--max-epochs", "do not --set epochs"):
        assert needle in msg


@pytest.mark.parametrize("max_epochs", [0, -1])
def test_a_bad_max_epochs_is_said_once_not_again_as_a_grace_period_out_of_range(max_epochs):
    with pytest.raises(SettingsError) as e:
        load_settings(None, {"max_epochs": max_epochs}, [])
    assert str(e.value) == f"--max-epochs must be >= 1, got {max_epochs}"  # named as the user gave it
    with pytest.raises(SettingsError) as e:  # a bad grace period beside it is still said
        load_settings(None, {"max_epochs": max_epochs, "grace_period": 0}, [])
    assert "--grace-period must be >= 1, got 0" in str(e.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "space: [unclosed\n"])
def test_bad_file_is_named(tmp_path, text):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SettingsError, match="bad.yaml"):
        load_settings(f, {}, [])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SettingsError, match="nope.yaml"):
        load_settings(tmp_path / "nope.yaml", {}, [])


@pytest.mark.parametrize("cli, culprit", [
    ({"seed": -1}, "--seed must be in [0, 2**32 - 1], got -1"),
    ({"seed": 2**64}, f"--seed must be in [0, 2**32 - 1], got {2**64}"),
    ({"reduction_factor": float("nan")}, "--reduction-factor must be a finite number > 1, got nan"),
    ({"reduction_factor": float("inf")}, "--reduction-factor must be a finite number > 1, got inf"),
    ({"experiment": " "}, "--experiment must be an MLflow experiment name, got an empty string"),
    ({"name": "../evil"}, "--name '../evil': expected one folder name"),
    ({"name": "a/b"}, "--name 'a/b': expected one folder name"),
    ({"name": ".."}, "--name '..': expected one folder name"),
    ({"name": ""}, "--name '': expected a non-empty name"),
    ({"cpus_per_trial": float("nan")}, "--cpus-per-trial must be a finite number > 0, got nan"),  # it passed
    ({"cpus_per_trial": 0}, "--cpus-per-trial must be a finite number > 0, got 0"),
    ({"gpus_per_trial": float("inf")}, "--gpus-per-trial must be a finite number >= 0, got inf"),
    ({"name": "a\nb"}, "--name 'a\\nb': expected a name without control characters"),  # printed paths split
    ({"name": "x" * 201}, f"--name '{'x' * 201}': expected a name of at most 200 bytes (this one has 201)"),
    ({"name": "é" * 101}, f"--name '{'é' * 101}': expected a name of at most 200 bytes (this one has 202)"),
    # an address's form, before Ray is imported (it took the driver's imports, 10 s here under load: a walkthrough)
    ({"address": "foo:bar"}, "--address foo:bar: expected host:port of a Ray head node (ray start --head prints it"),
    ({"address": "10.0.0.5:99999"}, "--address 10.0.0.5:99999: expected host:port of a Ray head node"),
    ({"address": "ray://10.0.0.5:10001"}, "--address ray://10.0.0.5:10001: Ray Client (ray://) is not supported"),
    ({"address": ""}, "--address must be a Ray cluster address, got '' (--address local for a local Ray instance)"),
    ({"address": " "}, "--address must be a Ray cluster address, got ' ' (--address local for a local Ray instance)"),
])  # fmt: skip
def test_values_that_would_fail_after_ray_started_fail_here(cli, culprit):
    """Each of these passed the pre-flight and failed (or ran, writing outside the storage folder) once Ray was
    up: Optuna's seed range, Ray's assert on ASHA's reduction factor, MLflow's experiment name, a name with a
    path in it."""
    with pytest.raises(SettingsError) as e:
        load_settings(None, cli, [])
    assert str(e.value).startswith(culprit), str(e.value)
    assert load_settings(None, {"seed": 2**32 - 1, "name": "my search 2"}, []).name == "my search 2"
    assert load_settings(None, {"name": "x" * 200}, []).name == "x" * 200  # (a 300-byte name was a traceback)
    for fine in ("auto", "local", "10.0.0.5:6379", "[::1]:6379", "head.example.org:6379"):
        assert load_settings(None, {"address": fine}, []).address == fine


def test_a_config_or_space_file_that_is_not_text_is_named(tmp_path):
    from hsc_search.space import SpaceError, load_space

    f = tmp_path / "binary.yaml"
    f.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(SettingsError, match=r"binary.yaml: not UTF-8 text \(byte 0\); expected a YAML search config"):
        load_settings(f, {}, [])
    with pytest.raises(SpaceError, match=r"binary.yaml: not UTF-8 text \(byte 0\); expected a YAML search space"):
        load_space(f)


def test_settings_that_will_not_act_or_look_reversed_are_said():
    assert load_settings(None, {}, []).unused() == []
    assert load_settings(None, {"scheduler": "fifo"}, []).unused() == []  # ASHA's defaults: nothing was asked
    notes = load_settings(None, {"scheduler": "fifo", "grace_period": 3, "mlflow": False,
                                 "tracking_uri": "http://127.0.0.1:9", "metric": "loss/total"}, []).unused()  # fmt: skip
    assert notes == ["grace_period 3: ASHA's settings, not used with scheduler fifo",
                     "tracking_uri http://127.0.0.1:9: not used, MLflow is off (--no-mlflow)",
                     "mode max with metric loss/total: the search ranks the highest loss/total best; --mode min is "
                     "the usual choice"]  # fmt: skip
    assert load_settings(None, {"metric": "loss/total", "mode": "min"}, []).unused() == []
    uri = "postgresql://hsc:secret@db.example:5432/mlflow"  # never contacted: MLflow is off
    assert load_settings(None, {"mlflow": False, "tracking_uri": uri}, []).unused() == [
        "tracking_uri postgresql://hsc:***@db.example:5432/mlflow: not used, MLflow is off (--no-mlflow)"]


def test_a_search_configs_set_entries_are_blamed_on_that_file_and_flags_on_set(tmp_path):
    """A `set:` value of a search config is named with the config file; a --set flag (which wins over the file's
    value of the same name) with --set; neither with the space file the values are applied to."""
    from hsc_search.space import SpaceError, load_space

    f = tmp_path / "search.yaml"
    f.write_text("space: quick\nset:\n  hiden_dim: 32\n  batch_size: many\n  tau: 0\n")
    s = load_settings(f, {}, ["tau=-1"])
    assert s.set_from == {"hiden_dim": f"{f}: set", "batch_size": f"{f}: set"}
    assert "set_from" not in s.to_dict()  # not a setting: not recorded, not a config key
    with pytest.raises(SpaceError) as e:
        load_space(s.space_path(), overrides=s.overrides, set_from=s.set_from)
    lines = str(e.value).splitlines()
    assert any(ln.startswith(f"{f}: set: hiden_dim=32: ") and "did you mean 'hidden_dim'" in ln for ln in lines)
    assert any(ln.startswith(f"{f}: set: batch_size=many: expected an integer") for ln in lines), lines
    assert any(ln.startswith("--set tau=-1: tau must be > 0") for ln in lines), lines
    assert not any(ln.startswith("--set hiden_dim") or ln.startswith("--set batch_size") for ln in lines), lines

    f.write_text("space: quick\nset:\n  epochs: 3\n")
    with pytest.raises(SettingsError, match=rf"do not set epochs in {f}: the search's budget is --max-epochs"):
        load_settings(f, {}, [])
    f.write_text("set_from: {}\n")  # the attribute is no config key
    with pytest.raises(SettingsError, match="unknown settings"):
        load_settings(f, {}, [])


def test_a_config_file_says_set_not_overrides_and_mlflow_false_not_no_mlflow(tmp_path):
    f = tmp_path / "search.yaml"
    f.write_text("space: quick\nset:\n  lr: 0.01\noverrides:\n  tau: 0.5\n")
    with pytest.raises(SettingsError, match="overrides: not a key of a search config; fixed trainer values go under set"):
        load_settings(f, {}, [])
    f.write_text("no_mlflow: true\n")
    with pytest.raises(SettingsError, match=r"unknown settings \['no_mlflow'\] \(--no-mlflow is mlflow: false\)") as e:
        load_settings(f, {}, [])
    assert "overrides" not in str(e.value)
    f.write_text("mlflow: false\nset:\n  lr: 0.01\n")
    s = load_settings(f, {}, [])
    assert s.mlflow is False and s.overrides == {"lr": 0.01}


def test_a_mistyped_space_name_lists_the_shipped_ones(tmp_path, monkeypatch):
    with pytest.raises(SettingsError, match=r"space 'quik': neither a shipped space \(ablation, hsc_mae, quick; did "
                                            r"you mean 'quick'\?\) nor a file"):  # fmt: skip
        load_settings(None, {"space": "quik"}, [])
    own = tmp_path / "mine.yaml"
    own.write_text("params: {}\n")  # a file is taken as given (the space file's own checks come later)
    assert load_settings(None, {"space": str(own)}, []).space_path() == own
    # the file's name without its extension: the file is named (it said only "neither ... nor a file")
    with pytest.raises(SettingsError, match=rf"nor a file; did you mean '{tmp_path}/mine.yaml'\?$"):
        load_settings(None, {"space": str(tmp_path / "mine")}, [])
    # a relative path in a search config is read from the working directory, not the config's folder: said
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "search.yaml").write_text("space: myspace.yaml\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match=r"search.yaml: space 'myspace.yaml': neither a shipped space .* nor a "
                                            r"file \(a relative path is read from the working directory, "):
        load_settings(tmp_path / "proj" / "search.yaml", {}, [])


def test_the_shipped_spaces_are_listed_with_their_descriptions_in_the_help():
    """Each space file's `description:` was said to be shown in the CLI, and nothing showed it."""
    from typer.testing import CliRunner

    from hsc_search.cli import app
    from hsc_search.shipped import shipped_spaces

    spaces = shipped_spaces()
    assert set(spaces) == {"ablation", "hsc_mae", "quick"} and all(spaces.values())
    text = " ".join(CliRunner().invoke(app, ["run", "--help"], terminal_width=400).output.split())
    for name, description in spaces.items():
        assert f"{name} ({' '.join(description.split())})" in text, name


def test_a_bad_value_is_named_by_its_flag_or_its_file(tmp_path):
    """The flag the user typed, or the config file and key the value came from; a value built in code keeps the
    setting's name."""
    f = tmp_path / "search.yaml"
    f.write_text("num_samples: 0\nmax_epochs: 2\n")
    with pytest.raises(SettingsError) as e:
        load_settings(f, {"grace_period": 5, "mlflow": None}, [])
    assert str(e.value) == (f"{f}: num_samples must be >= 1, got 0\n"
                            "--grace-period must be in [1, max_epochs 2], got 5")  # fmt: skip (the bracket named
    # the file as well: "[1, search.yaml: max_epochs 2]", a walkthrough)
    with pytest.raises(SettingsError, match=r"^search settings: num_samples must be >= 1, got 0$"):
        SearchSettings(num_samples=0).validate()


def test_a_file_of_another_kind_is_named_as_what_it_is(tmp_path):
    """A search space given as --config, a trainer config as --space, a search config to the trainer, ...: one
    line saying what the file is and which option takes it (it was a list of unknown keys, or one error per
    key); a file with a typo is still told its unknown key."""
    import dataclasses

    from hsc_search.space import TOP_KEYS, SpaceError, load_space
    from trainer.config import ConfigError, TrainConfig
    from trainer.yamlfile import SEARCH_CONFIG_KEYS, SPACE_KEYS

    # the trainer keeps its own copy of the other kinds' keys (it does not import hsc_search): kept equal here
    assert SPACE_KEYS == set(TOP_KEYS)
    assert SEARCH_CONFIG_KEYS == {f.name for f in dataclasses.fields(SearchSettings)} - {"overrides"} | {"set"}
    files = {"space": "description: d\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n",
             "search": "num_samples: 4\nmax_epochs: 3\nset:\n  lr: 0.01\n",
             "trainer": "lr: 0.01\nepochs: 3\nhidden_dim: 32\n"}  # fmt: skip
    paths = {}
    for kind, text in files.items():
        paths[kind] = tmp_path / f"{kind}.yaml"
        paths[kind].write_text(text)
    taker = {"trainer": "the trainer's --config", "space": "hsc-search run's --space",
             "search": "hsc-search run's --config"}  # fmt: skip
    name = {"trainer": "a trainer config", "space": "a search space", "search": "a search config"}
    readers = {"trainer": (ConfigError, TrainConfig.from_yaml), "space": (SpaceError, load_space),
               "search": (SettingsError, lambda p: load_settings(p, {}, []))}  # fmt: skip
    for own, (error, read) in readers.items():
        read(paths[own])  # its own kind reads
        for kind, path in paths.items():
            if kind == own:
                continue
            with pytest.raises(error) as e:
                read(path)
            assert str(e.value) == f"{path}: this is {name[kind]} ({taker[kind]} takes it), not {name[own]}"
    typo = tmp_path / "typo.yaml"
    typo.write_text("num_sample: 4\n")  # no kind knows it: the unknown key is named as before
    with pytest.raises(SettingsError, match=r"unknown settings \['num_sample'\]"):
        load_settings(typo, {}, [])


def test_an_empty_storage_or_tracking_uri_is_refused_not_taken_for_the_default(tmp_path):
    """`--storage ''` was ./ray_results without a word (Ray's reading of an empty path), while `--experiment ''`
    was refused; an empty tracking URI would be MLflow's default store."""
    with pytest.raises(SettingsError) as e:
        load_settings(None, {"storage": "", "tracking_uri": " "}, [])
    assert str(e.value) == ("--storage must be a folder or a URI for the search's results, got an empty string (leave "
                            "it out for ./ray_results)\n--tracking-uri must be an MLflow tracking URI, got an empty "
                            "string (leave it out for MLflow's default: $MLFLOW_TRACKING_URI, else "
                            "sqlite:///mlflow.db)")  # fmt: skip
    f = tmp_path / "search.yaml"
    f.write_text("storage: ''\n")
    with pytest.raises(SettingsError, match=f"^{f}: storage must be a folder or a URI"):
        load_settings(f, {}, [])


def test_one_misplaced_key_is_named_as_unknown_not_as_another_kind_of_file(tmp_path):
    """{seed, max_epochs} in a trainer config is a misplaced key (told as an unknown key), not a search config."""
    from trainer.config import ConfigError, TrainConfig

    f = tmp_path / "train.yaml"
    f.write_text("seed: 1\nmax_epochs: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'max_epochs'"):
        TrainConfig.from_yaml(f)


def test_a_number_of_trials_or_epochs_no_search_can_hold_is_refused():
    """--num-samples 1000000000 (and one beyond int64) was taken without a word; Ray holds every trial."""
    for value in (100_001, 10**9, 10**20):
        with pytest.raises(SettingsError) as e:
            load_settings(None, {"num_samples": value}, [])
        assert str(e.value).startswith(f"--num-samples must be at most 100,000, got {value:,}: a search keeps"), e.value
    with pytest.raises(SettingsError, match=r"^--max-epochs must be at most 1,000,000, got 100,000,000,000$"):
        load_settings(None, {"max_epochs": 10**11}, [])
    assert load_settings(None, {"num_samples": 100_000, "max_epochs": 1_000_000}, []).num_samples == 100_000


def test_a_relative_data_path_in_a_config_file_says_where_it_was_read_from(tmp_path, monkeypatch):
    """`data: d.h5` in ../c.yaml, d.h5 beside the file: read from the working directory, and the trainer's error
    said only "<cwd>/d.h5: file not found" (a walkthrough). Now the file's key and where a relative path is read
    from; the same path from --data, an existing file, a `~` path and synthetic data are not refused here."""
    (tmp_path / "b").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("data: d.h5\n")
    (tmp_path / "d.h5").write_bytes(b"")
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(SettingsError) as info:
        load_settings(str(config), {}, [])
    assert str(info.value) == (f"{config}: data 'd.h5': not in the working directory ({tmp_path / 'b'}), where a "
                               f"relative path is read from; the config file's folder has {tmp_path / 'd.h5'}: give "
                               "its absolute path")  # fmt: skip
    config.write_text("data: e.h5\n")  # in neither folder
    with pytest.raises(SettingsError) as info:
        load_settings(str(config), {}, [])
    assert str(info.value) == (f"{config}: data 'e.h5': file not found (a relative path is read from the working "
                               f"directory, {tmp_path / 'b'}, not the config file's folder)")  # fmt: skip
    config.write_text("data: d.h5\n")
    assert load_settings(None, {"data": "d.h5"}, []).data == "d.h5"  # --data: the trainer names the file
    monkeypatch.chdir(tmp_path)
    assert load_settings(str(config), {}, []).data == "d.h5"
    monkeypatch.setenv("HOME", str(tmp_path))
    for data in ("~/d.h5", "synthetic:ave?n_train=300"):
        config.write_text(f"data: '{data}'\n")
        monkeypatch.chdir(tmp_path / "b")
        assert load_settings(str(config), {}, []).data == data


def test_a_settings_mistake_is_said_before_ray_is_imported():
    """`run`'s settings were read after the driver's imports (Ray, MLflow, Optuna): a typo in a flag cost 10 s
    here under load, twice what reading them needs (a walkthrough: a malformed --address)."""
    import subprocess
    import sys

    program = ("import sys\nfrom hsc_search.cli import main\nsys.argv = ['hsc-search', 'run', '--address', 'foo:bar', "
               "'--no-mlflow']\ntry:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code)\n"
               "print('imported:', sorted(m for m in ('ray', 'mlflow', 'optuna') if m in sys.modules))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines()[-2:] == ["exit 2", "imported: []"], proc.stdout + proc.stderr
    assert proc.stderr.strip() == ("error: --address foo:bar: expected host:port of a Ray head node (ray start --head "
                                   "prints it, e.g. 10.0.0.5:6379), or auto"), proc.stderr  # fmt: skip


def test_resume_refuses_an_empty_address_as_run_does(tmp_path):
    """`resume --address ''` was taken for no --address (the search's recorded cluster, without a word), where
    `run` refuses it (the review)."""
    import json

    from hsc_search.driver import resume_search
    from hsc_search.preflight import PreflightError

    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "hsc_search.json").write_text(json.dumps({"settings": {"name": "s"}, "space": {}, "parent_run_id": None,
                                                        "experiment_id": None}))  # fmt: skip
    with pytest.raises(PreflightError, match=r"^--address '': expected host:port of a Ray head node"):
        resume_search(folder, address="")


def test_a_relative_path_in_a_config_file_that_names_two_files_is_refused(tmp_path, monkeypatch):
    """`space: sp.yaml` in ../A/cfg.yaml, an sp.yaml in A and another in the working directory: the one in the
    working directory was searched, a space the config's author never meant, without a word (a walkthrough). Both
    named, the search refused; one file (or the config in the working directory) is read as before."""
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    for folder, name in (("A", "lr"), ("B", "tau")):
        (tmp_path / folder / "sp.yaml").write_text(f"params:\n  {name}: {{type: float, low: 0.2, high: 0.4}}\n")
    config = tmp_path / "A" / "cfg.yaml"
    config.write_text("space: sp.yaml\n")
    monkeypatch.chdir(tmp_path / "B")
    with pytest.raises(SettingsError) as info:
        load_settings(str(config), {}, [])
    assert str(info.value) == (f"{config}: space 'sp.yaml': names two paths, {tmp_path / 'B' / 'sp.yaml'} (a relative "
                               f"path is read from the working directory) and {tmp_path / 'A' / 'sp.yaml'} (beside "
                               "the config file); give the one you mean by its absolute path")  # fmt: skip
    assert load_settings(str(config), {"space": "sp.yaml"}, []).space == "sp.yaml"  # --space: the working directory
    monkeypatch.chdir(tmp_path / "A")  # the config's own folder: one file
    assert load_settings(str(config), {}, []).space == "sp.yaml"
    (tmp_path / "A" / "sp.yaml").unlink()  # only the working directory's: read from there, as documented
    monkeypatch.chdir(tmp_path / "B")
    assert load_settings(str(config), {}, []).space_path().resolve() == tmp_path / "B" / "sp.yaml"
    config.write_text("space: quick\n")  # a shipped space by its name, whatever the folders hold
    (tmp_path / "A" / "quick").write_text("")
    assert load_settings(str(config), {}, []).space == "quick"


def test_an_empty_search_config_is_marked_for_its_note(tmp_path):
    """An empty (or all-comment) search config ran the default search without a word, where an empty space file is
    refused (walkthrough II): `run` says so, from this mark."""
    for text, empty in (("", True), ("# only a comment\n", True), ("num_samples: 2\n", False)):
        (tmp_path / "c.yaml").write_text(text)
        assert load_settings(str(tmp_path / "c.yaml"), {}, []).config_empty is empty, text
    assert load_settings(None, {}, []).config_empty is False


@pytest.mark.parametrize("given, said", [
    ({"scheduler": "bogus"}, "scheduler must be asha or fifo, got 'bogus'"),
    ({"num_samples": "4"}, "num_samples: expected an integer, got '4'"),
    ({"mlflow": "false"}, "mlflow: expected true or false, got 'false' (text, not a boolean: in a YAML file, write it "
                          "without quotes)"),
    ({"max_epochs": 2.5}, "max_epochs: expected an integer, got 2.5"),
    ({"name": "x/y"}, "name 'x/y': expected one folder name"),
    ({"num_samples": 0}, "num_samples must be >= 1, got 0"),
    # a fixed trainer value as text: told to unquote it in a YAML file under --set's name, or "48" trained as 48
    ({"overrides": {"use_dcca": "false", "hidden_dim": "48", "select_metric": "val/mAP"}},
     "overrides: use_dcca: expected True or False, got 'false' (text; give the value itself)\nsearch settings: "
     "overrides: hidden_dim: expected an integer, got '48' (text; give the value itself)"),
])  # fmt: skip
def test_settings_built_in_python_are_checked_by_run_search(given, said, tmp_path, monkeypatch):
    """`run_search(SearchSettings(...))` from Python checked nothing the CLI's reading checks: scheduler="bogus"
    searched with ASHA and recorded "bogus", name="x/y" made nested folders, num_samples=0 started Ray and left a
    FAILED parent run, mlflow="false" turned MLflow on (a walkthrough). Refused before anything is written."""
    from hsc_search.driver import run_search
    from hsc_search.settings import SearchSettings, SettingsError

    monkeypatch.chdir(tmp_path)
    data = "synthetic:ave?n_train=64&n_val=32&n_test=32&dim_audio=8&dim_visual=8&num_classes=4"
    with pytest.raises(SettingsError) as e:
        run_search(SearchSettings(**{"data": data, "storage": str(tmp_path / "rr"), **given}))
    assert said in str(e.value), str(e.value)
    assert list(tmp_path.iterdir()) == []
    ok = SearchSettings(max_epochs=2.0, data=data).validate()  # a whole number given as a float is that int
    assert ok.max_epochs == 2 and type(ok.max_epochs) is int
    # a notebook's values: numpy's numbers and bools, paths (refused as "expected an integer", the review)
    import numpy as np

    ok = SearchSettings(num_samples=np.int64(4), reduction_factor=np.float32(3.0), mlflow=np.bool_(False),
                        storage=tmp_path / "rr", data=data).validate()  # fmt: skip
    assert (ok.num_samples, ok.reduction_factor, ok.mlflow, ok.storage) == (4, 3.0, False, str(tmp_path / "rr"))
    assert [type(v) for v in (ok.num_samples, ok.reduction_factor, ok.mlflow, ok.storage)] == [int, float, bool, str]
    with pytest.raises(SettingsError, match="checkpoint_every_s must be a finite number > 0, got inf"):
        SearchSettings(checkpoint_every_s=float("inf"), data=data).validate()


def test_a_file_of_many_mistakes_says_the_first_twenty_and_counts_the_others(tmp_path):
    """A search config of 100,000 unknown keys under set: printed 100,000 error lines, each with every valid field
    name, in 28 s (a walkthrough): the first 20 problems now, and how many more; likewise a space and a trainer
    config (each problem still in `problems`)."""
    from typer.testing import CliRunner

    from hsc_search.cli import app
    from hsc_search.space import SpaceError, load_space_dict
    from trainer.config import ConfigError, TrainConfig

    (tmp_path / "many.yaml").write_text("set:\n" + "".join(f"  k{i}: 0\n" for i in range(100)))
    result = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "many.yaml")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 21, result.output[-2000:]
    assert lines[0].startswith(f"error: {tmp_path / 'many.yaml'}: set: k0=0: 'k0' is not a trainer config field")
    assert lines[19].startswith(f"{tmp_path / 'many.yaml'}: set: k19=0: ") and \
        lines[20] == "... and 80 more problems (the first 20 are above)", lines[-2:]  # fmt: skip
    with pytest.raises(SpaceError) as e:
        load_space_dict({"params": {f"p{i}": {"type": "float", "low": 0, "high": 1} for i in range(30)}})
    assert len(e.value.problems) == 30 and str(e.value).splitlines()[-1] == (
        "... and 10 more problems (the first 20 are above)"), str(e.value)[-300:]
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({f"k{i}": 0 for i in range(21)})
    assert len(e.value.problems) == 21 and len(str(e.value).splitlines()) == 21  # 21 fit: all said
