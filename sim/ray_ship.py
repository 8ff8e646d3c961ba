"""Shipping the driver's own swarm-tune to Ray workers, and proving they ran it.

Why ship at all: a real cluster's workers are other machines. Asking each of them to have the
same swarm-tune installed is how a sweep silently runs yesterday's code on half its points.
The driver instead stages one copy of the package (the built wheel it is given, or the
package it is itself running from) and hands it to Ray's ``runtime_env`` as a ``py_modules``
directory: Ray uploads it once to the cluster and puts it first on every worker's path. The
workers still need the dependencies (torch, simpy, pandas, ...), as Ray's own images have.

Why a directory and not Ray's ``.whl`` support: Ray installs a wheel with ``pip install
--target``, which resolves every dependency again into the target (torch included) and needs
an index; an unpacked wheel is already an importable tree.

Why a fingerprint: the worker hashes the package it actually imported and the driver refuses
a result whose hash is not the shipped one, so "which code ran this point" is checked, not
assumed. The hash covers file names and bytes, not caches (``__pycache__``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE = "swarm_tune"


class ShipError(ValueError):
    """The code to ship is unusable (missing wheel, not a swarm-tune wheel, ...)."""


@dataclass(frozen=True, slots=True)
class CodeOrigin:
    """Where a process's swarm_tune was imported from, and the hash of that tree."""

    path: str
    sha256: str


def _files(root: Path) -> list[Path]:
    """Every file under ``root``, linked folders followed (a checkout's .pkg is links)."""
    found = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found += [Path(folder) / n for n in names if not n.endswith(".pyc")]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def tree_sha256(root: Path) -> str:
    """Hash of a package tree: every file's relative name and bytes, caches excluded."""
    h = hashlib.sha256()
    for p in _files(root):
        name = p.relative_to(root).as_posix().encode()
        data = p.read_bytes()
        h.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


@functools.cache
def running_code() -> CodeOrigin:
    """The swarm_tune this process imported (hashed once per process)."""
    import swarm_tune

    root = Path(swarm_tune.__file__).resolve().parent
    return CodeOrigin(str(root), tree_sha256(root))


def check_wheel(wheel: Path) -> None:
    """Refuse, before anything is written, a wheel that cannot be shipped."""
    if not wheel.is_file():
        raise ShipError(f"--ray-wheel {wheel}: no such file")
    if not zipfile.is_zipfile(wheel):
        raise ShipError(f"--ray-wheel {wheel}: not a wheel (not a zip archive)")
    with zipfile.ZipFile(wheel) as zf:
        if f"{PACKAGE}/__init__.py" not in zf.namelist():
            raise ShipError(f"--ray-wheel {wheel}: holds no {PACKAGE}/__init__.py")


def stage(dest: Path, wheel: Path | None = None) -> CodeOrigin:
    """Put the code to ship in ``dest/swarm_tune`` (real files, no links); return its origin.

    From ``wheel`` when given (only its ``swarm_tune/`` part: the rest is metadata), else a
    copy of the package this process runs, links followed (a checkout's .pkg tree is links).
    """
    target = dest / PACKAGE
    if wheel is not None:
        check_wheel(wheel)
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                name = Path(info.filename)
                if name.parts[0] != PACKAGE or info.is_dir():
                    continue
                if name.is_absolute() or ".." in name.parts:
                    raise ShipError(f"--ray-wheel {wheel}: unsafe member {info.filename!r}")
                out = dest / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(info))
    else:
        shutil.copytree(
            running_code().path,
            target,
            symlinks=False,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    return CodeOrigin(str(target), tree_sha256(target))


def init_target(address: str | None, cpus: int) -> dict[str, Any]:
    """``ray.init`` arguments for a cluster at ``address``, or (None) a fresh Ray of our own.

    Why ``"local"`` and not None: ``ray.init(address=None)`` may join the cluster named in
    ``<ray temp dir>/ray_current_cluster`` (the last ``ray start`` on this machine), even a
    dead one or somebody else's (Flower's run in benchmarks/ did, and retried for minutes).
    Why a loopback node address: Ray's default is the first network interface's, and a run
    on this machine alone has no business on the network. Why ``127.0.0.2``: ``ray.init``
    rewrites ``127.0.0.1`` (and ``localhost``) to that same interface address and keeps any
    other address as given; ``127.0.0.0/8`` is all loopback."""
    if address is not None:
        return {"address": address}
    return {"address": "local", "num_cpus": cpus, "_node_ip_address": "127.0.0.2"}


def runtime_env(staged: CodeOrigin) -> dict[str, object]:
    """The job's Ray runtime_env: the staged package first on every worker's path."""
    return {"py_modules": [staged.path]}
