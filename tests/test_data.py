"""Readers of trainer.data: round-trips, val carving, standardisation and every bad-input error."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from trainer.data import AVData, DataError, load_data, read_hdf5, read_parquet, standardize
from trainer.synthetic import make_synthetic


def _arrays(n_train=20, n_val=6, n_test=8, d_a=6, d_v=5, classes=4, seed=0) -> dict[str, np.ndarray]:
    """A valid HDF5 layout with float64 features and (N,) int labels covering every class."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n == 0:
            continue
        out[f"audio_{split}"] = rng.normal(size=(n, d_a))
        out[f"visual_{split}"] = rng.normal(size=(n, d_v))
        out[f"lab_{split}"] = np.arange(n) % classes
    return out


def _write_h5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def test_hdf5_vector_round_trip(tmp_path):
    arrays = _arrays()
    data = read_hdf5(_write_h5(tmp_path / "d.h5", arrays))
    assert isinstance(data, AVData) and not data.val_carved
    assert data.num_classes == 4
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        assert part.audio.dtype == part.visual.dtype == part.labels.dtype == np.float32
        np.testing.assert_allclose(part.audio, arrays[f"audio_{split}"], rtol=1e-6)
        np.testing.assert_allclose(part.visual, arrays[f"visual_{split}"], rtol=1e-6)
        np.testing.assert_array_equal(part.labels.argmax(1), arrays[f"lab_{split}"])
        np.testing.assert_array_equal(part.labels.sum(1), 1.0)
        assert len(part) == len(arrays[f"lab_{split}"])
    assert (data.audio_dim, data.visual_dim) == (6, 5)
    assert not data.audio_is_sequence and not data.visual_is_sequence
    line = data.summary()
    assert "\n" not in line and "20" in line and "4 classes" in line


def test_hdf5_sequences_keep_their_own_time_axis(tmp_path):
    arrays = _arrays()
    rng = np.random.default_rng(1)
    for split in ("train", "val", "test"):
        n = len(arrays[f"lab_{split}"])
        arrays[f"audio_{split}"] = rng.normal(size=(n, 10, 6)).astype(np.float32)
        arrays[f"visual_{split}"] = rng.normal(size=(n, 3, 5)).astype(np.float32)
    data = read_hdf5(_write_h5(tmp_path / "seq.h5", arrays))
    assert data.train.audio.shape == (20, 10, 6) and data.test.visual.shape == (8, 3, 5)
    assert data.audio_is_sequence and data.visual_is_sequence
    assert (data.audio_dim, data.visual_dim) == (6, 5)
    np.testing.assert_array_equal(data.val.audio, arrays["audio_val"])


def test_uint8_features_are_dequantised(tmp_path):
    arrays = _arrays()
    raw = np.tile(np.array([0, 128, 255, 64, 200, 1], dtype=np.uint8), (20, 1))
    arrays["audio_train"] = raw
    for split in ("val", "test"):  # every split in one kind (a mix is refused: BAD_HDF5)
        arrays[f"audio_{split}"] = raw[: len(arrays[f"audio_{split}"])]
    data = read_hdf5(_write_h5(tmp_path / "q.h5", arrays))
    assert data.train.audio.dtype == np.float32
    np.testing.assert_allclose(data.train.audio[0], [-0.5, 0.0, 127 / 256, -0.25, 72 / 256, -127 / 256])


@pytest.mark.parametrize("kind", ["int", "column", "float_int", "one_hot", "multi_hot"])
def test_label_formats(tmp_path, kind):
    arrays = _arrays(n_val=0)
    hot = {}
    for split in ("train", "test"):
        ints = arrays[f"lab_{split}"]
        one_hot = np.eye(4, dtype=np.uint8)[ints]
        multi = one_hot.copy()
        multi[::3, (ints[::3] + 1) % 4] = 1  # every third clip has a second class
        value = {
            "int": ints,
            "column": ints[:, None],
            "float_int": ints.astype(np.float64),
            "one_hot": one_hot,
            "multi_hot": multi,
        }[kind]
        arrays[f"lab_{split}"] = value
        hot[split] = multi if kind == "multi_hot" else one_hot
    data = read_hdf5(_write_h5(tmp_path / "lab.h5", arrays))
    assert data.num_classes == 4
    np.testing.assert_array_equal(data.test.labels, hot["test"])
    assert data.train.labels.dtype == np.float32


