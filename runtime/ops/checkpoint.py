"""Crash-safe checkpoints: safetensors parameters + a JSON manifest that vouches for them.

Why two files and this order: a checkpoint is ``ckpt-<round>.safetensors`` (the tensors) plus
``ckpt-<round>.json`` (run, round, model, digests). Each is written to a temp file in the same
directory, fsynced, ``os.replace``-d into place, and the directory is fsynced. The manifest is
written *last* and carries the sha256 and size of the tensor file, so a checkpoint exists only
once its manifest does, and the manifest is only believed when the tensor file still matches
it. A node killed at any instant therefore leaves either the new checkpoint complete or the
previous one as the latest; never a torn file that looks valid.

Why scan instead of a ``latest`` pointer: a pointer is a third file that can disagree with the
other two. Scanning manifests from the highest round down and taking the first that verifies
needs no extra state and is self-healing.

Why never pickle: checkpoints may be copied between machines (and a joiner may receive state
from peers); ``safetensors`` parses a length-checked header and raw buffers, nothing executes.

Why refuse paths outside the checkpoint directory: the path may come from configuration or a
command line; resolving symlinks and checking containment keeps a node from being pointed at
arbitrary files. Torn or mismatching files are logged and left in place, never silently
deleted: they are evidence of what happened. Retention deletes only complete, older
checkpoints of the same run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:  # checking a path or a manifest must not pay torch's start-up
    import torch

FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^ckpt-(\d{9})\.json$")
_TENSOR_RE = re.compile(r"^ckpt-(\d{9})-([0-9a-f]{16})\.safetensors$")
_HASH_CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 1 << 20

log = structlog.get_logger(__name__)

TensorSpec = Mapping[str, tuple[tuple[int, ...], "torch.dtype"]]


class CheckpointError(Exception):
    """Base of all checkpoint failures."""


class WrongRunError(CheckpointError):
    """The checkpoint belongs to another run."""


class WrongModelError(CheckpointError):
    """The checkpoint was made for another model."""


class CorruptCheckpointError(CheckpointError):
    """The files do not verify (bad manifest, hash mismatch, unparsable tensors)."""


class TruncatedCheckpointError(CorruptCheckpointError):
    """The tensor file is shorter (or longer) than its manifest says."""


class ShapeMismatchError(CheckpointError):
    """The tensors do not have the names, shapes or dtypes the model needs."""


class OutsideAllowedDirError(CheckpointError):
    """The path resolves outside the allowed checkpoint directory."""


@dataclass(frozen=True, slots=True)
class CheckpointMeta:
    run_id: str
    round: int
    model_name: str
    param_digest: str
    file_sha256: str
    file_size: int
    tensor_file: str
    created_unix: float
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": self.format_version,
                "run_id": self.run_id,
                "round": self.round,
                "model_name": self.model_name,
                "param_digest": self.param_digest,
                "file_sha256": self.file_sha256,
                "file_size": self.file_size,
                "tensor_file": self.tensor_file,
                "created_unix": self.created_unix,
                "extra": self.extra,
            },
            sort_keys=True,
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError("manifest is not an object")
            meta = cls(
                run_id=_typed(raw, "run_id", str),
                round=_typed(raw, "round", int),
                model_name=_typed(raw, "model_name", str),
                param_digest=_typed(raw, "param_digest", str),
                file_sha256=_typed(raw, "file_sha256", str),
                file_size=_typed(raw, "file_size", int),
                tensor_file=_typed(raw, "tensor_file", str),
                created_unix=float(_typed(raw, "created_unix", (int, float))),
                format_version=_typed(raw, "format_version", int),
                extra=_typed(raw, "extra", dict),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptCheckpointError(f"bad manifest: {exc}") from exc
        if meta.format_version != FORMAT_VERSION:
            raise CorruptCheckpointError(f"unsupported format version {meta.format_version}")
        if meta.tensor_file != _tensor_name(meta.round, meta.file_sha256):
            raise CorruptCheckpointError(f"manifest names unexpected file {meta.tensor_file!r}")
        return meta


def _typed(raw: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{key!r} has type {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """A complete checkpoint whose tensor file matched its manifest when found."""

    meta_path: Path
    tensor_path: Path
    meta: CheckpointMeta

    @property
    def round(self) -> int:
        return self.meta.round


def _tensor_name(round_: int, sha256: str) -> str:
    # The content hash in the name means re-saving a round never overwrites the file that
    # the current manifest vouches for: the old pair stays valid until the new manifest lands.
    return f"ckpt-{round_:09d}-{sha256[:16]}.safetensors"


def _meta_name(round_: int) -> str:
    return f"ckpt-{round_:09d}.json"


def param_digest(params: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) in name order: same values, same digest,
    whatever the device, file layout or dict order."""
    import torch

    h = hashlib.sha256()
    for name in sorted(params):
        t = params[name].detach().to("cpu").contiguous()
        header = json.dumps([name, str(t.dtype), list(t.shape)]).encode()
        h.update(len(header).to_bytes(8, "big"))
        h.update(header)
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets you open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _check_run_id(run_id: str) -> None:
    if not run_id or len(run_id) > 256 or not run_id.isprintable():
        raise ValueError("run_id must be 1-256 printable characters")


