"""Why a contribution (or a whole message) was refused.

One enum for the core's verdicts and the wire layer's, so a driver can count every rejection
under one metric with a reason label, and reputation treats both alike.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    # Round bookkeeping
    DUPLICATE = "duplicate"  # a second submission from the same peer for the same round
    STALE = "stale"  # for a round that is already closed here
    TOO_FAR_FUTURE = "too_far_future"  # beyond the buffering window
    BUFFER_FULL = "buffer_full"
    WRONG_KIND = "wrong_kind"  # a gradient on a parameter round or vice versa
    # Content
    SHAPE = "shape"
    DTYPE = "dtype"
    NON_FINITE = "non_finite"
    NORM = "norm_outlier"
    DIRECTION = "hostile_direction"  # points against the round's median update
    BAD_SIZE = "bad_dataset_size"
    COMPRESSION = "bad_compression"  # names a codec we cannot decode, or a size not the model's
    # Group rounds (group.py)
    BAD_PIECE = "bad_piece"  # a reduce-scatter piece off its sender's own commitment
    BAD_SLICE = "bad_slice"  # a returned slice that fails its checks or an audit
    FALSE_AUDIT = "false_audit"  # an auditor's evidence that does not prove its claim
    # Sender
    BANNED = "banned"
    # Wire-level, reported by drivers through WireRejected
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    REPLAY = "replay"
    WRONG_RUN = "wrong_run"
    OVERSIZED = "oversized"
    STALLED = "stalled"  # accepted a transfer, then fell behind the minimum rate
