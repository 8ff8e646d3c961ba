"""A tiny HTTP/1.1 server on trio sockets for ``/metrics``, ``/api/state``, ``/healthz``, ``/``.

Why not ``prometheus_client.start_http_server``: it runs a ``ThreadingHTTPServer`` in a daemon
thread that nobody owns — it outlives cancellation, cannot be awaited on shutdown, and its
handlers would read the driver's state from a second thread while trio mutates it. Here
the server is one task in the node's nursery: it stops when the node stops, and handlers run
on the trio thread, so they see the core's state between two events, never halfway through.

What it accepts is deliberately small, because anyone who can reach the port can send it
bytes: GET and HEAD only, a request head of at most 8 KiB read within 5 seconds, one request
per connection (``Connection: close``), at most 64 connections at once. Anything else gets a
4xx and the connection is closed; no input can raise out of the handler.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import trio

from swarm_tune.runtime.ops.logging import get_logger

__all__ = ["MAX_HEAD", "MetricsServer", "Response", "dashboard_html", "parse_request_line"]

log = get_logger(__name__)

MAX_HEAD = 8192
HEAD_TIMEOUT = 5.0
MAX_CONNECTIONS = 64
PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class BadRequest(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def parse_request_line(head: bytes) -> tuple[str, str]:
    """``(method, path)`` from a request head; query strings are dropped."""
    line, _, _ = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest(400, "malformed request line")
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "non-ascii request line") from None
    if method not in ("GET", "HEAD"):
        raise BadRequest(405, f"method {method!r} not allowed")
    if not target.startswith("/"):
        raise BadRequest(400, "target must be a path")
    return method, target.split("?", 1)[0].split("#", 1)[0]


@cache
def dashboard_html() -> bytes:
    """The dashboard page, shipped as package data next to this module."""
    return (resources.files("swarm_tune.runtime.net") / "dashboard.html").read_bytes()


def _json_default(value: Any) -> Any:
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def json_bytes(payload: Any) -> bytes:
    """Strict JSON (NaN/inf become null) — browsers' ``JSON.parse`` rejects bare NaN."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(payload), default=_json_default, allow_nan=False).encode()


class MetricsServer:
    """Serves one node's endpoints; ``state`` and ``metrics`` are called per request."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        state: Callable[[], dict[str, Any]],
        metrics: Callable[[], bytes],
    ) -> None:
        self.host = host
        self.port = port
        self._state = state
        self._metrics = metrics
        self._limit = trio.CapacityLimiter(MAX_CONNECTIONS)
        self.bound_port: int | None = None
        self.requests = 0

    def route(self, path: str) -> Response:
        if path == "/metrics":
            return Response(200, self._metrics(), PROM_TYPE)
        if path == "/api/state":
            return Response(200, json_bytes(self._state()), "application/json")
        if path == "/healthz":
            return Response(200, b"ok\n")
        if path in ("/", "/index.html", "/dashboard"):
            return Response(200, dashboard_html(), "text/html; charset=utf-8")
        return Response(404, b"not found\n")

    async def bind(self) -> list[trio.SocketListener]:
        """Open the listening sockets (raises ``OSError`` if the port is taken)."""
        listeners = list(await trio.open_tcp_listeners(self.port, host=self.host))
        self.bound_port = listeners[0].socket.getsockname()[1]
        return listeners

    async def serve(
        self,
        listeners: list[trio.SocketListener] | None = None,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and serve until cancelled; ``task_status.started(port)`` once bound."""
        if listeners is None:
            listeners = await self.bind()
        log.info("metrics.listening", host=self.host, port=self.bound_port)
        task_status.started(self.bound_port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            if self._limit.available_tokens == 0:
                return  # over capacity: drop rather than queue unbounded work
            async with self._limit:
                # The client going away mid-response is its business, not an error.
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._handle_one(stream)

    async def _handle_one(self, stream: trio.SocketStream) -> None:
        method = "GET"
        try:
            head = await _read_head(stream)
            method, path = parse_request_line(head)
            try:
                resp = self.route(path)
            except Exception:  # a bug in a payload builder is a 500, not a dead node
                log.exception("metrics.handler_failed", path=path)
                resp = Response(500, b"internal error\n")
        except BadRequest as exc:
            resp = Response(exc.status, f"{exc}\n".encode())
        self.requests += 1
        await _send(stream, resp, head_only=method == "HEAD")


async def _read_head(stream: trio.SocketStream) -> bytes:
    buf = bytearray()
    with trio.move_on_after(HEAD_TIMEOUT) as scope:
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_HEAD:
                raise BadRequest(413, "request head too large")
            chunk = await stream.receive_some(4096)
            if not chunk:
                raise BadRequest(400, "connection closed mid-request")
            buf += chunk
    if scope.cancelled_caught:
        raise BadRequest(408, "request head not received in time")
    return bytes(buf[:MAX_HEAD])


async def _send(stream: trio.SocketStream, resp: Response, *, head_only: bool) -> None:
    reason = _REASONS.get(resp.status, "Error")
    head = (
        f"HTTP/1.1 {resp.status} {reason}\r\n"
        f"Content-Type: {resp.content_type}\r\n"
        f"Content-Length: {len(resp.body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    with trio.move_on_after(HEAD_TIMEOUT):
        await stream.send_all(head if head_only else head + resp.body)


async def run_node_monitor(
    driver: Any,
    *,
    node_id: str,
    host: str,
    port: int,
    history_dir: Any,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Attach a ``NodeMonitor`` to ``driver`` and serve it until cancelled.

    A port that cannot be bound is logged, not fatal: losing the dashboard must not stop a
    node that is training (the Docker health check on the port reports it instead).
    """
    from pathlib import Path

    from swarm_tune.runtime.net.monitor import HISTORY_FILE, NodeMonitor

    monitor = NodeMonitor(driver, node_id=node_id, history_path=Path(history_dir) / HISTORY_FILE)
    driver.observer = monitor
    server = MetricsServer(host, port, state=monitor.state, metrics=monitor.metrics_text)
    try:
        listeners = await server.bind()
    except OSError as exc:
        log.error("metrics.bind_failed", host=host, port=port, error=str(exc))
        task_status.started(None)
        return
    await server.serve(listeners, task_status=task_status)
