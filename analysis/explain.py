"""Plots that say WHY a run went the way it did, round by round.

Why a module of its own: the summary and comparison plots show that a run failed or
converged; a researcher then asks what happened in round 14. These plots answer with the
protocol's own records — how many contributions each round averaged, how far each node
drifted against ``drift_bound``, when nodes synced, were evicted or banned, how much work
was thrown away (updates that arrived stale, rounds abandoned or fallen back, transfers
cancelled half-sent), and how each named group fared — with the scripted events and
partitions drawn on every per-round plot, so cause and effect sit on one axis.

Rounds on the x axis are swarm rounds (swarm.parquet's milestones); an event at virtual time
t is placed at the swarm round the run had reached then, interpolated between milestones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from swarm_tune.analysis.load import RunData
from swarm_tune.analysis.series import Plot, Series, Value

ROUND = "swarm round"
# Event kinds drawn as marks on every per-round plot, with their legend names.
MARKS = {
    "partition_open": "partition opens",
    "partition_heal": "partition heals",
    "script_leave": "scripted leave",
    "script_crash": "scripted crash",
    "script_join": "scripted join",
    "script_link": "scripted link change",
}
MEMBERSHIP = {
    "sync_start": "state syncs started",
    "load_state": "states loaded",
    "evict": "evictions",
    "ban": "bans",
}


def _floats(values: pd.Series | np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype="float64")]


def round_at(run: RunData, t: pd.Series | np.ndarray) -> np.ndarray:
    """The swarm round reached at each virtual time (interpolated between milestones)."""
    s = run.swarm
    times = np.asarray(t, dtype="float64")
    if s.empty:
        return np.zeros(len(times))
    at: np.ndarray = np.interp(
        times, s["t"].to_numpy(dtype="float64"), s["round"].to_numpy(dtype="float64")
    )
    return at


def event_marks(run: RunData) -> list[Series]:
    """Scripted events and partitions as vertical marks at their swarm round."""
    e = run.events
    out: list[Series] = []
    if e.empty:
        return out
    for kind, label in MARKS.items():
        ts = e.loc[e["kind"] == kind, "t"]
        if len(ts):
            out.append(Series(label, _floats(round_at(run, ts)), [], "vlines"))
    return out


def _marked(plot: Plot, run: RunData) -> Plot:
    plot.series.extend(event_marks(run))
    return plot


def contributors_plot(run: RunData) -> Plot:
    """Contributions each node's round averaged (own included): median, min, max."""
    plot = Plot(
        f"contributors:{run.run_id}",
        f"Contributors per round (own update included) — {run.run_id}",
        ROUND,
        "contributions averaged",
        yformat="count",
        ymin=0.0,
    )
    r = run.rounds
    if r.empty:
        return plot
    per = r.groupby("round", sort=True)["contributors"]
    xs: list[Value] = [float(x) for x in per.median().index]
    plot.series.append(Series("median node", xs, _floats(per.median())))
    plot.series.append(Series("fewest", xs, _floats(per.min()), "step"))
    plot.series.append(Series("most", xs, _floats(per.max()), "step"))
    fell = r[r["outcome"] != "average"].groupby("round").size().reindex(per.median().index)
    plot.series.append(Series("nodes not averaging", xs, _floats(fell.fillna(0.0))))
    return _marked(plot, run)


def drift_plot(run: RunData) -> Plot:
    """Every node's own drift estimate per round, against the protocol's drift_bound."""
    plot = Plot(
        f"drift:{run.run_id}",
        f"Per-node drift vs drift_bound — {run.run_id}",
        ROUND,
        "sketch distance to the peers' median",
        ymin=0.0,
    )
    r = run.rounds
    if r.empty or "drift" not in r:
        return plot
    d = r[np.isfinite(r["drift"].to_numpy(dtype="float64"))]
    if d.empty:
        return plot
    plot.series.append(
        Series("a node's drift", _floats(d["round"]), _floats(d["drift"]), "scatter")
    )
    per = d.groupby("round", sort=True)["drift"]
    xs: list[Value] = [float(x) for x in per.median().index]
    plot.series.append(Series("median node", xs, _floats(per.median())))
    plot.series.append(Series("worst node", xs, _floats(per.max())))
    bound = (run.config.get("protocol") or {}).get("drift_bound")
    if isinstance(bound, int | float):
        plot.series.append(Series(f"drift_bound {bound:g}", [], [float(bound)], "hline"))
    return _marked(plot, run)


