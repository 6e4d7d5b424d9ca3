"""Peers remembered on disk, tried first after a restart (A7.3).

``peers.json`` in the node's data directory holds the peers it was connected
to and a sample of its routing table, bridges included, and the address each
host name it connected by last resolved to (used when DNS fails, A6.4). A restarted node
dials them before it asks anyone else, so a network whose bootstrap servers
are all down still comes back together. Written atomically (a temporary file
renamed over the old one), so a crash mid-write never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from yzcore.transport import KNOWN_ADDRESSES
from yzcore.wire import ROLES, NodeInfo

__all__ = ["FILE_NAME", "load", "load_addresses", "save"]

log = logging.getLogger("yzcore.node")

FILE_NAME = "peers.json"
MAX_PEERS = 64


def load(data_dir: str) -> list[NodeInfo]:
    """The cached peers, most recently connected first; [] when there is no usable cache."""
    path = Path(data_dir) / FILE_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        peers = []
        for entry in doc["peers"][:MAX_PEERS]:
            node_id = bytes.fromhex(entry["id"])
            addr, role = entry["addr"], entry.get("role", "node")
            if len(node_id) == 32 and isinstance(addr, str) and addr and role in ROLES:
                peers.append(NodeInfo(node_id, addr, role))
        return peers
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the unreadable peer cache %s: %s", path, exc,
                    extra={"code": "PEER_CACHE_UNREADABLE"})
        return []


def load_addresses(data_dir: str) -> int:
    """Learn the host names' last known addresses the cache keeps (A6.4); how many."""
    try:
        doc = json.loads((Path(data_dir) / FILE_NAME).read_text(encoding="utf-8"))
        known = doc.get("addresses", {})
        if isinstance(known, dict):
            KNOWN_ADDRESSES.update(known)
            return len(known)
    except (OSError, ValueError, AttributeError):
        pass  # no cache, or one load() reports
    return 0


def save(data_dir: str, peers: Iterable[NodeInfo]) -> list[NodeInfo]:
    """Replace the cache with ``peers`` (those with an address, the first ``MAX_PEERS``);
    those written. Callers put what is on disk last (see the runtime's
    ``_cache_peers``): a node that knows nobody right now keeps what it knew."""
    # One entry an id, and one an address: the first id at an address wins (a node
    # restarted there without its key comes back as a new id).
    seen: set[bytes | str] = set()
    kept = []
    for p in peers:
        if p.addr and p.id not in seen and p.addr not in seen and len(kept) < MAX_PEERS:
            seen.update((p.id, p.addr))
            kept.append(p)
    rows = [{"id": p.id.hex(), "addr": p.addr, "role": p.role} for p in kept]
    path = Path(data_dir) / FILE_NAME
    tmp = path.with_name(".peers.tmp")  # one writer: the node holds the data dir's lock
    with open(tmp, "wb") as f:
        f.write(json.dumps({"saved_at": time.time(), "peers": rows,
                            "addresses": KNOWN_ADDRESSES.snapshot()}).encode())
        f.flush()
        os.fsync(f.fileno())  # on disk before it replaces the old one
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # and the rename on disk too
        fd = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return kept
