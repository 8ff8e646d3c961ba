"""Fuzzing: arbitrary and mutated bytes never raise anything but WireError.

Hypothesis covers structured mutations; a seeded, bounded random loop (no atheris needed)
adds volume. Both are deterministic and take a couple of seconds.
"""

from __future__ import annotations

import random
import struct

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_helpers import ALICE, RUN, small_envelope

from swarm_tune.runtime.wire import (
    Envelope,
    MsgType,
    WireError,
    decode,
    encode,
)

VALID = bytes(encode(small_envelope(), ALICE))
BOOLS = bytes(
    encode(
        Envelope(
            MsgType.STATE_RESPONSE, RUN, 2, ALICE.peer_id, {}, {"m": torch.tensor([True, False])}
        ),
        ALICE,
    )
)


def _decode_only_wire_errors(data: bytes | bytearray) -> None:
    try:
        decode(data, expected_run_id=RUN)
    except WireError as exc:
        assert exc.reason and " " not in exc.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _decode_only_wire_errors(data)
    _decode_only_wire_errors(b"SWRM\x01\x00" + data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([VALID, BOOLS]),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10_000),
    insert=st.binary(max_size=16),
)
def test_mutated_valid_messages(
    base: bytes, edits: list[tuple[int, int]], cut: int, insert: bytes
) -> None:
    data = bytearray(base)
    for pos, val in edits:
        data[pos % len(data)] = val
    at = cut % (len(data) + 1)
    data[at:at] = insert
    mutated = bytes(data) != base
    try:
        decode(data, expected_run_id=RUN)
        assert not mutated, "a mutated message was accepted"
    except WireError:
        assert mutated


@settings(max_examples=200, deadline=None)
@given(
    length_fields=st.tuples(
        st.integers(0, 255), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
    )
)
def test_hostile_length_fields(length_fields: tuple[int, int, int]) -> None:
    r, h, p = length_fields
    data = bytearray(VALID)
    data[10] = r
    struct.pack_into("<I", data, 20, h)
    struct.pack_into("<Q", data, 24, p)
    _decode_only_wire_errors(data)


def test_seeded_random_fuzz_loop() -> None:
    """Bounded volume fuzz of decode with mutated real messages (valid small and large)."""
    rng = random.Random(20240601)
    big = encode(
        Envelope(MsgType.CONTRIBUTION, RUN, 4, ALICE.peer_id, {"k": 1}, {"w": torch.ones(3000)}),
        ALICE,
    )
    accepted = 0
    for i in range(3000):
        data = bytearray(VALID if i % 2 else big)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.6:
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            elif op < 0.8:
                if data:
                    del data[rng.randrange(len(data)) :]
            else:
                data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randint(1, 8))
        if data == (VALID if i % 2 else big):
            continue  # a no-op mutation (a byte set to its own value) is still valid
        try:
            decode(data, expected_run_id=RUN)
            accepted += 1
        except WireError:
            pass
    assert accepted == 0
