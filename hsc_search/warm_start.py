"""Warm starts: an earlier search's trials handed to a new search's Optuna study before it samples anything, so
that TPE starts informed (`hsc-search run --warm-start <parent run id or search folder>`).

The earlier search is read by the one reader of finished searches (`replay.read_mlflow`, `replay.read_ray_dir`).
Each of its trials is given to Optuna as our searcher (`schedulers.BudgetAwareOptunaSearch`) told Optuna about
it during that search:

- a trial that ran its full budget: COMPLETE, its value the best of the objective over its epochs
  (`runs.best_of`), with every epoch's value as an intermediate value;
- a trial ASHA stopped: PRUNED, with every epoch's value as an intermediate value (TPE ranks pruned trials by how
  far they got and by those values);
- a failed trial is left out: TPE ignores FAIL trials (it samples from COMPLETE and PRUNED ones), so adding them
  would change no suggestion and only pad the study; the same for trials of an interrupted search that never
  ended (neither complete nor stopped: nothing was told to Optuna about them).

Only trials whose params all fit this search's space are added (`SearchSpace.match`: the same searched names,
values Optuna could sample here); the rest are counted with the reason. Nothing here starts Ray or writes
anything: a source that cannot be used fails the search's pre-flight with one sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .preflight import PreflightError
from .runs import META_FILE, best_of, folder_hint, shown
from .space import SearchSpace

MAX_EXAMPLES = 2  # trials named per reason in the start line


@dataclass
class WarmStart:
    """The earlier trials a new search starts from."""

    source: str  # as given (--warm-start)
    read_from: str  # what was read: "MLflow run <id> (<name>) at <uri>" or "Ray folder <path>"
    of: int  # trials the source holds
    trials: list = field(default_factory=list)  # optuna.trial.FrozenTrial, in the source's start order
    left_out: dict[str, list[str]] = field(default_factory=dict)  # reason -> ["<trial id>: detail", ...]
    data: str | None = None  # the source's data spec as it recorded it (None: not recorded)
    other_data: bool = False  # the source searched other data than this search (by fingerprint, else `same_data`)
    same_path: bool = False  # ... from the same file (it changed since)
    fixed_differs: dict = field(default_factory=dict)  # fixed trainer value -> (the source's, this search's)
    epochs_differ: tuple[int, int] | None = None  # (the source's --max-epochs, this search's) where they differ
    unfinished: bool = False  # the source has not finished (interrupted, or still running): more trials may come
    sampler_seed: int | None = None  # the new search's sampler seed (`sampler_seed`), set by the driver

    @property
    def added(self) -> int:
        return len(self.trials)

    def best(self, mode: str) -> tuple[str, float] | None:
        """(source trial id, score) of the best trial the search started from, its score its best epoch's value
        as this search scores its own; None without trials."""
        scored = [(t.user_attrs.get("warm_start_trial", "?"), best_of(t.intermediate_values.values(), mode))
                  for t in self.trials if t.intermediate_values]  # fmt: skip
        if not scored:
            return None
        return (max if mode == "max" else min)(scored, key=lambda x: x[1])

    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
        return out

    def line(self) -> str:
        """The one line printed at start."""
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.states().items()))
        out = [f"{len(v)} {reason}" + (f": {'; '.join(v[:MAX_EXAMPLES])}" + ("; ..." if len(v) > MAX_EXAMPLES else "")
                                       if reason == "outside this space" else "")
               for reason, v in self.left_out.items()]  # fmt: skip
        changed = (f"({self.data} as it was then, or carved by another val_fraction: other clips, labels or values)"
                   if self.same_path else f"({self.data})")  # fmt: skip
        fixed = ", ".join(f"{k} {shown(a)} (here {shown(b)})" for k, (a, b) in sorted(self.fixed_differs.items()))
        return (f"warm start: {self.added} of {self.of} trials from {self.source} ({states}"
                + (f"; left out: {'; '.join(out)}" if out else "") + ")"
                + (f"; it searched other data {changed}: its values are that data's" if self.other_data else "")
                + (f"; its fixed values differ: {fixed}: its values were measured with them" if fixed else "")
                + (f"; it trained up to {self.epochs_differ[0]} epochs a trial (here {self.epochs_differ[1]}): its "
                   "values are of that budget" if self.epochs_differ else "")
                + ("; it has not finished (interrupted, or still running): only the trials it had ended are added"
                   if self.unfinished else ""))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """What the search's hsc_search.json and parent run record."""
        return {"source": self.source, "read_from": self.read_from, "added": self.added, "of": self.of,
                "states": self.states(), "left_out": {k: len(v) for k, v in self.left_out.items()},
                "left_out_trials": self.left_out, "sampler_seed": self.sampler_seed}  # fmt: skip


