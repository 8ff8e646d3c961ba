"""A real headless Chromium driven over the DevTools protocol (CDP), for the dashboard and report
tests.

Why CDP and not ``--dump-dom``: the dashboard is a polling page, and the test must watch it
*over time* on one page (two samples of the same chart, a reload with the node gone) —
``--dump-dom`` starts a fresh browser per sample. The client is tiny: one websocket to the
page target (trio-websocket), JSON commands with ids, replies matched by id, events ignored.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import trio
from procs import patience, require
from trio_websocket import WebSocketConnection, open_websocket_url

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def chromium_or_skip() -> str:
    """The chromium binary; a missing one fails in CI (``CI`` set) and skips locally."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    require(exe is not None, "chromium not installed (apt-get install -y chromium)")
    assert exe is not None
    return exe


class Chromium:
    """One headless Chromium process; ``page_ws_url`` is the first page's CDP endpoint."""

    def __init__(self, exe: str, profile: Path, url: str) -> None:
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        self._port: int | None = None
        self._seen = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                self._port = int(m.group(1))
                self._seen.set()

    def page_ws_url(self, timeout: float = patience(30.0)) -> str:
        if not self._seen.wait(timeout):
            raise AssertionError("chromium did not start:\n" + "".join(self.stderr[-20:]))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{self._port}/json/list") as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.2)
        raise AssertionError("chromium has no page target")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Page:
    """CDP commands on one page target."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self._ws.send_message(json.dumps({"id": msg_id, "method": method, "params": params}))
        with trio.fail_after(30):
            while True:
                reply = json.loads(await self._ws.get_message())
                if reply.get("id") == msg_id:
                    if "error" in reply:
                        raise AssertionError(f"CDP {method} failed: {reply['error']}")
                    result: dict[str, Any] = reply.get("result", {})
                    return result

    async def eval(self, expression: str) -> Any:
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"page JS failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll a JS expression until it is truthy; returns its value."""
        deadline = trio.current_time() + timeout
        last: Any = None
        while trio.current_time() < deadline:
            # Tolerate the moments a reload leaves no document (body is null).
            last = await self.eval(
                f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
            )
            if last:
                return last
            await trio.sleep(0.25)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    async def screenshot(self, path: Path) -> None:
        res = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(res["data"]))


def open_page(url: str) -> Any:
    return open_websocket_url(url, max_message_size=64 * 1024 * 1024)
