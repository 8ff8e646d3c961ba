"""The project's import graph, read with ``ast`` (no module is imported, nothing runs).

Every ``import``/``from ... import`` counts, wherever it sits: module level, inside a function
(lazy imports) or under ``TYPE_CHECKING``. A lazy import is still a dependency; the layering
rules are about what a module may know, not about when it loads it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AREAS = ("runtime", "sim", "analysis")  # top-level folders mapped into swarm_tune.*


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the importing module, e.g. swarm_tune.runtime.protocol.node
    target: str  # what it imports, absolute, e.g. swarm_tune.runtime.aggregation.rules
    where: str  # file:line


def module_of(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "swarm_tune." + ".".join(parts)


def source_files() -> Iterator[Path]:
    for area in AREAS:
        yield from sorted((ROOT / area).rglob("*.py"))


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    mod = module_of(path, root)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    where = f"{path.relative_to(root).as_posix()}"
    out: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [Import(mod, a.name, f"{where}:{node.lineno}") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            out.append(Import(mod, target, f"{where}:{node.lineno}"))
            # "from pkg import sub" may name a submodule: count it as well.
            out += [Import(mod, f"{target}.{a.name}", f"{where}:{node.lineno}") for a in node.names]
    return out


def all_imports() -> list[Import]:
    return [imp for path in source_files() for imp in imports_of(path)]


@cache
def is_module(name: str) -> bool:
    """Is ``name`` (swarm_tune.x.y) one of our modules or packages?"""
    if not name.startswith("swarm_tune."):
        return False
    rel = Path(*name.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def closure(start: str, imports: list[Import]) -> set[str]:
    """Every module of ours reachable from ``start`` (a module or package name)."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if is_module(imp.target):
            edges.setdefault(imp.module, set()).add(imp.target)
    seen: set[str] = set()
    todo = [start]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo += edges.get(mod, ())
        # Importing a package runs its __init__, and a module needs its parents' __init__.
        parent = mod.rsplit(".", 1)[0]
        if parent.count(".") >= 1:
            todo.append(parent)
    return seen
