"""Near-duplicate collapsing (runtime/aggregation/near_duplicates.py): jittered copies of one
update weigh as one, independent updates are never grouped, and the grouping does not depend
on arrival order."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from swarm_tune.runtime.aggregation.near_duplicates import duplicate_labels
from swarm_tune.runtime.protocol import effects as fx
from swarm_tune.runtime.protocol.config import ProtocolConfig, ProtocolConfigError
from swarm_tune.runtime.protocol.events import LocalUpdateReady, MessageReceived, PeerConnected
from swarm_tune.runtime.protocol.messages import Contribution
from swarm_tune.runtime.protocol.node import ProtocolNode
from swarm_tune.runtime.protocol.tensors import ModelSpec


def _partition(labels: Sequence[int | None]) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for i, label in enumerate(labels):
        if label is not None:
            groups.setdefault(label, set()).add(i)
    return {frozenset(g) for g in groups.values()}


def _pool(seed: int) -> list[np.ndarray]:
    """8 independent noisy updates, then 3 copies of one crafted update with 1e-3 jitter."""
    rng = np.random.default_rng(seed)
    honest = [rng.normal(0.1, 1.0, 512) for _ in range(8)]
    crafted = rng.normal(-0.5, 1.0, 512)
    copies = [crafted + rng.normal(0, 1e-3, 512) for _ in range(3)]
    return honest + copies


@pytest.mark.parametrize("seed", range(5))
def test_jittered_copies_form_one_group_and_honest_updates_none(seed: int) -> None:
    samples = _pool(seed)
    labels = duplicate_labels(list(range(len(samples))), samples, 0.25)
    groups = _partition(labels)
    assert frozenset({8, 9, 10}) in groups
    assert all(len(g) == 1 for g in groups if g != frozenset({8, 9, 10}))


def test_ratio_zero_groups_only_bit_identical_updates() -> None:
    samples = _pool(1)
    fingerprints = [0, 1, 2, 3, 4, 5, 6, 0, 8, 9, 10]  # 0 and 7 bit-identical
    assert _partition(duplicate_labels(fingerprints, samples, 0.0)) == {
        frozenset({0, 7}),
        *(frozenset({i}) for i in range(1, 11) if i != 7),
    }
    near = _partition(duplicate_labels(fingerprints, samples, 0.25))
    assert frozenset({0, 7}) in near and frozenset({8, 9, 10}) in near


def test_grouping_does_not_depend_on_order_and_small_pools_are_left_alone() -> None:
    samples = _pool(2)
    order = list(range(len(samples)))
    random.Random(5).shuffle(order)
    labels = duplicate_labels(order, [samples[i] for i in order], 0.25)
    shuffled = {frozenset(order[i] for i in g) for g in _partition(labels)}
    assert shuffled == _partition(duplicate_labels(list(range(11)), samples, 0.25))
    two = duplicate_labels([1, 2], samples[8:10], 0.25)  # no median to be near relative to
    assert two[0] != two[1]
    assert list(duplicate_labels([None], [None], 0.25)) == [None]


def test_out_of_range_ratio_is_refused() -> None:
    with pytest.raises(ProtocolConfigError, match="near_duplicate_ratio"):
        ProtocolConfig(near_duplicate_ratio=0.6)


def _average(ratio: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One gradient round of the weighted mean: 7 independent peers, 3 jittered copies."""
    spec = ModelSpec.from_tensors({"w": torch.zeros(64)})
    gen = torch.Generator().manual_seed(11)
    cfg = ProtocolConfig(
        aggregation_rule="mean",
        direction_test="never",
        quorum=11,
        norm_factor=1e6,
        subnet_cap=1.0,
        param_sync_every=0,
        near_duplicate_ratio=ratio,
    )
    node = ProtocolNode("me", cfg, spec, 10, random.Random(0), start_round=1, address="10.9.0.1")
    peers = [f"p{i:02d}" for i in range(10)]
    for i, p in enumerate(peers):
        node.handle(PeerConnected(p, f"10.{i}.0.1"), 0.0)
    node.start(0.0)
    crafted = torch.full((64,), -0.5)
    updates = [torch.randn(64, generator=gen) for _ in range(7)]
    updates += [crafted + 1e-3 * torch.randn(64, generator=gen) for _ in range(3)]
    for p, u in zip(peers, updates, strict=True):
        node.handle(MessageReceived(p, Contribution(1, "grad", 10, {"w": u})), 0.1)
    own = torch.randn(64, generator=gen)
    out = node.handle(LocalUpdateReady(1, "grad", {"w": own}, 1.0, "", ()), 0.2)
    (avg,) = [e for e in out if isinstance(e, fx.ApplyAverage)]
    return avg.update["w"], [*updates, own]


def test_the_core_gives_jittered_copies_one_update_of_weight() -> None:
    collapsed, rows = _average(0.25)
    independent = rows[:7] + rows[10:]  # 7 peers and our own
    copies = torch.stack(rows[7:10]).mean(0)
    expected = (torch.stack(independent).sum(0) + copies) / 9
    torch.testing.assert_close(collapsed, expected, rtol=1e-5, atol=1e-5)
    counted, _ = _average(0.0)  # the old behaviour: three copies, three votes
    torch.testing.assert_close(counted, torch.stack(rows).mean(0), rtol=1e-5, atol=1e-5)
