"""Files shipped inside the package: corpus + tokenizer (data/), scenarios/, run manifests (runs/).

Why importlib.resources and not a path relative to ``__file__``: in a checkout the top-level
folders sit beside runtime/, but in an installed wheel there is no repository around
site-packages; the build maps data/, scenarios/ and runs/ into the ``swarm_tune`` package
(symlinks in .pkg/swarm_tune, package-data in pyproject.toml), so asking the package for its
files finds them in both places, editable install included.

Why a real ``Path`` and not a Traversable: the tokenizer library, hashing and the data loader
take file paths. A wheel is always installed as files; a zipped import is refused clearly.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

__all__ = ["ShippedKind", "shipped_dir", "shipped_scenario", "shipped_scenarios"]

ShippedKind = Literal["data", "scenarios", "runs"]


def shipped_dir(kind: ShippedKind) -> Path:
    """The folder of shipped ``kind`` files (inside the installed package or the checkout)."""
    root = files("swarm_tune")
    if not isinstance(root, Path):
        raise RuntimeError(
            f"swarm_tune is imported from {root!s}, not from files: install it unzipped"
        )
    return root / kind


def shipped_scenarios() -> dict[str, Path]:
    """Shipped scenario name (file stem) -> its YAML file, sorted by name."""
    return {p.stem: p for p in sorted(shipped_dir("scenarios").glob("*.yaml"))}


def shipped_scenario(name: str) -> Path:
    """The shipped scenario ``name`` (``quickstart`` or ``quickstart.yaml``); KeyError names
    the ones there are."""
    known = shipped_scenarios()
    stem = name.removesuffix(".yaml")
    if stem not in known:
        raise KeyError(f"no shipped scenario {name!r}; there are: {', '.join(known)}")
    return known[stem]
