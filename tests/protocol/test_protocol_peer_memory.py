"""most_recent: a log of per-peer updates read as the table ``remember`` would have kept."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.protocol.peer_memory import most_recent, remember

LOGS = st.lists(st.tuples(st.sampled_from("abcdefghij"), st.integers(0, 9)), max_size=60)


@given(LOGS, st.integers(1, 12))
@settings(max_examples=200, deadline=None)
def test_a_log_read_as_a_table_equals_remembering_each_entry(
    log: list[tuple[str, int]], limit: int
) -> None:
    table: dict[str, int] = {}
    for peer, value in log:
        remember(table, peer, value, limit=limit)
    got = most_recent(log, limit)
    assert list(got.items()) == list(table.items())  # same peers, values and LRU order
    # Compacting a prefix of the log and appending the rest reads the same.
    cut = len(log) // 2
    compacted = [*most_recent(log[:cut], limit).items(), *log[cut:]]
    assert list(most_recent(compacted, limit).items()) == list(got.items())