def _per_round_counts(run: RunData, rounds: np.ndarray, upto: int) -> list[float]:
    idx = np.clip(np.floor(rounds).astype(int), 0, upto)
    return _floats(np.bincount(idx, minlength=upto + 1))


def membership_plot(run: RunData) -> Plot:
    """State syncs, loaded states, evictions and bans per swarm round."""
    plot = Plot(
        f"membership:{run.run_id}",
        f"Syncs, evictions and bans per round — {run.run_id}",
        ROUND,
        "events",
        yformat="count",
        ymin=0.0,
    )
    e, s = run.events, run.swarm
    if e.empty or s.empty:
        return plot
    upto = int(s["round"].max())
    xs: list[Value] = [float(x) for x in range(upto + 1)]
    for kind, label in MEMBERSHIP.items():
        ts = e.loc[e["kind"] == kind, "t"]
        if len(ts):
            plot.series.append(Series(label, xs, _per_round_counts(run, round_at(run, ts), upto)))
    failed = e.loc[(e["kind"] == "sync_done") & (e["detail"] == "failed"), "t"]
    if len(failed):
        counts = _per_round_counts(run, round_at(run, failed), upto)
        plot.series.append(Series("state syncs failed", xs, counts))
    return _marked(plot, run)


def wasted_plot(run: RunData) -> Plot:
    """Work thrown away per round: updates that arrived after the round closed (stale),
    rounds abandoned for a state sync or fallen back to the node's own update, and bulk
    transfers cancelled half-sent."""
    plot = Plot(
        f"wasted:{run.run_id}",
        f"Wasted work per round — {run.run_id}",
        ROUND,
        "updates / rounds / transfers",
        yformat="count",
        ymin=0.0,
    )
    r, s, j = run.rounds, run.swarm, run.rejections
    if r.empty or s.empty:
        return plot
    upto = int(s["round"].max())
    index = pd.RangeIndex(upto + 1)
    xs: list[Value] = [float(x) for x in index]
    if not j.empty:
        stale = j[j["reason"] == "stale"].groupby("round").size().reindex(index, fill_value=0)
        plot.series.append(Series("updates arriving stale", xs, _floats(stale)))
    for outcome, label in (("abandoned", "rounds abandoned"), ("fallback", "rounds fallen back")):
        n = r[r["outcome"] == outcome].groupby("round").size().reindex(index, fill_value=0)
        plot.series.append(Series(label, xs, _floats(n)))
    if "cancelled" in s:
        per = s.set_index("round")["cancelled"].reindex(index).ffill().fillna(0.0)
        plot.series.append(
            Series("transfers cancelled", xs, _floats(per.diff().fillna(per.iloc[0])))
        )
    return _marked(plot, run)


def groups_plot(run: RunData) -> Plot | None:
    """Per named group: the share of its node-rounds that averaged with peers."""
    groups = run.manifest.get("groups")
    if not isinstance(groups, dict) or not groups or run.rounds.empty:
        return None
    plot = Plot(
        f"groups:{run.run_id}",
        f"Rounds averaged, by group — {run.run_id}",
        "group",
        "share of node-rounds averaged",
        ymin=0.0,
    )
    r = run.rounds
    member = {str(n): str(g) for g, ns in groups.items() for n in ns}
    label = r["node"].astype(str).map(member).fillna("(no group)")
    share = (r["outcome"] == "average").groupby(label).mean()
    names: list[Value] = [str(n) for n in share.index]
    plot.series.append(Series("averaged", names, _floats(share), "bar"))
    return plot


def explain_plots(run: RunData) -> list[Plot]:
    plots = [contributors_plot(run), drift_plot(run), membership_plot(run), wasted_plot(run)]
    g = groups_plot(run)
    return plots if g is None else [*plots, g]


def mark_round_plots(plots: Sequence[Plot], runs: Sequence[RunData]) -> None:
    """With a single swarm run, draw its events on the comparison plots over rounds too."""
    swarm = [r for r in runs if not r.is_baseline]
    if len(swarm) != 1:
        return
    marks = event_marks(swarm[0])
    for plot in plots:
        if (
            plot.xlabel in ("round", ROUND)
            and plot.series
            and not any(s.style == "vlines" for s in plot.series)
        ):
            plot.series.extend(marks)
