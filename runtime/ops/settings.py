"""Every knob of a node, validated once, before anything touches the network or a GPU.

Why pydantic-settings: the same object is filled from ``SWARM_*`` environment variables, a
``.env`` file (what ``swarm-tune join`` writes and what ``docker run --env-file`` reads) or
keyword arguments (tests, other commands), with one set of rules. A node that starts with a
bad value wastes a GPU slot and confuses its peers, so every rule here answers "what is
wrong and what would be right" in the user's vocabulary: the *environment variable name*,
not the Python attribute. :func:`load_settings` turns pydantic's error list into exactly one
line per bad field, and secret values are never echoed back, not even in error messages.

All values that arrive as text (env, ``.env``, or string kwargs written by ``join``) go
through the same ``before`` validators, so ``NodeSettings(**strings)`` and the env path
cannot disagree. Lists and mappings use shell-safe plain text (comma lists, ``k=v`` pairs)
rather than JSON: a ``.env`` file must work with ``set -a; . .env`` *and* with
``docker --env-file``, which handle quotes differently.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from swarm_tune.runtime.adversary.attacks import BEHAVIOURS
from swarm_tune.runtime.ops.addresses import validate_multiaddr
from swarm_tune.runtime.ops.peer_id import parse_seed_hex
from swarm_tune.runtime.ops.protocol_fields import (
    config_from,
    cross_field_problems,
    pydantic_fields,
    pydantic_validators,
)
from swarm_tune.runtime.protocol.config import ProtocolConfig

if TYPE_CHECKING:
    from swarm_tune.runtime.training.diloco import DiLoCoConfig
    from swarm_tune.runtime.training.layer_shard import LayerShard
    from swarm_tune.runtime.training.lora import LoraSpec

__all__ = [
    "BUILTIN_MODELS",
    "ENV_PREFIX",
    "NET_LIMITS",
    "SECRET_FIELDS",
    "NodeSettings",
    "SettingsError",
    "env_name",
    "load_settings",
    "protocol_config",
    "unknown_env_vars",
]

ENV_PREFIX = "SWARM_"
BUILTIN_MODELS = ("tiny-gpt2", "tiny-llama")
SECRET_FIELDS = frozenset({"node_key_seed", "hf_token"})
_MASK = "********"

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda|cuda:\d{1,2})$")
_OVERRIDE_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")

# A checkpoint dir equal to or below these would write into the OS itself.
_SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
    "/run", "/sbin", "/sys", "/usr", "/var/lib", "/var/run",
)  # fmt: skip
# These are fine as parents but not as the directory itself (we would litter them).
_SYSTEM_EXACT = ("/", "/var", "/home", "/root", "/opt", "/srv", "/mnt", "/media")

OverrideValue = int | float | bool | str


ADVERSARY_MODES = ("none", *BEHAVIOURS)


#: Settings that override one ``NetConfig`` limit or switch each (same name; empty =
#: NetConfig's default, whose checks apply: runtime/net/config.py is their one definition).
NET_LIMITS = (
    "advertise_private",
    "max_stranger_transfers",
    "conn_rate_per_ip",
    "conn_burst_per_ip",
    "conn_rate_total",
    "conn_burst_total",
    "max_conns_per_ip",
    "max_preauth_conns",
    "max_preauth_per_ip",
)


def env_name(field: str) -> str:
    """The environment variable that sets ``field`` (``listen_port`` -> ``SWARM_LISTEN_PORT``)."""
    return ENV_PREFIX + field.upper()


def _err(message: str) -> PydanticCustomError:
    # A custom error type keeps pydantic from prefixing "Value error, " to our text.
    return PydanticCustomError("swarm_setting", message)


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text.endswith("/") or os.sep in text[1:]


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _parse_scalar(text: str) -> OverrideValue:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    # Only plain numerals become numbers: "inf", "nan" or "1_000" stay text.
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    return text


def parse_overrides(text: str) -> dict[str, OverrideValue]:
    """Parse ``n_layer=2,n_embd=64`` (or a JSON object) into a dict of scalars."""
    stripped = text.strip()
    if not stripped:
        return {}
    if stripped.startswith("{"):
        loaded = json.loads(stripped)
        if not isinstance(loaded, dict):
            raise ValueError("JSON overrides must be an object")
        return loaded
    out: dict[str, OverrideValue] = {}
    for item in stripped.split(","):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"expected key=value pairs separated by commas, got {item!r}")
        out[key.strip()] = _parse_scalar(raw.strip())
    return out


def format_overrides(overrides: dict[str, OverrideValue]) -> str:
    """Inverse of :func:`parse_overrides` for the shell-safe ``k=v,k=v`` form."""
    parts = []
    for key, value in overrides.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        parts.append(f"{key}={text}")
    return ",".join(parts)


class SettingsError(Exception):
    """Configuration is invalid; ``str(err)`` is one human-readable line per bad field."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{name}: {msg}" for name, msg in problems))


