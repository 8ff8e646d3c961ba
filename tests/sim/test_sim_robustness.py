"""The robustness matrix's machinery and the CI regression over a small subset of it.

The regression runs the default aggregation rule against five attacks at 20% Byzantine
nodes on the matrix's own scenario (10 nodes, 15 rounds) and compares each with the SAME
honest nodes trained by the weighted mean without attackers (``absent`` adversaries). It
fails when robustness is broken: the same check with the undefended weighted mean fails (the
control at the end), so a default that stops defending makes this test red (docs/robustness.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.robustness import MatrixSpec, expand, run_point, with_gaps
from swarm_tune.sim.scenario import load_scenario

MATRIX = Path(__file__).resolve().parents[2] / "scenarios" / "robustness-matrix.yaml"
# The default passes these in the matrix; sign_flip pins the direction filter (without it the
# geometric median lost +5.4% to it); the Sybil pair on one /24 whose copies carry noise of
# 0.2 x RMS (too much to count as copies) pins judging each colluder without the others
# (without it +6.3%).
ADAPTIVE = "sign_flip:3+sybil+jitter:0.2"
ATTACKS = ["noise", "ipm", "alie", "sign_flip", ADAPTIVE]
# Mimics on distinct subnets copy an honest update with noise of 1e-3 x RMS: only
# near-duplicate collapsing groups them (+3.9% without it; +5.0% before the direction
# test's centre came from the cosines' shortest half).
MIMICS = "mimic+jitter"
GAP_PCT = 2.0  # the acceptance bound of issue 12


def test_matrix_expands_with_one_clean_reference_per_fraction_and_skew() -> None:
    base = load_scenario(MATRIX)
    spec = MatrixSpec(rules=["mean", "median"], attacks=["alie", "ipm"], fractions=[0, 0.2],
                      non_iid=[0.0, 0.8])  # fmt: skip
    points = expand(base, spec)
    assert len(points) == 2 * (2 * 1 + 1 + 2 * 2)  # per skew: 0% x rules, clean, 20% cells
    assert sum(p.attack == "clean" for p in points) == 2
    assert MatrixSpec(attacks=["krumm"], rules=["x"]).problems(10)[0].startswith("rules:")
    assert "unknown attack" in MatrixSpec(attacks=["krumm"]).problems(10)[0]


def test_the_clean_reference_keeps_the_same_honest_nodes() -> None:
    base = load_scenario(MATRIX)
    points = expand(base, MatrixSpec(rules=["median"], attacks=["ipm"], fractions=[0.3],
                                     non_iid=[0.8]))  # fmt: skip
    clean, attacked = (SimDriver(p.scenario) for p in points)
    attackers = {n.index for n in attacked.nodes if n.adversary is not None}
    assert len(attackers) == 3 and clean._absent == attackers
    assert [n.address for n in clean.nodes if n.index not in attackers] == [
        n.address for n in attacked.nodes if n.index not in attackers
    ]


def _regression(rule: str, attacks: list[str], **protocol: object) -> list[dict[str, object]]:
    base = load_scenario(MATRIX)
    if protocol:
        base = base.model_copy(update={"protocol": base.protocol.model_copy(update=protocol)})
    spec = MatrixSpec(rules=[rule], attacks=attacks, fractions=[0.2], non_iid=[0.0])
    return with_gaps([run_point(p) for p in expand(base, spec)])


@pytest.mark.timeout(300)
def test_default_rule_holds_against_five_attacks_at_20_percent() -> None:
    rule = ProtocolConfig().aggregation_rule
    rows = _regression(rule, ATTACKS)
    assert len(rows) == len(ATTACKS)
    for r in rows:
        assert r["honest_banned"] == 0, r
        assert float(r["gap_pct"]) <= GAP_PCT, r  # type: ignore[arg-type]
    # Control: the weighted mean without the direction filter under the same noise attack is
    # far outside the bound (+21%), so this test does fail when the defence is gone.
    (control,) = _regression("mean", ATTACKS[:1], direction_test="never")
    assert float(control["gap_pct"]) > 3 * GAP_PCT, control  # type: ignore[arg-type]
    # Control: without near-duplicate collapsing the jittered mimics get through.
    (exact_only,) = _regression(rule, [MIMICS], near_duplicate_ratio=0.0)
    assert float(exact_only["gap_pct"]) > GAP_PCT, exact_only  # type: ignore[arg-type]


# Group rounds see no whole update: these pin what stands in for it (group.py). sign_flip and
# label_flip the votes (+4.07% and +2.48% without them: docs/robustness.md), mimic the copies
# found by manifest (+4.83% without the judge).
GROUP_ATTACKS = ["sign_flip", "label_flip", "mimic"]


@pytest.mark.timeout(300)
def test_group_rounds_hold_the_default_rule_against_three_attacks_at_20_percent() -> None:
    rows = _regression(ProtocolConfig().aggregation_rule, GROUP_ATTACKS, strategy="group")
    assert len(rows) == len(GROUP_ATTACKS)
    for r in rows:
        assert r["honest_banned"] == 0, r
        assert float(r["gap_pct"]) <= GAP_PCT, r  # type: ignore[arg-type]