def test_num_classes_is_max_over_splits(tmp_path):
    arrays = _arrays()
    arrays["lab_test"] = np.array([6, 0] * 4)  # two classes: a one-class test split is refused (mAP would be 1)
    data = read_hdf5(_write_h5(tmp_path / "c.h5", arrays))
    assert data.num_classes == 7
    assert data.train.labels.shape == (20, 7) and data.test.labels[:, 6].sum() == 4


def test_extra_datasets_and_groups_are_ignored(tmp_path):
    arrays = _arrays()
    arrays["ids_train"] = np.arange(20)
    arrays["latent/whatever"] = np.zeros((3, 3))
    data = read_hdf5(_write_h5(tmp_path / "x.h5", arrays))
    assert len(data.train) == 20


def test_val_is_carved_seeded_and_disjoint(tmp_path):
    arrays = _arrays(n_train=50, n_val=0)
    arrays["audio_train"][:, 0] = np.arange(50)  # row ids, to see where every clip went
    path = _write_h5(tmp_path / "nv.h5", arrays)
    data = read_hdf5(path, val_fraction=0.2, seed=3)
    assert data.val_carved
    assert (len(data.train), len(data.val), len(data.test)) == (40, 10, 8)
    train_ids, val_ids = data.train.audio[:, 0], data.val.audio[:, 0]
    assert not set(train_ids) & set(val_ids)
    assert sorted(np.concatenate([train_ids, val_ids])) == list(range(50))
    # the carved clips keep their labels and visual features
    ids = val_ids.astype(int)
    np.testing.assert_allclose(data.val.visual, arrays["visual_train"][ids], rtol=1e-6)
    np.testing.assert_array_equal(data.val.labels.argmax(1), arrays["lab_train"][ids])
    again = read_hdf5(path, val_fraction=0.2, seed=3)
    np.testing.assert_array_equal(again.val.audio, data.val.audio)
    other = read_hdf5(path, val_fraction=0.2, seed=4)
    assert set(other.val.audio[:, 0]) != set(val_ids)


def test_tiny_val_fraction_still_carves_two_clips(tmp_path):
    """Two: a one-clip val split has nothing to rank (its mAP is 1.0, and its CCA spectrum raised in the SVD)."""
    data = read_hdf5(_write_h5(tmp_path / "t.h5", _arrays(n_train=5, n_val=0)), val_fraction=0.01)
    assert (len(data.train), len(data.val)) == (3, 2)


@pytest.mark.parametrize("seq", [False, True])
def test_standardize_uses_train_statistics(tmp_path, seq):
    rng = np.random.default_rng(5)
    arrays = _arrays(n_train=200, n_val=30, n_test=40)
    for split, n in (("train", 200), ("val", 30), ("test", 40)):
        shape = (n, 4, 6) if seq else (n, 6)
        arrays[f"audio_{split}"] = 3.0 + 5.0 * rng.normal(size=shape)
    arrays["visual_train"][:, 2] = 7.0  # a constant dim in train
    raw = read_hdf5(_write_h5(tmp_path / "s.h5", arrays))
    std = standardize(raw)
    flat = raw.train.audio.reshape(-1, 6).astype(np.float64)
    mean, sd = flat.mean(0), flat.std(0)
    out = std.train.audio.reshape(-1, 6)
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(std.test.audio, (raw.test.audio - mean) / sd, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std.val.audio, (raw.val.audio - mean) / sd, rtol=1e-4, atol=1e-5)
    assert abs(std.test.audio.reshape(-1, 6).mean()) > 1e-3  # test is not re-centred on itself
    assert all(np.isfinite(getattr(std, s).visual).all() for s in ("train", "val", "test"))
    np.testing.assert_allclose(std.train.visual[:, 2], 0.0)
    np.testing.assert_allclose(std.test.visual[:, 2], raw.test.visual[:, 2] - 7.0, rtol=1e-5)
    # a new object; the raw data are untouched
    assert std is not raw and std.train is not raw.train
    np.testing.assert_allclose(raw.train.audio.reshape(-1, 6).mean(0), mean, rtol=1e-5)
    assert std.train.audio.dtype == np.float32


def test_load_data_dispatches_and_standardises(tmp_path):
    path = _write_h5(tmp_path / "d.hdf5", _arrays(n_train=40))
    data = load_data(str(path))
    assert data.source == str(path)
    np.testing.assert_allclose(data.train.audio.mean(0), 0.0, atol=1e-5)
    raw = load_data(str(path), standardize=False)
    np.testing.assert_allclose(raw.train.audio, read_hdf5(path).train.audio)


