"""The Ray Tune trainable: a thin adapter from `trainer.fit` to `tune.report` with a checkpoint every epoch."""

from __future__ import annotations

import json
import logging
import tempfile
from typing import Any, Callable

import pyarrow.fs as pafs
import ray
from ray import tune

from trainer import AVData, ConfigError, DataError, NonFiniteLossError, TrainConfig, fit, load_state

from .runs import EFFECTIVE_KEY, FAILED_KEY, NODE_KEY

log = logging.getLogger(__name__)

HISTORY_KEY = "hsc/history_json"  # JSON list of the metric dicts of the epochs before a restored checkpoint
DETERMINISTIC = (NonFiniteLossError, ConfigError, DataError)  # the same config fails the same way again


def train_trial(config: dict[str, Any], data: AVData, metric: str = "val/map_avg", device: str = "auto") -> None:
    """Trains one trial's configuration, reporting every epoch's metrics with a checkpoint.

    Args:
        config: a complete trainer config as a flat dict (sampled params, fixed values, epochs).
        data: the dataset, shared through Ray's object store by `tune.with_parameters`.
        metric: the search's objective (a failure report carries it as NaN, as Ray requires every report to).
        device: passed to `fit` (auto picks the GPU Ray assigned, if any).

    A trial that Ray restarts after a failure (FailureConfig) or after `hsc-search resume` continues from its
    last checkpoint: `fit(resume_from=...)` gives the same metrics as an uninterrupted run. A failure that a
    retry would only repeat (divergence, an invalid config or data) is not raised to Ray, which would retry it:
    the trial reports `FAILED_KEY` with the one-line reason and ends.
    """
    try:
        _train(config, data, device)
    except DETERMINISTIC as e:
        reason = " ".join(str(e).split())
        tune.report({metric: float("nan"), FAILED_KEY: f"{type(e).__name__}: {reason}"})


def _train(config: dict[str, Any], data: AVData, device: str) -> None:
    cfg = TrainConfig.from_dict(config, source="trial config")
    node_id = ray.get_runtime_context().get_node_id()
    first = [True]

    def on_epoch(report) -> None:
        report.metrics[NODE_KEY] = node_id  # the Ray node this epoch ran on (tagged in MLflow)
        if first[0]:  # values the trainer resolved itself (auto fields, a batch clamped to the data): logged once
            first[0] = False
            raw = cfg.to_dict()
            effective = {k: v for k, v in report.config.to_dict().items() if k != "epochs" and raw[k] != v}
            report.metrics[EFFECTIVE_KEY] = json.dumps(effective)
        with tempfile.TemporaryDirectory(prefix="hsc-ckpt-") as d:
            report.save_checkpoint(d)
            tune.report(report.metrics, checkpoint=tune.Checkpoint.from_directory(d))

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        fit(cfg, data, on_epoch=on_epoch, device=device, log=None)
        return
    with checkpoint.as_directory() as d:
        # The epochs before the checkpoint ride along with the first report after a restore, so the driver can
        # log any it never received (a driver killed with epochs still queued for MLflow).
        earlier = load_state(d)["history"]
        first = [True]

        def on_epoch_after_restore(report) -> None:
            if first[0]:
                report.metrics[HISTORY_KEY] = json.dumps(earlier)
                first[0] = False
            on_epoch(report)

        fit(cfg, data, on_epoch=on_epoch_after_restore, resume_from=d, device=device, log=None)


def restorable_trainable(fn: Callable, name: str = "train_trial") -> type:
    """Ray's function trainable for `fn`, whose restore survives a checkpoint that Ray deleted.

    Ray keeps `num_to_keep` checkpoints per trial and deletes older ones as new ones arrive, but its experiment
    snapshot (what `Tuner.restore` reads) is written only every few checkpoints. A driver killed between a
    deletion and the next snapshot leaves a snapshot naming a checkpoint that no longer exists, and Ray's own
    restore then fails the trial ("does not exist on storage anymore") on every retry. This class puts the
    trial's newest readable checkpoint back at the missing path first (every checkpoint is a valid state: a
    resumed run repeats the uninterrupted one exactly), or starts the trial over when there is none.
    """
    from ray.tune.trainable.function_trainable import wrap_function

    class Trainable(wrap_function(fn)):
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
    record's `training_iteration` is set to that epoch. None when no sibling loads."""
    ckpt = getattr(result, "checkpoint", None)
    if ckpt is None:
        return result
    fs = ckpt.filesystem
    if fs.get_file_info(ckpt.path).type != pafs.FileType.NotFound:
        return result
    trial_dir = ckpt.path.rstrip("/").rsplit("/", 1)[0]
    siblings = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    best = None  # (epoch, path)
    for info in siblings:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        try:
            with tune.Checkpoint(info.path, filesystem=fs).as_directory() as d:
                epoch = int(load_state(d)["epoch"])  # complete and readable (a kill mid-upload can tear one)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped the same way
            log.warning("checkpoint %s is not usable (%s)", info.path, e)
            continue
        if best is None or epoch > best[0]:  # by content, not name: names restart after a fallback
            best = (epoch, info.path)
    if best is None:
        log.warning("checkpoint %s is gone and the trial has no other; it starts over", ckpt.path)
        return None
    log.warning("checkpoint %s is gone (deleted after Ray's last experiment snapshot); restoring epoch %d from %s",
                ckpt.path, best[0], best[1])  # fmt: skip
    fs.create_dir(ckpt.path, recursive=True)
    pafs.copy_files(best[1], ckpt.path, source_filesystem=fs, destination_filesystem=fs)
    metrics = {**(getattr(result, "metrics", None) or {}), "training_iteration": best[0]}  # one report per epoch
    return type(result)(checkpoint=ckpt, metrics=metrics)
