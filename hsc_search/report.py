"""The search report: one self-contained interactive HTML file (plotly, its JavaScript inlined) per search.

Drawn from MLflow alone (`search_record.read_search`), so `hsc-search report` writes it for any search,
including ones made before it existed. Sections: every trial's objective over epochs coloured by outcome (by
trial when all ended alike) with ASHA's rungs marked; the best so far against the order trials were proposed in
and against the epochs trained in all; parallel coordinates (drawn here) and parameter importance (Optuna's), on a study rebuilt from the runs;
the best trial's loss weights and canonical-correlation spectrum; the table of trials.
"""

from __future__ import annotations

import html
import logging
import math
import shlex
import time
import warnings
from pathlib import Path
from typing import Any

from .commands import exe
from .runs import EFFECTIVE_PARAM, OUTCOME_LABELS, params_line, plural, shown, split_params, without_password
from .search_record import SearchRecord
from .storage import write_text

log = logging.getLogger(__name__)

OUTCOME_COLORS = {
    "completed": "#1f77b4",
    "stopped_early": "#ff7f0e",
    "failed": "#d62728",
    "interrupted": "#7f7f7f",
    "unfinished": "#7f7f7f",
    "running": "#7f7f7f",
}


_PRELOAD: list = []  # the preloading thread of this process, once started


def preload_in_background() -> None:
    """Imports what the report needs (plotly and `optuna.visualization`; scikit-learn and SciPy for fANOVA's
    importances: about 1 s of CPU) in a daemon thread, once per process. The MLflow tracker calls this when a
    search's first result arrives, so the report after the last trial no longer waits for those imports
    (the search's tail: benchmarks/RESULTS.md); `write_report` joins the thread before it renders."""
    import threading

    if _PRELOAD:
        return

    def _imports() -> None:
        try:
            import optuna.visualization  # noqa: F401
            import plotly.graph_objects  # noqa: F401
            import plotly.offline  # noqa: F401
            import sklearn.ensemble  # noqa: F401
        except Exception:  # noqa: BLE001 - only a head start: the report imports (and reports) them itself
            pass

    thread = threading.Thread(target=_imports, name="hsc-report-imports", daemon=True)
    _PRELOAD.append(thread)
    thread.start()


def _unfinished(rec: SearchRecord, source: str = "") -> str | None:
    """What to say of a search that has not finished (`driver.search_state`). A search whose driver is gone (killed)
    left its cut-off trials as MLflow's "running": they are shown as interrupted, as a Ctrl-C'd search's are.
    `source`: the store it was read from, for the command that writes it again."""
    if rec.status == "FINISHED":
        return None
    from .searchlock import search_state

    state, note = search_state(rec.name, rec.status, rec.experiment_dir, rec.parent_run_id, rec.status_now,
                               rec.ray_auth_mode)  # fmt: skip
    if state == "ended":  # its driver finished it while this read it: what was read is of before its end; the
        # command in full (a bare `hsc-search report` wrote the latest search of the default store: the review)
        store = f" --tracking-uri {shlex.quote(without_password(source, ''))}" if source else ""
        return (f"{note}; the report shows it as it was when read: write it again for its end "
                f"(`{exe('hsc-search', relative=False)} report --run-id {rec.parent_run_id}{store}`)")
    if state == "stopped":
        for t in rec.trials:
            if t.row.outcome == "running":
                t.row.outcome = "interrupted"
    return f"{note}; the report shows it as it was when written" if note else note


def _color(outcome: str) -> str:
    return OUTCOME_COLORS.get(outcome, "#8c564b")


def _label(outcome: str) -> str:
    return OUTCOME_LABELS.get(outcome, outcome)


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


# ---------------------------------------------------------------------------------------------- figures
def integer_axis(n: int | None) -> dict:
    """Axis settings for counts (epochs, trials) up to n: whole numbers only, at most about 12 ticks (plotly
    otherwise labels 1.5, 2.5 on short ranges)."""
    n = max(1, int(n or 1))
    step = next(s * 10**k for k in range(12) for s in (1, 2, 5) if n / (s * 10**k) <= 12)
    return dict(tickmode="linear", tick0=0, dtick=step, tickformat="d")


LOG_FROM = 1e3  # a positive objective whose values span this factor is drawn on a log scale


def log_scale(values) -> bool:
    """Whether values (all > 0) span LOG_FROM or more: one trial whose loss exploded (finite, so not diverged)
    put every other trial on one flat line at 0 of a linear axis (a walkthrough: 1.9 .. 2.4e11)."""
    vs = [v for v in values if v is not None and math.isfinite(v)]
    return bool(vs) and min(vs) > 0 and max(vs) / min(vs) >= LOG_FROM


def one_value_range(values) -> dict:
    """An axis range around the value when the values are all one (one trial, one epoch): plotly's own spans about
    twice the value on each side (a mAP axis from -0.7 to 1.1: a walkthrough); {} otherwise."""
    vs = {v for v in values if v is not None and math.isfinite(v)}
    if len(vs) != 1:
        return {}
    v = vs.pop()
    pad = abs(v) * 0.1 or 0.1
    return {"range": [v - pad, v + pad]}


def curves_figure(rec: SearchRecord):
    """Every trial's objective per epoch, coloured by outcome (by trial where all share one); ASHA's rungs as
    dashed lines; where a trial stopped, a cross. None while no trial has an epoch (every trial failed, or none has reported yet)."""
    import plotly.graph_objects as go

    if not any(t.curve for t in rec.trials):
        return None
    import plotly.colors

    fig = go.Figure()
    shown: set[str] = set()
    # one outcome for all (a FIFO search; ASHA stopping none): one colour told no trial from another (a
    # walkthrough), so each trial has its own, named in the legend (a click there hides it)
    one = len({t.row.outcome for t in rec.trials if t.curve}) == 1
    undrawn = any(not t.curve for t in rec.trials)  # ("all completed" over 2 drawn of 5, 3 failed: a walkthrough)
    palette = plotly.colors.qualitative.Plotly
    for i, t in enumerate(rec.trials, 1):
        if not t.curve:
            continue
        o = t.row.outcome
        xs, ys = [e for e, _, _ in t.curve], [v for _, v, _ in t.curve]
        by_trial = dict(name=f"#{i} {t.row.name}", legendgroup=str(i), showlegend=True) if one else dict(
            name=_label(o), legendgroup=o, showlegend=o not in shown)  # fmt: skip
        color = palette[(i - 1) % len(palette)] if one else _color(o)
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", **by_trial,
            line=dict(color=color, width=3 if t is rec.best else 1.5), marker=dict(size=5),
            hovertemplate=f"#{i} {html.escape(t.row.name)} ({_label(o)})<br>epoch %{{x}}: %{{y:.4f}}<extra></extra>",
        ))  # fmt: skip
        shown.add(o)
        if o in ("stopped_early", "failed"):  # the cross says why ASHA stopped the trial, where its run says it
            why = html.escape(t.row.stopped_by or "").replace(", ", ",<br>", 1) if o == "stopped_early" else ""
            hover = (dict(hovertemplate=f"#{i} {html.escape(t.row.name)}<br>{why}<extra></extra>") if why
                     else dict(hoverinfo="skip"))  # fmt: skip
            fig.add_trace(go.Scatter(x=[xs[-1]], y=[ys[-1]], mode="markers", showlegend=False,
                                     legendgroup=by_trial["legendgroup"], marker=dict(symbol="x", size=9, color=color),
                                     **hover))  # fmt: skip
    drawn = max((e for t in rec.trials for e, _, _ in t.curve), default=0)
    # the rungs the curves reach, and the next one: an interrupted search's curves to epoch 4 filled an eighth of
    # an axis drawn to its rung 32 (a walkthrough)
    rungs = [m for m in rec.milestones if m <= drawn] + [m for m in rec.milestones if m > drawn][:1]
    for k, m in enumerate(rungs):  # each rung's epoch centred on its line, on a white ground, on two
        # heights; the x axis's title says what they are. Rungs 1, 2, 4 of a 40-epoch search printed over each
        # other ("ASHA rungASHA rung 4"; then, one label saying it, "ASHA r4ng 1" in MLflow's pane: walkthroughs)
        fig.add_vline(x=m, line=dict(dash="dash", color="#555", width=1))
        fig.add_annotation(x=m, y=1 if k % 2 == 0 else 0.94, yref="paper", xanchor="center", yanchor="bottom",
                           text=str(m), showarrow=False, bgcolor="rgba(255,255,255,0.85)", borderpad=1,
                           font=dict(size=10, color="#555"))  # fmt: skip
    log = log_scale(v for t in rec.trials for _, v, _ in t.curve)
    fig.update_layout(title=f"{rec.metric} of every trial by epoch (thick: the best trial"
                            + ("; log scale" if log else "") + ")",
                      xaxis_title="epoch" + (" (dashed, numbered: ASHA's rungs)" if rec.milestones else ""),
                      yaxis_title=rec.metric, height=460,
                      legend_title=(f"trial ({'every one drawn' if undrawn else 'all'} {_label(next(iter(shown)))})"
                                    if one else "outcome"))  # fmt: skip
    if log:
        fig.update_yaxes(type="log", exponentformat="power")
    else:
        fig.update_yaxes(**one_value_range(v for t in rec.trials for _, v, _ in t.curve))
    # ticks for the epochs the axis shows (the curves and the rungs; plotly ranges it so): sized for --max-epochs,
    # an interrupted 300-epoch search's curves to epoch 50 had two ticks, 0 and 50 (a walkthrough)
    fig.update_xaxes(**integer_axis(max([*rungs, drawn])))
    return fig


