"""Puts tests/support on sys.path, once, before any test module is imported.

Why here: pytest runs in rootdir mode without packages (each test folder is put on sys.path
by itself), so helpers shared between folders need one place that makes them importable
by a plain ``import procs``; a sys.path line in every test module would be copy-paste.
"""

from __future__ import annotations

import sys
from pathlib import Path

_SUPPORT = str(Path(__file__).resolve().parent / "support")
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)
