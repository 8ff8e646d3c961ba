"""``swarm-tune sim matrix SCENARIO``: run the robustness matrix and print its verdicts.

Why the acceptance lines are printed by the run itself: the robustness promise (docs/
robustness.md) is a measured claim, so the command that measures it states, cell by cell,
whether the chosen default rule keeps it - nobody has to re-derive it from a table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from pydantic import ValidationError
from rich.console import Console

from swarm_tune.sim.robustness import (
    MatrixSpec,
    expand,
    rule_costs,
    run_matrix,
    with_gaps,
)
from swarm_tune.sim.scenario import ScenarioError, load_scenario

LOSS_GAP_PCT = 2.0  # acceptance: under attack, within 2% of the clean run
CLEAN_COST_PCT = 1.0  # acceptance: with no attackers, within 1% of the weighted mean


def matrix(
    scenario: Annotated[Path, typer.Argument(help="matrix scenario (a sweep.matrix block)")],
    out: Annotated[Path, typer.Option(help="folder for matrix.csv, costs.csv, matrix.md")] = Path(
        "runs_out/robustness"
    ),
    default_rule: Annotated[
        str, typer.Option("--default", help="the rule whose acceptance is checked")
    ] = "",
    workers: Annotated[int | None, typer.Option(help="processes (default: the file's)")] = None,
    costs: Annotated[bool, typer.Option(help="also time each rule at 100/1,000 inputs")] = True,
    reuse: Annotated[
        bool, typer.Option(help="report an existing OUT/matrix.csv instead of running")
    ] = False,
) -> None:
    """Rules x attacks x Byzantine fraction x data skew -> loss gap, honest rejections/bans."""
    console = Console()
    try:
        base = load_scenario(scenario)
    except ScenarioError as exc:
        for p in exc.problems:
            console.print(f"[red]error[/red] {p.render(exc.source)}", highlight=False)
        raise typer.Exit(2) from None
    try:
        spec = MatrixSpec.model_validate((base.sweep or {}).get("matrix"))
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"])
            console.print(f"[red]error[/red] {scenario}: sweep.matrix.{where}: {err['msg']}")
        raise typer.Exit(2) from None
    bad = spec.problems(base.nodes.count)
    rule = default_rule or base.protocol_config().aggregation_rule
    if rule not in spec.rules:
        bad.append(f"--default: {rule!r} is not one of the matrix's rules")
    if bad:
        for line in bad:
            console.print(f"[red]error[/red] {scenario}: sweep.matrix.{line}", highlight=False)
        raise typer.Exit(2)
    points = expand(base, spec)
    t0 = time.perf_counter()
    if reuse:
        # "nan" is an attack name here, not a missing value.
        table = pd.read_csv(out / "matrix.csv", keep_default_na=False, na_values=[""])
        lines = [f"reported from {out / 'matrix.csv'} ({len(table)} cells)"]
    else:
        from swarm_tune.runtime.progress import progress_bar

        console.print(f"{len(points)} runs on {workers or spec.workers} workers")
        with progress_bar("matrix", "runs") as update:

            def progress(done: int, total: int) -> None:
                update(done, total, "")

            table = pd.DataFrame(with_gaps(run_matrix(points, workers or spec.workers, progress)))
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "matrix.csv", index=False)
        lines = [f"wall: {time.perf_counter() - t0:,.0f} s for {len(points)} runs"]
    if costs:
        import torch

        from swarm_tune.sim.learning import BatchedLearning

        torch.set_num_threads(1)
        d = BatchedLearning(base.learning, 1, base.seed).spec.numel
        cost = pd.DataFrame(rule_costs(d))
        cost.to_csv(out / "costs.csv", index=False)
        (out / "costs.md").write_text(_table(cost.set_index(["candidates", "rule"]), "{:.4g}"))
    (out / "matrix.md").write_text(_markdown(table))
    lines += acceptance(table, rule)
    (out / "acceptance.txt").write_text("\n".join(lines) + "\n")
    (out / "spec.json").write_text(json.dumps(spec.model_dump(), indent=1))
    for line in lines:
        console.print(line, highlight=False)


def _markdown(t: pd.DataFrame) -> str:
    parts = []
    for skew, part in t.groupby("non_iid"):
        gap = part.pivot_table(
            index=["attack", "fraction"], columns="rule", values="gap_pct", aggfunc="first"
        )
        bans = part.pivot_table(
            index=["attack", "fraction"], columns="rule", values="honest_banned", aggfunc="first"
        )
        rej = part.pivot_table(
            index=["attack", "fraction"], columns="rule", values="honest_rejected", aggfunc="first"
        )
        parts.append(f"### non_iid = {skew}: loss gap vs clean weighted mean (%)\n")
        parts.append(_table(gap, "{:+.1f}"))
        parts.append(f"### non_iid = {skew}: honest nodes banned\n")
        parts.append(_table(bans, "{:.0f}"))
        parts.append(f"### non_iid = {skew}: honest contributions rejected\n")
        parts.append(_table(rej, "{:.0f}"))
    return "\n".join(parts)


def _table(frame: pd.DataFrame, fmt: str) -> str:
    """A pipe table (index columns first) without pandas' optional tabulate dependency."""
    names = [str(n) for n in frame.index.names]
    head = [*names, *(str(c) for c in frame.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for index, row in frame.iterrows():
        keys = index if isinstance(index, tuple) else (index,)
        cells = [str(k) for k in keys]
        cells += ["" if pd.isna(v) else fmt.format(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def acceptance(t: pd.DataFrame, rule: str) -> list[str]:
    """The issue's acceptance lines for ``rule`` (PASS/FAIL per cell group)."""
    out: list[str] = []
    mine = t[t.rule == rule]
    attacked = mine[(mine.fraction > 0.15) & (mine.fraction < 0.25)]
    for _, r in attacked.sort_values(["non_iid", "attack"]).iterrows():
        ok = r.gap_pct <= LOSS_GAP_PCT and r.honest_banned == 0
        out.append(
            f"{'PASS' if ok else 'FAIL'} {rule} @20% {r.attack:<18} non_iid={r.non_iid:<4} "
            f"gap {r.gap_pct:+.2f}% (<= {LOSS_GAP_PCT}%), honest banned {r.honest_banned}"
        )
    clean = mine[mine.fraction == 0]
    for _, r in clean.iterrows():
        ok = r.gap_pct <= CLEAN_COST_PCT
        out.append(
            f"{'PASS' if ok else 'FAIL'} {rule} @0% non_iid={r.non_iid:<4} cost vs weighted mean "
            f"{r.gap_pct:+.2f}% (<= {CLEAN_COST_PCT}%)"
        )
    failed = sum(line.startswith("FAIL") for line in out)
    out.append(f"{len(out) - failed} passed, {failed} failed")
    return out
