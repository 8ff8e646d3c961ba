"""The shared attack library (runtime/adversary): each name means one thing, in both drivers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swarm_tune.runtime.adversary.attacks import (
    BEHAVIOURS,
    AttackError,
    AttackParams,
    alie_z,
    craft_from_own,
    craft_from_view,
)
from swarm_tune.runtime.adversary.coalition import Coalition
from swarm_tune.runtime.net.adversary import MODES
from swarm_tune.runtime.ops.settings import ADVERSARY_MODES
from swarm_tune.sim.scenario import AdversarySpec


def honest_view(k: int = 12, d: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(1.0 + rng.normal(0, 0.5, d)).astype(np.float32) for _ in range(k)]


def test_one_vocabulary_for_scenarios_settings_and_the_real_node() -> None:
    assert MODES == ADVERSARY_MODES == ("none", *BEHAVIOURS)
    for name in BEHAVIOURS:
        AdversarySpec(behaviour=name, count=1)  # every library name is a scenario name
    with pytest.raises(AttackError, match="unknown attack 'scaled'"):
        AttackParams("scaled")  # type: ignore[arg-type]


def test_alie_z_follows_baruch_et_al() -> None:
    # n = 50, f = 12: s = 26 - 12 = 14, z = Phi^-1(36/50) = 0.583
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-3)
    assert alie_z(10, 1) == pytest.approx(0.0, abs=1e-9)  # s = 5: the mean itself


def test_ipm_and_alie_from_the_honest_updates() -> None:
    h = honest_view()
    mean, std = np.mean(h, axis=0), np.std(h, axis=0)
    ipm = craft_from_view(AttackParams("ipm", 0.5), h, 15, 3)
    np.testing.assert_allclose(ipm, -0.5 * mean, rtol=1e-6)
    alie = craft_from_view(AttackParams("alie"), h, 15, 3)
    np.testing.assert_allclose(alie, mean - alie_z(15, 3) * std, rtol=1e-5)


@pytest.mark.parametrize("kind", ["min_max", "min_sum"])
def test_min_max_and_min_sum_stay_inside_their_bounds_and_push_to_them(kind: str) -> None:
    h = honest_view()
    x = craft_from_view(AttackParams(kind), h, 15, 3).astype(np.float64)  # type: ignore[arg-type]
    hh = np.stack(h).astype(np.float64)
    pair = ((hh[:, None, :] - hh[None, :, :]) ** 2).sum(-1)
    d = ((hh - x) ** 2).sum(-1)
    if kind == "min_max":
        assert d.max() <= pair.max() * (1 + 1e-6) and d.max() > 0.95 * pair.max()
    else:
        assert d.sum() <= pair.sum(1).max() * (1 + 1e-6) and d.sum() > 0.95 * pair.sum(1).max()


def test_own_update_behaviours() -> None:
    own = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    assert np.array_equal(craft_from_own(AttackParams("sign_flip"), own, None, rng), -own)
    assert np.array_equal(craft_from_own(AttackParams("scale", 3), own, None, rng), 3 * own)
    noisy = craft_from_own(AttackParams("noise", 3), np.ones(10_000, np.float32), None, rng)
    assert float(np.std(noisy)) == pytest.approx(3.0, rel=0.05)  # relative to RMS (= 1)
    assert np.isnan(craft_from_own(AttackParams("nan"), own, None, rng)).all()


def test_a_coalition_sends_one_update_and_mimic_copies_someone_else() -> None:
    c = Coalition(AttackParams("mimic"), seed=1, n=10, f=2)
    ups = {p: {"w": torch.full((3,), float(i))} for i, p in enumerate(["a", "b", "m1"])}
    for p in ("b", "a"):
        c.observe(0, "grad", p, ups[p])
    c.observe(0, "grad", "m1", ups["m1"], own=True)
    first = c.craft(0, "grad", ups["m1"])
    assert torch.equal(first["w"], ups["a"]["w"])  # the first honest peer, never a member
    assert c.craft(0, "grad", {"w": torch.zeros(3)})["w"].equal(first["w"])  # identical
    replay = Coalition(AttackParams("stale_replay"), seed=1, n=10, f=1)
    assert replay.craft(0, "grad", ups["a"])["w"].equal(ups["a"]["w"])
    assert replay.craft(1, "grad", ups["b"])["w"].equal(ups["a"]["w"])


def test_the_real_node_crafts_alie_from_what_it_received() -> None:
    """runtime/net's adversary sees only the contributions it received plus its own."""
    from swarm_tune.runtime.net.adversary import Adversary
    from swarm_tune.runtime.protocol.messages import Contribution

    gen = torch.Generator().manual_seed(0)
    received = [Contribution(4, "grad", 10, {"w": torch.randn(8, generator=gen)}) for _ in range(5)]
    own = Contribution(4, "grad", 10, {"w": torch.randn(8, generator=gen)})
    adv = Adversary("alie", seed=1)
    assert adv.omniscient and not Adversary("sign_flip").omniscient
    for i, c in enumerate(received):
        assert adv.seen(4, "grad") == i  # what the driver waits on before it sends
        adv.observe(f"p{i}", c)
    assert (adv.seen(4, "grad"), adv.seen(5, "grad"), adv.seen(4, "params")) == (5, 0, 0)
    crafted = adv.corrupt(own, swarm_size=6)["w"].numpy()
    h = np.stack([c.tensors["w"].numpy() for c in [*received, own]]).astype(np.float64)
    expected = h.mean(0) - alie_z(6, 1) * h.std(0)
    np.testing.assert_allclose(crafted, expected, rtol=1e-5, atol=1e-6)
    assert Adversary("none").corrupt(own, 6) is own.tensors
