"""Mapping the protocol core's typed messages to and from the wire's generic `Envelope`.

Why a separate, strict mapping layer: `decode` proves *who* signed a message and that its
bytes are well formed, but it knows nothing about what a Heartbeat or a Contribution must
contain. A validly signed message from a hostile or buggy peer can still carry a meta field
of the wrong type, a negative dataset size, a 10-million-entry sketch or a tensor where none
belongs. Every such case raises `ProtocolMismatch` (a `Malformed` `WireError`, so drivers
handle it on the same path as a forged signature: count it, feed ``WireRejected``, never
crash) and the core only ever sees values of the types its dataclasses promise.

Layout choices:

* The envelope's ``round`` is the message's own round where it has one (Heartbeat,
  Contribution, StateResponse); StateRequest and Goodbye carry the sender's current round,
  passed by the driver, so the receiver's `ReplayGuard` (a per-sender round window) sees a
  sender's rounds move forward monotonically instead of jumping back to 0.
* Every message carries ``meta["n"]``, a per-process nonce counter seeded from the wall
  clock. Ed25519 signatures are deterministic, so two heartbeats in one round with unchanged
  parameters would otherwise be byte-identical and the second one would be rejected as a
  replay (and counted against the sender's reputation). The counter makes each message
  unique, also across a restart of the same identity.
* Sketches travel as a float64 tensor named `SKETCH_TENSOR`, not as JSON: they are exact,
  they may contain non-finite values (a broken replica must still be able to say so), and
  their size is checked like any tensor. The name cannot collide with a parameter name of a
  Hugging Face model (those never start with an underscore).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Mapping
from typing import Final

import numpy as np
import numpy.typing as npt
import torch

from swarm_tune.runtime.compression.codecs import CompressionError, Encoded, parse_codec
from swarm_tune.runtime.protocol.messages import (
    AuditRequest,
    AuditVerdict,
    Contribution,
    Goodbye,
    Heartbeat,
    Message,
    Piece,
    SliceResult,
    StateRequest,
    StateResponse,
)
from swarm_tune.runtime.protocol.moments import MAX_STEP, Moments
from swarm_tune.runtime.protocol.tensors import Sketch, TensorDict, UpdateKind
from swarm_tune.runtime.wire.envelope import Envelope, MetaValue, MsgType
from swarm_tune.runtime.wire.errors import Malformed

__all__ = [
    "MAX_DIGEST_LEN",
    "MAX_KNOWN_PEERS",
    "MAX_SKETCH",
    "SKETCH_TENSOR",
    "ProtocolMismatch",
    "from_envelope",
    "to_envelope",
]

SKETCH_TENSOR: Final = "__sketch__"
# Parts of a compressed update ("__c.q", "__c.s", ...): cannot collide with HF parameter names.
CODED_PREFIX: Final = "__c."
MAX_CODEC_LEN: Final = 64
# A state response's outer-optimizer state ("__o.<parameter name>"), checked by the core.
OUTER_PREFIX: Final = "__o."
# Its optimizer moments (Adam's m and v, "__m.<name>", "__v.<name>"; the step count in meta
# "opt_step"), checked by the core (runtime/protocol/moments.py).
EXP_AVG_PREFIX: Final = "__m."
EXP_AVG_SQ_PREFIX: Final = "__v."
_STATE_PREFIXES: Final = (OUTER_PREFIX, EXP_AVG_PREFIX, EXP_AVG_SQ_PREFIX)
MAX_SKETCH: Final = 65_536
MAX_DIGEST_LEN: Final = 128
MAX_KNOWN_PEERS: Final = 64
MAX_ADDRESS_LEN: Final = 256
# Group rounds: the data of a piece or slice, and an audit's evidence ("__g.e<i>").
GROUP_DATA: Final = "__g.data"
GROUP_SAMPLE: Final = "__g.sample"  # a piece's direction sample of its sender's update
EVIDENCE_PREFIX: Final = "__g.e"
MAX_GROUP: Final = 256  # members of one group round
_MAX_I63: Final = (1 << 63) - 1


class ProtocolMismatch(Malformed):
    """Signed and well formed, but not a valid protocol message (bad meta or tensors)."""

    default_reason = "protocol_mismatch"


def _nonce_counter() -> Iterator[int]:
    # Wall-clock start: unique across restarts of one identity; not used for any decision.
    return itertools.count(time.time_ns())


_NONCES = _nonce_counter()


# -- encode --------------------------------------------------------------------------------


def _sketch_tensor(sketch: Sketch) -> torch.Tensor:
    return torch.tensor(sketch, dtype=torch.float64)


def to_envelope(message: Message, run_id: str, sender: str, *, round: int = 0) -> Envelope:
    """The envelope for ``message``; ``round`` is used only by messages without their own."""
    meta: dict[str, MetaValue] = {"n": next(_NONCES) & _MAX_I63}
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(message, Heartbeat):
        msg_type, rnd = MsgType.HEARTBEAT, message.round
        meta["dataset_size"] = message.dataset_size
        meta["digest"] = message.digest
        meta["sketch_round"] = message.sketch_round
        meta["kp_ids"] = [p for p, _ in message.known_peers]
        meta["kp_addrs"] = [a for _, a in message.known_peers]
        meta["dial"] = message.dial
        if message.param_round >= 0:
            meta["param_round"] = message.param_round
        tensors[SKETCH_TENSOR] = _sketch_tensor(message.sketch)
    elif isinstance(message, Contribution):
        msg_type, rnd = MsgType.CONTRIBUTION, message.round
        meta["kind"] = message.kind
        meta["dataset_size"] = message.dataset_size
        if message.encoded is not None:
            # Only the compressed parts travel; the header names the codec and the size
            # they decode to, and the receiver's core decodes against its own model.
            meta["codec"] = message.encoded.codec
            meta["numel"] = message.encoded.numel
            tensors.update({CODED_PREFIX + k: v for k, v in message.encoded.parts.items()})
        else:
            tensors.update(message.tensors)
    elif isinstance(message, StateRequest):
        msg_type, rnd = MsgType.STATE_REQUEST, round
        meta["nonce"] = message.nonce
    elif isinstance(message, StateResponse):
        msg_type, rnd = MsgType.STATE_RESPONSE, message.round
        meta["nonce"] = message.nonce
        meta["digest"] = message.digest
        tensors.update(message.tensors)
        tensors.update({OUTER_PREFIX + k: v for k, v in message.outer.items()})
        if message.moments is not None:
            meta["opt_step"] = message.moments.step
            tensors.update({EXP_AVG_PREFIX + k: v for k, v in message.moments.exp_avg.items()})
            tensors.update(
                {EXP_AVG_SQ_PREFIX + k: v for k, v in message.moments.exp_avg_sq.items()}
            )
        tensors[SKETCH_TENSOR] = _sketch_tensor(message.sketch)
    elif isinstance(message, Goodbye):
        msg_type, rnd = MsgType.GOODBYE, round
    elif isinstance(message, Piece | SliceResult | AuditRequest | AuditVerdict):
        msg_type, rnd = _group_envelope(message, meta, tensors)
    else:  # pragma: no cover - the Message union is closed
        raise TypeError(f"not a protocol message: {type(message).__name__}")
    if SKETCH_TENSOR in tensors and isinstance(message, Contribution):
        raise ValueError(f"tensor name {SKETCH_TENSOR!r} is reserved")
    return Envelope(msg_type, run_id, max(0, rnd), sender, meta, tensors)


def _group_envelope(
    message: Piece | SliceResult | AuditRequest | AuditVerdict,
    meta: dict[str, MetaValue],
    tensors: dict[str, torch.Tensor],
) -> tuple[MsgType, int]:
    """A group round's message: ids and digests in meta, float32 data as raw tensors."""
    meta["index"] = message.index
    if isinstance(message, AuditRequest):
        return MsgType.AUDIT_REQUEST, message.round
    if isinstance(message, AuditVerdict):
        meta["ok"] = message.ok
        meta["digest"] = message.digest
        meta["ev_ids"] = [m for m, _ in message.evidence]
        for i, (_, data) in enumerate(message.evidence):
            tensors[f"{EVIDENCE_PREFIX}{i}"] = torch.from_numpy(data)
        return MsgType.AUDIT_VERDICT, message.round
    meta["kind"] = message.kind
    meta["members"] = list(message.members)
    tensors[GROUP_DATA] = torch.from_numpy(message.data)
    if isinstance(message, Piece):
        meta["dataset_size"] = message.dataset_size
        meta["manifest"] = list(message.manifest)
        meta["sums"] = list(message.sums)
        meta["votes"] = list(message.votes)
        meta["audit"] = message.audit
        tensors[GROUP_SAMPLE] = torch.from_numpy(message.sample)
        return MsgType.GROUP_PIECE, message.round
    meta["digest"] = message.digest
    meta["commits"] = list(message.commits)
    meta["used_ids"] = [m for m, _, _ in message.used]
    meta["used_w"] = [w for _, w, _ in message.used]
    meta["used_d"] = [d for _, _, d in message.used]
    return MsgType.GROUP_SLICE, message.round


