"""The robustness matrix: aggregation rules x attacks x Byzantine fraction x data skew.

Why a dedicated runner and not a plain grid sweep: a cell's figure of merit is a *gap*, the
final held-out loss of the honest nodes under attack against the SAME honest nodes (same
indices, same shards, same seeds) training without attackers. That reference is a second
run in which the would-be attackers are picked exactly as in the attacked run but never start
(``adversaries[].absent``), trained with the plain weighted mean: the gap therefore includes
what a rule itself costs, not only what the attack costs. Fraction 0 is run once per rule.

Each cell reports: the loss gap, honest contributions rejected (by a statistical verdict, not
bookkeeping such as stale), honest nodes banned (ban events naming an honest peer, counted
once per (judge, peer)), and the attackers' own rejections/bans; every verdict counted is an
honest judge's. ``rule_costs`` measures each
rule's close at 100 and 1,000 candidates on updates of the scenario's model size, beside the
weighted mean measured in the same process.

Points run on a spawn process pool (one torch thread each), write nothing but the summary,
and are seeded: the whole matrix is reproducible.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from swarm_tune.runtime.adversary.attacks import BEHAVIOURS
from swarm_tune.runtime.aggregation.rules import RULES, RuleParams, aggregate, make_rule
from swarm_tune.sim.scenario import MAX_JITTER, SMALL_JITTER, Scenario

NEUTRAL = frozenset({"stale", "too_far_future", "buffer_full", "banned"})
SYBIL_SUFFIX = "+sybil"  # an attack run by a Sybil group on one /24
JITTER_SUFFIX = "+jitter"  # colluders perturb their shared update (not bit-identical)


class MatrixSpec(BaseModel):
    """The ``sweep.matrix`` block of a matrix scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[str] = Field(default_factory=lambda: [str(r) for r in RULES], min_length=1)
    attacks: list[str] = Field(min_length=1)
    fractions: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3], min_length=1)
    non_iid: list[float] = Field(default_factory=lambda: [0.0, 0.8], min_length=1)
    workers: int = Field(default=2, ge=1, le=64)

    def problems(self, nodes: int) -> list[str]:
        out = []
        for rule in self.rules:
            out += [f"rules: {p}" for p in RuleParams(rule).problems()]
        for attack in self.attacks:
            behaviour, strength, _, jitter = parse_attack(attack)
            if behaviour not in BEHAVIOURS:
                out.append(f"attacks: unknown attack {attack!r}; one of {', '.join(BEHAVIOURS)}")
            if strength is not None and not math.isfinite(strength):
                out.append(f"attacks: {attack!r}: strength must be a finite number")
            if not 0.0 <= jitter <= MAX_JITTER:  # NaN fails too
                out.append(f"attacks: {attack!r}: jitter must be in [0, {MAX_JITTER:g}]")
        for f in self.fractions:
            if not 0.0 <= f < 0.5:
                out.append(f"fractions: {f} must be in [0, 0.5)")
            elif f > 0 and round(f * nodes) == 0:
                out.append(f"fractions: {f} of {nodes} nodes is no node")
        return out


def _scale(text: str) -> float:
    """``:0.2`` -> 0.2; anything else NaN (MatrixSpec.problems names it)."""
    if not text.startswith(":"):
        return math.nan
    try:
        return float(text[1:])
    except ValueError:
        return math.nan


def parse_attack(attack: str) -> tuple[str, float | None, bool, float]:
    """``name[:strength][+sybil][+jitter[:scale]]`` -> (behaviour, strength, sybil, jitter x
    RMS; ``+jitter`` alone is SMALL_JITTER, none 0), e.g. ``sign_flip:3+sybil+jitter:0.1``."""
    rest, marked, scale = attack.partition(JITTER_SUFFIX)
    jitter = 0.0
    if marked:
        jitter = SMALL_JITTER if not scale else _scale(scale)
    sybil = rest.endswith(SYBIL_SUFFIX)
    name, _, strength = rest.removesuffix(SYBIL_SUFFIX).partition(":")
    try:
        return name, (float(strength) if strength else None), sybil, jitter
    except ValueError:
        return name, math.nan, sybil, jitter


@dataclass(frozen=True, slots=True)
class Point:
    key: str
    rule: str
    attack: str  # "none" for fraction 0, "clean" for a reference run
    fraction: float
    non_iid: float
    scenario: Scenario


