"""The data behind every plot, as plain numbers, computed from the run tables.

Why a layer between tables and matplotlib: a report is only trustworthy if what it draws is
what the run recorded. Keeping the plotted series as data (``Plot`` -> ``Series``) lets the
renderer draw exactly these numbers, lets the HTML embed them next to the image (so anyone,
and the tests, can check a picture against the parquet it came from), and keeps this module
free of any plotting library.

Comparison plots draw one line per *configuration*: runs that differ only by seed (sweep
points with the same parameters) are averaged round by round, so a sweep of 3 strategies x 4
seeds reads as 3 lines, not 12.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from swarm_tune.analysis.load import RunData
from swarm_tune.analysis.metrics import LOSS_COLUMN, swarm_tokens

Style = Literal["line", "dashed", "step", "bar", "hist", "hline", "scatter", "vlines"]
# How the y axis reads: plain numbers, humanised bytes (kB/MB/GB), or whole counts.
YFormat = Literal["plain", "bytes", "count"]
Value = float | str


@dataclass(frozen=True)
class Series:
    label: str
    x: Sequence[Value]
    y: Sequence[float]
    style: Style = "line"


@dataclass(frozen=True)
class Plot:
    key: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    yformat: YFormat = "plain"
    ymin: float | None = None  # lower y limit where negative values would mean nothing
    # Bar categories to mark (drawn in red, named in the legend), e.g. adversarial nodes.
    highlight: tuple[str, ...] = ()
    highlight_label: str = ""


def _floats(values: pd.Series | np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype="float64")]


def _group(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    groups: dict[str, list[RunData]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    return groups


def _mean_by_round(runs: list[RunData], column: str, x: str) -> tuple[list[float], list[float]]:
    """Per round, mean of ``column`` over the runs (x = round, or mean t / tokens)."""
    frames = []
    for run in runs:
        df = pd.DataFrame({"round": run.swarm["round"], "y": run.swarm[column]})
        if x == "t":
            df["x"] = run.swarm["t"]
        elif x == "tokens":
            df["x"] = swarm_tokens(run)
        else:
            df["x"] = run.swarm["round"]
        frames.append(df[np.isfinite(df["y"].to_numpy(dtype="float64"))])
    both = pd.concat(frames, ignore_index=True).astype("float64")
    agg = both.groupby("round", sort=True).mean()
    return _floats(agg["x"]), _floats(agg["y"])


def loss_plot(runs: Sequence[RunData], x: Literal["round", "t", "tokens"]) -> Plot:
    names = {"round": "round", "t": "virtual time (s)", "tokens": "tokens consumed"}
    plot = Plot(
        f"loss_vs_{x}",
        f"Held-out loss vs {names[x]}",
        names[x],
        "held-out loss (median node)",
    )
    for label, group in _group([r for r in runs if not r.is_baseline]).items():
        xs, ys = _mean_by_round(group, LOSS_COLUMN, x)
        plot.series.append(Series(label, xs, ys, "line"))
    bases = [r for r in runs if r.is_baseline]
    if bases:
        # Several baselines (one per seed of a sweep) are one reference: their mean.
        label = "centralized baseline" + (f" (mean of {len(bases)})" if len(bases) > 1 else "")
        if x == "t":
            # The baseline has no virtual clock: its final loss is the reference level.
            _, ys = _mean_by_round(bases, LOSS_COLUMN, "round")
            plot.series.append(Series(label, [], ys[-1:], "hline"))
        else:
            xs, ys = _mean_by_round(bases, LOSS_COLUMN, x)
            plot.series.append(Series(label, xs, ys, "dashed"))
    return plot


def divergence_plot(runs: Sequence[RunData]) -> Plot:
    plot = Plot(
        "divergence",
        "Replica divergence (mean relative L2 distance to the sample mean)",
        "round",
        "relative L2 distance",
        ymin=0.0,
    )
    for label, group in _group([r for r in runs if not r.is_baseline]).items():
        xs, ys = _mean_by_round(group, "divergence", "round")
        plot.series.append(Series(label, xs, ys, "line"))
    return plot


def adversary_nodes(run: RunData) -> tuple[str, ...]:
    """Nodes the run recorded with an adversarial behaviour (the rounds table says which)."""
    r = run.rounds
    if r.empty or "adversary" not in r:
        return ()
    marked = r.loc[r["adversary"].fillna("").astype(str) != "", "node"]
    return tuple(sorted({str(n) for n in marked}))


def bytes_plot(run: RunData) -> Plot:
    """Total bytes sent and received per node over the whole run."""
    plot = Plot(
        f"bytes_per_node:{run.run_id}",
        f"Bytes per node — {run.run_id}",
        "node",
        "bytes",
        yformat="bytes",
        ymin=0.0,
        highlight=adversary_nodes(run),
        highlight_label="adversary",
    )
    r = run.rounds
    if r.empty:
        return plot
    per = r.groupby("node", sort=True)[["bytes_sent", "bytes_recv"]].sum()
    nodes: list[Value] = [str(n) for n in per.index]
    plot.series.append(Series("sent", nodes, _floats(per["bytes_sent"]), "bar"))
    plot.series.append(Series("received", nodes, _floats(per["bytes_recv"]), "bar"))
    return plot


def rejections_by_reason(run: RunData) -> dict[str, int]:
    """Every refusal the run recorded, by reason, from ``rejections.parquet`` (one row per
    refusal, including those that fell outside a closed round: a node that left mid-round,
    or one still waiting for peers); the per-round ``rej_*`` counters are per-round views."""
    rej = run.rejections
    if rej.empty or "reason" not in rej:
        return {}
    counts = rej["reason"].astype(str).value_counts()
    return {str(reason): int(n) for reason, n in sorted(counts.items())}


def contributions_plot(run: RunData) -> Plot:
    """Peers' contributions accepted, and rejected split by reason (reasons seen only)."""
    plot = Plot(
        f"contributions:{run.run_id}",
        f"Contributions accepted vs rejected by reason — {run.run_id}",
        "outcome",
        "contributions",
        yformat="count",
        ymin=0.0,
    )
    r = run.rounds
    if r.empty:
        return plot
    labels: list[Value] = ["accepted"]
    counts = [float(r["accepted"].sum())]
    for reason, n in rejections_by_reason(run).items():
        labels.append(f"rejected: {reason}")
        counts.append(float(n))
    plot.series.append(Series("contributions", labels, counts, "bar"))
    return plot


