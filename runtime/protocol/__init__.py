"""The sans-I/O protocol core: events in, effects out, ``now`` passed in, seeded randomness.

Import what drivers need from here. This package must never import simpy, trio, libp2p or
asyncio (tests/protocol/test_protocol_purity.py enforces it).
"""

from swarm_tune.runtime.protocol import effects
from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.protocol.events import (
    Event,
    LocalUpdateReady,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    TimerFired,
    TimerKey,
    WireRejected,
)
from swarm_tune.runtime.protocol.messages import (
    Contribution,
    Goodbye,
    Heartbeat,
    Message,
    StateRequest,
    StateResponse,
)
from swarm_tune.runtime.protocol.node import ProtocolNode
from swarm_tune.runtime.protocol.reasons import RejectReason
from swarm_tune.runtime.protocol.rounds import Phase, ProtocolStateError
from swarm_tune.runtime.protocol.tensors import ModelSpec, TensorDict, UpdateKind

__all__ = [
    "Contribution",
    "Event",
    "Goodbye",
    "Heartbeat",
    "LocalUpdateReady",
    "Message",
    "MessageReceived",
    "ModelSpec",
    "PeerConnected",
    "PeerDisconnected",
    "Phase",
    "ProtocolConfig",
    "ProtocolNode",
    "ProtocolStateError",
    "RejectReason",
    "StateRequest",
    "StateResponse",
    "TensorDict",
    "TimerFired",
    "TimerKey",
    "UpdateKind",
    "WireRejected",
    "effects",
]
