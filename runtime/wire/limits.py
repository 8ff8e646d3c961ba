"""Configurable bounds for everything the wire layer accepts.

Why a single frozen dataclass: every allocation driven by peer-supplied numbers must be
bounded *before* it happens, and the bounds must be the same in the encoder (so a node never
produces what its peers would reject) and the decoder. Keeping them together makes the
memory budget of a node auditable in one place, and lets the ops config build one from
``SWARM_*`` settings.

Defaults are sized for full fp16 updates of models up to ~500M parameters (1 GiB message).
(Chunking a message for the transport is the net layer's job: runtime/net/bulk.py reads a
whole message from a stream under its own bounds.)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WireLimits"]


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

    def __post_init__(self) -> None:
        for name in (
            "max_message_bytes",
            "max_header_bytes",
            "max_tensors",
            "max_name_len",
            "max_ndim",
            "max_run_id_len",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"WireLimits.{name} must be positive")
        if self.max_meta_entries < 0:
            raise ValueError("WireLimits.max_meta_entries must be >= 0")
        if self.max_run_id_len > 255:
            raise ValueError("WireLimits.max_run_id_len must fit in one byte (<= 255)")
