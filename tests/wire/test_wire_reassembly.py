"""split_frames + Reassembler: round trips, caps under hostile streams, timeouts, consistency."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st
from wire_helpers import ALICE, BOB, RUN, same_tensor

from swarm_tune.runtime.wire import (
    FRAME_HEADER_BYTES,
    BadMagic,
    Envelope,
    Expired,
    InconsistentChunks,
    MsgType,
    Oversized,
    Reassembler,
    ReassemblyLimit,
    SenderMismatch,
    WireError,
    WireLimits,
    WrongRun,
    encode,
    split_frames,
)

HDR = struct.Struct("<4sHH16sIIQI")


def big_message(identity=ALICE, n: int = 50_000, round: int = 1) -> tuple[bytearray, torch.Tensor]:  # type: ignore[no-untyped-def]
    t = torch.randn(n, generator=torch.Generator().manual_seed(round))
    env = Envelope(MsgType.CONTRIBUTION, RUN, round, identity.peer_id, {}, {"w": t})
    return encode(env, identity), t


def test_frames_are_bounded_and_reassemble_in_any_order() -> None:
    msg, t = big_message()
    frames = split_frames(msg)
    assert len(frames) == -(-len(msg) // (61_440 - FRAME_HEADER_BYTES)) > 1
    assert all(len(f) <= 61_440 for f in frames)
    random.Random(1).shuffle(frames)
    r = Reassembler(expected_run_id=RUN)
    results = [r.push(ALICE.peer_id, f, now=0.0) for f in frames]
    assert all(x is None for x in results[:-1])
    env = results[-1]
    assert env is not None and same_tensor(env.tensors["w"], t)
    assert r.buffered_bytes == 0 and r.incomplete == 0
    assert r.push(ALICE.peer_id, frames[0], now=1.0) is None  # late duplicate ignored
    assert r.incomplete == 0


def test_single_frame_and_custom_frame_size() -> None:
    small = encode(Envelope(MsgType.HEARTBEAT, RUN, 0, ALICE.peer_id, {"a": 1}, {}), ALICE)
    (frame,) = split_frames(small)
    env = Reassembler(expected_run_id=RUN).push(ALICE.peer_id, frame, now=0.0)
    assert env is not None and env.meta == {"a": 1}
    msg, t = big_message(n=3000)
    frames = split_frames(msg, max_frame_bytes=2048)
    assert max(map(len, frames)) <= 2048
    r = Reassembler(expected_run_id=RUN)
    out = [r.push(ALICE.peer_id, f, 0.0) for f in frames]
    assert out[-1] is not None and same_tensor(out[-1].tensors["w"], t)


def test_sender_must_equal_transport_peer_and_run() -> None:
    msg, _ = big_message(n=100)
    (frame,) = split_frames(msg)
    with pytest.raises(SenderMismatch):
        Reassembler(expected_run_id=RUN).push(BOB.peer_id, frame, now=0.0)
    with pytest.raises(WrongRun):
        Reassembler(expected_run_id="other").push(ALICE.peer_id, frame, now=0.0)


def test_timeout_expires_incomplete_messages() -> None:
    limits = WireLimits(reassembly_timeout=10.0)
    r = Reassembler(expected_run_id=RUN, limits=limits)
    a, _ = big_message(round=1)
    b, _ = big_message(BOB, round=2)
    fa, fb = split_frames(a), split_frames(b)
    r.push(ALICE.peer_id, fa[0], now=0.0)
    r.push(BOB.peer_id, fb[0], now=5.0)
    assert r.incomplete == 2 and r.buffered_bytes > len(a)
    with pytest.raises(Expired):
        r.push(ALICE.peer_id, fa[1], now=10.0)
    assert r.incomplete == 1 and r.peer_bytes(ALICE.peer_id) == 0
    assert r.expire(15.0) and r.incomplete == 0 and r.buffered_bytes == 0
    # After expiry a full resend works from scratch.
    out = [r.push(ALICE.peer_id, f, now=20.0) for f in fa]
    assert out[-1] is not None


def _frame(mid: bytes, index: int, count: int, total: int, chunk: int, data: bytes) -> bytes:
    return HDR.pack(b"SWRF", 1, 0, mid, index, count, total, chunk) + data


def test_inconsistent_chunk_sets_rejected_and_dropped() -> None:
    r = Reassembler(expected_run_id=RUN)
    mid, p = b"m" * 16, ALICE.peer_id
    r.push(p, _frame(mid, 0, 3, 5000, 2000, b"a" * 2000), 0.0)
    with pytest.raises(InconsistentChunks) as info:
        r.push(p, _frame(mid, 1, 3, 5001, 2000, b"b" * 2000), 0.0)  # different total
    assert info.value.reason == "count_total" or info.value.reason == "header_mismatch"
    r.push(p, _frame(mid, 0, 3, 5000, 2000, b"a" * 2000), 0.0)
    r.push(p, _frame(mid, 0, 3, 5000, 2000, b"a" * 2000), 0.0)  # identical duplicate: fine
    with pytest.raises(InconsistentChunks) as info:
        r.push(p, _frame(mid, 0, 3, 5000, 2000, b"X" * 2000), 0.0)
    assert info.value.reason == "duplicate_differs"
    assert r.incomplete == 0 and r.buffered_bytes == 0  # whole partial discarded
    r.push(p, _frame(mid, 0, 3, 5000, 2000, b"a" * 2000), 0.0)
    with pytest.raises(InconsistentChunks) as info:
        r.push(p, _frame(mid, 1, 3, 6000, 2000, b"a" * 2000), 0.0)  # same count, other total
    assert info.value.reason == "header_mismatch"
    bad = [
        (_frame(mid, 3, 3, 5000, 2000, b"a" * 1000), "index"),
        (_frame(mid, 0, 4, 5000, 2000, b"a" * 2000), "count_total"),
        (_frame(mid, 2, 3, 5000, 2000, b"a" * 999), "chunk_length"),
        (_frame(mid, 0, 3, 5000, 2000, b"a" * 1999), "chunk_length"),
        (_frame(mid, 0, 50, 500, 10, b"a" * 10), "chunk_size"),  # below min_chunk_bytes
        (_frame(mid, 0, 1, 0, 10, b""), "empty"),
        (_frame(mid, 0, 1, 70_000, 70_000, b""), "chunk_size"),
    ]
    for frame, reason in bad:
        with pytest.raises(InconsistentChunks) as info:
            r.push(p, frame, 0.0)
        assert info.value.reason == reason
    with pytest.raises(Oversized):
        r.push(p, _frame(mid, 0, 2**20, 2**40, 2000, b"a" * 2000), 0.0)
    with pytest.raises(Oversized):
        r.push(p, b"SWRF" + bytes(70_000), 0.0)
    with pytest.raises(BadMagic):
        r.push(p, b"nope" + bytes(60), 0.0)


def test_caps_reject_without_evicting_honest_peers() -> None:
    limits = WireLimits(
        max_message_bytes=1 << 20,
        max_reassembly_bytes_per_peer=300_000,
        max_reassembly_bytes_total=500_000,
        max_incomplete_per_peer=2,
    )
    r = Reassembler(expected_run_id=RUN, limits=limits)
    honest, t = big_message(BOB, n=40_000)  # ~160 KB, 3 frames
    hf = split_frames(honest)
    r.push(BOB.peer_id, hf[0], 0.0)
    evil = ALICE.peer_id
    with pytest.raises(ReassemblyLimit) as info:
        r.push(evil, _frame(b"e" * 16, 0, 200, 400_000, 2000, b"x" * 2000), 0.0)
    assert info.value.reason == "peer_bytes"
    r.push(evil, _frame(b"1" * 16, 0, 100, 200_000, 2000, b"x" * 2000), 0.0)
    with pytest.raises(ReassemblyLimit) as info:
        r.push("third-peer", _frame(b"2" * 16, 0, 100, 200_000, 2000, b"x" * 2000), 0.0)
    assert info.value.reason == "global_bytes"
    r.push(evil, _frame(b"3" * 16, 0, 2, 4000, 2000, b"x" * 2000), 0.0)
    with pytest.raises(ReassemblyLimit) as info:
        r.push(evil, _frame(b"4" * 16, 0, 2, 4000, 2000, b"x" * 2000), 0.0)
    assert info.value.reason == "too_many_incomplete"
    assert r.buffered_bytes <= 500_000
    out = [r.push(BOB.peer_id, f, 1.0) for f in hf[1:]]
    assert out[-1] is not None and same_tensor(out[-1].tensors["w"], t)
    r.drop_peer(evil)
    assert r.buffered_bytes == 0


HOSTILE_LIMITS = WireLimits(
    max_message_bytes=20_000,
    max_frame_bytes=600,
    min_chunk_bytes=16,
    max_reassembly_bytes_per_peer=12_000,
    max_reassembly_bytes_total=25_000,
    max_incomplete_per_peer=3,
    reassembly_timeout=5.0,
)


@st.composite
def hostile_frames(draw: st.DrawFn) -> tuple[str, bytes, float]:
    peer = draw(st.sampled_from(["p0", "p1", "p2", "p3", "p4"]))
    mid = draw(st.sampled_from([b"a" * 16, b"b" * 16, b"c" * 16, b"d" * 16]))
    total = draw(st.integers(1, 25_000))
    chunk = draw(st.sampled_from([16, 100, 556, 600, draw(st.integers(1, 700))]))
    count = -(-total // chunk) if draw(st.integers(0, 9)) else draw(st.integers(0, 3000))
    index = (
        draw(st.integers(0, max(count - 1, 0)))
        if draw(st.integers(0, 9))
        else draw(st.integers(0, 2**32 - 1))
    )
    exact = min(chunk, max(total - index * chunk, 0))
    n = exact if draw(st.integers(0, 5)) else draw(st.integers(0, 700))
    data = bytes([draw(st.integers(0, 255))]) * n
    frame = HDR.pack(b"SWRF", 1, 0, mid, index, count, total, chunk) + data
    if not draw(st.integers(0, 20)):
        frame = bytes(draw(st.binary(max_size=80)))
    return peer, frame, draw(st.floats(0, 2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_frames(), min_size=1, max_size=120))
def test_hostile_stream_never_exceeds_caps(stream: list[tuple[str, bytes, float]]) -> None:
    r = Reassembler(expected_run_id=RUN, limits=HOSTILE_LIMITS)
    now = 0.0
    peak = 0
    for peer, frame, dt in stream:
        now += dt  # monotonic caller clock
        with contextlib.suppress(WireError):  # typed rejections are fine; nothing else is
            r.push(peer, frame, now)
        peak = max(peak, r.buffered_bytes)
        assert r.buffered_bytes <= HOSTILE_LIMITS.max_reassembly_bytes_total
        assert r.allocated_bytes() <= r.buffered_bytes
        for p in ("p0", "p1", "p2", "p3", "p4"):
            assert r.peer_bytes(p) <= HOSTILE_LIMITS.max_reassembly_bytes_per_peer
    target(float(peak))  # steer hypothesis towards memory pressure
    r.expire(now + HOSTILE_LIMITS.reassembly_timeout)
    assert r.buffered_bytes == 0 and r.incomplete == 0
