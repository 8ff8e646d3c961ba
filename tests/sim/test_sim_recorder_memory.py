"""The rounds table's memory per row: it is the one structure of a run that grows with
nodes x rounds (a 100,000-node, 20-round run appends 2 M rows), so its bytes a row are bounded
here, and its sparse columns must read back as the dense ones they replace."""

from __future__ import annotations

import math
import tracemalloc

from swarm_tune.runtime.protocol.reasons import RejectReason
from swarm_tune.sim.recorder import REJECT_COLUMNS, Recorder

ROWS = 20_000
# 451 bytes a row before the per-reason counts went sparse and the digests stopped being
# interned; 251 after (columns' arrays over-allocate by up to 1/8 as they grow).
MAX_BYTES_PER_ROW = 300


def _add(rec: Recorder, i: int) -> int:
    """A row as the driver appends it: a unique digest, a rejection in every 4th row."""
    rejected = {RejectReason.STALE.value: 1 + i % 3} if i % 4 == 0 else {}
    return rec.add_round(
        (i % 1000, 0, i // 1000, 3, 2, 5, 6, 7, 8),
        rejected,
        (float(i), i + 1.5, 1.5, 0.25, math.nan),
        (f"n{i % 1000:04d}", "quorum", "average", f"{i * 2654435761 % 2**64:016x}", ""),
    )


def test_rounds_row_costs_a_bounded_number_of_bytes() -> None:
    # Cost: ~0.1 s.
    rec = Recorder("mem")
    for i in range(100):  # the first rows build the bound appends and the interned names
        _add(rec, i)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100, 100 + ROWS):
            _add(rec, i)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown / ROWS <= MAX_BYTES_PER_ROW, f"{grown / ROWS:.0f} bytes a rounds row"


def test_sparse_reject_columns_read_back_dense_and_match_round_row() -> None:
    fast, slow = Recorder("r"), Recorder("r")
    for i in range(50):
        row = _add(fast, i)
        assert row == i
        rejected = {RejectReason.STALE.value: 1 + i % 3} if i % 4 == 0 else {}
        values = {
            "node_index": i % 1000, "incarnation": 0, "round": i // 1000, "contributors": 3,
            "accepted": 2, "msgs_sent": 5, "msgs_recv": 6, "bytes_sent": 7, "bytes_recv": 8,
            "rejected": sum(rejected.values()),
            **{f"rej_{k}": v for k, v in rejected.items()},
            "t_open": float(i), "t_close": i + 1.5, "duration": 1.5, "loss": 0.25,
            "drift": math.nan, "node": f"n{i % 1000:04d}", "trigger": "quorum",
            "outcome": "average", "digest": f"{i * 2654435761 % 2**64:016x}", "adversary": "",
        }  # fmt: skip
        assert slow.round_row(values) == i
    a, b = fast.tables()["rounds"], slow.tables()["rounds"]
    assert a.to_pandas().equals(b.to_pandas())  # NaN drift: equal where both are NaN
    stale = a.column(f"rej_{RejectReason.STALE.value}").to_pylist()
    assert stale == [1 + i % 3 if i % 4 == 0 else 0 for i in range(50)]
    assert set(REJECT_COLUMNS) <= set(a.column_names)
    assert all(a.column(c).to_pylist() == [0] * 50 for c in REJECT_COLUMNS if "stale" not in c)
