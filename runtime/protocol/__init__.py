"""The sans-I/O protocol core: events in, effects out, ``now`` passed in, seeded randomness.

Import what drivers need from here. This package must never import simpy, trio, libp2p or
asyncio (tests/protocol/test_protocol_purity.py enforces it).

The names below load on first use (runtime/lazy_exports.py): importing ``protocol.config``
for a scenario or a settings check must not pay for torch, which the update summaries need,
so that a bad input is refused in a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from swarm_tune.runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from swarm_tune.runtime.protocol import effects
    from swarm_tune.runtime.protocol.config import ProtocolConfig
    from swarm_tune.runtime.protocol.events import (
        Event,
        LocalUpdateReady,
        MessageReceived,
        PeerConnected,
        PeerDisconnected,
        PeersFound,
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

# exported name -> the submodule that defines it
__getattr__ = lazy_exports(
    __name__,
    {
        "effects": "effects",
        "ProtocolConfig": "config",
        "Event": "events",
        "LocalUpdateReady": "events",
        "MessageReceived": "events",
        "PeerConnected": "events",
        "PeerDisconnected": "events",
        "PeersFound": "events",
        "TimerFired": "events",
        "TimerKey": "events",
        "WireRejected": "events",
        "Contribution": "messages",
        "Goodbye": "messages",
        "Heartbeat": "messages",
        "Message": "messages",
        "StateRequest": "messages",
        "StateResponse": "messages",
        "ProtocolNode": "node",
        "RejectReason": "reasons",
        "Phase": "rounds",
        "ProtocolStateError": "rounds",
        "ModelSpec": "tensors",
        "TensorDict": "tensors",
        "UpdateKind": "tensors",
    },
)

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
    "PeersFound",
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