# Key in a checkpoint's ``extra``: the SHA-256 of the base model folder's config.json.
BASE_CONFIG_KEY = "base_config_sha256"


def base_config_sha256(model_name: str) -> str | None:
    """SHA-256 of a local ``save_pretrained`` folder's config.json, the base model's identity
    (a folder may move, or a path may come to hold another model); None for a built-in name
    or a hub id, which are identified by their name."""
    config = Path(model_name) / "config.json"
    try:
        return hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None
    except OSError:
        return None


def check_model(meta: CheckpointMeta, expected_model: str) -> None:
    """Refuse a checkpoint of another base model: by config hash where both sides have one,
    else by name."""
    want = base_config_sha256(expected_model)
    have = meta.extra.get(BASE_CONFIG_KEY)
    if want is not None and isinstance(have, str):
        if want != have:
            raise WrongModelError(
                f"checkpoint is for a different base model: {meta.model_name!r} (config sha256 "
                f"{have[:12]}), not {expected_model!r} ({want[:12]})"
            )
        return
    if meta.model_name != expected_model:
        raise WrongModelError(
            f"checkpoint is for model {meta.model_name!r}, not {expected_model!r}"
        )


def save_checkpoint(
    directory: str | Path,
    run_id: str,
    round: int,
    params: Mapping[str, torch.Tensor],
    model_name: str,
    extra: Mapping[str, Any] | None = None,
    *,
    keep: int | None = 3,
) -> Path:
    """Write checkpoint ``round`` atomically; return the tensor file's path.

    ``keep``: how many complete checkpoints of this run to retain (``None`` keeps all).
    ``extra`` must be JSON-serialisable (optimizer step, metrics, ...).
    """
    from safetensors.torch import save

    _check_run_id(run_id)
    if round < 0:
        raise ValueError("round must be >= 0")
    if keep is not None and keep < 1:
        raise ValueError("keep must be >= 1 or None")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    d = d.resolve()
    cpu = {n: t.detach().to("cpu").contiguous().clone() for n, t in params.items()}
    data = save(cpu, metadata={"run_id": run_id, "round": str(round)})
    sha = hashlib.sha256(data).hexdigest()
    tensor_path = d / _tensor_name(round, sha)
    meta_path = d / _meta_name(round)
    superseded: Path | None = None
    if meta_path.exists():
        with contextlib.suppress(CheckpointError):
            superseded = d / _read_meta(meta_path).tensor_file
    _atomic_write_bytes(tensor_path, data)
    meta = CheckpointMeta(
        run_id=run_id,
        round=round,
        model_name=model_name,
        param_digest=param_digest(cpu),
        file_sha256=sha,
        file_size=len(data),
        tensor_file=tensor_path.name,
        created_unix=time.time(),
        extra=json.loads(json.dumps(_with_base(extra, model_name))),
    )
    _atomic_write_bytes(meta_path, meta.to_json().encode())
    if superseded is not None and superseded != tensor_path:
        with contextlib.suppress(FileNotFoundError):
            superseded.unlink()
    log.info("checkpoint.saved", path=str(tensor_path), run_id=run_id, round=round)
    if keep is not None:
        _retain(d, run_id, keep, protect=round)
    return tensor_path