def test_a_modality_constant_over_train_is_said_once_loaded(tmp_path):
    """All-zero audio (a feature extraction that failed) trains without an error but learns nothing from audio:
    the data carry a note that the trainer and the search print at their start; a few constant dims do not."""
    arrays = _arrays(n_train=30)
    arrays["audio_train"] = np.zeros_like(arrays["audio_train"])
    arrays["visual_train"][:, 2] = 7.0  # one constant visual dim: normal (e.g. a padding channel)
    data = load_data(str(_write_h5(tmp_path / "zero.h5", arrays)))
    assert data.notes == (f"{tmp_path / 'zero.h5'}: every audio feature is constant over the train clips (std "
                          "below 1e-06 in all 6 dims): nothing can be learned from audio; check how the features were "
                          "extracted",)  # fmt: skip
    assert load_data(str(_write_h5(tmp_path / "ok.h5", _arrays(n_train=30)))).notes == ()
    assert load_data(str(tmp_path / "zero.h5"), standardize=False).notes == ()  # raw: nothing was looked at
    # an all-zero val split (its mAP selects the epoch) trained without a word (a walkthrough); test too
    arrays = _arrays(n_train=30)
    arrays["visual_test"] = np.zeros_like(arrays["visual_test"])
    n_test = len(arrays["visual_test"])
    data = load_data(str(_write_h5(tmp_path / "zero_test.h5", arrays)))
    assert data.notes == (f"{tmp_path / 'zero_test.h5'}: every visual feature is the same in all {n_test} test clips: "
                          "the test mAP cannot tell models apart; check how the features were extracted",), data.notes


