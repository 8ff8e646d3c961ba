"""ReplayGuard: duplicates, stale rounds, per-sender windows, bounded memory."""

from __future__ import annotations

import pytest
from wire_helpers import ALICE, BOB, RUN, small_envelope

from swarm_tune.runtime.wire import Envelope, MsgType, Replay, ReplayGuard, decode, encode


def test_duplicate_decoded_message_rejected() -> None:
    guard = ReplayGuard()
    msg = encode(small_envelope(), ALICE)
    guard.admit(decode(msg, expected_run_id=RUN))
    with pytest.raises(Replay) as info:
        guard.admit(decode(bytes(msg), expected_run_id=RUN))
    assert info.value.reason == "duplicate"
    with pytest.raises(ValueError):
        guard.admit(small_envelope())  # locally built: no digest


def test_distinct_messages_with_same_payload_both_admitted() -> None:
    guard = ReplayGuard()
    for i in range(3):  # heartbeats: identical (empty) payload, different meta
        env = Envelope(MsgType.HEARTBEAT, RUN, 5, ALICE.peer_id, {"seq": i}, {})
        guard.admit(decode(encode(env, ALICE), expected_run_id=RUN))
    assert len(guard) == 3


def test_stale_rounds_and_eviction() -> None:
    guard = ReplayGuard(window_rounds=4, max_per_round=8, max_entries=1000)
    for r in range(10):
        guard.admit_key(RUN, r, "A", bytes([r]))
    assert len(guard) == 4  # rounds 6..9 remembered
    with pytest.raises(Replay) as info:
        guard.admit_key(RUN, 5, "A", b"new")
    assert info.value.reason == "stale_round"
    guard.admit_key(RUN, 6, "A", b"new")  # still inside the window
    with pytest.raises(Replay):
        guard.admit_key(RUN, 9, "A", bytes([9]))


def test_hostile_sender_cannot_evict_others() -> None:
    guard = ReplayGuard(window_rounds=4, max_per_round=8, max_entries=1000)
    guard.admit_key(RUN, 3, BOB.peer_id, b"d")
    guard.admit_key(RUN, 10**12, ALICE.peer_id, b"x")  # jumps only Alice's window
    with pytest.raises(Replay):
        guard.admit_key(RUN, 3, BOB.peer_id, b"d")
    guard.admit_key(RUN, 4, BOB.peer_id, b"e")
    guard.admit_key("other-run", 3, BOB.peer_id, b"d")  # runs are separate


def test_round_flood_and_global_bound() -> None:
    guard = ReplayGuard(window_rounds=2, max_per_round=4, max_entries=20, max_forgotten=3)
    for i in range(4):
        guard.admit_key(RUN, 0, "A", bytes([i]))
    with pytest.raises(Replay) as info:
        guard.admit_key(RUN, 0, "A", b"more")
    assert info.value.reason == "round_flood"
    for s in range(50):
        guard.admit_key(RUN, 7, f"S{s}", b"d")
        assert len(guard) <= 20
    # Forgotten senders keep their high-water mark (bounded), so old rounds stay stale.
    with pytest.raises(Replay):
        guard.admit_key(RUN, 1, "S29", b"zz")  # evicted, but remembered as forgotten
    with pytest.raises(ValueError):
        ReplayGuard(window_rounds=10, max_per_round=10, max_entries=50)