def _read_meta(meta_path: Path) -> CheckpointMeta:
    try:
        if meta_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise CorruptCheckpointError(f"{meta_path.name}: manifest too large")
        text = meta_path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptCheckpointError(f"{meta_path.name}: {exc}") from exc
    meta = CheckpointMeta.from_json(text)
    if meta_path.name != _meta_name(meta.round):
        raise CorruptCheckpointError(f"{meta_path.name}: manifest is for round {meta.round}")
    return meta


def _verify_file(meta: CheckpointMeta, tensor_path: Path) -> None:
    try:
        sha, size = _sha256_file(tensor_path)
    except OSError as exc:
        raise CorruptCheckpointError(f"{tensor_path.name}: {exc}") from exc
    if size != meta.file_size:
        raise TruncatedCheckpointError(
            f"{tensor_path.name}: {size} bytes on disk, manifest says {meta.file_size}"
        )
    if sha != meta.file_sha256:
        raise CorruptCheckpointError(f"{tensor_path.name}: sha256 does not match the manifest")


def _scan(directory: Path) -> list[tuple[int, Path]]:
    """Manifest candidates, highest round first; logs leftovers of interrupted writes."""
    if not directory.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for p in directory.iterdir():
        m = _NAME_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
        elif p.name.endswith(".tmp") and p.name.startswith(".ckpt-"):
            log.warning("checkpoint.stale_temp_file", path=str(p))
    found.sort(reverse=True)
    return found


def list_checkpoints(
    directory: str | Path, run_id: str | None = None, *, verify: bool = True
) -> list[CheckpointInfo]:
    """All complete checkpoints (of ``run_id`` if given), highest round first."""
    d = Path(directory).resolve()
    out: list[CheckpointInfo] = []
    for _, meta_path in _scan(d):
        info = _check_candidate(d, meta_path, run_id, verify)
        if info is not None:
            out.append(info)
    return out


def _check_candidate(
    d: Path, meta_path: Path, run_id: str | None, verify: bool
) -> CheckpointInfo | None:
    try:
        meta = _read_meta(meta_path)
        if run_id is not None and meta.run_id != run_id:
            return None
        tensor_path = d / meta.tensor_file
        if verify:
            _verify_file(meta, tensor_path)
    except CheckpointError as exc:
        log.warning("checkpoint.skipped", path=str(meta_path), reason=str(exc))
        return None
    return CheckpointInfo(meta_path=meta_path, tensor_path=tensor_path, meta=meta)


def latest_checkpoint(directory: str | Path, run_id: str | None = None) -> CheckpointInfo | None:
    """The highest-round checkpoint whose tensor file verifies against its manifest."""
    d = Path(directory).resolve()
    for _, meta_path in _scan(d):
        info = _check_candidate(d, meta_path, run_id, verify=True)
        if info is not None:
            return info
    return None


