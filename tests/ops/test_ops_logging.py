"""Logging: JSON lines that parse, bound node context, stdlib records in the same stream."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from swarm_tune.runtime.ops.logging import configure_logging, get_logger, resolve_format
from swarm_tune.runtime.ops.settings import NodeSettings


class FakeTTY(io.StringIO):
    """A text stream that reports being a terminal (the one thing auto mode looks at)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.delenv("SWARM_LOG_FORMAT", raising=False)
    root, lib = logging.getLogger(), logging.getLogger("libp2p")
    handlers, level = list(root.handlers), root.level
    lib_state = (lib.propagate, lib.level)
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)
    lib.propagate, lib.level = lib_state


def test_json_lines_parse_and_carry_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    buf = io.StringIO()
    settings = NodeSettings(node_id="n7", run_id="r1", log_level="DEBUG", log_format="json")
    configure_logging(settings, stream=buf)
    log = get_logger("swarm_tune.test")
    log.info("round_closed", round=3, peers=5, loss=1.25)
    log.debug("detail", path=Path("/x"))
    logging.getLogger("somelib.sub").warning("fail to deliver %s", "msg")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("crashed")
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [r["event"] for r in records] == [
        "round_closed",
        "detail",
        "fail to deliver msg",
        "crashed",
    ]
    assert all(r["node_id"] == "n7" and r["run_id"] == "r1" for r in records)
    assert records[0]["round"] == 3 and records[0]["loss"] == 1.25
    assert records[0]["level"] == "info" and records[0]["logger"] == "swarm_tune.test"
    assert records[1]["path"] == "/x"  # non-JSON types are stringified, not fatal
    assert records[2]["logger"] == "somelib.sub" and records[2]["level"] == "warning"
    assert "ValueError: boom" in records[3]["exception"]
    assert records[0]["timestamp"].endswith("Z")


def test_libp2p_warnings_join_the_json_stream() -> None:
    import libp2p  # noqa: F401 - its import resets the "libp2p" logger (the case under test)

    buf = io.StringIO()
    configure_logging("DEBUG", "json", stream=buf)
    logging.getLogger("libp2p.pubsub").info("noise")  # kept at WARNING
    logging.getLogger("libp2p.pubsub").warning("fail to deliver message to subscription")
    records = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [(r["logger"], r["event"]) for r in records] == [
        ("libp2p.pubsub", "fail to deliver message to subscription")
    ]


def test_level_filters_both_structlog_and_stdlib() -> None:
    buf = io.StringIO()
    configure_logging("WARNING", "json", stream=buf)
    get_logger("a").info("hidden")
    logging.getLogger("b").info("hidden too")
    get_logger("a").error("shown")
    assert [json.loads(x)["event"] for x in buf.getvalue().splitlines()] == ["shown"]


def test_auto_format_follows_the_stream() -> None:
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("auto", FakeTTY()) == "console"
    assert resolve_format("json", FakeTTY()) == "json"
    tty = FakeTTY()
    configure_logging("INFO", "auto", stream=tty)
    get_logger("c").info("hello_console", k=1)
    text = re.sub(r"\x1b\[[0-9;]*m", "", tty.getvalue())  # drop colours
    assert "hello_console" in text and "k=1" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_env_format_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_LOG_FORMAT", "console")
    assert resolve_format(None, io.StringIO()) == "console"
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD")


def test_reconfigure_replaces_handler_not_duplicates() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", stream=first)
    configure_logging("INFO", "json", stream=second, context={"node_id": "x"})
    get_logger("d").info("once")
    assert first.getvalue() == ""
    assert [json.loads(x)["node_id"] for x in second.getvalue().splitlines()] == ["x"]


def test_json_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    # A real process whose stderr is a pipe (not a TTY): auto must give JSON.
    code = (
        "from swarm_tune.runtime.ops.logging import configure_logging, get_logger\n"
        "from swarm_tune.runtime.ops.settings import load_settings\n"
        "configure_logging(load_settings())\n"
        "get_logger('p').info('started', port=1)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env.update(SWARM_NODE_ID="piped", SWARM_LOG_FORMAT="auto")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stderr.strip().splitlines()[-1])
    assert record["event"] == "started" and record["node_id"] == "piped"
    assert done.stdout == ""
