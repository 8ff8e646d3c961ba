"""most_recent / raise_all: a log of per-peer updates read as the table ``remember`` would
have kept."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.protocol.peer_memory import most_recent, raise_all, remember

LOGS = st.lists(st.tuples(st.sampled_from("abcdefghij"), st.integers(0, 9)), max_size=60)


@given(LOGS, st.integers(1, 12))
@settings(max_examples=120, deadline=None)
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


@given(LOGS, LOGS, st.integers(1, 12), st.integers(0, 60))
@settings(max_examples=60, deadline=None)
def test_a_folded_log_of_raises_equals_raising_on_each_entry(
    before: list[tuple[str, int]], log: list[tuple[str, int]], limit: int, cut: int
) -> None:
    # ``before`` fills the table (with and without room for the log's peers); the log is
    # folded in two parts, as reads in the middle of a round would.
    table: dict[str, int] = {}
    for peer, value in before:
        remember(table, peer, value, limit=limit)
    folded = dict(table)
    for peer, value in log:  # the per-message rule the log replaces
        if table.get(peer, -1) < value:
            remember(table, peer, value, limit=limit)
    first, rest = log[:cut], log[cut:]
    raise_all(folded, first, limit)
    raise_all(folded, rest, limit)
    assert list(folded.items()) == list(table.items())  # same values and LRU order
    assert not first and not rest  # each log is emptied