# a trial's point in the best-so-far chart by outcome, as plots/best_so_far.png marks it: stopped and failed
# were both crosses, told apart by colour alone (a walkthrough)
_SYMBOLS = {"completed": "circle", "stopped_early": "x", "failed": "triangle-down"}


def best_so_far_figure(rec: SearchRecord):
    """Left: each trial's score in the order the searcher proposed them (`export.start_order`), and the best so
    far. Right: the best value reached against the epochs trained by all trials together (every epoch of every
    trial, in the order they were logged). None while no trial has a score."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if all(t.row.score is None for t in rec.trials):
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("by trial, in the order proposed",
                                                        "by epochs trained (all trials)"))  # fmt: skip
    shown: set[str] = set()
    best, xs_b, ys_b = None, [], []
    for i, t in enumerate(rec.trials, 1):
        s, o = t.row.score, t.row.outcome
        if s is None:
            continue
        fig.add_trace(go.Scatter(x=[i], y=[s], mode="markers", name=_label(o), legendgroup=o,
                                 showlegend=o not in shown, marker=dict(color=_color(o), size=9,
                                 symbol=_SYMBOLS.get(o, "circle-open")),
                                 hovertemplate=f"#{i} {html.escape(t.row.name)}: %{{y:.4f}} ({_label(o)}, "
                                               f"{plural(t.row.epochs, 'epoch')})<extra></extra>"), 1, 1)  # fmt: skip
        shown.add(o)
        if o != "failed" and (best is None or _better(s, best, rec.mode)):
            best = s
        if best is not None:
            xs_b.append(i)
            ys_b.append(best)
    fig.add_trace(go.Scatter(x=xs_b, y=ys_b, mode="lines", line=dict(shape="hv", color="#2ca02c", width=2),
                             name="best so far", legendgroup="best"), 1, 1)  # fmt: skip

    # in the order trained: epochs a trial sent in one report share its time, and take the trials' and their own
    # order (sorted by value after the time, a batch's best epoch came last: a walkthrough)
    points = sorted((ts, i, e, v, t.row.outcome) for i, t in enumerate(rec.trials) for e, v, ts in t.curve)
    best, xs, ys, new = None, [], [], []
    for n, (*_, v, o) in enumerate(points, 1):
        if o != "failed" and (best is None or _better(v, best, rec.mode)):
            best = v
            new.append((n, v))
        if best is not None:
            xs.append(n)
            ys.append(best)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(shape="hv", color="#2ca02c", width=2),
                             name="best so far", legendgroup="best", showlegend=False,
                             hovertemplate="%{x} epochs: best %{y:.4f}<extra></extra>"), 1, 2)  # fmt: skip
    # a dot where each new best was reached: a best reached at the last epoch trained was a 2-pixel stub on the
    # frame, and the first level lay on the bottom frame (a walkthrough)
    fig.add_trace(go.Scatter(x=[n for n, _ in new], y=[v for _, v in new], mode="markers", showlegend=False,
                             legendgroup="best", marker=dict(color="#2ca02c", size=7),
                             hovertemplate="%{x} epochs: a new best, %{y:.4f}<extra></extra>"), 1, 2)  # fmt: skip
    fig.update_xaxes(title_text="trial (#, as proposed)", **integer_axis(len(rec.trials)), row=1, col=1,
                     range=[0.5, len(rec.trials) + 0.5])  # (autoranged, the first and last markers were cut in half)
    fig.update_xaxes(title_text="epochs trained, all trials", **integer_axis(len(points)), row=1, col=2,
                     range=[0.5, len(points) + 0.5])  # fmt: skip
    fig.update_yaxes(title_text=rec.metric, row=1, col=1)
    log = log_scale([t.row.score for t in rec.trials] + [p[3] for p in points])
    if log:
        fig.update_yaxes(type="log", exponentformat="power")
    else:  # each panel on its own: the first has every score, the second the best by epochs
        fig.update_yaxes(**one_value_range(t.row.score for t in rec.trials), row=1, col=1)
        fig.update_yaxes(**one_value_range(ys), row=1, col=2)
    fig.update_layout(title=f"best {rec.metric} so far" + (" (log scale)" if log else ""), height=420)
    return fig


def optuna_study(rec: SearchRecord, outcomes: set[str] | None = None):
    """An in-memory Optuna study of the scored trials (value: best over epochs), with the distributions of the
    search space when it was logged; None if fewer than two trials have a score. `outcomes`: only trials that
    ended so (e.g. {"completed"}: those that trained all their epochs)."""
    import optuna

    dists = _distributions(rec.space)
    study = optuna.create_study(direction="maximize" if rec.mode == "max" else "minimize")
    n = 0
    for t in rec.trials:
        if t.row.score is None or t.row.outcome == "failed" or (outcomes is not None and t.row.outcome not in outcomes):
            continue
        params, pdists = {}, {}
        for name, raw in t.row.params.items():
            d = dists.get(name) if dists else _guess_distribution(name, rec)
            if d is None:
                continue
            value = _typed(raw, d)
            if value is None or not d._contains(d.to_internal_repr(value)):
                continue
            params[name], pdists[name] = value, d
        study.add_trial(optuna.trial.create_trial(params=params, distributions=pdists, value=t.row.score,
                                                  user_attrs={"name": t.row.name}))  # fmt: skip
        n += 1
    return study if n >= 2 else None


def _distributions(space: dict | None) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, spec in ((space or {}).get("params") or {}).items():
        kind = spec.get("type")
        if kind == "float":
            out[name] = FloatDistribution(spec["low"], spec["high"], log=bool(spec.get("log")), step=spec.get("step"))
        elif kind == "int":
            out[name] = IntDistribution(spec["low"], spec["high"], log=bool(spec.get("log")), step=spec.get("step") or 1)
        elif kind == "categorical":
            out[name] = CategoricalDistribution(tuple(spec["choices"]))
    return out


def _guess_distribution(name: str, rec: SearchRecord):
    """Without a logged space: a float range over the values seen, or the categories seen."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    values = [t.row.params[name] for t in rec.trials if name in t.row.params]
    try:
        nums = [float(v) for v in values]
        lo, hi = min(nums), max(nums)
        return FloatDistribution(lo, hi if hi > lo else lo + 1e-12)
    except ValueError:
        return CategoricalDistribution(tuple(sorted(set(values))))


