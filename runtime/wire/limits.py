"""Configurable bounds for everything the wire layer accepts.

Why a single frozen dataclass: every allocation driven by peer-supplied numbers must be
bounded *before* it happens, and the bounds must be the same in the encoder (so a node never
produces what its peers would reject) and the decoder. Keeping them together makes the
memory budget of a node auditable in one place, and lets the ops config build one from
``SWARM_*`` settings.

Defaults are sized for full fp16 updates of models up to ~500M parameters (1 GiB message)
and for py-libp2p's Noise transport, whose frames carry at most 65,535 bytes: we cut at
60 KiB to leave room for Noise/yamux overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_FRAME_BYTES", "WireLimits"]

#: Largest frame `split_frames` produces by default: 60 KiB, frame header included.
DEFAULT_FRAME_BYTES = 61_440


@dataclass(frozen=True, slots=True)
class WireLimits:
    """Hard caps. All sizes in bytes, durations in the caller's clock units (seconds)."""

    #: Whole encoded message (fixed header + run id + JSON header + signature + payload).
    max_message_bytes: int = 1 << 30
    #: JSON header (tensor table + meta), including alignment padding.
    max_header_bytes: int = 1 << 20
    max_tensors: int = 4096
    max_meta_entries: int = 64
    max_name_len: int = 256
    max_ndim: int = 16
    max_run_id_len: int = 128
    #: Largest frame accepted by the reassembler (and default for split_frames).
    max_frame_bytes: int = DEFAULT_FRAME_BYTES
    #: Smallest chunk (frame payload) of a multi-frame message; bounds the chunk count so
    #: per-message bookkeeping stays proportional to the message size.
    min_chunk_bytes: int = 1024
    #: Reservation cap for partially received messages from one transport peer.
    max_reassembly_bytes_per_peer: int = (1 << 30) + (64 << 20)
    #: Reservation cap across all peers.
    max_reassembly_bytes_total: int = 4 << 30
    max_incomplete_per_peer: int = 8
    #: An incomplete message is dropped this long after its first frame arrived.
    reassembly_timeout: float = 120.0

    def __post_init__(self) -> None:
        for name in (
            "max_message_bytes",
            "max_header_bytes",
            "max_tensors",
            "max_name_len",
            "max_ndim",
            "max_run_id_len",
            "max_frame_bytes",
            "min_chunk_bytes",
            "max_reassembly_bytes_per_peer",
            "max_reassembly_bytes_total",
            "max_incomplete_per_peer",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"WireLimits.{name} must be positive")
        if self.max_meta_entries < 0:
            raise ValueError("WireLimits.max_meta_entries must be >= 0")
        if self.max_run_id_len > 255:
            raise ValueError("WireLimits.max_run_id_len must fit in one byte (<= 255)")
        if not self.reassembly_timeout > 0:
            raise ValueError("WireLimits.reassembly_timeout must be positive")
