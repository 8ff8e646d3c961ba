"""Update summaries (runtime/protocol/summary.py): what the judge sees of an update, and the
memo on Contribution that lets every receiver of one message share it."""

from __future__ import annotations

import math

import pytest
import torch

from swarm_tune.runtime.protocol.messages import Contribution
from swarm_tune.runtime.protocol.summary import DIRECTION_COLUMNS, check_tensors
from swarm_tune.runtime.protocol.tensors import COMPACT_NUMEL, ModelSpec

SMALL = {"a": torch.zeros(3, 4), "b": torch.zeros(5)}


def _small(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g)}


def test_compact_check_flattens_and_summarises_exactly() -> None:
    spec = ModelSpec.from_tensors(SMALL)
    tensors = _small(1)
    check = check_tensors(spec, tensors)
    assert check.mismatch is None and check.finite and check.summary is not None
    assert check.flat is not None
    assert torch.equal(check.flat, torch.cat([tensors["a"].reshape(-1), tensors["b"]]))
    expected_rms = math.sqrt(float((check.flat.double() ** 2).mean()))
    assert check.summary.rms == pytest.approx(expected_rms, rel=1e-12)
    # A bit-identical copy has the same fingerprint; one changed bit does not.
    again = check_tensors(spec, {n: t.clone() for n, t in tensors.items()})
    assert again.summary is not None and again.summary.fingerprint == check.summary.fingerprint
    nudged = {n: t.clone() for n, t in tensors.items()}
    nudged["b"][0] = torch.nextafter(nudged["b"][0], torch.tensor(math.inf))
    other = check_tensors(spec, nudged)
    assert other.summary is not None and other.summary.fingerprint != check.summary.fingerprint


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_updates_have_no_summary(bad: float) -> None:
    spec = ModelSpec.from_tensors(SMALL)
    tensors = _small(2)
    tensors["a"][1, 2] = bad
    check = check_tensors(spec, tensors)
    assert check.mismatch is None and not check.finite and check.summary is None


def test_huge_but_finite_float32_values_are_finite() -> None:
    """Finiteness comes from a float64 sum of squares: float32's largest values must not
    overflow it into a false NON_FINITE."""
    spec = ModelSpec.from_tensors(SMALL)
    tensors = {"a": torch.full((3, 4), 3.0e38), "b": torch.full((5,), -3.0e38)}
    check = check_tensors(spec, tensors)
    assert check.finite and check.summary is not None
    assert check.summary.rms == pytest.approx(3.0e38, rel=1e-6)


def test_mismatches_are_named() -> None:
    spec = ModelSpec.from_tensors(SMALL)
    assert check_tensors(spec, {"a": torch.zeros(3, 4)}).mismatch == "shape"
    wrong = {"a": torch.zeros(3, 4, dtype=torch.float16), "b": torch.zeros(5)}
    assert check_tensors(spec, wrong).mismatch == "dtype"


def test_large_models_are_summarised_from_a_sample() -> None:
    big = {"w": torch.randn(COMPACT_NUMEL + 1, generator=torch.Generator().manual_seed(3))}
    spec = ModelSpec.from_tensors(big)
    assert not spec.compact
    check = check_tensors(spec, big)
    assert check.flat is None and check.summary is not None
    assert check.summary.rms == pytest.approx(float(big["w"].double().pow(2).mean().sqrt()))
    assert len(check.summary.direction) == DIRECTION_COLUMNS
    big["w"][7] = math.nan
    assert not check_tensors(spec, big).finite


def test_contribution_memo_is_shared_and_never_confused() -> None:
    spec = ModelSpec.from_tensors(SMALL)
    c = Contribution(3, "grad", 10, _small(4))
    first = c.check(spec)
    assert c.check(spec) is first  # every receiver of this object reuses it
    assert c.check(ModelSpec.from_tensors(SMALL)) is first  # an equal spec is the same spec
    other_spec = ModelSpec.from_tensors({"a": torch.zeros(3, 4)})
    assert c.check(other_spec).mismatch == "shape"  # a different spec is checked afresh
    # A rewritten message (what an adversary or the wire decoder builds) starts clean.
    poisoned = {n: t.clone() for n, t in c.tensors.items()}
    poisoned["b"][0] = math.nan
    assert not Contribution(3, "grad", 10, poisoned).check(spec).finite
    assert c == Contribution(3, "grad", 10, poisoned)  # the memo is not part of equality