def _typed(raw: str, dist) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return next((c for c in dist.choices if str(c) == raw), None)
    try:
        return int(float(raw)) if isinstance(dist, IntDistribution) else float(raw)
    except ValueError:
        return None


# ---- parallel coordinates (ours: Optuna's draws a near-white low end and a numeric `None` tick)
# plotly's Blues from its middle on: the worst trial still a clear mid blue on white, the best a dark navy
PAR_COLORSCALE = [[0.0, "rgb(107,174,214)"], [0.25, "rgb(66,146,198)"], [0.5, "rgb(33,113,181)"],
                  [0.75, "rgb(8,81,156)"], [1.0, "rgb(8,48,107)"]]  # fmt: skip
# the tick of a trial that has no value for a (conditional) parameter: its condition did not hold, so it was not
# searched and the trial kept the trainer's default (it was "not used", untrue of e.g. ablation's use_nce, whose
# default, true, trained InfoNCE in every trial with DCCA off: a walkthrough)
NOT_USED = "not searched"
NOT_USED_BY_TRAINER = "not used"  # such a trial's value the trainer does not read with its other values


# what an objective is, in the report's head (a reader of the report alone was never told: a walkthrough); the
# README's Metrics table and docs/method.md hold the definitions
MEANINGS = {
    "val/map_avg": "validation cross-modal retrieval mAP: audio clips query visual ones and the reverse, a clip "
                   "relevant when it shares a label, the two directions averaged",
    "val/map_a2v": "validation retrieval mAP, audio clips querying visual ones",
    "val/map_v2a": "validation retrieval mAP, visual clips querying audio ones",
    "cca/mean": "mean of the top canonical correlations of the CCA heads on the validation split",
    "loss/total": "the weighted training objective",
}


def trainer_default(name: str) -> str | None:
    """The trainer's default of a config field, as a trial that did not search it kept it (a conditional
    parameter's value in its config.yaml: a space cannot also fix a name it searches), or None for no such field."""
    import dataclasses

    from trainer import TrainConfig

    f = TrainConfig.__dataclass_fields__.get(name)
    if f is None or f.default is dataclasses.MISSING:
        return None
    return shown(str(f.default))


def kept(name: str, params: dict[str, str], fixed: dict | None = None) -> str | None:
    """What a trial that did not search `name` (its condition did not hold) had of it, from its other params (as
    MLflow holds them: text): "not used (loss_weighting fixed)" where the trainer does not read it with those
    (`trainer.config.USED_ONLY_WHEN`); else what it trained with, "not searched (default 0.01)", or the value the
    trainer resolved on the data where the trial logged one (auto fields). `fixed`: the space's fixed values,
    the overrides among them (a trial's params hold only what it searched). None for no such field."""
    from trainer.config import ABOVE_ZERO, USED_ONLY_WHEN

    for other, allowed in USED_ONLY_WHEN.get(name, ()):  # (the first condition that fails is said)
        value = params[other] if other in params else str((fixed or {})[other]) if other in (fixed or {}) else \
            trainer_default(other)  # fmt: skip
        try:
            used = float(value) > 0 if allowed == ABOVE_ZERO else value in {str(a) for a in allowed}
        except (TypeError, ValueError):
            used = True
        if not used:
            return f"{NOT_USED_BY_TRAINER} ({other} {shown(value)})"
    resolved = params.get(EFFECTIVE_PARAM + name)
    if resolved is not None:
        return f"{NOT_USED} (default, resolved on this data to {shown(resolved)})"
    default = trainer_default(name)
    return f"{NOT_USED} (default {default})" if default is not None else None
_MISSING_Y = -0.2  # where such trials cross that axis: below its values, apart from them
_MIN_GAP = 0.15  # the least distance between two tick labels of one axis, in axis heights