class _NodeSettingsBase(BaseSettings):
    """Validated configuration of one node. Field ``x`` is set by env var ``SWARM_X``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
        frozen=True,
        protected_namespaces=(),
    )

    # identity -------------------------------------------------------------------------
    node_id: str = Field(default="node-0", description="Name of this node in logs and metrics.")
    run_id: str = Field(
        default="default", description="Training run; only peers with the same id talk."
    )
    node_key_seed: SecretStr | None = Field(
        default=None, description="Ed25519 seed, 64 hex digits."
    )
    node_key_file: Path | None = Field(
        default=None, description="File holding the node identity key."
    )

    # network --------------------------------------------------------------------------
    listen_host: str = Field(default="0.0.0.0", description="IP address to listen on.")
    listen_port: int = Field(default=4001, description="TCP port; 0 picks a free one.")
    bootstrap_peers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated peer multiaddrs to dial first."
    )
    relay_mode: bool = Field(default=False, description="Serve as a circuit relay for other peers.")
    relay_client: bool = Field(
        default=True,
        description="Dial peers' relayed (/p2p-circuit) addresses; accept relayed connections.",
    )
    relay_addrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Behind a NAT: relays to keep a slot on (comma-separated multiaddrs with "
        "/p2p/); peers are told the relayed address.",
    )
    enable_dcutr: bool = Field(
        default=False,
        description="Hole punching (DCUtR): upgrade relayed connections to direct ones.",
    )
    # Network driver limits: the default and the checks are NetConfig's (runtime/net/config.py,
    # one definition); empty = its default. ``swarm-tune node`` checks them before it starts.
    advertise_private: bool | None = Field(
        default=None,
        description="Tell peers this node's private/loopback addresses (a LAN run); empty = "
        "only when it has no public one and uses no relay.",
    )
    max_stranger_transfers: int | None = Field(
        default=None,
        description="Inbound bulk transfer slots peers outside the run share; empty = default.",
    )
    conn_rate_per_ip: float | None = Field(
        default=None,
        description="New inbound connections per second from one source IP (IPv6: one /64) "
        "once its burst is spent; empty = default.",
    )
    conn_burst_per_ip: float | None = Field(
        default=None, description="Burst of new inbound connections per source; empty = default."
    )
    conn_rate_total: float | None = Field(
        default=None,
        description="New inbound connections per second from everyone together; empty = default.",
    )
    conn_burst_total: float | None = Field(
        default=None, description="Burst of new inbound connections in total; empty = default."
    )
    max_conns_per_ip: int | None = Field(
        default=None, description="Live inbound connections per source; empty = default."
    )
    max_preauth_conns: int | None = Field(
        default=None,
        description="Data-port connections that have not shown a token yet; empty = default.",
    )
    max_preauth_per_ip: int | None = Field(
        default=None,
        description="Of those, from one source IP (newcomers evict its oldest); empty = default.",
    )
    enable_mdns: bool = Field(default=True, description="Find peers on the local network via mDNS.")
    enable_dht: bool = Field(default=True, description="Find peers via the Kademlia DHT.")

    # model and data ---------------------------------------------------------------------
    model_name: str = Field(
        default="tiny-gpt2", description="HF repo id, local dir, or a built-in."
    )
    model_overrides: Annotated[dict[str, OverrideValue], NoDecode] = Field(
        default_factory=dict, description="Model config overrides, e.g. n_layer=2,n_embd=64."
    )
    dataset: str | None = Field(default=None, description="HF dataset id or local path.")
    dataset_text_field: str = Field(default="text", description="Column holding the text.")
    dataset_eval_split: str | None = Field(
        default=None, description="Held-out split for evaluation."
    )
    num_shards: int = Field(default=1, description="Number of data shards in this run.")
    shard_index: int = Field(default=0, description="Which shard this node trains on.")
    model_shard_index: int = Field(
        default=0,
        description="Layer shard: the slice of the blocks this node trains (< model_shard_total).",
    )
    device: str = Field(default="cpu", description="cpu, cuda, cuda:N or mps.")
    hf_token: SecretStr | None = Field(
        default=None, description="Hugging Face token for gated models."
    )

    # training -------------------------------------------------------------------------
    batch_size: int = Field(default=8, description="Sequences per local step.")
    learning_rate: float = Field(default=5e-5, description="Optimizer learning rate.")
    local_steps: int = Field(default=1, description="Local steps between exchanges.")
    max_rounds: int = Field(default=0, description="Stop after this many rounds; 0 = unbounded.")

    # protocol: every ProtocolConfig parameter is added below (``NodeSettings``), generated
    # from the core's schema by ops/protocol_fields.py; none is written here.

    # DiLoCo (learner-side, runtime/training/diloco.py: the optimizer becomes the inner one)
    diloco_inner_steps: int = Field(
        default=0, description="DiLoCo: H inner steps per round; 0 = off (one step per round)."
    )
    outer_lr: float = Field(default=0.7, description="DiLoCo: outer SGD learning rate.")
    outer_momentum: float = Field(default=0.9, description="DiLoCo: outer Nesterov momentum.")

    # LoRA adapters (runtime/training/lora.py): only the adapters train and travel
    peft: Literal["none", "lora"] = Field(
        default="none", description="Parameter-efficient fine-tuning: none or lora."
    )
    lora_rank: int = Field(default=8, description="LoRA: rank r of the adapters.")
    lora_alpha: int = Field(default=16, description="LoRA: alpha (the update is scaled alpha/r).")
    lora_target_modules: str = Field(
        default="q_proj,v_proj",
        description="LoRA: comma-separated module names to adapt (e.g. c_attn for GPT-2).",
    )

    # test-only misbehaviour, used by the adversarial compose node ----------------------
    adversary: str = Field(
        default="none",
        description="Send crafted updates: a behaviour of runtime/adversary/attacks.py (tests).",
    )
    adversary_strength: float | None = Field(
        default=None, description="The behaviour's one knob (attacks.py); empty = its default."
    )

    # ops ------------------------------------------------------------------------------
    checkpoint_dir: Path = Field(default=Path("checkpoints"), description="Where checkpoints go.")
    checkpoint_every_rounds: int = Field(default=10, description="Checkpoint period; 0 = never.")
    metrics_port: int = Field(default=0, description="Prometheus /metrics port; 0 disables.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Least severe log level printed."
    )
    log_format: Literal["json", "console", "auto"] = Field(
        default="auto", description="json, console, or auto (json when not a terminal)."
    )

    # ---- per-field rules ---------------------------------------------------------------

    @field_validator("node_id", "run_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise _err("must be 1-64 characters of letters, digits, '_' or '-'")
        return value

    @field_validator("listen_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise _err("must be an IP address such as 0.0.0.0, 127.0.0.1 or ::") from None

    @field_validator("listen_port", "metrics_port")
    @classmethod
    def _check_port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise _err("must be between 0 and 65535")
        return value

    @field_validator("bootstrap_peers", mode="before")
    @classmethod
    def _split_peers(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("bootstrap_peers")
    @classmethod
    def _check_peers(cls, value: list[str]) -> list[str]:
        out = []
        for i, addr in enumerate(value):
            try:
                out.append(validate_multiaddr(addr))
            except ValueError as exc:
                raise _err(f"entry {i + 1}: {exc}") from None
        return out

    @field_validator("relay_addrs", mode="before")
    @classmethod
    def _split_relays(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("relay_addrs")
    @classmethod
    def _check_relays(cls, value: list[str]) -> list[str]:
        out = []
        for i, addr in enumerate(value):
            try:
                checked = validate_multiaddr(addr)
            except ValueError as exc:
                raise _err(f"entry {i + 1}: {exc}") from None
            if "/p2p-circuit" in checked:
                raise _err(f"entry {i + 1}: a relay is reached directly, not through a circuit")
            out.append(checked)
        return out

    @field_validator("node_key_seed")
    @classmethod
    def _check_seed(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            parse_seed_hex(value.get_secret_value())
        except ValueError as exc:
            raise _err(str(exc)) from None
        return value

    @field_validator("adversary")
    @classmethod
    def _check_adversary(cls, value: str) -> str:
        if value not in ADVERSARY_MODES:
            raise _err(f"must be one of {', '.join(ADVERSARY_MODES)}")
        return value

    @field_validator(
        "node_key_seed",
        "hf_token",
        "dataset",
        "dataset_eval_split",
        "adversary_strength",
        *NET_LIMITS,
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # `SWARM_HF_TOKEN=` in a .env means "not set", not "the empty token".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("node_key_file", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("model_name")
    @classmethod
    def _check_model(cls, value: str) -> str:
        name = value.strip()
        if name in BUILTIN_MODELS or _looks_like_path(name) or _HUB_ID_RE.match(name):
            return name
        raise _err(
            f"must be a built-in ({', '.join(BUILTIN_MODELS)}), a local directory, "
            "or a Hugging Face repo id like 'gpt2' or 'org/name'"
        )

    @field_validator("model_overrides", mode="before")
    @classmethod
    def _parse_overrides(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse_overrides(value)
            except ValueError as exc:
                raise _err(str(exc)) from None
        return value

    @field_validator("model_overrides")
    @classmethod
    def _check_override_keys(cls, value: dict[str, OverrideValue]) -> dict[str, OverrideValue]:
        for key in value:
            if not _OVERRIDE_KEY_RE.match(key):
                raise _err(f"override key {key!r} is not a valid config attribute name")
        return value

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip()
        if _looks_like_path(name) or _HUB_ID_RE.match(name):
            return name
        raise _err("must be a local path or a Hugging Face dataset id like 'org/name'")

    @field_validator("dataset_text_field")
    @classmethod
    def _check_text_field(cls, value: str) -> str:
        if not value.strip():
            raise _err("must name the dataset column that holds the text")
        return value.strip()

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        device = value.strip().lower()
        if not _DEVICE_RE.match(device):
            raise _err("must be cpu, cuda, cuda:N (e.g. cuda:0) or mps")
        return device

    @field_validator("num_shards", "batch_size", "local_steps")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise _err("must be at least 1")
        return value

    @field_validator("shard_index", "model_shard_index", "max_rounds", "checkpoint_every_rounds")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise _err("must be 0 or more")
        return value

    @field_validator("learning_rate")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise _err("must be a number greater than 0")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", "adversary", mode="before")
    @classmethod
    def _lower_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("checkpoint_dir")
    @classmethod
    def _check_checkpoint_dir(cls, value: Path) -> Path:
        resolved = value.expanduser().resolve(strict=False)
        for tree in _SYSTEM_TREES:
            root = Path(tree)
            if resolved == root or root in resolved.parents:
                raise _err(f"refusing to write checkpoints under system directory {tree}")
        if str(resolved) in _SYSTEM_EXACT:
            raise _err(f"refusing to write checkpoints directly into {resolved}; use a subfolder")
        return value

    # ---- cross-field rules -------------------------------------------------------------

    @model_validator(mode="after")
    def _cross_field(self) -> _NodeSettingsBase:
        problems: list[tuple[str, str]] = []
        if self.shard_index >= self.num_shards:
            problems.append(
                (
                    "shard_index",
                    f"must be less than SWARM_NUM_SHARDS={self.num_shards} "
                    f"(got {self.shard_index}; shards are numbered from 0)",
                )
            )
        layer_shards = getattr(self, "model_shard_total", 1)  # a generated protocol field
        if self.model_shard_index >= layer_shards:
            problems.append(
                (
                    "model_shard_index",
                    f"must be less than SWARM_MODEL_SHARD_TOTAL={layer_shards} "
                    f"(got {self.model_shard_index}; layer shards are numbered from 0)",
                )
            )
        problems += cross_field_problems(self, aliased=True, show=env_name)
        if self.node_key_seed is not None and self.node_key_file is not None:
            problems.append(
                ("node_key_file", "set either SWARM_NODE_KEY_SEED or SWARM_NODE_KEY_FILE, not both")
            )
        if self.diloco_inner_steps < 0:
            problems.append(("diloco_inner_steps", "must be >= 0 (0 = DiLoCo off)"))
        elif self.diloco_inner_steps:
            try:
                self.diloco()
            except ValueError as exc:
                problems.append(("diloco_inner_steps", str(exc)))
        if self.peft == "lora":
            try:
                self.lora()
            except ValueError as exc:
                problems.append(("lora_rank", str(exc)))
        if (self.relay_addrs or self.enable_dcutr) and not self.relay_client:
            which = "relay_addrs" if self.relay_addrs else "enable_dcutr"
            problems.append((which, "needs SWARM_RELAY_CLIENT=true (the circuit transport)"))
        if self.metrics_port and self.metrics_port == self.listen_port:
            problems.append(
                ("metrics_port", f"must differ from SWARM_LISTEN_PORT (both {self.metrics_port})")
            )
        if problems:
            raise PydanticCustomError(
                "swarm_cross_field",
                "; ".join(f"{env_name(f)}: {m}" for f, m in problems),
                {"problems": problems},
            )
        return self

    def diloco(self) -> DiLoCoConfig | None:
        """The learner's DiLoCo config (None when SWARM_DILOCO_INNER_STEPS is 0)."""
        # Imported here: the training package pulls in tokenizers/transformers glue that the
        # settings (read by every CLI command) should not pay for.
        from swarm_tune.runtime.training.diloco import DiLoCoConfig

        if not self.diloco_inner_steps:
            return None
        return DiLoCoConfig(self.diloco_inner_steps, self.outer_lr, self.outer_momentum)

    def lora(self) -> LoraSpec | None:
        """The learner's LoRA spec (None unless SWARM_PEFT=lora)."""
        from swarm_tune.runtime.training.lora import LoraSpec, parse_targets

        if self.peft != "lora":
            return None
        targets = parse_targets(self.lora_target_modules)
        return LoraSpec(self.lora_rank, self.lora_alpha, targets)

    def layer_shard(self) -> LayerShard:
        """This node's slice of the transformer blocks (the whole model by default)."""
        from swarm_tune.runtime.training.layer_shard import LayerShard

        return LayerShard(self.model_shard_index, getattr(self, "model_shard_total", 1))

    # ---- display -----------------------------------------------------------------------

    def masked_dict(self) -> dict[str, Any]:
        """All settings as JSON-friendly values, secrets replaced by a fixed mask."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump(mode="json").items():
            if name in SECRET_FIELDS and value is not None:
                out[name] = _MASK
            else:
                out[name] = value
        return out

    def env_lines(self) -> list[str]:
        """``SWARM_X=value`` lines (secrets masked), the form a user would put in ``.env``."""
        lines = []
        for name, value in self.masked_dict().items():
            if value is None:
                text = ""
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list):
                text = ",".join(str(v) for v in value)
            elif isinstance(value, dict):
                text = format_overrides(value)
            else:
                text = str(value)
            lines.append(f"{env_name(name)}={text}")
        return lines


if TYPE_CHECKING:
    NodeSettings = _NodeSettingsBase
else:
    # The protocol fields come from the core's schema (see ops/protocol_fields.py).
    NodeSettings = create_model(
        "NodeSettings",
        __base__=_NodeSettingsBase,
        __module__=__name__,
        __validators__=pydantic_validators(aliased=True, cross_field=False),
        **pydantic_fields(aliased=True),
    )


def protocol_config(settings: NodeSettings) -> ProtocolConfig:
    """The node's ``ProtocolConfig``: every parameter as the settings give it."""
    return config_from(settings, aliased=True)


