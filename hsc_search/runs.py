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
CCA_SPECTRUM_ARTIFACT = "cca_spectrum.csv"  # a trial's every canonical correlation, one row per epoch
REPORT_ARTIFACT = "report.html"  # the search report, on the parent run
PLOT_KEYS = ("weight/", "logvar/", "cca/rho_")
CCA_TOP_METRICS = 3  # cca/rho_00 .. cca/rho_02 go to MLflow as metrics (and cca/mean); the rest to the artifact

# What MLflow 3.17's UI reads from an experiment (checked in its JS bundle): `mlflow.experimentKind` is the
# experiment's kind (model training, not GenAI); the primary metric gets a chart in the experiment's chart view.
# The 3.17 UI picks GenAI or model-training *pages* from its own switch (top left, remembered by the browser,
# default GenAI) or the URL's `workflowType`, so the links we print carry `?workflowType=machine_learning`.
EXPERIMENT_KIND = "mlflow.experimentKind"
PRIMARY_METRIC = "mlflow.experiment.primaryMetric.name"
PRIMARY_METRIC_GREATER = "mlflow.experiment.primaryMetric.greaterIsBetter"
UI_QUERY = "?workflowType=machine_learning"


def client_for(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def tag_experiment(client, experiment_id: str, metric: str, mode: str) -> None:
    """Marks an existing experiment as model training with `metric` as its primary metric."""
    have = client.get_experiment(experiment_id).tags
    for k, v in experiment_tags(metric, mode).items():
        if have.get(k) != v:
            client.set_experiment_tag(experiment_id, k, v)


def experiment_tags(metric: str, mode: str) -> dict[str, str]:
    """The tags a new experiment is created with (see `tag_experiment`)."""
    return {EXPERIMENT_KIND: "custom_model_development", PRIMARY_METRIC: metric,
            PRIMARY_METRIC_GREATER: "true" if mode == "max" else "false"}  # fmt: skip


def ui_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment (or of one run), opened in model-training mode."""
    page = f"{base.rstrip('/')}/#/experiments/{experiment_id}"
    return (page + f"/runs/{run_id}" if run_id else page) + UI_QUERY


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
