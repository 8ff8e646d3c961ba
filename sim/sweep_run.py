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

Why a worker returns its run folder as bytes and the driver writes it: on a real Ray cluster
the worker is another machine, with no view of the driver's disk. The worker runs the point in
a private temporary folder and hands back its files; only the driver writes ``points/``, so
the atomic-rename marker (and with it resumability) is the same for both backends.

Why Ray is imported lazily: it is an optional extra (``pip install 'swarm-tune[ray]'``) with a
heavy import; the local pool must work without it. With Ray, the driver ships its own code to
the workers (sim/ray_ship.py) and checks each result came from that code.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from swarm_tune.sim import ray_ship
from swarm_tune.sim.ray_ship import CodeOrigin, running_code

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


@dataclass(frozen=True, slots=True)
class PointOutput:
    """A finished point as the worker hands it back: its summary and its run folder's files."""

    summary: dict[str, Any]
    files: dict[str, bytes]
    code: CodeOrigin


def run_point(task: PointTask) -> PointOutput:
    """Run one point in a private temporary folder and return the folder's files."""
    import torch

    from swarm_tune.analysis.load import load_run
    from swarm_tune.analysis.metrics import final_loss, swarm_tokens
    from swarm_tune.sim.runner import run_scenario
    from swarm_tune.sim.scenario import parse_scenario

    torch.set_num_threads(1)
    scenario = parse_scenario(task.scenario_yaml, task.point_id)
    out = run_scenario(scenario, write=False)
    manifest = {
        **out.manifest,
        "sweep": task.sweep_name,
        "sweep_point": task.params,
        "sweep_point_id": task.point_id,
    }
    with tempfile.TemporaryDirectory(prefix="swarm-point-") as scratch:
        folder = Path(scratch) / "run"
        out.result.recorder.write(folder, scenario.resolved_yaml(), manifest)
        run = load_run(folder)
        files = {
            f.relative_to(folder).as_posix(): f.read_bytes()
            for f in sorted(folder.rglob("*"))
            if f.is_file()
        }
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
        "worker_python": sys.executable,
    }
    code = running_code()
    summary["code_sha256"] = code.sha256
    return PointOutput(summary, files, code)


def commit_point(task: PointTask, output: PointOutput) -> dict[str, Any]:
    """Write a returned point into a temp folder, mark it done, rename it into place (atomic)."""
    final = Path(task.out_dir)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, data in output.files.items():
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:  # the worker is another machine
            raise SweepBackendError(f"point {task.point_id}: unsafe file name {name!r}")
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    marker = tmp / DONE
    marker.write_text(json.dumps(output.summary, indent=2, default=str) + "\n", encoding="utf-8")
    if final.exists():  # an unmarked leftover from an interrupted run
        shutil.rmtree(final)
    tmp.rename(final)
    return output.summary


ProgressFn = Callable[[dict[str, Any]], None]


def _run_local(tasks: Sequence[PointTask], workers: int, on_done: ProgressFn) -> None:
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(run_point, t): t for t in tasks}
        try:
            for fut in cf.as_completed(futures):
                on_done(commit_point(futures[fut], fut.result()))
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _run_ray(
    tasks: Sequence[PointTask],
    workers: int,
    address: str | None,
    wheel: Path | None,
    on_done: ProgressFn,
) -> dict[str, Any]:
    try:
        import ray
    except ImportError:
        raise SweepBackendError(RAY_HINT) from None
    if ray.is_initialized():  # Ray takes code to upload only in ray.init's job runtime_env
        raise SweepBackendError("Ray is already initialised here: the sweep must ship its code")
    with tempfile.TemporaryDirectory(prefix="swarm-ship-") as stage_dir:
        shipped = ray_ship.stage(Path(stage_dir), wheel)
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "runtime_env": ray_ship.runtime_env(shipped),
        }
        try:
            ray.init(**kwargs, **ray_ship.init_target(address, workers))
        except Exception as exc:  # ConnectionError, RuntimeError, ... from a bad address
            raise SweepBackendError(f"cannot start/join Ray ({address or 'local'}): {exc}") from exc
        try:
            remote = ray.remote(num_cpus=1)(run_point)
            pending = {remote.remote(t): t for t in tasks}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task = pending.pop(ref)
                    output: PointOutput = ray.get(ref)
                    if output.code.sha256 != shipped.sha256:
                        raise SweepBackendError(
                            f"point {task.point_id} ran code {output.code.sha256[:12]} from "
                            f"{output.code.path}, not the shipped {shipped.sha256[:12]}"
                        )
                    on_done(commit_point(task, output))
            # Counted at the end: a node that joined mid-sweep has worked in it.
            nodes = ray.nodes()  # type: ignore[no-untyped-call]
            return {
                "ray_version": ray.__version__,
                "ray_nodes": sum(n["Alive"] for n in nodes),
                "ray_node_ips": sorted({n["NodeManagerAddress"] for n in nodes}),
                "code_sha256": shipped.sha256,
                "code_from": "wheel" if wheel is not None else "driver",
            }
        finally:
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
    ray_wheel: Path | None = None,
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
            info |= _run_ray(todo, workers, ray_address, ray_wheel, callback)
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
    ray_wheel: Path | None = None,
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

    if ray_wheel is not None:  # refused before anything is written
        try:
            ray_ship.check_wheel(ray_wheel)
        except ray_ship.ShipError as exc:
            raise SweepBackendError(str(exc)) from None
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
        tasks,
        backend=backend,
        workers=workers,
        ray_address=ray_address,
        ray_wheel=ray_wheel,
        on_done=on_done,
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
