"""Figures logged as MLflow artifacts. Matplotlib's object API only (no pyplot): safe off the main thread."""

from __future__ import annotations

from matplotlib.figure import Figure

History = dict[str, list[tuple[int, float]]]  # metric key -> [(step, value), ...]


def _series(history: History, prefix: str) -> dict[str, tuple[list[int], list[float]]]:
    out = {}
    for key in sorted(k for k in history if k.startswith(prefix)):
        points = sorted(history[key])
        out[key[len(prefix) :]] = ([s for s, _ in points], [v for _, v in points])
    return out


def weight_trajectories_figure(history: History) -> Figure:
    """Effective loss weights (on the raw losses) and log-variances s_i against epochs."""
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_w, ax_s = fig.subplots(1, 2)
    for name, (x, y) in _series(history, "weight/").items():
        ax_w.plot(x, y, marker="o", ms=3, label=name)
    for name, (x, y) in _series(history, "logvar/").items():
        ax_s.plot(x, y, marker="o", ms=3, label=name)
    ax_w.set(title="effective loss weight", xlabel="epoch")
    ax_s.set(title="log-variance s", xlabel="epoch")
    for ax in (ax_w, ax_s):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return fig


def cca_spectrum_figure(history: History) -> Figure:
    """Validation canonical correlations: the spectrum at the first, middle and last epoch, and rho over epochs."""
    series = _series(history, "cca/rho_")
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_spec, ax_time = fig.subplots(1, 2)
    if series:
        epochs = sorted({e for x, _ in series.values() for e in x})
        picks = sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]})
        names = sorted(series, key=int)
        for e in picks:
            ys = [dict(zip(*series[n])).get(e) for n in names]
            ax_spec.plot(range(1, len(names) + 1), ys, marker="o", ms=3, label=f"epoch {e}")
        for n in names[:8]:
            ax_time.plot(*series[n], label=f"rho_{int(n) + 1}")
        ax_spec.legend(fontsize=8)
        ax_time.legend(fontsize=7, ncol=2)
    ax_spec.set(title="canonical correlation spectrum (val)", xlabel="component", ylabel="rho", ylim=(0, 1))
    ax_time.set(title="top canonical correlations over epochs", xlabel="epoch", ylim=(0, 1))
    for ax in (ax_spec, ax_time):
        ax.grid(alpha=0.3)
    return fig


def best_so_far_figure(values: list[float | None], mode: str, metric: str) -> Figure:
    """Each trial's score (in start order) and the best so far."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    xs = [i + 1 for i, v in enumerate(values) if v is not None]
    ys = [v for v in values if v is not None]
    best, run = [], None
    for y in ys:
        run = y if run is None else (max(run, y) if mode == "max" else min(run, y))
        best.append(run)
    ax.scatter(xs, ys, s=14, alpha=0.6, label="trial")
    ax.step(xs, best, where="post", color="C3", label="best so far")
    ax.set(title=f"{metric} by trial", xlabel="trial (start order)", ylabel=metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def importance_figure(importances: dict[str, float]) -> Figure:
    """Horizontal bars of parameter importances (Optuna)."""
    fig = Figure(figsize=(6, 0.4 * max(3, len(importances)) + 1), layout="constrained")
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set(title="parameter importance (Optuna)", xlabel="importance")
    return fig