def same_data(a: str, b: str) -> bool:
    """Two data specs name the same data: synthetic specs by their generator and resolved options (the defaults
    filled in, any order), files by their real path, anything else as written."""
    import os

    from trainer import synthetic
    from trainer.data import SYNTHETIC_PREFIX

    if a.startswith(SYNTHETIC_PREFIX) and b.startswith(SYNTHETIC_PREFIX):
        def resolved(spec: str):
            name, _, query = spec[len(SYNTHETIC_PREFIX):].partition("?")
            return name, synthetic.resolve_options(name, **synthetic.parse_options(p for p in query.split("&") if p))

        try:
            return resolved(a) == resolved(b)
        except (ValueError, TypeError):
            return a == b
    if a.startswith(SYNTHETIC_PREFIX) or b.startswith(SYNTHETIC_PREFIX) or "://" in a or "://" in b:
        return a == b
    return os.path.realpath(a) == os.path.realpath(b)


def plan(source: str, space: SearchSpace, metric: str, mode: str, tracking_uri: str | None, data: str | None = None,
         fingerprint: dict | None = None, storage_root: str | None = None,
         max_epochs: int | None = None) -> WarmStart:  # fmt: skip
    """Reads the source search and builds the trials to add. Raises PreflightError (one sentence, naming
    --warm-start) for a source that does not exist, cannot be read, ranks by another metric or mode, or has no
    trial that fits `space`. `data` and `fingerprint` (trainer.fit.data_fingerprint): this search's data, to say
    when the source searched other data: by the fingerprints when both searches recorded one (a file replaced at
    the same path is other data; a copy elsewhere is the same), else by the data specs. `storage_root`: this
    search's storage (a local folder), where a search given by its name alone is looked for, to name it.
    `max_epochs`: this search's, said where the source's differs (its complete trials' values are of its budget:
    a 60-epoch search's warm trials went silently into a 2-epoch study, and its trained default was not run
    again: a walkthrough)."""
    from .replay import ReplayError, read_mlflow, read_ray_dir

    flag = f"--warm-start {source}"
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            if not (path / META_FILE).is_file():
                hint = folder_hint(str(path)) or ("; pass the folder `hsc-search run` printed as folder:, or a "
                                                   "parent run id")  # fmt: skip
                raise PreflightError(f"{flag}: {path.resolve()} is not a hsc-search search folder (no "
                                     f"hsc_search.json){hint}")  # fmt: skip
            rec = read_ray_dir(path, flag="--warm-start")
        elif path.exists() and ("/" in source or path.suffix):  # a file (a search's best_config.yaml, say)
            raise PreflightError(f"{flag}: a file, not a search folder; pass the folder that holds it "
                                 f"({path.resolve().parent}, if it is a search's) or a search's parent run id")  # fmt: skip
        elif "/" in source or source.startswith((".", "~")):
            raise PreflightError(f"{flag}: no such folder; pass a search folder (<storage>/<name>) or a search's "
                                 "parent run id")  # fmt: skip
        else:
            try:
                rec = read_mlflow(tracking_uri, run_id=source, with_fixed=True)
            except ReplayError as e:  # neither a folder here nor a run in the store
                # replay's flag, --run-id, is ours here: "T is a trial run of search P: pass --warm-start P"
                msg = str(e).replace("pass --run-id ", "pass --warm-start ").replace("--run-id ", "")
                named = Path(storage_root or "ray_results") / source  # a search's name, as --name gave it
                hint = ""  # (unless the store's own line named the folder already: runs._search_folder_hint)
                if (named / META_FILE).is_file() and "is a search folder" not in msg:
                    hint = f"; the search named {source} is the folder {named}: pass --warm-start {named}"
                raise PreflightError(f"{flag}: no such search folder here, and as a parent run id: {msg}{hint}") \
                    from None
    except ReplayError as e:  # read_ray_dir names the folder, and --warm-start
        raise PreflightError(str(e)) from None
    if (rec.metric, rec.mode) != (metric, mode):
        raise PreflightError(f"{flag}: that search ranked trials by {rec.metric} ({rec.mode}), this one by {metric} "
                             f"({mode}); its values would mean something else here. Warm-start from a search with "
                             "the same --metric and --mode")  # fmt: skip
    warm = WarmStart(source, rec.source, len(rec.raw), data=rec.settings.get("data") or None)
    if fingerprint is not None and rec.fingerprint is not None:
        from trainer.fit import same_data as same_fingerprint

        warm.other_data = not same_fingerprint(rec.fingerprint, fingerprint)
    else:
        warm.other_data = data is not None and warm.data is not None and not same_data(str(warm.data), data)
    warm.same_path = warm.other_data and data is not None and warm.data is not None and same_data(str(warm.data), data)
    searched = {q.name for q in space.params} | (rec.searched or set())
    warm.fixed_differs = fixed_differences(rec.fixed, space.fixed, searched)
    warm.unfinished = rec.finished is False  # (a search still running said nothing of the trials to come)
    if max_epochs is not None and rec.max_epochs is not None and int(rec.max_epochs) != int(max_epochs):
        warm.epochs_differ = (int(rec.max_epochs), int(max_epochs))
    for r in rec.raw:
        trial, reason, detail = _trial(r, space, rec.mode, rec.max_epochs)
        if trial is None:
            warm.left_out.setdefault(reason, []).append(f"{r['trial_id']}: {detail}" if detail else r["trial_id"])
        else:
            warm.trials.append(trial)
    if not warm.trials:
        why = "; ".join(f"{len(v)} {k}" + (f" ({v[0]})" if k == "outside this space" else "")
                        for k, v in warm.left_out.items()) or "it has no trials"  # fmt: skip
        advice = ("warm-start from a search with trials that trained" if set(warm.left_out) <= {"failed", NO_EPOCH}
                  else "warm-start from a search over this space" if "outside this space" in warm.left_out
                  # (a running search's one trial, not yet ended, was called a search over another space: a walkthrough)
                  else f"{rec.running}: warm-start from it once its trials have ended" if rec.running
                  else "warm-start from it once `hsc-search resume` has finished them")  # fmt: skip
        raise PreflightError(f"{flag}: none of its {warm.of} trials can start this search ({why}); {advice}")
    return warm


