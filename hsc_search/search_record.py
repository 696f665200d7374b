"""A finished (or interrupted) search read back from MLflow alone: what the report draws.

Everything comes from what MLflow holds for any search, including ones made before the report existed: the
parent run (params = the search settings, artifacts `search_space.yaml` and `asha_rungs.json`), its child runs
(tags, params, metric histories with their timestamps) and, for the best trial, its `cca_spectrum.csv` artifact
when there is one (searches before it have every `cca/rho_*` as a metric instead). No Ray here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .export import TrialRow, best_row, start_order, trial_rows
from .runs import CCA_SPECTRUM_ARTIFACT, TAG_KIND, TAG_NOTES, TAG_RAY_AUTH, TAG_SET_FROM, search_status

log = logging.getLogger(__name__)

Curve = list[tuple[int, float, int]]  # (epoch, value, timestamp ms), by epoch


class RecordError(ValueError):
    """The run is not a search, or MLflow cannot be read; the message says which."""


@dataclass
class Trial:
    """One trial: its row (outcome, score, params) and the objective's value per epoch."""

    row: TrialRow
    start_time: int  # ms; the order trials were started in
    curve: Curve


@dataclass
class SearchRecord:
    parent_run_id: str
    experiment_id: str
    name: str
    settings: dict[str, str]  # the parent's params (the search settings, as strings)
    metric: str
    mode: str
    max_epochs: int | None
    trials: list[Trial]  # in the order proposed (export.start_order)
    best: Trial | None
    milestones: list[float]  # ASHA rungs (epochs; 2.5 for a fractional one), lowest first; empty for FIFO or unknown
    space: dict[str, Any] | None  # search_space.yaml, if logged
    best_history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # weight/, logvar/, cca/ keys
    best_spectrum: dict[int, list[float]] = field(default_factory=dict)  # epoch -> every canonical correlation
    spectrum_whole: bool = True  # False: read from the cca/rho_* metrics, the first few (no cca_spectrum.csv yet)
    notes: list[str] = field(default_factory=list)  # what the search's start said (its notes), as lines
    set_where: str = ""  # where its set.* values were given (tag hsc.set_from; searches before it: not known)
    status: str = "FINISHED"  # the parent run's MLflow status
    experiment_dir: str | None = None  # the search's folder (tag hsc.experiment_dir)
    ray_auth_mode: str | None = None  # the RAY_AUTH_MODE it ran with (runs.TAG_RAY_AUTH), for its resume command
    # the parent run's status read again (driver.search_state: a search its driver finished while it was read)
    status_now: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    # what the report said of a search that has not finished (report._unfinished, once: the console says the same)
    said: str | None = field(default=None, compare=False)


def read_search(client, parent_run_id: str) -> SearchRecord:
    """Reads one search (its parent run and every child run) back from MLflow."""
    parent = client.get_run(parent_run_id)
    if parent.data.tags.get(TAG_KIND) != "search":
        raise RecordError(f"run {parent_run_id} is not a hsc-search search (no tag {TAG_KIND}=search)")
    experiment_id = parent.info.experiment_id
    settings = dict(parent.data.params)
    metric = settings.get("metric", "val/map_avg")
    mode = settings.get("mode", "max")
    max_epochs = _int(settings.get("max_epochs"))

    rows = trial_rows(client, experiment_id, parent_run_id, metric, mode)
    trials = []
    for row in rows:
        history = client.get_metric_history(row.run_id, metric)
        curve = sorted((int(m.step), float(m.value), int(m.timestamp)) for m in history if math.isfinite(m.value))
        trials.append(Trial(row, int(row.start_time or 0), curve))
    key = start_order(rows)
    trials.sort(key=lambda t: key(t.row))
    best_row_ = best_row(rows, mode)
    best = next((t for t in trials if best_row_ is not None and t.row.run_id == best_row_.run_id), None)

    record = SearchRecord(
        parent_run_id=parent_run_id,
        experiment_id=experiment_id,
        name=parent.info.run_name or parent_run_id,
        settings=settings,
        metric=metric,
        mode=mode,
        max_epochs=max_epochs,
        trials=trials,
        best=best,
        milestones=_milestones(client, parent_run_id, settings),
        space=_yaml_artifact(client, parent_run_id, "search_space.yaml"),
        notes=_notes(parent.data.tags.get(TAG_NOTES)),
        set_where=parent.data.tags.get(TAG_SET_FROM, ""),
        status=search_status(parent),
        experiment_dir=parent.data.tags.get("hsc.experiment_dir"),
        ray_auth_mode=parent.data.tags.get(TAG_RAY_AUTH),
        status_now=lambda: search_status(client.get_run(parent_run_id)),
    )
    if best is not None:
        record.best_history = _plot_histories(client, best.row)
        record.best_spectrum, record.spectrum_whole = _spectrum(client, best.row.run_id, record.best_history)
    return record


