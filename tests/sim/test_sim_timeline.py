"""Groups, the scripted timeline and the counterfactual run: pins, events, bad scripts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarm_tune.runtime.cli import app
from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.scenario import ScenarioError, parse_scenario

BASE = """\
name: scripted
seed: 5
nodes: {count: 16}
topology:
  kind: regions
  regions: [{name: eu}, {name: us}]
  region_latency_ms: [[10, 45], [45, 10]]
links:
  bandwidth: [{uplink_mbps: 100, downlink_mbps: 200}]
compute:
  classes:
    - {name: fast, step_time: {dist: lognormal, median: 1.0, sigma: 0.1}}
    - {name: slow, weight: 0.001, step_time: {dist: constant, value: 3.0}}
learning: {hidden: 8, embed: 4, context: 3, batch_size: 8, samples_per_node: 64,
           eval_samples: 64, virtual_payload_bytes: 200000}
protocol: {quorum: 0.8, round_timeout: 5, heartbeat_interval: 1, eviction_timeout: 4}
rounds: {target: 12}
"""

SCRIPT = (
    BASE
    + """\
groups:
  - {name: leavers, count: 4, bandwidth: {uplink_mbps: 10, downlink_mbps: 50}, region: us}
  - name: evil
    nodes: [n0000, n0001]
    subnet: 198.51.100.0
    adversary: {behaviour: scale, strength: 50}
  - {name: late, count: 2, start: offline, compute: slow}
timeline:
  - {round: 3, do: leave, group: leavers}
  - {round: 6, do: join, group: leavers}
  - {round: 4, do: join, group: late}
  - {round: 7, do: partition, sides: [[eu]]}
  - {round: 9, do: heal}
"""
)


def test_groups_are_pinned_and_the_script_plays_in_order() -> None:
    drv = SimDriver(parse_scenario(SCRIPT))
    leavers, evil, late = (drv.groups.members[g] for g in ("leavers", "evil", "late"))
    assert len(leavers) == 4 and evil == [0, 1] and len(late) == 2
    assert all(drv.site_of[i] == 1 for i in leavers)  # region us
    assert all(drv.network.uplink_bps[i] == 10e6 for i in leavers)
    assert [drv.nodes[i].address for i in evil] == ["198.51.100.1", "198.51.100.2"]
    assert all(drv.compute.class_name(i) == "slow" for i in late)
    assert all(drv.nodes[i].adversary is not None for i in evil)
    res = drv.run()
    ev = res.recorder.tables()["events"].to_pandas()
    ids = {drv.nodes[i].id for i in leavers}
    left = ev[(ev.kind == "leave") & ev.node.isin(ids)]
    back = ev[(ev.kind == "rejoin") & ev.node.isin(ids)]
    # They leave once, come back once, and stay: no random churn touches scripted nodes.
    assert len(left) == 4 and len(back) == 4 and (back.t.min() > left.t.max())
    assert list(left.value.unique()) == [3]  # the round they had reached
    joined = ev[(ev.kind == "join") & ev.node.isin({drv.nodes[i].id for i in late})]
    assert len(joined) == 2
    opened = ev[ev.kind == "partition_open"].t.tolist()
    healed = ev[ev.kind == "partition_heal"].t.tolist()
    assert len(opened) == len(healed) == 1 and opened[0] < healed[0]
    rounds = res.recorder.tables()["rounds"].to_pandas()
    # Late joiners were not there at the start: their first rounds are the swarm's, not 0.
    assert rounds[rounds.node.isin({drv.nodes[i].id for i in late})]["round"].min() >= 3


def test_the_counterfactual_keeps_the_honest_world() -> None:
    with_adv = SimDriver(parse_scenario(SCRIPT))
    without = SimDriver(parse_scenario(SCRIPT + "without_adversaries: true\n"))
    honest = [i for i in range(16) if with_adv.nodes[i].adversary is None]
    for a, b in ((with_adv, without),):
        assert a.groups.members == b.groups.members
        assert a.site_of == b.site_of
        assert a.network.uplink_bps == b.network.uplink_bps
        assert [a.compute.profiles[i] for i in honest] == [b.compute.profiles[i] for i in honest]
        assert [a.nodes[i].address for i in honest] == [b.nodes[i].address for i in honest]
    r1 = with_adv.run().recorder.tables()["rounds"].to_pandas()
    r2 = without.run().recorder.tables()["rounds"].to_pandas()
    assert not r2.node.isin({"n0000", "n0001"}).any()  # the adversaries never started
    first = [r[(r["round"] == 0) & (r.adversary == "")].set_index("node").loss for r in (r1, r2)]
    # Same shards, same initial parameters, same first local step for every honest node.
    assert first[0].sort_index().tolist() == first[1].sort_index().tolist()


def test_first_session_has_its_own_distribution() -> None:
    text = BASE + (
        "churn: {fraction: 0.25, session: {dist: constant, value: 1000}, "
        "offline: {dist: constant, value: 5}, first_session: {dist: constant, value: 7}, "
        "crash_probability: 0.0}\n"
    )
    res = SimDriver(parse_scenario(text)).run()
    ev = res.recorder.tables()["events"].to_pandas()
    leaves = ev[ev.kind == "leave"]
    assert len(leaves) == 4 and (leaves.t == 7.0).all()
    # ... and the later sessions follow ``session``: nobody leaves again within the run.
    assert (ev[ev.kind == "rejoin"].t == 12.0).all()


BAD = [
    ("timeline:\n  - {round: 2, do: leave, group: ghosts}\n", "unknown group 'ghosts'"),
    ("timeline:\n  - {round: 2, do: crash, nodes: [n0099]}\n", "unknown node 'n0099'"),
    ("groups:\n  - {name: big, count: 40}\n", "group 'big' has 40 nodes but the swarm has 16"),
    (  # with adversaries too: still one line (their pool is not counted against the group)
        "adversaries: [{behaviour: scale, count: 2}]\ngroups:\n  - {name: big, count: 40}\n",
        "group 'big' has 40 nodes but the swarm has 16",
    ),
    (
        "timeline:\n  - {round: 2, do: leave, nodes: [3]}\n  - {round: 2, do: crash, nodes: [3]}\n",
        "contradicts timeline.0",
    ),
    ("timeline:\n  - {round: 2, do: join, nodes: [3]}\n", "join: n0003 is already online"),
    (
        "timeline:\n  - {round: 2, do: leave, nodes: [3]}\n  - {round: 4, do: leave, nodes: [3]}\n",
        "leave: n0003 is not online",
    ),
    (
        "timeline:\n  - {at: 2, do: partition, sides: [[eu]]}\n"
        "  - {at: 4, do: partition, sides: [[us]]}\n",
        "a partition (timeline.0) is open",
    ),
    ("timeline:\n  - {at: 2, do: heal}\n", "heal: no partition is open"),
    (
        "timeline:\n  - {at: 2, do: leave, nodes: [3]}\n  - {round: 4, do: join, nodes: [3]}\n",
        "both at and round",
    ),
    ("timeline:\n  - {at: 2, do: partition, sides: [[mars]]}\n", "unknown group or region"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_scripts_are_refused_with_their_line(extra: str, message: str) -> None:
    text = BASE + extra
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "s.yaml")
    (problem,) = err.value.problems
    assert message in problem.message
    assert problem.line is not None and problem.line > BASE.count("\n")


def test_the_cli_prints_one_line_with_file_and_line_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BASE + "timeline:\n  - {round: 2, do: leave, group: ghosts}\n")
    result = CliRunner().invoke(app, ["sim", "run", str(path)])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    line_no = BASE.count("\n") + 2
    assert len(lines) == 1 and f"{path}:{line_no}:" in lines[0] and "ghosts" in lines[0]


HEAL = """\
name: heal
seed: 1
nodes: {count: 16}
topology: {kind: full, latency_ms: 20}
links: {bandwidth: [{uplink_mbps: 100, downlink_mbps: 200}]}
compute: {classes: [{step_time: {dist: lognormal, median: 1.0, sigma: 0.1}}]}
groups: [{name: west, count: 8}]
timeline:
  - {round: 5, do: partition, sides: [[west]]}
  - {round: 15, do: heal}
