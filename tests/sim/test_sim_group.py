"""Group rounds in the simulator: the bytes charged per slice, the same learning as flat
rounds, and a member crashing in the middle of a round."""

from __future__ import annotations

from typing import Any

from swarm_tune.sim.driver import SimDriver
from swarm_tune.sim.scenario import parse_scenario

PAYLOAD = 400_000  # virtual bytes of one update: bulk transfers, links shared fairly

SCENARIO = f"""
name: group
seed: 4
nodes: {{count: 4}}
links:
  bandwidth: [{{uplink_mbps: 20, downlink_mbps: 100}}]
compute:
  classes: [{{step_time: {{dist: lognormal, median: 1.0, sigma: 0.01}}}}]
learning: {{hidden: 8, embed: 4, context: 3, batch_size: 8, samples_per_node: 64,
           eval_samples: 64, virtual_payload_bytes: {PAYLOAD}}}
protocol: {{quorum: 1.0, round_timeout: 8, heartbeat_interval: 2, eviction_timeout: 20,
           aggregation_rule: mean, param_sync_every: 0, strategy: %s}}
rounds: {{target: %d}}
"""


def _run(strategy: str, rounds: int, extra: str = "") -> tuple[SimDriver, Any]:
    driver = SimDriver(parse_scenario(SCENARIO % (strategy, rounds) + extra))
    return driver, driver.run()


def _rows(result: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = result.recorder.tables()["rounds"].to_pylist()
    return rows


def test_group_rounds_send_2_n_minus_1_over_n_and_learn_as_flat_rounds() -> None:
    n, rounds = 4, 6
    _, flat = _run("flat", rounds)
    group_drv, group = _run("group", rounds)
    per_node: dict[str, list[float]] = {}
    for name, res in (("flat", flat), ("group", group)):
        rows = [r for r in _rows(res) if r["round"] < rounds - 1]  # whole rounds only
        assert all(r["outcome"] == "average" and r["contributors"] == n for r in rows)
        per_node[name] = [r["bytes_sent"] / PAYLOAD for r in rows]
    # Flat: N-1 = 3 updates per node and round. Group: 2 (N-1)/N = 1.5, plus the audit's
    # 1/N-sized piece when this node is asked, and a few small lists and heartbeats.
    assert min(per_node["flat"]) >= n - 1
    assert max(per_node["group"]) <= 2 * (n - 1) / n + 1 / n + 0.05
    assert min(per_node["group"]) >= 2 * (n - 1) / n
    assert {r["trigger"] for r in _rows(group) if r["round"] < rounds - 1} == {"group"}
    # The same learning: every replica identical, and round by round the same losses as
    # flat averaging (the mean of the same updates, summed slice by slice: float rounding).
    assert group_drv.engine.divergence(range(n)) == 0.0
    assert len({r["digest"] for r in _rows(group) if r["round"] == rounds - 1}) == 1
    key = ("node", "round")
    by = {
        name: {tuple(r[k] for k in key): r for r in _rows(res)}
        for name, res in (("flat", flat), ("group", group))
    }
    common = sorted(set(by["flat"]) & set(by["group"]))
    assert len(common) >= n * (rounds - 1)
    for at in common:
        f, g = by["flat"][at], by["group"][at]
        assert abs(f["loss"] - g["loss"]) <= 1e-4 * abs(f["loss"])
        if f["eval_loss"] == f["eval_loss"] and g["eval_loss"] == g["eval_loss"]:  # not NaN
            assert abs(f["eval_loss"] - g["eval_loss"]) <= 1e-4 * abs(f["eval_loss"])


def test_a_member_crashing_mid_round_leaves_survivors_on_the_same_average() -> None:
    # Round 3 opens at ~4.17 s (1 s step + ~0.4 s of transfers per round); its pieces go out
    # at ~5.17 s and the crash lands among them. The sim has no TCP reset: survivors stop
    # waiting at the group deadline, and the flat fallback waits for the silent member until
    # the round timeout (as a flat round would) and again next round, until it is evicted.
    _, res = _run("group", 5, "timeline:\n  - {at: 5.3, do: crash, nodes: [n0003]}\n")
    rows = _rows(res)
    hit = min(r["round"] for r in rows if r["trigger"] != "group")
    assert hit == 3
    assert not [r for r in rows if r["node"] == "n0003" and r["round"] >= hit]
    for rnd in range(hit, 5):
        survivors = [r for r in rows if r["round"] == rnd]
        assert len(survivors) == 3
        assert all(r["outcome"] == "average" and r["contributors"] == 3 for r in survivors)
    # The same bits: every survivor applied the same average of the same three updates
    # (a row's digest is the parameters its round started from).
    for rnd in range(hit + 1, 5):
        assert len({r["digest"] for r in rows if r["round"] == rnd}) == 1


def test_attackers_craft_what_they_contribute_to_group_rounds() -> None:
    # A group round slices the update inside the core, so the adversary must craft the
    # update before it is sliced: its pieces (not a Contribution) are what it contributes.
    # Before this was wired, every attack but label_flip sent honest pieces in group rounds.
    adversary = "adversaries:\n  - {behaviour: sign_flip, count: 1, strength: 4}\n"
    clean_drv, clean = _run("group", 3, adversary.replace("count: 1,", "count: 1, absent: true,"))
    attacked_drv, attacked = _run("group", 3, adversary)
    crafted = [n.adversary.crafted_sent for n in attacked_drv.nodes if n.adversary is not None]
    assert len(crafted) == 1 and crafted[0] >= 3  # one per round it trained
    honest = [n.index for n in attacked_drv.nodes if n.adversary is None]
    assert len(honest) == 3
    assert attacked_drv.engine.divergence(honest) == 0.0  # still one group result
    names = {attacked_drv.nodes[i].id for i in honest}
    last = {r["node"]: r["digest"] for r in _rows(clean) if r["round"] == 2}
    hit = {r["node"]: r["digest"] for r in _rows(attacked) if r["round"] == 2}
    assert set(last) == names <= set(hit)
    assert all(last[n] != hit[n] for n in names)
    assert clean_drv.engine.divergence(honest) == 0.0


def _subgroup_run(param_sync_every: int) -> tuple[SimDriver, list[dict[str, Any]]]:
    text = (SCENARIO % ("group", 8)).replace("count: 4", "count: 12")
    text = text.replace("strategy: group", "strategy: group, group_size: 4")
    text = text.replace("param_sync_every: 0", f"param_sync_every: {param_sync_every}")
    driver = SimDriver(parse_scenario(text))
    return driver, _rows(driver.run())


def test_subgroups_in_the_simulator_average_within_fresh_groups_each_round() -> None:
    driver, rows = _subgroup_run(0)
    whole = [r for r in rows if r["round"] < 7]
    assert len(whole) == 12 * 7
    assert all(r["trigger"] == "group" and r["contributors"] == 4 for r in whole)
    # The three groups of round 0 each applied one result: round 1 starts from 3 models.
    assert len({r["digest"] for r in rows if r["round"] == 1}) == 3
    # Each node sends about 2 (g-1)/g = 1.5 updates a round, plus an audit piece when asked.
    per_node = [r["bytes_sent"] / PAYLOAD for r in whole]
    assert min(per_node) >= 1.5 and max(per_node) <= 1.5 + 1 / 4 + 0.1
    # Gradient rounds alone let the groups' replicas drift apart; parameter rounds, dealt
    # into fresh subgroups too, mix them back (Moshpit averaging).
    mixed, _ = _subgroup_run(2)
    drift = driver.engine.divergence(range(12))
    assert drift > 0 and mixed.engine.divergence(range(12)) < drift / 3