NO_EPOCH = "with no epoch reported"  # a trial left out: it ended (or its search was cut off) before its first report


def _trial(r: dict, space: SearchSpace, mode: str, max_epochs: int | None):
    """(FrozenTrial, "", "") for one recorded trial, or (None, reason, detail) when it is left out."""
    import optuna
    from optuna.trial import TrialState

    outcome = r.get("outcome")
    if outcome == "failed":
        return None, "failed", ""
    values = {int(e): float(v) for e, v in r["values"].items() if v is not None and math.isfinite(float(v))}
    if not values:  # first: a trial before its first report. One MLflow tags running or interrupted is unfinished,
        # as one with values is ("without values" read as a broken trial, where the same trial from an ASHA search
        # was "unfinished": a walkthrough); a folder's says no outcome: "with no epoch reported"
        if outcome not in (None, "completed", "stopped_early"):
            return None, "unfinished", outcome
        return None, NO_EPOCH, ""
    if outcome not in (None, "completed", "stopped_early"):  # interrupted, unfinished, running
        if not (max_epochs and max(values) >= max_epochs):
            return None, "unfinished", outcome
        outcome = "completed"  # it trained every epoch before its search was cut off: as a folder counts it
    params, why = space.match(r.get("params") or {})
    if params is None:
        return None, "outside this space", why
    if outcome is None:  # a Ray folder: a trial that ended before the full budget without an error was stopped
        outcome = "completed" if max_epochs is not None and max(values) >= max_epochs else "stopped_early"
    by_name = {p.name: p for p in space.params}
    state = TrialState.COMPLETE if outcome == "completed" else TrialState.PRUNED
    trial = optuna.trial.create_trial(
        state=state,
        value=best_of(values.values(), mode) if state == TrialState.COMPLETE else None,
        params=params,
        distributions={name: by_name[name].distribution() for name in params},
        intermediate_values=dict(sorted(values.items())),
        user_attrs={"warm_start_trial": r["trial_id"]},
    )
    return trial, "", ""