# -- decode --------------------------------------------------------------------------------


def _int(meta: Mapping[str, MetaValue], key: str, lo: int = 0, hi: int = _MAX_I63) -> int:
    v = meta.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolMismatch(f"bad_{key}")
    return v


def _str(meta: Mapping[str, MetaValue], key: str, max_len: int) -> str:
    v = meta.get(key)
    if not isinstance(v, str) or len(v) > max_len or not v.isascii() or not v.isprintable():
        raise ProtocolMismatch(f"bad_{key}")
    return v


def _str_list(meta: Mapping[str, MetaValue], key: str, max_items: int) -> list[str]:
    v = meta.get(key, [])
    if not isinstance(v, list) or len(v) > max_items:
        raise ProtocolMismatch(f"bad_{key}")
    out: list[str] = []
    for item in v:
        if not isinstance(item, str) or not 0 < len(item) <= MAX_ADDRESS_LEN:
            raise ProtocolMismatch(f"bad_{key}")
        if not item.isascii() or not item.isprintable():
            raise ProtocolMismatch(f"bad_{key}")
        out.append(item)
    return out


def _allowed_meta(meta: Mapping[str, MetaValue], allowed: frozenset[str]) -> None:
    if not set(meta) <= allowed:
        raise ProtocolMismatch("unexpected_meta")
    _int(meta, "n")


