"""Group-round messages <-> signed SWRM bytes: exact round trips, and hostile envelopes that
are signed but not valid group messages raise ``ProtocolMismatch`` (never anything else)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swarm_tune.runtime.net.protocol_codec import (
    EVIDENCE_PREFIX,
    GROUP_DATA,
    GROUP_SAMPLE,
    ProtocolMismatch,
    from_envelope,
    to_envelope,
)
from swarm_tune.runtime.protocol.group import data_facts, digest, with_facts
from swarm_tune.runtime.protocol.messages import (
    AuditRequest,
    AuditVerdict,
    DataFacts,
    Message,
    Piece,
    SliceResult,
)
from swarm_tune.runtime.wire import Envelope, Identity, MsgType, decode, encode

ME = Identity.from_seed(bytes(range(32)))
RUN = "run-group"
DATA = np.arange(7, dtype=np.float32) / 3
MEMBERS = ("12D3KooWa", "12D3KooWb", "12D3KooWc")


def roundtrip(msg: Message) -> Message:
    data = encode(to_envelope(msg, RUN, ME.peer_id), ME)
    return from_envelope(decode(bytearray(data), expected_run_id=RUN))


def test_every_group_message_round_trips_exactly() -> None:
    manifest = tuple(digest(DATA + k) for k in range(3))
    sums = (0.1 + 0.2, 1e-300, 7.0)  # floats that must come back bit for bit
    votes = MEMBERS[2:]
    p = roundtrip(
        Piece(4, "grad", MEMBERS, 1, 250, manifest, sums, votes, DATA[::2], DATA, audit=True)
    )
    assert isinstance(p, Piece)
    assert (p.round, p.kind, p.members, p.index, p.dataset_size, p.manifest, p.audit) == (
        4, "grad", MEMBERS, 1, 250, manifest, True,
    )  # fmt: skip
    assert p.sums == sums and p.votes == votes and np.array_equal(p.sample, DATA[::2])
    assert p.data.dtype == np.float32 and np.array_equal(p.data, DATA)
    used = tuple((m, w, d) for m, w, d in zip(MEMBERS, (0.25, 1.0, 10.0), manifest, strict=True))
    s = roundtrip(SliceResult(4, "params", MEMBERS, 2, used, manifest, digest(DATA), DATA))
    assert isinstance(s, SliceResult)
    assert (s.kind, s.index, s.used, s.digest) == ("params", 2, used, digest(DATA))
    assert s.commits == manifest
    assert np.array_equal(s.data, DATA) and digest(s.data) == s.digest
    assert roundtrip(AuditRequest(4, 2)) == AuditRequest(4, 2)
    ev = tuple((m, DATA * (i + 1)) for i, m in enumerate(MEMBERS))
    v = roundtrip(AuditVerdict(4, 0, False, digest(DATA), ev))
    assert isinstance(v, AuditVerdict) and (v.index, v.ok, v.digest) == (0, False, digest(DATA))
    assert [m for m, _ in v.evidence] == list(MEMBERS)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(v.evidence, ev, strict=True))
    ok = roundtrip(AuditVerdict(4, 1, True, "ab"))
    assert isinstance(ok, AuditVerdict) and ok.ok and not ok.evidence


def test_data_facts_never_travel_and_are_the_receivers_own() -> None:
    """A sender cannot vouch for its own data: facts it attaches (here lies) are not on the
    wire, and what the receiver's worker attaches is the pure function of the data."""
    lie = DataFacts(digest(DATA), True, 1.0)
    manifest = tuple(digest(DATA) for _ in MEMBERS)
    bad = DATA.copy()
    bad[3] = np.nan
    piece = Piece(1, "grad", MEMBERS, 0, 5, manifest, (1.0,) * 3, (), DATA[::2], bad, facts=lie)
    got = roundtrip(piece)
    assert isinstance(got, Piece) and got.facts is None
    checked = with_facts(got)
    assert isinstance(checked, Piece) and checked.facts is not None
    assert not checked.facts.finite and checked.facts.digest == digest(bad)  # sum: NaN
    used = (("12D3KooWa", 1.0, "x"),)
    sl = roundtrip(SliceResult(1, "grad", MEMBERS, 0, used, (), "d", DATA, facts=lie))
    assert isinstance(sl, SliceResult) and sl.facts is None
    checked_sl = with_facts(sl)
    assert isinstance(checked_sl, SliceResult) and checked_sl.facts == data_facts(DATA)
    # Data the core's type checks reject gets no facts (nothing computed on a wrong type).
    wide = SliceResult(1, "grad", MEMBERS, 0, used, (), "d", DATA.astype(np.float64))  # type: ignore[arg-type]
    assert with_facts(wide).facts is None  # type: ignore[union-attr]


