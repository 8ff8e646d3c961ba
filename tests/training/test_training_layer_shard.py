"""Layer shards (runtime/training/layer_shard.py): a node trains and ships its blocks only.

Every parameter has exactly one owner; with LoRA a shard trains its blocks' adapters only.
Too many shards or an index out of range is one line and exit 2, with nothing written, and
shards never hear each other on the wire. Real node processes of two shards averaging with
their slice mates only, and ``checkpoint reconstruct`` assembling the shards bit for bit (a
missing shard refused), run in tests/ops/test_ops_wheel.py, from the installed wheel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import trio
from pydantic import ValidationError

from swarm_tune.runtime.net.node_main import run_node
from swarm_tune.runtime.net.protocol_codec import to_envelope
from swarm_tune.runtime.ops.manifest import RunManifest
from swarm_tune.runtime.ops.settings import SettingsError, load_settings
from swarm_tune.runtime.protocol.messages import Goodbye
from swarm_tune.runtime.training.layer_shard import (
    LayerShard,
    LayerShardError,
    apply_layer_shard,
    owned,
    swarm_id,
)
from swarm_tune.runtime.training.lora import LoraSpec, apply_lora
from swarm_tune.runtime.training.models import load_model
from swarm_tune.runtime.wire import Identity, WrongRun, decode, encode


def _names(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()]


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_every_parameter_has_exactly_one_shard(name: str) -> None:
    names = _names(load_model(name, vocab_size=512, eos_token_id=0))
    for total in (1, 2):
        parts = [owned(names, LayerShard(i, total)) for i in range(total)]
        assert set().union(*parts) == set(names)
        assert sum(len(p) for p in parts) == len(names)
    first, last = (owned(names, LayerShard(i, 2)) for i in range(2))
    embed = "transformer.wte.weight" if name == "tiny-gpt2" else "model.embed_tokens.weight"
    norm = "transformer.ln_f.weight" if name == "tiny-gpt2" else "model.norm.weight"
    assert embed in first and norm in last
    assert LayerShard(1, 3).blocks(7) == range(3, 5) and LayerShard(0, 3).blocks(7) == range(3)
    with pytest.raises(LayerShardError, match="only 2 blocks"):
        owned(names, LayerShard(0, 3))


def test_with_lora_a_shard_ships_its_blocks_adapters_only() -> None:
    spec = LoraSpec(rank=2, alpha=4, target_modules=("q_proj", "v_proj"))
    model = apply_layer_shard(
        apply_lora(load_model("tiny-llama", vocab_size=512, eos_token_id=0), spec), LayerShard(1, 2)
    )
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".layers.1." in n and ".lora_" in n for n in trained)


def test_shards_are_separate_swarms_on_the_wire() -> None:
    shards = [LayerShard(i, 2) for i in range(2)]
    assert swarm_id("run", LayerShard()) == "run"
    assert len({swarm_id("run", s) for s in shards}) == 2
    alice = Identity.from_seed(bytes(range(32)))
    frame = encode(to_envelope(Goodbye(), swarm_id("run", shards[0]), alice.peer_id), alice)
    assert decode(frame, expected_run_id=swarm_id("run", shards[0])).sender == alice.peer_id
    with pytest.raises(WrongRun):
        decode(frame, expected_run_id=swarm_id("run", shards[1]))


def test_bad_shard_settings_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SettingsError, match=r"SWARM_MODEL_SHARD_INDEX.*less than"):
        load_settings(model_shard_total=2, model_shard_index=2)
    # The node's own entry (in this process: the refusal comes before any port or file).
    settings = load_settings(
        run_id="bad-shards",
        model_name="tiny-gpt2",
        model_shard_total=3,
        checkpoint_dir=tmp_path / "ckpt",
        node_key_file=tmp_path / "key",
    )
    assert trio.run(run_node, settings) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    want = "error: SWARM_MODEL_SHARD_TOTAL: 3 layer shards but the model has only 2 blocks"
    assert lines == [want]
    assert list(tmp_path.iterdir()) == []


def test_manifests_deal_layer_shards_round_robin() -> None:
    data: dict[str, Any] = {
        "run_id": "layers",
        "created": "2026-12-01",
        "model": {"name": "tiny-gpt2"},
        "dataset": {"name": "tinytales"},
        "shards": {"num_shards": 4},
        "hyper": {"learning_rate": 0.001, "batch_size": 4, "rounds": 3, "model_shard_total": 2},
    }
    manifest = RunManifest.model_validate(data)
    envs = [manifest.node_env(i) for i in range(4)]
    assert [e["model_shard_index"] for e in envs] == ["0", "1", "0", "1"]
    assert all(load_settings(**e).layer_shard() == LayerShard(i % 2, 2) for i, e in enumerate(envs))
    data["shards"]["num_shards"] = 1
    with pytest.raises(ValidationError, match=r"2 layer shards .* need at least 2 nodes"):
        RunManifest.model_validate(data)
