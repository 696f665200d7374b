"""Ranking a search's trials from MLflow and exporting the best one's trainer config.

A trial's score is the best value of the metric over its epochs (max or min by mode): the score of the
checkpoint the trainer itself selects, and what Optuna was told. Trials that failed are never chosen.
The exported file is the trial's complete trainer config as searched (its `config.yaml` artifact: automatic
values still 0, which the trainer resolves on the data again), which `python -m trainer --config` accepts as is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from trainer import ConfigError, TrainConfig

from .settings import SearchSettings, usual_mode

from .runs import (
    CONFIG_ARTIFACT,
    TAG_DATA_FINGERPRINT,
    TAG_ERROR,
    TAG_NUMBER,
    TAG_STOPPED_BY,
    TAG_OUTCOME,
    TAG_TRIAL,
    TRIAL_SECONDS,
    StoreError,
    best_of,
    check_store_to_read,
    child_runs,
    client_for,
    http_failure,
    latest_search,
    missing_artifact_dir,
    moved_store_hint,
    out_file_problem,
    plural,
    score_key,
    search_status,
    served_artifacts_problem,
)
from .runs import META_FILE, TAG_RAY_AUTH
from .runs import search_of as _search_of


class ExportError(ValueError):
    """Nothing to export: unknown experiment or run, no finished trial, metric never logged."""


@dataclass
class TrialRow:
    """One trial of a search as MLflow holds it."""

    run_id: str
    trial_id: str
    name: str
    outcome: str
    status: str
    epochs: int
    seconds: float | None
    score: float | None  # best value of the ranking metric over epochs
    params: dict[str, str] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)  # last logged value of every metric
    start_time: int | None = None  # ms since the epoch; trials in this order are in the order they started
    error: str | None = None  # why a failed trial failed (its tag hsc.error)
    number: int | None = None  # Ray's count of the trial (tag hsc.trial_number; searches since 2026-12-06)
    stopped_by: str | None = None  # why ASHA stopped it (its tag hsc.stopped_by; searches since 2026-12-06)


def find_experiment_id(client, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ExportError(f"MLflow experiment '{experiment}' not found; experiments: {', '.join(names) or 'none'}")
    return exp.experiment_id


def latest_parent_run(client, experiment_id: str, experiment: str | None = None) -> str:
    """The most recently started search of the experiment that has trial runs (`runs.latest_search`)."""
    try:
        return latest_search(client, experiment_id, experiment)
    except StoreError as e:
        raise ExportError(str(e)) from None


def search_of(client, run_id: str, tracking_uri: str | None, experiment: str | None = None) -> tuple[str, str]:
    """(run id, experiment id) of a search given by `--run-id` (`runs.search_of`); `experiment`, when given too, must
    be the run's (it was ignored silently)."""
    try:
        pid, experiment_id = _search_of(client, run_id, tracking_uri)
    except StoreError as e:
        raise ExportError(str(e)) from None
    if experiment is not None:
        try:
            name = client.get_experiment(experiment_id).name
        except Exception as e:  # the store failed: one line
            raise ExportError(f"cannot read the experiment of run '{pid}': {http_failure(e)}") from None
        if name != experiment:
            raise ExportError(f"--run-id {pid} is a search in MLflow experiment '{name}', not '{experiment}'; give "
                              f"--experiment {shlex.quote(name)} or leave it out")  # fmt: skip
    return pid, experiment_id


def trial_rows(client, experiment_id: str, parent_run_id: str, metric: str, mode: str) -> list[TrialRow]:
    """Every trial of the search, with its score under `metric`/`mode` (None if never logged)."""
    rows = []
    for run in child_runs(client, experiment_id, parent_run_id):
        score = run.data.metrics.get(score_key(metric, mode))  # logged when the trial ended (MlflowTracker)
        if score is None or not math.isfinite(score):  # older searches, another metric, an interrupted trial
            score = best_of((m.value for m in client.get_metric_history(run.info.run_id, metric)), mode)
        end, start = run.info.end_time, run.info.start_time
        rows.append(
            TrialRow(
                run_id=run.info.run_id,
                trial_id=run.data.tags.get(TAG_TRIAL, ""),
                name=run.info.run_name or "",
                outcome=run.data.tags.get(TAG_OUTCOME, "unknown"),
                status=run.info.status,
                epochs=int(run.data.metrics.get("epoch", 0)),
                seconds=run.data.metrics.get(TRIAL_SECONDS, (end - start) / 1000 if end and start else None),
                score=score,
                params=dict(run.data.params),
                final=dict(run.data.metrics),
                start_time=start,
                error=run.data.tags.get(TAG_ERROR),
                stopped_by=run.data.tags.get(TAG_STOPPED_BY),
                number=_int_tag(run.data.tags.get(TAG_NUMBER)),
            )
        )
    return rows


