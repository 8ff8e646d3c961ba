"""``swarm-tune sim run SCENARIO``: run a scenario with a progress bar and a summary screen.

Why the summary reads the recorder's tables instead of the driver's internals: what the
person sees at the end is exactly what is in the run folder, so the numbers on screen can be
found again (and re-plotted) from the files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from swarm_tune.runtime.lazy_cli import lazy_group

if TYPE_CHECKING:
    from swarm_tune.sim.runner import RunOutput

# sweep, baseline and regress need pandas and the analysis package: loaded when used.
SWEEP_COMMANDS = {
    "sweep": (
        "swarm_tune.sim.sweep_cli",
        "sweep",
        "Run every point of SCENARIO's sweep (resumable) and write sweep.parquet + a report.",
    ),
    "baseline": (
        "swarm_tune.sim.sweep_cli",
        "baseline",
        "Train the centralized baseline of SCENARIO; write it as a run folder.",
    ),
    "regress": (
        "swarm_tune.sim.sweep_cli",
        "regress",
        "Run SCENARIO and its centralized baseline; fail if convergence regressed.",
    ),
    "calibrate": (
        "swarm_tune.sim.calibrate_cli",
        "calibrate",
        "Run SCENARIO in the sim and as real nodes in network namespaces; report both (root).",
    ),
    "matrix": (
        "swarm_tune.sim.robustness_cli",
        "matrix",
        "Rules x attacks x Byzantine fraction x data skew -> loss gap, honest rejections/bans.",
    ),
}
sim_app = typer.Typer(
    help="Simulate a swarm in virtual time (SimPy).",
    no_args_is_help=True,
    cls=lazy_group(SWEEP_COMMANDS),
)


@sim_app.command("run")
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    seed: Annotated[int | None, typer.Option(help="override the scenario's seed")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder for the run")] = None,
    parts: Annotated[
        int,
        typer.Option(
            min=0,
            help="cut the world into this many partitions (conservative PDES, its own "
            "partition-local network model: docs/performance.md); 0 = one world",
        ),
    ] = 0,
    ray: Annotated[bool, typer.Option(help="with --parts: one Ray actor per partition")] = False,
    ray_address: Annotated[
        str | None, typer.Option(help="with --ray: a running Ray cluster (ray start --head)")
    ] = None,
) -> None:
    """Run SCENARIO and write its run folder (config, manifest, parquet tables)."""
    # Imported here, not at the top: ``sim --help`` and a bad scenario answer without
    # loading torch, pandas or the simulator.
    from swarm_tune.sim.scenario import ScenarioError, load_scenario

    console = Console()
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        for p in exc.problems:
            console.print(
                f"[red]error[/red] {p.render(exc.source)}", highlight=False, soft_wrap=True
            )
        if not scenario.exists():
            console.print(
                "hint: `swarm-tune sim init` lists the scenarios shipped with the package and "
                "`swarm-tune sim init NAME` writes one here",
                highlight=False,
                soft_wrap=True,
            )
        raise typer.Exit(2) from None
    # The simulator (torch, SimPy, pyarrow) loads only once the scenario is known to be good.
    from swarm_tune.runtime.progress import progress_bar
    from swarm_tune.sim.learning_real import LEARNER_ERRORS
    from swarm_tune.sim.runner import default_out_dir, run_scenario, with_seed

    sc = with_seed(loaded, seed)
    if (ray or ray_address) and not parts:
        console.print("[red]error[/red] --ray needs --parts K", highlight=False)
        raise typer.Exit(2)
    if parts:
        from swarm_tune.sim.pdes_world import PartitionError, check_partitionable

        try:
            check_partitionable(sc)
        except PartitionError as exc:
            console.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    target = out if out is not None else default_out_dir(sc)
    if sc.learning.mode == "real":  # one bar: not transformers' per-model "Loading weights"
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    with progress_bar(sc.name, "rounds") as update:

        def progress(r: int, _target: int, now: float) -> None:
            update(r, sc.rounds.target, f"virtual {now:,.0f}s")

        try:
            result = run_scenario(
                sc,
                target,
                progress=progress,
                parts=parts,
                ray=ray or ray_address is not None,
                address=ray_address,
            )
        except LEARNER_ERRORS as exc:  # mode: real: a bad model, dataset or LoRA target
            console.print(f"[red]error[/red] learning: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    _summary(console, result)


@sim_app.command("init")
def init(
    name: Annotated[
        str | None, typer.Argument(help="shipped scenario (e.g. quickstart); omit to list them")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="file to write (default: NAME.yaml in this folder)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace a different file")] = False,
) -> None:
    """Write a scenario shipped with the package to a file you can run and edit."""
    from swarm_tune.runtime.resources import shipped_scenario, shipped_scenarios

    console = Console()
    if name is None:
        for stem, path in shipped_scenarios().items():
            console.print(f"{stem}: {_description(path)}", highlight=False, soft_wrap=True)
        return
    try:
        source = shipped_scenario(name)
    except KeyError as exc:
        console.print(f"[red]error[/red] {exc.args[0]}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    target = out if out is not None else Path(source.name)
    text = source.read_text(encoding="utf-8")
    if target.exists() and not force:
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            console.print(f"{target} is already the shipped {source.stem}", highlight=False)
            return
        console.print(
            f"[red]error[/red] {target}: exists and differs; pass --force to replace it",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        console.print(f"[red]error[/red] {target}: {exc.strerror}", highlight=False)
        raise typer.Exit(2) from None
    console.print(f"wrote {target}; run it with: swarm-tune sim run {target}", highlight=False)


def _description(path: Path) -> str:
    """The scenario's ``description:`` line, read without YAML (listing must stay instant)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("description:"):
            return line.removeprefix("description:").strip()
    return ""