def _notes(text: str | None) -> list[str]:
    try:
        notes = json.loads(text) if text else []
    except ValueError:
        return []
    return [str(n) for n in notes] if isinstance(notes, list) else []


def _int(v: Any) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _artifact_text(client, run_id: str, path: str) -> str | None:
    """An artifact's text, or None if the run has no such artifact."""
    import tempfile

    try:
        if not any(f.path == path for f in client.list_artifacts(run_id, str(Path(path).parent).strip("."))):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, path, tmp)).read_text()
    except Exception as e:  # an artifact store that cannot be read is not a reason to draw nothing
        log.warning("could not read artifact %s of run %s: %s", path, run_id, e)
        return None


def _yaml_artifact(client, run_id: str, path: str) -> dict | None:
    text = _artifact_text(client, run_id, path)
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return None
    return value if isinstance(value, dict) else None


def _milestones(client, parent_run_id: str, settings: dict[str, str]) -> list[float]:
    """ASHA's rungs in epochs: from `asha_rungs.json` (what the scheduler used), else from the settings."""
    text = _artifact_text(client, parent_run_id, "asha_rungs.json")
    max_t = _int(settings.get("max_epochs"))
    if text:
        try:
            state = json.loads(text)
            # Ray's top rung is max_epochs itself, where every trial ends anyway: no cut, not drawn as one
            # where Ray puts them: a fractional rung (reduction factor 2.5) between its epochs (it was drawn at the
            # epoch below, where no trial was judged), an integer one as such
            return sorted({_epochs(m) for bracket in state.get("milestones", []) for m in bracket
                           if not max_t or float(m) < max_t})  # fmt: skip
        except (ValueError, TypeError, AttributeError):
            pass
    if settings.get("scheduler", "asha") != "asha":
        return []
    grace, rf = _int(settings.get("grace_period")), settings.get("reduction_factor")
    try:
        rf = float(rf)
    except (TypeError, ValueError):
        return []
    if not grace or not max_t or rf <= 1:
        return []
    # Ray's ASHA: milestones grace * rf^k below max_t
    out, k = [], 0
    while grace * rf**k < max_t:
        out.append(_epochs(grace * rf**k))
        k += 1
    return sorted(set(out))


def _epochs(m) -> float:
    """A rung's epochs as drawn and labelled: 2 (not 2.0), 2.5."""
    return int(m) if float(m).is_integer() else float(m)


def _plot_histories(client, row: TrialRow) -> dict[str, list[tuple[int, float]]]:
    keys = [k for k in row.final if k.startswith(("weight/", "logvar/", "cca/"))]
    return {k: sorted((int(m.step), float(m.value)) for m in client.get_metric_history(row.run_id, k)) for k in keys}


def _spectrum(client, run_id: str, histories: dict[str, list[tuple[int, float]]]) -> tuple[dict[int, list[float]],
                                                                                            bool]:  # fmt: skip
    """epoch -> canonical correlations, largest first, and whether that is the whole spectrum: the trial's
    `cca_spectrum.csv` (True), else its `cca/rho_*` metric histories, the first few (a trial that has not ended:
    the file is uploaded at its end; searches made before the spectrum moved to an artifact)."""
    text = _artifact_text(client, run_id, CCA_SPECTRUM_ARTIFACT)
    if text:
        out = {}
        for rec in csv.DictReader(io.StringIO(text)):
            epoch = int(rec.pop("epoch"))
            out[epoch] = [float(v) for _, v in sorted(rec.items()) if v not in ("", None)]
        return out, True
    rho = sorted(k for k in histories if k.startswith("cca/rho_"))
    out: dict[int, list[float]] = {}
    for k in rho:
        for epoch, v in histories[k]:
            out.setdefault(epoch, []).append(v)
    return out, False
