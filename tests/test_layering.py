"""The allowed import directions between the project's areas (docs/architecture.md), pinned.

Read with ``ast`` over every source file (lazy and TYPE_CHECKING imports included), so a
rule broken anywhere fails here with file:line. The last test breaks a copy of one file at a
time on purpose and checks that the rules notice.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from import_graph import ROOT, Import, all_imports, closure, imports_of, source_files

# Area of a module: swarm_tune.runtime.<sub> for runtime's subpackages, else the top folder.
RUNTIME_TOP = "swarm_tune.runtime"


def area(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "runtime":
        sub = parts[2]
        if sub in ("cli", "lazy_cli"):
            return "cli"
        # runtime/<module>.py beside the areas (e.g. lazy_exports): shared plumbing that any
        # area may import; the core's closure rules still apply to it.
        return sub if (ROOT / "runtime" / sub).is_dir() else "runtime"
    return parts[1] if len(parts) > 1 else parts[0]


# What each area may import of ours (besides itself). Everything else is refused.
ALLOWED: dict[str, set[str]] = {
    "protocol": {"aggregation", "compression"},  # the core: rules, averaging, codecs
    "aggregation": set(),
    "compression": {"protocol"},  # ModelSpec/TensorDict only (tensors.py)
    "adversary": {"protocol", "aggregation"},
    "wire": set(),
    "training": {"protocol", "compression"},
    "ops": {"protocol", "training", "wire", "adversary", "aggregation", "compression"},
    "eval": {"ops", "training"},  # benchmark/compete/reconstruct/publish finished runs
    "net": {
        "protocol",
        "wire",
        "training",
        "ops",
        "adversary",
        "compression",
        "aggregation",
    },
    "sim": {
        "protocol",
        "training",
        "aggregation",
        "compression",
        "adversary",
        "ops",
        "analysis",
        "cli",
    },
    "analysis": {"cli"},  # reads run folders; knows no runtime I/O
    "cli": {
        "protocol",
        "ops",
        "eval",
        "net",
        "sim",
        "analysis",
        "training",
        "wire",
        "adversary",
        "aggregation",
        "compression",
    },
    "runtime": set(),  # runtime/__init__.py: the guard only
}

# The core (protocol and everything it imports) does no I/O, reads no clock, runs no loop,
# has no CLI: none of these may be imported anywhere in its closure.
CORE_FORBIDDEN = {
    "trio",
    "simpy",
    "libp2p",
    "asyncio",
    "socket",
    "time",
    "datetime",
    "threading",
    "subprocess",
    "os",
    "pathlib",
    "typer",
    "rich",
    "click",
    "structlog",
    "logging",
    "multiaddr",
    "selectors",
    "signal",
}
# analysis turns run folders into reports: no network, no event loop, no node runtime.
ANALYSIS_FORBIDDEN = {"trio", "libp2p", "socket", "asyncio", "simpy", "multiaddr"}
PLUMBING = ("cli", "runtime")


def violations(imports: list[Import]) -> list[str]:
    out = []
    for imp in imports:
        top = imp.target.split(".")[0]
        if top in ("runtime", "sim", "analysis"):
            out.append(f"{imp.where}: bare import {imp.target!r} (use swarm_tune.{imp.target})")
        if not imp.target.startswith("swarm_tune."):
            continue
        a, b = area(imp.module), area(imp.target)
        if b in ("swarm_tune", "") or a == b or b == "runtime":
            continue
        if b not in ALLOWED.get(a, set()):
            out.append(f"{imp.where}: {a} may not import {b} ({imp.target})")
    return out


def core_violations(imports: list[Import]) -> list[str]:
    core = set()
    for path in (ROOT / "runtime" / "protocol").glob("*.py"):
        mod = "swarm_tune.runtime.protocol" + ("" if path.stem == "__init__" else f".{path.stem}")
        core |= closure(mod, imports)
    out = []
    for imp in imports:
        if imp.module in core and imp.target.split(".")[0] in CORE_FORBIDDEN:
            out.append(f"{imp.where}: the core's closure imports {imp.target}")
        if imp.module in core and area(imp.target) in ("net", "ops", "sim", "cli", "training"):
            out.append(f"{imp.where}: the core's closure imports a driver/I/O area {imp.target}")
    return out


def analysis_violations(imports: list[Import]) -> list[str]:
    return [
        f"{imp.where}: analysis imports {imp.target}"
        for imp in imports
        if area(imp.module) == "analysis"
        and (
            imp.target.split(".")[0] in ANALYSIS_FORBIDDEN
            # the CLI, and runtime/<module>.py plumbing beside the areas (the one progress
            # bar every long command shows): no node runtime, no network, no event loop
            or (imp.target.startswith(RUNTIME_TOP + ".") and area(imp.target) not in PLUMBING)
        )
    ]


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    found = all_imports()
    assert len(found) > 500 and len(list(source_files())) > 100  # the walk really ran
    return found


def test_areas_import_only_in_allowed_directions(imports: list[Import]) -> None:
    assert violations(imports) == []


def test_sim_and_net_never_import_each_other(imports: list[Import]) -> None:
    # Also implied by ALLOWED; spelled out because it is the design's first promise.
    pairs = {(area(i.module), area(i.target)) for i in imports if i.target.startswith("swarm_")}
    assert ("sim", "net") not in pairs and ("net", "sim") not in pairs


def test_protocol_core_is_pure(imports: list[Import]) -> None:
    assert core_violations(imports) == []


def test_analysis_imports_no_runtime_io(imports: list[Import]) -> None:
    assert analysis_violations(imports) == []


def test_bare_top_level_import_is_refused() -> None:
    code = "import runtime.protocol.rounds"
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert res.returncode != 0 and "import swarm_tune.runtime" in res.stderr


@pytest.mark.parametrize(
    ("file", "line", "rule"),
    [
        ("runtime/protocol/rounds.py", "import time", "the core's closure imports time"),
        ("runtime/aggregation/weighted.py", "import trio", "the core's closure imports trio"),
        ("sim/network.py", "from swarm_tune.runtime.net import driver", "sim may not import net"),
        ("runtime/net/timers.py", "import swarm_tune.sim.runner", "net may not import sim"),
        ("analysis/load.py", "from swarm_tune.runtime.ops import settings", "analysis imports"),
        (
            "runtime/ops/join.py",
            "from swarm_tune.runtime.net import node",
            "ops may not import net",
        ),
        ("sim/runner.py", "from runtime.protocol import rounds", "bare import"),
    ],
)
def test_rules_fail_when_broken(
    tmp_path: Path, imports: list[Import], file: str, line: str, rule: str
) -> None:
    """Each rule, broken once (one import appended to a copy of one file), is reported."""
    broken = tmp_path / file
    broken.parent.mkdir(parents=True)
    broken.write_text((ROOT / file).read_text(encoding="utf-8") + f"\n{line}\n", "utf-8")
    mine = imports_of(broken, tmp_path)
    found = [i for i in imports if i.module != mine[0].module] + mine
    problems = violations(found) + core_violations(found) + analysis_violations(found)
    assert any(rule in p for p in problems), problems
