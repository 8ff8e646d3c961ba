"""The dashboard in a real headless Chromium against two real ``swarm-tune node`` processes.

Asserted from the browser's DOM (not from the JSON): the page loads and polls, the peer
graph draws one circle per peer with its peer id, the loss curve grows between two samples,
Prometheus text parses, and after the nodes are gone a reload still shows the curves (the
page's localStorage copy). A screenshot is saved for humans (path printed).
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
import trio
from cdp import Chromium, Page, chromium_or_skip, open_page
from procs import NodeProc, free_port, loopback_env, wait_until
from prometheus_client.parser import text_string_to_metric_families

from swarm_tune.runtime.net.monitor import HISTORY_FILE

pytestmark = pytest.mark.slow

N_POINTS = "Number(document.querySelector('#loss-train')?.dataset.points || 0)"


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        body: bytes = r.read()
        return body


def _up(base: str) -> bool:
    try:
        return _get(base + "/healthz") == b"ok\n"
    except OSError:
        return False


def test_dashboard_in_chromium(tmp_path: Path) -> None:
    exe = chromium_or_skip()
    mports = [free_port(), free_port()]
    env = {"SWARM_NUM_SHARDS": "2", "SWARM_CHECKPOINT_EVERY_ROUNDS": "1"}
    nodes = [
        NodeProc(i, free_port(), tmp_path, loopback_env(SWARM_METRICS_PORT=str(mports[i]), **env))
        for i in range(2)
    ]
    nodes[0].start([])
    nodes[1].start([nodes[0].addr])
    base = f"http://127.0.0.1:{mports[0]}"
    browser: Chromium | None = None
    try:
        # A committed round, not merely a closed one: n0 starts alone, and on a busy box n1
        # can arrive after n0's start deadline, so n0's first rounds may be fallbacks (seen
        # in CI: rounds 0 and 1 closed, 0 committed); the page is checked on a real average.
        wait_until(lambda: bool(nodes[0].committed()), 120, "a first committed round", nodes)
        assert _get(base + "/healthz") == b"ok\n"
        raw = _get(base + "/api/state").decode()
        assert "NaN" not in raw  # JSON.parse in the browser rejects bare NaN
        state = json.loads(raw)
        assert state["peer_id"] == nodes[0].peer_id and state["node_id"] == "n0"
        families = {
            f.name: f for f in text_string_to_metric_families(_get(base + "/metrics").decode())
        }
        committed = [
            s.value
            for s in families["swarm_tune_rounds"].samples
            if s.labels.get("outcome") == "committed"
        ]
        assert committed and committed[0] >= 1
        assert "swarm_tune_round_duration_seconds" in families
        by_message = {
            s.labels["message"]: s.value for s in families["swarm_tune_message_bytes_out"].samples
        }
        assert by_message.get("Contribution", 0) > 0 and by_message.get("Heartbeat", 0) > 0

        browser = Chromium(exe, tmp_path / "profile", base + "/")
        shot = tmp_path / "dashboard.png"

        async def drive() -> tuple[int, int]:
            async with open_page(browser.page_ws_url()) as ws:
                page = Page(ws)
                assert await page.wait_for("document.body.dataset.polls", 30, "a first poll")
                assert await page.eval("document.title") == "Swarm-Tune node"
                # The graph: this node plus the other one, each a circle carrying its peer id.
                peers = await page.wait_for(
                    "(() => { const ids = [...document.querySelectorAll('#graph g.peer')]"
                    ".map(g => g.dataset.peer + ':' + g.getAttribute('class'));"
                    " return ids.length >= 2 ? ids : null; })()",
                    30,
                    "two peers in the graph",
                )
                assert any(p.startswith(nodes[0].peer_id + ":") and "self" in p for p in peers)
                assert any(p.startswith(nodes[1].peer_id + ":") and "live" in p for p in peers)
                assert await page.eval("document.querySelectorAll('#graph circle').length") == 2
                # The curves update: two samples over time, the second has more points.
                first = await page.wait_for(N_POINTS, 30, "loss points")
                await page.wait_for(f"{N_POINTS} > {first}", 60, "more loss points")
                second = int(await page.eval(N_POINTS))
                assert await page.eval(
                    "Number(document.querySelector('#loss-eval')?.dataset.points || 0)"
                ), "eval-loss curve is empty"
                assert await page.eval("!!document.querySelector('#bytes-in')")
                await page.screenshot(shot)
                # Curves survive a reload even when the node lost its own history: restart
                # node 0 without its history file; the page keeps its localStorage copy.
                nodes[0].kill()
                (nodes[0].ckpt_dir / HISTORY_FILE).unlink()
                nodes[0].start([nodes[1].addr])
                await trio.to_thread.run_sync(
                    lambda: wait_until(lambda: _up(base), 60, "restarted node's metrics", nodes)
                )
                served = len(json.loads(_get(base + "/api/state"))["history"])
                assert served < second, "the restarted node should have lost its history"
                await page.call("Page.reload", ignoreCache=True)
                await page.wait_for("document.body.dataset.polls", 30, "a poll after reload")
                kept = int(await page.wait_for(N_POINTS, 10, "points after reload"))
                assert kept >= second > served
                return first, second

        first, second = trio.run(drive)
        print(f"loss points: {first} -> {second}; screenshot: {shot}")
        assert shot.stat().st_size > 10_000
        keep = Path("/tmp/swarm-tune-dashboard.png")
        shutil.copy(shot, keep)
    finally:
        if browser is not None:
            browser.close()
        for n in nodes:
            n.kill()
