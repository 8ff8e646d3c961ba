"""Compressed contributions through the real wire codec and the real protocol core.

What a receiver must guarantee: it decodes what the sender's header names, refuses (typed,
counted, nothing applied) a payload whose size disagrees with its header or the model, and
averages the decoded tensors, which are bit-identical to what the sender averages itself.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from swarm_tune.runtime.compression import Encoded
from swarm_tune.runtime.compression.update import UpdateCompressor
from swarm_tune.runtime.net.protocol_codec import ProtocolMismatch, from_envelope, to_envelope
from swarm_tune.runtime.protocol import (
    Contribution,
    LocalUpdateReady,
    MessageReceived,
    ModelSpec,
    PeerConnected,
    ProtocolConfig,
    ProtocolNode,
    RejectReason,
    TimerFired,
    TimerKey,
    effects,
)
from swarm_tune.runtime.wire import Envelope, Identity, decode, encode

ID = Identity.from_seed(bytes(range(32)))
G = torch.Generator().manual_seed(11)
UPDATE = {"w": torch.randn(40, 8, generator=G), "b": torch.randn(8, generator=G)}
SPEC = ModelSpec.from_tensors(UPDATE)


def _wire(msg: Contribution) -> Contribution:
    data = bytes(encode(to_envelope(msg, "run", ID.peer_id), ID))
    out = from_envelope(decode(data, expected_run_id="run"))
    assert isinstance(out, Contribution)
    return out


def test_encoded_contribution_crosses_the_wire_compressed() -> None:
    decoded, enc = UpdateCompressor("topk:0.05+int8:16", SPEC).compress(UPDATE)
    got = _wire(Contribution(3, "grad", 10, decoded, encoded=enc))
    assert got.tensors == {} and got.encoded is not None
    assert got.encoded.codec == enc.codec and got.encoded.numel == SPEC.numel
    for k, v in enc.parts.items():
        assert torch.equal(got.encoded.parts[k], v)
    raw = len(encode(to_envelope(Contribution(3, "grad", 10, UPDATE), "run", ID.peer_id), ID))
    small = len(
        encode(
            to_envelope(Contribution(3, "grad", 10, decoded, encoded=enc), "run", ID.peer_id), ID
        )
    )
    assert small < raw


@pytest.mark.parametrize(
    "meta_patch",
    [{"codec": "zstd"}, {"codec": "topk:2"}, {"numel": SPEC.numel * 2}, {"numel": 0}],
)
def test_bad_header_is_a_protocol_mismatch(meta_patch: dict[str, object]) -> None:
    _, enc = UpdateCompressor("topk:0.05+int8:16", SPEC).compress(UPDATE)
    env = to_envelope(Contribution(3, "grad", 10, {}, encoded=enc), "run", ID.peer_id)
    meta = {**env.meta, **meta_patch}
    bad = Envelope(env.msg_type, env.run_id, env.round, env.sender, meta, dict(env.tensors))  # type: ignore[arg-type]
    with pytest.raises(ProtocolMismatch):
        from_envelope(bad)


def _node() -> ProtocolNode:
    cfg = ProtocolConfig(  # the weighted mean: the expected average below is its closed form
        min_peers=2, quorum=1.0, compression="int8:16", param_sync_every=0, aggregation_rule="mean"
    )
    node = ProtocolNode("a", cfg, SPEC, 10, random.Random(1), address="10.0.0.1")
    node.handle(PeerConnected("p", "10.1.0.1"), 0.0)
    node.handle(PeerConnected("q", "10.2.0.1"), 0.0)
    node.start(0.0)
    return node


def test_core_averages_decoded_tensors_and_refuses_a_size_mismatch() -> None:
    node = _node()
    peer_dec, peer_enc = UpdateCompressor("int8:16", SPEC).compress(UPDATE)
    bad = Encoded(peer_enc.codec, peer_enc.numel - 16, {k: v for k, v in peer_enc.parts.items()})
    out = node.handle(MessageReceived("q", Contribution(0, "grad", 10, {}, encoded=bad)), 0.1)
    assert [e.reason for e in out if isinstance(e, effects.ContributionRejected)] == [
        RejectReason.COMPRESSION
    ]
    node.handle(
        MessageReceived("p", _wire(Contribution(0, "grad", 10, peer_dec, encoded=peer_enc))), 0.2
    )
    own = {k: v * 0.5 for k, v in UPDATE.items()}
    own_dec, own_enc = UpdateCompressor("int8:16", SPEC).compress(own)
    out = node.handle(LocalUpdateReady(0, "grad", own_dec, 1.0, "d", (0.0,), own_enc), 0.3)
    sends = [e for e in out if isinstance(e, effects.Send)]
    assert sends and all(s.message.encoded is own_enc for s in sends)  # type: ignore[union-attr]
    applied = [e for e in out if isinstance(e, effects.ApplyAverage)]
    if not applied:  # q was refused: the round closes at its timeout with a and p only
        out = node.handle(TimerFired(TimerKey("round", 0)), 100.0)
        applied = [e for e in out if isinstance(e, effects.ApplyAverage)]
    (avg,) = applied
    assert avg.contributors == ("a", "p") and not avg.fallback
    for k in UPDATE:  # the weighted mean of exactly the decoded contributions it names
        assert torch.allclose(avg.update[k], (peer_dec[k] + own_dec[k]) / 2, atol=1e-6)


def test_hostile_payloads_are_refused_before_anything_is_applied() -> None:
    # A header claiming 2^40 values is refused on the wire, before any allocation.
    _, enc = UpdateCompressor("int8:16", SPEC).compress(UPDATE)
    env = to_envelope(Contribution(3, "grad", 10, {}, encoded=enc), "run", ID.peer_id)
    huge = Envelope(
        env.msg_type, env.run_id, env.round, env.sender, {**env.meta, "numel": 1 << 40},
        dict(env.tensors),
    )  # fmt: skip
    with pytest.raises(ProtocolMismatch):
        from_envelope(huge)
    # Well-formed parts whose values decode to NaN: the core refuses them as non-finite.
    node = _node()
    nan_scales = Encoded(
        enc.codec, enc.numel, {**enc.parts, "s": torch.full_like(enc.parts["s"], math.nan)}
    )
    out = node.handle(
        MessageReceived("q", Contribution(0, "grad", 10, {}, encoded=nan_scales)), 0.1
    )
    assert [e.reason for e in out if isinstance(e, effects.ContributionRejected)] == [
        RejectReason.NON_FINITE
    ]
