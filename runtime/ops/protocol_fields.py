"""The pydantic face of ``ProtocolConfig``: fields, checks and docs generated from the core.

Scenario YAML (``protocol:`` block), ``SWARM_*`` settings and run manifests (``hyper``) all
describe the same protocol parameters. None of them lists them by hand: each builds its
fields here from ``runtime/protocol/config.py`` (name, type, default, doc), and validates
them with the core's own checks (``param_problem`` / ``config_problems``). A parameter added
to the core therefore appears in all three, with the same default and the same rules.

Names: scenarios use the core's names. Settings and manifests use the same names except for
the aliases in :data:`ALIASES`, kept because ``.env`` files, compose files and published
manifests already use them. This table is the only place where a name differs.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from swarm_tune.runtime.protocol.config import (
    DEFAULTS,
    NAMES,
    ProtocolConfig,
    config_problems,
    param_doc,
    param_problem,
)

__all__ = [
    "ALIASES",
    "config_from",
    "cross_field_problems",
    "external_name",
    "params_table",
    "protocol_env",
    "pydantic_fields",
    "pydantic_validators",
]

#: core name -> name in SWARM_* settings and run manifests (the only names that differ).
ALIASES: Mapping[str, str] = {
    "round_timeout": "round_timeout_s",
    "heartbeat_interval": "heartbeat_interval_s",
    "eviction_timeout": "eviction_timeout_s",
    "strategy": "aggregation",
}
_CORE_NAME = {v: k for k, v in ALIASES.items()}
_HINTS = typing.get_type_hints(ProtocolConfig)
_REF = re.compile(r"\b(" + "|".join(NAMES) + r")=")


def external_name(name: str, aliased: bool) -> str:
    return ALIASES.get(name, name) if aliased else name


def core_name(name: str) -> str:
    return _CORE_NAME.get(name, name)


def describe(name: str) -> str:
    doc, unit, rng = param_doc(name)
    return f"{doc} [{rng}{' ' + unit if unit else ''}]"


def pydantic_fields(*, aliased: bool) -> dict[str, Any]:
    """``create_model`` field definitions for every protocol parameter."""
    return {
        external_name(n, aliased): (_HINTS[n], Field(default=DEFAULTS[n], description=describe(n)))
        for n in NAMES
    }


def _error(field: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("protocol_param", "{message}", {"message": message, "field": field})


def _parse_number(cls: Any, value: Any, info: Any) -> Any:
    # "3" is a count, "0.5" or "1.0" a fraction: decide on the text, not on pydantic's
    # union order (which reads "1.0" as the int 1).
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            return float(text)
        except ValueError:
            problem = param_problem(core_name(info.field_name), value) or "must be a number"
            raise _error(info.field_name, problem) from None
    return value


def cross_field_problems(
    source: Any, *, aliased: bool, show: Callable[[str], str] | None = None
) -> list[tuple[str, str]]:
    """The core's rules that tie fields together, as (field, message) in ``source``'s names;
    ``show`` renders a field named inside a message (e.g. as its env var)."""
    shown = show or (lambda n: n)

    def rename(message: str) -> str:
        return _REF.sub(lambda m: shown(external_name(m[1], aliased)) + "=", message)

    values = {n: getattr(source, external_name(n, aliased)) for n in NAMES}
    return [(external_name(f, aliased), rename(m)) for f, m in config_problems(values)]


def pydantic_validators(*, aliased: bool, cross_field: bool = True) -> dict[str, Any]:
    """Validators for ``create_model``: each field checked by the core, then (``cross_field``)
    the rules that tie fields together, reported at the field they name: one
    ``swarm_cross_field`` error whose context lists (field, message) pairs. A model with its
    own cross-field rules passes False and calls :func:`cross_field_problems` itself, so all
    its problems are reported at once."""
    names = [external_name(n, aliased) for n in NAMES]
    unions = [external_name(n, aliased) for n in NAMES if _HINTS[n] == int | float]

    def check_one(cls: Any, value: Any, info: Any) -> Any:
        problem = param_problem(core_name(info.field_name), value)
        if problem is not None:
            raise _error(info.field_name, problem)
        return value

    def check_all(self: Any) -> Any:
        problems = cross_field_problems(self, aliased=aliased)
        if problems:
            raise PydanticCustomError(
                "swarm_cross_field",
                "; ".join(f"{f}: {m}" for f, m in problems),
                {"problems": problems},
            )
        return self

    out: dict[str, Any] = {
        "_parse_protocol_number": field_validator(*unions, mode="before")(_parse_number),
        "_check_protocol_param": field_validator(*names)(check_one),
    }
    if cross_field:
        out["_check_protocol_config"] = model_validator(mode="after")(check_all)
    return out


def config_from(source: Any, *, aliased: bool) -> ProtocolConfig:
    """The ``ProtocolConfig`` a validated settings/manifest/scenario object describes."""
    return ProtocolConfig(**{n: getattr(source, external_name(n, aliased)) for n in NAMES})


def protocol_env(config: ProtocolConfig) -> dict[str, str]:
    """Settings field -> text for every parameter (what ``join`` writes into ``.env``)."""
    return {external_name(n, True): _text(getattr(config, n)) for n in NAMES}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def params_table() -> list[dict[str, str]]:
    """One row per parameter: what ``config params`` prints and the generated doc lists."""
    from swarm_tune.runtime.ops.settings import env_name

    rows = []
    for n in NAMES:
        doc, unit, rng = param_doc(n)
        default = DEFAULTS[n]
        rows.append(
            {
                "scenario": f"protocol.{n}",
                "env": env_name(external_name(n, True)),
                "manifest": f"hyper.{external_name(n, True)}",
                "default": repr(default),  # 1.0 (a fraction) and 1 (a count) differ
                "unit": unit,
                "range": rng,
                "doc": doc,
            }
        )
    return rows


DOC_PATH = "docs/protocol-parameters.md"


def params_markdown() -> str:
    """docs/protocol-parameters.md, generated (a test fails when the committed file is stale:
    regenerate with ``swarm-tune config params --markdown > docs/protocol-parameters.md``)."""
    lines = [
        "# Protocol parameters",
        "",
        "Generated from `runtime/protocol/config.py` by `swarm-tune config params --markdown`;",
        "do not edit by hand. One definition, three spellings: the scenario key, the `SWARM_*`",
        "variable and the run-manifest key. Aliases (the only names that differ):",
        "",
        *(f"- `{k}` -> `{v}`" for k, v in ALIASES.items()),
        "",
        "| scenario key | SWARM_ variable / manifest `hyper` key | default | unit | range | doc |",
        "|---|---|---|---|---|---|",
    ]
    for r in params_table():
        hyper = r["manifest"].removeprefix("hyper.")
        cells = [f"`{r['scenario']}`", f"`{r['env']}` / `{hyper}`", r["default"], r["unit"]]
        cells += [r["range"], r["doc"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
