"""The core must stay sans-I/O: no event loop, network stack or clock, checked two ways.

* Statically, for every name in FORBIDDEN: no module in the core's import closure (the
  protocol package and everything of ours it imports, lazily or not) imports it.
* Dynamically: importing the core in a fresh interpreter loads none of them beyond what
  torch and numpy (which the core needs) already loaded. A name torch loads itself (socket,
  time, ...) cannot be seen this way, which is why the static check covers every name.
"""

from __future__ import annotations

import json
import subprocess
import sys

from import_graph import ROOT, all_imports, closure

FORBIDDEN = ("simpy", "trio", "libp2p", "asyncio", "socket", "time", "datetime", "threading")


def core_modules() -> set[str]:
    imports = all_imports()
    core: set[str] = set()
    for path in (ROOT / "runtime" / "protocol").glob("*.py"):
        stem = "" if path.stem == "__init__" else f".{path.stem}"
        core |= closure(f"swarm_tune.runtime.protocol{stem}", imports)
    return core


def test_no_module_of_the_core_imports_a_forbidden_name() -> None:
    imports = all_imports()
    core = core_modules()
    assert "swarm_tune.runtime.protocol.node" in core and len(core) > 15
    bad = {
        f"{i.where}: {i.target}"
        for i in imports
        if i.module in core and i.target.split(".")[0] in FORBIDDEN
    }
    assert bad == set()


def test_importing_the_core_loads_no_event_loop_or_network() -> None:
    code = (
        "import json, sys\n"
        "import numpy, torch  # the core needs these; what matters is what *we* add\n"
        "before = set(sys.modules)\n"
        "import swarm_tune.runtime.protocol.node, swarm_tune.runtime.protocol.config\n"
        "new = set(sys.modules) - before\n"
        f"names = {list(FORBIDDEN)!r}\n"
        "print(json.dumps({'new': sorted(m for m in new if m.split('.')[0] in names),\n"
        "                  'blind': sorted(n for n in names if n in before)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["new"] == [], f"the protocol core imported {seen['new']}"
    # Every name the dynamic check cannot see is covered by the static test above.
    assert set(seen["blind"]) <= set(FORBIDDEN)