def _sketch(tensors: Mapping[str, torch.Tensor]) -> Sketch:
    t = tensors.get(SKETCH_TENSOR)
    if t is None or t.dtype != torch.float64 or t.dim() != 1 or t.numel() > MAX_SKETCH:
        raise ProtocolMismatch("bad_sketch")
    values: list[float] = t.tolist()
    return tuple(values)


def _no_tensors(env: Envelope, allowed: frozenset[str] = frozenset()) -> None:
    if not set(env.tensors) <= allowed:
        raise ProtocolMismatch("unexpected_tensors")


_HB_META: Final = frozenset(
    {"n", "dataset_size", "digest", "sketch_round", "kp_ids", "kp_addrs", "dial", "param_round"}
)
_CONTRIB_META: Final = frozenset({"n", "kind", "dataset_size", "codec", "numel"})
_REQ_META: Final = frozenset({"n", "nonce"})
_RESP_META: Final = frozenset({"n", "nonce", "digest", "opt_step"})
_BYE_META: Final = frozenset({"n"})
_SKETCH_ONLY: Final = frozenset({SKETCH_TENSOR})


def _encoded(env: Envelope) -> Encoded:
    """The compressed update in a contribution, checked against its own header (codec name,
    decoded size); whether that size is the model's is the core's question."""
    try:
        codec = parse_codec(_str(env.meta, "codec", MAX_CODEC_LEN))
        numel = _int(env.meta, "numel", lo=1)
        parts: TensorDict = {}
        for name, t in env.tensors.items():
            if not name.startswith(CODED_PREFIX):
                raise ProtocolMismatch("unexpected_tensors")
            parts[name[len(CODED_PREFIX) :]] = t
        enc = Encoded(codec.name, numel, parts)
        codec.check(enc)
    except CompressionError as e:
        raise ProtocolMismatch("bad_compression") from e
    return enc


