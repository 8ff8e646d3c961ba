"""Checkpoints on a real file system, including writers SIGKILLed mid-write."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from swarm_tune.runtime.ops.checkpoint import (
    CorruptCheckpointError,
    OutsideAllowedDirError,
    ShapeMismatchError,
    TruncatedCheckpointError,
    WrongModelError,
    WrongRunError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    param_digest,
    save_checkpoint,
)


def _params(r: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(r)
    return {
        "layer.weight": torch.randn(64, 32, generator=g),
        "layer.bias": torch.full((32,), float(r)),
        "emb": torch.randn(10, 8, generator=g).to(torch.bfloat16),
    }


def _spec(p: dict[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {n: (tuple(t.shape), t.dtype) for n, t in p.items()}


def test_round_trip_and_latest(tmp_path: Path) -> None:
    for r in (1, 5, 3):
        save_checkpoint(tmp_path, "run-a", r, _params(r), "tiny-gpt2", {"step": r * 10}, keep=None)
    info = latest_checkpoint(tmp_path)
    assert info is not None and info.round == 5
    tensors, meta = load_checkpoint(
        info,
        allowed_dir=tmp_path,
        expected_run_id="run-a",
        expected_model="tiny-gpt2",
        spec=_spec(_params(5)),
    )
    assert param_digest(tensors) == param_digest(_params(5)) == meta.param_digest
    assert meta.extra == {"step": 50} and meta.round == 5
    for n, t in _params(5).items():
        assert torch.equal(tensors[n], t)
    # Either file of the pair loads the same checkpoint.
    t2, _ = load_checkpoint(info.tensor_path, allowed_dir=tmp_path)
    assert param_digest(t2) == meta.param_digest
    assert [i.round for i in list_checkpoints(tmp_path)] == [5, 3, 1]


def test_latest_filters_by_run(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "x", "run-a", 4, _params(4), "m")
    save_checkpoint(tmp_path / "x", "run-b", 2, _params(2), "m")
    a = latest_checkpoint(tmp_path / "x", "run-a")
    b = latest_checkpoint(tmp_path / "x", "run-b")
    assert a is not None and a.round == 4 and b is not None and b.round == 2
    assert latest_checkpoint(tmp_path / "x", "run-c") is None
    assert latest_checkpoint(tmp_path / "missing") is None


def test_wrong_run_and_wrong_model(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, "run-a", 1, _params(1), "tiny-gpt2")
    with pytest.raises(WrongRunError):
        load_checkpoint(path, allowed_dir=tmp_path, expected_run_id="run-b")
    with pytest.raises(WrongModelError):
        load_checkpoint(path, allowed_dir=tmp_path, expected_model="tiny-llama")


def test_shape_mismatch(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, "r", 1, _params(1), "m")
    spec = _spec(_params(1))
    spec["layer.weight"] = ((32, 64), torch.float32)
    with pytest.raises(ShapeMismatchError):
        load_checkpoint(path, allowed_dir=tmp_path, spec=spec)
    spec = _spec(_params(1))
    spec["extra.param"] = ((1,), torch.float32)
    with pytest.raises(ShapeMismatchError, match="names differ"):
        load_checkpoint(path, allowed_dir=tmp_path, spec=spec)


def test_truncated_and_corrupted_files_are_detected_and_skipped(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "r", 1, _params(1), "m")
    p2 = save_checkpoint(tmp_path, "r", 2, _params(2), "m")
    data = p2.read_bytes()
    p2.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedCheckpointError):
        load_checkpoint(p2, allowed_dir=tmp_path)
    info = latest_checkpoint(tmp_path)
    assert info is not None and info.round == 1  # falls back, and...
    assert p2.exists()  # ...the torn file is left as evidence, not deleted
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    p2.write_bytes(bytes(flipped))
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(p2, allowed_dir=tmp_path)
    # A manifest that is not JSON, or lies about its contents.
    meta = tmp_path / "ckpt-000000002.json"
    meta.write_text("{not json", "utf-8")
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(meta, allowed_dir=tmp_path)
    raw = json.loads((tmp_path / "ckpt-000000001.json").read_text("utf-8"))
    raw["tensor_file"] = "../../etc/passwd"
    meta.write_text(json.dumps(raw), "utf-8")
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(meta, allowed_dir=tmp_path)
    info = latest_checkpoint(tmp_path)
    assert info is not None and info.round == 1


def test_paths_outside_the_allowed_dir_are_refused(tmp_path: Path) -> None:
    allowed = tmp_path / "ckpts"
    other = tmp_path / "elsewhere"
    p = save_checkpoint(other, "r", 1, _params(1), "m")
    with pytest.raises(OutsideAllowedDirError):
        load_checkpoint(p, allowed_dir=allowed)
    with pytest.raises(OutsideAllowedDirError):
        load_checkpoint(allowed / ".." / "elsewhere" / p.name, allowed_dir=allowed)
    allowed.mkdir()
    (allowed / "ckpt-000000001.json").symlink_to(other / "ckpt-000000001.json")
    with pytest.raises(OutsideAllowedDirError):
        load_checkpoint(allowed / "ckpt-000000001.json", allowed_dir=allowed)


def test_retention_never_removes_the_checkpoint_just_written(tmp_path: Path) -> None:
    for r in (8, 9):
        save_checkpoint(tmp_path, "r", r, _params(r), "m", keep=2)
    save_checkpoint(tmp_path, "r", 0, _params(0), "m", keep=2)  # a restart re-using rounds
    assert [i.round for i in list_checkpoints(tmp_path)] == [9, 0]


def test_retention_keeps_last_k_and_resave_is_safe(tmp_path: Path) -> None:
    for r in range(6):
        save_checkpoint(tmp_path, "r", r, _params(r), "m", keep=3)
    assert [i.round for i in list_checkpoints(tmp_path)] == [5, 4, 3]
    assert len(list(tmp_path.glob("*.safetensors"))) == 3
    # Re-saving a round replaces it; the superseded tensor file goes with it.
    save_checkpoint(tmp_path, "r", 5, _params(50), "m", keep=3)
    tensors, _ = load_checkpoint(tmp_path / "ckpt-000000005.json", allowed_dir=tmp_path)
    assert torch.equal(tensors["layer.bias"], _params(50)["layer.bias"])
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_loading_never_unpickles(tmp_path: Path) -> None:
    """A pickle payload in place of the tensor file is rejected, never executed."""
    p = save_checkpoint(tmp_path, "r", 1, _params(1), "m")
    marker = tmp_path / "pwned"
    torch.save({"x": torch.zeros(1)}, p)  # a torch (pickle) file where safetensors should be
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(p, allowed_dir=tmp_path)
    assert not marker.exists()


# ------------------------------------------------------------------ kill during write
KILL_ITERATIONS = 20


def _writer(directory: str, ready: Any) -> None:
    """Resume from the latest checkpoint and keep writing the next rounds forever; ``ready``
    once the first of them is complete (so every life makes progress, however busy the box:
    the kill that follows is timed from there, not from the start of a slow process)."""
    info = latest_checkpoint(directory, "kill-run")
    r = 0 if info is None else info.round + 1
    while True:
        save_checkpoint(directory, "kill-run", r, _big_params(r), "m", {"r": r}, keep=2)
        ready.set()
        r += 1


def _big_params(r: int) -> dict[str, torch.Tensor]:
    # ~1.5 MB so that a write takes long enough for kills to land inside it.
    return {"w": torch.full((384, 1024), float(r)), "b": torch.arange(1000) + r}


def _torn_leftovers(directory: Path) -> list[Path]:
    """Temp files and tensor files no manifest vouches for: traces of an interrupted save."""
    vouched = {json.loads(m.read_text("utf-8"))["tensor_file"] for m in directory.glob("*.json")}
    tmp = list(directory.glob(".ckpt-*.tmp"))
    return tmp + [p for p in directory.glob("*.safetensors") if p.name not in vouched]


def test_sigkill_during_writes_never_leaves_a_corrupt_latest(tmp_path: Path) -> None:
    # forkserver: children fork from a clean process with torch preloaded, so each writer
    # starts in milliseconds instead of re-importing torch, and no thread state is inherited.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "swarm_tune.runtime.ops.checkpoint"])
    rng = random.Random(1234)
    rounds_seen: list[int] = []
    interrupted = 0  # kills that visibly landed inside save_checkpoint
    # Extra kills (below) stop after this long: on a box whose disk is shared and busy one
    # save took ~6 s, and the test must not turn that into a failure.
    extra_until = time.monotonic() + 60
    iterations = 0
    # At least KILL_ITERATIONS kills; more (bounded) until some visibly landed inside a save,
    # so a lucky schedule cannot make the test vacuous.
    while iterations < KILL_ITERATIONS or (
        interrupted < 3 and iterations < 3 * KILL_ITERATIONS and time.monotonic() < extra_until
    ):
        iterations += 1
        ready = ctx.Event()
        proc = ctx.Process(target=_writer, args=(str(tmp_path), ready), daemon=True)
        proc.start()
        assert ready.wait(120)
        # One save of this size takes tens of ms here: most kills land inside the next one.
        time.sleep(rng.uniform(0.0, 0.15))
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)
        assert proc.exitcode == -signal.SIGKILL  # it really died mid-loop, not cleanly
        if _torn_leftovers(tmp_path):
            interrupted += 1
            for p in _torn_leftovers(tmp_path):
                p.unlink()  # so the next iteration's evidence is its own
        info = latest_checkpoint(tmp_path, "kill-run")
        if info is None:
            continue  # killed before the very first checkpoint completed
        tensors, meta = load_checkpoint(info, allowed_dir=tmp_path, expected_run_id="kill-run")
        assert meta.extra == {"r": meta.round}
        assert torch.equal(tensors["w"], _big_params(meta.round)["w"])
        assert torch.equal(tensors["b"], _big_params(meta.round)["b"])
        rounds_seen.append(meta.round)
    print(f"kills inside a write: {interrupted}/{iterations}, last round {rounds_seen[-1]}")
    assert interrupted >= 1  # the test did exercise torn writes
    assert rounds_seen == sorted(rounds_seen)  # progress is never lost
    assert rounds_seen and rounds_seen[-1] >= iterations - 1  # every life saved a round
