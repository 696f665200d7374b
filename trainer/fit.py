"""`fit`: the training loop, model selection on validation, checkpoints and the run folder.

The driver (Ray Tune) and the CLI both call `fit`; it knows nothing about either. Once per epoch it calls
`on_epoch(report)` with the flat metric dict of docs/method.md section 3 and a way to save the full training state.
"""

from __future__ import annotations

import copy
import json
import io
import math
import os
import pickle
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import AUTO_FIELDS, USED_ONLY_WHEN, ConfigError, TrainConfig, auto_ema_momentum
from .data import AVData, DataError, load_data
from .ema import make_teacher
from .engine import DeviceSplit, Schedule, TrainState, cca_spectrum, evaluate, train_one_epoch
from .losses import LossWeighting
from .model import HSCMAE

CHECKPOINT_FILE = "state.pt"
OBJECTIVE = "val/map_avg"
# with the test metrics, after the last epoch: the epoch validation selected, whose checkpoint they are of
TEST_EPOCH = "test/epoch"


@dataclass
class EpochReport:
    """What `on_epoch` receives once per epoch."""

    epoch: int  # 1-based
    metrics: dict[str, float]  # flat keys of docs/method.md section 3; test/* only in the last epoch, of the
    # checkpoint validation selected: `test/epoch` names its epoch
    is_last: bool
    save_checkpoint: Callable[[str | os.PathLike], Path]  # writes the full state into a directory; returns the file
    config: TrainConfig  # what trains: the config resolved against the data (auto values filled in)


@dataclass
class FitResult:
    config: TrainConfig  # resolved against the data
    best_epoch: int
    best_val: dict[str, float]  # val/* metrics of the selected epoch
    test: dict[str, float]  # test/* of the selected checkpoint
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path | None = None


DEVICES = "auto, cpu, cuda or cuda:N"


_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}


def larger_than_the_device(e: BaseException) -> str | None:
    """The reason, when `e` is an allocation larger than the device's whole memory (a space with hidden_dim up to
    1e8 asked for 12 PB: Ray retried it twice, a minute and a half on a loaded machine; and `python -m trainer`
    printed a 20-line traceback; walkthroughs), else None: what a retry or another run cannot change.
    Reads torch's messages: the CPU allocator's "you tried to allocate N bytes", CUDA's "Tried to allocate X GiB
    ... total capacity of Y GiB"."""
    import os
    import re

    text = str(e)
    cpu = re.search(r"tried to allocate (\d+) bytes", text)
    if cpu:
        need, device = int(cpu.group(1)), "this machine"
        try:
            have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    else:
        cuda = re.search(r"Tried to allocate ([\d.]+) ([KMGTP]?i?B)", text)
        total = re.search(r"total capacity of ([\d.]+) ([KMGTP]?i?B)", text)
        if not (cuda and total and cuda.group(2) in _UNITS and total.group(2) in _UNITS):
            return None
        need = float(cuda.group(1)) * _UNITS[cuda.group(2)]
        have, device = float(total.group(1)) * _UNITS[total.group(2)], "the GPU"
    if need <= have:
        return None
    return (f"the config needs {need / 2**30:,.4g} GiB in one allocation, more than {device} has in all "
            f"({have / 2**30:,.4g} GiB)")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu. Raises ConfigError for a device this machine does not have."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device}: unknown device; expected {DEVICES}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: unsupported device type {dev.type!r}; expected {DEVICES}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); "
                              "use --device cpu or auto, or install a CUDA build of torch (README)")  # fmt: skip
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def resume_config(saved: dict, requested: TrainConfig, data: AVData) -> TrainConfig:
    """The config a resumed run continues with: the checkpoint's (resolved) config, with `epochs` from
    `requested`, the one field a resume may change.

    Training longer is allowed: the learning-rate and EMA-momentum schedules are functions of the total step
    count, so from the resumed epoch on they follow the longer run's curves (the learning rate steps up to the
    longer cosine; a resumed run then equals a run started with the new epoch count only from that point on).
    Any other difference (resolved against the same data) is refused with the fields named: it would change
    the run mid-way or fail inside torch.
    """
    saved = dict(saved)
    same_length = requested.replace(epochs=saved["epochs"]).resolve(len(data.train), data.audio_dim, data.visual_dim)
    # an auto field that resolved to 0 (ema_momentum of a run of at most 10 steps) reads back as "auto": the
    # run's own 0 then, not a difference (a twice-extended short run was refused as other data)
    keys = [k for k, v in same_length.to_dict().items() if k in saved and saved[k] != v
            and not (k in AUTO_FIELDS and saved[k] == 0 and getattr(requested, k) == 0)]  # fmt: skip
    changed = [f"{k} (checkpoint {saved.get(k)!r}, now {getattr(same_length, k)!r})" for k in keys]
    resolved = [k for k in keys if (k in AUTO_FIELDS and getattr(requested, k) == 0)
                or (k == "batch_size" and requested.batch_size > len(data.train))]  # what the data decided
    if keys and resolved == keys:  # only what the trainer resolves from the data (not a --set of the user's)
        raise ConfigError(f"resume: {data.source} is not the data the run was trained on: what the trainer resolves "
                          f"from the data differs ({', '.join(changed)}); resume with the run's data (its "
                          "summary.json names it), or start a new run")  # fmt: skip
    if changed:
        # (not "resume with the run's own config.yaml" only: that file, edited since, was the cause: a walkthrough)
        raise ConfigError(f"resume: the config differs from the checkpoint's in {', '.join(changed)}; only epochs "
                          "may change when resuming. Leave out the --set or --config that gives it, or, if the run "
                          "folder's config.yaml was edited since, put back the checkpoint's values there; or start "
                          "a new run.")  # fmt: skip
    return TrainConfig.from_dict({**saved, "epochs": requested.epochs}, source="resumed config")


