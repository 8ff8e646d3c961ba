"""Running a sweep: points on a local process pool (default) or on Ray; resumable; gathered.

Folder layout under the sweep's ``out`` folder::

    points/<point_id>/       a normal run folder (+ ``done.json``: the completion marker)
    baselines/seed=<s>/      the centralized baseline for each seed (reference lines)
    sweep.parquet            one row per point: parameters, seed, figures of merit
    report.html              one comparison report, one line per configuration

Why the marker is written inside a temporary folder that is then renamed into place: a
rename is atomic on one filesystem, so ``points/<id>/done.json`` exists if and only if the
whole run folder was written. A sweep killed at any instant leaves only ``.tmp-*`` folders
behind, which the next run deletes and redoes; finished points are skipped.

Why spawn and not fork for the pool: torch keeps thread pools and locks that are unsafe to
fork, and spawn behaves the same on Linux and macOS. Each worker pins torch to one thread —
the parallelism is across points, and N workers x M torch threads would oversubscribe.

Why Ray is imported lazily: it is an optional extra (``pip install 'swarm-tune[ray]'``) with a
heavy import; the local pool must work without it. With ``--ray-address`` the points go to an
existing cluster, whose workers must have swarm-tune installed.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

Backend = Literal["local", "ray"]
DONE = "done.json"
RAY_HINT = "the ray backend needs Ray: pip install 'swarm-tune[ray]'"


class SweepBackendError(RuntimeError):
    """The requested backend cannot run (e.g. Ray not installed or unreachable)."""


@dataclass(frozen=True, slots=True)
class PointTask:
    """What a worker needs: plain data only, so it pickles for spawn and for Ray."""

    point_id: str
    config_id: str
    params: dict[str, Any]
    seed: int
    scenario_yaml: str
    out_dir: str
    sweep_name: str


def point_done(path: Path) -> bool:
    return (path / DONE).is_file()


def run_point(task: PointTask) -> dict[str, Any]:
    """Run one point into a temp folder, mark it done, rename it into place (atomic)."""
    import torch

    from swarm_tune.analysis.load import load_run
    from swarm_tune.analysis.metrics import final_loss, swarm_tokens
    from swarm_tune.sim.runner import run_scenario
    from swarm_tune.sim.scenario import parse_scenario

    torch.set_num_threads(1)
    final = Path(task.out_dir)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    scenario = parse_scenario(task.scenario_yaml, task.point_id)
    out = run_scenario(scenario, write=False)
    manifest = {
        **out.manifest,
        "sweep": task.sweep_name,
        "sweep_point": task.params,
        "sweep_point_id": task.point_id,
    }
    out.result.recorder.write(tmp, scenario.resolved_yaml(), manifest)
    run = load_run(tmp)
    tokens = swarm_tokens(run)
    summary: dict[str, Any] = {
        "point": task.point_id,
        "config": task.config_id,
        **{f"param:{k}": v for k, v in task.params.items()},
        "seed": task.seed,
        "run_id": manifest["run_id"],
        "stop_reason": manifest["stop_reason"],
        "swarm_round": manifest["swarm_round"],
        "virtual_s": manifest["virtual_s"],
        "wall_s": manifest["wall_s"],
        "final_loss": final_loss(run),
        "tokens": float(tokens.iloc[-1]) if len(tokens) else math.nan,
        "bytes": int(run.swarm["bytes"].iloc[-1]),
        "accepted": int(run.rounds["accepted"].sum()) if len(run.rounds) else 0,
        "rejected": int(run.rounds["rejected"].sum()) if len(run.rounds) else 0,
        "worker_pid": os.getpid(),
    }
    marker = tmp / DONE
    marker.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    if final.exists():  # an unmarked leftover from an interrupted run
        shutil.rmtree(final)
    tmp.rename(final)
    return summary


ProgressFn = Callable[[dict[str, Any]], None]


def _run_local(tasks: Sequence[PointTask], workers: int, on_done: ProgressFn) -> None:
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(run_point, t) for t in tasks]
        try:
            for fut in cf.as_completed(futures):
                on_done(fut.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _run_ray(
    tasks: Sequence[PointTask], workers: int, address: str | None, on_done: ProgressFn
) -> dict[str, Any]:
    try:
        import ray
    except ImportError:
        raise SweepBackendError(RAY_HINT) from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None:
            kwargs["num_cpus"] = workers
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except Exception as exc:  # ConnectionError, RuntimeError, ... from a bad address
            raise SweepBackendError(f"cannot start/join Ray ({address or 'local'}): {exc}") from exc
    try:
        info = {"ray_version": ray.__version__, "ray_nodes": len(ray.nodes())}  # type: ignore[no-untyped-call]
        remote = ray.remote(num_cpus=1)(run_point)
        pending = [remote.remote(t) for t in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                on_done(ray.get(ref))
        return info
    finally:
        if started_here:
            ray.shutdown()


@dataclass(frozen=True, slots=True)
class SweepResult:
    out_dir: Path
    total: int
    skipped: int
    ran: int
    wall_s: float
    table: pd.DataFrame
    backend_info: dict[str, Any]


def execute(
    tasks: Sequence[PointTask],
    *,
    backend: Backend = "local",
    workers: int = 2,
    ray_address: str | None = None,
    on_done: ProgressFn | None = None,
) -> tuple[list[PointTask], dict[str, Any]]:
    """Run the unfinished tasks; returns (tasks that were skipped, backend info)."""
    skipped = [t for t in tasks if point_done(Path(t.out_dir))]
    todo = [t for t in tasks if not point_done(Path(t.out_dir))]
    for t in todo:  # leftovers of an interrupted run of this point
        parent = Path(t.out_dir).parent
        for leftover in parent.glob(f".tmp-{Path(t.out_dir).name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    callback = on_done or (lambda _summary: None)
    info: dict[str, Any] = {"backend": backend}
    if todo:
        if backend == "ray":
            info |= _run_ray(todo, workers, ray_address, callback)
        else:
            _run_local(todo, max(1, workers), callback)
    return skipped, info


def gather(tasks: Sequence[PointTask]) -> pd.DataFrame:
    """One row per finished point, read back from the completion markers."""
    rows = [
        json.loads((Path(t.out_dir) / DONE).read_text(encoding="utf-8"))
        for t in tasks
        if point_done(Path(t.out_dir))
    ]
    return pd.DataFrame(rows)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0


def run_sweep(
    scenario_path: Path,
    out_dir: Path | None = None,
    *,
    backend: Backend = "local",
    workers: int = 2,
    ray_address: str | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_done: ProgressFn | None = None,
    target_fraction: float = 0.75,
) -> SweepResult:
    """Expand, run what is unfinished, gather ``sweep.parquet`` and write the report."""
    from swarm_tune.analysis.load import load_run
    from swarm_tune.analysis.metrics import compare
    from swarm_tune.analysis.report import write_report
    from swarm_tune.sim.baseline import run_baseline
    from swarm_tune.sim.scenario import load_scenario
    from swarm_tune.sim.sweep import expand

    scenario = load_scenario(scenario_path)
    points = expand(scenario, str(scenario_path))
    out = out_dir or Path("runs_out") / f"sweep-{scenario.name}"
    (out / "points").mkdir(parents=True, exist_ok=True)
    tasks = [
        PointTask(
            p.point_id,
            p.config_id,
            p.params,
            p.seed,
            p.scenario.resolved_yaml(),
            str(out / "points" / p.point_id),
            scenario.name,
        )
        for p in points
    ]
    # Baselines: cheap (one model), run here, one per seed; reused on re-runs.
    base_dirs: dict[int, Path] = {}
    for p in points:
        if p.seed not in base_dirs and p.scenario.learning.mode == "surrogate":
            d = out / "baselines" / f"seed={p.seed}"
            if not (d / "manifest.json").is_file():
                run_baseline(p.scenario, d)
            base_dirs[p.seed] = d
    if on_start is not None:
        on_start(len(tasks), sum(point_done(Path(t.out_dir)) for t in tasks))
    t0 = time.perf_counter()
    skipped, info = execute(
        tasks, backend=backend, workers=workers, ray_address=ray_address, on_done=on_done
    )
    wall = time.perf_counter() - t0
    table = gather(tasks)
    runs = [load_run(Path(t.out_dir)) for t in tasks]
    bases = {seed: load_run(d) for seed, d in base_dirs.items()}
    ratios, finals = [], []
    for run in runs:
        base = bases.get(int(run.manifest["seed"]))
        if base is None:
            ratios.append(math.nan)
            finals.append(math.nan)
            continue
        cmp = compare(run, base, target_fraction)
        ratios.append(cmp.tokens_ratio)
        finals.append(cmp.baseline_final)
    table["tokens_to_target_x_baseline"] = ratios
    table["baseline_final_loss"] = finals
    table.to_parquet(out / "sweep.parquet", index=False)
    by_config = (
        table.groupby("config", sort=False)[["final_loss", "tokens_to_target_x_baseline", "wall_s"]]
        .mean()
        .reset_index()
    )
    write_report(
        [*runs, *bases.values()],
        out,
        title=f"Sweep {scenario.name}: {len(tasks)} points",
        target_fraction=target_fraction,
        tables={"By configuration (mean over seeds)": by_config, "Sweep points": table},
    )
    return SweepResult(out, len(tasks), len(skipped), len(tasks) - len(skipped), wall, table, info)
