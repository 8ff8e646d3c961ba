"""Slot admission rules (pure functions): strangers never make a member's offer wait."""

from __future__ import annotations

from swarm_tune.runtime.net.admission import Slot, SlotTable, admit_transfer

GRACE, RATE = 1.0, 100.0


def table_with(*slots: Slot, total: int = 4) -> SlotTable:
    table = SlotTable(total, per_key=2)
    for slot in slots:
        table.add(slot)
    return table


def test_a_member_evicts_a_stranger_even_one_on_schedule() -> None:
    strangers = [Slot(f"s{i}", started=10.0, size=1000) for i in range(2)]
    members = [Slot(f"m{i}", started=0.0, size=1000, priority=True) for i in range(2)]
    table = table_with(*strangers, *members)
    # now = 10.5: the strangers are inside their grace (not behind); the members are behind.
    ok, victim = admit_transfer(table, Slot("m9", 10.5, 1000, priority=True), 10.5, GRACE, RATE)
    assert ok and victim in strangers and victim.evicted


def test_strangers_share_their_own_cap_and_only_displace_laggard_strangers() -> None:
    table = table_with(Slot("s0", 10.0, 1000), Slot("s1", 10.0, 1000), total=8)
    # Cap of 2 reached, both inside their grace: BUSY, members untouched.
    assert admit_transfer(table, Slot("s2", 10.5, 1000), 10.5, GRACE, RATE, 2) == (False, None)
    # Later both are behind; the newcomer takes the place of the one furthest behind.
    table.slots()[0].got = 500
    ok, victim = admit_transfer(table, Slot("s3", 13.0, 1000), 13.0, GRACE, RATE, 2)
    assert ok and victim is not None and victim.key == "s1"


def test_a_stranger_never_displaces_a_member() -> None:
    members = [Slot(f"m{i}", started=0.0, size=1000, priority=True) for i in range(4)]
    table = table_with(*members)  # full of members, all far behind schedule
    assert admit_transfer(table, Slot("s0", 50.0, 1000), 50.0, GRACE, RATE, 2) == (False, None)
    assert not any(m.evicted for m in members)


def test_members_among_themselves_keep_the_schedule_rule() -> None:
    late = Slot("m0", started=0.0, size=1000, priority=True)
    fresh = [Slot(f"m{i}", started=9.9, size=1000, priority=True) for i in range(1, 4)]
    table = table_with(late, *fresh)
    ok, victim = admit_transfer(table, Slot("m9", 10.0, 1000, priority=True), 10.0, GRACE, RATE)
    assert ok and victim is late
    full = table_with(*[Slot(f"n{i}", 9.9, 1000, priority=True) for i in range(4)])
    new = Slot("n9", 10.0, 1000, priority=True)
    assert admit_transfer(full, new, 10.0, GRACE, RATE) == (False, None)
