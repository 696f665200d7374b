"""Data readers: HDF5 feature releases, parquet tables and the synthetic benchmark, into one `AVData`.

Every reader checks its input once and raises `DataError` with a message naming the file (or spec),
the key or column, and what was expected; nothing downstream sees malformed arrays.

HDF5 layout (public AVE / VEGAS feature releases): datasets `audio_<split>`, `visual_<split>`,
`lab_<split>` for split in train, test and optionally val (all three or none). Features are (N, D)
or (N, T, D), float or uint8 (uint8 -> (x - 128) / 256, the VGGish / YouTube-8M quantisation).
Labels are (N,) integers, (N, 1) integers (squeezed), or (N, C) one-hot / multi-hot 0/1. Other
datasets and groups in the file are ignored.

Parquet: columns `audio` and `visual` (list of float, or list of list of float for (T, D)
sequences), `label` (int, or list of int = multi-hot class indices) and `split` (train / val /
test). Without val rows, or an HDF5 file without val keys, `val_fraction` of train is carved off
with `numpy.random.default_rng(seed)` (at least one clip in each part; train order is kept).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SPLITS = ("train", "val", "test")
MODALITIES = ("audio", "visual")
STD_FLOOR = 1e-6  # feature dims with a smaller train std are centred but not scaled (as StandardScaler does)
SYNTHETIC_PREFIX = "synthetic:"
# `standardize` notes a val / test split whose standardised features' median-over-dims std is outside SCALE_STD_RANGE
# or whose median-over-dims |mean| is above SCALE_MEAN_MAX (train's are 1 and 0)
SCALE_STD_RANGE = (0.1, 10.0)
SCALE_MEAN_MAX = 3.0


class DataError(ValueError):
    """Bad input data: message names the file, the key/column and what was expected."""


@dataclass
class Split:
    """One split of paired clips; row i of every array is clip i.

    Attributes:
        audio: (N, D_a) or (N, T_a, D_a) float32.
        visual: (N, D_v) or (N, T_v, D_v) float32 (T may differ between modalities).
        labels: (N, C) float32 multi-hot 0/1; every row has at least one 1.
    """

    audio: np.ndarray
    visual: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class AVData:
    """A dataset ready for training: three splits with the same feature shapes and classes.

    Attributes:
        train, val, test: the splits.
        num_classes: C, the label width of every split.
        source: the spec or path it came from.
        val_carved: True when val was carved from the file's train split.
        val_fraction: the fraction of train carved as val (None when the file has a val split).
        notes: what looks wrong in the data but does not stop training (`standardize` finds a modality whose
            every feature dim is constant over train, a val / test split whose clips are all alike, or one on
            another scale than train), said when a run or a search starts.
    """

    train: Split
    val: Split
    test: Split
    num_classes: int
    source: str
    val_carved: bool
    val_fraction: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def audio_dim(self) -> int:
        return int(self.train.audio.shape[-1])

    @property
    def visual_dim(self) -> int:
        return int(self.train.visual.shape[-1])

    @property
    def audio_is_sequence(self) -> bool:
        return self.train.audio.ndim == 3

    @property
    def visual_is_sequence(self) -> bool:
        return self.train.visual.ndim == 3

    def summary(self) -> str:
        """One line: sizes, dims, classes."""

        def dims(x: np.ndarray) -> str:
            return f"{x.shape[-1]}-d" + (f" x T={x.shape[1]}" if x.ndim == 3 else "")

        carved = " (carved from train)" if self.val_carved else ""
        clips = "clip" if len(self.test) == 1 else "clips"
        classes = "class" if self.num_classes == 1 else "classes"
        return (
            f"{self.source}: train {len(self.train)} / val {len(self.val)}{carved} / test {len(self.test)} {clips}, "
            f"audio {dims(self.train.audio)}, visual {dims(self.train.visual)}, {self.num_classes} {classes}"
        )


def load_data(spec: str, *, val_fraction: float = 0.1, seed: int = 0, standardize: bool = True) -> AVData:
    """Loads a dataset from a file path or a synthetic spec.

    Args:
        spec: a path ending in .h5 / .hdf5 or .parquet, or "synthetic:ave" / "synthetic:vegas" with
            optional options "synthetic:ave?n_train=800&dim_audio=24&seed=3" (keyword arguments of
            `trainer.synthetic.make_synthetic`). Synthetic data are generated once into an HDF5
            cache file (dir: env HSC_CACHE_DIR, default ~/.cache/hsc-search/synthetic/; file name
            from a hash of the name, the resolved options and the generator version) and read back
            through `read_hdf5`.
        val_fraction: fraction of train carved as val when the data have no val split, in (0, 1).
        seed: seed of the val carving (not of the synthetic generator: that is the `seed` option).
        standardize: apply `standardize` (train-split statistics) before returning.

    Returns:
        The dataset; `source` is `spec` as given.

    Raises:
        DataError: unreadable or malformed data, unknown extension, bad synthetic name or option.
    """
    spec = str(spec)
    if not spec.strip():  # `--data ""` (an unset shell variable): "" is the current folder to Path
        raise DataError("the data spec is empty; expected a .h5 or .parquet file, or synthetic:ave / synthetic:vegas")
    if spec.startswith(SYNTHETIC_PREFIX):
        data = _load_synthetic(spec, val_fraction, seed)
    else:
        suffix = Path(spec).suffix.lower()
        if suffix in (".h5", ".hdf5"):
            data = read_hdf5(spec, val_fraction=val_fraction, seed=seed)
        elif suffix == ".parquet":
            data = read_parquet(spec, val_fraction=val_fraction, seed=seed)
        elif Path(spec).is_dir():
            raise DataError(f"{spec}: a folder, not a data file (expected a .h5 or .parquet file, or synthetic:ave "
                            "/ synthetic:vegas)")  # fmt: skip
        else:
            raise DataError(
                f"{spec}: unknown data spec ({f'extension {suffix!r}' if suffix else 'no extension'}); expected a "
                "path ending in "
                f".h5, .hdf5 or .parquet, or 'synthetic:ave' / 'synthetic:vegas'"
            )
    return _standardize(data) if standardize else data


def _load_synthetic(spec: str, val_fraction: float, seed: int) -> AVData:
    # Imported here, not at the top: `python -m trainer.synthetic` would otherwise find the module
    # already imported (through trainer/__init__) before running it as __main__.
    from . import synthetic

    name, _, query = spec[len(SYNTHETIC_PREFIX) :].partition("?")
    try:
        options = synthetic.resolve_options(name, **synthetic.parse_options(p for p in query.split("&") if p))
    except ValueError as exc:
        raise DataError(f"{spec}: {exc}") from None
    key = json.dumps({"name": name, "options": options, "version": synthetic.GENERATOR_VERSION}, sort_keys=True)
    cache_dir = Path(os.environ.get("HSC_CACHE_DIR") or "~/.cache/hsc-search/synthetic").expanduser()
    problem = cache_dir_problem("the synthetic data's cache goes there", "~/.cache/hsc-search/synthetic")
    if problem:  # (it was made anew in a temporary folder for every run, silently: a walkthrough)
        raise DataError(problem)
    path = cache_dir / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.h5"
    if not path.exists():
        try:
            synthetic.write_synthetic(path, name, **options)
        except OSError as exc:  # a cache that cannot be written (a read-only HOME): made anew in a temporary folder,
            import tempfile  # read back through the same reader, and removed (a walkthrough: it was an error)

            try:
                with tempfile.TemporaryDirectory(prefix="hsc-synthetic-") as tmp:
                    synthetic.write_synthetic(Path(tmp) / path.name, name, **options)
                    data = read_hdf5(Path(tmp) / path.name, val_fraction=val_fraction, seed=seed)
            except OSError as again:
                raise DataError(f"{spec}: cannot write the synthetic data, to its cache file {path} "
                                f"({synthetic.os_words(exc)}) nor to a temporary folder ({synthetic.os_words(again)}); "
                                "set HSC_CACHE_DIR to a folder that can be written and has room") from None  # fmt: skip
            return dataclasses.replace(data, source=spec)
    return dataclasses.replace(read_hdf5(path, val_fraction=val_fraction, seed=seed), source=spec)


def cache_dir_problem(what: str, default: str) -> str | None:
    """Why $HSC_CACHE_DIR, when set, cannot be the cache folder (`what` goes there; `default` when unset), or None:
    a file, or a link to nothing. One home for the trainer's and hsc-search's check (their defaults differ)."""
    given = os.environ.get("HSC_CACHE_DIR")
    if not given:
        return None
    path = Path(given).expanduser()
    if path.is_symlink() and not path.exists():
        why = f"a link to {os.readlink(path)}, which does not exist"
    elif path.exists() and not path.is_dir():
        why = "not a folder"
    else:
        return None
    return f"HSC_CACHE_DIR={given}: {why} ({what}); set it to a folder, or unset it for {default}"


def _check_file(src: str) -> None:
    path = Path(src)
    if path.is_dir():
        raise DataError(f"{src}: a folder, not a data file (expected a .h5 or .parquet file)")
    if not path.is_file():  # "file not found" for what exists but is no file, or a link to nothing (a walkthrough)
        if path.is_symlink():
            raise DataError(f"{src}: a symbolic link to {os.readlink(path)}, which does not exist")
        if path.exists():
            raise DataError(f"{src}: not a regular file (a pipe, a socket or a device); expected a .h5 or .parquet "
                            "file")  # fmt: skip
        raise DataError(f"{src}: file not found")


def read_hdf5(path: str | os.PathLike, *, val_fraction: float = 0.1, seed: int = 0) -> AVData:
    """Reads the HDF5 layout described in the module docstring; features are not standardised.

    Raises:
        DataError: see the module docstring; the message names the file and the key.
    """
    src = str(path)
    _check_file(src)
    try:
        hdf5 = h5py.is_hdf5(src)
    except OSError as e:  # e.g. no read permission: h5py raises rather than answering
        raise DataError(f"{src}: cannot read ({e.strerror or type(e).__name__})") from None
    if not hdf5:
        raise DataError(f"{src}: not an HDF5 file (expected the AVE / VEGAS feature layout)")
    required = [f"{m}_{s}" for s in ("train", "test") for m in (*MODALITIES, "lab")]
    val_keys = [f"{m}_val" for m in (*MODALITIES, "lab")]
    try:
        with h5py.File(src, "r") as f:
            existing = sorted(f.keys())
            missing = [k for k in required if k not in f]
            if missing:
                raise DataError(
                    f"{src}: missing key(s) {missing}; expected datasets {required} (and optionally {val_keys}); "
                    f"the file has {existing}"
                )
            present = [k for k in val_keys if k in f]
            if present and len(present) != len(val_keys):
                raise DataError(
                    f"{src}: key(s) {present} present but {[k for k in val_keys if k not in f]} missing; "
                    f"expected all of {val_keys} or none"
                )
            raw: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
            for split in SPLITS if present else ("train", "test"):
                raw[split] = {}
                for field, prefix in (("audio", "audio"), ("visual", "visual"), ("labels", "lab")):
                    key = f"{prefix}_{split}"
                    node = _hdf5_node(src, f, key)
                    if not isinstance(node, h5py.Dataset):
                        raise DataError(f"{src}: key {key!r} is a group; expected a dataset")
                    raw[split][field] = (f"key {key!r}", np.asarray(node[()]))
    except OSError as exc:
        if exc.errno == errno.EAGAIN or "unable to lock file" in str(exc):  # said as errno 11 in HDF5's words
            raise DataError(f"{src}: another process has it open for writing (HDF5 locks such a file); close it "
                            "there, or read it anyway with HDF5_USE_FILE_LOCKING=FALSE in the environment") from None
        raise DataError(f"{src}: cannot read HDF5 file ({exc})") from exc
    return _build(src, raw, val_fraction, seed)


def _hdf5_node(src: str, f: h5py.File, key: str) -> h5py.Group | h5py.Dataset:
    """f[key], or a DataError where key is a soft or external link to something missing (h5py: a KeyError, which
    was a 100-line traceback from a run: a walkthrough)."""
    try:
        return f[key]
    except KeyError as exc:
        reason = exc.args[0] if exc.args else type(exc).__name__
        link = f.get(key, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise DataError(f"{src}: key {key!r} is an external link to {link.path!r} in file {link.filename!r}, "
                            f"which is missing ({reason}); expected a dataset (put the linked file back, or copy "
                            "its data into this file)") from None  # fmt: skip
        if isinstance(link, h5py.SoftLink):
            raise DataError(f"{src}: key {key!r} is a soft link to {link.path!r}, which is missing ({reason}); "
                            "expected a dataset") from None  # fmt: skip
        raise DataError(f"{src}: key {key!r} cannot be opened ({reason}); expected a dataset") from None


def read_parquet(path: str | os.PathLike, *, val_fraction: float = 0.1, seed: int = 0) -> AVData:
    """Reads the parquet layout described in the module docstring; features are not standardised.

    Raises:
        DataError: see the module docstring; the message names the file and the column.
    """
    src = str(path)
    _check_file(src)
    try:
        names = pq.read_schema(src).names
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{src}: not a readable parquet file ({first})") from exc
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # pyarrow's own error lists the whole schema over many lines
        raise DataError(f"{src}: column(s) {twice} appear more than once; expected each of audio, visual, label, "
                        "split once")  # fmt: skip
    try:
        table = pq.read_table(src)
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{src}: not a readable parquet file ({first})") from exc
    expected = ["audio", "visual", "label", "split"]
    missing = [c for c in expected if c not in table.column_names]
    if missing:
        raise DataError(f"{src}: missing column(s) {missing}; expected {expected}; the file has {table.column_names}")
    split_of = np.asarray(table.column("split").to_pylist(), dtype=object)
    unknown = sorted({repr(v) for v in split_of} - {repr(s) for s in SPLITS})
    if unknown:
        listed = ", ".join(unknown[:5])
        raise DataError(f"{src}: column 'split' has value(s) {listed}; expected 'train', 'val' or 'test'")
    audio = _list_column(table.column("audio"), src, "audio")
    visual = _list_column(table.column("visual"), src, "visual")
    labels = _label_column(table.column("label"), src)
    raw = {}
    for split in SPLITS if "val" in set(split_of) else ("train", "test"):
        rows = np.flatnonzero(split_of == split)
        where = f"column %r (split={split!r})"
        raw[split] = {
            "audio": (where % "audio", audio[rows]),
            "visual": (where % "visual", visual[rows]),
            "labels": (where % "label", labels[rows]),
        }
    return _build(src, raw, val_fraction, seed)


def standardize(data: AVData) -> AVData:
    """Standardises each feature dim with the train split's mean and std (over N and T).

    The same statistics are applied to val and test. Dims whose train std is below STD_FLOOR are
    centred but not scaled, so constant dims do not divide by zero (nor blow up val / test values).

    Returns:
        A new AVData; the input is not modified.
    """
    new = {s: {} for s in SPLITS}
    notes = []
    for modality in MODALITIES:
        split_alike = {"val": False, "test": False}
        train = getattr(data.train, modality)
        flat = train.reshape(-1, train.shape[-1]).astype(np.float64)  # (N * T, D); float64 for exact sums
        mean, std = flat.mean(axis=0), flat.std(axis=0)
        constant = bool(np.all(std < STD_FLOOR))
        if constant:  # e.g. a feature extraction that wrote zeros: every trial would learn nothing
            notes.append(f"{data.source}: every {modality} feature is constant over the train clips (std below "
                         f"{STD_FLOOR:g} in all {flat.shape[1]} dims): nothing can be learned from {modality}; check "
                         "how the features were extracted")  # fmt: skip
        for split in ("val", "test") if not constant else ():  # every clip alike (train alike: said above): that
            # split's mAP would say nothing of the model (and val selects the epoch by it); a walkthrough's all-zero
            # val split trained without a word
            x = getattr(getattr(data, split), modality)
            split_alike[split] = len(x) > 1 and bool(np.all(x.reshape(len(x), -1).astype(np.float64).std(axis=0)
                                                            < STD_FLOOR))  # fmt: skip
            if split_alike[split]:
                notes.append(f"{data.source}: every {modality} feature is the same in all {len(x)} {split} clips: the "
                             f"{split} mAP cannot tell models apart; check how the features were extracted")  # fmt: skip
        varying = std >= STD_FLOOR  # the dims whose standardised train std is 1 (constant ones: 0)
        std = np.where(varying, std, 1.0)
        for split in SPLITS:
            x = getattr(getattr(data, split), modality)
            new[split][modality] = ((x - mean) / std).astype(np.float32)
        for split in ("val", "test") if not constant else ():  # val / test on another scale than train (features
            # extracted differently for the splits) trained without a word to a much worse score: a walkthrough
            x = getattr(getattr(data, split), modality)
            if len(x) < 2 or split_alike[split]:
                continue
            flat_split = ((x.reshape(-1, x.shape[-1]).astype(np.float64) - mean) / std)[:, varying]  # (N * T, D')
            mid_std = float(np.median(flat_split.std(axis=0)))
            mid_mean = float(np.median(np.abs(flat_split.mean(axis=0))))
            if not SCALE_STD_RANGE[0] <= mid_std <= SCALE_STD_RANGE[1] or mid_mean > SCALE_MEAN_MAX:
                notes.append(f"{data.source}: the {split} {modality} features, standardised with the train split's "
                             f"statistics, have a median std of {mid_std:.3g} and a median |mean| of {mid_mean:.3g} "
                             f"over their dims (the train split's are 1 and 0): the {split} {modality} features are "
                             "on another scale than train's, likely extracted differently for the splits; check how "
                             "the features were extracted")  # fmt: skip
    splits = {s: dataclasses.replace(getattr(data, s), **new[s]) for s in SPLITS}
    return dataclasses.replace(data, **splits, notes=(*data.notes, *notes))


_standardize = standardize  # load_data's `standardize` flag shadows the function inside load_data


def _build(
    src: str, raw: dict[str, dict[str, tuple[str, np.ndarray]]], val_fraction: float, seed: int
) -> AVData:
    """Checks and converts raw arrays (split -> field -> (key name, array)) into an AVData."""
    for modality in MODALITIES:  # uint8 is dequantised, float kept: a mix puts the splits on different scales
        kinds = {raw[s][modality][0]: raw[s][modality][1].dtype for s in raw}
        usable = all(k == np.uint8 or np.issubdtype(k, np.floating) for k in kinds.values())  # others: below
        if usable and len({k == np.uint8 for k in kinds.values()}) > 1:
            listed = ", ".join(f"{where} is {dtype}" for where, dtype in kinds.items())
            raise DataError(f"{src}: {modality} features are uint8 in some splits and not in others ({listed}); "
                            "expected one kind in every split (uint8 features are dequantised as (x - 128) / 256, "
                            "float ones are taken as they are)")  # fmt: skip
    for split, fields in raw.items():  # before the features' checks: an empty Parquet split was told its
        if any(np.ndim(arr) == 0 for _, arr in fields.values()):  # features' shape (0, 0) (a walkthrough); a
            continue  # scalar dataset is refused by those checks, naming its shape (the review)
        counts = {where: len(arr) for where, arr in fields.values()}
        listed = ", ".join(f"{where} has {n}" for where, n in counts.items())
        if len(set(counts.values())) > 1:
            raise DataError(f"{src}: split {split!r}: {listed} clips; expected the same number of clips")
        if not any(counts.values()):  # (it said ">= 1 clip", then one clip was refused: training needs 8)
            least = "8 clips (training needs 8)" if split == "train" else "2 clips"
            raise DataError(f"{src}: split {split!r} is empty ({listed} rows); expected at least {least}")
    feats = {s: {m: _features(src, *raw[s][m]) for m in MODALITIES} for s in raw}
    labels = {s: _labels(src, *raw[s]["labels"]) for s in raw}
    for modality in MODALITIES:
        shapes = {raw[s][modality][0]: feats[s][modality].shape[1:] for s in raw}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{where} has {shape}" for where, shape in shapes.items())
            raise DataError(
                f"{src}: {modality} feature shapes differ between splits: {listed}; "
                f"expected the same (D,) or (T, D) after N in every split"
            )
    num_classes = _num_classes(src, {raw[s]["labels"][0]: labels[s] for s in raw})
    splits = {s: Split(feats[s]["audio"], feats[s]["visual"], _multi_hot(labels[s], num_classes)) for s in raw}
    carved = "val" not in splits
    if carved:
        splits["train"], splits["val"] = _carve(src, splits["train"], val_fraction, seed)
    data = AVData(**splits, num_classes=num_classes, source=src, val_carved=carved,
                  val_fraction=val_fraction if carved else None)  # fmt: skip
    _check_retrieval_labels(src, data, {s: raw[s]["labels"][0] for s in raw})
    return data


def _check_retrieval_labels(src: str, data: AVData, keys: dict[str, str]) -> None:
    """Refuses a val or test split in which every clip is relevant to every query (one class shared by all):
    its mAP is 1.0 whatever the model does."""
    for split in ("val", "test"):
        labels = getattr(data, split).labels
        shared = np.flatnonzero(labels.all(axis=0))
        key = keys.get(split) or f"{keys['train']} (val carved from it)"
        hint = "; give a val split, or a larger val_fraction" if split not in keys else ""  # carved from train
        if len(labels) < 2:  # one clip has nothing to rank: its mAP is 1.0 (val: its CCA spectrum cannot be computed)
            raise DataError(f"{src}: {key}: the {split} split has {len(labels)} clip; expected at least 2 (each clip "
                            f"queries the others){hint}")  # fmt: skip
        if shared.size:
            raise DataError(
                f"{src}: {key}: all {len(labels)} {split} clips carry class {int(shared[0])}, so every clip is "
                f"relevant to every query and mAP is 1.0 whatever the model learns; expected at least two classes"
                f"{hint}"
            )


def _features(src: str, key: str, x: np.ndarray) -> np.ndarray:
    """(N, D) or (N, T, D) float / uint8 -> float32, checked for shape and finiteness."""
    given = x
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 256.0  # dequantise VGGish / YouTube-8M releases
    elif np.issubdtype(x.dtype, np.floating):
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused below in one line
            x = x.astype(np.float32, copy=False)
    else:
        raise DataError(f"{src}: {key}: features have dtype {x.dtype}; expected float or uint8")
    if x.ndim not in (2, 3) or x.shape[-1] == 0 or (x.ndim == 3 and x.shape[1] == 0):
        raise DataError(f"{src}: {key}: features have shape {x.shape}; expected (N, D) or (N, T, D) with D, T >= 1")
    finite = np.isfinite(x)  # after the cast: float64 values beyond float32's range are inf here
    bad = x.size - np.count_nonzero(finite)
    if bad:
        first = int(np.argwhere(~finite)[0][0])
        # values finite in the file that float32 cannot hold were told "NaN or inf", which the file has none of
        # (a walkthrough: float64 features of 1e300)
        given_finite = np.isfinite(given) if given is not x else finite
        given_bad = given.size - np.count_nonzero(given_finite)
        if given_bad < bad:
            over = int(np.argwhere(given_finite & ~finite)[0][0])
            first = int(np.argwhere(~given_finite)[0][0]) if given_bad else first  # (the NaN's own clip: a review)
            nan_inf = f" (and {given_bad} NaN or inf, the first in clip {first})" if given_bad else ""
            raise DataError(f"{src}: {key}: {bad - given_bad} value(s) beyond float32's range (|x| > 3.4e38; the "
                            f"trainer computes in float32), the first in clip {over}{nan_inf}; expected features "
                            "of a usual scale (standardise them)")  # fmt: skip
        raise DataError(f"{src}: {key}: {bad} NaN or inf value(s), the first in clip {first}; expected finite "
                        "features")  # fmt: skip
    return x


def _labels(src: str, key: str, y: np.ndarray) -> np.ndarray:
    """Checks labels; returns (N,) int64 class indices (uint64 beyond int64's range) or (N, C) float32 multi-hot."""
    if y.dtype == bool:
        y = y.astype(np.uint8)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # a column of class indices, not a 1-class multi-hot
    if y.ndim not in (1, 2):
        raise DataError(f"{src}: {key}: labels have shape {y.shape}; expected (N,) integers or (N, C) multi-hot")
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{src}: {key}: labels have dtype {y.dtype}; expected integers or 0/1 values")
    if not np.issubdtype(y.dtype, np.integer):
        bad = y.size - np.count_nonzero(np.isfinite(y))
        if bad:
            raise DataError(f"{src}: {key}: {bad} NaN or inf label value(s); expected finite labels")
    if y.ndim == 1:
        fractional = np.flatnonzero(y != np.round(y))
        if fractional.size:  # (it said "(N,) integers", an HDF5 shape, of a parquet column too)
            i = int(fractional[0])
            raise DataError(f"{src}: {key}: {fractional.size} label(s) that are not class indices, the first "
                            f"{y[i]:g} in clip {i}; expected whole class numbers 0, 1, ...")  # (:g: float32's 2.1)
        if y.size and not np.issubdtype(y.dtype, np.integer) and y.max() >= 2**31:  # (1e20 wrapped in the cast to
            # int64, and then failed as an IndexError: a review)
            i = int(np.argmax(y))
            raise DataError(f"{src}: {key}: class index {y[i]:g} in clip {i}; expected class indices 0, 1, ...")
        if y.size and y.min() < 0:
            raise DataError(f"{src}: {key}: {np.count_nonzero(y < 0)} negative class index(es); expected >= 0")
        if y.size and y.dtype == np.uint64 and y.max() > np.iinfo(np.int64).max:  # kept uint64 (exact), for
            # _num_classes to refuse as it does a huge int64 index: the cast wrapped it negative, an IndexError then
            return y
        return y.astype(np.int64)
    if np.any((y != 0) & (y != 1)):
        raise DataError(f"{src}: {key}: (N, C) labels hold values other than 0 and 1; expected one-hot / multi-hot")
    empty = np.count_nonzero(~np.any(y == 1, axis=1))
    if empty:
        raise DataError(f"{src}: {key}: {empty} clip(s) with no label (all-zero row); expected >= 1 class per clip")
    return y.astype(np.float32)


def _num_classes(src: str, labels: dict[str, np.ndarray]) -> int:
    """C = max over splits of (max index + 1) or the multi-hot width; widths must agree."""
    widths = {k: y.shape[1] for k, y in labels.items() if y.ndim == 2}
    if len(set(widths.values())) > 1:
        listed = ", ".join(f"{where} has {c}" for where, c in widths.items())
        raise DataError(f"{src}: multi-hot label widths differ: {listed} classes; expected one number of classes")
    needed = {k: int(y.max()) + 1 for k, y in labels.items() if y.ndim == 1 and y.size}
    if widths:
        width = next(iter(widths.values()))
        over = [f"{where} has index {n - 1}" for where, n in needed.items() if n > width]
        if over:
            raise DataError(
                f"{src}: class index out of range: {', '.join(over)}; the multi-hot labels have {width} classes, "
                f"expected indices 0..{width - 1}"
            )
        return width
    top = max(needed, key=needed.get)
    _check_dense(src, top, needed[top], len(np.unique(np.concatenate([y for y in labels.values() if y.ndim == 1]))))
    return needed[top]


def _check_dense(src: str, where: str, needed: int, distinct: int) -> None:
    """Class ids, not indices (a largest index far above the number of classes): every clip would get a dense row of
    `needed` label columns (10**12 of them asked numpy for 109 TiB)."""
    if needed > 1000 and needed > 10 * distinct:
        raise DataError(f"{src}: {where}: class index {needed - 1} among {distinct} distinct classes; expected "
                        f"class indices 0..C-1 (number the classes 0..{distinct - 1}: every clip gets a row of "
                        f"{needed} label columns)")  # fmt: skip


def _multi_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    if y.ndim == 2:
        return y
    hot = np.zeros((len(y), num_classes), dtype=np.float32)
    hot[np.arange(len(y)), y] = 1.0
    return hot


def _carve(src: str, train: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Splits a seeded random val_fraction off train (>= 2 clips: one clip has nothing to rank; >= 1 left to
    train); both keep the file order."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"{src}: val_fraction is {val_fraction}; expected a value in (0, 1) to carve val from train")
    n = len(train)
    if n < 3:
        raise DataError(f"{src}: train split has {n} clip{'s' * (n != 1)}; expected >= 3 to carve a validation split "
                        "of 2 from it")  # fmt: skip
    n_val = min(max(int(round(val_fraction * n)), 2), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    def take(idx: np.ndarray) -> Split:
        return Split(train.audio[idx], train.visual[idx], train.labels[idx])

    return take(train_idx), take(val_idx)


def _list_column(col: pa.ChunkedArray, src: str, name: str) -> np.ndarray:
    """A list<number> or list<list<number>> column -> (N, D) or (N, T, D) array (raw dtype)."""
    arr = col.combine_chunks()
    shape = [len(arr)]
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            raise DataError(f"{src}: column {name!r}: {arr.null_count} null list(s); expected a feature list per row")
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if len(np.unique(lengths)) > 1:
            what = "feature dim" if len(shape) > 1 else "length (time steps for (T, D) features, else the feature dim)"
            raise DataError(
                f"{src}: column {name!r}: rows have different list lengths {np.unique(lengths)[:5].tolist()}; "
                f"expected the same {what} in every row and split (pad or pool sequences to one length)"
            )
        shape.append(int(lengths[0]) if len(lengths) else 0)
        arr = arr.flatten()
    if len(shape) not in (2, 3) or not (pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type)):
        raise DataError(
            f"{src}: column {name!r}: type {col.type}; expected list of float (or list of list of float for sequences)"
        )
    if arr.null_count:
        raise DataError(f"{src}: column {name!r}: {arr.null_count} null value(s); expected numbers")
    return arr.to_numpy(zero_copy_only=False).reshape(shape)


def _label_column(col: pa.ChunkedArray, src: str) -> np.ndarray:
    """An int column -> (N,) ints; a list<int> column (class indices) -> (N, C) multi-hot float32."""
    arr = col.combine_chunks()
    if arr.null_count:
        raise DataError(f"{src}: column 'label': {arr.null_count} null value(s); expected a label per row")
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return arr.to_numpy(zero_copy_only=False)
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) or not pa.types.is_integer(
        arr.type.value_type
    ):
        raise DataError(f"{src}: column 'label': type {arr.type}; expected int or list of int (class indices)")
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    if np.any(lengths == 0):
        raise DataError(
            f"{src}: column 'label': {np.count_nonzero(lengths == 0)} clip(s) with no label (empty list); "
            f"expected >= 1 class index per clip"
        )
    values = arr.flatten()
    if values.null_count:
        raise DataError(f"{src}: column 'label': null class index; expected integers")
    idx = values.to_numpy(zero_copy_only=False)
    if idx.min() < 0:
        raise DataError(f"{src}: column 'label': {np.count_nonzero(idx < 0)} negative class index(es); expected >= 0")
    # (before the cast: a uint64 index above 2**63 wrapped negative in it, and was called a negative index)
    _check_dense(src, "column 'label'", int(idx.max()) + 1, len(np.unique(idx)))
    idx = idx.astype(np.int64)
    rows = np.repeat(np.arange(len(arr)), lengths)
    keys, seen = np.unique(rows * 2 + idx, return_counts=True) if idx.max() <= 1 else (None, None)
    if seen is not None and np.any(seen > 1):  # 0s and 1s, repeated within a row: named by the first such row (it
        first = int(keys[seen > 1][0] // 2)  # named row 0 whatever it held: a review)
        raise DataError(f"{src}: column 'label': rows such as {arr[first].as_py()} repeat a 0 or a 1, as one-hot "
                        "rows do; a label here is a class index or a list of class indices (e.g. 2, or [0, 3]): "
                        "write each row's indices where it has a 1")  # fmt: skip
    hot = np.zeros((len(arr), int(idx.max()) + 1), dtype=np.float32)
    hot[rows, idx] = 1.0
    return hot
