"""Attacks on what a node *says* besides its update: heartbeats and state-sync responses.

Why apart from ``attacks.py``: those craft update vectors; these rewrite protocol messages
(``lying_heartbeat``, ``poisoned_sync``), so they need the message types and the sketch layout,
and both drivers call ``rewrite_message`` on everything an adversarial node sends. What each
lie is for:

* ``lying_heartbeat``: a far-future round (to drag the lag check's median and make peers
  sync, or look like the swarm's leader), a huge dataset (to win size-weighted averaging), a
  sketch pointing the other way for its true sketch round (so that it is compared: to make
  the swarm look split or drifted, to trigger syncs and early parameter rounds) and an early
  parameter round as soon as one can be announced, every heartbeat (to replace optimizer
  steps by parameter averaging). Its contributions claim the same inflated dataset size.
* ``poisoned_sync``: a joiner adopts what responders send. The crafted state keeps the
  values at the sketch's public, seeded coordinates - so its sketch equals an honest
  responder's and it joins the agreeing group of a sketch-only check - and sends
  ``-strength x`` the parameters everywhere else.
"""

from __future__ import annotations

import dataclasses

import torch

from swarm_tune.runtime.adversary.attacks import AttackParams
from swarm_tune.runtime.protocol.messages import Heartbeat, Message, StateResponse
from swarm_tune.runtime.protocol.node import EARLY_AHEAD
from swarm_tune.runtime.protocol.tensors import TensorDict, param_digest, sample_coordinates


def claimed_size(params: AttackParams, size: int) -> int:
    """The dataset size a contribution or heartbeat claims."""
    if params.behaviour != "lying_heartbeat":
        return size
    return max(1, int(min(params.resolved_strength * max(size, 1), 2**62)))


def rewrite_message(
    params: AttackParams, msg: Message, sketch_size: int, sketch_seed: int
) -> Message:
    """What the adversary sends instead of ``msg`` (contributions: see Coalition.craft)."""
    b = params.behaviour
    if b == "lying_heartbeat" and isinstance(msg, Heartbeat):
        lead = int(min(abs(params.resolved_strength), 2**31))
        return dataclasses.replace(
            msg,
            round=msg.round + lead,
            dataset_size=claimed_size(params, msg.dataset_size),
            sketch=tuple(-v for v in msg.sketch),  # for its true sketch_round: compared
            param_round=msg.round + EARLY_AHEAD,
        )
    if b == "poisoned_sync" and isinstance(msg, StateResponse):
        tensors = poisoned_state(msg.tensors, params.resolved_strength, sketch_size, sketch_seed)
        return dataclasses.replace(msg, tensors=tensors, digest=param_digest(tensors))
    return msg


def poisoned_state(
    tensors: TensorDict, strength: float, sketch_size: int, sketch_seed: int
) -> TensorDict:
    """``-strength x tensors`` off the sketched coordinates, the true values on them."""
    names = sorted(tensors)
    offsets: dict[str, int] = {}
    total = 0
    for n in names:
        offsets[n] = total
        total += tensors[n].numel()
    # The sketched coordinates, found through the public sketch itself: sketch a copy whose
    # entries are their own global flat indices (exact in float64 below 2**53).
    index = {
        n: torch.arange(offsets[n], offsets[n] + tensors[n].numel(), dtype=torch.float64)
        for n in names
    }
    picked = sample_coordinates(index, sketch_size, sketch_seed).to(torch.int64)
    out: TensorDict = {}
    for n in names:
        t = tensors[n]
        mine = picked[(picked >= offsets[n]) & (picked < offsets[n] + t.numel())] - offsets[n]
        flat = t.detach().reshape(-1).clone()
        kept = flat.index_select(0, mine)
        flat.mul_(-strength)
        flat.index_copy_(0, mine, kept)
        out[n] = flat.reshape(t.shape)
    return out