def _scale_medians(train: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """Reference: x standardised by train's per-dim mean and std (over N and T), then the medians over dims of its
    per-dim std and |mean|."""
    d = train.shape[-1]
    t, v = train.reshape(-1, d).astype(np.float64), x.reshape(-1, d).astype(np.float64)
    z = (v - t.mean(0)) / t.std(0)
    return float(np.median(z.std(0))), float(np.median(np.abs(z.mean(0))))


@pytest.mark.parametrize("seq", [False, True])
def test_val_and_test_on_another_scale_than_train_get_a_note(tmp_path, seq):
    """Train audio x100 + 500 and val/test not: standardised by train's statistics, val/test are near-constant
    far from 0 and trained without a word to a much worse score (a walkthrough)."""
    rng = np.random.default_rng(7)
    arrays = _arrays(n_train=40, n_val=10, n_test=12)
    if seq:
        for key in [k for k in arrays if k.startswith("audio_")]:
            arrays[key] = rng.normal(size=(len(arrays[key]), 3, 6))
    arrays["audio_train"] = arrays["audio_train"] * 100 + 500
    path = _write_h5(tmp_path / "scale.h5", arrays)
    data = load_data(str(path))
    expected = []
    for split in ("val", "test"):
        mid_std, mid_mean = _scale_medians(arrays["audio_train"], arrays[f"audio_{split}"])
        assert mid_std < 0.1 and mid_mean > 3  # the case: both out of range
        expected.append(f"{path}: the {split} audio features, standardised with the train split's statistics, "
                        f"have a median std of {mid_std:.3g} and a median |mean| of {mid_mean:.3g} over their dims "
                        f"(the train split's are 1 and 0): the {split} audio features are on another scale than "
                        "train's, likely extracted differently for the splits; check how the features were "
                        "extracted")  # fmt: skip
    assert data.notes == tuple(expected), data.notes
    assert load_data(str(path), standardize=False).notes == ()
    # each bound on its own: val's visual x20 (std too large), test's visual shifted by 4 train stds (mean too large)
    arrays = _arrays(n_train=40, n_val=10, n_test=12)
    arrays["visual_val"] = arrays["visual_val"] * 20
    train = arrays["visual_train"]
    arrays["visual_test"] = arrays["visual_test"] * train.std(0) + train.mean(0) + 4 * train.std(0)
    path = _write_h5(tmp_path / "scale2.h5", arrays)
    notes = load_data(str(path)).notes
    assert [n.split(", standardised")[0] for n in notes] == [f"{path}: the val visual features",
                                                            f"{path}: the test visual features"], notes
    (val_std, _), (_, test_mean) = (_scale_medians(train, arrays[f"visual_{s}"]) for s in ("val", "test"))
    assert val_std > 10 and f"median std of {val_std:.3g} " in notes[0]
    assert test_mean > 3 and f"median |mean| of {test_mean:.3g} " in notes[1]


def test_no_scale_note_for_data_on_one_scale(tmp_path):
    """The shipped synthetic data and these tests' usual data get no scale note (nor any other)."""
    assert load_data(str(_write_h5(tmp_path / "ok.h5", _arrays()))).notes == ()
    assert load_data(str(_write_h5(tmp_path / "small.h5", _arrays(n_val=2, n_test=2)))).notes == ()
    assert load_data("synthetic:ave").notes == ()


def _parquet_table(splits=("train", "val", "test"), multi=False, seq=False):
    rng = np.random.default_rng(2)
    rows = {"train": 20, "val": 5, "test": 7}
    audio, visual, label, split = [], [], [], []
    for s in splits:
        for i in range(rows[s]):
            a = rng.normal(size=(2, 3) if seq else 3)
            audio.append(a.tolist())
            visual.append(rng.normal(size=4).tolist())
            label.append([i % 3, 4] if multi and i % 2 else [i % 3] if multi else i % 3)
            split.append(s)
    return pa.table({"audio": audio, "visual": visual, "label": label, "split": split})


def test_parquet_round_trip(tmp_path):
    table = _parquet_table()
    pq.write_table(table, tmp_path / "d.parquet")
    data = load_data(str(tmp_path / "d.parquet"), standardize=False)
    assert not data.val_carved and data.num_classes == 3
    assert (len(data.train), len(data.val), len(data.test)) == (20, 5, 7)
    cols = table.to_pydict()
    test_rows = [i for i, s in enumerate(cols["split"]) if s == "test"]
    np.testing.assert_allclose(data.test.audio, np.array([cols["audio"][i] for i in test_rows]), rtol=1e-6)
    np.testing.assert_allclose(data.test.visual, np.array([cols["visual"][i] for i in test_rows]), rtol=1e-6)
    np.testing.assert_array_equal(data.test.labels.argmax(1), [cols["label"][i] for i in test_rows])


def test_parquet_multi_hot_sequences_and_carving(tmp_path):
    pq.write_table(_parquet_table(splits=("train", "test"), multi=True, seq=True), tmp_path / "m.parquet")
    data = read_parquet(tmp_path / "m.parquet", val_fraction=0.25, seed=1)
    assert data.val_carved and (len(data.train), len(data.val)) == (15, 5)
    assert data.num_classes == 5 and data.audio_is_sequence and data.train.audio.shape == (15, 2, 3)
    assert data.test.labels.shape == (7, 5)
    np.testing.assert_array_equal(data.test.labels.sum(1), [1, 2, 1, 2, 1, 2, 1])
    np.testing.assert_array_equal(data.test.labels[1], [0, 1, 0, 0, 1])


# --- bad inputs: each case mutates a valid layout; the message must name the file and the key ---


def _drop(key):
    return lambda a: a.pop(key)


def _set(key, fn):
    return lambda a: a.__setitem__(key, fn(a[key]))


def _nan(x):
    x = x.copy()
    x[0, 0] = x[3, 1] = np.nan
    return x


def _inf(x):
    x = x.copy()
    x[1, 1] = np.inf
    return x


BAD_HDF5 = {
    "missing key": (_drop("visual_test"), ["visual_test", "audio_train"]),
    "partial val": (_drop("lab_val"), ["lab_val", "audio_val"]),
    "N mismatch": (_set("visual_train", lambda x: x[:-2]), ["visual_train", "audio_train", "18"]),
    "dim mismatch": (_set("audio_test", lambda x: x[:, :4]), ["audio_test", "audio_train"]),
    "ndim mismatch": (_set("visual_val", lambda x: x[:, None, :]), ["visual_val", "visual_train"]),
    "nan": (_set("visual_train", _nan), ["visual_train", "2 NaN"]),
    "inf": (_set("audio_test", _inf), ["audio_test", "1 NaN or inf value(s), the first in clip 1; expected finite"]),
    "beyond float32": (  # finite in the file: it was told "NaN or inf", which the file has none of
        _set("audio_val", lambda x: np.where(np.arange(len(x))[:, None] == 2, 1e300, x)),
        ["audio_val", "value(s) beyond float32's range (|x| > 3.4e38; the trainer computes in float32), the first "
         "in clip 2"]),
    "empty split": (lambda a: a.update(audio_test=a["audio_test"][:0], visual_test=a["visual_test"][:0],
                                       lab_test=a["lab_test"][:0]), ["test", "empty", "at least 2 clips"]),  # fmt: skip
    "1-d features": (_set("audio_val", lambda x: x[:, 0]), ["audio_val", "(N, D)"]),
    "int features": (_set("audio_train", lambda x: x.astype(np.int32)), ["audio_train", "float or uint8"]),
    "3-d labels": (_set("lab_train", lambda y: np.zeros((len(y), 2, 2))), ["lab_train", "(N,)"]),
    "negative labels": (_set("lab_train", lambda y: y - 1), ["lab_train", "negative"]),
    "fractional labels": (_set("lab_test", lambda y: y + 0.5), ["lab_test", "8 label(s) that are not class indices, "
                                                                "the first 0.5 in clip 0; expected whole class"]),
    "non-0/1 multi-hot": (_set("lab_test", lambda y: 2 * np.eye(4)[y]), ["lab_test", "0 and 1"]),
    "clip without label": (_set("lab_train", lambda y: np.eye(4)[y] * (np.arange(len(y)) > 0)[:, None]),
                           ["lab_train", "1 clip(s) with no label"]),  # fmt: skip
    "nan labels": (_set("lab_val", lambda y: np.where(np.arange(len(y)) == 0, np.nan, y)), ["lab_val", "NaN"]),
    "one-hot index out of range": (
        lambda a: a.update(lab_train=np.eye(4)[a["lab_train"]], lab_test=np.full(8, 9)), ["lab_test", "out of range"]),
    "one-clip test split": (lambda a: a.update(audio_test=a["audio_test"][:1], visual_test=a["visual_test"][:1],
                                               lab_test=a["lab_test"][:1]),  # its mAP was 1.0, without a word
                            ["lab_test': the test split has 1 clip; expected at least 2"]),
    "one-clip val split": (lambda a: a.update(audio_val=a["audio_val"][:1], visual_val=a["visual_val"][:1],
                                              lab_val=a["lab_val"][:1]),  # a traceback from the SVD after epoch 1
                           ["lab_val': the val split has 1 clip"]),
    "class ids, not indices": (_set("lab_train", lambda y: y * 100_000),  # a (N, 300001) label matrix
                               ["lab_train': class index 300000 among 7 distinct classes; expected class indices"]),
    "uint64 label beyond int64": (  # wrapped negative in the cast to int64: an IndexError (a walkthrough); now
        # the huge-index error an int64 label gets
        _set("lab_train", lambda y: np.where(np.arange(len(y)) == 5, np.uint64(2**63 + 5), y.astype(np.uint64))),
        ["lab_train': class index 9223372036854775813 among 5 distinct classes; expected class indices 0..C-1"]),
    "uint8 and float features": (  # uint8 was dequantised, float not: val/test on another scale than train
        _set("audio_train", lambda x: np.clip(x * 40 + 128, 0, 255).astype(np.uint8)),
        ["audio features are uint8 in some splits and not in others", "'audio_train' is uint8", "'audio_val' is float64"]),
    "one-hot widths differ": (
        lambda a: a.update(lab_train=np.eye(4)[a["lab_train"]], lab_test=np.eye(5)[a["lab_test"]]),
        ["lab_train", "lab_test"]),
    # a scalar dataset: refused by its shape (the empty-split check, moved before it, raised TypeError: the review)
    "scalar features": (_set("audio_train", lambda x: np.float32(1.0)), ["audio_train", "shape ()"]),
    "scalar labels": (_set("lab_test", lambda y: np.int64(1)), ["lab_test", "shape ()"]),
    "beyond float32 and nan": (  # each named by its own first clip
        _set("visual_val", lambda x: np.where(np.arange(len(x))[:, None] == 3, 1e300,
                                              np.where(np.arange(len(x))[:, None] == 1, np.nan, x))),
        ["visual_val", "value(s) beyond float32's range", "the first in clip 3 (and", "NaN or inf, the first in "
         "clip 1)"]),
    "nan after beyond float32": (  # the other order: the NaN named by its own clip, not the overflow's (a review)
        _set("visual_val", lambda x: np.where(np.arange(len(x))[:, None] == 1, 1e300,
                                              np.where(np.arange(len(x))[:, None] == 3, np.nan, x))),
        ["the first in clip 1 (and", "NaN or inf, the first in clip 3)"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_HDF5))
def test_bad_hdf5_raises_data_error_naming_file_and_key(tmp_path, case):
    mutate, expected = BAD_HDF5[case]
    arrays = _arrays()
    mutate(arrays)
    path = _write_h5(tmp_path / "bad_file.h5", arrays)
    with pytest.raises(DataError) as info:
        load_data(str(path))
    message = str(info.value)
    assert "bad_file.h5" in message
    for text in expected:
        assert text in message, (text, message)


def test_group_where_dataset_expected(tmp_path):
    arrays = _arrays()
    del arrays["lab_val"]
    arrays["lab_val/inner"] = np.zeros(3)
    with pytest.raises(DataError, match=r"g\.h5.*lab_val.*group"):
        read_hdf5(_write_h5(tmp_path / "g.h5", arrays))


@pytest.mark.parametrize("kind", ["external", "soft"])
def test_a_dangling_link_where_a_dataset_is_expected(tmp_path, kind):
    """h5py's KeyError from a link to nothing was a 100-line traceback from a run (a walkthrough)."""
    path = _write_h5(tmp_path / "bad_link.h5", {k: v for k, v in _arrays().items() if k != "audio_train"})
    with h5py.File(path, "a") as f:
        f["audio_train"] = h5py.ExternalLink("gone.h5", "/x") if kind == "external" else h5py.SoftLink("/nowhere")
    with pytest.raises(DataError) as info:
        load_data(str(path))
    message = str(info.value)
    assert "\n" not in message
    target = "an external link to '/x' in file 'gone.h5'" if kind == "external" else "a soft link to '/nowhere'"
    assert message.startswith(f"{path}: key 'audio_train' is {target}, which is missing ("), message
    assert message.endswith("expected a dataset" + " (put the linked file back, or copy its data into this file)"
                            * (kind == "external")), message  # fmt: skip


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.h5.*not found"):
        load_data(str(tmp_path / "nope.h5"))
    with pytest.raises(DataError, match=r"nope\.parquet.*not found"):
        load_data(str(tmp_path / "nope.parquet"))
    for name in ("dir.h5", "dir.parquet"):
        (tmp_path / name).mkdir()
        with pytest.raises(DataError, match=rf"{name}: a folder, not a data file \(expected a \.h5 or \.parquet file\)"):
            load_data(str(tmp_path / name))
    # what exists but is no file, and a link to nothing, were "file not found" (a walkthrough)
    os.mkfifo(tmp_path / "fifo.h5")
    with pytest.raises(DataError, match=r"fifo\.h5: not a regular file \(a pipe, a socket or a device\)"):
        load_data(str(tmp_path / "fifo.h5"))
    (tmp_path / "dangling.h5").symlink_to(tmp_path / "moved.h5")
    with pytest.raises(DataError, match=rf"dangling\.h5: a symbolic link to {tmp_path / 'moved.h5'}, which does not"):
        load_data(str(tmp_path / "dangling.h5"))
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match=r"text\.h5.*not an HDF5"):
        load_data(str(tmp_path / "text.h5"))
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"text\.parquet.*parquet"):
        load_data(str(tmp_path / "text.parquet"))
    with pytest.raises(DataError, match=r"data\.csv.*\.h5.*\.parquet.*synthetic"):
        load_data(str(tmp_path / "data.csv"))
    for empty in ("", "  "):  # `--data "$UNSET"`: it was said as the current folder (": a folder, not a data file")
        with pytest.raises(DataError, match=r"^the data spec is empty; expected a \.h5 or \.parquet file"):
            load_data(empty)
    (tmp_path / "features").mkdir()  # a folder without an extension: said as a folder, not as extension 'none'
    with pytest.raises(DataError, match=r"features: a folder, not a data file \(expected a \.h5 or \.parquet file"):
        load_data(str(tmp_path / "features"))
    with pytest.raises(DataError, match=r"features_v2: unknown data spec \(no extension\); expected a path ending"):
        load_data(str(tmp_path / "features_v2"))  # a file not there, no extension: not "extension 'none'"


