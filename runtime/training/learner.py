"""The one interface between the protocol's drivers and whatever does the learning.

Why an interface here: the SimPy driver and the trio/libp2p driver execute the same protocol
effects, and the only thing that differs in how they *learn* is the model behind it (a batched
surrogate across thousands of virtual nodes, or a Hugging Face causal LM on a GPU). Both
drivers talk to a ``Learner`` and never to torch optimisers directly, so the code that turns
``TrainLocal`` / ``ApplyAverage`` / ``LoadState`` effects into learning is written once.

Update kinds:

* ``"grad"``   — the update is a gradient (from ``param.grad``, averaged over the local
  micro-batches). The averaged gradient is applied through the learner's optimizer, so a
  swarm that always reaches everyone is exactly synchronous data-parallel training.
* ``"params"`` — the update is the node's current parameter set, with no local step. The
  average replaces the parameters (optimizer state is kept). The protocol uses these rounds
  periodically to pull replicas that drifted apart back together. Why no local step: a step
  here would update each node's optimizer state (Adam moments) with its own gradient only,
  so replicas that then apply identical averages would still drift through their differing
  optimizer states. Skipping the step keeps optimizer states identical across nodes that
  saw the same contributions; the round's loss is still measured on a local batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from swarm_tune.runtime.protocol.moments import Moments
from swarm_tune.runtime.protocol.tensors import TensorDict, UpdateKind

__all__ = ["Learner", "LocalResult", "TensorDict", "UpdateKind"]


@dataclass(frozen=True, slots=True)
class LocalResult:
    """What one local training step produced."""

    update: TensorDict
    loss: float
    samples: int


class Learner(Protocol):
    """A node's model, data shard and optimizer, as the drivers see them."""

    @property
    def dataset_size(self) -> int:
        """Number of training examples in this node's shard (its averaging weight)."""
        ...

    def parameters(self) -> TensorDict:
        """Current trainable parameters by name (no copy; callers must not mutate)."""
        ...

    def compute_update(self, kind: UpdateKind) -> LocalResult:
        """Run local training and return the update of the requested kind."""
        ...

    def apply_average(self, kind: UpdateKind, averaged: TensorDict) -> None:
        """Apply an averaged update: step the optimizer (grad) or load it (params).

        ``averaged`` is lent for the call: keep no reference to it (or a view of it) after
        returning, the real driver writes the next round's average into the same memory
        (net/buffers.AverageBuffers); copy what must outlive the call."""
        ...

    def load_state(self, params: TensorDict) -> None:
        """Replace the parameters wholesale (state sync after a join or a drift alarm)."""
        ...

    def outer_state(self) -> TensorDict:
        """Outer-optimizer state a joiner needs (DiLoCo momentum, named like the parameters;
        a copy), or {} when the learner keeps none."""
        ...

    def load_outer_state(self, state: TensorDict) -> None:
        """Adopt the swarm's outer-optimizer state (from ``outer_state`` of peers)."""
        ...

    def moments(self) -> Moments | None:
        """The optimizer's moments (a copy; Adam's m, v and step count), or None when it keeps
        none (SGD). State sync carries them (runtime/protocol/moments.py)."""
        ...

    def load_moments(self, moments: Moments) -> None:
        """Adopt the swarm's optimizer moments (checked by the core; no-op without any)."""
        ...

    def evaluate(self) -> float:
        """Loss on the held-out split."""
        ...
