"""One simulation run, start to finish: scenario in, self-describing folder out.

Why separate from the CLI: tests, benchmarks and the sweep runner all need "run this
scenario and give me the tables" without a terminal; the CLI adds only the progress bar and
the summary screen. Why the seed override rebuilds the scenario: the resolved config.yaml in
the run folder must show the seed that actually ran.
"""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import simpy
import torch

from swarm_tune.runtime.ops.provenance import manifest_code_version
from swarm_tune.sim.driver import ProgressFn, RunResult, SimDriver
from swarm_tune.sim.scenario import Scenario


@dataclass(frozen=True, slots=True)
class RunOutput:
    result: RunResult
    out_dir: Path | None
    manifest: dict[str, Any]


def with_seed(scenario: Scenario, seed: int | None) -> Scenario:
    return scenario if seed is None else scenario.model_copy(update={"seed": seed})


def default_out_dir(scenario: Scenario) -> Path:
    return Path(scenario.outputs.dir or f"runs_out/{scenario.name}-s{scenario.seed}")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_scenario(
    scenario: Scenario,
    out_dir: Path | None = None,
    *,
    write: bool = True,
    progress: ProgressFn | None = None,
    parts: int = 0,
    ray: bool = False,
    address: str | None = None,
) -> RunOutput:
    """Run ``scenario``; write the run folder to ``out_dir`` (default from the scenario).

    ``parts`` > 0: cut into that many partitions under the partition-local model (sim/pdes.py;
    1 is that model in one world), on Ray actors with ``ray`` (a cluster at ``address``)."""
    started = _now()
    if parts:
        from swarm_tune.sim.pdes import run_partitioned

        result, info = run_partitioned(scenario, parts, ray=ray, address=address, progress=progress)
        run_id, groups = info["run_id"], info["groups"]
        payloads, layer_shards = info["payloads"], info["layer_shards"]
        partitioned = {"partitions": parts, "partition_window_s": info["window"], "ray": ray}
    else:
        driver = SimDriver(scenario, progress=progress)
        result = driver.run()
        run_id, payloads, layer_shards = driver.run_id, driver.payloads, driver.layer_shards
        groups = {
            name: [driver.nodes[i].id for i in members]
            for name, members in driver.groups.members.items()
        }
        partitioned = {}
    ended = _now()
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "scenario": scenario.name,
        "seed": scenario.seed,
        **manifest_code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "simpy": simpy.__version__,
        "wall_start": started,
        "wall_end": ended,
        "wall_s": round(result.wall_s, 3),
        "virtual_s": result.virtual_s,
        "events": result.events,
        "stop_reason": result.stop_reason,
        "swarm_round": result.swarm_round,
        "nodes_total": scenario.total_nodes,
        "nodes_online_at_end": result.online,
        "adversaries": result.adversaries,
        "groups": groups,
        # Bytes of one model's worth on the wire: the whole payload, or with layer shards
        # each shard's slice of it (``layer_payload_bytes``, by shard index).
        "payload_bytes": sum(payloads) if layer_shards > 1 else payloads[0],
        **({"layer_payload_bytes": payloads} if layer_shards > 1 else {}),
        # A partitioned run (sim/pdes.py) and its window: its own network model.
        **partitioned,
        "tables": ["rounds", "swarm", "rejections", "events"],
    }
    target: Path | None = None
    if write:
        target = out_dir if out_dir is not None else default_out_dir(scenario)
        result.recorder.write(target, scenario.resolved_yaml(), manifest)
    return RunOutput(result, target, manifest)
