"""One self-contained HTML report for one or many runs.

Why one file with everything embedded (PNG as base64, tables as HTML, the plotted numbers as
JSON): a report is passed around — attached to an issue, opened from a CI artifact, mailed —
and must not break when moved away from the run folders. Why the numbers are embedded next
to each picture (``<script type="application/json" class="plot-data">``): a picture cannot be
checked, numbers can; ``plot_data(html)`` reads them back, and the tests compare them with
the parquet the run wrote.

Layout: a summary table (one row per run, with tokens-to-target against the centralized
baseline when one is among the inputs), the comparison plots (one line per configuration;
the baseline as the dashed reference), then per-run detail (traffic per node, contributions
by reason, round durations, churn) for up to ``MAX_DETAIL_RUNS`` runs — a 200-point sweep
would otherwise be 800 pictures.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from swarm_tune.analysis.columns import display_frame
from swarm_tune.analysis.explain import explain_plots, mark_round_plots
from swarm_tune.analysis.figures import png_bytes
from swarm_tune.analysis.load import RunData
from swarm_tune.analysis.metrics import (
    compare,
    final_loss,
    swarm_tokens,
)
from swarm_tune.analysis.series import (
    Plot,
    comparison_plots,
    finite_or_none,
    per_run_plots,
    rejections_by_reason,
)

MAX_DETAIL_RUNS = 6
DEFAULT_TARGET_FRACTION = 0.75
REPORT_NAME = "report.html"

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
.table{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12px;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3;max-width:9em}
dl.meanings{font-size:11px;color:#555;display:grid;grid-template-columns:max-content 1fr;
gap:0 1em;margin:0 0 1.5em}
dl.meanings dt{font-weight:bold}dl.meanings dd{margin:0}
figure img{max-width:100%;height:auto}
figure{margin:1.5em 0}
figcaption{font-size:12px;color:#555}
.fail{color:#b00;font-weight:bold}.pass{color:#070;font-weight:bold}
"""


def report_plots(runs: Sequence[RunData]) -> list[Plot]:
    """Every plot the report draws, in order (comparison first, then per-run detail)."""
    plots = comparison_plots(runs)
    mark_round_plots(plots, runs)
    for run in [r for r in runs if not r.is_baseline][:MAX_DETAIL_RUNS]:
        plots.extend(per_run_plots(run))
        plots.extend(explain_plots(run))
    return plots


def summary_table(runs: Sequence[RunData], target_fraction: float) -> pd.DataFrame:
    baselines = [r for r in runs if r.is_baseline]
    rows: list[dict[str, Any]] = []
    for run in runs:
        m = run.manifest
        tokens = swarm_tokens(run)
        row: dict[str, Any] = {
            "run": run.run_id,
            "kind": "baseline" if run.is_baseline else "swarm",
            "seed": m.get("seed"),
            "nodes": m.get("nodes_total"),
            "rounds": int(run.swarm["round"].max()) if len(run.swarm) else 0,
            "virtual_s": m.get("virtual_s"),
            "wall_s": m.get("wall_s"),
            "final_loss": final_loss(run),
            "tokens": float(tokens.iloc[-1]) if len(tokens) else math.nan,
            "bytes": int(run.swarm["bytes"].iloc[-1])
            if "bytes" in run.swarm and len(run.swarm)
            else 0,
            "accepted": int(run.rounds["accepted"].sum()) if "accepted" in run.rounds else 0,
            "rejected": sum(rejections_by_reason(run).values()),
            "stop": m.get("stop_reason", ""),
        }
        if baselines and not run.is_baseline:
            same_seed = [b for b in baselines if b.manifest.get("seed") == m.get("seed")]
            cmp = compare(run, (same_seed or baselines)[0], target_fraction)
            row["target_loss"] = cmp.target_loss
            row["tokens_to_target"] = cmp.swarm_tokens
            row["x_baseline_tokens"] = cmp.tokens_ratio
        rows.append(row)
    return pd.DataFrame(rows)


