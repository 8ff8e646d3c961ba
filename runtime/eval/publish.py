"""Publish a reconstructed model folder to the Hugging Face Hub, with a model card.

Why stage first, always: what gets uploaded is assembled into one staging folder (the model
files plus a generated ``README.md``), and the upload sends exactly that folder. ``--dry-run``
stops after staging and writes ``upload-manifest.json`` next to it (target repo, every file
with size and SHA-256), so "what would be uploaded" is not a description of the upload but
the upload's own input. The source folder is never modified.

Why the card is generated from ``swarm_tune.json``: a model trained by strangers is only
usable if its origin is stated: run id, rounds, contributing nodes, data, the parameter
digest (which anyone can recompute from the weights) and the code version. ``reconstruct``
writes that record; the card renders it and states what is unknown instead of inventing it.

Why fail before any network call without a token: an anonymous upload can never succeed, and
a clear "no token" sentence beats an HTTP 401 after a long hashing step. The token comes from
``--token``, ``HF_TOKEN`` / ``SWARM_HF_TOKEN``, or huggingface_hub's own login cache, and is
never written to disk or echoed.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm_tune.runtime.eval.evaluate import is_hf_folder
from swarm_tune.runtime.eval.reconstruct import PROVENANCE_FILE
from swarm_tune.runtime.ops.atomic_io import atomic_write_text
from swarm_tune.runtime.ops.provenance import code_version, sha256_file

__all__ = [
    "PublishError",
    "StagedUpload",
    "model_card",
    "publish",
    "stage_upload",
]

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
UPLOAD_DIR = "upload"
UPLOAD_MANIFEST = "upload-manifest.json"
_MAX_FILES = 10_000


class PublishError(ValueError):
    """The folder, repo id or credentials are unusable; nothing was uploaded."""


@dataclass(frozen=True, slots=True)
class StagedUpload:
    repo_id: str
    folder: Path  # exactly what is uploaded
    manifest_path: Path
    files: list[dict[str, Any]]


def check_repo_id(repo_id: str) -> str:
    if not _REPO_ID_RE.match(repo_id) or ".." in repo_id or repo_id.endswith((".", "-")):
        raise PublishError(f"--repo-id must look like ORG/NAME (got {repo_id!r})")
    return repo_id


def _provenance(model_dir: Path) -> dict[str, Any]:
    path = model_dir / PROVENANCE_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PublishError(f"{path}: unreadable provenance record: {exc}") from exc
    if not isinstance(raw, dict):
        raise PublishError(f"{path}: provenance record is not a JSON object")
    return raw


def _fmt(value: Any) -> str:
    if value is None or value == [] or value == "":
        return "unknown"
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def model_card(repo_id: str, prov: dict[str, Any], data: str | None) -> str:
    """The README.md uploaded with the model (YAML front matter + provenance)."""
    cv = prov.get("code_version") or code_version()
    datasets = [data] if data else list(prov.get("datasets") or [])
    rounds = prov.get("rounds") or []
    name = repo_id.split("/", 1)[1]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags:",
        "- swarm-tune",
        "- decentralized-training",
        "---",
        "",
        f"# {name}",
        "",
        "Fine-tuned by a Swarm-Tune swarm: nodes trained on their own data shards and averaged",
        "their updates peer to peer over libp2p, with no central server.",
        "",
        "| | |",
        "|---|---|",
        f"| run id | {_fmt(prov.get('run_id'))} |",
        f"| base model | {_fmt(prov.get('model'))} |",
        f"| rounds | {_fmt(rounds)} (last: {_fmt(max(rounds) if rounds else None)}) |",
        f"| merge mode | {_fmt(prov.get('mode'))} |",
        f"| contributors | {_fmt(prov.get('contributors'))} |",
        f"| data | {_fmt(datasets)} |",
        f"| parameter digest (sha256) | {_fmt(prov.get('param_digest'))} |",
        f"| tokenizer | {_fmt(prov.get('tokenizer'))} |",
        f"| swarm-tune version | {_fmt(cv.get('swarm_tune'))} |",
        f"| git commit | {_fmt(cv.get('git_commit'))} |",
        "",
        "The parameter digest is `swarm_tune.runtime.ops.checkpoint.param_digest` over the",
        "trainable parameters; recompute it from the weights to check this upload.",
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        "```",
        "",
    ]
    inputs = prov.get("inputs") or []
    if inputs:
        lines += ["## Source checkpoints", "", "| file | round | sha256 |", "|---|---|---|"]
        lines += [
            f"| `{i.get('checkpoint')}` | {i.get('round')} | `{i.get('sha256')}` |" for i in inputs
        ]
        lines.append("")
    return "\n".join(lines)


def stage_upload(
    model_dir: Path, repo_id: str, staging_dir: Path, *, data: str | None = None
) -> StagedUpload:
    """Build ``staging_dir/upload`` (model files + README.md) and ``upload-manifest.json``."""
    check_repo_id(repo_id)
    src = model_dir.resolve()
    if not is_hf_folder(src):
        raise PublishError(f"{model_dir}: not a saved model folder (no config.json)")
    if not any(src.glob("*.safetensors")):
        raise PublishError(f"{model_dir}: no *.safetensors weights")
    staging = staging_dir.resolve()
    if staging == src or staging.is_relative_to(src) or src.is_relative_to(staging):
        raise PublishError("the staging folder must not overlap the model folder")
    if staging.exists() and any(staging.iterdir()):
        raise PublishError(f"{staging_dir} exists and is not empty; choose another staging dir")
    prov = _provenance(src)
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    if len(files) > _MAX_FILES:
        raise PublishError(f"{model_dir}: more than {_MAX_FILES} files")
    upload = staging / UPLOAD_DIR
    upload.mkdir(parents=True)
    for f in files:
        rel = f.relative_to(src)
        if rel.parts[0].startswith("."):
            continue  # editor/VCS leftovers are not part of a model
        (upload / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, upload / rel)
    (upload / "README.md").write_text(model_card(repo_id, prov, data), encoding="utf-8")
    listing = [
        {
            "path": p.relative_to(upload).as_posix(),
            "size": p.stat().st_size,
            "sha256": sha256_file(p),
        }
        for p in sorted(upload.rglob("*"))
        if p.is_file()
    ]
    manifest = {
        "format": "swarm-tune/publish/1",
        "repo_id": repo_id,
        "repo_type": "model",
        "folder": str(upload),
        "files": listing,
    }
    manifest_path = staging / UPLOAD_MANIFEST
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return StagedUpload(repo_id, upload, manifest_path, listing)


def resolve_token(token: str | None) -> str:
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise PublishError(
            "no Hugging Face token: pass --token, set HF_TOKEN, or run `hf auth login`"
        )
    return found


def publish(staged: StagedUpload, *, token: str | None, private: bool = False) -> str:
    """Create the repo if needed and upload the staged folder; returns the commit URL."""
    key = resolve_token(token)  # before any network call
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=key)
    try:
        api.create_repo(staged.repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=staged.repo_id,
            repo_type="model",
            folder_path=str(staged.folder),
            commit_message="Upload model trained with swarm-tune",
        )
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise PublishError(f"upload to {staged.repo_id} failed: {exc}") from exc
    return str(info)
