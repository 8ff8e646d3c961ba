"""Draw a ``Plot`` with matplotlib, headless, into PNG bytes.

Why ``Figure`` + ``FigureCanvasAgg`` and never ``pyplot``: pyplot keeps global state (a current
figure, a backend chosen at import) that leaks between reports in one process and needs a
display on some setups; an explicitly constructed Agg canvas is thread-safe per figure and
works on any CI box. Why PNG: a churn timeline can have thousands of event markers, which as
inline SVG would make the report megabytes of XML; a PNG is bounded by its pixel size.

The renderer draws exactly the numbers in the ``Plot`` (``series.py`` computed them), so the
data embedded next to each image in the HTML is the data in the image.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from swarm_tune.analysis.series import Plot, Series

_MAX_BAR_LABELS = 40


def _bars(ax: Axes, bars: list[Series]) -> None:
    cats = [str(c) for c in bars[0].x]
    pos = np.arange(len(cats), dtype="float64")
    width = 0.8 / len(bars)
    for k, s in enumerate(bars):
        ax.bar(pos + (k - (len(bars) - 1) / 2) * width, s.y, width=width, label=s.label)
    if len(cats) <= _MAX_BAR_LABELS:
        ax.set_xticks(pos, cats, rotation=60, ha="right", fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{len(cats)} categories (see data)")


def draw(plot: Plot) -> Figure:
    fig = Figure(figsize=(8.0, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(plot.title, fontsize=10)
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    bars = [s for s in plot.series if s.style == "bar"]
    if bars:
        _bars(ax, bars)
    for s in plot.series:
        if s.style == "line":
            ax.plot(s.x, s.y, label=s.label, linewidth=1.4)
        elif s.style == "dashed":
            ax.plot(s.x, s.y, label=s.label, linestyle="--", color="black", linewidth=1.2)
        elif s.style == "step":
            ax.step(s.x, s.y, where="post", label=s.label)
        elif s.style == "scatter":
            ax.scatter(s.x, s.y, label=s.label, s=8, marker="|")
        elif s.style == "hist":
            ax.hist(s.x, bins=min(40, max(5, len(s.x) // 10)), label=s.label)
        elif s.style == "hline" and s.y:
            ax.axhline(s.y[0], label=s.label, linestyle="--", color="black", linewidth=1.2)
    if not plot.series:
        ax.text(0.5, 0.5, "no data in this run", ha="center", va="center", transform=ax.transAxes)
    elif len(plot.series) > 1 or plot.series[0].style != "bar":
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig


def png_bytes(plot: Plot) -> bytes:
    buf = io.BytesIO()
    draw(plot).savefig(buf, format="png")
    return buf.getvalue()