def _figure_html(plot: Plot) -> str:
    data = {
        "key": plot.key,
        "title": plot.title,
        "highlight": list(plot.highlight),
        "series": [
            {
                "label": s.label,
                "style": s.style,
                "x": finite_or_none(s.x),
                "y": finite_or_none(s.y),
            }
            for s in plot.series
        ],
    }
    img = base64.b64encode(png_bytes(plot)).decode("ascii")
    # "</" cannot appear inside a <script> element; JSON allows escaping "/" anywhere.
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    return (
        f'<figure data-plot="{html.escape(plot.key)}">'
        f'<img alt="{html.escape(plot.title)}" src="data:image/png;base64,{img}">'
        f"<figcaption>{html.escape(plot.title)}</figcaption>"
        f'<script type="application/json" class="plot-data">{payload}</script>'
        "</figure>"
    )


def _table_html(df: pd.DataFrame) -> str:
    """Human headers and values (analysis/columns.py), then one line per column's meaning."""
    shown, meanings = display_frame(df)
    table: str = shown.to_html(index=False, border=0, escape=True)
    legend = "".join(
        f"<dt>{html.escape(header)}</dt><dd>{html.escape(meaning)}</dd>"
        for header, meaning in meanings
    )
    return f'<div class="table">{table}</div><dl class="meanings">{legend}</dl>'


def render_html(
    runs: Sequence[RunData],
    *,
    title: str = "Swarm-Tune report",
    target_fraction: float = DEFAULT_TARGET_FRACTION,
    tables: Mapping[str, pd.DataFrame] | None = None,
    notes: Sequence[str] = (),
) -> str:
    if not runs:
        raise ValueError("a report needs at least one run")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} from "
        f"{len(runs)} run folder(s): "
        + ", ".join(f"<code>{html.escape(str(r.path))}</code>" for r in runs)
        + "</p>",
    ]
    parts.extend(f"<p>{note}</p>" for note in notes)
    for name, df in (tables or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2>{_table_html(df)}")
    parts.append("<h2>Runs</h2>" + _table_html(summary_table(runs, target_fraction)))
    parts.append(
        f"<p>Loss = held-out loss of the median node's own parameters. Target loss = initial "
        f"minus {target_fraction:.0%} of the centralized baseline's improvement.</p>"
    )
    plots = report_plots(runs)
    n_compare = len(comparison_plots(runs))
    parts.append("<h2>Comparison</h2>")
    parts.extend(_figure_html(p) for p in plots[:n_compare])
    detail = plots[n_compare:]
    if detail:
        parts.append("<h2>Per-run detail</h2>")
        swarm_runs = [r for r in runs if not r.is_baseline]
        if len(swarm_runs) > MAX_DETAIL_RUNS:
            parts.append(f"<p>Detail for the first {MAX_DETAIL_RUNS} of {len(swarm_runs)}.</p>")
        parts.extend(_figure_html(p) for p in detail)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    runs: Sequence[RunData],
    out_dir: Path,
    *,
    title: str = "Swarm-Tune report",
    target_fraction: float = DEFAULT_TARGET_FRACTION,
    tables: Mapping[str, pd.DataFrame] | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write ``out_dir/report.html`` (atomically) and return its path."""
    text = render_html(
        runs, title=title, target_fraction=target_fraction, tables=tables, notes=notes
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / REPORT_NAME
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


_DATA_RE = re.compile(
    r'<script type="application/json" class="plot-data">(.*?)</script>', re.DOTALL
)


def plot_data(html_text: str) -> dict[str, dict[str, Any]]:
    """The plotted numbers embedded in a report, by plot key."""
    out: dict[str, dict[str, Any]] = {}
    for m in _DATA_RE.finditer(html_text):
        data = json.loads(m.group(1))
        out[str(data["key"])] = data
    return out


def count_images(html_text: str) -> int:
    return html_text.count('src="data:image/png;base64,')
