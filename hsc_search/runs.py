"""The MLflow layout of a search (tag names) and the lookups on it. No Ray here: `export-best` stays quick."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

TAG_TRIAL = "hsc.trial_id"
TAG_OUTCOME = "hsc.outcome"  # completed | stopped_early | failed | interrupted
TAG_NODE = "hsc.node"
TAG_ERROR = "hsc.error"
TAG_KIND = "hsc.kind"  # search | trial
TAG_PARENT = "mlflow.parentRunId"
CONFIG_ARTIFACT = "config.yaml"
PLOT_KEYS = ("weight/", "logvar/", "cca/rho_")
# Result keys the trainable adds to the trainer's metrics (strings, never logged as metrics):
NODE_KEY = "hsc/node_id"  # the Ray node an epoch ran on
FAILED_KEY = "hsc/failed"  # "<ErrorType>: message" of a trial that failed in a way a retry cannot fix
EFFECTIVE_KEY = "hsc/effective_json"  # first report: {field: value} the trainer resolved differently from the config


def trial_outcome(status: str, last_result: dict | None, max_epochs: int) -> str:
    """What became of a trial, from Ray's status and its last result: completed | stopped_early | failed |
    unfinished. The one definition used by the progress lines, MLflow tags, the trials table and Optuna.

    A trial that reported `FAILED_KEY` ended without an error on Ray's side (so that Ray does not retry a
    deterministic failure) but failed; one that ended before `max_epochs` was stopped early (ASHA).
    """
    last = last_result or {}
    if status == "ERROR" or FAILED_KEY in last:
        return "failed"
    if status != "TERMINATED":
        return "unfinished"
    return "stopped_early" if int(last.get("epoch", 0)) < max_epochs else "completed"


def client_for(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def retry(fn: Callable[[], Any], what: str, attempts: int = 8, first_wait: float = 0.5, max_wait: float = 15.0):
    """Calls fn, retrying with exponential back-off (0.5, 1, 2, ... s, capped) on any exception."""
    wait = first_wait
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:  # the server may be briefly unreachable; everything else fails the same way again
            if attempt == attempts:
                raise
            log.warning("mlflow: %s failed (%s); retry %d/%d in %.1fs", what, e, attempt, attempts - 1, wait)
            time.sleep(wait)
            wait = min(wait * 2, max_wait)


def find_child_run(client, experiment_id: str, parent_run_id: str, trial_id: str):
    """The child run of `parent_run_id` tagged with `trial_id`, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.`{TAG_TRIAL}` = '{trial_id}'",
        max_results=5,
    )
    return runs[0] if runs else None


def child_runs(client, experiment_id: str, parent_run_id: str) -> list:
    """All trial runs of one search."""
    out, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'", max_results=1000,
            page_token=token,
        )  # fmt: skip
        out.extend(page)
        token = page.token
        if not token:
            return out