def _clip_shape(x: np.ndarray) -> tuple[int, ...]:
    return tuple(x.shape[1:])


def build_state(cfg: TrainConfig, data: AVData, device: torch.device) -> TrainState:
    """A freshly initialised (seeded) model, teacher, loss weighting and optimisers."""
    torch.manual_seed(cfg.seed)
    model = HSCMAE(_clip_shape(data.train.audio), _clip_shape(data.train.visual), cfg).to(device)
    teacher = make_teacher(model)
    names = cfg.active_losses()
    fixed = {"rec": cfg.w_rec, "dcca": cfg.w_dcca, "nce": cfg.w_nce, "distill": cfg.w_distill}
    # embedding distillation's reference is InfoNCE's first value (with 1 it outweighed InfoNCE and trailed fixed
    # weights; relational distillation does better with 1: docs/method.md section 2.6)
    reference_of = {"distill": "nce"} if cfg.distill == "embedding" else None
    weighting = LossWeighting(names, cfg.loss_weighting, fixed, cfg.logvar_floor, reference_of).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "pos" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.999),
    )
    weight_optimizer = (
        torch.optim.Adam([weighting.logvars], lr=cfg.weight_lr) if weighting.learned else None
    )
    return TrainState(model, teacher, weighting, optimizer, weight_optimizer)


CHECKPOINT_FORMAT = 2  # 2: config["ema_momentum"] is the starting momentum trained (1: before the auto value)


def _trained_on(ckpt: dict) -> str:
    """", which it was trained on (<data>)" where the checkpoint records its data (since 2026-12-06), else ""."""
    source = ckpt.get("data_source")
    return f" (the run was trained on {source})" if source else ""