def _summary(console: Console, out: RunOutput) -> None:
    import pyarrow.compute as pc

    # The report's formatters: the screen and the report show a figure the same way.
    from swarm_tune.analysis.columns import human_bytes, human_seconds

    r = out.result
    tables = r.recorder.tables()
    swarm, rounds = tables["swarm"], tables["rounds"]
    evals, accs = (
        [
            (int(rn), float(v))
            for rn, v in zip(swarm["round"].to_pylist(), swarm[col].to_pylist(), strict=True)
            if v is not None and not math.isnan(v)
        ]
        for col in ("eval_loss_mean_model", "eval_acc_mean_model")
    )
    t = Table(title=f"{out.manifest['run_id']}: {r.stop_reason}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("swarm rounds", f"{r.swarm_round} (nodes online at end: {r.online})")
    if evals:
        (r0, first), (r1, last) = evals[0], evals[-1]
        t.add_row("held-out loss", f"{first:.4f} (round {r0}) -> {last:.4f} (round {r1})")
    if accs:
        (r0, first), (r1, last) = accs[0], accs[-1]
        t.add_row("held-out accuracy", f"{first:.4f} (round {r0}) -> {last:.4f} (round {r1})")
    acc = int(pc.sum(rounds["accepted"]).as_py() or 0)
    # Every refusal, from the rejections table (as the report counts them): per-round
    # counters miss refusals outside a closed round.
    reasons = pc.value_counts(tables["rejections"]["reason"]).to_pylist()
    by_reason = sorted((str(v["values"]), int(v["counts"])) for v in reasons)
    t.add_row("contributions", f"{acc:,} accepted, {sum(n for _, n in by_reason):,} rejected")
    for reason, n in by_reason:
        t.add_row("", f"  {reason}: {n:,}")
    if r.adversaries:
        kinds = sorted(set(r.adversaries.values()))
        t.add_row("adversaries", f"{len(r.adversaries)} ({', '.join(kinds)})")
    if swarm.num_rows:
        msgs = swarm["messages"][-1].as_py()
        sent = swarm["bytes"][-1].as_py()
        t.add_row("network", f"{msgs:,} messages, {human_bytes(sent)}")
    # wall_s is the manifest's figure (the report's "wall time"): the simulation alone.
    wall = out.manifest["wall_s"]
    t.add_row(
        "time",
        f"virtual {human_seconds(r.virtual_s)}, wall {human_seconds(wall)} (simulation only)",
    )
    t.add_row("events", f"{r.events:,} protocol events ({r.events / max(wall, 1e-9):,.0f}/s)")
    t.add_row("output", str(out.out_dir))
    console.print(t)
