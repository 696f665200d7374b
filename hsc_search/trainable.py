"""The Ray Tune trainable: a thin adapter from `trainer.fit` to `tune.report`, reporting (with a checkpoint) at
the scheduler's milestones, every `checkpoint_every_s` seconds and at the end, not every epoch."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow.fs as pafs
import ray
import torch
from ray import tune

from trainer import AVData, ConfigError, DataError, NonFiniteLossError, TrainConfig, fit, load_state
from trainer.fit import larger_than_the_device

from .runs import EFFECTIVE_KEY, EPOCHS_KEY, FAILED_KEY, NODE_KEY

log = logging.getLogger(__name__)

DETERMINISTIC = (NonFiniteLossError, ConfigError, DataError)  # the same config fails the same way again


CHECKPOINT_EVERY_S = 30.0  # default of the search setting checkpoint_every_s
REPORT_FILE = "hsc_report.json"  # in each checkpoint: the Ray report count it was saved with


def train_trial(config: dict[str, Any], data: AVData, metric: str = "val/map_avg", device: str = "auto",
                report_at: tuple[int, ...] = (), checkpoint_every_s: float = CHECKPOINT_EVERY_S,
                threads: int = 1) -> None:  # fmt: skip
    """Trains one trial's configuration, reporting to Ray (with a checkpoint) only when the search needs it.

    Args:
        config: a complete trainer config as a flat dict (sampled params, fixed values, epochs).
        data: the dataset, shared through Ray's object store by `tune.with_parameters`.
        metric: the search's objective (a failure report carries it as NaN, as Ray requires every report to).
        device: passed to `fit` (auto picks the GPU Ray assigned, if any).
        report_at: epochs at which the scheduler decides (ASHA's rung milestones).
        checkpoint_every_s: also report once this many seconds of training passed since the last report.
        threads: torch's CPU threads (the trial's CPUs). Set here, not left to Ray's `OMP_NUM_THREADS`: a worker
            that preloaded torch (`ray_internals.preload_system_config`) sized its thread pool before Ray set it,
            and two 2-thread trials on 2 cores ran tiny epochs 10x slower.

    A report goes to Ray at the epochs of `report_at`, after `checkpoint_every_s` seconds of training, and
    after the last epoch; it carries the latest epoch's metrics (what ASHA and Ray see) and, under
    `EPOCHS_KEY`, every epoch since the previous report (what Optuna and MLflow get), with a checkpoint. Each
    report costs a checkpoint and a round trip through the driver, so short epochs no longer pay them each.
    A trial that Ray restarts after a failure (FailureConfig) or after `hsc-search resume` continues from its
    last checkpoint and recomputes the epochs since (deterministically: the same metrics as an uninterrupted
    run). A failure that a retry would only repeat (divergence, an invalid config or data, one allocation larger
    than the device's whole memory) is not raised to Ray, which would retry it: the trial reports `FAILED_KEY`
    with the one-line reason and ends.
    """
    torch.set_num_threads(max(1, int(threads)))
    pending: list[dict] = []  # the epochs trained since the trial's last report
    try:
        _train(config, data, device, frozenset(report_at), checkpoint_every_s, pending)
    except DETERMINISTIC as e:
        reason = "; ".join(" ".join(line.split()) for line in str(e).splitlines() if line.strip())
        _report_failure(metric, f"{type(e).__name__}: {reason}", pending)
    except RuntimeError as e:  # torch's out-of-memory errors included (torch.OutOfMemoryError is one)
        beyond = larger_than_the_device(e)
        if beyond is None:  # memory that other trials held, a lost device: a retry may succeed
            raise
        _report_failure(metric, f"{type(e).__name__}: {beyond}: a retry would fail the same way; a smaller model or "
                                "batch (the space's ranges) fits", pending)  # fmt: skip


def _report_failure(metric: str, reason: str, pending: list[dict]) -> None:
    """The trial's last report: `FAILED_KEY` with the reason, and the epochs it trained since its previous report
    (under `EPOCHS_KEY`, no checkpoint: MLflow logs them, so the curve up to a divergence is there; they were
    dropped, and the report said a trial that diverged at epoch 4 of a FIFO search ended before its first epoch).
    No top-level epoch: ASHA and Ray do not take a failure for an epoch's result."""
    metrics = {metric: float("nan"), FAILED_KEY: reason, NODE_KEY: ray.get_runtime_context().get_node_id()}
    if pending:
        metrics[EPOCHS_KEY] = json.dumps(pending)
    tune.report(metrics)


def _train(config: dict[str, Any], data: AVData, device: str, report_at: frozenset, every_s: float,
           pending: list[dict]) -> None:  # fmt: skip
    """`pending`: filled with the epochs not yet reported (what a failure report carries)."""
    cfg = TrainConfig.from_dict(config, source="trial config")
    node_id = ray.get_runtime_context().get_node_id()
    checkpoint = tune.get_checkpoint()
    state = {"reports": 0, "since": time.monotonic(), "effective": True}
    stack = contextlib.ExitStack()
    resume_dir = None
    if checkpoint is not None:
        resume_dir = stack.enter_context(checkpoint.as_directory())  # local (a copy when the storage is remote)
        # The epochs before the checkpoint ride along with the first report after a restore, so the driver can
        # log any it never received (a driver killed with epochs still queued for MLflow); it skips known ones.
        pending.extend(load_state(resume_dir)["history"])
        state["reports"] = _report_count(resume_dir)

    def on_epoch(report) -> None:
        pending.append(report.metrics)
        due = report.is_last or report.epoch in report_at or time.monotonic() - state["since"] >= every_s
        if not due:
            return
        metrics = dict(report.metrics)  # the latest epoch: what ASHA, Ray and the progress line see
        metrics[EPOCHS_KEY] = json.dumps(pending)
        metrics[NODE_KEY] = node_id  # the Ray node these epochs ran on (tagged in MLflow)
        if state["effective"]:  # values the trainer resolved itself (auto fields, a clamped batch): once per run
            state["effective"] = False
            metrics[EFFECTIVE_KEY] = json.dumps(effective_values(cfg.to_dict(), report.config.to_dict()))
        state["reports"] += 1
        with tempfile.TemporaryDirectory(prefix="hsc-ckpt-") as d:
            report.save_checkpoint(d)
            Path(d, REPORT_FILE).write_text(json.dumps({"training_iteration": state["reports"]}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        pending.clear()
        state["since"] = time.monotonic()

    with stack:
        fit(cfg, data, on_epoch=on_epoch, resume_from=resume_dir, device=device, log=None)


def effective_values(given: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    """What the trainer resolved itself (`TrainConfig.resolve`: auto fields, a batch clamped to the train split):
    the trained values that differ from the given ones, and every auto field given as 0, even one that resolved to
    0.0 (an ema_momentum of a run too short for an average: the teacher is a copy of the student)."""
    from trainer.config import AUTO_FIELDS

    return {k: v for k, v in trained.items()
            if k != "epochs" and (given[k] != v or k in AUTO_FIELDS and given[k] == 0)}  # fmt: skip


def _report_count(checkpoint_dir: str) -> int:
    """The number of reports a trial had made when this checkpoint was saved (checkpoints from before
    `REPORT_FILE` were saved one per epoch, so their epoch is that count)."""
    path = Path(checkpoint_dir, REPORT_FILE)
    if path.exists():
        return int(json.loads(path.read_text())["training_iteration"])
    return int(load_state(checkpoint_dir)["epoch"])


def restorable_trainable(fn: Callable, name: str = "train_trial") -> type:
    """Ray's function trainable for `fn`, whose restore survives a checkpoint that Ray deleted.

    Ray keeps `num_to_keep` checkpoints per trial and deletes older ones as new ones arrive, but its experiment
    snapshot (what `Tuner.restore` reads) is written only every few checkpoints. A driver killed between a
    deletion and the next snapshot leaves a snapshot naming a checkpoint that no longer exists, and Ray's own
    restore then fails the trial ("does not exist on storage anymore") on every retry. This class puts the
    trial's newest readable checkpoint back at the missing path first (every checkpoint is a valid state: a
    resumed run repeats the uninterrupted one exactly), or starts the trial over when there is none.
    """
    from .ray_internals import function_trainable

    class Trainable(function_trainable(fn)):
        def restore(self, checkpoint_path):
            usable = usable_checkpoint(checkpoint_path)
            if usable is None:  # nothing left to continue from: train from epoch 1 (same seed, same metrics)
                return None
            return super().restore(usable)

    Trainable.__name__ = Trainable.__qualname__ = name
    return Trainable


def usable_checkpoint(result):
    """`result` (Ray's checkpoint + metrics record) when its checkpoint exists. When it is gone, the trial's
    sibling `checkpoint_*` folder with the latest epoch that loads is copied to the missing path, so that Ray's
    own bookkeeping (the paths it later deletes, the index it numbers new checkpoints by) stays true, and the
    record's `training_iteration` is set to that checkpoint's report count. None when no sibling loads.

    A sibling of the trial's last epoch is passed over: restored, it leaves nothing to train, so the trial would
    never report again and Ray would end it with the older result of its snapshot (a trial that had completed,
    its driver killed just after, came back as stopped by ASHA at that older epoch, and was told to Optuna as
    pruned). An earlier one recomputes the last epochs exactly, and their reports."""
    ckpt = getattr(result, "checkpoint", None)
    if ckpt is None:
        return result
    fs = ckpt.filesystem
    if fs.get_file_info(ckpt.path).type != pafs.FileType.NotFound:
        return result
    trial_dir = ckpt.path.rstrip("/").rsplit("/", 1)[0]
    siblings = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    best = None  # (epoch, path, report count)
    for info in siblings:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        try:
            with tune.Checkpoint(info.path, filesystem=fs).as_directory() as d:
                saved = load_state(d)  # complete and readable (a kill mid-upload can tear one)
                epoch, reports = int(saved["epoch"]), _report_count(d)
                last = (saved.get("config") or {}).get("epochs")
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped the same way
            log.warning("checkpoint %s is not usable (%s)", info.path, e)
            continue
        if last is not None and epoch >= int(last):
            continue
        if best is None or epoch > best[0]:  # by content, not name: names restart after a fallback
            best = (epoch, info.path, reports)
    if best is None:
        log.warning("checkpoint %s is gone and no other of the trial's checkpoints before its last epoch loads; it "
                    "starts over (the same metrics again)", ckpt.path)  # fmt: skip
        return None
    log.warning("checkpoint %s is gone (deleted after Ray's last experiment snapshot); restoring epoch %d from %s",
                ckpt.path, best[0], best[1])  # fmt: skip
    fs.create_dir(ckpt.path, recursive=True)
    pafs.copy_files(best[1], ckpt.path, source_filesystem=fs, destination_filesystem=fs)
    metrics = {**(getattr(result, "metrics", None) or {}), "training_iteration": best[2]}
    return type(result)(checkpoint=ckpt, metrics=metrics)
