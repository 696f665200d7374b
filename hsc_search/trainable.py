"""The Ray Tune trainable: a thin adapter from `trainer.fit` to `tune.report` with a checkpoint every epoch."""

from __future__ import annotations

import json
import logging
import tempfile
from typing import Any, Callable

import pyarrow.fs as pafs
import ray
from ray import tune

from trainer import AVData, TrainConfig, fit, load_state

log = logging.getLogger(__name__)

NODE_KEY = "hsc/node_id"
HISTORY_KEY = "hsc/history_json"  # JSON list of the metric dicts of the epochs before a restored checkpoint


def train_trial(config: dict[str, Any], data: AVData, device: str = "auto") -> None:
    """Trains one trial's configuration, reporting every epoch's metrics with a checkpoint.

    Args:
        config: a complete trainer config as a flat dict (sampled params, fixed values, epochs).
        data: the dataset, shared through Ray's object store by `tune.with_parameters`.
        device: passed to `fit` (auto picks the GPU Ray assigned, if any).

    A trial that Ray restarts after a failure (FailureConfig) or after `hsc-search resume` continues from its
    last checkpoint: `fit(resume_from=...)` gives the same metrics as an uninterrupted run.
    """
    cfg = TrainConfig.from_dict(config, source="trial config")
    node_id = ray.get_runtime_context().get_node_id()

    def on_epoch(report) -> None:
        report.metrics[NODE_KEY] = node_id  # the Ray node this epoch ran on (tagged in MLflow)
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
    restore then fails the trial ("does not exist on storage anymore") on every retry. This class restores
    from the newest checkpoint of the same trial that is still there and readable instead (every one is a
    valid state: a resumed run repeats the uninterrupted one exactly), or starts the trial over when none is.
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
    """`result` (Ray's checkpoint + metrics record) when its checkpoint exists; else the same record pointing at
    the newest complete sibling `checkpoint_*` folder of the trial; None when there is none."""
    ckpt = getattr(result, "checkpoint", None)
    if ckpt is None:
        return result
    fs = ckpt.filesystem
    if fs.get_file_info(ckpt.path).type != pafs.FileType.NotFound:
        return result
    trial_dir = ckpt.path.rstrip("/").rsplit("/", 1)[0]
    siblings = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    names = sorted((i.path for i in siblings if i.type == pafs.FileType.Directory
                    and i.base_name.startswith("checkpoint_")), reverse=True)  # fmt: skip
    for path in names:
        candidate = tune.Checkpoint(path, filesystem=fs)
        try:
            with candidate.as_directory() as d:
                load_state(d)  # complete and readable (a driver killed mid-upload can leave a torn one)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped the same way
            log.warning("checkpoint %s is not usable (%s); trying an older one", path, e)
            continue
        log.warning("checkpoint %s is gone (deleted after Ray's last experiment snapshot); restoring from %s",
                    ckpt.path, path)  # fmt: skip
        return type(result)(checkpoint=candidate, metrics=getattr(result, "metrics", {}))
    log.warning("checkpoint %s is gone and the trial has no other; it starts over", ckpt.path)
    return None