def test_parquet_duplicate_columns_and_uneven_sequences_are_one_line(tmp_path):
    """pyarrow's error for a column given twice listed the whole schema over ten lines; sequences of different
    lengths were called a feature-dim mismatch."""
    table = _parquet_table()
    pq.write_table(table.append_column("audio", table["audio"]), tmp_path / "dup.parquet")
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path / "dup.parquet"))
    assert str(e.value) == (f"{tmp_path / 'dup.parquet'}: column(s) ['audio'] appear more than once; expected each "
                            "of audio, visual, label, split once")  # fmt: skip
    cols = _parquet_table(seq=True).to_pydict()
    cols["audio"][0] = cols["audio"][0] + [[0.0, 0.0, 0.0]]  # one clip with 3 time steps, the others 2
    pq.write_table(pa.table(cols), tmp_path / "seq.parquet")
    with pytest.raises(DataError, match=r"column 'audio': rows have different list lengths \[2, 3\]; expected the same "
                                        r"length \(time steps for \(T, D\) features"):
        load_data(str(tmp_path / "seq.parquet"))


def _parquet_case(table: pa.Table, case: str) -> pa.Table:
    n = table.num_rows
    if case == "missing column":
        return table.drop_columns(["visual"])
    if case == "bad split value":
        return table.set_column(3, "split", pa.array(["train"] * (n - 1) + ["holdout"]))
    if case == "ragged features":
        audio = table.column("audio").to_pylist()
        audio[4] = audio[4][:-1]
        return table.set_column(0, "audio", pa.array(audio))
    if case == "empty label list":
        labels = [[y] for y in table.column("label").to_pylist()]
        labels[2] = []
        return table.set_column(2, "label", pa.array(labels, type=pa.list_(pa.int64())))
    if case == "negative label":
        return table.set_column(2, "label", pa.array([-1] + table.column("label").to_pylist()[1:]))
    if case == "huge label":  # a whole float beyond int64: it wrapped in the cast, then an IndexError (a review)
        return table.set_column(2, "label", pa.array([float(v) for v in table.column("label").to_pylist()[:2]] + [1e20]
                                                     + [float(v) for v in table.column("label").to_pylist()[3:]]))
    if case in ("class id in a list label", "uint64 list label beyond int64"):  # class ids, not indices: numpy was
        # asked for a (clips, 10**12) multi-hot (109 TiB, a traceback); a uint64 above 2**63 was called negative
        big, typ = (10**12, pa.list_(pa.int64())) if case.startswith("class id") else (2**63 + 5, pa.list_(pa.uint64()))
        return table.set_column(2, "label", pa.array([[0], [1, big]] + [[v % 3] for v in range(table.num_rows - 2)],
                                                     type=typ))  # fmt: skip
    if case == "fractional label":
        return table.set_column(2, "label", pa.array([float(v) for v in table.column("label").to_pylist()[:3]] + [1.5]
                                                     + [float(v) for v in table.column("label").to_pylist()[4:]]))
    if case == "nan feature":
        visual = table.column("visual").to_pylist()
        visual[-1][0] = float("nan")  # the last row is a test row
        return table.set_column(1, "visual", pa.array(visual))
    if case == "no test rows":
        return table.filter(pc.not_equal(table.column("split"), "test"))
    if case == "no rows at all":  # it was told its features' shape, (0, 0)
        return table.slice(0, 0)
    raise AssertionError(case)