def _int_tag(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def start_order(rows: list[TrialRow]) -> Callable[[TrialRow], tuple]:
    """The sort key of the order a search's trials were proposed in: Ray's count of each (tag hsc.trial_number)
    where every trial of `rows` has one, else the time MLflow started its run, where two trials started together
    can swap (a walkthrough saw the enqueued trainer default shown as #2)."""
    if all(r.number is not None for r in rows):
        return lambda row: (row.number, row.name)
    return lambda row: (row.start_time or 0, row.name)


def outcome_counts(rows: list[TrialRow]) -> dict[str, int]:
    """How many trials ended each way (by their hsc.outcome), by outcome name."""
    return {o: sum(r.outcome == o for r in rows) for o in sorted({r.outcome for r in rows})}


def best_row(rows: list[TrialRow], mode: str) -> TrialRow | None:
    ok = [r for r in rows if r.score is not None and r.outcome != "failed"]
    if not ok:
        return None
    return max(ok, key=lambda r: r.score) if mode == "max" else min(ok, key=lambda r: r.score)


def trial_config(client, run_id: str) -> TrainConfig:
    """The complete trainer config a trial was given (its config.yaml artifact, as searched: the trainer resolved
    its automatic values on the data, logged as effective.* params), validated."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    run = client.get_run(run_id)
    try:  # the run's own repository: MlflowClient.download_artifacts hides why a download failed
        repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
        with tempfile.TemporaryDirectory(prefix="hsc-export-") as tmp:
            text = Path(repo.download_artifacts(CONFIG_ARTIFACT, tmp)).read_text()
    except Exception as e:  # a store moved without its artifacts, an artifact server that does not answer
        what = f"cannot read {CONFIG_ARTIFACT} of trial run {run_id} ({run.info.run_name or 'unnamed'})"
        if missing_artifact_dir(run.info.artifact_uri):
            raise ExportError(f"{what}: {moved_store_hint(run.info.artifact_uri)}") from None
        raise ExportError(f"{what} from {run.info.artifact_uri}: {http_failure(e)}") from None
    try:
        return TrainConfig.from_dict(yaml.safe_load(text), source=f"run {run_id}/{CONFIG_ARTIFACT}")
    except ConfigError as e:
        raise ExportError(str(e)) from None


def check_out(out: str | Path, example: str, flag: str = "--out", kind: str | None = None) -> Path:
    """`out` can be written as a file of `kind` (`runs.out_file_problem`); raises ExportError naming `flag` if
    not."""
    problem = out_file_problem(out, example, flag, kind)
    if problem:
        raise ExportError(problem)
    return Path(out)


def provenance(best: TrialRow, search: str, parent_run_id: str | None, metric: str) -> str:
    """Where an exported config comes from, for its header: the trial (its MLflow run), the search (its parent
    run) and the score it was chosen by (a file copied elsewhere still says which trial it is)."""
    run = f" (MLflow run {best.run_id})" if best.run_id else ""
    parent = f" (run {parent_run_id})" if parent_run_id else ""
    score = "no score" if best.score is None else f"{metric} {best.score:.6g}"
    return f"trial {best.name}{run} of search {search}{parent}: {score}, its best over {plural(best.epochs, 'epoch')}"


def on_scales(fields) -> str:
    """What ranking by a metric that trials compute differently (`fields`: the differing fields that change it)
    does, as the search's start and export-best say it. The learned loss weights' example only where the loss
    weighting differs (it was said of loss/rec, which a mask_ratio changes: a walkthrough)."""
    example = " (learned loss weights, for one, divide each loss by its first value)" if "loss_weighting" in fields else ""
    return (f"ranked by numbers on different scales{example}, not by how well they retrieve; a validation mAP ranks "
            "them on one task")
# the trainer fields that change how each training loss is computed (trainer/losses.py, trainer/engine.py): a
# search ranking trials by that loss compares numbers on different scales when it searches them
_LOSS_FIELDS = {
    "loss/rec": ("mask_ratio",),
    "loss/dcca": ("cca_dim", "cca_k", "cca_ridge", "batch_size"),  # correlations of each batch
    "loss/nce": ("tau", "topk", "tau_teacher", "self_weight", "batch_size", "ema_momentum"),  # log B; the teacher
    "loss/distill": ("distill", "ema_momentum"),
}
# ... and the canonical correlations (cca/*: the validation split through each trial's CCA head, trainer/engine.py
# cca_spectrum; cca/mean over its top cca_k)
CCA_SHAPERS = ("cca_ridge", "cca_k", "cca_dim", "use_dcca")
LOSS_SHAPERS = {**_LOSS_FIELDS, "loss/total": (
    *{f for fields in _LOSS_FIELDS.values() for f in fields}, "use_rec", "use_dcca", "use_nce", "loss_weighting",
    "weight_lr", "weight_warmup_epochs", "logvar_floor", "w_rec", "w_dcca", "w_nce", "w_distill")}  # fmt: skip


def export_notes(rows: list[TrialRow], best: TrialRow, metric: str, cfg: TrainConfig) -> list[str]:
    """What `export-best` says of its choice beyond the score (a walkthrough: both were silent):
    - a metric whose scale the trials' differing values change (a training loss with learned and fixed loss
      weights, a canonical correlation with different CCA heads), which the search's start says of its --metric
      but an export by another --metric ranked silently;
    - a trial that did not reach its search's last epoch (stopped by ASHA, or cut off): the file trains the
      whole schedule, so its retrain goes on past the epochs the score is of and keeps its best of all of them."""
    notes = []
    fields = LOSS_SHAPERS.get(metric, CCA_SHAPERS if metric.startswith("cca/") else ())
    varied = sorted(f for f in fields if len({r.params[f] for r in rows if f in r.params}) > 1)
    if varied:
        notes.append(f"{metric} is computed differently by trials with different {', '.join(varied)}: they are "
                     f"{on_scales(varied)}")  # fmt: skip
    unscored = [r for r in rows if r.score is None and r.outcome != "failed"]
    if unscored:  # (a metric some trials log, such as logvar/nce of learned loss weights: the others were passed
        # over without a word, a walkthrough)
        notes.append(f"{plural(len(unscored), 'trial')} of {len(rows)} logged no {metric} and "
                     f"{'was' if len(unscored) == 1 else 'were'} not ranked: "
                     + ", ".join(r.name for r in unscored[:5]) + (", ..." if len(unscored) > 5 else ""))  # fmt: skip
    if best.epochs < cfg.epochs:
        how = ("was stopped by ASHA after" if best.outcome == "stopped_early" else
               "has trained" if best.outcome in ("running", "unfinished") else "ended after")  # fmt: skip
        notes.append(f"trial {best.name} {how} {plural(best.epochs, 'epoch')} of {cfg.epochs}: the file trains "
                     f"all {cfg.epochs} (its learning-rate schedule is that length), so its retrain gives the trial's "
                     f"metrics for those {best.epochs}, then trains on and keeps its best epoch of all {cfg.epochs} "
                     f"(its {metric} can be better than {best.score:.4g})")  # fmt: skip
    return notes


def write_config(cfg: TrainConfig, out: str | Path, fmt: str = "yaml", data: str | None = None,
                 source: str | None = None, fingerprint: dict | None = None) -> Path:
    """Writes the config; a YAML file starts with the command that retrains from it (the file as written, the
    data the search ran on when known), `source` (`provenance`) and the fingerprint of the search's data
    (trainer.fit.data_fingerprint: the trainer says when the data it is given differs) when given."""
    from trainer.fit import SEARCHED_DATA_MARK

    from .commands import retrain_command
    from .storage import write_text

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # through a temporary file and a rename: a full disk leaves the earlier file as it was (a walkthrough)
    if fmt == "json":
        write_text(str(out), json.dumps(cfg.to_dict(), indent=2) + "\n")
    else:
        write_text(
            str(out),
            "# Best HSC-MAE config exported by hsc-search; retrain with (in the project's environment):\n"
            f"#   {retrain_command(out.resolve(), data)}\n"
            + (f"# from {source}\n" if source else "")
            + (f"{SEARCHED_DATA_MARK}{json.dumps(fingerprint, separators=(',', ':'))}\n" if fingerprint else "")
            + cfg.to_yaml()
        )
    return out


def _fingerprint(parent) -> dict | None:
    """The fingerprint of the data a search ran on (its parent run's tag; searches from before it have none)."""
    try:
        saved = json.loads(parent.data.tags.get(TAG_DATA_FINGERPRINT) or "null") if parent is not None else None
    except ValueError:
        return None
    return saved if isinstance(saved, dict) else None


def search_in(folder: Path) -> str | None:
    """The parent run id of the search whose folder `folder` is (its hsc_search.json), or None."""
    record = folder / META_FILE
    try:
        return json.loads(record.read_text()).get("parent_run_id") if record.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None


def _not_another_searchs_file(out: Path, parent_run_id: str) -> None:
    """`--out` in another search's folder (beside its hsc_search.json) would replace that search's own record,
    e.g. the best_config.yaml its summary and `resume` point at, or its report.html, with this search's: refused."""
    owner = search_in(out.parent)
    if owner and owner != parent_run_id:
        raise ExportError(f"--out {out}: in the folder of another search (run {owner}, {out.parent / 'hsc_search.json'}"
                          "), whose own files are not replaced; write it elsewhere")  # fmt: skip


def ranking(settings: dict[str, str], metric: str | None, mode: str | None) -> tuple[str, str]:
    """The (metric, mode) export-best ranks by: the search's own (its parent's params) unless given; a --metric
    other than the search's without --mode is ranked in its usual direction (`usual_mode`), never by the search's
    mode (a search of val/map_avg, max, exported by loss/total would otherwise pick the highest loss)."""
    searched_metric = settings.get("metric") or "val/map_avg"
    searched_mode = settings.get("mode") or usual_mode(searched_metric) or "max"
    if metric is None:
        metric = searched_metric
    if mode is None:
        mode = searched_mode if metric == searched_metric else usual_mode(metric) or "max"
    return metric, mode


def export_best(tracking_uri: str | None, experiment: str | None, out: str | Path, *, parent_run_id: str | None = None,
                metric: str | None = None, mode: str | None = None,
                fmt: str = "yaml") -> tuple[Path, TrialRow, str, str, Any, list[str]]:  # fmt: skip
    """Picks the best trial of a search (the latest one in `experiment` unless `parent_run_id`) by `metric` and
    `mode` (the search's own unless given: `ranking`) and writes its trainer config to `out`. Returns the path,
    the chosen trial, the metric and mode it was ranked by, the search's parent run (its name and status), and
    notes on the choice (`export_notes`). `experiment` None: hsc-search; given with `parent_run_id`, the run must
    be in it."""
    if mode is not None and mode not in ("max", "min"):
        raise ExportError(f"--mode must be max or min, got {mode!r}")
    if metric is not None and metric.startswith("test/"):  # as `run` refuses it (preflight.check_metric)
        raise ExportError(f"--metric {metric}: test metrics are evaluated once, after the last epoch, and must never "
                          "select models; rank by a validation metric such as val/map_avg")  # fmt: skip
    if metric == "epoch" or (metric or "").startswith(("best/", "hsc/")):  # ranked silently (a walkthrough: a
        # three-way tie on "epoch 3.0000 (max)")
        of = metric.split("/", 2)[2] if metric.startswith("best/") and metric.count("/") >= 2 else ""
        what = ("the epoch count, the same for every trial that trained all its epochs" if metric == "epoch" else
                f"a trial's score by {of}, logged once, as its search ranked it" if of
                else "a trial's score, logged once" if metric.startswith("best/")
                else "the search's own bookkeeping")  # fmt: skip
        better = (f"; rank by {of} (--metric {of} --mode {metric.split('/')[1]})"
                  if of and metric.split("/")[1] in ("max", "min") else "; rank by a validation metric such as val/map_avg")
        raise ExportError(f"--metric {metric}: {what}, not a metric of each epoch to rank trials by{better}")
    out = check_out(out, "best_config.json" if fmt == "json" else "best_config.yaml", kind="config")
    try:
        check_store_to_read(tracking_uri)
    except StoreError as e:
        raise ExportError(str(e)) from None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars per downloaded file
    client = client_for(tracking_uri)
    if parent_run_id is None:
        experiment = experiment or SearchSettings.experiment
        experiment_id = find_experiment_id(client, experiment)
        parent_run_id = latest_parent_run(client, experiment_id, experiment)
    else:
        parent_run_id, experiment_id = search_of(client, parent_run_id, tracking_uri, experiment)
    _not_another_searchs_file(out, parent_run_id)
    parent = None
    try:  # the search's settings: its metric and mode, its data spec (for the file's retrain line)
        parent = client.get_run(parent_run_id)
        settings = dict(parent.data.params)
    except Exception as e:  # noqa: BLE001 - MLflow's, or its HTTP client's
        if metric is None or mode is None:  # never ranked by a metric the search did not choose, silently
            from .runs import http_failure

            raise ExportError(f"search run {parent_run_id}: cannot read its settings ({http_failure(e)}), so not "
                              "its --metric and --mode; pass both, or run again") from None  # fmt: skip
        settings = {}  # the retrain line then says <SPEC>
    served = parent and served_artifacts_problem(parent.info.artifact_uri, tracking_uri, "--tracking-uri",
                                                 f"search run {parent_run_id}")  # fmt: skip
    if served:  # the trial's config.yaml could not be read (MLflow's paragraph about MLFLOW_TRACKING_URI)
        raise ExportError(served)
    metric, mode = ranking(settings, metric, mode)
    rows = trial_rows(client, experiment_id, parent_run_id, metric, mode)
    name = f"search {parent.info.run_name} (run {parent_run_id})" if parent else f"search run {parent_run_id}"
    if not rows:
        raise ExportError(f"{name} has no trial runs")
    best = best_row(rows, mode)
    if best is None:
        failed = sum(r.outcome == "failed" for r in rows)
        if failed == len(rows):
            trials = "its trial" if len(rows) == 1 else f"all {len(rows)} of its trials"
            raise ExportError(f"{name}: {trials} failed (each trial run's tag hsc.error says why): no config to "
                              "export; to export an earlier search, give --run-id with its parent run id (the "
                              "MLflow UI lists the searches)")  # fmt: skip
        unfinished = ""  # a search cut off before a trial scored: what continues it
        if parent is not None and search_status(parent) != "FINISHED":
            from .searchlock import search_state

            state, said = search_state(parent.info.run_name, parent.info.status,
                                       parent.data.tags.get("hsc.experiment_dir"), parent_run_id,
                                       lambda: search_status(client.get_run(parent_run_id)),
                                       parent.data.tags.get(TAG_RAY_AUTH))  # fmt: skip
            unfinished = f"; {said}" + (": export again" if state == "ended" else "") if said else ""
            if state == "running" and (metric == settings.get("metric") or not any(r.final for r in rows)):
                # before its first report (by any --metric: a review): "no trial logged" read as broken (a walkthrough)
                raise ExportError(f"no trial of {name} has logged '{metric}' yet; {said}: export again once a trial "
                                  "has reported an epoch")  # fmt: skip
        logged = sorted({k for r in rows for k in r.final})
        if metric not in logged and logged and metric != settings.get("metric"):  # a typo (`val/map_avgg`) in
            # --metric: what they did log, the nearest first (not for the search's own, which they had not yet)
            import difflib

            rankable = [k for k in logged if "/" in k and not k.startswith(("best/", "test/"))]  # (test: refused)
            # the metrics it begins (`val/map`: it was told val/map_v2a, the closest spelling, not val/map_avg)
            begun = [k for k in rankable if k.startswith(metric)]
            near = begun if len(begun) > 1 else difflib.get_close_matches(metric, rankable, n=1)
            unfinished += ((f"; did you mean {' or '.join(near)}? Its" if near else "; its") + " trials logged: "
                           + ", ".join(rankable))  # fmt: skip
        raise ExportError(f"no trial of {name} logged '{metric}'"
                          + (f" ({failed} of {len(rows)} failed)" if failed else "") + unfinished)
    cfg = trial_config(client, best.run_id)
    from trainer.config import select_metrics, select_mode

    if metric in select_metrics() and mode == select_mode(metric) and cfg.select_metric != metric:
        # ranked by another metric than its search's: the retrained run keeps the epoch this ranking chose
        cfg = dataclasses.replace(cfg, select_metric=metric)
    try:
        search = parent.info.run_name if parent else "?"
        return (write_config(cfg, out, fmt, data=settings.get("data"),
                             source=provenance(best, search, parent_run_id, metric), fingerprint=_fingerprint(parent)),
                best, metric, mode, parent, export_notes(rows, best, metric, cfg))  # fmt: skip
    except OSError as e:
        raise ExportError(f"--out {out}: cannot write ({e.strerror or e})") from None