def _check_fits(ckpt: dict, own: dict, data: AVData) -> None:
    """Refuses to resume a checkpoint whose model has other shapes than the one built for `data` (the run was
    trained on features of other dimensions), saying the dimensions of both (each encoder's learned mask fill is
    one value per input dimension), else naming the first layer that differs, instead of torch's list of size
    mismatches."""
    saved = ckpt["model"]
    here = f"{data.source} (audio {data.audio_dim}-d, visual {data.visual_dim}-d)"
    dims = [saved.get(f"{m}.mask_value") for m in ("audio", "visual")]
    if all(d is not None and d.dim() == 1 for d in dims) and [int(d.shape[0]) for d in dims] != [data.audio_dim,
                                                                                                 data.visual_dim]:
        source = f" ({ckpt['data_source']})" if ckpt.get("data_source") else ""  # (a parenthesis inside "other
        # ... than" read badly: a walkthrough)
        raise DataError(f"resume: the checkpoint was trained on audio {int(dims[0].shape[0])}-d, visual "
                        f"{int(dims[1].shape[0])}-d features{source}; {here} has other dimensions. Resume with the "
                        "data the run was trained on, or start a new run")  # fmt: skip
    for name, tensor in saved.items():
        if name in own and tuple(tensor.shape) != tuple(own[name].shape):
            raise DataError(f"resume: the checkpoint was trained on other features than {here}: its {name} is "
                            f"{list(tensor.shape)}, here {list(own[name].shape)}{_trained_on(ckpt)}. Resume with the "
                            "data the run was trained on, or start a new run")  # fmt: skip