def _retain(d: Path, run_id: str, keep: int, protect: int) -> None:
    # ``protect``: the round just written is never the one retention removes, even when a
    # restarted run re-uses lower round numbers than what is already on disk.
    old = [i for i in list_checkpoints(d, run_id, verify=False) if i.round != protect]
    for info in old[keep - 1 :]:
        # Manifest first: if we die in between, an orphan tensor file is ignored, never trusted.
        for p in (info.meta_path, info.tensor_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        log.info("checkpoint.retention_removed", round=info.round, run_id=run_id)
    _fsync_dir(d)


def check_inside(path: Path, allowed_dir: Path) -> Path:
    """``path`` resolved (symlinks followed); refuses anything outside ``allowed_dir``."""
    resolved = path.resolve()
    root = allowed_dir.resolve()
    if not resolved.is_relative_to(root):
        raise OutsideAllowedDirError(f"{path} resolves to {resolved}, outside {root}")
    return resolved


def existing_inside(path: Path, allowed_dir: Path) -> Path:
    """``check_inside``, and the path must exist (what the CLI checks before loading torch)."""
    resolved = check_inside(path, allowed_dir)
    if not resolved.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    return resolved


def _with_base(extra: Mapping[str, Any] | None, model_name: str) -> dict[str, Any]:
    out = dict(extra or {})
    sha = base_config_sha256(model_name)
    if sha is not None:
        out[BASE_CONFIG_KEY] = sha
    return out


def load_checkpoint(
    path: str | Path | CheckpointInfo,
    *,
    allowed_dir: str | Path,
    expected_run_id: str | None = None,
    expected_model: str | None = None,
    spec: TensorSpec | None = None,
) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Load and fully verify a checkpoint (manifest or tensor path, or a ``CheckpointInfo``).

    Checks, in order: containment in ``allowed_dir``, manifest, run and model, file size and
    sha256, safetensors parse, parameter digest, and names/shapes/dtypes against ``spec``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    given = path.meta_path if isinstance(path, CheckpointInfo) else Path(path)
    allowed = Path(allowed_dir)
    resolved = check_inside(given, allowed)
    tm = _TENSOR_RE.match(resolved.name)
    meta_path = resolved.with_name(_meta_name(int(tm.group(1)))) if tm else resolved
    if not _NAME_RE.match(meta_path.name):
        raise CorruptCheckpointError(f"{given}: not a checkpoint file name")
    meta = _read_meta(meta_path)
    if expected_run_id is not None and meta.run_id != expected_run_id:
        raise WrongRunError(f"checkpoint is from run {meta.run_id!r}, not {expected_run_id!r}")
    if expected_model is not None:
        check_model(meta, expected_model)
    tensor_path = check_inside(meta_path.parent / meta.tensor_file, allowed)
    try:
        data = tensor_path.read_bytes()
    except OSError as exc:
        raise CorruptCheckpointError(f"{tensor_path.name}: {exc}") from exc
    if len(data) != meta.file_size:
        raise TruncatedCheckpointError(
            f"{tensor_path.name}: {len(data)} bytes on disk, manifest says {meta.file_size}"
        )
    if hashlib.sha256(data).hexdigest() != meta.file_sha256:
        raise CorruptCheckpointError(f"{tensor_path.name}: sha256 does not match the manifest")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CorruptCheckpointError(f"{tensor_path.name}: {exc}") from exc
    if param_digest(tensors) != meta.param_digest:
        raise CorruptCheckpointError(f"{tensor_path.name}: parameter digest mismatch")
    if spec is not None:
        _check_spec(tensors, spec)
    return tensors, meta


def _check_spec(tensors: Mapping[str, torch.Tensor], spec: TensorSpec) -> None:
    if tensors.keys() != spec.keys():
        missing = sorted(spec.keys() - tensors.keys())[:3]
        extra = sorted(tensors.keys() - spec.keys())[:3]
        raise ShapeMismatchError(f"parameter names differ: missing {missing}, extra {extra}")
    for name, (shape, dtype) in spec.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise ShapeMismatchError(
                f"{name}: {tuple(t.shape)}/{t.dtype} on disk, model needs {tuple(shape)}/{dtype}"
            )


# -- node-private learner state ----------------------------------------------------------

NODE_STATE_FILE = "node-state.safetensors"


def save_node_state(
    directory: str | Path, run_id: str, round: int, state: Mapping[str, torch.Tensor]
) -> Path | None:
    """Write the node's private learner state beside its checkpoint of ``round``.

    Why a separate file: a checkpoint's tensors are the model (peers, ``evaluate`` and
    ``reconstruct`` read them as such); what only this node needs to resume exactly (the
    error-feedback residual of its compressor, DiLoCo's outer momentum) is not the model.
    One file, replaced atomically at every checkpoint, tagged with run and round: it is used
    only with the checkpoint of the same round. Nothing to write -> nothing written (None).
    """
    from safetensors.torch import save

    _check_run_id(run_id)
    if not state:
        return None
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    cpu = {n: t.detach().to("cpu").contiguous().clone() for n, t in state.items()}
    path = d / NODE_STATE_FILE
    _atomic_write_bytes(path, save(cpu, metadata={"run_id": run_id, "round": str(round)}))
    return path


def load_node_state(directory: str | Path, run_id: str, round: int) -> dict[str, torch.Tensor]:
    """The node state saved with checkpoint ``round`` of ``run_id``, or {} when there is none
    for exactly that checkpoint; ``CorruptCheckpointError`` when the file does not parse."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load

    path = Path(directory).resolve() / NODE_STATE_FILE
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("run_id") != run_id or meta.get("round") != str(round):
            log.warning("node_state.stale", path=str(path), round=meta.get("round"), want=round)
            return {}
        return dict(load(path.read_bytes()))
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise CorruptCheckpointError(f"{path.name}: {exc}") from exc