def _prefixed(tensors: Mapping[str, torch.Tensor], prefix: str) -> TensorDict:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def from_envelope(env: Envelope) -> Message:
    """The protocol message in a decoded envelope; raises `ProtocolMismatch` if invalid."""
    meta = env.meta
    if env.msg_type == MsgType.HEARTBEAT:
        _allowed_meta(meta, _HB_META)
        _no_tensors(env, _SKETCH_ONLY)
        ids = _str_list(meta, "kp_ids", MAX_KNOWN_PEERS)
        addrs = _str_list(meta, "kp_addrs", MAX_KNOWN_PEERS)
        if len(ids) != len(addrs):
            raise ProtocolMismatch("bad_known_peers")
        return Heartbeat(
            round=env.round,
            dataset_size=_int(meta, "dataset_size"),
            digest=_str(meta, "digest", MAX_DIGEST_LEN),
            sketch=_sketch(env.tensors),
            sketch_round=_int(meta, "sketch_round", lo=-1),
            known_peers=tuple(zip(ids, addrs, strict=True)),
            dial=_str(meta, "dial", MAX_ADDRESS_LEN) if "dial" in meta else "",
            param_round=_int(meta, "param_round") if "param_round" in meta else -1,
        )
    if env.msg_type == MsgType.CONTRIBUTION:
        _allowed_meta(meta, _CONTRIB_META)
        raw_kind = meta.get("kind")
        if raw_kind != "grad" and raw_kind != "params":
            raise ProtocolMismatch("bad_kind")
        kind: UpdateKind = "grad" if raw_kind == "grad" else "params"
        if SKETCH_TENSOR in env.tensors:
            raise ProtocolMismatch("unexpected_tensors")
        size = _int(meta, "dataset_size")
        if "codec" in meta or "numel" in meta:
            return Contribution(env.round, kind, size, {}, encoded=_encoded(env))
        if any(name.startswith(CODED_PREFIX) for name in env.tensors):
            raise ProtocolMismatch("unexpected_tensors")
        tensors: TensorDict = dict(env.tensors)
        return Contribution(env.round, kind, size, tensors)
    if env.msg_type == MsgType.STATE_REQUEST:
        _allowed_meta(meta, _REQ_META)
        _no_tensors(env)
        return StateRequest(_int(meta, "nonce"))
    if env.msg_type == MsgType.STATE_RESPONSE:
        _allowed_meta(meta, _RESP_META)
        sketch = _sketch(env.tensors)
        params = {
            k: v
            for k, v in env.tensors.items()
            if k != SKETCH_TENSOR and not k.startswith(_STATE_PREFIXES)
        }
        outer = _prefixed(env.tensors, OUTER_PREFIX)
        moments = None
        if "opt_step" in meta:
            exp_avg = _prefixed(env.tensors, EXP_AVG_PREFIX)
            exp_avg_sq = _prefixed(env.tensors, EXP_AVG_SQ_PREFIX)
            moments = Moments(exp_avg, exp_avg_sq, _int(meta, "opt_step", hi=MAX_STEP))
        elif any(k.startswith((EXP_AVG_PREFIX, EXP_AVG_SQ_PREFIX)) for k in env.tensors):
            raise ProtocolMismatch("unexpected_tensors")  # moments without a step count
        return StateResponse(
            nonce=_int(meta, "nonce"),
            round=env.round,
            digest=_str(meta, "digest", MAX_DIGEST_LEN),
            sketch=sketch,
            tensors=params,
            outer=outer,
            moments=moments,
        )
    if env.msg_type == MsgType.GOODBYE:
        _allowed_meta(meta, _BYE_META)
        _no_tensors(env)
        return Goodbye()
    if env.msg_type in _GROUP_TYPES:
        return _group_message(env)
    raise ProtocolMismatch("unknown_msg_type")


_PIECE_META: Final = frozenset(
    {"n", "index", "kind", "members", "dataset_size", "manifest", "sums", "votes", "audit"}
)
_SLICE_META: Final = frozenset(
    {"n", "index", "kind", "members", "digest", "used_ids", "used_w", "used_d", "commits"}
)
_AUDIT_REQ_META: Final = frozenset({"n", "index"})
_VERDICT_META: Final = frozenset({"n", "index", "ok", "digest", "ev_ids"})
_GROUP_TYPES: Final = frozenset(
    {MsgType.GROUP_PIECE, MsgType.GROUP_SLICE, MsgType.AUDIT_REQUEST, MsgType.AUDIT_VERDICT}
)


