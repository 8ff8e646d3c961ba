"""History persistence and the metrics HTTP server against bad input, on real files/sockets."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_tune.runtime.net.monitor import History, RoundSample
from swarm_tune.runtime.net.monitor_server import MAX_HEAD, MetricsServer


def _sample(r: int, loss: float = 1.0) -> RoundSample:
    return RoundSample(round=r, t=1.0, outcome="average", duration=0.5, loss=loss, bytes_in=r)


def test_history_survives_reload_torn_line_and_replaces_rounds(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    h = History(path, keep=10)
    for r in range(5):
        h.add(_sample(r, loss=10.0 - r))
    assert h.set_eval(3, 2.5)
    assert not h.set_eval(99, 1.0)  # no such round: nothing attached, nothing written
    h.add(_sample(4, loss=0.25))  # a restart re-ran round 4
    with path.open("a") as f:
        f.write('{"kind":"round","round":7,"t":1')  # SIGKILL mid-append
    again = History(path, keep=10)
    assert [s.round for s in again.samples()] == [0, 1, 2, 3, 4]
    assert again.samples()[3].eval_loss == 2.5
    assert again.samples()[4].loss == 0.25


def test_history_compacts_and_keeps_the_last_rounds(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    h = History(path, keep=3)
    for r in range(20):
        h.add(_sample(r))
    assert [s.round for s in h.samples()] == [17, 18, 19]
    assert len(path.read_text().splitlines()) <= 4 * 3 + 1
    assert [s.round for s in History(path, keep=3).samples()] == [17, 18, 19]


def test_history_nan_loss_is_null_in_json(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    h = History(path)
    h.add(_sample(0, loss=math.nan))
    assert json.loads(path.read_text())["loss"] is None
    assert History(path).samples()[0].loss is None


@settings(max_examples=60, deadline=None)
@given(
    junk=st.lists(st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.hex()), max_size=8)
)
def test_history_load_never_raises_on_junk(tmp_path_factory: Any, junk: list[str]) -> None:
    path = tmp_path_factory.mktemp("h") / "h.jsonl"
    History(path).add(_sample(1))
    with path.open("a") as f:
        for line in junk:
            f.write(line.replace("\n", " ") + "\n")
        f.write('{"kind":"eval","round":"x","eval_loss":[]}\n{"round":2}\n[1,2]\n')
    rows = History(path).samples()
    assert 1 in [s.round for s in rows]


async def _exchange(port: int, data: bytes, *, eof: bool = False) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        if eof:
            await stream.send_eof()
        out = bytearray()
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                out += chunk
    return bytes(out)


def test_server_answers_and_survives_bad_requests() -> None:
    calls = {"n": 0}

    def state() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("bug in a payload builder")
        return {"x": math.nan, "ok": True}

    server = MetricsServer("127.0.0.1", 0, state=state, metrics=lambda: b"m 1\n")

    async def main() -> dict[str, bytes]:
        async with trio.open_nursery() as n:
            port = await n.start(server.serve)
            got = {
                "state": await _exchange(port, b"GET /api/state?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
                "state_500": await _exchange(port, b"GET /api/state HTTP/1.1\r\n\r\n"),
                "metrics": await _exchange(port, b"GET /metrics HTTP/1.0\r\n\r\n"),
                "head": await _exchange(port, b"HEAD /healthz HTTP/1.1\r\n\r\n"),
                "page": await _exchange(port, b"GET / HTTP/1.1\r\n\r\n"),
                "post": await _exchange(port, b"POST /metrics HTTP/1.1\r\n\r\n"),
                "junk": await _exchange(port, b"\x00\xff garbage\r\n\r\n"),
                "missing": await _exchange(port, b"GET /nope HTTP/1.1\r\n\r\n"),
                "big": await _exchange(port, b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 10)),
                "half": await _exchange(port, b"GET /heal", eof=True),
                "after": await _exchange(port, b"GET /healthz HTTP/1.1\r\n\r\n"),
            }
            n.cancel_scope.cancel()
        return got

    got = trio.run(main)
    status = {k: v.split(b"\r\n", 1)[0] for k, v in got.items()}
    assert status["state"] == b"HTTP/1.1 200 OK"
    assert json.loads(got["state"].split(b"\r\n\r\n", 1)[1]) == {"x": None, "ok": True}
    assert status["state_500"].startswith(b"HTTP/1.1 500")
    assert got["metrics"].endswith(b"\r\n\r\nm 1\n") and b"version=0.0.4" in got["metrics"]
    assert got["head"].endswith(b"\r\n\r\n") and b"Content-Length: 3" in got["head"]
    assert b'<svg id="graph"' in got["page"] and b"text/html" in got["page"]
    assert status["post"].startswith(b"HTTP/1.1 405")
    assert status["junk"].startswith(b"HTTP/1.1 400")
    assert status["missing"].startswith(b"HTTP/1.1 404")
    assert status["big"].startswith(b"HTTP/1.1 413")
    assert status["half"].startswith(b"HTTP/1.1 400")
    assert got["after"].endswith(b"ok\n")


def test_dashboard_loads_nothing_external() -> None:
    """No CDN, fonts or remote scripts: nodes run without internet."""
    from swarm_tune.runtime.net.monitor_server import dashboard_html

    html = dashboard_html().decode()
    for needle in ("<script src", "<link", "@import", "https://", "url("):
        assert needle not in html
    assert "localStorage" in html and "/api/state" in html
