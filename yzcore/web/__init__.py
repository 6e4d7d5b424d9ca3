"""Files a node serves to browsers: ``/yz-browser.js`` (the browser-class client, with
``/yz-peer.js`` and ``/yz-pubsub.js``, which it imports) and ``/demo``.

Plain files in this package, read once and served as they are (no build step).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["ASSETS", "asset"]

#: URL path -> (file in this package, content type)
ASSETS = {
    "/yz-browser.js": ("yz-browser.js", "text/javascript; charset=utf-8"),
    "/yz-peer.js": ("yz-peer.js", "text/javascript; charset=utf-8"),  # imported by yz-browser.js
    "/yz-pubsub.js": ("yz-pubsub.js", "text/javascript; charset=utf-8"),  # and this one
    "/demo": ("demo.html", "text/html; charset=utf-8"),
}


def asset(path: str) -> tuple[bytes, str] | None:
    """(body, content type) of the file served at ``path``, or None."""
    entry = ASSETS.get(path)
    if entry is None:
        return None
    name, content_type = entry
    return _read(name), content_type


@cache  # keyed by file name: a few entries, whatever paths clients ask for
def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()
