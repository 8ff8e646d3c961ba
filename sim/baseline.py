"""The centralized baseline, stored as a run folder like any simulation.

Why it exists: "the swarm converges" means nothing without a reference. The reference is the
same model, same data (the union of the swarm's shards), same optimizer and initial weights,
trained centrally with the same token budget per round (``centralized_baseline`` in
``learning.py`` takes one step of ``num_nodes * batch_size * local_steps`` samples a round).

Why the same folder format (``config.yaml``, ``manifest.json`` with ``kind:
centralized_baseline``, ``swarm.parquet``): every consumer — the report, sweeps, the CI
regression, a notebook — then handles the baseline with the code it already has; the report
draws it as the dashed reference line. It has no network, so no ``rounds``/``events``; it has
no virtual clock either (``t`` is NaN), and a ``tokens`` column the swarm's tables lack.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from swarm_tune.runtime.ops.provenance import manifest_code_version
from swarm_tune.sim.learning import BatchedLearning, centralized_baseline
from swarm_tune.sim.scenario import Scenario

BASELINE_KIND = "centralized_baseline"  # == swarm_tune.analysis.load.BASELINE_KIND


def initial_eval_loss(scenario: Scenario) -> float:
    """Held-out loss of the shared initial weights (the swarm's round 0)."""
    model = BatchedLearning(scenario.learning, 1, scenario.seed)
    model.add_node(0, 0)
    return model.eval_losses([0])[0]


def baseline_run_id(scenario: Scenario) -> str:
    return f"{scenario.name}-baseline-s{scenario.seed}"


def run_baseline(
    scenario: Scenario,
    out_dir: Path,
    rounds: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train the centralized baseline for ``rounds`` (default: the scenario's target);
    ``progress(done, rounds)`` after each round."""
    n_rounds = scenario.rounds.target if rounds is None else rounds
    nodes = scenario.total_nodes
    learn = scenario.learning
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    losses = [
        initial_eval_loss(scenario),
        *centralized_baseline(learn, nodes, n_rounds, scenario.seed, progress),
    ]
    wall = time.perf_counter() - t0
    per_round = nodes * learn.batch_size * learn.local_steps
    per_round *= learn.seq_len if learn.mode == "real" else 1
    run_id = baseline_run_id(scenario)
    n = len(losses)
    table = pa.table(
        {
            "run_id": pa.array([run_id] * n, pa.string()),
            "round": pa.array(range(n), pa.int64()),
            "online": pa.array([nodes] * n, pa.int64()),
            "median_round": pa.array(range(n), pa.int64()),
            "messages": pa.array([0] * n, pa.int64()),
            "bytes": pa.array([0] * n, pa.int64()),
            "dropped": pa.array([0] * n, pa.int64()),
            "accepted": pa.array([0] * n, pa.int64()),
            "rejected": pa.array([0] * n, pa.int64()),
            "t": pa.array([math.nan] * n, pa.float64()),
            "wall_s": pa.array([wall * r / max(1, n - 1) for r in range(n)], pa.float64()),
            "eval_loss_mean_model": pa.array(losses, pa.float64()),
            "eval_loss_median": pa.array(losses, pa.float64()),
            "divergence": pa.array([0.0] * n, pa.float64()),
            "tokens": pa.array([r * per_round for r in range(n)], pa.int64()),
        }
    )
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "kind": BASELINE_KIND,
        "scenario": scenario.name,
        "seed": scenario.seed,
        **manifest_code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "wall_start": started,
        "wall_s": round(wall, 3),
        "virtual_s": None,
        "stop_reason": "target_round",
        "swarm_round": n_rounds,
        "nodes_total": nodes,
        "tokens_per_round": per_round,
        "tables": ["swarm"],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(scenario.resolved_yaml(), encoding="utf-8")
    pq.write_table(table, out_dir / "swarm.parquet")
    (out_dir / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return manifest