def _nice_ticks(lo: float, hi: float, n: int = 4, integer: bool = False) -> list[float]:
    """Round values (1, 2, 5 x 10^k steps) between lo and hi, about n of them."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Round values between lo and hi (> 0) for a log axis: decades, or 1-2-5 (or 1-9) multiples of them."""
    for mults in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in mults if lo <= m * 10.0**k <= hi]  # fmt: skip
        if len(ticks) >= 2:
            return ticks[:: max(1, len(ticks) // 6)]
    return _nice_ticks(lo, hi)


def _axis(label: str, values: list, dist=None, missing: list | None = None) -> dict:
    """One axis of the chart: each trial's height on it (0-1, _MISSING_Y where it has no value) and its ticks
    (position, text): the lowest and highest value, round values between them that do not crowd those, and
    NOT_USED below the values when some trial has none (`missing`: what each such trial had of it, `kept`, for
    its hover)."""
    from optuna.distributions import CategoricalDistribution

    present = [v for v in values if v is not None]
    if isinstance(dist, CategoricalDistribution):
        cats = [c for c in dist.choices if c in present]
        if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in cats):
            cats.sort()
        pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
        ys = [pos[v] if v is not None else _MISSING_Y for v in values]
        ticks = [(pos[c], shown(c)) for c in cats]  # as the table and the console show them (1.0 there was 1)
        texts = {v: shown(v) for v in present}
    else:
        log = bool(getattr(dist, "log", False)) and min(present) > 0
        integer = type(dist).__name__ == "IntDistribution" or all(float(v).is_integer() for v in present)
        f = math.log10 if log else float
        lo, hi = f(min(present)), f(max(present))

        def y(v: float) -> float:
            return 0.5 if hi == lo else (f(v) - lo) / (hi - lo)

        def fmt(v: float) -> str:
            return str(int(round(v))) if integer else f"{v:.3g}"

        ys = [y(v) if v is not None else _MISSING_Y for v in values]
        ends = [min(present), max(present)] if hi > lo else [min(present)]
        ticks = [(y(v), fmt(v)) for v in ends]
        inner = _log_ticks(min(present), max(present)) if log else _nice_ticks(min(present), max(present),
                                                                               integer=integer)  # fmt: skip
        for v in inner:
            if all(abs(y(v) - p) >= _MIN_GAP for p, _ in ticks):
                ticks.append((y(v), fmt(v)))
        texts = {v: fmt(v) if integer else f"{v:.4g}" for v in present}
    if len(present) < len(values):
        ticks.append((_MISSING_Y, NOT_USED))
    hover = [texts[v] if v is not None else ((missing or [None] * len(values))[i] or NOT_USED)
             for i, v in enumerate(values)]  # fmt: skip
    return dict(label=label, ys=ys, ticks=sorted(ticks), hover=hover)


def in_space_order(rec: SearchRecord, names) -> list[str]:
    """Parameter names in the space's order (a conditional parameter follows the one that switches it on), others
    by name after them: the parallel coordinates, the trial table and the search's own lines agree."""
    order = list(((rec.space or {}).get("params") or {}))
    return sorted(names, key=lambda p: (order.index(p) if p in order else len(order), p))


def parallel_figure(rec: SearchRecord, study):
    """Every scored trial as a line across its objective value and parameters, coloured by its value (darker:
    better; the best trial thicker, drawn on top), the parameters in the space's order. A trial without a
    conditional parameter crosses that axis at NOT_USED, below the values."""
    import plotly.graph_objects as go
    from plotly.colors import sample_colorscale

    trials = sorted(study.trials, key=lambda t: t.value, reverse=rec.mode == "min")  # worst first, best on top
    names = in_space_order(rec, {p for t in trials for p in t.params})
    dists = {p: next(t.distributions[p] for t in trials if p in t.distributions) for p in names}
    values = [t.value for t in trials]
    log = log_scale(values)
    if log:
        from optuna.distributions import FloatDistribution

        metric_axis = _axis(rec.metric + " (log)", values, FloatDistribution(min(values), max(values), log=True))
    else:
        metric_axis = _axis(rec.metric, values)
    texts = [{k: str(v) for k, v in t.params.items()} for t in trials]  # (as MLflow holds them)
    fixed = (rec.space or {}).get("fixed") or {}
    axes = [metric_axis] + [_axis(p, [t.params.get(p) for t in trials], dists[p],
                                  [kept(p, x, fixed) if p not in x else None for x in texts]) for p in names]  # fmt: skip
    for a in axes[1:]:  # a log-scaled axis says so under it (only its ticks, 0.000496 ... 0.00928, told it: a
        a["title"] = a["label"] + (" (log)" if getattr(dists[a["label"]], "log", False) else "")  # walkthrough)
    metric_axis["title"] = metric_axis["label"]
    values = [math.log10(v) for v in values] if log else values  # the colours follow the axis
    lo, hi = min(values), max(values)
    shade = [0.5 if hi == lo else (v - lo) / (hi - lo) for v in values]
    if rec.mode == "min":
        shade = [1 - s for s in shade]
    colors = sample_colorscale(PAR_COLORSCALE, shade)
    xs = list(range(len(axes)))
    fig = go.Figure()
    for k, t in enumerate(trials):
        best = k == len(trials) - 1
        name = t.user_attrs.get("name", f"trial {t.number}")
        fig.add_trace(go.Scatter(
            x=xs, y=[a["ys"][k] for a in axes], mode="lines+markers", showlegend=False,
            line=dict(color=colors[k], width=3.5 if best else 2), marker=dict(size=5, color=colors[k]),
            customdata=[f"{a['label']}: {a['hover'][k]}" for a in axes],
            hovertemplate=f"{html.escape(name)}<br>%{{customdata}}<extra></extra>",
        ))  # fmt: skip
    fig.add_trace(go.Scatter(
        x=[None, None], y=[None, None], mode="markers", showlegend=False, hoverinfo="skip",
        marker=dict(color=[lo, hi], cmin=lo, cmax=hi if hi > lo else lo + 1e-9, colorscale=PAR_COLORSCALE,
                    reversescale=rec.mode == "min", showscale=True,
                    colorbar=dict(title=dict(text=f"{'log10 ' if log else ''}{rec.metric}<br>(darker: better)",
                                                    side="top"), thickness=14)),
    ))  # fmt: skip
    missing = any(tick[1] == NOT_USED for a in axes for tick in a["ticks"])
    annotations = [dict(x=i, y=p, text=text, showarrow=False, xanchor="right", xshift=-5,
                        bgcolor="white", borderpad=0,  # readable over the lines (at 0.85 white, the line of an
                        # axis end's trial struck its label through: a walkthrough)
                        font=dict(size=10, color="#888" if text == NOT_USED else "#444",
                                  style="italic" if text == NOT_USED else "normal"))
                   for i, a in enumerate(axes) for p, text in a["ticks"]]  # fmt: skip
    shapes = [dict(type="line", x0=i, x1=i, y0=0, y1=1, line=dict(color="#888", width=1), layer="below") for i in xs]
    fig.update_layout(
        title=f"parallel coordinates: every scored trial, {rec.metric} best over epochs"
              + (" (ASHA-stopped trials at the epochs they ran)" if _asha(rec) else ""),
        xaxis=dict(tickmode="array", tickvals=xs, ticktext=[a["title"] if len(a["title"]) < 22 else a["title"][:19] + "..."
                                                             for a in axes],
                   range=(-0.45, len(axes) - 0.7), showgrid=False, zeroline=False),
        yaxis=dict(range=(_MISSING_Y - 0.08 if missing else -0.08, 1.06), visible=False, fixedrange=True),
        annotations=annotations, shapes=shapes, hovermode="closest", height=460,
    )  # fmt: skip
    if len(axes) > PAR_AXES_IN_PAGE:  # 23 axes of a full hsc_mae search in the page's width: their tick labels ran
        # into each other; wider, the page scrolls it sideways (.plot-wrap)
        fig.update_layout(width=PAR_AXIS_PX * len(axes), autosize=False)
    return fig


PAR_AXES_IN_PAGE, PAR_AXIS_PX = 12, 95  # axes that fit a 1,100-pixel page; pixels per axis beyond that


PED_ANOVA_FROM = 50  # scored trials; Optuna: at least 5 trials above PED-ANOVA's 10 % quantile


def param_importances(study) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances over the study's trials, most important first, and the method. From
    PED_ANOVA_FROM scored trials on, PED-ANOVA (Optuna's default evaluator: it also weighs conditional
    parameters, and takes milliseconds where fANOVA took 0.5-1.3 s of a 64-trial search's tail); below that,
    where Optuna advises against PED-ANOVA, fANOVA (seed 0, needs scikit-learn), else PED-ANOVA all the same.
    Computed once per search: the report's chart and the parent run's `plots/param_importance.png` show the same
    numbers."""
    import optuna

    evaluator, name = optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"
    if len(study.trials) < PED_ANOVA_FROM:
        try:
            import sklearn  # noqa: F401

            evaluator, name = optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
        except ImportError:
            pass
    with warnings.catch_warnings():  # small searches: "some regimes have less than 2 trials"
        warnings.simplefilter("ignore")
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), name


def _wrap(text: str, width: int, sep: str = "\n") -> str:
    import textwrap

    return sep.join(textwrap.wrap(text, width))


IMPORTANCE_FROM = 3  # trials: fewer, and the report draws no importances


def importance_basis(rec: SearchRecord, study) -> tuple[Any, str, str]:
    """The study the importances are computed over, and what to call it (short, for the title; long, for the
    caption). As Optuna ranks a search whose pruner stopped trials (`get_param_importances` leaves pruned trials
    out): over the trials that trained all their epochs, when IMPORTANCE_FROM or more did. Else over every scored
    trial, saying that the scores of the trials ASHA stopped are of fewer epochs. (Every scored trial, each at its
    best epoch, mixed 1-epoch and 12-epoch scores without a word: what helps in the first epoch, read as what
    helps the final mAP; a walkthrough.)"""
    if study is None:
        return None, "", "the scored trials"
    early = sum(1 for t in rec.trials if t.row.score is not None and t.row.outcome not in ("failed", "completed"))
    if not early:
        return study, plural(len(study.trials), "trial"), "the scored trials"
    full = _quiet_study(rec, {"completed"})
    n_full = len(full.trials) if full is not None else 0
    asha = _asha(rec)
    # (a FIFO search stops none: its others were cut off or still run)
    others = f"{plural(early, 'trial')} {'stopped early or not ended' if asha else 'not ended'}"
    if n_full >= IMPORTANCE_FROM:
        return (full, f"{n_full} completed trials",
                f"the {plural(n_full, 'trial')} that trained all their epochs (the {others} "
                f"{'is' if early == 1 else 'are'} left out, their scores being of fewer epochs"
                + ("; as Optuna ranks a pruned search: the survivors are the better trials, so this tells what "
                   "matters among good configurations)" if asha else ")"))  # fmt: skip
    return (study, f"{plural(len(study.trials), 'trial')}, {early} not completed",
            "every scored trial, each at its best epoch: "
            + (f"only {n_full} trained all their epochs (too few to rank alone)" if n_full else
               "none trained all its epochs")  # ("only 0 trained all their epochs": a walkthrough)
            + f", and the scores of the {others} are of fewer epochs, so this ranks "
            + ("partly " if n_full else "") + "what helps in the first epochs")  # fmt: skip


def importance_figure(rec: SearchRecord, importances: dict[str, float], method: str, which: str,
                      unranked: str = ""):  # fmt: skip
    """The parameter importances as horizontal bars, most important on top; `unranked` says what is not there."""
    import plotly.graph_objects as go

    names = list(importances)[::-1]
    fig = go.Figure(go.Bar(x=[importances[n] for n in names], y=names, orientation="h",
                           text=[f"{importances[n]:.2f}" for n in names], textposition="outside"))  # fmt: skip
    fig.update_xaxes(title_text=f"importance for {rec.metric}"
                     + (f"<br><i>{_wrap(html.escape(unranked), 110, '<br>')}</i>" if unranked else ""))  # fmt: skip
    fig.update_layout(title=f"parameter importance for {rec.metric} ({method}, {which})",
                      height=max(300, 60 + 40 * len(names)))  # fmt: skip
    return fig


def weights_figure(rec: SearchRecord):
    """The best trial's effective loss weights and log-variances per epoch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    learned = any(k.startswith("logvar/") for k in rec.best_history)  # fixed weights have no s
    titles = ("effective loss weight", "log-variance s") if learned else ("effective loss weight (fixed)",)
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    # one colour and one legend entry per loss in both panels (each series had its own colour: dcca blue on the
    # left, purple on the right; a walkthrough)
    losses = sorted({k.split("/", 1)[1] for k in rec.best_history if k.startswith(("weight/", "logvar/"))})
    from plotly.colors import DEFAULT_PLOTLY_COLORS as palette  # plotly's own colour cycle, not a copy of it

    from .trial_plots import DASHES
    for col, prefix in ((1, "weight/"), (2, "logvar/"))[:len(titles)]:
        for key in sorted(k for k in rec.best_history if k.startswith(prefix)):
            pts, loss = rec.best_history[key], key.split("/", 1)[1]
            color = palette[losses.index(loss) % len(palette)]
            dash = DASHES[losses.index(loss) % len(DASHES)][0]  # (equal weights lay on one another: one showed)
            fig.add_trace(go.Scatter(x=[e for e, _ in pts], y=[v for _, v in pts], mode="lines+markers",
                                     name=loss, legendgroup=loss, showlegend=col == 1,
                                     line=dict(color=color, dash=dash),
                                     hovertemplate=f"{key}<br>epoch %{{x}}: %{{y:.4f}}<extra></extra>"), 1, col)  # fmt: skip
    fig.update_xaxes(title_text="epoch", **integer_axis(max((e for v in rec.best_history.values() for e, _ in v),
                                                             default=1)))  # fmt: skip
    fig.update_layout(title=f"best trial {html.escape(rec.best.row.name)}: loss weights", height=400)
    return fig


def trained_value(rec: SearchRecord, row, name: str) -> str:
    """What a trial trained `name` with, as text: searched (its params), else fixed by the space (its recorded
    fixed values, the overrides among them), else by --set or a config's set: (the parent's set.* params: a
    search whose space was not logged), else the trainer's default."""
    fixed = (rec.space or {}).get("fixed") or {}
    if name in row.params:
        return str(row.params[name])
    if name in fixed:
        return str(fixed[name])
    return str(rec.settings.get(f"set.{name}", trainer_default(name)))


def _spectrum_caveats(rec: SearchRecord, best) -> str:
    """What the spectrum chart cannot show, in words: a trial whose CCA heads no loss trained (use_dcca off, or
    its fixed weight 0: the values rise over epochs all the same and read as the method's), and a spectrum cut
    to its first components (read as cca_k 3: walkthroughs)."""
    said = ""
    off = trained_value(rec, best.row, "use_dcca").lower() in ("false", "0", "no", "off")
    try:
        zero = (trained_value(rec, best.row, "loss_weighting") == "fixed"
                and float(trained_value(rec, best.row, "w_dcca")) == 0)  # fmt: skip
    except ValueError:
        zero = False
    if off or zero:
        said += (" This trial trained without the DCCA loss (" + ("use_dcca False" if off else "w_dcca 0 with fixed "
                 "loss weights") + "): nothing trained its CCA heads, and these are a random projection's "
                 "correlations, which say nothing of the method.")  # fmt: skip
    drawn = max(len(v) for v in rec.best_spectrum.values())
    try:
        k = int(float(best.row.params.get(f"{EFFECTIVE_PARAM}cca_k", "nan")))
    except ValueError:
        k = 0
    if drawn < k or (not rec.spectrum_whole and not k):
        of = f"{drawn} of its {k}" if drawn < k else f"{drawn}"
        said += (f" Only the first {of} components are drawn: MLflow holds no more of this trial's spectrum "
                 "(its cca_spectrum.csv, written with every component when a trial ends, is missing, or was "
                 "rebuilt from its cca/rho_* metrics).")
    return said


def spectrum_figure(rec: SearchRecord):
    """The best trial's validation canonical correlations: the spectrum at a few epochs, and all of it as a
    heat map (epoch x component)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    spec = rec.best_spectrum
    epochs = sorted(spec)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("spectrum at epochs", "every epoch"))
    # the first, the tested (its kept checkpoint's) and the last epoch: the middle one it drew instead hid under
    # the last on short searches, and a long one's tested epoch (60 of 300) was not drawn (a walkthrough)
    from .trial_plots import DASHES, spectrum_epochs

    picks, tested = spectrum_epochs(epochs, rec.best.row.final.get("test/epoch"))
    for k, e in enumerate(picks):  # each its own dash: the tested epoch's line lay under the last one's, unseen
        fig.add_trace(go.Scatter(x=[f"rho_{i:02d}" for i in range(len(spec[e]))], y=spec[e], mode="lines+markers",
                                 name=f"epoch {e}" + (" (tested)" if e == tested else ""),
                                 line=dict(dash=DASHES[k % len(DASHES)][0])), 1, 1)  # fmt: skip
    width = max(len(v) for v in spec.values())
    z = [[spec[e][i] if i < len(spec[e]) else None for i in range(width)] for e in epochs]
    fig.add_trace(go.Heatmap(z=z, x=[f"rho_{i:02d}" for i in range(width)], y=epochs, zmin=0, zmax=1,
                             colorscale="Viridis", colorbar=dict(title="rho", x=1.02)), 1, 2)  # fmt: skip
    fig.update_yaxes(title_text="rho", range=[-0.03, 1.03], row=1, col=1)  # (a correlation near 0 or 1 lay half
    # under the frame: a walkthrough)
    fig.update_yaxes(title_text="epoch", **integer_axis(epochs[-1]), row=1, col=2)
    fig.update_layout(title=f"best trial {html.escape(rec.best.row.name)}: canonical correlations (validation)",
                      height=460, legend=dict(orientation="h", x=0, xanchor="left", y=-0.18, yanchor="top"))
    # (the legend below the line panel, in one row: at x=0.38 it lay on the lines and, in a window up to 1024 px
    # wide, on the heat map's tested epoch; a walkthrough)  # fmt: skip
    return fig


# ---------------------------------------------------------------------------------------------- the page
def _unsearched(name: str, params: dict, fixed: dict) -> str:
    """The cell of a parameter a trial has no value for: a searched one whose condition did not hold, what it
    had of it (`kept`: a blank cell read as "not used", untrue where the trainer used its default); blank for
    anything else (a resolved value)."""
    if name.startswith(EFFECTIVE_PARAM) or not params:  # (a trial whose params never reached MLflow: unknown)
        return ""
    return kept(name, params, fixed) or ""


def _table(rec: SearchRecord) -> str:
    fixed = (rec.space or {}).get("fixed") or {}
    names = {k for t in rec.trials for k in t.row.params}
    own, resolved = split_params(dict.fromkeys(names, ""))
    own = in_space_order(rec, own)  # (they were by name, unlike the parallel coordinates: a walkthrough)
    params = [*own, *(EFFECTIVE_PARAM + k for k in resolved)]  # the config's values, then what the data resolved
    # a column only when a trial failed or ASHA's run tag says why it stopped one: the reason beside the outcome,
    # wide enough to read (at the far right it was squeezed to a narrow column)
    errors, stops = any(t.row.error for t in rec.trials), any(t.row.stopped_by for t in rec.trials)
    why = [{(True, False): "why it failed", (False, True): "why ASHA stopped it",
            (True, True): "why it failed or was stopped"}[errors, stops]] if errors or stops else []  # fmt: skip
    # each trial's test mAP, of the epoch it kept (`tested`), where a trial reached its end: it was only in the
    # best trial's line and the summary table (a walkthrough)
    test = ["test mAP"] if any("test/map_avg" in t.row.final for t in rec.trials) else []
    head = ["#", "trial", "outcome", *why, "epochs", f"{rec.metric} (best)", *test, "seconds", *params, "run id"]
    rows = []
    for i, t in enumerate(rec.trials, 1):
        r = t.row
        reason = _reason(r.error) if r.error else (r.stopped_by or "").removeprefix("stopped by ASHA ")
        tested_map = r.final.get("test/map_avg")
        cells = [str(i), r.name, _label(r.outcome), *([reason] if why else []), str(r.epochs),
                 "" if r.score is None else f"{r.score:.4f}",
                 *(["" if tested_map is None else f"{tested_map:.4f}"] if test else []),
                 "" if r.seconds is None else f"{r.seconds:.1f}",
                 *(shown(r.params[p]) if p in r.params else _unsearched(p, r.params, fixed) for p in params),
                 r.run_id]  # fmt: skip
        cls = ' class="best"' if t is rec.best else ""
        rows.append(f"<tr{cls}>" + "".join(_td(c, h in why) for h, c in zip(head, cells)) + "</tr>")
    return ('<div class="table-wrap"><table><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")  # fmt: skip


def _td(text: Any, why: bool) -> str:
    cls = ' class="why"' if why else ""
    return f"<td{cls}>{html.escape(str(text))}</td>"


def _asha(rec: SearchRecord) -> bool:
    """The search ran ASHA (searches record their scheduler; ASHA is the default)."""
    return rec.settings.get("scheduler", "asha") == "asha"


def selected_by(rec: SearchRecord) -> str:
    """The metric whose best epoch each trial of the search kept and tested (the trainer's `select_metric`, fixed
    in the recorded space: the search's --metric when the trainer can select by it, else its default)."""
    from trainer import TrainConfig

    fixed = (rec.space or {}).get("fixed") or {}
    return str(fixed.get("select_metric") or TrainConfig().select_metric)


def tested(row, by: str) -> str:
    """"; test mAP 0.5286 (of epoch 6, the epoch of its highest val/map_avg)": a trial's test metric and the epoch
    `by` (`selected_by`) selected, whose checkpoint it is of (not its last epoch unless that one was best); empty
    for a trial that never reached its end."""
    from trainer.config import select_mode

    test = row.final.get("test/map_avg")
    if test is None:
        return ""
    epoch = row.final.get("test/epoch")  # searches before it was logged: not known
    best = "lowest" if select_mode(by) == "min" else "highest"
    return f"; test mAP {test:.4f}" + (f" (of epoch {int(epoch)}, the epoch of its {best} {by})" if epoch else "")


def _reason(error: str | None) -> str:
    """Why a trial failed, from its hsc.error tag: the exception's line (the tag may hold the end of Ray's error
    file, a traceback whose last line is the exception)."""
    lines = [ln.strip() for ln in (error or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 0.75em; max-width: 1250px; color: #222; }
/* (the padding: at 800 px the text touched the window's edge; 0.75em keeps a 760 px plot unscrolled there) */
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .note { color: #666; font-size: 0.9em; } p { overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; max-width: 100%; }  /* a wide table scrolls in its box, not the page */
/* the # stays in view as the table scrolls sideways (scrolled to the parameters, no row said which trial it was) */
.table-wrap td:first-child, .table-wrap th:first-child { position: sticky; left: 0; z-index: 1;
  box-shadow: inset -1px 0 0 #bbb; }  /* (a collapsed border does not stick with its cell) */
td:first-child { background: #fff; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { border: 1px solid #ddd; padding: 3px 6px; }
th { background: #f4f4f4; } tr.best td { background: #e8f5e9; font-weight: 600; } .why { min-width: 24em; }
.plot-wrap { overflow-x: auto; max-width: 100%; position: relative; }  /* a narrow window scrolls a plot, */
.plot-wrap > div { min-width: 760px; }  /* which below this width squeezed its axes, labels and legends together */
"""


TOP_MARGIN, TITLE_TOP = 100, 34  # px: the modebar takes the figure's top ~30 px, the title the next ~25


def render(rec: SearchRecord, source: str = "", computed: dict | None = None) -> str:
    """The report as one HTML document, plotly.js inlined (opens offline, and in MLflow's artifact viewer).
    `computed`, when given, receives what was computed on the way (`importances`: name -> value), so the caller
    need not compute it again."""
    from plotly.offline import get_plotlyjs

    parts: list[str] = []

    def add(title: str, make, note: str = "") -> None:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        try:
            fig = make()
        except Exception as e:  # one figure that cannot be drawn must not cost the others
            log.warning("report: %s not drawn: %s", title, e)
            parts.append(f'<p class="note">not drawn: {html.escape(str(e))}</p>')
            return
        if fig is None:
            parts.append('<p class="note">not enough trials with a score to draw this.</p>')
            return
        # the title below plotly's toolbar (the modebar, top right), subplot titles below the title
        fig.update_layout(template="plotly_white", margin=dict(t=TOP_MARGIN, b=50),
                          title=dict(yref="container", y=1, yanchor="top", pad=dict(t=TITLE_TOP)))  # fmt: skip
        parts.append('<div class="plot-wrap">' + fig.to_html(full_html=False, include_plotlyjs=False,
                                                             config={"displaylogo": False}) + "</div>")  # fmt: skip

    unfinished = rec.said = _unfinished(rec, source)  # first: it relabels the trials of a search whose driver is
    # gone (and the console prints the same note: its own reading could differ in a race, the review)
    if not unfinished and (computed or {}).get("unfinished"):  # the driver's own, interrupted as it ends
        unfinished = f"{computed['unfinished']}; the report shows it as it was when written"
    counts: dict[str, int] = {}
    for t in rec.trials:
        counts[t.row.outcome] = counts.get(t.row.outcome, 0) + 1
    said = [f"{n} {html.escape(_label(o))}" for o, n in sorted(counts.items())]
    asked = rec.settings.get("num_samples", "")
    unstarted = (int(asked) if str(asked).isdigit() else 0) - len(rec.trials)
    if said and unstarted > 0:  # an interrupted search's other trials (or a search still running): as the console
        said.append(f"{unstarted} not started (of num_samples {len(rec.trials) + unstarted})")
    best = rec.best
    asha, by = _asha(rec), selected_by(rec)
    keys = ("space", "data", "num_samples", "max_epochs", "scheduler") + (("grace_period", "reduction_factor")
                                                                         if asha else ())  # fmt: skip
    settings = ", ".join(f"{k} {shown(rec.settings[k])}" for k in keys if k in rec.settings)
    # values fixed for every trial by --set or a config's `set:` (the parent's set.* params): a trial's own run
    # holds only what was searched, and the report never named them (a walkthrough: hidden_dim 48 nowhere)
    fixed = ", ".join(f"{k.removeprefix('set.')} {shown(v)}" for k, v in sorted(rec.settings.items())
                      if k.startswith("set."))  # fmt: skip
    head = [
        f"<h1>Search {html.escape(rec.name)}</h1>",
        f'<p class="meta">parent run {rec.parent_run_id} in experiment {rec.experiment_id}'
        + (f" at {html.escape(without_password(source))}" if source else "")  # the report is read by everyone
        + f"; written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>",
        f'<p class="meta">{html.escape(settings)}</p>',
        f'<p class="meta">objective: {html.escape(rec.metric)}, '
        + (f"{html.escape(MEANINGS[rec.metric])}, " if rec.metric in MEANINGS else "")
        + f"{'higher' if rec.mode == 'max' else 'lower'} is better; each trial scored by its best epoch</p>",
        # (where they were given: a search before the tag hsc.set_from does not say, and is not said to be --set)
        *([f'<p class="meta">fixed for every trial{f" ({html.escape(rec.set_where)})" if rec.set_where else ""}: '
           f'{html.escape(fixed)}</p>'] if fixed else []),
        "<p>trials: " + (", ".join(said) or "none") + "</p>",
        *([f'<p class="note">{html.escape(unfinished)}</p>'] if unfinished else []),
        *(f'<p class="note">at the start: {html.escape(n.removeprefix("note: "))}</p>' for n in rec.notes),
    ]
    if best is not None:
        own, resolved = params_line(best.row.params)
        head.append(f"<p><b>best trial {html.escape(best.row.name)}</b> ({html.escape(_label(best.row.outcome))}, "
                    f"{plural(best.row.epochs, 'epoch')}): {html.escape(rec.metric)} {best.row.score:.4f}{tested(best.row, by)}; "
                    f"{html.escape(own)}" + (f" (resolved on this data: {html.escape(resolved)})" if resolved else "")
                    + "</p>")  # fmt: skip
    blank = [t for t in rec.trials if not t.curve  # failed (or cut off) before their first epoch: no point to draw
             and t.row.outcome not in ("running", "unfinished", "interrupted")]  # (a live search's trial in its
    # first epoch; an interrupted search's, whose epochs may have trained unrecorded: below)
    kinds = ", ".join(sorted({_label(t.row.outcome) for t in blank}))
    many = len(blank) != 1
    unseen = (f" Not drawn: {len(blank)} trial{'s' * many} that ended before {'their' if many else 'its'} first "
              f"epoch ({kinds}; the table below gives why)." if blank else "")  # fmt: skip
    cut = sum(1 for t in rec.trials if not t.curve and t.row.outcome == "interrupted")
    if cut:  # "ended before its first epoch" was untrue of a trial that trained to its end, its one report lost
        # to the Ctrl-C (a walkthrough); epochs since a trial's last report have no checkpoint either (the review)
        unseen += (f" Not drawn: {plural(cut, 'trial')} with no epoch recorded when the search was interrupted "
                   "(a trial reports at ASHA's rungs, every --checkpoint-every-s and at its end: epochs since its "
                   "last report were not recorded, and `hsc-search resume` trains them again).")  # fmt: skip
    add("Learning curves", lambda: curves_figure(rec),
        ("Dashed lines: ASHA's rungs. A trial reaching one continues only if it is in the top 1/reduction_factor "
         "of the trials that reached that rung before it (Ray's asynchronous ASHA: an early trial can go on with a "
         "score a later one is stopped for). A cross: where ASHA stopped a trial, or where it failed." if asha else
         "FIFO: every trial runs to max_epochs unless it fails. A cross: where a trial failed.") + unseen)  # fmt: skip
    kept = ("the checkpoint it kept and tested" if by == rec.metric else
            f"its kept and tested checkpoint is of its best {by}, which can be another epoch")  # fmt: skip
    add("Best so far", lambda: best_so_far_figure(rec),
        f"A trial's score is its best {rec.metric} over its epochs ({kept}). Left: trials in the order the "
        "searcher proposed them (the table's #). Right: against every epoch trained by any trial, in the order they "
        "were logged: the cost of reaching each level. A failed trial's triangle is its best before it failed: it "
        "never counts as the best (the searcher was told it failed); one that failed before its first epoch has "
        "no point.")  # fmt: skip
    study = _quiet_study(rec)
    add("Parallel coordinates", lambda: parallel_figure(rec, study) if study else None)
    ranked, which, basis = importance_basis(rec, study)

    def importance() -> Any:
        if not ranked or len(ranked.trials) < IMPORTANCE_FROM:
            return None
        # a parameter with one value in every ranked trial explains nothing by construction: its bar of 0.00 read
        # as "does not matter" where the search had not varied it among them (a walkthrough: topk 5 in all three);
        # where none varied, fANOVA is not asked ("Encountered zero total variance in all trees", the review)
        every = [p for p in {p for t in ranked.trials for p in t.params} if all(p in t.params for t in ranked.trials)]
        same = [p for p in every if len({repr(t.params[p]) for t in ranked.trials}) == 1]
        if same and len(same) == len(every):
            importances, method = {}, "not computed"
        else:
            importances, method = param_importances(ranked)
        # fANOVA weighs only parameters every trial has: the conditional ones (weight_lr, w_rec, ...) were left out
        # without a word, read as not searched or of no importance (a walkthrough)
        unranked = sorted({p for t in ranked.trials for p in t.params} - set(importances) - set(same))
        importances = {p: v for p, v in importances.items() if p not in same}
        left = "; ".join(
            ([f"not ranked (used by only some trials, which {method} cannot weigh): {', '.join(unranked)}"]
             if unranked else [])
            + ([f"not varied among these {len(ranked.trials)} trials: {', '.join(sorted(same))}"] if same else []))
        if computed is not None:
            computed["importances"], computed["importance_title"] = importances, (
                f"parameter importance for {rec.metric}\n({method}, {which})"
                + (f"\n{_wrap(left, 70)}" if left else ""))  # fmt: skip
        return importance_figure(rec, importances, method, which, left)

    add("Parameter importance", importance,
        f"How much of the variation in the score each searched parameter explains, over {basis}; with few trials "
        "this is a hint, not a measurement.")  # fmt: skip
    if best is not None and any(k.startswith("logvar/") for k in rec.best_history):  # learned weights
        add("Best trial: loss weights", lambda: weights_figure(rec),
            "Effective weight on each raw loss, exp(-s_i) / R_i (R_i: the loss at the first step; 1 for "
            "loss_weighting learned_raw), and the learned log-variance s_i of each loss (Kendall et al.'s "
            "uncertainty weighting).")  # fmt: skip
    elif best is not None and any(k.startswith("weight/") for k in rec.best_history):  # fixed: flat lines, as a table
        fixed = ", ".join(f"{k.removeprefix('weight/')} {pts[-1][1]:g}" for k, pts in sorted(rec.best_history.items())
                          if k.startswith("weight/") and pts)  # fmt: skip
        parts.append("<h2>Best trial: loss weights</h2>"
                     f'<p class="note">fixed (loss_weighting fixed): {html.escape(fixed)}</p>')
    if best is not None and rec.best_spectrum:
        add("Best trial: canonical correlations", lambda: spectrum_figure(rec),
            "Canonical correlations between the audio and visual CCA heads' outputs on the validation split, "
            "largest first (1: a direction both views agree on completely)." + _spectrum_caveats(rec, best))
    parts.insert(0, "\n".join(head))
    parts.append("<h2>Trials</h2>" + _table(rec))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>hsc-search report: {html.escape(rec.name)}</title><style>{STYLE}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def _quiet_study(rec: SearchRecord, outcomes: set[str] | None = None):
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna_study(rec, outcomes)
    finally:
        optuna.logging.set_verbosity(level)


def write_report(client, parent_run_id: str, out: str | Path, source: str = "", computed: dict | None = None) -> Path:
    """Reads the search from MLflow and writes its report to `out`. Returns the path (`computed`: as `render`)."""
    from .search_record import read_search

    for thread in _PRELOAD:  # one import at a time: the modules it is importing are the ones render needs
        thread.join()
    rec = read_search(client, parent_run_id)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(str(out), render(rec, source, computed))  # whole or not at all: a full disk kept the earlier file
    return out


def publish_report(client, parent_run_id: str, out: str | Path, source: str = "", computed: dict | None = None) -> Path:
    """`write_report`, then logs the file to the parent run (MLflow's artifact viewer shows it)."""
    path = write_report(client, parent_run_id, out, source, computed)
    _log_as_artifact(client, parent_run_id, path)
    return path


# ---------------------------------------------------------------------------------------------- the command
class ReportError(ValueError):
    """No report: the tracking store cannot be reached, or holds no such search."""


def check_tracking_uri(tracking_uri: str | None) -> None:
    """Fails fast, with one line, on a tracking store that is not there (instead of MLflow retrying for minutes
    or creating an empty sqlite database)."""
    from .runs import StoreError, check_store_to_read

    try:
        check_store_to_read(tracking_uri)
    except StoreError as e:
        raise ReportError(str(e)) from None


def report_search(tracking_uri: str | None, experiment: str | None, parent_run_id: str | None = None,
                  out: str | Path | None = None, log_to_run: bool = True) -> tuple[Path, SearchRecord]:  # fmt: skip
    """Writes the report of a search (the latest in `experiment` unless `parent_run_id`) and, with `log_to_run`,
    logs it to the parent run and tags the experiment for MLflow's model-training view. The default `out` is
    the search's folder (beside best_config.yaml) when it is on this machine, else ./hsc_outputs/<name>/.
    `experiment` None: hsc-search; given with `parent_run_id`, the run must be in it."""
    import os

    from .export import (ExportError, _not_another_searchs_file, check_out, find_experiment_id, latest_parent_run,
                         search_in, search_of)  # fmt: skip
    from .runs import (REPORT_ARTIFACT, client_for, http_failure, resolved_tracking_uri, served_artifacts_problem,
                       tag_experiment)  # fmt: skip
    from .search_record import RecordError, read_search
    from .settings import SearchSettings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if out is not None:
            out = check_out(out, REPORT_ARTIFACT, kind="report")  # before anything is read
        check_tracking_uri(tracking_uri)
        client = client_for(tracking_uri)
        if parent_run_id is None:
            experiment = experiment or SearchSettings.experiment
            parent_run_id = latest_parent_run(client, find_experiment_id(client, experiment), experiment)
        else:
            parent_run_id, _ = search_of(client, parent_run_id, tracking_uri, experiment)
        served = served_artifacts_problem(client.get_run(parent_run_id).info.artifact_uri, tracking_uri,
                                          "--tracking-uri", f"search run {parent_run_id}")  # fmt: skip
        if served:
            raise ReportError(served)
        rec = read_search(client, parent_run_id)
    except (ExportError, RecordError, ReportError) as e:
        raise ReportError(str(e)) from None
    except Exception as e:  # a store MLflow cannot read (bad URI, schema, credentials): one line, no traceback
        raise ReportError(f"cannot read MLflow at {without_password(tracking_uri or 'its default store')}: "
                          f"{http_failure(e)}") from None  # fmt: skip
    if not rec.trials:
        status = client.get_run(parent_run_id).info.status
        raise ReportError(f"search run {parent_run_id} ({rec.name}, {status}) has no trial runs: nothing to report"
                          + (" (it ended before any trial started)" if status != "RUNNING" else " yet"))  # fmt: skip
    if out is None:
        exp_dir = client.get_run(parent_run_id).data.tags.get("hsc.experiment_dir", "")
        local = Path(exp_dir) if exp_dir and "://" not in exp_dir else None
        # not into the folder when it is now another search's (one of the same --name, after this one's moved)
        if local is None or not local.is_dir() or search_in(local) not in (None, parent_run_id):
            local = Path.cwd() / "hsc_outputs" / rec.name
        out = local / REPORT_ARTIFACT
    out = Path(out)
    try:
        _not_another_searchs_file(out, parent_run_id)
    except ExportError as e:
        raise ReportError(str(e)) from None
    text = render(rec, resolved_tracking_uri(tracking_uri))  # the default store named too (it said none)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(str(out), text)  # whole or not at all: a full disk kept the earlier file
    except OSError as e:
        raise ReportError(f"--out {out}: cannot write ({e.strerror or e})") from None
    if log_to_run:
        try:
            _log_as_artifact(client, parent_run_id, out)
            tag_experiment(client, rec.experiment_id, rec.metric, rec.mode)
        except Exception as e:  # the report is written; only its copy in MLflow is missing
            raise ReportError(f"report written to {out}, but not logged to run {parent_run_id}: {http_failure(e)} "
                              "(--no-log writes the file only)") from None
    return out, rec


def _log_as_artifact(client, parent_run_id: str, path: Path) -> None:
    """Logs the report to the parent run and stamps the run with the time (`hsc.report.logged`): an artifact
    alone changes nothing `import-runs` compares, so a report logged after a search was imported was never
    copied; the tag is what tells it the run changed."""
    import shutil
    import tempfile
    from datetime import datetime, timezone

    from .runs import REPORT_ARTIFACT, TAG_REPORT_LOGGED

    if path.name == REPORT_ARTIFACT:
        client.log_artifact(parent_run_id, str(path))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(path, Path(tmp) / REPORT_ARTIFACT)
            client.log_artifact(parent_run_id, str(Path(tmp) / REPORT_ARTIFACT))
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    client.set_tag(parent_run_id, TAG_REPORT_LOGGED, stamp)