_FRIENDLY = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "literal_error": "must be one of {expected}",
    "string_type": "must be text",
    "list_type": "must be a comma-separated list",
    "dict_type": "must be key=value pairs separated by commas",
    "path_type": "must be a file system path",
}


def _describe(error: Any) -> list[tuple[str, str]]:
    """Turn one pydantic error dict into (ENV_NAME, message) lines."""
    ctx = error.get("ctx") or {}
    if error["type"] == "swarm_cross_field":
        return [(env_name(field), msg) for field, msg in ctx["problems"]]
    loc = error.get("loc") or ()
    field = str(loc[0]) if loc else ""
    name = env_name(field) if field else "settings"
    template = _FRIENDLY.get(error["type"])
    message = template.format(**ctx) if template else str(error["msg"])
    if field in SECRET_FIELDS:
        return [(name, message)]  # never echo a secret back
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) and "(got " not in message:
        shown = value if value != "" else "''"
        message = f"{message} (got {shown})"
    return [(name, message)]


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for error in exc.errors():
        for name, message in _describe(error):
            seen.setdefault(name, message)  # one line per field
    return list(seen.items())


def load_settings(*, env_file: str | Path | None = None, **overrides: Any) -> NodeSettings:
    """Build settings from env vars, a ``.env`` file and ``overrides`` (highest priority).

    ``env_file`` defaults to ``./.env`` (silently skipped if absent); an explicitly given
    file that does not exist is an error. Raises :class:`SettingsError` with one line per
    bad field, e.g. ``SWARM_LISTEN_PORT: must be between 0 and 65535 (got 70000)``.
    """
    unknown = sorted(set(overrides) - set(NodeSettings.model_fields))
    if unknown:
        # extra="ignore" is for stray SWARM_* env vars; a typo in code is a bug, say so.
        raise SettingsError([(name, "is not a setting") for name in unknown])
    kwargs: dict[str, Any] = dict(overrides)
    if env_file is not None:
        path = Path(env_file)
        if not path.is_file():
            raise SettingsError([("env file", f"{path} does not exist or is not a file")])
        kwargs["_env_file"] = path
    try:
        return NodeSettings(**kwargs)
    except ValidationError as exc:
        raise SettingsError(_problems(exc)) from None


def unknown_env_vars(env_file: str | Path | None = ".env") -> list[str]:
    """``SWARM_*`` names in the environment or ``env_file`` that match no setting (typos)."""
    from dotenv import dotenv_values

    known = {env_name(f) for f in NodeSettings.model_fields}
    names = {k.upper() for k in os.environ if k.upper().startswith(ENV_PREFIX)}
    if env_file is not None and Path(env_file).is_file():
        names |= {k.upper() for k in dotenv_values(env_file) if k.upper().startswith(ENV_PREFIX)}
    return sorted(names - known)