BAD_PARQUET = {
    "missing column": ["visual", "audio"],
    "bad split value": ["split", "holdout"],
    "ragged features": ["audio", "length"],
    "empty label list": ["label", "no label"],
    "negative label": ["label", "negative"],
    "fractional label": ["label", "1 label(s) that are not class indices, the first 1.5 in clip 3; expected whole"],
    "huge label": ["label", "class index 1e+20 in clip 2; expected class indices"],
    "class id in a list label": ["column 'label': class index 1000000000000 among 4 distinct classes; expected class "
                                 "indices 0..C-1"],
    "uint64 list label beyond int64": ["column 'label': class index 9223372036854775813 among 4 distinct classes"],
    "nan feature": ["visual", "test", "1 NaN"],
    "no test rows": ["test", "empty", "expected at least 2 clips"],
    "no rows at all": ["split 'train' is empty", "expected at least 8 clips (training needs 8)"],
}


@pytest.mark.parametrize("case", list(BAD_PARQUET))
def test_bad_parquet_raises_data_error_naming_file_and_column(tmp_path, case):
    table = _parquet_case(_parquet_table(), case)
    pq.write_table(table, tmp_path / "bad_table.parquet")
    with pytest.raises(DataError) as info:
        load_data(str(tmp_path / "bad_table.parquet"))
    message = str(info.value)
    assert "bad_table.parquet" in message
    for text in BAD_PARQUET[case]:
        assert text in message, (text, message)


