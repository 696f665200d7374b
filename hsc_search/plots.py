"""The search's own figures, logged to its parent run. Matplotlib's object API only (no pyplot): safe off the main
thread. Each trial's two pictures are SVG text (`trial_plots.py`), made for every trial and so kept cheap."""

from __future__ import annotations

import logging

# With a HOME that cannot be written, matplotlib works in a temporary folder of its own and said so in two lines of
# advice at every search's start (a walkthrough): quiet while it is imported, which is when it looks for its folders
_mpl_log = logging.getLogger("matplotlib")
_level, _mpl_log.level = _mpl_log.level, logging.ERROR
try:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
finally:
    _mpl_log.setLevel(_level)


def best_so_far_figure(scores: list[float | None], outcomes: list[str], mode: str, metric: str) -> Figure:
    """Each trial's score in the order the searcher proposed them (dots: completed, crosses: stopped early by ASHA, which
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
    ax.set(title=f"{metric} by trial", xlabel="trial (#, as proposed)", ylabel=metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers: no 1.5, 2.5
    ax.set_xlim(0.5, max(len(scores), 1) + 0.5)  # every trial, scored or not (it ended at the last scored one, as
    ax.grid(alpha=0.3)  # the report's chart did before: a walkthrough)
    ax.legend(fontsize=8)
    return fig


def importance_figure(importances: dict[str, float], title: str = "parameter importance") -> Figure:
    """Horizontal bars of parameter importances, titled as the report's chart of the same numbers (its method:
    fANOVA, or PED-ANOVA from 50 trials)."""
    fig = Figure(figsize=(6, 0.4 * max(3, len(importances)) + 1 + 0.2 * title.count("\n")), layout="constrained")
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance")
    # over the whole figure, not the axes: the axes start right of the longest name, and a title centred on them
    # ran off the figure's right edge ("... (fANOVA, 16 trials" without its bracket; a walkthrough)
    fig.suptitle(title, fontsize=10)
    return fig
