"""Live progress of a search on the terminal: one line per finished trial, with the best so far. A trial's value
is its score, the best epoch's (as the summary, MLflow and export-best rank it), not its last epoch's."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time

from ray import tune

from .ray_internals import checkpoint_epoch
from .runs import EFFECTIVE_KEY, FAILED_KEY, NODE_KEY, best_of, epochs_of, shown, trial_outcome


class Progress(tune.Callback):
    """Prints a line when a trial finishes, is stopped early, or fails (Ray's own table is turned off)."""

    def __init__(self, total: int, max_epochs: int, metric: str, mode: str, searched: list[str]):
        self.total, self.max_epochs, self.metric, self.mode = total, max_epochs, metric, mode
        self.searched = list(searched)
        self._done = 0
        self._best: float | None = None
        self._scores: dict[str, float] = {}  # trial id -> best value of the metric over the epochs reported so far
        self._effective: dict[str, dict] = {}  # trial id -> what the trainer resolved from the data (first report)
        self._t0 = time.monotonic()
        self._elapsed_before = 0.0  # seconds the search ran before a resume

    def __getstate__(self):
        return self.__dict__.copy()

    def setup(self, **info) -> None:
        self._t0 = time.monotonic() - self._elapsed_before

    # saved in Ray's experiment snapshots, so that after `hsc-search resume` the count goes on from where it was
    def get_state(self) -> dict:
        return {"done": self._done, "best": self._best, "elapsed": time.monotonic() - self._t0,
                "scores": dict(self._scores), "effective": dict(self._effective)}  # fmt: skip

    def set_state(self, state: dict) -> None:
        self._done, self._best = state.get("done", 0), state.get("best")
        self._scores = dict(state.get("scores", {}))
        self._effective = dict(state.get("effective", {}))
        self._elapsed_before = state.get("elapsed", 0.0)
        self._t0 = time.monotonic() - self._elapsed_before

    def _params(self, trial) -> str:
        return ", ".join(f"{k}={shown(trial.config[k])}" for k in self.searched if k in trial.config)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        """Until the first trial ends, a line as each trial starts: on real data the first one can take minutes,
        and the search would say nothing after its start-up."""
        if self._done == 0:
            params = self._params(trial)
            elapsed = time.monotonic() - self._t0
            # a resumed search's trial goes on from its checkpoint: "started" read as starting over (a walkthrough);
            # the epoch of its checkpoint (Ray's result saved with it), not of its last report: a checkpoint is
            # saved at milestones and every checkpoint_every_s, and its last report can be later (or, after a Ray
            # head was killed, not in Ray's snapshot at all: it said "started", a walkthrough)
            epoch = checkpoint_epoch(trial)
            what = f"resumed after epoch {epoch}" if epoch else "started"
            print(_fit(f"{self._at(0, elapsed)} {trial.trial_id} {what:<28} ({params})"), file=sys.stderr,
                  flush=True)  # fmt: skip

    def _at(self, done: int, elapsed: float) -> str:
        """The line's head, e.g. "[ 7/12    6s]": trials ended of the total (padded: the lines stay aligned), seconds."""
        return f"[{done:>{len(str(self.total))}}/{self.total} {elapsed:5.0f}s]"

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        values = [e.get(self.metric) for e in epochs_of(result)]
        before = self._scores.get(trial.trial_id)
        score = best_of(values + ([before] if before is not None else []), self.mode)
        if score is not None:
            self._scores[trial.trial_id] = score
        if EFFECTIVE_KEY in result:  # (a search without MLflow said no "resolved on this data": a walkthrough)
            self._effective[trial.trial_id] = json.loads(result[EFFECTIVE_KEY])

    def scores(self) -> dict[str, float]:
        """Trial id -> its score so far (the best value of the metric over every epoch it reported)."""
        return dict(self._scores)

    def effective(self) -> dict[str, dict]:
        """Trial id -> the values its trainer resolved from the data (auto fields, clamps), as its MLflow run's
        `effective.*` params hold them."""
        return dict(self._effective)

    def _line(self, trial, what: str, reason: str | None = None) -> None:
        self._done += 1
        result = trial.last_result or {}
        # a failed trial has no score: its epochs before a divergence read as one above the best (the review)
        value = None if what == "FAILED" else self._scores.get(trial.trial_id, result.get(self.metric))
        if value is not None and math.isfinite(value):
            if self._best is None or (value > self._best if self.mode == "max" else value < self._best):
                self._best = value
        params = self._params(trial)
        # "-" for a trial that never scored (a failed one reports nan, which read as a diverged training)
        scored = isinstance(value, float) and math.isfinite(value)
        value_shown = f"{self.metric} {value:.4f}" if scored else f"{self.metric} -"
        best = f"best {self._best:.4f}" if self._best is not None else "best -"
        elapsed = time.monotonic() - self._t0
        print(_fit(f"{self._at(self._done, elapsed)} {trial.trial_id} {what:<28} {value_shown}  {best}  ({params})"),
              file=sys.stderr, flush=True)  # fmt: skip
        if reason:
            print(f"    {trial.trial_id} failed: {reason[:500]}", file=sys.stderr, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        outcome = trial_outcome("TERMINATED", result, self.max_epochs)
        if outcome == "failed":  # one line with the reason; Ray does not retry these (trainable.DETERMINISTIC)
            self._line(trial, "FAILED", reason=result[FAILED_KEY])
            return
        epochs = int(result.get("epoch", 0))
        self._line(trial, f"stopped by ASHA at epoch {epochs}" if outcome == "stopped_early" else f"completed {epochs} epoch{'s' * (epochs != 1)}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._line(trial, "FAILED", reason=_last_error_line(trial))

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """A trial whose worker or node died, which Ray retries (`max_failures`): one line, where Ray's own log
        printed the error's whole traceback (TUNE_PRINT_ALL_TRIAL_ERRORS is off, `driver._quiet`)."""
        n, most = int(getattr(trial, "num_failures", 0) or 0), int(getattr(trial, "max_failures", 0) or 0)
        count = f" (failure {n}" + (f" of at most {most})" if most > 0 else ")") if n > 0 else ""  # (a preempted
        # node's trial is retried without counting a failure)
        print(f"    {trial.trial_id} {_last_error_line(trial)[:300]}{_where(trial)}: retried from its last checkpoint, "
              f"if it has one{count}", file=sys.stderr, flush=True)  # fmt: skip


def _where(trial) -> str:
    """The node a trial last reported from (Ray's node_ip and its node id, as Ray's own "marked dead" lines name
    nodes): a worker node's failure did not say which node (a walkthrough). Ray has cleared the trial's location
    by the time callbacks hear of a failure; a trial that has not reported since it (re)started names the node of
    its last report, hence "last reported"."""
    last = getattr(trial, "last_result", None) or {}
    node, ip = last.get(NODE_KEY), last.get("node_ip")
    if not node and not ip:
        return ""
    named = ", ".join(x for x in (ip, f"id {node[:12]}" if node else None) if x)
    return f" (it last reported from node {named})"


def _width() -> int:
    """The width of the terminal the lines go to (stderr's: with `run ... | tee log` stdout is a pipe, which
    shutil.get_terminal_size measures); COLUMNS first, as shutil does."""
    try:
        if int(os.environ["COLUMNS"]) > 0:  # (0 or less: unset, as shutil takes it)
            return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 120


def _fit(line: str) -> str:
    """A line ending in "(params)" cut to the terminal's width on a terminal, its params ending in "...)": an
    hsc_mae search's lines were 400 columns, each trial 3-6 rows on an 80-column terminal (a walkthrough). Piped
    or redirected (a log file), the whole line; every value is in MLflow, the report and the summary."""
    if not sys.stderr.isatty():
        return line
    width = _width()
    cut = line.rfind(" (")
    if len(line) <= width or cut < 0:
        return line
    head, params = line[:cut], line[cut:]
    if width - len(head) < 40:  # room for a few params: the alignment's padding goes first (one row each)
        head = re.sub(r" {3,}", "  ", head)
    room = width - len(head)
    if room < 8:  # a terminal narrower than the head: the params go (the score and the best stay)
        return head + " (...)"
    return head + params[: room - 4] + "...)"


_EXCEPTION_LINE = re.compile(r"^(?:[\w.]*\.)?\w*(?:Error|Exception|Interrupt|Exit)\b")


def _last_error_line(trial) -> str:
    """The exception's line of Ray's error file of a trial, not its traceback: the last line that names an
    exception (Ray's own errors go on over several lines after it: the actor, its pid, why it died), else the
    last line."""
    path = getattr(trial, "error_file", None)
    try:
        lines = [l.strip() for l in open(path).read().splitlines() if l.strip()] if path else []
    except OSError:
        lines = []
    named = [l for l in lines if _EXCEPTION_LINE.match(l)]
    return (named or lines or ["see the trial's error file"])[-1]
