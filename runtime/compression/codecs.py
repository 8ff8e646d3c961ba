"""Update codecs: one interface, composable stages, a canonical name that travels on the wire.

Why a name and not a negotiated setting: a receiver must be able to decode whatever a peer
sends without sharing its configuration, and a decoder must never guess. Every compressed
update carries its codec's canonical name (``fp16``, ``int8:256``, ``topk:0.01+int8:256``) and
the length of the vector it decodes to; the parts are plain tensors, checked against both
before a single value is read.

Stages (at most one sparsifier, first; exactly one value stage, last, default ``fp32``):

* ``fp32`` (alias ``none``) - the values as they are (lossless, 4 bytes each);
* ``fp16`` / ``bf16`` - half precision (2 bytes; fp16 saturates at +-65504 instead of
  overflowing to inf, so a large coordinate is clipped, not turned into a poisoned inf);
* ``int8:B`` - block-wise absmax int8: each block of B values (1..65536, default 256) keeps
  one float32 scale ``max|x| / 127``; error per value <= scale / 2 (1 byte + 4/B);
* ``int4:B`` - the same with 15 levels (-7..7, two values per byte, default B = 64: a coarser
  grid wants smaller blocks); scale ``max|x| / 7``, error per value <= scale / 2 (0.5 byte +
  4/B). A nibble of 0 (level -8) is never produced; decoded it stays within 8 x scale;
* ``topk:F`` - keep the ceil(F * n) largest-magnitude coordinates (0 < F <= 1), indices as
  int32 in increasing order (one canonical encoding; duplicates or out-of-range indices are
  refused), values through the value stage.

Everything works on ONE flat float32 vector: the caller (``update.py``) flattens a model's
tensors in spec order, so a codec never needs to know a model. Nothing here is random: the
same input gives the same bytes (top-k ties resolve by torch's deterministic CPU topk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import torch

__all__ = [
    "MAX_BLOCK",
    "Codec",
    "CompressionError",
    "Encoded",
    "parse_codec",
]

MAX_BLOCK: Final = 65_536
DEFAULT_BLOCK: Final = 256
INT4_BLOCK: Final = 64
FP16_MAX: Final = 65504.0
_INT8_MAX: Final = 127.0
_INT4_MAX: Final = 7.0
_LEVELS: Final = {"int8": _INT8_MAX, "int4": _INT4_MAX}


class CompressionError(ValueError):
    """A codec name or parameter is invalid, or an encoded update disagrees with its header."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """A compressed flat vector: the codec's canonical name, decoded length, and parts."""

    codec: str
    numel: int
    parts: dict[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        """Payload bytes on the wire (the parts; the header is the caller's control cost)."""
        return sum(t.numel() * t.element_size() for t in self.parts.values())


@dataclass(frozen=True, slots=True)
class _Values:
    """The value stage: how a vector of float32 values is stored."""

    kind: str  # fp32 | fp16 | bf16 | int8 | int4
    block: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.block}" if self.kind in _LEVELS else self.kind

    def encode(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
        if self.kind == "fp32":
            out["v"] = x.to(torch.float32).contiguous()
        elif self.kind == "fp16":
            out["v"] = x.clamp(-FP16_MAX, FP16_MAX).to(torch.float16)
        elif self.kind == "bf16":
            out["v"] = x.to(torch.bfloat16)
        else:
            n = x.numel()
            levels = _LEVELS[self.kind]
            blocks = -(-n // self.block)
            padded = torch.zeros(blocks * self.block, dtype=torch.float32)
            padded[:n] = x
            view = padded.view(blocks, self.block)
            scale = view.abs().amax(dim=1) / levels
            safe = torch.where(scale > 0, scale, torch.ones_like(scale))
            q = torch.round(view / safe[:, None]).clamp_(-levels, levels).reshape(-1)[:n]
            out["s"] = scale
            if self.kind == "int8":
                out["q"] = q.to(torch.int8).clone()
                return
            nibbles = torch.zeros(2 * -(-n // 2), dtype=torch.uint8)  # even length
            nibbles[:n] = (q + 8).to(torch.uint8)
            out["q4"] = nibbles[0::2] | (nibbles[1::2] << 4)

    def expected(self, n: int) -> dict[str, tuple[torch.dtype, int]]:
        """Part name -> (dtype, length) for ``n`` values."""
        if self.kind == "fp32":
            return {"v": (torch.float32, n)}
        if self.kind == "fp16":
            return {"v": (torch.float16, n)}
        if self.kind == "bf16":
            return {"v": (torch.bfloat16, n)}
        scales = (torch.float32, -(-n // self.block))
        if self.kind == "int4":
            return {"q4": (torch.uint8, -(-n // 2)), "s": scales}
        return {"q": (torch.int8, n), "s": scales}

    def decode(self, parts: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        if self.kind not in _LEVELS:
            return parts["v"].to(torch.float32)
        blocks = -(-n // self.block)
        q = torch.zeros(blocks * self.block, dtype=torch.float32)
        if self.kind == "int8":
            q[:n] = parts["q"].to(torch.float32)
        else:
            packed = parts["q4"]
            nibbles = torch.stack((packed & 15, packed >> 4), dim=1).reshape(-1)[:n]
            q[:n] = nibbles.to(torch.float32) - 8.0
        return (q.view(blocks, self.block) * parts["s"][:, None]).reshape(-1)[:n]


class Codec:
    """A parsed codec: ``encode`` a flat float32 vector, ``decode`` it back (checked)."""

    __slots__ = ("fraction", "name", "values")

    def __init__(self, fraction: float | None, values: _Values) -> None:
        self.fraction = fraction
        self.values = values
        head = f"topk:{fraction!r}+" if fraction is not None else ""
        self.name = head + values.name

    @property
    def lossless(self) -> bool:
        return self.fraction is None and self.values.kind == "fp32"

    def kept(self, numel: int) -> int:
        """Coordinates a vector of ``numel`` keeps (all, or top-k's k)."""
        if self.fraction is None:
            return numel
        return min(numel, max(1, math.ceil(self.fraction * numel - 1e-9)))

    def encode(self, flat: torch.Tensor) -> Encoded:
        if flat.dim() != 1 or not flat.is_floating_point():
            raise CompressionError("codecs encode one flat floating-point vector")
        x = flat.detach().to("cpu", torch.float32)
        n = x.numel()
        parts: dict[str, torch.Tensor] = {}
        if self.fraction is not None:
            k = self.kept(n)
            idx = torch.topk(x.abs(), k, sorted=False).indices.sort().values
            parts["i"] = idx.to(torch.int32)
            x = x[idx]
        self.values.encode(x, parts)
        return Encoded(self.name, n, parts)

    def check(self, enc: Encoded) -> None:
        """Raise ``CompressionError`` unless ``enc``'s parts are exactly what this codec
        produces for ``enc.numel`` values (names, dtypes, 1-D lengths, index validity)."""
        if enc.codec != self.name:
            raise CompressionError(f"encoded with {enc.codec!r}, decoding as {self.name!r}")
        n = enc.numel
        if not 0 < n < 2**31:
            raise CompressionError(f"decoded size {n} out of range")
        want = self.values.expected(self.kept(n))
        if self.fraction is not None:
            want["i"] = (torch.int32, self.kept(n))
        if set(enc.parts) != set(want):
            raise CompressionError(f"parts {sorted(enc.parts)} != {sorted(want)} for {self.name}")
        for part, (dtype, length) in want.items():
            t = enc.parts[part]
            if t.dtype != dtype or t.dim() != 1 or t.numel() != length:
                raise CompressionError(
                    f"part {part!r}: {t.dtype} x {tuple(t.shape)} disagrees with the header "
                    f"({self.name}, {n} values -> {dtype} x ({length},))"
                )
        if self.fraction is not None:
            idx = enc.parts["i"]
            if idx.numel() and (
                int(idx[0]) < 0
                or int(idx[-1]) >= n
                or (idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()))
            ):
                raise CompressionError("top-k indices out of range or not strictly increasing")

    def decode(self, enc: Encoded) -> torch.Tensor:
        """The float32 vector ``enc`` stands for; raises ``CompressionError`` if malformed."""
        self.check(enc)
        n = enc.numel
        values = self.values.decode(enc.parts, self.kept(n))
        if self.fraction is None:
            return values
        out = torch.zeros(n, dtype=torch.float32)
        out[enc.parts["i"].to(torch.int64)] = values
        return out


def _value_stage(name: str, arg: str | None) -> _Values:
    if name in ("fp32", "none", "fp16", "bf16"):
        if arg is not None:
            raise CompressionError(f"{name} takes no parameter (got {arg!r})")
        return _Values("fp32" if name == "none" else name)
    if name in _LEVELS:
        block = DEFAULT_BLOCK if name == "int8" else INT4_BLOCK
        if arg is not None:
            try:
                block = int(arg)
            except ValueError:
                raise CompressionError(
                    f"{name} block size must be an integer, got {arg!r}"
                ) from None
        if not 1 <= block <= MAX_BLOCK:
            raise CompressionError(f"{name} block size must be in [1, {MAX_BLOCK}], got {block}")
        return _Values(name, block)
    raise CompressionError(
        f"unknown compression stage {name!r} "
        "(known: none, fp32, fp16, bf16, int8[:B], int4[:B], topk:F)"
    )


def _fraction(arg: str | None) -> float:
    if arg is None:
        raise CompressionError("topk needs a fraction, e.g. topk:0.01")
    try:
        frac = float(arg)
    except ValueError:
        raise CompressionError(f"topk fraction must be a number, got {arg!r}") from None
    if not (math.isfinite(frac) and 0.0 < frac <= 1.0):
        raise CompressionError(f"topk fraction must be in (0, 1], got {arg}")
    return frac


def parse_codec(spec: str) -> Codec:
    """``"fp16"``, ``"int8:128"``, ``"topk:0.01+int8"``, ... -> a ``Codec`` (see module doc).

    Raises ``CompressionError`` naming the bad stage or parameter."""
    if not isinstance(spec, str) or not spec or len(spec) > 64:
        raise CompressionError(f"compression must be a non-empty name, got {spec!r}")
    fraction: float | None = None
    values: _Values | None = None
    for pos, stage in enumerate(spec.strip().lower().split("+")):
        name, _, arg = stage.strip().partition(":")
        param = arg if arg else None
        if name == "topk":
            if pos != 0:
                raise CompressionError("topk must be the first stage (sparsify, then quantize)")
            fraction = _fraction(param)
        else:
            if values is not None:
                raise CompressionError(f"{spec!r}: more than one value stage")
            values = _value_stage(name, param)
    return Codec(fraction, values if values is not None else _Values("fp32"))
