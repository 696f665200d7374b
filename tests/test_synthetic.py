"""The synthetic benchmark: determinism, public defaults, and that each planted problem is real.

Ground truth comes from the `latent/*` arrays; the checks use independent scikit-learn models.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier

from trainer.data import DataError, load_data
from trainer.synthetic import PRESETS, main, make_synthetic, parse_options, resolve_options, write_synthetic

SMALL = dict(n_train=800, n_val=100, n_test=400, dim_audio=48, dim_visual=64)


@pytest.fixture(scope="module")
def small():
    return make_synthetic("ave", **SMALL, mismatch=0.25, seed=7)


def _matched(d, split="train"):
    return d[f"latent/pair_index_{split}"] == np.arange(len(d[f"lab_{split}"]))


def _r2(y_true, y_pred):
    return 1.0 - ((y_true - y_pred) ** 2).sum() / ((y_true - y_true.mean(0)) ** 2).sum()


def _nuisance_models(d):
    """Ridge regressions feature -> nuisance, fitted on the matched train pairs only."""
    keep = _matched(d)
    nuisance = d["latent/nuisance_train"][keep]
    return {m: Ridge(alpha=10.0).fit(d[f"{m}_train"][keep], nuisance) for m in ("audio", "visual")}


def test_same_seed_gives_identical_bytes_and_other_seed_differs():
    a = make_synthetic("ave", n_train=60, n_val=10, n_test=20, dim_audio=8, dim_visual=12, seq_len=5, seed=3)
    b = make_synthetic("ave", n_train=60, n_val=10, n_test=20, dim_audio=8, dim_visual=12, seq_len=5, seed=3)
    c = make_synthetic("ave", n_train=60, n_val=10, n_test=20, dim_audio=8, dim_visual=12, seq_len=5, seed=4)
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
    assert a["audio_train"].tobytes() != c["audio_train"].tobytes()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_writes_a_matched_val_split(name):
    """Model selection must not see mismatched pairs: a val carved from the weakly paired train split would hold
    `mismatch` of them (on the first VEGAS preset, 9.6% of val, most pairing two classes)."""
    opts = resolve_options(name)
    assert opts["n_val"] > 0 and opts["mismatch"] > 0
    d = make_synthetic(name, dim_audio=4, dim_visual=4)  # the preset's split sizes; tiny features keep it fast
    for split in ("val", "test"):
        assert np.array_equal(d[f"latent/pair_index_{split}"], np.arange(opts[f"n_{split}"])), split
    mismatched = d["latent/pair_index_train"] != np.arange(opts["n_train"])
    assert mismatched.mean() == pytest.approx(opts["mismatch"], abs=0.01)
    if name == "vegas":  # the public release has no val split: ours is the 10% a reader would carve
        assert opts["n_val"] == round(0.1 * (opts["n_train"] + opts["n_val"]))


def test_public_defaults():
    vegas = resolve_options("vegas")  # resolving is cheap; the full VEGAS set is not generated here
    assert {k: vegas[k] for k in PRESETS["vegas"]} == dict(
        n_train=20234, n_val=2248, n_test=5621, dim_audio=128, dim_visual=1024, num_classes=10
    )
    d = make_synthetic("ave")  # the AVE default takes well under a second
    shapes = {k: v.shape for k, v in d.items() if not k.startswith("latent/")}
    assert shapes == {
        "audio_train": (3339, 128), "visual_train": (3339, 1024), "lab_train": (3339,),
        "audio_val": (402, 128), "visual_val": (402, 1024), "lab_val": (402,),
        "audio_test": (402, 128), "visual_test": (402, 1024), "lab_test": (402,),
    }  # fmt: skip
    assert d["latent/events_train"].shape == (3339, 15) and set(np.unique(d["lab_train"])) == set(range(15))
    assert d["latent/nuisance_test"].shape == (402, 4)
    assert all(v.dtype == np.float32 for k, v in d.items() if k.startswith(("audio", "visual")))


def test_n_val_zero_writes_no_val_split():
    d = make_synthetic("vegas", n_train=50, n_val=0, n_test=20, dim_audio=4, dim_visual=6)
    assert not [k for k in d if "val" in k]
    assert d["latent/events_train"].shape == (50, 10)


def test_nuisance_is_predictable_from_both_modalities_and_correlated_across_them(small):
    models = _nuisance_models(small)
    nuisance = small["latent/nuisance_test"]
    pred = {m: models[m].predict(small[f"{m}_test"]) for m in models}
    assert _r2(nuisance, pred["audio"]) > 0.5
    assert _r2(nuisance, pred["visual"]) > 0.5
    for j in range(nuisance.shape[1]):  # the two modalities agree on every nuisance dim
        assert np.corrcoef(pred["audio"][:, j], pred["visual"][:, j])[0, 1] > 0.6


def test_nuisance_carries_no_label_information(small):
    nuisance, labels = small["latent/nuisance_train"], small["lab_train"]
    clf = LogisticRegression(max_iter=500).fit(nuisance, labels)
    chance = 1.0 / 15
    assert clf.score(small["latent/nuisance_test"], small["lab_test"]) < chance + 0.07
    scale = 2.0  # nuisance_scale default
    for c in range(15):
        rows = labels == c
        # a class mean of n draws of N(0, scale^2) lies within 4 standard errors of 0
        assert np.all(np.abs(nuisance[rows].mean(0)) < 4 * scale / np.sqrt(rows.sum()))


def test_labels_are_learnable_from_each_modality(small):
    for m in ("audio", "visual"):  # chance is 1/15; a linear classifier gets most clips right
        clf = RidgeClassifier(alpha=1.0).fit(small[f"{m}_train"], small["lab_train"])
        assert clf.score(small[f"{m}_test"], small["lab_test"]) > 0.5, m


def test_mismatched_pairs_only_in_train_at_the_requested_fraction(small):
    n = len(small["lab_train"])
    mismatched = ~_matched(small)
    assert abs(mismatched.mean() - 0.25) <= 1.0 / n
    assert np.all(small["latent/pair_index_train"][mismatched] != np.flatnonzero(mismatched))
    assert _matched(small, "val").all() and _matched(small, "test").all()


def test_mismatched_visual_shows_the_partner_clip(small):
    pred = _nuisance_models(small)["visual"].predict(small["visual_train"][~_matched(small)])
    partner = small["latent/nuisance_train"][small["latent/pair_index_train"][~_matched(small)]]
    own = small["latent/nuisance_train"][~_matched(small)]
    assert _r2(partner, pred) > 0.5
    for j in range(own.shape[1]):
        assert abs(np.corrcoef(own[:, j], pred[:, j])[0, 1]) < 0.2
    # the audio of the same clips still shows their own nuisance
    audio_pred = _nuisance_models(small)["audio"].predict(small["audio_train"][~_matched(small)])
    assert _r2(own, audio_pred) > 0.5


def test_multi_event_fraction_and_labels():
    d = make_synthetic("ave", n_train=500, n_val=0, n_test=200, dim_audio=6, dim_visual=6, multi_event=0.4)
    events = d["latent/events_train"]
    assert set(np.unique(events.sum(1))) == {1.0, 2.0}
    assert abs((events.sum(1) == 2).mean() - 0.4) <= 1.0 / 500
    assert np.all(events[np.arange(500), d["lab_train"]] == 1)  # the label is one of the clip's events
    multi = make_synthetic("ave", n_train=500, n_val=0, n_test=200, dim_audio=6, dim_visual=6, multi_event=0.4,
                           multi_label=True)  # fmt: skip
    np.testing.assert_array_equal(multi["lab_test"], multi["latent/events_test"])
    assert multi["lab_test"].shape == (200, 15)
    none = make_synthetic("ave", n_train=100, n_val=0, n_test=20, dim_audio=6, dim_visual=6, multi_event=0.0)
    assert np.all(none["latent/events_train"].sum(1) == 1)


def test_sequence_events_occupy_a_contiguous_window():
    # Without noise, nuisance and second events, a clip's steps take two values: event on / off.
    t = 10
    d = make_synthetic("ave", n_train=40, n_val=0, n_test=5, dim_audio=6, dim_visual=7, seq_len=t, noise=0.0,
                       multi_event=0.0, nuisance_dim=0, seed=1)  # fmt: skip
    assert d["audio_train"].shape == (40, t, 6) and d["visual_test"].shape == (5, t, 7)
    partial = 0
    for clip in d["audio_train"]:
        values, groups = np.unique(clip.round(4), axis=0, return_inverse=True)
        assert len(values) <= 2
        runs = [np.flatnonzero(groups.ravel() == g) for g in range(len(values))]
        contiguous = [r for r in runs if r[-1] - r[0] + 1 == len(r) and len(r) >= t // 3]
        assert contiguous, clip
        partial += len(values) == 2
    assert partial > 20  # most windows do not cover the whole clip


def test_bad_names_and_options():
    with pytest.raises(ValueError, match="valid names: ave, vegas"):
        make_synthetic("audioset")
    with pytest.raises(ValueError, match="mismatch"):
        resolve_options("ave", mismatch=1.0)
    with pytest.raises(ValueError, match="n_train"):
        resolve_options("ave", n_train=1)
    assert parse_options(["n_train=5", "multi_label=yes", "noise=0.25"]) == dict(
        n_train=5, multi_label=True, noise=0.25
    )
    with pytest.raises(ValueError, match="expected int"):
        parse_options(["n_train=5.5"])


def test_written_file_reads_back_through_load_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HSC_CACHE_DIR", str(tmp_path / "cache"))
    spec = "synthetic:ave?n_train=120&n_val=30&n_test=40&dim_audio=8&dim_visual=12&seed=2"
    data = load_data(spec, standardize=False)
    assert data.source == spec and not data.val_carved and data.num_classes == 15
    assert data.train.audio.shape == (120, 8) and data.val.visual.shape == (30, 12)
    assert data.test.labels.shape == (40, 15)
    direct = make_synthetic("ave", n_train=120, n_val=30, n_test=40, dim_audio=8, dim_visual=12, seed=2)
    np.testing.assert_array_equal(data.train.audio, direct["audio_train"])
    np.testing.assert_array_equal(data.test.labels.argmax(1), direct["lab_test"])
    vegas = load_data("synthetic:vegas?n_train=100&n_val=0&n_test=30&dim_audio=4&dim_visual=5&seq_len=3", val_fraction=0.2)
    assert vegas.val_carved and (len(vegas.train), len(vegas.val)) == (80, 20)
    assert vegas.audio_is_sequence and vegas.train.audio.shape == (80, 3, 4)


def test_cache_file_is_reused(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HSC_CACHE_DIR", str(cache))
    spec = "synthetic:ave?n_train=60&n_val=10&n_test=10&dim_audio=4&dim_visual=4"
    first = load_data(spec)
    (path,) = cache.iterdir()
    stamp = path.stat().st_mtime_ns
    second = load_data(spec)
    assert list(cache.iterdir()) == [path] and path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first.train.audio, second.train.audio)
    load_data(spec + "&seed=1")  # other options, other file
    assert len(list(cache.iterdir())) == 2


def test_write_synthetic_layout_and_cli(tmp_path, capsys):
    path = write_synthetic(tmp_path / "sub" / "w.h5", "ave", n_train=20, n_val=0, n_test=10, dim_audio=3,
                           dim_visual=5)  # fmt: skip
    with h5py.File(path, "r") as f:
        assert {"audio_train", "lab_test", "latent"} <= set(f) and "audio_val" not in f
        assert set(f["latent"]) == {f"{k}_{s}" for k in ("nuisance", "pair_index", "events") for s in ("train", "test")}
    assert [p.name for p in path.parent.iterdir()] == ["w.h5"]  # no temp file left behind

    out = tmp_path / "cli.h5"
    assert main(["ave", str(out), "--set", "n_train=30", "--set", "n_test=10", "--set", "dim_visual=7"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "train 30" in printed
    assert load_data(str(out)).visual_dim == 7
    assert main(["ave", str(tmp_path / "x.h5"), "--set", "n_trian=3"]) == 2
    assert "unknown option 'n_trian' (did you mean 'n_train'?); valid options: " in capsys.readouterr().err
    assert main(["imagenet", str(tmp_path / "x.h5")]) == 2
    assert "ave, vegas" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
    # an existing file (perhaps real features) is kept unless --force; a folder is never replaced
    before = out.read_bytes()
    assert main(["ave", str(out), "--set", "n_train=40"]) == 2
    assert f"{out} exists already: not overwritten" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["ave", str(tmp_path), "--force"]) == 2
    assert f"{tmp_path} is a folder" in capsys.readouterr().err
    assert main(["ave", str(out), "--set", "n_train=40", "--set", "n_test=10", "--force"]) == 0
    assert len(load_data(str(out)).train) == 40
    for name in ("x.parquet", "x.csv", "x"):  # HDF5 under another name: the trainer would read it by its name
        assert main(["ave", str(tmp_path / name), "--set", "n_train=30"]) == 2
        assert capsys.readouterr().err.strip() == (f"error: {tmp_path / name}: the data is written as HDF5, which the "
                                                   "trainer knows by the name's extension; name it .h5 or .hdf5")
        assert not (tmp_path / name).exists()
    assert main(["ave", str(tmp_path / "X.HDF5"), "--set", "n_train=30", "--set", "n_test=10"]) == 0
    # a folder that does not exist (a typo): refused, as the other commands refuse one (it was made without a word)
    assert main(["ave", str(tmp_path / "nodir" / "sub" / "x.h5"), "--set", "n_train=30"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'nodir' / 'sub' / 'x.h5'}: its folder "
                                               f"{tmp_path / 'nodir' / 'sub'} does not exist; create it first "
                                               "(nothing written)")  # fmt: skip
    assert not (tmp_path / "nodir").exists()
    assert main(["ave", str(tmp_path / "miss" / ".." / "x.h5"), "--set", "n_train=30"]) == 2  # (abspath folded it)
    assert f"its folder {tmp_path / 'miss' / '..'} does not exist; create it first" in capsys.readouterr().err
    assert not (tmp_path / "miss").exists()
    (tmp_path / "afile").write_text("")
    assert main(["ave", str(tmp_path / "afile" / "x.h5"), "--set", "n_train=30"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'afile' / 'x.h5'}: its folder {tmp_path / 'afile'} "
                                               "is not a folder (nothing written)")  # fmt: skip
    assert main(["ave", str(tmp_path / "afile" / "sub" / "x.h5"), "--set", "n_train=30"]) == 2  # (a review)
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'afile' / 'sub' / 'x.h5'}: its folder "
                                               f"{tmp_path / 'afile' / 'sub'} cannot be made ({tmp_path / 'afile'} is "
                                               "a file) (nothing written)")  # fmt: skip


def test_load_data_rejects_bad_synthetic_option_before_generating(tmp_path, monkeypatch):
    monkeypatch.setenv("HSC_CACHE_DIR", str(tmp_path))
    with pytest.raises(DataError, match="seq_len"):
        load_data("synthetic:vegas?seq_len=-1")
    assert not list(tmp_path.iterdir())


def test_synth_data_into_a_folder_it_cannot_write_names_out(tmp_path, capsys):
    """Named with OUT and its folder, not by the temporary file the data is written to first."""
    from conftest import read_only

    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only(ro):
        assert main(["ave", str(ro / "x.h5"), "--set", "n_train=30", "--set", "n_test=10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {ro / 'x.h5'}: cannot write in {ro} (") and ".tmp" not in err, err


def test_a_full_disk_is_said_in_the_system_s_words(tmp_path, capsys, monkeypatch):
    """HDF5's error on a full disk was passed on whole: "Can't synchronously write data (file write failed: time =
    ..., filename = '.../.x.h5.9fqv3s6_.tmp', file descriptor = 3, errno = 28, ...)" over two lines, naming the
    temporary file. Now the system's words, for synth-data and for the synthetic cache; nothing is left on the disk."""
    from conftest import small_disk

    with small_disk(tmp_path / "full", size="100k") as full:
        assert main(["ave", str(full / "x.h5")]) == 2
        assert capsys.readouterr().err == f"error: {full / 'x.h5'}: cannot write in {full} (No space left on device)\n"
        monkeypatch.setenv("HSC_CACHE_DIR", str(full))
        monkeypatch.setenv("TMPDIR", str(full))  # the temporary folder it falls back to: full too
        import tempfile

        monkeypatch.setattr(tempfile, "tempdir", None)  # (read from TMPDIR again)
        with pytest.raises(DataError) as e:
            load_data("synthetic:ave")
        cached = next(iter(str(e.value).split("to its cache file ")[1:]), "").split(" ")[0]
        assert str(e.value) == (f"synthetic:ave: cannot write the synthetic data, to its cache file {cached} (No space "
                                "left on device) nor to a temporary folder (No space left on device); set HSC_CACHE_DIR "
                                "to a folder that can be written and has room"), str(e.value)  # fmt: skip
        assert cached.startswith(f"{full}/ave-") and list(full.iterdir()) == []
