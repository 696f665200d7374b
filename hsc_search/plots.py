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
            ax_spec.plot(range(len(names)), ys, marker="o", ms=3, label=f"epoch {e}")
        for n in names[:8]:
            ax_time.plot(*series[n], label=f"rho_{n}")  # the metric's own name: cca/rho_00 is the largest
        ax_spec.legend(fontsize=8)
        ax_time.legend(fontsize=7, ncol=2)
    ax_spec.set(title="canonical correlation spectrum (val)", xlabel="component (0 = rho_00, the largest)", ylabel="rho", ylim=(0, 1))
    ax_time.set(title="top canonical correlations over epochs", xlabel="epoch", ylim=(0, 1))
    for ax in (ax_spec, ax_time):
        ax.grid(alpha=0.3)
    return fig


def best_so_far_figure(scores: list[float | None], outcomes: list[str], mode: str, metric: str) -> Figure:
    """Each trial's score in the order trials started (dots: completed, crosses: stopped early by ASHA, which
    scored at fewer epochs) and the best so far over the trials that did not fail."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    best, xs_best, ys_best = None, [], []
    for i, (y, o) in enumerate(zip(scores, outcomes), 1):
        if y is None:
            continue
        if o != "failed" and (best is None or (y > best if mode == "max" else y < best)):
            best = y
        if best is not None:
            xs_best.append(i)
            ys_best.append(best)
    for outcome, marker, color, label in (("completed", "o", "C0", "completed"),
                                          ("stopped_early", "x", "C1", "stopped by ASHA"),
                                          ("failed", "v", "C3", "failed")):  # fmt: skip
        pts = [(i, y) for i, (y, o) in enumerate(zip(scores, outcomes), 1) if y is not None and o == outcome]
        if pts:
            ax.scatter(*zip(*pts), s=22, marker=marker, color=color, label=label)
    other = [(i, y) for i, (y, o) in enumerate(zip(scores, outcomes), 1)
             if y is not None and o not in ("completed", "stopped_early", "failed")]  # fmt: skip
    if other:
        ax.scatter(*zip(*other), s=22, marker=".", color="C7", label="unfinished")
    ax.step(xs_best, ys_best, where="post", color="C2", label="best so far")
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
