"""Chooses between the compiled hot paths and their pure-Python twins.

All or nothing: either every compiled module imports and all of them are
used, or none is. ``YZCORE_NO_EXTENSIONS=1`` forces the twins.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

__all__ = ["NO_EXTENSIONS", "USE_EXTENSIONS", "pick", "COMPILED"]

COMPILED = ("_xor", "_kbucket", "_ratelimit")
NO_EXTENSIONS = os.environ.get("YZCORE_NO_EXTENSIONS", "").strip() not in ("", "0")

_log = logging.getLogger("yzcore")


def _load_compiled() -> dict[str, ModuleType] | None:
    if NO_EXTENSIONS:
        return None
    modules = {}
    for name in COMPILED:
        try:
            modules[name] = importlib.import_module(f"yzcore.{name}")
        except ImportError as exc:
            _log.debug(
                "compiled module yzcore.%s unavailable (%s); using the pure-Python twins",
                name,
                exc,
            )
            return None
    return modules


_COMPILED_MODULES = _load_compiled()
USE_EXTENSIONS = _COMPILED_MODULES is not None


def pick(name: str) -> ModuleType:
    """Return the module that implements ``name`` (e.g. ``"_xor"``) in this process."""
    if _COMPILED_MODULES is not None:
        return _COMPILED_MODULES[name]
    return importlib.import_module(f"yzcore.{name}_py")
