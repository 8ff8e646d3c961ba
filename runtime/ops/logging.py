"""One logging pipeline for the node, its libraries and the CLI.

Why structlog on top of stdlib logging: our own code logs structured events
(``log.info("round_closed", round=7, peers=5)``) while libp2p, trio and transformers log
through stdlib ``logging``. Routing both through one ``ProcessorFormatter`` means a single
stream with a single format: JSON lines for machines (docker, log shippers, the analysis
tools) and a readable coloured renderer for a human at a terminal. ``auto`` picks by
asking whether the stream we write to is a terminal, because that is what decides who
reads it.

Every line carries ``node_id`` and ``run_id`` when configured from settings: a swarm's logs
are usually read merged, and a line without its node is useless there. The context is
added by a processor (not contextvars) so threads and trio tasks started before or after
configuration all see it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from swarm_tune.runtime.ops.settings import NodeSettings

__all__ = ["configure_logging", "get_logger", "resolve_format"]

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class _SwarmHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marker type so reconfiguration replaces our handler and leaves others alone."""


def resolve_format(fmt: str | None, stream: TextIO) -> str:
    """``json`` or ``console``: explicit wins, else ``SWARM_LOG_FORMAT``, else TTY check."""
    chosen = (fmt or os.environ.get("SWARM_LOG_FORMAT") or "auto").strip().lower()
    if chosen not in ("json", "console", "auto"):
        raise ValueError(f"log format must be json, console or auto (got {chosen!r})")
    if chosen == "auto":
        isatty = getattr(stream, "isatty", None)
        return "console" if callable(isatty) and isatty() else "json"
    return chosen


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    if name not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)} (got {level!r})")
    return _LEVELS[name]


def _static_context(context: Mapping[str, Any]) -> Processor:
    def add(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        for key, value in context.items():
            event_dict.setdefault(key, value)
        return event_dict

    return add


def configure_logging(
    settings_or_level: NodeSettings | str | int = "INFO",
    fmt: str | None = None,
    *,
    stream: TextIO | None = None,
    context: Mapping[str, Any] | None = None,
) -> None:
    """Configure structlog and stdlib logging; safe to call again (replaces itself).

    Call it after importing libp2p (which resets its own logger on import) so that
    libp2p's warnings are rendered in the same format.

    ``settings_or_level``: a :class:`NodeSettings` (level, format and node/run ids taken
    from it) or a level name/number. ``fmt``: ``json``/``console``/``auto``; overrides the
    settings. ``stream`` defaults to stderr so command output on stdout stays clean.
    """
    out = stream if stream is not None else sys.stderr
    ctx: dict[str, Any] = {}
    if isinstance(settings_or_level, NodeSettings):
        level = _level_number(settings_or_level.log_level)
        fmt = fmt or settings_or_level.log_format
        ctx.update(node_id=settings_or_level.node_id, run_id=settings_or_level.run_id)
    else:
        level = _level_number(settings_or_level)
    ctx.update(context or {})
    as_json = resolve_format(fmt, out) == "json"

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _static_context(ctx),
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if as_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(default=str)
    else:
        isatty = getattr(out, "isatty", None)
        colors = bool(callable(isatty) and isatty()) and "NO_COLOR" not in os.environ
        renderer = structlog.dev.ConsoleRenderer(colors=colors)

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=False,  # reconfiguration must reach existing loggers
    )

    handler = _SwarmHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SwarmHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    _adopt_libp2p(level)


def _adopt_libp2p(level: int) -> None:
    # libp2p, on import, sets its "libp2p" logger to WARNING with propagate=False and no
    # handler, so its warnings (e.g. pubsub "fail to deliver message") would bypass our
    # format and go to Python's last-resort stderr handler. Route them to our stream;
    # below WARNING it is far too chatty for a node's log. Call configure_logging after
    # the net stack is imported (libp2p resets this at import time).
    if "libp2p" in sys.modules:
        lib = logging.getLogger("libp2p")
        lib.propagate = True
        lib.setLevel(max(level, logging.WARNING))


def get_logger(name: str) -> FilteringBoundLogger:
    """A structured logger named ``name`` (use the module's ``__name__``)."""
    return cast(FilteringBoundLogger, structlog.stdlib.get_logger(name))