def test_an_hdf5_file_another_process_writes_is_said_to_be_held_open(tmp_path):
    """HDF5 locks a file open for writing: reading it said "[Errno 11] Unable to synchronously open file (unable to
    lock file, errno = 11, ...)" (a walkthrough). It says another process has it open, and how to read it anyway."""
    import subprocess
    import sys

    path = tmp_path / "held.h5"
    with h5py.File(path, "w") as f:
        for k, v in make_synthetic("ave", n_train=20, n_val=6, n_test=6).items():
            f[k] = v
    holder = subprocess.Popen([sys.executable, "-c", "import h5py, sys; f = h5py.File(sys.argv[1], 'a'); "
                               "print('open', flush=True); sys.stdin.read()", str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(DataError) as info:
            load_data(str(path))
        assert str(info.value) == (f"{path}: another process has it open for writing (HDF5 locks such a file); close "
                                   "it there, or read it anyway with HDF5_USE_FILE_LOCKING=FALSE in the environment")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert load_data(str(path)).train.audio.shape[0] == 20  # closed: it reads


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("synthetic:imagenet", ["synthetic:imagenet", "ave", "vegas"]),
        ("synthetic:ave?n_trian=10", ["n_trian", "(did you mean 'n_train'?)", "mismatch"]),
        ("synthetic:ave?mismatch=lots", ["mismatch", "float", "lots"]),
        ("synthetic:ave?mismatch=1.5", ["mismatch", "[0, 1)"]),
        ("synthetic:ave?seed", ["seed", "key=value"]),
    ],
)
def test_bad_synthetic_specs(tmp_path, monkeypatch, spec, expected):
    monkeypatch.setenv("HSC_CACHE_DIR", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_data(spec)
    for text in expected:
        assert text in str(info.value), (text, str(info.value))
    assert not list(tmp_path.iterdir())  # nothing generated


def test_val_fraction_out_of_range(tmp_path):
    path = _write_h5(tmp_path / "f.h5", _arrays(n_val=0))
    with pytest.raises(DataError, match="val_fraction"):
        read_hdf5(path, val_fraction=1.0)


def test_a_train_split_too_small_to_train_names_the_file_and_the_carving(tmp_path):
    """It said 'data: the train split has 1 clips' for a file of 3 train clips (no file, no word of the carving)."""
    from trainer import TrainConfig, fit

    path = _write_h5(tmp_path / "few.h5", _arrays(n_train=6, n_val=0, n_test=8))
    with pytest.raises(DataError, match=r"few.h5: the train split has 4 clips after 2 were carved off as val "
                                        r"\(val_fraction 0.1\); training needs at least 8"):  # fmt: skip
        fit(TrainConfig(epochs=1), str(path))
    # a search says the same before Ray starts (its pre-flight said 'data: the train split has 3 clips')
    from hsc_search.driver import load_search_data
    from hsc_search.settings import load_settings
    from hsc_search.space import load_space

    settings = load_settings(None, {"data": str(path)}, [])
    with pytest.raises(DataError, match=r"few.h5: the train split has 4 clips after 2 were carved off as val "
                                        r"\(val_fraction 0.1\); training needs at least 8"):  # fmt: skip
        load_search_data(settings, load_space(settings.space_path(), overrides=settings.overrides))


def test_parquet_one_hot_rows_as_labels_are_named(tmp_path):
    """[0, 1, 0, 0] per row reads as classes 0 and 1 for every clip; the error said every val clip carries
    class 0, which did not point at the labels' format."""
    cols = _parquet_table().to_pydict()
    cols["label"] = [[int(c == lab) for c in range(4)] for lab in cols["label"]]
    pq.write_table(pa.table(cols), tmp_path / "onehot.parquet")
    with pytest.raises(DataError, match=r"column 'label': rows such as \[1, 0, 0, 0\] repeat a 0 or a 1, as one-hot rows do"):
        load_data(str(tmp_path / "onehot.parquet"))
    cols["label"] = [[[0, 1], [0], [1]][i % 3] for i in range(len(cols["label"]))]  # indices 0 and 1: fine
    pq.write_table(pa.table(cols), tmp_path / "fine.parquet")
    assert load_data(str(tmp_path / "fine.parquet")).num_classes == 2
    # one one-hot row among valid lists: that row is named (row 0, the valid [0, 1], was named: a review)
    cols["label"][-1] = [0, 0, 1]
    pq.write_table(pa.table(cols), tmp_path / "one.parquet")
    with pytest.raises(DataError, match=r"column 'label': rows such as \[0, 0, 1\] repeat a 0 or a 1"):
        load_data(str(tmp_path / "one.parquet"))
    cols["label"][-1] = [1, 1]  # one index twice: said as what it is (it was "repeat 0 and 1": a review)
    pq.write_table(pa.table(cols), tmp_path / "twice.parquet")
    with pytest.raises(DataError, match=r"column 'label': rows such as \[1, 1\] repeat a 0 or a 1"):
        load_data(str(tmp_path / "twice.parquet"))