def _vector(t: torch.Tensor | None) -> npt.NDArray[np.float32]:
    """A piece's or slice's data: one float32 vector (what its length must be is the core's
    question: it knows the model and the group)."""
    if t is None or t.dtype != torch.float32 or t.dim() != 1:
        raise ProtocolMismatch("bad_group_data")
    return t.numpy()


def _floats(meta: Mapping[str, MetaValue], key: str, max_items: int) -> tuple[float, ...]:
    v = meta.get(key)
    if not isinstance(v, list) or len(v) > max_items:
        raise ProtocolMismatch(f"bad_{key}")
    out = tuple(x for x in v if isinstance(x, float) and math.isfinite(x))
    if len(out) != len(v):
        raise ProtocolMismatch(f"bad_{key}")
    return out


def _bool(meta: Mapping[str, MetaValue], key: str) -> bool:
    v = meta.get(key)
    if not isinstance(v, bool):
        raise ProtocolMismatch(f"bad_{key}")
    return v


def _kind(meta: Mapping[str, MetaValue]) -> UpdateKind:
    raw = meta.get("kind")
    if raw != "grad" and raw != "params":
        raise ProtocolMismatch("bad_kind")
    return "grad" if raw == "grad" else "params"


def _group_message(env: Envelope) -> Message:
    meta, rnd = env.meta, env.round
    if env.msg_type == MsgType.AUDIT_REQUEST:
        _allowed_meta(meta, _AUDIT_REQ_META)
        _no_tensors(env)
        return AuditRequest(rnd, _int(meta, "index", hi=MAX_GROUP))
    if env.msg_type == MsgType.AUDIT_VERDICT:
        _allowed_meta(meta, _VERDICT_META)
        ids = _str_list(meta, "ev_ids", MAX_GROUP)
        names = [f"{EVIDENCE_PREFIX}{i}" for i in range(len(ids))]
        if set(env.tensors) != set(names):
            raise ProtocolMismatch("unexpected_tensors")
        evidence = tuple((m, _vector(env.tensors[k])) for m, k in zip(ids, names, strict=True))
        return AuditVerdict(
            rnd,
            _int(meta, "index", hi=MAX_GROUP),
            _bool(meta, "ok"),
            _str(meta, "digest", MAX_DIGEST_LEN),
            evidence,
        )
    piece = env.msg_type == MsgType.GROUP_PIECE
    if set(env.tensors) != ({GROUP_DATA, GROUP_SAMPLE} if piece else {GROUP_DATA}):
        raise ProtocolMismatch("unexpected_tensors")
    data = _vector(env.tensors[GROUP_DATA])
    members = tuple(_str_list(meta, "members", MAX_GROUP))
    if piece:
        _allowed_meta(meta, _PIECE_META)
        return Piece(
            rnd,
            _kind(meta),
            members,
            _int(meta, "index", hi=MAX_GROUP),
            _int(meta, "dataset_size"),
            tuple(_str_list(meta, "manifest", MAX_GROUP)),
            _floats(meta, "sums", MAX_GROUP),
            tuple(_str_list(meta, "votes", MAX_GROUP)),
            _vector(env.tensors[GROUP_SAMPLE]),
            data,
            _bool(meta, "audit"),
        )
    _allowed_meta(meta, _SLICE_META)
    ids = _str_list(meta, "used_ids", MAX_GROUP)
    digests = _str_list(meta, "used_d", MAX_GROUP)
    raw = meta.get("used_w")
    if not isinstance(raw, list):
        raise ProtocolMismatch("bad_used")
    weights = [w for w in raw if isinstance(w, float) and math.isfinite(w)]
    if not len(ids) == len(digests) == len(weights) == len(raw):
        raise ProtocolMismatch("bad_used")
    used = tuple(zip(ids, weights, digests, strict=True))
    return SliceResult(
        rnd,
        _kind(meta),
        members,
        _int(meta, "index", hi=MAX_GROUP),
        used,
        tuple(_str_list(meta, "commits", MAX_GROUP)),
        _str(meta, "digest", MAX_DIGEST_LEN),
        data,
    )
