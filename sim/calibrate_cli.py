"""``swarm-tune sim calibrate SCENARIO``: run a scenario in both worlds, write them side by side.

Lazy like every sim command: ``--help`` and a refusal (bad scenario, no root, no tc/nft)
load neither the simulator nor the runtime; the heavy parts load once a run will happen.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

PROFILE_HELP = "link profile: lan40, wan10, lossy40 or all (default: the scenario's own links)"


def calibrate(
    scenario: Annotated[
        Path, typer.Argument(help="scenario YAML file (full mesh, one link class)")
    ],
    profile: Annotated[str | None, typer.Option(help=PROFILE_HELP)] = None,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("runs_out/calibrate"),
) -> None:
    """Run SCENARIO in the sim and as real nodes in network namespaces; report both (root)."""
    import yaml

    from swarm_tune.sim.calibrate_real import CalibrationUnavailable, require_netns
    from swarm_tune.sim.scenario import ScenarioError, load_scenario, parse_scenario

    console = Console(soft_wrap=True, highlight=False)

    def refuse(message: str) -> typer.Exit:
        console.print(f"[red]error[/red] {message}")
        return typer.Exit(2)

    try:
        sc = load_scenario(scenario)
    except ScenarioError as exc:
        for p in exc.problems:
            console.print(f"[red]error[/red] {p.render(exc.source)}")
        raise typer.Exit(2) from None
    try:
        require_netns()
    except CalibrationUnavailable as exc:
        raise refuse(f"{scenario}: {exc}") from None
    from swarm_tune.sim.calibrate import PROFILES, calibrate, with_profile
    from swarm_tune.sim.calibrate_real import twin_links

    base = yaml.safe_load(sc.resolved_yaml())
    if profile is None:
        runs = [base]
    elif profile == "all":
        runs = [with_profile(base, p) for p in PROFILES]
    elif profile in PROFILES:
        runs = [with_profile(base, profile)]
    else:
        raise refuse(f"--profile {profile!r}: not one of {', '.join([*PROFILES, 'all'])}")
    try:
        for data in runs:
            twin_links(parse_scenario(yaml.safe_dump(data), str(scenario)))
    except ValueError as exc:
        raise refuse(f"{scenario}: {exc}") from None

    from swarm_tune.analysis.calibration import format_table, plot_report
    from swarm_tune.runtime.progress import progress_bar

    met = True
    steps = 2 * len(runs)  # each profile: its real twin, then the sim fed from it
    for i, data in enumerate(runs):
        folder = out / str(data["name"])
        console.print(f"== {data['name']}: real twin, then the sim ({folder})")
        name = str(data["name"])
        with progress_bar("calibrate", "steps") as update:
            update(2 * i, steps, f"{name}: real twin")
            try:
                sim_step = functools.partial(update, 2 * i + 1, steps, f"{name}: sim")
                cal = calibrate(data, folder, on_sim=sim_step)
            except CalibrationUnavailable as exc:
                error = f"{scenario}: {exc}"
            else:
                error = ""
        if error:  # after the bar is gone: the error line stands alone
            raise refuse(error)
        table = format_table(f"sim vs real: {cal.name}", cal.rows, cal.sim, cal.real.stats)
        fed = cal.fed["compute"]["classes"][0]
        given = (
            f"given to the sim from the real run: step time {fed['step_time']}, update "
            f"{cal.real.payload:,.0f} B per copy, transport CPU {fed['transport_s_per_mb']} s "
            f"per MB sent or received, {fed['cores']} cores per node (of "
            f"{cal.real.machine_cores}, less what the rest of the machine used)"
        )
        (folder / "report.txt").write_text(f"{table}\n{given}\n")
        plot_report(folder / "calibration.png", cal.name, cal.sim, cal.real.stats)
        console.print(table)
        console.print(given)
        met = met and cal.met
    console.print(f"within +-15% on every figure: {'yes' if met else 'no'} (reports in {out})")
    if not met:
        raise typer.Exit(1)