def _env(msg_type: MsgType, meta: dict[str, object], tensors: dict[str, torch.Tensor]) -> Envelope:
    env = Envelope(msg_type, RUN, 1, ME.peer_id, {"n": 1, **meta}, tensors)  # type: ignore[arg-type]
    return decode(bytes(encode(env, ME)), expected_run_id=RUN)


T = {GROUP_DATA: torch.zeros(4)}
PT = {**T, GROUP_SAMPLE: torch.zeros(2)}
PIECE = {"index": 0, "kind": "grad", "members": ["a", "b"], "dataset_size": 1,
         "manifest": ["x", "y"], "sums": [0.0, 1.5], "votes": ["b"], "audit": False}  # fmt: skip
SLICE = {"index": 0, "kind": "grad", "members": ["a", "b"], "digest": "d",
         "used_ids": ["a", "b"], "used_w": [1.0, 2.0], "used_d": ["x", "y"],
         "commits": ["c", "d"]}  # fmt: skip
VERDICT = {"index": 0, "ok": False, "digest": "d", "ev_ids": ["a"]}

BAD = [
    (MsgType.GROUP_PIECE, PIECE, {**PT, GROUP_DATA: torch.zeros(4, dtype=torch.float64)}),
    (MsgType.GROUP_PIECE, PIECE, {**PT, GROUP_DATA: torch.zeros(2, 2)}),
    (MsgType.GROUP_PIECE, PIECE, {}),
    (MsgType.GROUP_PIECE, PIECE, T),
    (MsgType.GROUP_PIECE, PIECE, {**PT, GROUP_SAMPLE: torch.zeros(2, dtype=torch.float64)}),
    (MsgType.GROUP_PIECE, PIECE, {**PT, "w": torch.zeros(1)}),
    (MsgType.GROUP_PIECE, {**PIECE, "audit": 1}, PT),
    (MsgType.GROUP_PIECE, {**PIECE, "index": -1}, PT),
    (MsgType.GROUP_PIECE, {**PIECE, "index": 10**9}, PT),
    (MsgType.GROUP_PIECE, {**PIECE, "members": ["a"] * 300}, PT),
    (MsgType.GROUP_PIECE, {**PIECE, "kind": "x"}, PT),
    (MsgType.GROUP_PIECE, {**PIECE, "extra": 1}, PT),
    (MsgType.GROUP_PIECE, {**PIECE, "sums": [1, 2]}, PT),
    (MsgType.GROUP_PIECE, {**PIECE, "sums": "1.0"}, PT),
    (MsgType.GROUP_PIECE, {**PIECE, "sums": [1.0] * 300}, PT),
    (MsgType.GROUP_PIECE, {k: v for k, v in PIECE.items() if k != "sums"}, PT),
    (MsgType.GROUP_PIECE, {**PIECE, "votes": "b"}, PT),
    (MsgType.GROUP_PIECE, {**PIECE, "votes": [1]}, PT),
    (MsgType.GROUP_PIECE, {**PIECE, "votes": ["b"] * 300}, PT),
    (MsgType.GROUP_SLICE, {**SLICE, "commits": "c"}, T),
    (MsgType.GROUP_SLICE, {**SLICE, "commits": [1]}, T),
    (MsgType.GROUP_SLICE, {**SLICE, "used_w": [1.0]}, T),
    (MsgType.GROUP_SLICE, {**SLICE, "used_w": [1, 2]}, T),
    (MsgType.GROUP_SLICE, {**SLICE, "used_w": "1.0"}, T),
    (MsgType.GROUP_SLICE, {**SLICE, "used_d": ["x"]}, T),
    (MsgType.AUDIT_REQUEST, {"index": 0}, T),
    (MsgType.AUDIT_REQUEST, {"index": "0"}, {}),
    (MsgType.AUDIT_VERDICT, VERDICT, {}),
    (MsgType.AUDIT_VERDICT, VERDICT, {f"{EVIDENCE_PREFIX}1": torch.zeros(2)}),
    (MsgType.AUDIT_VERDICT, VERDICT, {f"{EVIDENCE_PREFIX}0": torch.zeros(2, dtype=torch.int32)}),
    (MsgType.AUDIT_VERDICT, {**VERDICT, "ok": "no"}, {f"{EVIDENCE_PREFIX}0": torch.zeros(2)}),
]


@pytest.mark.parametrize(("msg_type", "meta", "tensors"), BAD)
def test_hostile_group_envelopes_are_protocol_mismatches(
    msg_type: MsgType, meta: dict[str, object], tensors: dict[str, torch.Tensor]
) -> None:
    with pytest.raises(ProtocolMismatch):
        from_envelope(_env(msg_type, meta, tensors))
