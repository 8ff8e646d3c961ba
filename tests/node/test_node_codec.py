"""Protocol messages <-> signed SWRM bytes, through the real encoder/decoder.

Round trips must be exact (including NaN sketches), and anything a signed-but-hostile peer
can put in an envelope that is not a valid protocol message must raise a ``WireError``
(``ProtocolMismatch``), which the driver turns into ``WireRejected``: never another exception.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.net.driver import wire_reason
from swarm_tune.runtime.net.protocol_codec import (
    SKETCH_TENSOR,
    ProtocolMismatch,
    from_envelope,
    to_envelope,
)
from swarm_tune.runtime.protocol import (
    Contribution,
    Goodbye,
    Heartbeat,
    Message,
    RejectReason,
    StateRequest,
    StateResponse,
)
from swarm_tune.runtime.wire import Envelope, Identity, MsgType, ReplayGuard, decode, encode
from swarm_tune.runtime.wire.errors import Replay, WireError

ME = Identity.from_seed(bytes(range(32)))
RUN = "run-node"


def roundtrip(msg: Message, round_: int = 0) -> Message:
    data = encode(to_envelope(msg, RUN, ME.peer_id, round=round_), ME)
    return from_envelope(decode(bytes(data), expected_run_id=RUN))


def params() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "transformer.h.0.attn.c_attn.weight": torch.randn(4, 12, generator=g),
        "transformer.wte.weight": torch.randn(10, 4, generator=g),
    }


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=60, deadline=None)
@given(
    rnd=st.integers(0, 2**40),
    size=st.integers(0, 2**40),
    digest=st.text("0123456789abcdef", max_size=64),
    sketch=st.lists(floats, max_size=80),
    known=st.lists(
        st.tuples(
            st.text("abcXYZ123", min_size=1, max_size=20),
            st.sampled_from(["127.0.0.1", "::1", "10.0.0.7"]),
        ),
        max_size=5,
    ),
)
def test_heartbeat_roundtrip(
    rnd: int, size: int, digest: str, sketch: list[float], known: list[tuple[str, str]]
) -> None:
    hb = Heartbeat(rnd, size, digest, tuple(sketch), tuple(known))
    out = roundtrip(hb)
    assert isinstance(out, Heartbeat)
    assert (out.round, out.dataset_size, out.digest, out.known_peers) == (
        rnd, size, digest, tuple(known),
    )  # fmt: skip
    assert len(out.sketch) == len(sketch)
    for x, y in zip(out.sketch, sketch, strict=True):
        assert (math.isnan(x) and math.isnan(y)) or x == y


def test_contribution_state_and_control_roundtrip() -> None:
    c = roundtrip(Contribution(7, "params", 123, params()))
    assert isinstance(c, Contribution) and (c.round, c.kind, c.dataset_size) == (7, "params", 123)
    assert same(c.tensors, params())
    r = roundtrip(StateResponse(2**61, 9, "ab" * 32, (1.0, -2.5), params()))
    assert isinstance(r, StateResponse) and (r.nonce, r.round, r.digest) == (2**61, 9, "ab" * 32)
    assert r.sketch == (1.0, -2.5) and same(r.tensors, params())
    q = roundtrip(StateRequest(42), round_=5)
    assert q == StateRequest(42)
    assert isinstance(roundtrip(Goodbye(), round_=3), Goodbye)


def test_repeated_identical_heartbeats_are_not_replays() -> None:
    # Ed25519 is deterministic: without the per-message nonce the second one would be a replay.
    guard = ReplayGuard()
    hb = Heartbeat(3, 10, "d", (0.5,))
    for _ in range(3):
        env = to_envelope(hb, RUN, ME.peer_id)
        guard.admit(decode(bytes(encode(env, ME)), expected_run_id=RUN))
    data = bytes(encode(to_envelope(hb, RUN, ME.peer_id), ME))
    guard.admit(decode(data, expected_run_id=RUN))
    with pytest.raises(Replay):  # ... while a true replay is still caught
        guard.admit(decode(data, expected_run_id=RUN))


def _env(msg_type: MsgType, meta: dict[str, object], tensors: dict[str, torch.Tensor]) -> Envelope:
    env = Envelope(msg_type, RUN, 1, ME.peer_id, meta, tensors)  # type: ignore[arg-type]
    return decode(bytes(encode(env, ME)), expected_run_id=RUN)


SK = {SKETCH_TENSOR: torch.zeros(3, dtype=torch.float64)}
HB = {"n": 1, "dataset_size": 1, "digest": "d", "kp_ids": [], "kp_addrs": []}

BAD = [
    (MsgType.HEARTBEAT, {**HB, "dataset_size": -1}, SK),
    (MsgType.HEARTBEAT, {**HB, "dataset_size": True}, SK),
    (MsgType.HEARTBEAT, {**HB, "digest": 5}, SK),
    (MsgType.HEARTBEAT, {**HB, "extra": 1}, SK),
    (MsgType.HEARTBEAT, {k: v for k, v in HB.items() if k != "n"}, SK),
    (MsgType.HEARTBEAT, {**HB, "kp_ids": ["a"], "kp_addrs": []}, SK),
    (MsgType.HEARTBEAT, HB, {}),
    (MsgType.HEARTBEAT, HB, {SKETCH_TENSOR: torch.zeros(3, dtype=torch.float32)}),
    (MsgType.HEARTBEAT, HB, {**SK, "w": torch.zeros(2)}),
    (MsgType.CONTRIBUTION, {"n": 1, "kind": "bogus", "dataset_size": 1}, {"w": torch.zeros(2)}),
    (MsgType.CONTRIBUTION, {"n": 1, "kind": "grad", "dataset_size": 1.5}, {"w": torch.zeros(2)}),
    (MsgType.CONTRIBUTION, {"n": 1, "kind": "grad", "dataset_size": 1}, SK),
    (MsgType.STATE_REQUEST, {"n": 1, "nonce": "x"}, {}),
    (MsgType.STATE_REQUEST, {"n": 1, "nonce": 1}, {"w": torch.zeros(1)}),
    (MsgType.STATE_RESPONSE, {"n": 1, "nonce": 1, "digest": "d"}, {"w": torch.zeros(1)}),
    (MsgType.GOODBYE, {"n": 1, "why": "x"}, {}),
]


@pytest.mark.parametrize(("msg_type", "meta", "tensors"), BAD)
def test_invalid_protocol_content_is_a_typed_wire_error(
    msg_type: MsgType, meta: dict[str, object], tensors: dict[str, torch.Tensor]
) -> None:
    env = _env(msg_type, meta, tensors)
    with pytest.raises(ProtocolMismatch) as info:
        from_envelope(env)
    assert isinstance(info.value, WireError)
    assert wire_reason(info.value) is RejectReason.MALFORMED
