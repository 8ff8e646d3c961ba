"""Run manifests: the one file an organiser publishes and every participant joins from.

Why a manifest at all: in a swarm without a coordinator, everything that must be *equal*
across nodes (model, data split, shard count, hyper-parameters, bootstrap peers, run id)
has to come from somewhere both reproducible and reviewable. A JSON file in ``runs/``,
validated by this schema, is that place; ``swarm-tune join`` turns it plus a node index
into one node's ``.env``. Only the per-node choices (device, ports) live outside it.

Competitions: ``competition.teams`` maps a team name to node indices. Each team trains as
its own swarm (run id ``<run_id>-<team>``, so teams never exchange updates) over the same
shards, and ``competition.eval_dataset`` is the common held-out set that ranks them.

Rules that a node would enforce anyway (quorum vs min_peers, model name shape, ...) are
checked by building every participant's :class:`NodeSettings`, so a manifest that
validates produces ``.env`` files that load.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from swarm_tune.runtime.ops.addresses import validate_multiaddr
from swarm_tune.runtime.ops.atomic_io import atomic_write_text
from swarm_tune.runtime.ops.protocol_fields import (
    config_from,
    protocol_env,
    pydantic_fields,
    pydantic_validators,
)
from swarm_tune.runtime.ops.settings import (
    OverrideValue,
    SettingsError,
    format_overrides,
    load_settings,
)
from swarm_tune.runtime.protocol.config import ProtocolConfig
from swarm_tune.runtime.training.lora import LoraSettings

__all__ = [
    "Competition",
    "DatasetSpec",
    "HyperParams",
    "ManifestError",
    "ModelSpec",
    "Participant",
    "RunManifest",
    "dump_manifest",
    "find_manifest",
    "load_manifest",
    "load_manifests",
    "set_bootstrap_peers",
]

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_TEAM_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


class ManifestError(Exception):
    """A manifest could not be read or is invalid; one line per problem."""

    def __init__(self, path: Path | str | None, problems: list[str]) -> None:
        self.path = Path(path) if path is not None else None
        self.problems = problems
        prefix = f"{self.path}: " if self.path is not None else ""
        super().__init__("\n".join(f"{prefix}{p}" for p in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    name: str = Field(min_length=1, description="HF repo id, local dir, or built-in name.")
    config_overrides: dict[str, OverrideValue] = Field(default_factory=dict)
    # Every replica must adapt the same modules with the same rank, or nothing averages.
    lora: LoraSettings | None = Field(default=None, description="Train LoRA adapters only.")


class DatasetSpec(_Strict):
    name: str = Field(min_length=1, description="HF dataset id or local path.")
    text_field: str = Field(default="text", min_length=1)
    held_out_split: str | None = Field(default=None, description="Split used for evaluation.")


class ShardSpec(_Strict):
    num_shards: int = Field(ge=1, le=100_000)


class _HyperBase(_Strict):
    """Training hyper-parameters, plus (generated below) every protocol parameter under its
    settings name: whatever must be equal across the swarm is published in the manifest."""

    learning_rate: float = Field(gt=0, allow_inf_nan=False)
    batch_size: int = Field(ge=1)
    local_steps: int = Field(default=1, ge=1)
    rounds: int = Field(ge=0, description="0 = until stopped.")
    # DiLoCo (runtime/training/diloco.py): the outer step must be the same on every replica.
    diloco_inner_steps: int = Field(default=0, ge=0, le=100_000, description="H; 0 = off.")
    outer_lr: float = Field(default=0.7, gt=0, le=10, allow_inf_nan=False)
    outer_momentum: float = Field(default=0.9, ge=0, lt=1)

    def protocol_config(self) -> ProtocolConfig:
        return config_from(self, aliased=True)


if TYPE_CHECKING:
    HyperParams = _HyperBase
else:
    HyperParams = create_model(
        "HyperParams",
        __base__=_HyperBase,
        __module__=__name__,
        __validators__=pydantic_validators(aliased=True),
        **pydantic_fields(aliased=True),
    )


class Competition(_Strict):
    teams: dict[str, list[int]] = Field(min_length=2)
    eval_dataset: DatasetSpec

    @field_validator("teams")
    @classmethod
    def _check_teams(cls, teams: dict[str, list[int]]) -> dict[str, list[int]]:
        seen: set[int] = set()
        for name, members in teams.items():
            if not _TEAM_RE.match(name):
                raise PydanticCustomError(
                    "team", "team name {name!r} must be 1-16 letters, digits, '_' or '-'",
                    {"name": name},
                )  # fmt: skip
            if not members:
                raise PydanticCustomError("team", "team {name!r} has no nodes", {"name": name})
            for index in members:
                if index in seen or index < 0:
                    raise PydanticCustomError(
                        "team", "node index {i} is negative or in two teams", {"i": index}
                    )
                seen.add(index)
        if seen != set(range(len(seen))):
            raise PydanticCustomError(
                "team", "node indices must be 0..{n} with none missing", {"n": len(seen) - 1}
            )
        return teams


class Participant(_Strict):
    """What one node index means in a manifest."""

    node_index: int
    node_id: str
    run_id: str
    shard_index: int
    team: str | None = None


class RunManifest(_Strict):
    """Schema of ``runs/*.json``."""

    version: Literal[1] = 1
    run_id: str
    description: str = ""
    created: date
    model: ModelSpec
    dataset: DatasetSpec
    shards: ShardSpec
    hyper: HyperParams
    bootstrap_peers: list[str] = Field(default_factory=list)
    competition: Competition | None = None

    @field_validator("run_id")
    @classmethod
    def _check_run_id(cls, value: str) -> str:
        if not _RUN_ID_RE.match(value):
            raise PydanticCustomError(
                "run_id", "must be 1-40 letters, digits, '_' or '-' (got {v!r})", {"v": value}
            )
        return value

    @field_validator("bootstrap_peers")
    @classmethod
    def _check_peers(cls, peers: list[str]) -> list[str]:
        for i, addr in enumerate(peers):
            try:
                validate_multiaddr(addr)
            except ValueError as exc:
                raise PydanticCustomError(
                    "multiaddr", "entry {i}: {why}", {"i": i + 1, "why": str(exc)}
                ) from None
        return peers

    @model_validator(mode="after")
    def _check_against_node_rules(self) -> RunManifest:
        if self.competition is not None:
            biggest = max(len(m) for m in self.competition.teams.values())
            if biggest > self.shards.num_shards:
                raise PydanticCustomError(
                    "shards",
                    "a team of {n} nodes needs shards.num_shards >= {n}",
                    {"n": biggest},
                )
        layer_shards = self.hyper.protocol_config().model_shard_total
        smallest = (
            self.shards.num_shards
            if self.competition is None
            else min(len(m) for m in self.competition.teams.values())
        )
        if smallest < layer_shards:
            raise PydanticCustomError(
                "shards",
                "{k} layer shards (model_shard_total) need at least {k} nodes per run, not {n}",
                {"k": layer_shards, "n": smallest},
            )
        # Every participant's .env must load; checking index 0 covers all shared values.
        try:
            load_settings(**self.node_env(0))
        except SettingsError as exc:
            raise PydanticCustomError(
                "node_rules", "would produce an invalid node config: {why}", {"why": str(exc)}
            ) from None
        return self

    # ---- participants ------------------------------------------------------------------

    @property
    def node_count(self) -> int:
        if self.competition is None:
            return self.shards.num_shards
        return sum(len(m) for m in self.competition.teams.values())

    def participant(self, node_index: int) -> Participant:
        """Resolve ``node_index`` to ids and shard; ValueError if it is not in this run."""
        if not 0 <= node_index < self.node_count:
            raise ValueError(
                f"node index must be between 0 and {self.node_count - 1} for run "
                f"{self.run_id!r} (got {node_index})"
            )
        if self.competition is None:
            return Participant(
                node_index=node_index,
                node_id=f"{self.run_id}-n{node_index}",
                run_id=self.run_id,
                shard_index=node_index,
            )
        for team, members in self.competition.teams.items():
            if node_index in members:
                return Participant(
                    node_index=node_index,
                    node_id=f"{self.run_id}-{team}-n{node_index}",
                    run_id=f"{self.run_id}-{team}",
                    shard_index=members.index(node_index),
                    team=team,
                )
        raise AssertionError("unreachable: teams cover 0..node_count-1")  # pragma: no cover

    def node_env(
        self,
        node_index: int,
        *,
        device: str = "cpu",
        listen_port: int = 4001,
        metrics_port: int = 9100,
    ) -> dict[str, str]:
        """NodeSettings field -> text value for one participant (what ``join`` writes)."""
        who = self.participant(node_index)
        h = self.hyper
        env: dict[str, str] = {
            "run_id": who.run_id,
            "node_id": who.node_id,
            "model_name": self.model.name,
        }
        if self.model.config_overrides:
            env["model_overrides"] = format_overrides(self.model.config_overrides)
        if self.model.lora is not None:
            env.update(
                peft="lora",
                lora_rank=str(self.model.lora.rank),
                lora_alpha=str(self.model.lora.alpha),
                lora_target_modules=",".join(self.model.lora.target_modules),
            )
        env["dataset"] = self.dataset.name
        env["dataset_text_field"] = self.dataset.text_field
        if self.dataset.held_out_split:
            env["dataset_eval_split"] = self.dataset.held_out_split
        env.update(
            num_shards=str(self.shards.num_shards),
            shard_index=str(who.shard_index),
            device=device,
            batch_size=str(h.batch_size),
            learning_rate=repr(h.learning_rate),
            local_steps=str(h.local_steps),
            diloco_inner_steps=str(h.diloco_inner_steps),
            outer_lr=repr(h.outer_lr),
            outer_momentum=repr(h.outer_momentum),
            max_rounds=str(h.rounds),
            bootstrap_peers=",".join(self.bootstrap_peers),
            listen_host="0.0.0.0",
            listen_port=str(listen_port),
            metrics_port=str(metrics_port),
            checkpoint_dir=f"checkpoints/{who.node_id}",
        )
        # Every protocol parameter, so each participant runs the published protocol.
        pcfg = h.protocol_config()
        env.update(protocol_env(pcfg))
        # Layer shards dealt round-robin: every slice of the model gets its share of nodes.
        env["model_shard_index"] = str(who.shard_index % pcfg.model_shard_total)
        return env


# ---- files -----------------------------------------------------------------------------


def _problems(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "manifest"
        message = str(error["msg"])
        if error["type"] == "extra_forbidden":
            message = "unknown field (typo?)"
        elif error["type"] == "missing":
            message = "required field is missing"
        value = error.get("input")
        quiet = error["type"] == "missing" or "(got" in message or "would produce" in message
        if isinstance(value, (str, int, float)) and not quiet:
            message = f"{message} (got {value!r})"
        lines.append(f"{where}: {message}")
    return lines


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(path, [f"cannot read: {exc.strerror}"]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            path, [f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"]
        ) from None


def _validate(path: Path, data: Any) -> RunManifest:
    try:
        return RunManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(path, _problems(exc)) from None


def load_manifest(path: Path | str) -> RunManifest:
    """Read and validate one manifest; :class:`ManifestError` lists every problem."""
    path = Path(path)
    return _validate(path, _read_json(path))


def manifest_paths(runs_dir: Path | str) -> list[Path]:
    return sorted(Path(runs_dir).glob("*.json"))


def load_manifests(runs_dir: Path | str) -> tuple[dict[Path, RunManifest], list[ManifestError]]:
    """Every manifest in ``runs_dir``: the valid ones and the errors of the others."""
    good: dict[Path, RunManifest] = {}
    bad: list[ManifestError] = []
    for path in manifest_paths(runs_dir):
        try:
            good[path] = load_manifest(path)
        except ManifestError as exc:
            bad.append(exc)
    return good, bad


def find_manifest(runs_dir: Path | str, run_id: str) -> tuple[Path, RunManifest]:
    """The manifest whose ``run_id`` matches (``<run_id>.json`` is tried first)."""
    runs = Path(runs_dir)
    direct = runs / f"{run_id}.json"
    if direct.is_file():
        manifest = load_manifest(direct)
        if manifest.run_id == run_id:
            return direct, manifest
    good, bad = load_manifests(runs)
    for path, manifest in good.items():
        if manifest.run_id == run_id:
            return path, manifest
    known = ", ".join(sorted(m.run_id for m in good.values())) or "none"
    problems = [f"no manifest with run_id {run_id!r} (known: {known})"]
    problems += [f"(could not read {e.path})" for e in bad]
    raise ManifestError(runs, problems)


def dump_manifest(data: Any) -> str:
    """The one canonical text form of a manifest (stable diffs, idempotent rewrites)."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def set_bootstrap_peers(runs_dir: Path | str, peers: list[str]) -> list[Path]:
    """Set ``bootstrap_peers`` of every manifest to ``peers``; returns files changed.

    All manifests are read and validated *before* any is written: one broken file means
    nothing is touched. Each rewrite is atomic; an unchanged file is not rewritten.
    """
    clean: list[str] = []
    for addr in peers:
        try:
            clean.append(validate_multiaddr(addr))
        except ValueError as exc:
            raise ManifestError(None, [f"bootstrap peer: {exc}"]) from None
    if not clean:
        raise ManifestError(None, ["give at least one bootstrap peer multiaddr"])
    paths = manifest_paths(runs_dir)
    if not paths:
        raise ManifestError(Path(runs_dir), ["no *.json manifests found"])
    planned: list[tuple[Path, str, str]] = []
    errors: list[str] = []
    for path in paths:
        try:
            raw = path.read_text(encoding="utf-8")
            data = _read_json(path)
            _validate(path, data)
            if not isinstance(data, dict):  # pragma: no cover - _validate rejects it
                raise ManifestError(path, ["must be a JSON object"])
            data["bootstrap_peers"] = list(clean)
            _validate(path, data)
            planned.append((path, raw, dump_manifest(data)))
        except ManifestError as exc:
            errors.extend(str(exc).splitlines())
    if errors:
        raise ManifestError(None, ["nothing was changed; fix these first:", *errors])
    changed = []
    for path, old, new in planned:
        if old != new:
            atomic_write_text(path, new)
            changed.append(path)
    return changed
