"""Turn node checkpoints into one ordinary Hugging Face model folder.

Why merge *and* average: a node's checkpoint holds the parameters it trains, which is the
whole model in data-parallel runs and a subset when nodes hold shards of it. For every
parameter name we take the checkpoints that hold it and combine them:

* ``average`` - the element-wise mean over all of them (accumulated in float64, cast back
  once), which is what the swarm's own ``params`` rounds do and what undoes replica drift;
* ``latest`` - the mean over only those at the highest round that holds the name (in a
  synchronous run those are identical, so this is "the newest copy").

The union of names must cover the model exactly, otherwise the result would silently keep
random initial weights; that is a :class:`ShapeMismatchError`.

Why refuse mixed runs and models up front: averaging weights of two different runs (or of a
GPT-2 and a Llama that happen to share a parameter name) produces a model that loads and is
garbage. Every input is verified (manifest, size, sha256, digest) and checked against the
first one's run id and the requested model before a single tensor is combined.

Why write to a temporary sibling folder and rename: the output must either not exist or be
complete. An existing non-empty output folder is refused rather than overwritten, so a typo
on the command line never destroys a previous reconstruction.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from swarm_tune.runtime.eval.evaluate import (
    ModelSource,
    is_hf_folder,
    load_model_source,
    model_from_checkpoint,
)
from swarm_tune.runtime.ops.checkpoint import (
    CheckpointError,
    ShapeMismatchError,
    WrongRunError,
    param_digest,
)
from swarm_tune.runtime.ops.provenance import code_version
from swarm_tune.runtime.training.corpus import TOKENIZER_PATH
from swarm_tune.runtime.training.layer_shard import SHARD_KEY, LayerShard, LayerShardError
from swarm_tune.runtime.training.lora import LORA_KEY

__all__ = [
    "PROVENANCE_FILE",
    "MergeMode",
    "OutputExistsError",
    "ReconstructResult",
    "merge_tensors",
    "reconstruct",
]

MergeMode = Literal["average", "latest"]
PROVENANCE_FILE = "swarm_tune.json"
_EOS = "<|endoftext|>"


class OutputExistsError(CheckpointError):
    """The output folder exists and is not empty; nothing was written."""


@dataclass(frozen=True, slots=True)
class ReconstructResult:
    out_dir: Path
    run_id: str
    model: str
    mode: MergeMode
    rounds: list[int]
    param_digest: str
    provenance: dict[str, Any]


def merge_tensors(
    parts: Sequence[tuple[int, dict[str, torch.Tensor]]], mode: MergeMode
) -> dict[str, torch.Tensor]:
    """Combine ``(round, tensors)`` parts per parameter name (see the module docstring)."""
    if not parts:
        raise ValueError("nothing to merge")
    if mode not in ("average", "latest"):
        raise ValueError(f"unknown mode {mode!r} (average, latest)")
    names = sorted({n for _, tensors in parts for n in tensors})
    out: dict[str, torch.Tensor] = {}
    for name in names:
        holders = [(r, t[name]) for r, t in parts if name in t]
        if mode == "latest":
            top = max(r for r, _ in holders)
            holders = [(r, t) for r, t in holders if r == top]
        first = holders[0][1]
        for _, t in holders[1:]:
            if t.shape != first.shape or t.dtype != first.dtype:
                raise ShapeMismatchError(
                    f"{name}: checkpoints disagree on shape/dtype "
                    f"({tuple(first.shape)}/{first.dtype} vs {tuple(t.shape)}/{t.dtype})"
                )
        if len(holders) == 1:
            out[name] = first.clone()
            continue
        acc = torch.zeros(first.shape, dtype=torch.float64)
        for _, t in holders:
            acc += t.to(torch.float64)
        out[name] = (acc / len(holders)).to(first.dtype)
    return out


def _contributor(src: ModelSource) -> str:
    assert src.meta is not None
    node = src.meta.extra.get("node_id")
    return str(node) if isinstance(node, str) and node else src.path.parent.name


def _load_all(
    paths: Sequence[Path],
    model: str,
    allowed_dir: Path,
    run_id: str | None,
    loaded: Callable[[int, Path], None],
) -> list[ModelSource]:
    sources: list[ModelSource] = []
    first_run = run_id
    for i, p in enumerate(paths):
        src = load_model_source(
            p, allowed_dir=allowed_dir, expected_run_id=run_id, expected_model=model
        )
        if src.meta is None:
            raise CheckpointError(f"{p}: is a saved model folder, not a node checkpoint")
        if first_run is None:
            first_run = src.meta.run_id  # the first checkpoint fixes the run for the others
        elif src.meta.run_id != first_run:
            raise WrongRunError(
                f"{p}: checkpoint is from run {src.meta.run_id!r}, not {first_run!r}"
            )
        sources.append(src)
        loaded(i + 1, p)
    if len({s.tensor_path for s in sources}) != len(sources):
        raise CheckpointError("the same checkpoint was given twice")
    return sources


def _check_layer_shards(sources: Sequence[ModelSource]) -> int:
    """Layer-shard checkpoints hold one slice each: every slice must be there, once a run's."""
    try:
        shards = [
            LayerShard.from_record(s.meta.extra[SHARD_KEY])
            for s in sources
            if s.meta is not None and SHARD_KEY in s.meta.extra
        ]
    except LayerShardError as exc:
        raise CheckpointError(str(exc)) from None
    if not shards:
        return 1
    totals = {sh.total for sh in shards}
    if len(shards) != len(sources) or len(totals) != 1:
        raise CheckpointError("checkpoints mix layer-shard counts (model_shard_total)")
    total = totals.pop()
    missing = sorted(set(range(total)) - {sh.index for sh in shards})
    if missing:
        raise CheckpointError(
            f"layer shards {missing} of {total} are missing: give a checkpoint of every shard"
        )
    return total