def _saved_config(ckpt: dict, n_train: int) -> dict:
    """The checkpoint's resolved config; format-1 checkpoints trained their ema_momentum capped at 1 - 10 / steps."""
    saved = dict(ckpt["config"])
    if ckpt.get("format", 1) < 2:
        saved["ema_momentum"] = auto_ema_momentum(saved["epochs"] * (n_train // saved["batch_size"]),
                                                  ceiling=saved["ema_momentum"])  # fmt: skip
    return saved


def clamp_notes(asked: TrainConfig, cfg: TrainConfig, n_train: int) -> list[str]:
    """Values the data made smaller as the run resolved them (`TrainConfig.resolve`): said as it starts (a topk
    clamped to a small batch trained silently; only config.yaml told it, a walkthrough)."""
    notes = []
    if cfg.batch_size < asked.batch_size:
        notes.append(f"batch_size {asked.batch_size} is larger than the train split ({n_train} clips): "
                     f"batches of {cfg.batch_size}")
    if cfg.topk < asked.topk and cfg.use_nce:  # (read only by the InfoNCE loss)
        notes.append(f"topk {asked.topk} is not below the batch ({cfg.batch_size}): {cfg.topk} neighbours")
    return notes


def schedule_notes(cfg: TrainConfig) -> list[str]:
    """Warm-ups the run is too short for: said as it starts (they train, but not as their value reads)."""
    notes, run = [], f"the run ({cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''})"
    if cfg.warmup_epochs > cfg.epochs + 1e-9:  # Schedule.warmup_steps is clamped to the run's steps (1e-9: a grid's
        # 3.0000000000000004 is 3)
        notes.append(f"warmup_epochs {cfg.warmup_epochs:g} is longer than {run}: the learning rate "
                     f"rises over the whole run, reaching lr {cfg.lr:g} at its last step")
    (field, learned), = USED_ONLY_WHEN["weight_warmup_epochs"]  # (not read with fixed weights)
    if getattr(cfg, field) in learned and cfg.weight_warmup_epochs >= cfg.epochs:  # epoch > warm-up learns them
        notes.append(f"weight_warmup_epochs {cfg.weight_warmup_epochs} is not shorter than {run}: "
                     "the loss weights never learn (they keep their initial values)")
    return notes


def check_enough_to_train(data: AVData) -> None:
    """At least 8 training clips, said with the file and the carving (TrainConfig.resolve says it too, without
    either)."""
    if len(data.train) < 8:
        carved = (f" after {len(data.val)} were carved off as val (val_fraction {data.val_fraction})"
                  if data.val_carved else "")  # fmt: skip
        raise DataError(f"{data.source}: the train split has {len(data.train)} clip{'s' * (len(data.train) != 1)}"
                        f"{carved}; training needs at least 8")  # fmt: skip


def data_fingerprint(data: AVData) -> dict:
    """What a resume checks the data against: clips per split, classes, label sums, a digest of each split's labels
    clip by clip (a sum alone missed labels moved between clips: a corrected label file), and per split and
    modality a row-weighted sum of the (standardised) features with its size, and a sum weighted per clip and per
    feature by fixed pseudo-random weights (`mixed`: the row sums alone missed the same features with their
    columns in another order, and clips of one class swapped seven apart: a walkthrough). Cheap (about 0.1 s for
    VEGAS-size features, about 1 s for VEGAS-size sequences)."""
    import hashlib

    splits = (data.train, data.val, data.test)

    def weighted(a: np.ndarray) -> float:  # row weights 1..7: a plain sum of standardised train features is ~0
        rows = a.reshape(len(a), -1).sum(axis=1, dtype=np.float64)
        return float(np.dot(rows, np.arange(len(a)) % 7 + 1.0))

    def mixed(a: np.ndarray) -> float:  # weights in [1, 2) from fixed seeds: the same on every machine (PCG64)
        flat = a.reshape(len(a), -1)
        per_feature = 1.0 + np.random.default_rng(1).random(flat.shape[1])
        rows = max(1, (1 << 21) // max(1, flat.shape[1]))  # in float64 a few MB at a time (VEGAS sequences whole:
        per_clip = np.concatenate([flat[i:i + rows].astype(np.float64) @ per_feature  # 1.6 GB and 5 s: a review)
                                   for i in range(0, len(flat), rows)]) if len(flat) else np.zeros(0)  # fmt: skip
        return float(per_clip @ (1.0 + np.random.default_rng(0).random(len(a))))

    def digest(labels: np.ndarray) -> str:  # exact, whatever integer or boolean type the file stored them in
        a = np.ascontiguousarray(np.asarray(labels).astype(np.int64))
        return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()[:16]

    return {"clips": [len(s) for s in splits], "classes": data.num_classes,
            "labels": [float(np.sum(s.labels, dtype=np.float64)) for s in splits],
            "label_digests": [digest(s.labels) for s in splits],
            "features": [[weighted(a), int(a.size)] for s in splits for a in (s.audio, s.visual)],
            "mixed": [mixed(a) for s in splits for a in (s.audio, s.visual)]}  # fmt: skip


def same_data(saved: dict, now: dict) -> bool:
    """Exact on counts and labels; the feature sums within float rounding of another machine's numpy (1e-5 per
    value), far below what other clips or values change. Fingerprints from before the label digests (or the mixed
    sums) are compared without them."""
    return not differing_splits(saved, now)


def differing_splits(saved: dict, now: dict) -> list[str]:
    """The splits ("train", "val", "test") whose clips, labels or features differ between a saved fingerprint and
    this one (`same_data`'s tolerances); all three when the number of classes differs. A train split's features
    standardise all three, so other train features change every split's."""
    splits = ["train", "val", "test"]
    if saved.get("classes") != now["classes"]:
        return splits
    # the mixed sums within 1e-11 a value and 1e-5 (a few float32 ulps): features are standardised in float64 and
    # then rounded to float32, so another machine's values differ only where a float64 rounding difference crosses
    # a float32 boundary (about one value in 1e8, by one ulp: ~1e-6 in the sum) and the float64 sums by ~1e-18 a
    # value (measured across threads and CPU features); 2e-5 a value took nearly every two swapped clips of VEGAS
    # size for the same data, and 1e-9 one swap in 200 (the reviews). A linear sum misses a change that leaves it
    # within that: practically never, not provably never.
    sizes = [n for _, n in now["features"]]
    out = []
    for i, split in enumerate(splits):
        exact = [k for k in ("clips", "labels", "label_digests") if k in saved or k != "label_digests"]
        differs = any((saved.get(k) or [None] * 3)[i] != now[k][i] for k in exact)
        for j in (2 * i, 2 * i + 1):  # its audio, its visual features
            n = sizes[j]
            if "mixed" in saved and not math.isclose(saved["mixed"][j], now["mixed"][j], rel_tol=1e-12,
                                                     abs_tol=1e-11 * n + 1e-5):  # fmt: skip
                differs = True
            (x, m), (y, _) = saved["features"][j], now["features"][j]
            if m != n or not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-5 * n):
                differs = True
        if differs:
            out.append(split)
    return out


# an exported config's header line (hsc-search export-best): the fingerprint of the data its search ran on, as JSON
SEARCHED_DATA_MARK = "# the search's data (train says when --data differs): "


def searched_data(config: str | os.PathLike) -> dict | None:
    """The data fingerprint in a config file's header (`SEARCHED_DATA_MARK`), or None: no such line (a config of
    one's own, an export from before 2026-12-07), not a regular file (a pipe is read once, by the config reader),
    unreadable or mangled (the config reader says what is wrong with the file itself)."""
    path = Path(config)
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.startswith("#"):  # the header ends at the first field
                    return None
                if line.startswith(SEARCHED_DATA_MARK):
                    saved = json.loads(line[len(SEARCHED_DATA_MARK):])
                    return saved if _fingerprint_shaped(saved) else None  # (edited by hand: it crashed, reviews)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError, IndexError):
        return None
    return None


def _fingerprint_shaped(saved: object) -> bool:
    """Whether `saved` has the shape `data_fingerprint` writes (three splits; two modalities each), so `same_data`
    can compare it; optional keys (label_digests, mixed) absent or whole."""
    def numbers(v, n: int) -> bool:
        return isinstance(v, list) and len(v) == n and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                          for x in v)  # fmt: skip

    if not isinstance(saved, dict) or not isinstance(saved.get("classes"), int):
        return False
    ok = numbers(saved.get("clips"), 3) and numbers(saved.get("labels"), 3)
    ok = ok and isinstance(saved.get("features"), list) and len(saved["features"]) == 6 and all(
        numbers(f, 2) for f in saved["features"])  # fmt: skip
    ok = ok and ("mixed" not in saved or numbers(saved["mixed"], 6))
    return ok and ("label_digests" not in saved or (isinstance(saved["label_digests"], list) and len(
        saved["label_digests"]) == 3 and all(isinstance(d, str) for d in saved["label_digests"])))  # fmt: skip


