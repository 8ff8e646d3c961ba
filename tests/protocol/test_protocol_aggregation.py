"""Subnet-cap arithmetic and the weighted average against their closed forms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.aggregation.weighted import (
    subnet_capped_weights,
    weighted_average,
    weighted_average_flat,
)

weights_and_subnets = st.lists(
    # Weights are dataset sizes: zero or at least a small positive number (no denormals).
    st.tuples(
        st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=1e6)),
        st.integers(min_value=0, max_value=6),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=240, deadline=None)  # 300 -> 240: pays for test_protocol_colluders
@given(pairs=weights_and_subnets, cap=st.floats(min_value=0.05, max_value=1.0))
def test_subnet_cap_properties(pairs: list[tuple[float, int]], cap: float) -> None:
    weights = [w for w, _ in pairs]
    subnets = [f"net{g}" for _, g in pairs]
    out = subnet_capped_weights(weights, subnets, cap)
    assert all(0.0 <= o <= w * (1 + 1e-12) + 1e-12 for o, w in zip(out, weights, strict=True))
    totals: dict[str, float] = {}
    for o, g in zip(out, subnets, strict=True):
        totals[g] = totals.get(g, 0.0) + o
    grand = sum(totals.values())
    positive = [
        g
        for g in set(subnets)
        if sum(w for w, s in zip(weights, subnets, strict=True) if s == g) > 0
    ]
    if grand > 0:
        limit = max(cap, 1.0 / len(positive))  # with too few subnets equal shares are the best
        assert max(totals.values()) / grand <= limit + 1e-9
    # Within a subnet relative weights are preserved (one common scale factor).
    for g in set(subnets):
        ratios = {
            round(o / w, 9)
            for o, w, s in zip(out, weights, subnets, strict=True)
            if s == g and w > 0
        }
        assert len(ratios) <= 1


def test_subnet_cap_closed_form_and_untouched_small_subnets() -> None:
    # Subnet a holds 80 of 120; cap 0.25 -> level T = 0.25 * 40 / 0.75 = 40/3, a's share 1/4.
    out = subnet_capped_weights([40, 40, 10, 10, 10, 10], ["a", "a", "b", "c", "d", "e"], 0.25)
    assert out[2:] == [10, 10, 10, 10]
    assert abs(sum(out[:2]) - 40 / 3) < 1e-9
    assert out[0] == out[1]
    # Three subnets cannot satisfy a 0.25 cap: equal shares are the best possible.
    out = subnet_capped_weights([80, 10, 10], ["a", "b", "c"], 0.25)
    assert out == [10, 10, 10]
    assert subnet_capped_weights([1, 1, 1, 1], ["a", "b", "c", "d"], 0.25) == [1, 1, 1, 1]


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=6),
    data=st.data(),
)
def test_weighted_average_equals_closed_form(n: int, data: st.DataObject) -> None:
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    ws = [data.draw(st.floats(min_value=0.1, max_value=100.0)) for _ in range(n)]
    ups = [
        {"a": torch.randn(3, 2, generator=g), "b": torch.randn(5, generator=g)} for _ in range(n)
    ]
    avg = weighted_average(ups, ws)
    for name in ("a", "b"):
        expected = sum(w * u[name].double() for w, u in zip(ws, ups, strict=True)) / sum(ws)
        torch.testing.assert_close(avg[name].double(), expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(min_value=1, max_value=8), data=st.data())
def test_flat_average_matches_the_per_tensor_average(n: int, data: st.DataObject) -> None:
    """The compact-model path (one vector per update) and the per-tensor path agree, and the
    flat one is a pure function of its rows: the same rows in the same order, the same bits."""
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    ws = [data.draw(st.floats(min_value=0.1, max_value=100.0)) for _ in range(n)]
    rows = [torch.randn(37, generator=g) for _ in range(n)]
    flat = weighted_average_flat(rows, ws)
    assert flat.dtype == torch.float32 and flat.shape == (37,)
    per_tensor = weighted_average([{"x": r} for r in rows], ws)["x"]
    torch.testing.assert_close(flat, per_tensor, rtol=1e-5, atol=1e-6)
    assert torch.equal(weighted_average_flat([r.clone() for r in rows], ws), flat)
    with pytest.raises(ValueError):
        weighted_average_flat(rows, ws + [1.0])
    with pytest.raises(ValueError):
        weighted_average_flat(rows, [0.0] * n)


def test_weighted_average_keeps_dtype() -> None:
    ups = [{"x": torch.ones(4, dtype=torch.bfloat16)}, {"x": torch.zeros(4, dtype=torch.bfloat16)}]
    out = weighted_average(ups, [1.0, 3.0])
    assert out["x"].dtype == torch.bfloat16
    torch.testing.assert_close(out["x"].float(), torch.full((4,), 0.25))
