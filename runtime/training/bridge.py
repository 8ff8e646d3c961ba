"""Turning the protocol's learning effects into Learner calls — written once, for both drivers.

The SimPy driver and the trio/libp2p driver differ in how they move bytes and keep time, not
in what ``TrainLocal``, ``ApplyAverage``, ``LoadState`` and ``ServeState`` mean. This module is
that meaning; a driver only decides *when* to call it (the sim after a modelled compute
delay, the real node in a worker thread).
"""

from __future__ import annotations

from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.effects import ApplyAverage, LoadState, ServeState, TrainLocal
from swarm_tune.runtime.protocol.events import LocalUpdateReady
from swarm_tune.runtime.protocol.messages import StateResponse
from swarm_tune.runtime.protocol.tensors import param_digest, param_sketch
from swarm_tune.runtime.training.learner import Learner


class LearnerBridge:
    def __init__(self, learner: Learner, config: ProtocolConfig) -> None:
        self.learner = learner
        self._cfg = config
        self.last_loss = float("nan")

    def train(self, effect: TrainLocal) -> LocalUpdateReady:
        """Run the local step; the digest/sketch describe the parameters the round began with."""
        params = self.learner.parameters()
        digest = param_digest(params)
        sketch = param_sketch(params, self._cfg.sketch_size, self._cfg.sketch_seed)
        result = self.learner.compute_update(effect.kind)
        self.last_loss = result.loss
        return LocalUpdateReady(
            round=effect.round,
            kind=effect.kind,
            update=result.update,
            loss=result.loss,
            digest=digest,
            sketch=sketch,
        )

    def apply(self, effect: ApplyAverage) -> None:
        self.learner.apply_average(effect.kind, effect.update)

    def load(self, effect: LoadState) -> None:
        self.learner.load_state(effect.tensors)

    def state_response(self, effect: ServeState, round_number: int) -> StateResponse:
        params = self.learner.parameters()
        snapshot = {name: t.detach().to("cpu").clone() for name, t in params.items()}
        return StateResponse(
            nonce=effect.nonce,
            round=round_number,
            digest=param_digest(snapshot),
            sketch=param_sketch(snapshot, self._cfg.sketch_size, self._cfg.sketch_seed),
            tensors=snapshot,
        )
