"""State sync carries optimizer moments: averaged over the agreeing responders, and no
hostile responder can poison them (wrong shapes, NaN, negative or huge v, m beyond Adam's
own bound, absurd step counts), on the wire or in the core."""

from __future__ import annotations

import random

import pytest
import torch
from harness import SPEC, SPEC_TENSORS, grad_like

from swarm_tune.runtime.net.protocol_codec import (
    EXP_AVG_PREFIX,
    SKETCH_TENSOR,
    ProtocolMismatch,
    from_envelope,
    to_envelope,
)
from swarm_tune.runtime.protocol import (
    MessageReceived,
    PeerConnected,
    ProtocolConfig,
    ProtocolNode,
    StateResponse,
    effects,
)
from swarm_tune.runtime.protocol.moments import MAX_STEP, Moments, moments_problem
from swarm_tune.runtime.protocol.sync import decide
from swarm_tune.runtime.wire import Envelope, Identity, MsgType, decode, encode

BOUND = 8.0


def moments(m: float, v: float, step: int = 10) -> Moments:
    return Moments(grad_like(m), grad_like(v), step)


def state(value: float, mom: Moments | None, rnd: int = 5) -> StateResponse:
    return StateResponse(7, rnd, "claimed", (), grad_like(value), moments=mom)


def agreed(*responses: StateResponse, bound: float = BOUND) -> Moments | None:
    d = decide(
        {f"p{i}": r for i, r in enumerate(responses)},
        SPEC,
        drift_bound=0.05,
        moment_bound=bound,
        norm_factor=4.0,
    )
    assert d is not None  # the parameters always agree here: only the moments are at stake
    return d.moments


def test_agreeing_responders_moments_are_averaged_with_the_median_step() -> None:
    got = agreed(
        state(1.0, moments(0.1, 0.04, 10)),
        state(1.0, moments(0.3, 0.08, 12)),
        state(1.0, moments(0.2, 0.06, 400)),
    )
    assert got is not None and got.step == 12
    torch.testing.assert_close(got.exp_avg["w"], torch.full((4, 3), 0.2))
    torch.testing.assert_close(got.exp_avg_sq["b"], torch.full((3,), 0.06))
    # A liar outside the agreeing group (far parameters) has no say in the moments either.
    far = agreed(state(1.0, moments(0.1, 0.04)), state(1.0, moments(0.1, 0.04)), state(9.0, None))
    assert far is not None
    torch.testing.assert_close(far.exp_avg["w"], torch.full((4, 3), 0.1))


def _bad_shape() -> Moments:
    return Moments({"w": torch.zeros(2, 2), "b": torch.zeros(3)}, grad_like(0.01), 10)


def _neg_v() -> Moments:
    v = grad_like(0.01)
    v["b"][1] = -1e-3
    return Moments(grad_like(0.0), v, 10)


def _nan_m() -> Moments:
    m = grad_like(0.0)
    m["w"][0, 0] = float("nan")
    return Moments(m, grad_like(0.01), 10)


def _dtype() -> Moments:
    return Moments({n: t.double() for n, t in grad_like(0.0).items()}, grad_like(0.01), 10)