def _check_same_data(ckpt: dict, data: AVData, fingerprint: dict) -> None:
    """Refuses to resume on other data than the run trained on (the same shapes, other clips or values: it would
    train on, and select its epoch over, two datasets); `fingerprint` is `data`'s. Checkpoints from before the
    fingerprint pass."""
    saved = ckpt.get("data")
    if saved is None or same_data(saved, fingerprint):
        return
    trained = _trained_on(ckpt) or " (the command that started it names it)"
    raise DataError(f"resume: the checkpoint was trained on other data than {data.source} (same feature "
                    f"dimensions, other clips, labels or values); resume with the data the run was trained on"
                    f"{trained}, or start a new run")  # fmt: skip


def _refuse_a_run_there(out: Path, resume_from: str | os.PathLike | None) -> None:
    """A new run (or a resume of another run) into a run folder that holds a trained run (its checkpoint, its
    summary, or an epoch in its metrics.jsonl): ConfigError, nothing changed. `fit(out_dir=...)` replaced such a
    run without a word, where the CLI refuses (a walkthrough); a resume of its own checkpoint is fine."""
    own = out / "checkpoint"
    if resume_from is not None and Path(resume_from).resolve() in (out.resolve(), own.resolve(),
                                                                   (own / CHECKPOINT_FILE).resolve()):  # fmt: skip
        return
    held = [n for n in ("checkpoint/" + CHECKPOINT_FILE, "summary.json") if (out / n).is_file()]
    try:
        if any(line.strip() for line in (out / "metrics.jsonl").read_text().splitlines()):
            held.append("metrics.jsonl")
    except (OSError, UnicodeDecodeError):
        pass
    if held:
        resume = f"resume it (resume_from={out}), or " if (own / CHECKPOINT_FILE).is_file() else ""
        raise ConfigError(f"out_dir {out} holds a run already ({', '.join(held)}), which this run would replace: "
                          f"{resume}give another out_dir (nothing was changed)")  # fmt: skip