def durations_plot(run: RunData) -> Plot:
    plot = Plot(
        f"round_durations:{run.run_id}",
        f"Round-duration distribution — {run.run_id}",
        "round duration (virtual s)",
        "rounds closed",
        yformat="count",
        ymin=0.0,
    )
    r = run.rounds
    if r.empty:
        return plot
    values = r["duration"].to_numpy(dtype="float64")
    values = values[np.isfinite(values)]
    plot.series.append(Series("all nodes", _floats(values), [], "hist"))
    return plot


CHURN_KINDS = ("join", "rejoin", "leave", "crash", "partition_open", "partition_heal")


def churn_plot(run: RunData) -> Plot:
    """Nodes online per swarm round (vs virtual time) and the membership events."""
    plot = Plot(
        f"churn:{run.run_id}",
        f"Churn timeline — {run.run_id}",
        "virtual time (s)",
        "nodes online",
        yformat="count",
        ymin=0.0,
    )
    s = run.swarm
    plot.series.append(Series("online", _floats(s["t"]), _floats(s["online"]), "step"))
    e = run.events
    if not e.empty:
        for kind in CHURN_KINDS:
            ts = e.loc[e["kind"] == kind, "t"]
            if len(ts):
                # Events are moments, not levels: a vertical mark per event, one colour per kind.
                plot.series.append(Series(kind, _floats(ts), [], "vlines"))
    return plot


def per_run_plots(run: RunData) -> list[Plot]:
    return [bytes_plot(run), contributions_plot(run), durations_plot(run), churn_plot(run)]


def comparison_plots(runs: Sequence[RunData]) -> list[Plot]:
    return [
        loss_plot(runs, "round"),
        loss_plot(runs, "t"),
        loss_plot(runs, "tokens"),
        divergence_plot(runs),
    ]


def finite_or_none(values: Sequence[Value]) -> list[Value | None]:
    """JSON has no NaN: missing measurements become null."""
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]
