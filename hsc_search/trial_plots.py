"""Each trial's two pictures (loss-weight trajectories, canonical-correlation spectrum), written as SVG text.

Why not matplotlib, which draws the search's own figures (`plots.py`): these two are made for every trial, on
the driver, and matplotlib took 130-260 ms a figure here (benchmarks/RESULTS.md, "search overhead"), about
70% of the MLflow writer's time in a 64-trial search; this writes the same line charts in about a millisecond.
MLflow's artifact viewer shows SVG files as images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

History = dict[str, list[tuple[int, float]]]  # metric key -> [(step, value), ...]
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
# a dash pattern per series, as the report's charts have them (plotly's names, SVG's arrays): series that lie on one
# another (fixed weights all 1; the tested epoch under the last) showed only the one drawn last (a walkthrough)
DASHES = (("solid", ""), ("dash", "7 4"), ("dot", "2 3"), ("dashdot", "7 3 2 3"), ("longdash", "12 4"),
          ("longdashdot", "12 3 2 3"))
W, H = 460, 300  # one panel
LEFT, RIGHT, TOP, BOTTOM = 52, 92, 28, 40  # the legend to the right of the frame, clear of the lines


@dataclass
class Panel:
    title: str
    xlabel: str
    series: list[tuple[str, list[float], list[float]]] = field(default_factory=list)  # (label, xs, ys)
    ylim: tuple[float, float] | None = None
    integer_x: bool = False  # whole-number ticks only (epochs: no 1.5, 2.5)


def _ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    if integer:
        step = max(1, round(step))
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _panel(p: Panel, x0: int) -> list[str]:
    pts = [(x, y) for _, xs, ys in p.series for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    xs = [x for x, _ in pts] or [0.0, 1.0]
    lo, hi = p.ylim or (min(y for _, y in pts), max(y for _, y in pts)) if pts else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    if p.ylim is None:  # a margin: the lowest and highest lines clear of the frame
        lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)
    xlo, xhi = min(xs), max(xs)
    if xhi == xlo:
        xlo, xhi = xlo - 1, xhi + 1
    pad = 0.03 * (xhi - xlo)  # the first and last points clear of the frame's sides
    xlo, xhi = xlo - pad, xhi + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(x: float) -> float:
        return x0 + LEFT + (x - xlo) / (xhi - xlo) * pw

    def sy(y: float) -> float:
        return TOP + (hi - y) / (hi - lo) * ph

    out = [f'<text x="{x0 + LEFT + pw / 2}" y="16" text-anchor="middle" font-size="13">{escape(p.title)}</text>',
           f'<rect x="{x0 + LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
           f'<text x="{x0 + LEFT + pw / 2}" y="{H - 6}" text-anchor="middle" font-size="11">{escape(p.xlabel)}</text>']
    for t in _ticks(lo, hi):
        out.append(f'<line x1="{x0 + LEFT}" x2="{x0 + LEFT + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 + LEFT - 4}" y="{sy(t) + 4:.1f}" text-anchor="end" font-size="10">{_fmt(t)}</text>')
    for t in _ticks(xlo + pad, xhi - pad, integer=p.integer_x):  # ticks within the data's own range
        out.append(f'<text x="{sx(t):.1f}" y="{TOP + ph + 14}" text-anchor="middle" font-size="10">{_fmt(t)}</text>')
    for i, (label, xs_, ys_) in enumerate(p.series):
        color = COLORS[i % len(COLORS)]
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs_, ys_) if y is not None and math.isfinite(y))
        dash = f' stroke-dasharray="{DASHES[i % len(DASHES)][1]}"' if DASHES[i % len(DASHES)][1] else ""
        out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="1.5"{dash}/>')
        out.extend(f'<circle cx="{pt.split(",")[0]}" cy="{pt.split(",")[1]}" r="2.2" fill="{color}"/>' for pt in line.split())
        ly = TOP + 10 + 13 * i
        # a swatch long enough to show its dash pattern (at 12 px the long dashes looked solid: a review)
        out.append(f'<line x1="{x0 + W - RIGHT + 6}" x2="{x0 + W - RIGHT + 24}" y1="{ly - 4}" y2="{ly - 4}" '
                   f'stroke="{color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x0 + W - RIGHT + 28}" y="{ly}" font-size="10">{escape(label)}</text>')
    return out


def svg(panels: list[Panel]) -> str:
    """Panels side by side, as one standalone SVG document."""
    body = [line for i, p in enumerate(panels) for line in _panel(p, i * W)]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(panels)}" height="{H}" '
            f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>' + "".join(body) + "</svg>\n")


def _series(history: History, prefix: str) -> dict[str, tuple[list[int], list[float]]]:
    out = {}
    for key in sorted(k for k in history if k.startswith(prefix)):
        points = sorted(history[key])
        out[key[len(prefix):]] = ([s for s, _ in points], [v for _, v in points])
    return out


def loss_weights_svg(history: History) -> str:
    """Effective loss weights and log-variances s_i against epochs (the weights alone for fixed weights: no s)."""
    logvars = _series(history, "logvar/")
    weights = _series(history, "weight/")
    # fixed weights are flat lines, often on top of each other (three at 1: one line, a legend of three; a
    # walkthrough): each names its value
    named = [(n if logvars or len(set(ys)) != 1 else f"{n} {ys[0]:g}", xs, ys) for n, (xs, ys) in weights.items()]
    return svg([
        Panel("effective loss weight" + ("" if logvars else " (fixed)"), "epoch", named, integer_x=True),
        *([Panel("log-variance s", "epoch", [(n, *xy) for n, xy in logvars.items()], integer_x=True)] if logvars else []),
    ])  # fmt: skip


def spectrum_epochs(epochs: list[int], tested: float | None) -> tuple[list[int], int | None]:
    """The epochs a spectrum is drawn at, and the tested one among them (else None): the first, the tested (the
    epoch validation selected, `test/epoch`; the middle one where it is not known or not among `epochs`) and the
    last. The search report and a trial's SVG draw the same ones (the SVG drew the middle epoch, unmarked)."""
    tested = int(tested) if tested is not None and math.isfinite(tested) and int(tested) in epochs else None
    return sorted({epochs[0], epochs[len(epochs) // 2] if tested is None else tested, epochs[-1]}), tested


def cca_spectrum_svg(history: History) -> str:
    """Validation canonical correlations: the spectrum at the first, the tested (`test/epoch`, the epoch validation
    selected; the middle one where not known) and the last epoch (component 0 is rho_00, the largest), and the top
    correlations over epochs. As the search report draws it (it drew the middle epoch, unmarked: a walkthrough)."""
    series = _series(history, "cca/rho_")
    names = sorted(series, key=int)
    epochs = sorted({e for x, _ in series.values() for e in x})
    spectrum = Panel("canonical correlation spectrum (val)", "component (0 = rho_00, the largest)", ylim=(0, 1),
                     integer_x=True)
    over_time = Panel("top canonical correlations over epochs", "epoch", ylim=(0, 1), integer_x=True)
    if epochs:
        given = [v for _, v in history.get("test/epoch", []) if v is not None]
        picks, tested = spectrum_epochs(epochs, given[-1] if given else None)
        for e in picks:
            ys = [dict(zip(*series[n])).get(e) for n in names]
            spectrum.series.append((f"epoch {e}" + (" (tested)" if e == tested else ""), list(range(len(names))), ys))
        over_time.series = [(f"rho_{n}", *series[n]) for n in names[:8]]
    return svg([spectrum, over_time])
