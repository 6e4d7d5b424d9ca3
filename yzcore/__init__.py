"""yzcore: a Kademlia DHT network that keeps working when real networks misbehave."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from yzcore._impl import USE_EXTENSIONS
from yzcore.exceptions import YzError

try:
    __version__ = _version("yzcore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "USE_EXTENSIONS", "YzError"]
