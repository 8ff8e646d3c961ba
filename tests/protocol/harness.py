"""A minimal deterministic in-memory world for unit-testing the protocol core.

Not a driver: no network model, no learning. Messages arrive after a fixed delay, timers
fire in order, local updates are fixed tensors supplied by the test.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from swarm_tune.runtime.protocol import (
    LocalUpdateReady,
    MessageReceived,
    ModelSpec,
    PeerConnected,
    ProtocolConfig,
    ProtocolNode,
    TimerFired,
    effects,
)

SPEC_TENSORS = {"w": torch.zeros(4, 3), "b": torch.zeros(3)}
SPEC = ModelSpec.from_tensors(SPEC_TENSORS)


def grad_like(value: float) -> dict[str, torch.Tensor]:
    return {name: torch.full_like(t, value) for name, t in SPEC_TENSORS.items()}


@dataclass
class World:
    config: ProtocolConfig
    delay: float = 0.1
    now: float = 0.0
    nodes: dict[str, ProtocolNode] = field(default_factory=dict)
    log: list[tuple[float, str, Any]] = field(default_factory=list)
    timers: dict[tuple[str, Any], float] = field(default_factory=dict)
    queue: list[tuple[float, int, str, Any]] = field(default_factory=list)
    seq: int = 0
    # node -> round -> update value (None = never answers TrainLocal)
    updates: Callable[[str, int], dict[str, torch.Tensor] | None] = lambda n, r: grad_like(
        1.0 + 0.01 * r + 0.001 * (ord(n[-1]) % 7)
    )
    train_delay: float = 0.5
    down: set[str] = field(default_factory=set)
    addresses: dict[str, str] = field(default_factory=dict)

    def add(self, node_id: str, dataset_size: int = 10, address: str = "") -> ProtocolNode:
        """A node; by default each on its own /24 (10.<n>.0.1), known to itself and peers."""
        address = address or f"10.{len(self.nodes) + 1}.0.1"
        node = ProtocolNode(
            node_id, self.config, SPEC, dataset_size, random.Random(node_id), address=address
        )
        self.nodes[node_id] = node
        self.addresses[node_id] = address
        return node

    def connect_all(self) -> None:
        for a in self.nodes:
            for b in self.nodes:
                if a != b:
                    self.nodes[a].handle(PeerConnected(b, self.addresses[b]), self.now)

    def push(self, at: float, target: str, event: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, target, event))

    def start(self, node_id: str, catch_up: bool = False) -> None:
        self.execute(node_id, self.nodes[node_id].start(self.now, catch_up))

    def execute(self, node_id: str, out: list[effects.Effect]) -> None:
        node = self.nodes[node_id]
        for eff in out:
            self.log.append((self.now, node_id, eff))
            if isinstance(eff, effects.Send):
                for p in eff.peers:
                    self.push(self.now + self.delay, p, MessageReceived(node_id, eff.message))
            elif isinstance(eff, effects.SetTimer):
                self.timers[(node_id, eff.key)] = eff.at
                self.push(eff.at, node_id, ("timer", eff.key, eff.at))
            elif isinstance(eff, effects.CancelTimer):
                self.timers.pop((node_id, eff.key), None)
            elif isinstance(eff, effects.TrainLocal):
                upd = self.updates(node_id, eff.round)
                if upd is not None:
                    ev = LocalUpdateReady(eff.round, eff.kind, upd, 1.0, "d", (0.0,))
                    self.push(self.now + self.train_delay, node_id, ev)
            elif isinstance(eff, effects.ServeState):
                resp = effects_state(node, eff)
                self.push(self.now + self.delay, eff.peer, MessageReceived(node_id, resp))

    def run_until(self, t_end: float) -> None:
        while self.queue and self.queue[0][0] <= t_end:
            at, _, target, event = heapq.heappop(self.queue)
            self.now = at
            if target in self.down:
                continue
            if isinstance(event, tuple) and event[0] == "timer":
                _, key, when = event
                if self.timers.get((target, key)) != when:
                    continue  # cancelled or re-set
                del self.timers[(target, key)]
                event = TimerFired(key)
            self.execute(target, self.nodes[target].handle(event, self.now))
        self.now = t_end

    def effects_of(self, kind: type, node: str | None = None) -> list[Any]:
        return [e for _, n, e in self.log if isinstance(e, kind) and (node is None or n == node)]


def effects_state(node: ProtocolNode, eff: effects.ServeState) -> Any:
    from swarm_tune.runtime.protocol import StateResponse

    return StateResponse(eff.nonce, node.round, "d", (), grad_like(float(node.round)))