def sampler_seed(seed: int, warm: WarmStart) -> int:
    """The sampler's seed for a search warm-started from `warm`. Below TPE's start-up trials Optuna samples at
    random from its seed alone, whatever the study holds: with the source's own seed (the default 0, say) the new
    search drew the source's configs again, one by one, and spent its budget on trials the study held. Mixed with
    the source's trials (their ids, which a search draws anew): deterministic, and another sequence than the
    source's. (Mixed with their number alone, each step of a chain of warm starts, each from the one before and
    as many trials, drew the same sequence: the configs of the one before it, again: a walkthrough.)"""
    import hashlib

    ids = ",".join(sorted(str(t.user_attrs.get("warm_start_trial", "")) for t in warm.trials))
    digest = hashlib.sha256(f"{seed}|{warm.of}|{ids}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


def add_to_searcher(searcher, warm: WarmStart) -> None:
    """Adds the warm trials to the Optuna study inside the searcher (before the Tuner is built, so that Ray's
    searcher checkpoints hold them: `resume` restores them with the study and never adds them again)."""
    from .ray_internals import optuna_study

    optuna_study(searcher).add_trials(warm.trials)


NOT_COMPARED = ("epochs", "select_metric")  # the search's --max-epochs, and its --metric (compared on their own)


def fixed_differences(source: dict | None, here: dict[str, Any], searched: set[str]) -> dict[str, tuple[Any, Any]]:
    """The fixed trainer values in which a source search's space and this one differ, each as (the source's,
    this search's), a value not fixed counting as the trainer's default; empty when the source's are unknown.
    Names either search searches are not compared (`searched`: a trial's value for one is its param, matched
    apart)."""
    if source is None:
        return {}
    from trainer import TrainConfig

    default = TrainConfig().to_dict()
    out = {}
    for name in sorted((set(source) | set(here)) - set(NOT_COMPARED) - searched):
        a, b = source.get(name, default.get(name)), here.get(name, default.get(name))
        same = a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b))
        if not same:
            out[name] = (a, b)
    return out


def default_among(first: dict[str, Any], warm: WarmStart) -> str | None:
    """The source trial whose params are exactly `first` (the trainer default the search would enqueue), or None;
    None too when the source searched other data, with other fixed values or another --max-epochs (the default
    has not been trained as this search would train it)."""
    if warm.other_data or warm.fixed_differs or warm.epochs_differ:
        return None
    for t in warm.trials:
        if first and t.params == first:
            return t.user_attrs.get("warm_start_trial")
    return None
