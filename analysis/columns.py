"""How a number is shown to a person: column headers with units, humanised values, meanings.

Why a table of columns and not formatting at each call site: the same figure appears in the
run summary, the sweep comparison and the CLI's summary screen, and a reader must see it
the same way everywhere ("1.83 GB", not 1833556452 in one place and 1.8 GB in another).
The data stays raw (the tables, the embedded plot JSON and the parquet keep exact values);
only the rendering goes through here. A column this table does not know is shown under its
own name with underscores as spaces, and its values with four significant digits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

Formatter = Callable[[Any], str]
MISSING = "—"


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _infinite(value: Any) -> str | None:
    """'never' for +inf (e.g. a target that was not reached), None for a finite number."""
    if isinstance(value, float | int) and not isinstance(value, bool) and math.isinf(value):
        return "never" if value > 0 else "-∞"
    return None


def human_bytes(value: Any) -> str:
    """Decimal SI units, as network links are sold: 1833556452 -> '1.83 GB'."""
    if _missing(value):
        return MISSING
    if (inf := _infinite(value)) is not None:
        return inf
    n = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_seconds(value: Any) -> str:
    """'0.98 s', '42.1 s', '2 min 12 s', '1 h 03 min'."""
    if _missing(value):
        return MISSING
    s = float(value)
    if not math.isfinite(s):
        return MISSING
    if s < 59.95:
        return f"{s:.3g} s" if s < 10 else f"{s:.1f} s"
    if round(s) < 3600:
        minutes, secs = divmod(round(s), 60)
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(round(s / 60), 60)
    return f"{hours} h {minutes:02d} min"


def human_count(value: Any) -> str:
    if _missing(value):
        return MISSING
    if (inf := _infinite(value)) is not None:
        return inf
    return f"{int(value):,}"


def human_float(value: Any) -> str:
    if _missing(value):
        return MISSING
    if (inf := _infinite(value)) is not None:
        return inf
    return f"{float(value):.4g}"


def human_ratio(value: Any) -> str:
    if _missing(value):
        return MISSING
    if (inf := _infinite(value)) is not None:
        return inf
    return f"{float(value):.2f}×"


def plain(value: Any) -> str:
    return MISSING if _missing(value) else str(value)


@dataclass(frozen=True)
class Column:
    header: str  # what the reader sees, with the unit
    fmt: Formatter
    meaning: str  # one line: what the number is


COLUMNS: dict[str, Column] = {
    "run": Column("run", plain, "run id (scenario name and seed)"),
    "kind": Column("kind", plain, "swarm run, or the centralized baseline it is compared with"),
    "seed": Column("seed", plain, "the seed that reproduces the run exactly"),
    "nodes": Column("nodes", human_count, "virtual nodes in the scenario, adversaries included"),
    "rounds": Column("rounds", human_count, "swarm rounds completed (the swarm's round number)"),
    "virtual_s": Column(
        "virtual time", human_seconds, "simulated time the run covered (the swarm's clock)"
    ),
    "wall_s": Column(
        "wall time",
        human_seconds,
        "real time the simulation itself took (the figure `sim run` prints; start-up excluded)",
    ),
    "final_loss": Column(
        "final loss", human_float, "held-out loss of the median node's parameters at the end"
    ),
    "tokens": Column("tokens", human_count, "training tokens consumed by honest nodes"),
    "bytes": Column("bytes moved", human_bytes, "bytes all nodes sent over the modelled network"),
    "accepted": Column(
        "contributions accepted", human_count, "peers' updates that went into an average"
    ),
    "rejected": Column(
        "contributions rejected", human_count, "peers' updates refused (any reason)"
    ),
    "stop": Column("stopped because", plain, "why the run ended"),
    "target_loss": Column(
        "target loss",
        human_float,
        "initial loss minus the target fraction of the baseline's improvement",
    ),
    "tokens_to_target": Column(
        "tokens to target", human_count, "tokens the swarm consumed before reaching target loss"
    ),
    "x_baseline_tokens": Column(
        "tokens vs baseline",
        human_ratio,
        "tokens to target divided by the baseline's (1.00× = as efficient as centralized)",
    ),
    "tokens_to_target_x_baseline": Column(
        "tokens vs baseline",
        human_ratio,
        "tokens to target divided by the baseline's (1.00× = as efficient as centralized)",
    ),
}


def column(name: str) -> Column:
    known = COLUMNS.get(name)
    if known is not None:
        return known
    return Column(name.replace("_", " "), _fallback, "")


def _fallback(value: Any) -> str:
    if _missing(value):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if (inf := _infinite(value)) is not None:
        return inf
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{float(value):.4g}"


def display_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """``df`` as strings under human headers, and (header, meaning) for the columns shown."""
    shown = pd.DataFrame(index=df.index)
    meanings: list[tuple[str, str]] = []
    for name in df.columns:
        col = column(str(name))
        shown[col.header] = [col.fmt(v) for v in df[name]]
        if col.meaning and (col.header, col.meaning) not in meanings:
            meanings.append((col.header, col.meaning))
    return shown, meanings
