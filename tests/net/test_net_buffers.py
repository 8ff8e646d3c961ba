"""Reused memory for group averages (net/buffers.AverageBuffers): lent to the core, back
only once the learner applied the average, and only when the applied tensors are views of
the lent buffer (a copy, e.g. a bf16 model's, gives nothing back and pins nothing).
Reused receive buffers (LandingPool): back only once nothing refers to their memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

import numpy as np
import pytest
import torch

from swarm_tune.runtime.net.buffers import LENT_AVERAGES, AverageBuffers, LandingPool
from swarm_tune.runtime.net.heap import keep_freed_memory
from swarm_tune.runtime.net.protocol_codec import from_envelope, to_envelope
from swarm_tune.runtime.protocol.group import digest
from swarm_tune.runtime.protocol.messages import SliceResult
from swarm_tune.runtime.wire.codec import decode, encode
from swarm_tune.runtime.wire.identity import Identity


def test_an_applied_average_is_reused_and_nothing_else_is() -> None:
    pool = AverageBuffers()
    first = pool.take(12)
    views = dict(zip(("a", "b"), torch.split(torch.from_numpy(first), [4, 8]), strict=True))
    pool.give({"b": views["b"], "a": views["a"]})  # any order of names
    assert pool.take(12) is first and pool.reused == 1
    pool.give({"x": torch.zeros(12)})  # not lent (a flat round's average): ignored
    other = pool.take(12)
    assert other is not first and pool.reused == 1
    for _ in range(3 * LENT_AVERAGES):  # given back as copies (bf16): never reused
        copy = torch.from_numpy(pool.take(12)).to(torch.bfloat16)
        pool.give({"a": copy})
    assert len(pool._lent) <= LENT_AVERAGES and pool.reused == 1
    two = AverageBuffers(keep=2)  # free arrays of two shapes: the fitting one is found
    a, b = two.take(8), two.take(12)
    two.give({"a": torch.from_numpy(a)})
    two.give({"a": torch.from_numpy(b)})
    assert two.take(12) is b and two.take(8) is a and two.reused == 2


def test_a_received_buffer_is_reused_only_once_nothing_refers_to_its_memory() -> None:
    """The real path: a signed message lands in a pooled buffer, is decoded (tensors are
    views of it) and kept; views of views (numpy slices, a torch tensor) keep it lent."""
    me = Identity.from_seed(b"\1" * 32)
    data = np.arange(300_000, dtype=np.float32)
    msg = SliceResult(1, "grad", ("a", "b"), 0, (("a", 1.0, "d"),), ("c", "c"), digest(data), data)
    raw = bytes(encode(to_envelope(msg, "run", me.peer_id, round=1), me))
    pool = LandingPool(1 << 30, min_bytes=1 << 10)
    buf = pool.take(len(raw))
    buf[:] = raw
    got = from_envelope(decode(buf, expected_run_id="run"))
    assert isinstance(got, SliceResult) and np.array_equal(got.data, data)
    del buf
    kept = torch.from_numpy(np.asarray(got.data)[5:][:10])
    del got
    gc.collect()
    assert pool.held == 0  # a torch view of a numpy slice of the decoded data still uses it
    fresh = pool.take(len(raw))
    assert pool.reused == 0  # a fresh one, not that
    assert kept[0].item() == 5.0
    del kept
    gc.collect()
    kept_bytes = pool.held
    assert len(raw) < kept_bytes <= len(raw) * 1.02  # with headroom
    again = pool.take(len(raw) + 64)  # the next round's message, a little longer, fits
    assert pool.reused == 1 and pool.held == 0 and len(again) == len(raw) + 64
    del fresh, again
    assert len(LandingPool(1 << 30).take(100)) == 100  # small: fresh, never pooled
    tight = LandingPool(kept_bytes)  # more given back than it may keep: the extra is dropped
    first, second = tight.take(len(raw)), tight.take(len(raw))
    del first, second
    last = tight.take(len(raw))
    assert tight.held == 0 and tight.reused == 1 and len(last) == len(raw)
    # A stale size does not pin the budget: the longest-kept buffer goes first (a peer
    # that once sent sizes nothing else fits must not leave them held for the node's life).
    two_kept = LandingPool(2 * kept_bytes, min_bytes=1 << 10)
    big = two_kept.take(len(raw) * 19 // 10)  # too big for a later message (MIN_FILL)
    del big
    normal = two_kept.take(len(raw))
    assert two_kept.reused == 0
    del normal  # big + normal are over the budget: big, kept longest, goes
    reused_again = two_kept.take(len(raw))
    assert two_kept.reused == 1 and two_kept.held == 0, two_kept.held
    del reused_again
    assert two_kept.held <= 2 * kept_bytes


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def test_a_big_array_lives_in_the_heap_and_its_memory_is_reused_after_free() -> None:
    if not keep_freed_memory():
        pytest.skip("not glibc: malloc's thresholds cannot be set")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _MallInfo2
    size = 48 << 20  # over glibc's default mmap ceiling (32 MiB): a fresh mapping without
    mapped = libc.mallinfo2().hblkhd
    first = np.ones(size, dtype=np.uint8)
    assert libc.mallinfo2().hblkhd - mapped < size // 2  # not a mapping of its own
    heap = libc.mallinfo2().arena
    del first
    again = np.ones(size, dtype=np.uint8)  # the freed memory serves it: the heap stays
    assert libc.mallinfo2().arena - heap < size // 2 and int(again.sum()) == size
    assert libc.mallinfo2().hblkhd - mapped < size // 2