def _variant(base: Scenario, rule: str, attack: str, fraction: float, non_iid: float) -> Scenario:
    data = base.model_dump()
    data["sweep"] = None
    data["protocol"]["aggregation_rule"] = rule
    data["learning"]["non_iid"] = non_iid
    if attack in ("none", "clean") or fraction == 0:
        data["adversaries"] = (
            [{"behaviour": "sign_flip", "fraction": fraction, "absent": True}] if fraction else []
        )
    else:
        behaviour, strength, sybil, jitter = parse_attack(attack)
        adv: dict[str, Any] = {
            "behaviour": behaviour,
            "fraction": fraction,
            "sybil": sybil,
            "jitter": jitter,
        }
        if strength is not None:
            adv["strength"] = strength
        data["adversaries"] = [adv]
    return Scenario.model_validate(data)


def expand(base: Scenario, spec: MatrixSpec) -> list[Point]:
    """Every cell, plus one clean reference per (fraction, non_iid)."""
    points = []
    for skew in spec.non_iid:
        for f in spec.fractions:
            if f > 0:
                sc = _variant(base, "mean", "clean", f, skew)
                key = f"clean|{f}|{skew}"
                points.append(Point(key, "mean", "clean", f, skew, sc))
            for rule in spec.rules:
                for attack in spec.attacks if f > 0 else ["none"]:
                    sc = _variant(base, rule, attack, f, skew)
                    key = f"{rule}|{attack}|{f}|{skew}"
                    points.append(Point(key, rule, attack, f, skew, sc))
    return points


def run_point(point: Point) -> dict[str, Any]:
    """Run one cell (in a worker) and reduce it to its figures."""
    import torch

    from swarm_tune.sim.runner import run_scenario

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out = run_scenario(point.scenario, write=False)
    tables = out.result.recorder.tables()
    adversaries = set(out.result.adversaries)
    swarm = tables["swarm"].to_pandas().dropna(subset=["eval_loss_mean_model"])
    rej = tables["rejections"].to_pandas()
    ev = tables["events"].to_pandas()
    # Verdicts of honest judges only: an attacker runs the same core, but what it rejects or
    # bans keeps nobody out of the honest swarm (stale_replay 20% non-IID under the mean: its
    # one "honest ban" was an attacker banning an honest peer).
    judged = rej[~rej.reason.isin(sorted(NEUTRAL)) & ~rej.node.isin(adversaries)]
    bans = ev[(ev.kind == "ban") & ~ev.node.isin(adversaries)].drop_duplicates(
        subset=["node", "peer"]
    )
    return {
        "key": point.key,
        "rule": point.rule,
        "attack": point.attack,
        "fraction": point.fraction,
        "non_iid": point.non_iid,
        "final_loss": float(swarm.eval_loss_mean_model.iloc[-1]) if len(swarm) else math.nan,
        "honest_rejected": int((~judged.peer.isin(adversaries)).sum()),
        "honest_banned": int((~bans.peer.isin(adversaries)).sum()),
        "attackers_rejected": int(judged.peer.isin(adversaries).sum()),
        "attackers_banned": int(bans.peer.isin(adversaries).sum()),
        "wall_s": time.perf_counter() - t0,
    }


def run_matrix(
    points: Sequence[Point], workers: int, progress: Callable[[int, int], None] | None = None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if workers <= 1:
        for p in points:
            rows.append(run_point(p))
            if progress:
                progress(len(rows), len(points))
        return rows
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        for row in pool.map(run_point, points):
            rows.append(row)
            if progress:
                progress(len(rows), len(points))
    return rows


def with_gaps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each cell's loss gap (%) against the clean weighted-mean run of the same honest nodes."""
    clean: dict[tuple[float, float], float] = {}
    for r in rows:
        if r["attack"] == "clean" or (r["fraction"] == 0 and r["rule"] == "mean"):
            clean[(r["fraction"], r["non_iid"])] = r["final_loss"]
    out = []
    for r in rows:
        if r["attack"] == "clean":
            continue
        ref = clean.get((r["fraction"], r["non_iid"]), math.nan)
        out.append({**r, "clean_loss": ref, "gap_pct": 100.0 * (r["final_loss"] / ref - 1.0)})
    return out


def rule_costs(
    d: int, sizes: Sequence[int] = (100, 1000), repeats: int = 3
) -> list[dict[str, Any]]:
    """Seconds per close of each rule on ``n`` random updates of ``d`` entries (best of
    ``repeats``), and the ratio to the weighted mean measured alongside."""
    rng = np.random.default_rng(0)
    out = []
    for n in sizes:
        rows = list(rng.standard_normal((n, d)).astype(np.float32))
        weights = [1.0] * n
        times: dict[str, float] = {}
        for name in RULES:
            rule = make_rule(RuleParams(name))
            best = math.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                aggregate(rule, rows, weights, 1)
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        for name in RULES:
            out.append(
                {"candidates": n, "d": d, "rule": name, "seconds": times[name],
                 "x_mean": times[name] / times["mean"]}
            )  # fmt: skip
    return out
