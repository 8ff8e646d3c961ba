"""Attacks on what a node says besides its update (lying heartbeats, poisoned state sync,
label flipping) and the core's answers to them."""

from __future__ import annotations

import random

import pytest
import torch
from harness import SPEC as SMALL
from harness import grad_like

from swarm_tune.runtime.adversary.attacks import AttackParams, flip_labels
from swarm_tune.runtime.adversary.claims import claimed_size, poisoned_state, rewrite_message
from swarm_tune.runtime.aggregation.weighted import weighted_average
from swarm_tune.runtime.protocol import (
    MessageReceived,
    PeerConnected,
    ProtocolConfig,
    ProtocolNode,
    effects,
    sync,
)
from swarm_tune.runtime.protocol.messages import Heartbeat, StateResponse
from swarm_tune.runtime.protocol.node import EARLY_AHEAD
from swarm_tune.runtime.protocol.reasons import RejectReason
from swarm_tune.runtime.protocol.reputation import Reputation
from swarm_tune.runtime.protocol.sync import decide
from swarm_tune.runtime.protocol.tensors import ModelSpec, param_sketch, sketch_distance

SIZE, SEED = 16, 0x5EED


def model(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": 1.0 + scale * torch.randn(64, 8, generator=g), "b": torch.randn(8, generator=g)}


def response(tensors: dict[str, torch.Tensor], rnd: int = 20) -> StateResponse:
    return StateResponse(7, rnd, "claimed", param_sketch(tensors, SIZE, SEED), tensors)


def test_a_lying_heartbeat_claims_the_future_a_huge_shard_and_the_opposite_sketch() -> None:
    hb = Heartbeat(round=5, dataset_size=100, digest="d", sketch=(1.0, -2.0), sketch_round=5)
    lie = rewrite_message(AttackParams("lying_heartbeat"), hb, SIZE, SEED)
    assert isinstance(lie, Heartbeat)
    assert (lie.round, lie.sketch_round, lie.dataset_size) == (1005, 5, 100_000)
    assert lie.param_round == 5 + EARLY_AHEAD  # the earliest it can announce
    assert lie.sketch == (-1.0, 2.0)
    assert claimed_size(AttackParams("lying_heartbeat"), 100) == 100_000
    assert claimed_size(AttackParams("sign_flip"), 100) == 100  # only the liar lies
    assert rewrite_message(AttackParams("sign_flip"), hb, SIZE, SEED) is hb


def test_a_poisoned_state_agrees_on_every_sketch_and_lies_everywhere_else() -> None:
    honest = model(1)
    resp = rewrite_message(AttackParams("poisoned_sync"), response(honest), SIZE, SEED)
    assert isinstance(resp, StateResponse)
    assert param_sketch(resp.tensors, SIZE, SEED) == param_sketch(honest, SIZE, SEED)
    changed = sum(int((resp.tensors[n] != honest[n]).sum()) for n in honest)
    assert changed >= 64 * 8 + 8 - SIZE  # every unsketched coordinate


def test_state_sync_outvotes_a_sketch_perfect_liar() -> None:
    """Sketch-only agreement took the liar into the group and averaged a third of its lie
    into the joiner; full-tensor agreement leaves it out."""
    a, b = model(1), model(1)
    b = {n: t * 1.001 for n, t in b.items()}
    liar = poisoned_state(model(1), 1.0, SIZE, SEED)
    sketches = [param_sketch(t, SIZE, SEED) for t in (a, b, liar)]
    assert max(sketch_distance(s, sketches[0]) for s in sketches) < 0.05  # sketches agree
    spec = ModelSpec.from_tensors(a)
    d = decide({"a": response(a), "b": response(b), "liar": response(liar)}, spec, 0.05)
    assert d is not None and (d.agreeing, d.responders) == (2, 3)
    for n in a:
        torch.testing.assert_close(d.tensors[n], weighted_average([a, b], [1.0, 1.0])[n])


def test_state_sync_takes_the_median_of_the_agreeing_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """A liar inside the drift bound does not move any coordinate past an honest value;
    and the float64 work in small blocks decides the same."""
    honest = model(2)
    subtle = poisoned_state(honest, -1.04, SIZE, SEED)  # x1.04 off the sketch: 4% away
    responses = {p: response(honest) for p in ("a", "b", "c")} | {"liar": response(subtle)}
    for block in (sync.BLOCK, 7):
        monkeypatch.setattr(sync, "BLOCK", block)
        d = decide(responses, ModelSpec.from_tensors(honest), 0.05)
        assert d is not None and d.agreeing == 4
        for n in honest:
            assert torch.equal(d.tensors[n], honest[n])  # three equal honest states: theirs


def test_direction_rejections_filter_but_ban_only_under_the_weighted_mean() -> None:
    robust = Reputation(ProtocolConfig(aggregation_rule="geometric_median"))
    mean = Reputation(ProtocolConfig(aggregation_rule="mean"))
    always = Reputation(ProtocolConfig(aggregation_rule="median", direction_test="always"))
    bans = {"robust": 0, "mean": 0, "always": 0}
    for t in range(40):
        bans["robust"] += robust.record("p", RejectReason.DIRECTION, float(t)) is not None
        bans["mean"] += mean.record("p", RejectReason.DIRECTION, float(t)) is not None
        bans["always"] += always.record("p", RejectReason.DIRECTION, float(t)) is not None
    assert bans["robust"] == 0 and bans["mean"] >= 1 and bans["always"] >= 1
    assert ProtocolConfig(aggregation_rule="geometric_median").judges_direction
    assert not ProtocolConfig(direction_test="never").judges_direction
    # other rejections still count under a robust rule
    assert any(robust.record("q", RejectReason.NORM, float(t)) for t in range(40))


def test_label_flip_is_a_fixed_permutation_of_the_classes() -> None:
    t = torch.tensor([[0, 1, 9], [5, 4, 9]])
    assert flip_labels(t, 10).tolist() == [[9, 8, 0], [4, 5, 0]]
    assert torch.equal(flip_labels(flip_labels(t, 10), 10), t)


def _syncing(peers: int = 8) -> tuple[ProtocolNode, effects.Send]:
    """A node with ``peers`` peers that has just asked three of them for state."""
    n = ProtocolNode("me", ProtocolConfig(sync_fanout=3), SMALL, 10, random.Random(0))
    for i in range(peers):
        n.handle(PeerConnected(f"p{i}", f"10.{i}.0.1"), 0.0)
    n.start(0.0)
    (ask,) = [e for e in n._begin_sync("drift", 1.0) if isinstance(e, effects.Send)]
    return n, ask


def _answer(
    n: ProtocolNode, ask: effects.Send, peer: str, tensors: dict[str, torch.Tensor]
) -> list[effects.Effect]:
    nonce = ask.message.nonce  # type: ignore[union-attr]
    return n.handle(MessageReceived(peer, StateResponse(nonce, 4, "d", (), tensors)), 1.5)


def test_a_split_answer_widens_the_sync_so_a_liar_majority_of_the_asked_loses() -> None:
    """Two colluding liars among the three peers asked agree with each other: a majority of
    the responders. The split answer makes the node ask three more, and the honest answers
    win on all six."""
    honest, lie = grad_like(1.0), grad_like(-3.0)
    n, ask = _syncing()
    first = list(ask.peers)
    _answer(n, ask, first[0], lie)
    _answer(n, ask, first[1], lie)
    out = _answer(n, ask, first[2], honest)
    (more,) = [e for e in out if isinstance(e, effects.Send)]
    assert not any(isinstance(e, effects.LoadState) for e in out)
    assert len(more.peers) == 3 and not set(more.peers) & set(first)
    for p in more.peers:
        out = _answer(n, ask, p, honest)
    (load,) = [e for e in out if isinstance(e, effects.LoadState)]
    assert torch.equal(load.tensors["w"], honest["w"])
    # Unanimous answers are loaded at once, without asking anyone else.
    m, ask = _syncing()
    outs = [_answer(m, ask, p, honest) for p in ask.peers]
    assert any(isinstance(e, effects.LoadState) for e in outs[-1])
    assert not any(isinstance(e, effects.Send) for o in outs for e in o)
