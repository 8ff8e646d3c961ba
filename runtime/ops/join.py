"""Turn (manifest, node index) into a participant's ``.env`` and the command to start.

Why a ``.env`` and not a long command line: the same file works for ``swarm-tune node
--env-file``, for ``set -a; . ./.env`` in a shell and for ``docker run --env-file``. Those
three read quotes differently (docker keeps them literally), so we only write values made
of shell-inert characters and refuse anything else instead of guessing a quoting that one
of them would misread.

Why refuse to overwrite: a participant's ``.env`` may carry hand edits (a different port,
a key file); silently replacing it would lose them. Rewriting identical content is a
no-op, so re-running ``join`` is safe.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from swarm_tune.runtime.ops.atomic_io import atomic_write_text
from swarm_tune.runtime.ops.manifest import RunManifest
from swarm_tune.runtime.ops.settings import NodeSettings, env_name, load_settings

__all__ = ["JoinError", "JoinPlan", "plan_join", "start_commands", "write_env_file"]

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_./:,=+@%-]*$")
DEFAULT_IMAGE = "swarm-tune:latest"
CONTAINER_WORKDIR = "/swarm"


class JoinError(Exception):
    """``join`` cannot proceed; the message says why and what to do."""


@dataclass(frozen=True)
class JoinPlan:
    """Everything ``join`` will write, already validated as a node would load it."""

    env: dict[str, str]
    text: str
    settings: NodeSettings


def plan_join(
    manifest: RunManifest,
    manifest_path: Path,
    node_index: int,
    *,
    device: str = "cpu",
    listen_port: int = 4001,
    metrics_port: int = 9100,
) -> JoinPlan:
    """Build and validate the ``.env`` content for one participant."""
    try:
        env = manifest.node_env(
            node_index, device=device, listen_port=listen_port, metrics_port=metrics_port
        )
    except ValueError as exc:
        raise JoinError(str(exc)) from None
    for field, value in env.items():
        if not _SAFE_VALUE.match(value):
            raise JoinError(
                f"{env_name(field)}: value {value!r} has characters (spaces, quotes, ...) that "
                "shells and docker --env-file read differently; change it in the manifest"
            )
    settings = load_settings(**env)  # SettingsError names the bad field
    who = manifest.participant(node_index)
    header = [
        f"# swarm-tune join: run {manifest.run_id}, node {node_index}"
        + (f", team {who.team}" if who.team else ""),
        f"# from {manifest_path.as_posix()}; re-run `swarm-tune join` to regenerate.",
        "# Hand edits are kept unless you pass --force.",
    ]
    body = [f"{env_name(field)}={value}" for field, value in env.items()]
    return JoinPlan(env=env, text="\n".join(header + body) + "\n", settings=settings)


def write_env_file(path: Path, text: str, *, force: bool = False) -> Literal["written", "same"]:
    """Write ``text`` to ``path`` atomically (mode 0600); never clobber a different file."""
    if path.exists():
        if not path.is_file():
            raise JoinError(f"{path} exists and is not a file")
        if path.read_text(encoding="utf-8") == text:
            return "same"
        if not force:
            raise JoinError(
                f"{path} already exists with different content; "
                "pass --force to overwrite it or --out to write elsewhere"
            )
    if not path.parent.is_dir():
        raise JoinError(f"folder {path.parent} does not exist")
    atomic_write_text(path, text, mode=0o600)
    return "written"


def start_commands(env_path: Path, env: dict[str, str], image: str = DEFAULT_IMAGE) -> list[str]:
    """``[native command, shell-sourcing variant, docker command]`` for this ``.env``."""
    quoted = shlex.quote(env_path.as_posix())
    sourced = env_path.as_posix() if "/" in env_path.as_posix() else f"./{env_path.as_posix()}"
    docker = ["docker run --rm --name", shlex.quote(env.get("node_id", "swarm-node"))]
    docker += ["--env-file", quoted]
    if env.get("device", "cpu").startswith("cuda"):
        docker.append("--gpus all")
    for key in ("listen_port", "metrics_port"):
        port = env.get(key, "0")
        if port != "0":
            docker.append(f"-p {port}:{port}")
    docker.append(f'-v "$PWD/checkpoints:{CONTAINER_WORKDIR}/checkpoints"')
    dataset = env.get("dataset", "")
    if dataset.startswith(("./", "data/")) or dataset.endswith("/") or dataset.endswith(".txt"):
        # A relative local corpus must be visible inside the container at the same path.
        top = dataset.removeprefix("./").split("/")[0]
        if top and top != "..":
            docker.append(f'-v "$PWD/{top}:{CONTAINER_WORKDIR}/{top}:ro"')
    docker += [shlex.quote(image), "node"]
    return [
        f"swarm-tune node --env-file {quoted}",
        f"set -a; . {shlex.quote(sourced)}; set +a; swarm-tune node",
        " ".join(docker),
    ]