def _state_dict(state: TrainState, cfg: TrainConfig, epoch: int, best: dict, history: list,
                fingerprint: dict | None = None, source: str | None = None, wall_s: float | None = None) -> dict:
    return {
        "wall_s": wall_s,  # seconds of fit() up to this save, over every resume (summary.json's wall_s)
        "format": CHECKPOINT_FORMAT,
        "data": fingerprint,
        "data_source": source,  # the data as given (a path or a synthetic spec): named when a resume is refused
        "epoch": epoch,
        "step": state.step,
        "config": cfg.to_dict(),
        "model": state.model.state_dict(),
        "teacher": state.teacher.state_dict(),
        "weighting": state.weighting.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "weight_optimizer": state.weight_optimizer.state_dict() if state.weight_optimizer else None,
        "best": best,
        "history": history,
    }


def save_state(payload: dict, directory: str | os.PathLike) -> Path:
    """Writes the checkpoint atomically into `directory`/state.pt."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # as the run's other files (mkstemp makes it 0600 whatever the umask)
        buffer = io.BytesIO()  # serialised first, written by Python: a full disk is the system's own error (ENOSPC),
        torch.save(payload, buffer)  # where torch said only "unexpected pos" (and a search took it for its trial's
        try:  # fault and failed it: a review)
            with open(tmp, "wb") as fh:
                fh.write(buffer.getbuffer())
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(target)) from None
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    for left in directory.glob("*.tmp"):  # a write cut off before (a kill): up to a checkpoint's size each
        left.unlink(missing_ok=True)
    return target


def _umask() -> int:
    """The process's umask, read without setting it (os.umask sets it, for every thread of a Ray worker)."""
    try:
        with open("/proc/self/status") as fh:
            return int(next(ln.split()[1] for ln in fh if ln.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        return 0o022


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (cut off while written, or not one). Not a DataError: in a search,
    Ray retries a trial whose checkpoint could not be read (a torn upload, a storage hiccup), as any failure."""


def load_state(path: str | os.PathLike) -> dict:
    """Reads a checkpoint file, or `state.pt` inside a directory."""
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT_FILE).exists() and (path / "checkpoint" / CHECKPOINT_FILE).is_file():
            path = path / "checkpoint"  # a run folder (what the CLI's --resume takes): its checkpoint (a walkthrough)
        path = path / CHECKPOINT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (EOFError, RuntimeError, pickle.UnpicklingError, OSError) as e:  # cut off, or not torch's format
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({first}); it was cut off while being written or is "
                        "not one: resume from another checkpoint, or start the run over") from None


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def fit(
    config: TrainConfig,
    data: AVData | str,
    *,
    on_epoch: Callable[[EpochReport], None] | None = None,
    out_dir: str | os.PathLike | None = None,
    resume_from: str | os.PathLike | None = None,
    device: str = "auto",
    log: Callable[[str], None] | None = print,
) -> FitResult:
    """Trains one configuration.

    Args:
        config: the trainer config (data-dependent fields are resolved here).
        data: an `AVData` (standardised) or a data spec for `load_data`.
        on_epoch: called once per epoch with an `EpochReport`.
        out_dir: run folder (config.yaml, metrics.jsonl, checkpoint/state.pt, summary.json); None writes nothing.
        resume_from: a checkpoint file or directory written by `EpochReport.save_checkpoint` or a run folder's
            checkpoint; training continues after its epoch and gives the same metrics as an uninterrupted run.
        device: auto, cpu, cuda or cuda:N.
        log: receives one line per epoch; None is silent.

    Returns:
        FitResult with the validation-selected epoch and its test mAP (evaluated once, after the last epoch).
    """
    t_start = time.perf_counter()
    if out_dir is not None:  # before anything is read or written
        _refuse_a_run_there(Path(out_dir), resume_from)
    dev = resolve_device(device)
    if isinstance(data, str):
        data = load_data(data, val_fraction=config.val_fraction)
    elif data.val_carved and data.val_fraction != config.val_fraction:
        raise ConfigError(
            f"val_fraction is {config.val_fraction} but the validation split of {data.source} was carved with "
            f"{data.val_fraction}: load the data with load_data(..., val_fraction={config.val_fraction})"
        )
    check_enough_to_train(data)
    ckpt = load_state(resume_from) if resume_from is not None else None
    if ckpt is None:
        cfg = config.resolve(len(data.train), data.audio_dim, data.visual_dim)
    else:
        cfg = resume_config(_saved_config(ckpt, len(data.train)), config, data)
        if cfg.epochs < ckpt["epoch"]:  # the run folder would say `epochs: 2` beside 3 epochs of metrics
            raise ConfigError(f"resume: epochs {cfg.epochs} is below the {ckpt['epoch']} epochs the checkpoint has "
                              "trained; a resume can only train on (a larger epochs, or the same to rewrite its "
                              "summary): start a new run to train fewer")  # fmt: skip
    train, val = DeviceSplit.from_split(data.train, dev), DeviceSplit.from_split(data.val, dev)
    steps_per_epoch = len(train) // cfg.batch_size
    sched = Schedule(
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=min(cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch)),
        steps_per_epoch=steps_per_epoch,
        ema_base=cfg.ema_momentum,
    )
    state = build_state(cfg, data, dev)
    names = state.weighting.names
    best: dict = {"epoch": 0, "score": -math.inf, "metrics": {}, "state": None}
    history: list[dict] = []
    start_epoch = 1
    wall_before = 0.0
    fingerprint = data_fingerprint(data)
    if ckpt is not None:
        _check_fits(ckpt, state.model.state_dict(), data)
        _check_same_data(ckpt, data, fingerprint)
        state.model.load_state_dict(ckpt["model"])
        state.teacher.load_state_dict(ckpt["teacher"])
        weighting = dict(ckpt["weighting"])
        # checkpoints from before relative weighting carry no reference: they were trained on raw losses (R = 1)
        weighting.setdefault("reference", torch.ones(len(names), device=state.weighting.reference.device))
        state.weighting.load_state_dict(weighting)
        state.optimizer.load_state_dict(ckpt["optimizer"])
        if state.weight_optimizer is not None and ckpt["weight_optimizer"] is not None:
            state.weight_optimizer.load_state_dict(ckpt["weight_optimizer"])
        state.step = ckpt["step"]
        best, history = ckpt["best"], ckpt["history"]
        # the seconds the run took before (summary.json counted this invocation's alone; a checkpoint from before
        # it was kept: the epochs' own times)
        wall_before = ckpt.get("wall_s") or sum(float(h.get("time/epoch_s", 0.0)) for h in history)
        if cfg.epochs > ckpt["epoch"]:  # an ended run trained longer: its old end's test metrics are not the run's
            history = [{k: v for k, v in h.items() if not k.startswith("test/")} for h in history]
        start_epoch = ckpt["epoch"] + 1

    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(out / "config.yaml")
        with open(out / "metrics.jsonl", "w") as fh:  # rewritten from history so a resume leaves no duplicates
            fh.writelines(json.dumps(h) + "\n" for h in history)
    if log and ckpt is not None:  # say where a resume picks up (a walkthrough: it started silently at epoch N)
        left = (f"training epochs {start_epoch}-{cfg.epochs}" if start_epoch < cfg.epochs
                else f"training epoch {cfg.epochs}" if start_epoch == cfg.epochs
                else "nothing left to train (--set epochs=N with a larger N trains on)")  # fmt: skip
        log(f"resuming after epoch {ckpt['epoch']} of {cfg.epochs} ({resume_from}): {left}")
    if log and start_epoch == 1:
        log(f"data: {data.summary()}")
        for note in data.notes:
            log(f"warning: {note}")
        for note in clamp_notes(config, cfg, len(data.train)) if ckpt is None else ():
            log(f"note: {note}")
        steps = f"{steps_per_epoch} step{'s' * (steps_per_epoch != 1)}/epoch"
        log(f"device: {dev}; losses: {', '.join(names)}; {steps} of {cfg.batch_size}")
    if log and start_epoch <= cfg.epochs:  # a resume that trains on too (its epochs may have grown: the review)
        for note in schedule_notes(cfg):
            log(f"note: {note}")

    eval_net = (lambda: state.teacher) if cfg.eval_model == "teacher" else (lambda: state.model)
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_metrics = train_one_epoch(state, train, cfg, epoch, sched)
        metrics: dict[str, float] = {"epoch": epoch}
        metrics.update({k: v for k, v in train_metrics.items() if k.startswith("loss/")})
        for n, w, s in zip(names, state.weighting.weights().tolist(), state.weighting.log_variances().tolist()):
            metrics[f"weight/{n}"] = w
            if state.weighting.learned:  # fixed weights have no s (a constant 0 read as a learned weight at rest)
                metrics[f"logvar/{n}"] = s
        metrics.update(evaluate(eval_net(), val, cfg, "val", fit_on=train))
        metrics.update(cca_spectrum(eval_net(), val, cfg))
        score = metrics[cfg.select_metric] * (1 if cfg.select_mode == "max" else -1)  # higher is better here
        if score > best["score"]:
            best = {
                "epoch": epoch,
                "score": score,
                "metrics": {k: v for k, v in metrics.items() if k.startswith("val/")},
                "state": {k: v.detach().to("cpu", copy=True) for k, v in eval_net().state_dict().items()},
            }
        is_last = epoch == cfg.epochs
        if is_last:  # test once, on the checkpoint validation selected
            selected = copy.deepcopy(eval_net())
            selected.load_state_dict(best["state"])
            test = DeviceSplit.from_split(data.test, dev)
            metrics.update(evaluate(selected, test, cfg, "test", fit_on=train))
            metrics[TEST_EPOCH] = best["epoch"]  # the epoch whose checkpoint was tested (not this one, unless best)
        metrics["time/epoch_s"] = time.perf_counter() - t0
        metrics["perf/samples_per_s"] = train_metrics["perf/samples_per_s"]
        history.append(metrics)

        payload = lambda e=epoch: _state_dict(state, cfg, e, best, history, fingerprint, data.source,  # noqa: E731
                                              wall_before + time.perf_counter() - t_start)
        if out is not None:
            save_state(payload(), out / "checkpoint")
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(metrics) + "\n")
        if log:
            log(_epoch_line(metrics, cfg.epochs))
        if on_epoch is not None:
            on_epoch(EpochReport(epoch, dict(metrics), is_last, lambda d, p=payload: save_state(p(), d), cfg))

    test_metrics = {k: v for k, v in history[-1].items() if k.startswith("test/")} if history else {}
    result = FitResult(cfg, best["epoch"], best["metrics"], test_metrics, history, out)
    if out is not None:
        summary = {
            "best_epoch": best["epoch"],
            "best_val": best["metrics"],
            "test": test_metrics,
            "epochs": cfg.epochs,
            "data": data.summary(),
            "device": str(dev),
            "wall_s": wall_before + time.perf_counter() - t_start,  # over every resume
            "versions": versions(),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if log and test_metrics:
        chosen = next(m for m in history if m["epoch"] == best["epoch"])[cfg.select_metric]
        log(
            f"selected epoch {best['epoch']} ({cfg.select_metric} {chosen:.4f}); test mAP a2v {test_metrics['test/map_a2v']:.4f} "
            f"v2a {test_metrics['test/map_v2a']:.4f} avg {test_metrics['test/map_avg']:.4f}"
        )
    return result


def _epoch_line(m: dict, epochs: int) -> str:
    losses = " ".join(f"{k[5:]} {v:.3f}" for k, v in m.items() if k.startswith("loss/") and k != "loss/total")
    return (
        f"epoch {m['epoch']:>3}/{epochs}  loss {m['loss/total']:.3f} ({losses})  "
        f"val mAP a2v {m['val/map_a2v']:.4f} v2a {m['val/map_v2a']:.4f} avg {m['val/map_avg']:.4f}  "
        f"rho_00 {m.get('cca/rho_00', float('nan')):.3f}  {m['time/epoch_s']:.1f}s"
    )

