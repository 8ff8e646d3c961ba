"""Package exports that load on first use (PEP 562 ``__getattr__``).

Why: ``import swarm_tune.runtime.protocol.config`` runs the package's ``__init__`` first, and
an ``__init__`` that re-exports everything drags in torch (2 s of CPU) for a caller that only
wanted to validate a scenario or a setting. A package lists its exports as name -> submodule;
the submodule is imported when a name is first read. Type checkers see the real imports
under ``TYPE_CHECKING`` in the package itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``homes`` maps a name to its submodule
    (relative to ``package``); a name that maps to itself is that submodule."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{home}")
        return module if home == name else getattr(module, name)

    return __getattr__
