"""Big arrays a node frees stay in its heap for the next round (glibc's malloc settings).

Why: glibc serves every allocation over its mmap threshold (128 KiB, adapting up to 32 MiB)
with a fresh mapping and unmaps it on free, so each big array a round makes is fresh pages
that the kernel maps and zeroes again: at N = 2 of a 124 MB group round the owner's
weighted mean and the auditor's recomputation are 62 MB each, over the 32 MiB ceiling,
every round. Measured on the 2-core test box (``weighted_mean`` of two 62 MB rows plus a
124 MB concatenation, five times in a row): 0.02-0.43 s of system time each with the
default settings (0.4 s when transparent huge pages were short), 0.000-0.003 s once the
threshold is raised, after the first. The send and receive pools (buffers.py) cover the
encoded and landed messages; this covers what numpy and torch allocate in between.

The price: memory a node freed is kept by the process (up to its peak) instead of going
back to the system. A node holds its model and a round's updates anyway; allocations over
``MMAP_THRESHOLD`` still get their own mapping and are returned when freed.

Only glibc has these settings; elsewhere (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# Arrays up to this size come from (and go back to) the heap: a round's slices, pieces
# and averages of updates up to a few hundred MB.
MMAP_THRESHOLD = 1 << 30
# Never give the heap's top back to the system (the next round needs it again).
TRIM_THRESHOLD = (1 << 31) - 1
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once). False where the C
    library is not glibc or refuses a setting."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
