"""The run folder: everything a simulation produced, self-describing, as parquet + JSON.

Why a column store filled row by row: a 10,000-node, 100-round run produces a million
per-round rows. Python dicts per row would cost gigabytes; appending to one ``array`` per
numeric column (and a list per string column, whose few distinct values are interned; the
mostly-zero per-reason rejection counts kept sparse) keeps it to ~250 bytes a row, and pyarrow
turns the columns into parquet without copying twice.

Output folder (stable names and columns; ``analysis/`` builds reports on them):

``config.yaml``   the scenario, fully resolved (every default written out).
``manifest.json`` run_id, scenario name, seed, swarm_tune version, git commit (None outside a
                  checkout) and git_dirty (tracked files differ from that commit),
                  python/torch/simpy versions, wall start/end (ISO 8601 UTC), wall_s,
                  virtual_s, protocol events handled, stop reason, node counts.

``rounds.parquet`` one row per (node, round) that closed on that node:
  run_id        str    scenario name + "-s" + seed (deterministic, no wall clock)
  node          str    node id, e.g. "n0042";  node_index int
  incarnation   int    0 for the first session; +1 per restart/rejoin
  round         int    the round number that closed
  t_open, t_close float virtual seconds; duration = t_close - t_open
  trigger       str    "quorum" | "timeout" | "sync" (a state sync jumped past the round)
  outcome       str    "average" | "fallback" | "skipped" | "abandoned"
  contributors  int    contributions averaged (own included)
  accepted      int    peers' contributions accepted since the previous close on this node
  rejected      int    peers' contributions rejected since the previous close (any reason)
  rej_<reason>  int    rejected, split by RejectReason value (rej_non_finite, rej_norm_outlier,
                       rej_hostile_direction, rej_replay, rej_stale, rej_duplicate, ...)
  msgs_sent, msgs_recv, bytes_sent, bytes_recv  int   PER ROUND: traffic of this node since its
                       previous close (wire sizes of the network model, virtual payload incl.)
  loss          float  training loss of this node's local step for this round (NaN if none)
  eval_loss     float  held-out loss of this node's parameters, measured at a swarm milestone
                       right after this row (NaN when the node was not in the eval sample)
  drift         float  last sketch distance to the peers' median the protocol observed
                       (the node's OWN estimate; the true divergence is in swarm.parquet)
  digest        str    first 16 hex of the parameter digest the round started from
  adversary     str    "" for honest nodes, else the behaviour ("scaled", "sybil", ...)

``rejections.parquet`` one row per rejection: t, node, round, peer, reason.

``swarm.parquet`` one row per swarm round R (reached when the ``rounds.quantile`` node — the
  median by default — opened round R; R = 0 is the initial state):
  run_id, round, t (virtual s), wall_s (wall-clock seconds since start: the ONLY non-
  deterministic column), online, median_round, eval_loss_mean_model (held-out loss of the
  parameter average of the honest sample), eval_loss_median (median of the sample's own
  held-out losses), divergence (true mean relative L2 distance to the sample mean),
  eval_acc_mean_model (held-out accuracy of that parameter average: arg-max = target),
  messages, bytes, dropped (cumulative network counters), cancelled, cancelled_bytes
  (cumulative: bulk transfers dropped as no longer needed, and the bytes they had already
  sent — wasted work), accepted, rejected (cumulative).

``events.parquet`` t, kind, node, peer, detail, value — kinds: join, rejoin, leave, crash,
  partition_open, partition_heal (detail = "timeline.K" when scripted), script_leave,
  script_crash, script_join, script_link (detail = "timeline.K", value = nodes moved),
  ban (value = until), evict (detail = reason),
  sync_start (detail = reason, value = peers asked), sync_done (detail = "ok"/"failed",
  value = round), load_state (value = round).
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Sized
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from swarm_tune.runtime.protocol.reasons import RejectReason

REJECT_COLUMNS = tuple(f"rej_{r.value}" for r in RejectReason)
WALL_CLOCK_COLUMNS = {"swarm": ("wall_s",)}

_ROUND_INT = (
    "node_index",
    "incarnation",
    "round",
    "contributors",
    "accepted",
    "rejected",
    *REJECT_COLUMNS,
    "msgs_sent",
    "msgs_recv",
    "bytes_sent",
    "bytes_recv",
)
_ROUND_FLOAT = ("t_open", "t_close", "duration", "loss", "eval_loss", "drift")
_ROUND_STR = ("node", "trigger", "outcome", "digest", "adversary")
# Interned on append: columns of few distinct values. Not the digest: one distinct value a
# row, so interning only grew the intern table by an entry a row (~40 bytes, never freed).
_ROUND_STR_INTERNED = tuple(c != "digest" for c in _ROUND_STR)
# add_round's argument order.
_ADD_INT = (
    "node_index",
    "incarnation",
    "round",
    "contributors",
    "accepted",
    "msgs_sent",
    "msgs_recv",
    "bytes_sent",
    "bytes_recv",
)
_ADD_FLOAT = ("t_open", "t_close", "duration", "loss", "drift")

_SWARM_INT = (
    "round",
    "online",
    "median_round",
    "messages",
    "bytes",
    "dropped",
    "cancelled",
    "cancelled_bytes",
)
_SWARM_INT2 = ("accepted", "rejected")
_SWARM_FLOAT = (
    "t",
    "wall_s",
    "eval_loss_mean_model",
    "eval_loss_median",
    "divergence",
    "eval_acc_mean_model",
)


class _Columns:
    """One table's columns. ``sparse`` int columns (mostly zero: the per-reason rejection
    counts, ~19 of them, usually all zero in a row) keep only their non-zero entries as
    (row, value) arrays and are written out dense: 16 bytes per non-zero entry instead of
    8 bytes per row and column (~150 of a rounds row's ~400 bytes)."""

    def __init__(
        self,
        ints: tuple[str, ...],
        floats: tuple[str, ...],
        strs: tuple[str, ...],
        sparse: tuple[str, ...] = (),
    ):
        self.ints = {c: array("q") for c in ints if c not in sparse}
        self.sparse = {c: (array("q"), array("q")) for c in sparse}
        self.floats = {c: array("d") for c in floats}
        self.strs: dict[str, list[str]] = {c: [] for c in strs}
        self.order = [*strs[:1], *ints, *floats, *strs[1:]]

    def set_sparse(self, name: str, row: int, value: int) -> None:
        """Column ``name``'s value in ``row`` (0 until set; each row set at most once)."""
        if value:
            rows, values = self.sparse[name]
            rows.append(row)
            values.append(value)

    def _dense(self, name: str, n: int) -> array[int]:
        out = array("q", bytes(8 * n))
        for row, value in zip(*self.sparse[name], strict=True):
            out[row] = value
        return out

    def __len__(self) -> int:
        cols: list[Sized] = [*self.ints.values(), *self.floats.values(), *self.strs.values()]
        return len(cols[0]) if cols else 0

    def table(self, run_id: str) -> pa.Table:
        n = len(self)
        cols: dict[str, Any] = {"run_id": pa.array([run_id] * n, pa.string())}
        for name in self.order:
            if name in self.ints:
                cols[name] = pa.array(self.ints[name], pa.int64())
            elif name in self.sparse:
                cols[name] = pa.array(self._dense(name, n), pa.int64())
            elif name in self.floats:
                cols[name] = pa.array(self.floats[name], pa.float64())
            else:
                cols[name] = pa.array(self.strs[name], pa.string())
        return pa.table(cols)


class Recorder:
    """Accumulates the run's tables in memory; ``write`` puts the folder on disk."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.rounds = _Columns(_ROUND_INT, _ROUND_FLOAT, _ROUND_STR, REJECT_COLUMNS)
        self.swarm = _Columns(_SWARM_INT + _SWARM_INT2, _SWARM_FLOAT, ())
        self.rejections = _Columns(("round",), ("t",), ("node", "peer", "reason"))
        self.events = _Columns((), ("t", "value"), ("kind", "node", "peer", "detail"))
        self._intern: dict[str, str] = {}
        self._round_apps: Any = None  # bound appends for add_round, built on first use

    def _s(self, value: str) -> str:
        return self._intern.setdefault(value, value)

    def round_row(self, values: dict[str, Any]) -> int:
        """Append one rounds row; returns its index (to fill eval_loss later)."""
        r = self.rounds
        row = len(r)
        for c, col in r.ints.items():
            col.append(int(values.get(c, 0)))
        for c in r.sparse:
            r.set_sparse(c, row, int(values.get(c, 0)))
        for c, fcol in r.floats.items():
            fcol.append(float(values.get(c, math.nan)))
        for (c, scol), interned in zip(r.strs.items(), _ROUND_STR_INTERNED, strict=True):
            text = str(values.get(c, ""))
            scol.append(self._s(text) if interned else text)
        return row

    def add_round(
        self,
        ints: tuple[int, ...],
        rejected: dict[str, int],
        floats: tuple[float, float, float, float, float],
        strs: tuple[str, str, str, str, str],
    ) -> int:
        """``round_row`` without the dict (the driver's once-per-node-per-round hot path).

        ``ints`` = node_index, incarnation, round, contributors, accepted, msgs_sent,
        msgs_recv, bytes_sent, bytes_recv; ``rejected`` = RejectReason value -> count (the
        ``rejected`` total is its sum); ``floats`` = t_open, t_close, duration, loss, drift
        (eval_loss starts NaN); ``strs`` = node, trigger, outcome, digest, adversary.
        """
        if self._round_apps is None:
            r = self.rounds
            self._round_apps = (
                [r.ints[c].append for c in _ADD_INT],
                r.ints["rejected"].append,
                [r.floats[c].append for c in _ADD_FLOAT],
                r.floats["eval_loss"].append,
                [r.strs[c].append for c in _ROUND_STR],
            )
        int_apps, rej_total, float_apps, eval_app, str_apps = self._round_apps
        row = len(self.rounds)
        for app, v in zip(int_apps, ints, strict=True):
            app(v)
        if rejected:
            for reason, count in rejected.items():
                self.rounds.set_sparse(f"rej_{reason}", row, count)
        rej_total(sum(rejected.values()))
        for fapp, f in zip(float_apps, floats, strict=True):
            fapp(f)
        eval_app(math.nan)
        intern = self._intern
        for sapp, text, interned in zip(str_apps, strs, _ROUND_STR_INTERNED, strict=True):
            sapp(intern.setdefault(text, text) if interned else text)
        return row

    def set_eval_loss(self, row: int, value: float) -> None:
        self.rounds.floats["eval_loss"][row] = value

    def rejection(self, t: float, node: str, rnd: int, peer: str, reason: str) -> None:
        j = self.rejections
        j.floats["t"].append(t)
        j.ints["round"].append(rnd)
        j.strs["node"].append(node)
        j.strs["peer"].append(peer)
        j.strs["reason"].append(self._s(reason))

    def event(
        self, t: float, kind: str, node: str, peer: str = "", detail: str = "", value: float = 0.0
    ) -> None:
        e = self.events
        e.floats["t"].append(t)
        e.floats["value"].append(value)
        e.strs["kind"].append(self._s(kind))
        e.strs["node"].append(node)
        e.strs["peer"].append(peer)
        e.strs["detail"].append(self._s(detail))

    def swarm_row(self, values: dict[str, Any]) -> None:
        s = self.swarm
        for c, col in s.ints.items():
            col.append(int(values.get(c, 0)))
        for c, fcol in s.floats.items():
            fcol.append(float(values.get(c, math.nan)))

    # -- output ------------------------------------------------------------------------

    def tables(self) -> dict[str, pa.Table]:
        return {
            "rounds": self.rounds.table(self.run_id),
            "swarm": self.swarm.table(self.run_id),
            "rejections": self.rejections.table(self.run_id),
            "events": self.events.table(self.run_id),
        }

    def write(self, out_dir: Path, config_yaml: str, manifest: dict[str, Any]) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(config_yaml, encoding="utf-8")
        for name, table in self.tables().items():
            pq.write_table(table, out_dir / f"{name}.parquet")
        (out_dir / "manifest.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
        )