HOSTILE = {
    "wrong_shape": _bad_shape(),
    "wrong_dtype": _dtype(),
    "missing_tensor": Moments({"w": torch.zeros(4, 3)}, grad_like(0.01), 10),
    "nan": _nan_m(),
    "inf_v": moments(0.0, float("inf")),
    "negative_v": _neg_v(),
    # |m| = 1 with v = 1e-4: m / sqrt(v) = 100, beyond anything Adam can hold (7.27).
    "m_beyond_adam": moments(1.0, 1e-4),
    "step_zero": moments(0.01, 1e-4, step=0),
    "step_huge": moments(0.01, 1e-4, step=MAX_STEP + 1),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_responders_moments_are_refused(name: str) -> None:
    bad = HOSTILE[name]
    assert moments_problem(SPEC, bad, BOUND) is not None
    honest = moments(0.1, 0.04)
    got = agreed(state(1.0, honest), state(1.0, honest), state(1.0, bad))
    assert got is not None  # the two honest responders' moments, the liar's left out
    torch.testing.assert_close(got.exp_avg["w"], torch.full((4, 3), 0.1))
    torch.testing.assert_close(got.exp_avg_sq["w"], torch.full((4, 3), 0.04))
    assert agreed(state(1.0, bad)) is None  # alone, nothing is loaded


def test_a_huge_v_loads_no_moments_at_all() -> None:
    """v = 1e12 is inside Adam's bound but would freeze learning; with two responders nobody
    can tell who lies, so the loader keeps its own moments (parameter-only sync)."""
    honest = moments(0.1, 0.04)
    assert agreed(state(1.0, honest), state(1.0, moments(0.1, 1e12))) is None
    assert agreed(state(1.0, honest), state(1.0, honest), state(1.0, None)) is not None
    assert agreed(state(1.0, honest), state(1.0, honest), bound=0.0) is None  # off


def test_the_node_loads_the_agreed_moments() -> None:
    n = ProtocolNode("me", ProtocolConfig(), SPEC, 10, random.Random(0))
    for p in ("a", "b"):
        n.handle(PeerConnected(p, f"10.{ord(p)}.0.1"), 0.0)
    started = n.start(0.0, catch_up=True)
    (ask,) = [e for e in started if isinstance(e, effects.Send)]
    nonce = ask.message.nonce  # type: ignore[union-attr]
    out = []
    for p, mom in (("a", moments(0.1, 0.04)), ("b", moments(0.3, 0.04))):
        resp = StateResponse(nonce, 5, "d", (), grad_like(1.0), moments=mom)
        out += n.handle(MessageReceived(p, resp), 1.0)
    (load,) = [e for e in out if isinstance(e, effects.LoadState)]
    assert load.moments is not None and load.moments.step == 10
    torch.testing.assert_close(load.moments.exp_avg["b"], torch.full((3,), 0.2))


# -- the wire ---------------------------------------------------------------------------

ME = Identity.from_seed(bytes(range(32)))
RUN = "run-moments"


def roundtrip(msg: StateResponse) -> object:
    data = encode(to_envelope(msg, RUN, ME.peer_id), ME)
    return from_envelope(decode(bytes(data), expected_run_id=RUN))


def test_moments_roundtrip_on_the_wire() -> None:
    mom = Moments(
        {n: torch.randn(t.shape) for n, t in SPEC_TENSORS.items()},
        {n: torch.rand(t.shape) for n, t in SPEC_TENSORS.items()},
        123,
    )
    msg = StateResponse(9, 4, "d", (0.5,), grad_like(1.0), grad_like(2.0), mom)
    out = roundtrip(msg)
    assert isinstance(out, StateResponse) and out.moments is not None
    assert out.moments.step == 123
    for name in SPEC_TENSORS:
        assert torch.equal(out.moments.exp_avg[name], mom.exp_avg[name])
        assert torch.equal(out.moments.exp_avg_sq[name], mom.exp_avg_sq[name])
        assert torch.equal(out.tensors[name], grad_like(1.0)[name])
        assert torch.equal(out.outer[name], grad_like(2.0)[name])
    plain = StateResponse(9, 4, "d", (0.5,), grad_like(1.0))
    back = roundtrip(plain)
    assert isinstance(back, StateResponse) and back.moments is None


@pytest.mark.parametrize(
    ("meta", "extra"),
    [
        ({"opt_step": -1}, {}),
        ({"opt_step": MAX_STEP + 1}, {}),
        ({"opt_step": 1.5}, {}),
        ({}, {EXP_AVG_PREFIX + "w": torch.zeros(4, 3)}),  # moments without a step count
    ],
)
def test_malformed_moments_are_a_wire_error(
    meta: dict[str, object], extra: dict[str, torch.Tensor]
) -> None:
    tensors = {**grad_like(1.0), SKETCH_TENSOR: torch.zeros(2, dtype=torch.float64), **extra}
    env = Envelope(
        MsgType.STATE_RESPONSE,
        RUN,
        1,
        ME.peer_id,
        {"n": 1, "nonce": 1, "digest": "d", **meta},  # type: ignore[dict-item]
        tensors,
    )
    with pytest.raises(ProtocolMismatch):
        from_envelope(decode(bytes(encode(env, ME)), expected_run_id=RUN))
