"""The Kademlia routing table: k-buckets, replacement caches, stale marks.

Chooses the compiled implementation when it is available (see
:data:`yzcore.USE_EXTENSIONS`); the pure twin :mod:`yzcore._kbucket_py`
documents the algorithm and the result statuses.
"""

from __future__ import annotations

from yzcore._impl import pick

_kb = pick("_kbucket")

RoutingTable = _kb.RoutingTable
Contact = _kb.Contact
ADDED: str = _kb.ADDED
UPDATED: str = _kb.UPDATED
FULL: str = _kb.FULL
REPLACED: str = _kb.REPLACED
IP_LIMIT: str = _kb.IP_LIMIT
SELF: str = _kb.SELF
STALE: str = _kb.STALE
EVICTED: str = _kb.EVICTED
REMOVED: str = _kb.REMOVED
UNKNOWN: str = _kb.UNKNOWN

__all__ = [
    "RoutingTable", "Contact", "ADDED", "UPDATED", "FULL", "REPLACED", "IP_LIMIT",
    "SELF", "STALE", "EVICTED", "REMOVED", "UNKNOWN",
]