def _save_tokenizer(model: str, tok_source: str | None, out: Path) -> str | None:
    """Tokenizer files next to the weights, so the folder is usable on its own."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok: Any
    if tok_source is None:
        fast: Any = PreTrainedTokenizerFast  # untyped upstream
        tok = fast(
            tokenizer_file=str(TOKENIZER_PATH), eos_token=_EOS, bos_token=_EOS, unk_token=_EOS
        )
        label = "tinytales (shipped byte-level BPE)"
    else:
        auto: Any = AutoTokenizer
        tok = auto.from_pretrained(tok_source)
        label = tok_source
    tok.save_pretrained(str(out))
    return label


def reconstruct(
    checkpoints: Sequence[Path],
    *,
    model: str,
    out_dir: Path,
    allowed_dir: Path,
    mode: MergeMode = "average",
    run_id: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> ReconstructResult:
    """Merge node checkpoints into ``out_dir`` (``save_pretrained`` + tokenizer + a
    ``swarm_tune.json`` provenance record). Raises :class:`CheckpointError` subclasses.

    ``progress(done, total, note)`` counts steps: each checkpoint verified, then merge, build
    and save."""
    if not checkpoints:
        raise CheckpointError("give at least one checkpoint or checkpoint folder")
    out = out_dir.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out_dir} exists and is not empty; choose another --out")
    steps = len(checkpoints) + 3
    tick = progress if progress is not None else (lambda done, total, note: None)
    sources = _load_all(
        checkpoints, model, allowed_dir, run_id, lambda i, p: tick(i, steps, f"verified {p}")
    )
    for src in sources:
        assert src.tensors is not None
    layer_shards = _check_layer_shards(sources)
    parts = [(s.meta.round, s.tensors) for s in sources if s.meta and s.tensors is not None]
    merged = merge_tensors(parts, mode)
    tick(len(checkpoints) + 1, steps, f"{mode} of {len(parts)}")
    first = sources[0].meta
    assert first is not None
    lora_record = first.extra.get(LORA_KEY)
    # Adapters only (lora_record): their average is folded into the base.
    net, _, tok_source = model_from_checkpoint(model, merged, first.extra)
    tick(len(checkpoints) + 2, steps, "model built")
    provenance: dict[str, Any] = {
        "format": "swarm-tune/reconstruct/1",
        "run_id": first.run_id,
        "model": model,
        "mode": mode,
        "rounds": sorted({s.meta.round for s in sources if s.meta}),
        "contributors": sorted({_contributor(s) for s in sources}),
        "datasets": sorted(
            {str(s.meta.extra["dataset"]) for s in sources if s.meta and "dataset" in s.meta.extra}
        ),
        "param_digest": param_digest(merged),
        "lora": lora_record,
        "layer_shards": layer_shards,
        "inputs": [
            {
                "checkpoint": s.tensor_path.name,
                "round": s.meta.round if s.meta else None,
                "sha256": s.sha256,
                "param_digest": s.meta.param_digest if s.meta else None,
            }
            for s in sources
        ],
        "code_version": code_version(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        saver: Any = net
        saver.save_pretrained(str(tmp), safe_serialization=True)
        provenance["tokenizer"] = _save_tokenizer(model, tok_source, tmp)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1, sort_keys=True))
        if out.exists():
            out.rmdir()  # empty (checked above); replace() needs it gone for a directory
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise
    assert is_hf_folder(out)
    tick(steps, steps, f"saved {out}")
    return ReconstructResult(
        out_dir=out,
        run_id=first.run_id,
        model=model,
        mode=mode,
        rounds=provenance["rounds"],
        param_digest=provenance["param_digest"],
        provenance=provenance,
    )
