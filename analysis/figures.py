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
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from swarm_tune.analysis.columns import human_bytes
from swarm_tune.analysis.series import Plot, Series

HIGHLIGHT = "#c0392b"

_MAX_BAR_LABELS = 40


def _bars(ax: Axes, bars: list[Series], highlight: tuple[str, ...]) -> None:
    cats = [str(c) for c in bars[0].x]
    pos = np.arange(len(cats), dtype="float64")
    width = 0.8 / len(bars)
    for k, s in enumerate(bars):
        drawn = ax.bar(pos + (k - (len(bars) - 1) / 2) * width, s.y, width=width, label=s.label)
        for cat, rect in zip(cats, drawn, strict=True):
            if cat in highlight:
                rect.set_edgecolor(HIGHLIGHT)
                rect.set_linewidth(2.0)
    if len(cats) <= _MAX_BAR_LABELS:
        ax.set_xticks(pos, cats, rotation=60, ha="right", fontsize=7)
        for tick in ax.get_xticklabels():
            if tick.get_text() in highlight:
                tick.set_color(HIGHLIGHT)
                tick.set_fontweight("bold")
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{len(cats)} categories (see data)")


def _y_axis(ax: Axes, plot: Plot) -> None:
    if plot.yformat == "bytes":
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: human_bytes(v)))
    elif plot.yformat == "count":
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if plot.ymin is not None:
        top = ax.get_ylim()[1]
        # A flat series at the floor still gets a visible, meaningful range above it.
        ax.set_ylim(plot.ymin, max(top, plot.ymin + (1.0 if plot.yformat == "count" else 1e-3)))


def _legend(ax: Axes, plot: Plot) -> None:
    """Outside the axes, to the right: a legend never covers a bar or a line."""
    handles, labels = ax.get_legend_handles_labels()
    if plot.highlight:
        handles.append(Patch(facecolor="white", edgecolor=HIGHLIGHT, linewidth=2.0))
        labels.append(f"{plot.highlight_label}: {', '.join(plot.highlight)}")
    if len(handles) > 1 or plot.highlight:
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _hist_bins(values: list[float]) -> int:
    """Up to 40 bins, but one when the values (nearly) coincide: numpy cannot cut a range of a
    few ulps (a run whose rounds all took the same time) into finite-sized bins."""
    if not values:
        return 1
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-9 * max(1.0, abs(lo), abs(hi)):
        return 1
    return min(40, max(5, len(values) // 10))


def draw(plot: Plot) -> Figure:
    fig = Figure(figsize=(8.0, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(plot.title, fontsize=10)
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    bars = [s for s in plot.series if s.style == "bar"]
    if bars:
        _bars(ax, bars, plot.highlight)
    marks = 0
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
            ax.hist(s.x, bins=_hist_bins([float(v) for v in s.x]), label=s.label)
        elif s.style == "hline" and s.y:
            ax.axhline(s.y[0], label=s.label, linestyle="--", color="black", linewidth=1.2)
        elif s.style == "vlines":
            marks += 1  # one colour of the default cycle per kind of event, after the lines'
            ax.vlines(
                s.x,
                0,
                1,
                transform=ax.get_xaxis_transform(),
                colors=f"C{marks}",
                alpha=0.5,
                linewidth=0.8,
                label=s.label,
            )
    if not plot.series:
        ax.text(0.5, 0.5, "no data in this run", ha="center", va="center", transform=ax.transAxes)
    else:
        _legend(ax, plot)
    _y_axis(ax, plot)
    ax.grid(alpha=0.3)
    return fig


def png_bytes(plot: Plot) -> bytes:
    buf = io.BytesIO()
    draw(plot).savefig(buf, format="png")
    return buf.getvalue()
