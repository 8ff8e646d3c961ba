"""One update as the validator sees it: structure verdict plus a summary, computed once.

Why a summary: the close-time judge (validation.py) compares a round's updates by three facts
of each one — its RMS norm, a replay fingerprint and a direction sample (strided coordinates for
the sign-flip test). All three are pure functions of the update. In a gossip round every update
is judged by each of its receivers and by its sender, so computing them when the update is first
checked — and memoizing the result on the immutable message (``Contribution.check``) — turns a
round's close into a few small vector operations instead of a pass over every update per judge.

Why the fingerprint may be Python's ``hash``: it only has to make an identical resend compare
equal. A collision could only make its *sender's* update look like a replay, and SipHash's
per-process key means nobody can aim one at somebody else's update.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from swarm_tune.runtime.protocol.tensors import (
    ModelSpec,
    all_finite,
    rms_norm,
    sample_coordinates,
)

DIRECTION_SAMPLE = 4096  # large models: seeded coordinates summarised per update
DIRECTION_COLUMNS = 512  # coordinates the direction test actually compares
DIRECTION_SEED = 0x5EED_D1EC  # the sample's coordinates (public either way: config is shared)


@dataclass(frozen=True, slots=True)
class UpdateSummary:
    rms: float  # root-mean-square of every entry
    fingerprint: int  # equal for bit-identical updates (replay detection)
    direction: npt.NDArray[np.float64]  # ~DIRECTION_COLUMNS strided coordinates
    direction_norm: float  # its Euclidean norm


@dataclass(frozen=True, slots=True)
class TensorCheck:
    """What ``check_tensors`` found: a pure function of (spec, tensors)."""

    spec: ModelSpec
    mismatch: str | None  # "shape" | "dtype" | None
    finite: bool
    flat: torch.Tensor | None  # compact models that match: every entry as one float32 vector
    summary: UpdateSummary | None  # present when the tensors match and are finite
    # ``flat`` as a numpy view (same memory), made once: a robust rule reads every row at every
    # close, and a flat round has N receivers of each row.
    flat_np: npt.NDArray[np.float32] | None = None


def check_tensors(spec: ModelSpec, tensors: Mapping[str, torch.Tensor]) -> TensorCheck:
    """Shape/dtype fit, finiteness, the flat vector (compact models) and the summary.

    Written for few calls into torch/numpy: in a large simulation each costs several
    microseconds (cold caches), far more than the arithmetic on a small model."""
    mismatch = spec.mismatch(tensors)
    if mismatch is not None:
        return TensorCheck(spec, mismatch, False, None, None)
    if spec.compact:
        flat = spec.flatten(tensors)
        raw = flat.numpy()
        values = raw.astype(np.float64)
        # Finite iff every entry is: NaN/Inf propagate, and squares of float32 values
        # cannot overflow a float64 sum.
        square_sum = float(values @ values)
        if not math.isfinite(square_sum):
            return TensorCheck(spec, None, False, flat, None, raw)
        rms = math.sqrt(square_sum / values.size) if values.size else 0.0
        summary = _summary(rms, hash(raw.tobytes()), values)
        return TensorCheck(spec, None, True, flat, summary, raw)
    if not all_finite(tensors):
        return TensorCheck(spec, None, False, None, None)
    sample = sample_coordinates(tensors, DIRECTION_SAMPLE, DIRECTION_SEED).numpy()
    summary = _summary(rms_norm(tensors), hash(sample.tobytes()), sample)
    return TensorCheck(spec, None, True, None, summary)


def direction_stride(numel: int) -> int:
    """The step of the strided direction sample of a flat vector of ``numel`` entries."""
    return max(1, numel // DIRECTION_COLUMNS)


def summary_of(rms: float, fingerprint: int, direction: npt.NDArray[np.float64]) -> UpdateSummary:
    """A summary from its facts (group rounds build it from what members committed to)."""
    return UpdateSummary(rms, fingerprint, direction, math.sqrt(float(direction @ direction)))


def _summary(rms: float, fingerprint: int, values: npt.NDArray[np.float64]) -> UpdateSummary:
    # A strided subsample keeps the median cheap (it sorts) and spans every tensor.
    direction = np.ascontiguousarray(values[:: direction_stride(values.size)])
    return summary_of(rms, fingerprint, direction)
