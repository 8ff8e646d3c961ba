"""Turning the protocol's learning effects into Learner calls — written once, for both drivers.

The SimPy driver and the trio/libp2p driver differ in how they move bytes and keep time, not
in what ``TrainLocal``, ``ApplyAverage``, ``LoadState`` and ``ServeState`` mean. This module is
that meaning; a driver only decides *when* to call it (the sim after a modelled compute
delay, the real node in a worker thread).
"""

from __future__ import annotations

from swarm_tune.runtime.compression.codecs import CompressionError, Encoded
from swarm_tune.runtime.compression.update import UpdateCompressor
from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.effects import ApplyAverage, LoadState, ServeState, TrainLocal
from swarm_tune.runtime.protocol.events import LocalUpdateReady
from swarm_tune.runtime.protocol.messages import StateResponse
from swarm_tune.runtime.protocol.tensors import (
    ModelSpec,
    TensorDict,
    UpdateKind,
    param_digest,
    param_sketch,
)
from swarm_tune.runtime.training.learner import Learner


def compressor_for(config: ProtocolConfig, spec: ModelSpec) -> UpdateCompressor | None:
    """The node's update compressor when the run compresses (None: updates go as they are)."""
    comp = UpdateCompressor(config.compression, spec)
    return None if comp.lossless else comp


def compress_result(
    comp: UpdateCompressor | None, kind: UpdateKind, update: TensorDict
) -> tuple[TensorDict, Encoded | None]:
    """(what this node averages, what the wire carries) for one local result.

    Only gradient rounds are compressed: a parameter round carries the model itself (top-k
    of parameters would zero 99% of the model) and must not touch the gradient residual."""
    if comp is None or kind != "grad":
        return update, None
    decoded, enc = comp.compress(update)
    return decoded, enc


OUTER_KEY = "outer."  # node_state: DiLoCo momentum, by parameter name
RESIDUAL_KEY = "ef.residual"  # node_state: the compressor's error-feedback residual


class LearnerBridge:
    def __init__(self, learner: Learner, config: ProtocolConfig) -> None:
        self.learner = learner
        self._cfg = config
        self.last_loss = float("nan")
        # Built at the first local step (a bridge made only to serve state needs none); it
        # holds the error-feedback residual, so it lives as long as the node's learner.
        self._compressor: UpdateCompressor | None = None
        self._compressor_built = False

    @property
    def compressor(self) -> UpdateCompressor | None:
        if not self._compressor_built:
            spec = ModelSpec.from_tensors(self.learner.parameters())
            self._compressor = compressor_for(self._cfg, spec)
            self._compressor_built = True
        return self._compressor

    def train(self, effect: TrainLocal) -> LocalUpdateReady:
        """Run the local step; the digest/sketch describe the parameters the round began with."""
        params = self.learner.parameters()
        digest = param_digest(params)
        sketch = param_sketch(params, self._cfg.sketch_size, self._cfg.sketch_seed)
        result = self.learner.compute_update(effect.kind)
        self.last_loss = result.loss
        update, encoded = compress_result(self.compressor, effect.kind, result.update)
        return LocalUpdateReady(
            round=effect.round,
            kind=effect.kind,
            update=update,
            loss=result.loss,
            digest=digest,
            sketch=sketch,
            encoded=encoded,
        )

    def node_state(self) -> TensorDict:
        """What only this node needs to resume exactly (for checkpoints): the compressor's
        error-feedback residual and the learner's outer-optimizer state."""
        state = {OUTER_KEY + n: t for n, t in self.learner.outer_state().items()}
        comp = self.compressor
        residual = comp.feedback.state() if comp is not None else None
        if residual is not None:
            state[RESIDUAL_KEY] = residual
        return state

    def load_node_state(self, state: TensorDict) -> None:
        """Inverse of ``node_state`` (checked: a residual of the wrong size is refused)."""
        outer = {n[len(OUTER_KEY) :]: t for n, t in state.items() if n.startswith(OUTER_KEY)}
        self.learner.load_outer_state(outer)
        residual = state.get(RESIDUAL_KEY)
        comp = self.compressor
        if residual is not None and comp is not None:
            if residual.numel() != comp.spec.numel:
                raise CompressionError(
                    f"saved residual has {residual.numel()} values, the model {comp.spec.numel}"
                )
            comp.feedback.load_state(residual)

    def apply(self, effect: ApplyAverage) -> None:
        self.learner.apply_average(effect.kind, effect.update)

    def load(self, effect: LoadState) -> None:
        self.learner.load_state(effect.tensors)
        self.learner.load_outer_state(effect.outer)
        if effect.moments is not None:
            self.learner.load_moments(effect.moments)

    def state_response(self, effect: ServeState, round_number: int) -> StateResponse:
        params = self.learner.parameters()
        snapshot = {name: t.detach().to("cpu").clone() for name, t in params.items()}
        return StateResponse(
            nonce=effect.nonce,
            round=round_number,
            digest=param_digest(snapshot),
            sketch=param_sketch(snapshot, self._cfg.sketch_size, self._cfg.sketch_seed),
            tensors=snapshot,
            outer=self.learner.outer_state(),
            # Off (0): the moments would only cost bytes, the loaders ignore them.
            moments=self.learner.moments() if self._cfg.sync_moment_bound > 0 else None,
        )
