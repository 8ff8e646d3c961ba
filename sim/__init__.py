"""Swarm-Tune's ``sim`` area (docs/architecture.md: what lives here, what it may import).

Import it as ``swarm_tune.sim`` (.pkg/swarm_tune links the top-level folder there). The
guard below refuses a bare ``import sim...`` (e.g. with the repo root on sys.path): that
would load a second copy of every module, with classes (such as the core's ``Phase``) that
are not the ones the rest of the code compares against.
"""

if __name__ != "swarm_tune.sim":
    raise ImportError(
        f"import swarm_tune.sim, not {__name__!r}: the bare name loads a second copy of "
        "every module (see docs/architecture.md)"
    )

# The notebook entry point (sim/api.py), loaded on first use: importing a submodule such as
# swarm_tune.sim.scenario must not pull in the simulator, pandas and torch.
from typing import TYPE_CHECKING

from swarm_tune.runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from swarm_tune.sim.api import SimRun, run
    from swarm_tune.sim.scenario import Scenario, ScenarioError

__all__ = ["Scenario", "ScenarioError", "SimRun", "run"]
__getattr__ = lazy_exports(
    __name__,
    {"run": "api", "SimRun": "api", "Scenario": "scenario", "ScenarioError": "scenario"},
)
