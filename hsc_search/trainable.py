"""The Ray Tune trainable: a thin adapter from `trainer.fit` to `tune.report` with a checkpoint every epoch."""

from __future__ import annotations

import json
import tempfile
from typing import Any

import ray
from ray import tune

from trainer import AVData, TrainConfig, fit, load_state

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