learning: {hidden: 16, embed: 4, context: 4, batch_size: 16, samples_per_node: 128,
           eval_samples: 128, lr: 0.01, optimizer: adam, non_iid: 0.5}
protocol: {quorum: 0.8, round_timeout: 6, heartbeat_interval: 1, eviction_timeout: 4,
           param_sync_every: 10, drift_bound: 0.02, redial_interval: 2}
rounds: {target: 22}
outputs: {eval_every: 1}
"""


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_healed_partition_reconnects_and_realigns_within_five_rounds(seed: int) -> None:
    """10 rounds cut in two halves with fast eviction: every cross pair is evicted; after the
    heal the core redials (Dial) and the halves average together again, and they are back
    under drift_bound within 5 rounds of the heal (issue 15's acceptance). What realigns
    them is an early parameter round the core agrees on when it hears the swarm split in
    state (node.py, _early_params; before it, only the scheduled parameter round at 20 did:
    6, 6, 4, 6 rounds for seeds 1-4; seeds 1-10 now take 4-5)."""
    res = SimDriver(parse_scenario(HEAL.replace("seed: 1", f"seed: {seed}"))).run()
    t = res.recorder.tables()
    rounds, swarm = t["rounds"].to_pandas(), t["swarm"].to_pandas().set_index("round")
    ev = t["events"].to_pandas()
    assert (ev.kind == "evict").sum() >= 8 * 8 * 2  # every pair across the cut
    contributors = rounds.groupby("round").contributors.median()
    assert contributors.loc[8:14].max() <= 8  # cut: a half averages alone
    assert contributors.loc[18:21].min() >= 12  # healed: together again
    assert swarm.divergence.loc[14] > 0.02  # the halves did drift apart ...
    back = [r for r in range(15, 22) if swarm.divergence.loc[r] < 0.02]
    assert back and back[0] - 15 <= 5, swarm.divergence.loc[14:21].round(3).tolist()
