"""The error-feedback residual and DiLoCo's outer momentum survive a checkpoint + restart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from swarm_tune.runtime.compression import CompressionError
from swarm_tune.runtime.ops.checkpoint import (
    NODE_STATE_FILE,
    CorruptCheckpointError,
    load_node_state,
    save_node_state,
)
from swarm_tune.runtime.protocol import ProtocolConfig
from swarm_tune.runtime.protocol.effects import TrainLocal
from swarm_tune.runtime.training.bridge import RESIDUAL_KEY, LearnerBridge
from swarm_tune.sim.learning import PARAMS, BatchedLearning, LearningSettings

CFG = ProtocolConfig(compression="topk:0.05")


def _bridge() -> tuple[BatchedLearning, LearnerBridge]:
    s = LearningSettings(
        hidden=8, embed=4, context=3, batch_size=8, samples_per_node=64, eval_samples=64,
        diloco={"inner_steps": 2},  # type: ignore[arg-type]
    )  # fmt: skip
    bl = BatchedLearning(s, 1, 3)
    return bl, LearnerBridge(bl.add_node(0, 0), CFG)


def test_node_state_round_trips_through_the_checkpoint_dir(tmp_path: Path) -> None:
    bl, bridge = _bridge()
    for r in range(2):
        ready = bridge.train(TrainLocal(r, "grad"))
        bridge.learner.apply_average("grad", ready.update)
    state = bridge.node_state()
    assert set(state) == {RESIDUAL_KEY, "outer." + PARAMS}
    assert save_node_state(tmp_path, "run", 2, state) is not None
    assert load_node_state(tmp_path, "run", 1) == {}  # saved with another checkpoint
    assert load_node_state(tmp_path, "other", 2) == {}
    _, fresh = _bridge()
    fresh.load_node_state(load_node_state(tmp_path, "run", 2))
    again = fresh.node_state()
    for k, v in state.items():
        assert torch.equal(again[k], v), k
    # the resumed compressor owes what the original owes: the same next message
    u = {PARAMS: torch.randn(bl.numel, generator=torch.Generator().manual_seed(1))}
    assert bridge.compressor is not None and fresh.compressor is not None
    (da, ea), (db, eb) = bridge.compressor.compress(u), fresh.compressor.compress(u)
    assert torch.equal(da[PARAMS], db[PARAMS]) and torch.equal(ea.parts["i"], eb.parts["i"])


def test_bad_node_state_is_refused(tmp_path: Path) -> None:
    _, bridge = _bridge()
    bridge.train(TrainLocal(0, "grad"))
    with pytest.raises(CompressionError):
        bridge.load_node_state({RESIDUAL_KEY: torch.zeros(3)})
    (tmp_path / NODE_STATE_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CorruptCheckpointError):
        load_node_state(tmp_path, "run", 0)
