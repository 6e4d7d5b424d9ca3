"""What a bootstrap server knows: live nodes, registered bridges, their health.

Sans-I/O: every method takes the caller's ``now``; randomness comes from an
injected ``random.Random``. The server (:mod:`yzcore.bootstrap.server`) feeds
it what it hears and asks it whom to introduce.

* **Nodes** are live while their heartbeats (or introduce requests) keep
  arriving; an entry not heard from for ``node_ttl`` seconds is dropped, so a
  crashed node stops being introduced by itself.
* **Introductions** are spread across the id space as the asker sees it: the
  live nodes are grouped by the length of the prefix they share with the
  asker (its k-bucket index) and drawn round-robin from the groups, so a new
  node gets far contacts and near ones, not twenty neighbours of one random
  point. Healthy nodes come first in each group.
* **Genesis**: when nobody else is live, the asker is told it is the first
  node, so the first nodes of a network never wait forever. Since the asker
  is recorded at once, the next asker is introduced to it.
* **Bridges** register (authenticated by the server), are pinged every
  ``bridge_check`` seconds and are unhealthy after ``bridge_misses`` missed
  pongs in a row or at once when their connection drops: the verdict comes
  within ``bridge_check * (bridge_misses + 1)`` seconds plus one tick of the
  server's loop (about 7 s with the defaults; A5.3: within 10 s).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from yzcore.ids import common_prefix_len
from yzcore.wire import NodeInfo

__all__ = ["BridgeEntry", "Directory", "NodeEntry"]


@dataclass(slots=True)
class NodeEntry:
    """A node the server has heard from.

    Attributes:
        info: Its id, advertised address and role.
        last_seen: ``now`` of its last heartbeat or request.
        healthy: Its health as it last reported it (None before a heartbeat).
        connections: Its live connections, as reported.
        routing_table: Its routing-table size, as reported.
        probe: Seconds its last find_node took, as reported.
        peers: The ids it is connected to, as reported.
        sent: Frames it has sent, as reported (None: not reported).
        received: Frames it has received, as reported.
    """

    info: NodeInfo
    last_seen: float
    healthy: bool | None = None
    connections: int = 0
    routing_table: int = 0
    probe: float | None = None
    peers: tuple[bytes, ...] = ()
    sent: int | None = None
    received: int | None = None


@dataclass(slots=True)
class BridgeEntry:
    """A bridge that proved the shared secret.

    Attributes:
        info: Its id, advertised address and role.
        registered_at: ``now`` of its registration.
        last_ok: ``now`` of its last answered health check.
        misses: Health checks in a row it did not answer.
        connected: Its registration connection is open.
        pending: ``now`` of the unanswered health check, if any.
    """

    info: NodeInfo
    registered_at: float
    last_ok: float
    misses: int = 0
    connected: bool = True
    pending: float | None = None


class Directory:
    """Live nodes and bridges, and whom to introduce.

    Args:
        rng: The only source of randomness.
        node_ttl: A node not heard from this long is dropped.
        bridge_check: Seconds between bridge health checks.
        bridge_misses: Missed checks in a row that make a bridge unhealthy.
        max_nodes: Most nodes remembered; newcomers beyond it are not recorded.
    """

    def __init__(self, rng: random.Random, *, node_ttl: float = 30.0, bridge_check: float = 2.0,
                 bridge_misses: int = 2, max_nodes: int = 100_000) -> None:
        self.rng = rng
        self.max_nodes = max_nodes
        self.node_ttl = node_ttl
        self.bridge_check = bridge_check
        self.bridge_misses = bridge_misses
        self.nodes: dict[bytes, NodeEntry] = {}
        self.bridges: dict[bytes, BridgeEntry] = {}

    # -- nodes ----------------------------------------------------------------

    def seen(self, info: NodeInfo, now: float) -> NodeEntry | None:
        """A node spoke to us; None for peers that are never introduced (no address)."""
        if info.role not in ("node", "bridge") or not info.addr:
            return None
        entry = self.nodes.get(info.id)
        if entry is None:
            if len(self.nodes) >= self.max_nodes:
                return None  # full: new keys are free to make, memory is not
            entry = self.nodes[info.id] = NodeEntry(info, now)
        entry.info, entry.last_seen = info, now
        return entry

    def heartbeat(self, info: NodeInfo, now: float, *, healthy: bool, connections: int,
                  routing_table: int, probe: float | None, peers: tuple[bytes, ...] = (),
                  sent: int | None = None, received: int | None = None) -> None:
        entry = self.seen(info, now)
        if entry is not None:
            entry.healthy, entry.connections = healthy, connections
            entry.routing_table, entry.probe = routing_table, probe
            entry.peers, entry.sent, entry.received = peers, sent, received

    def expire(self, now: float) -> list[bytes]:
        """Drop nodes not heard from for ``node_ttl``; their ids."""
        gone = [i for i, e in self.nodes.items() if now - e.last_seen > self.node_ttl]
        for node_id in gone:
            del self.nodes[node_id]
        return gone

    def introduce(self, asker: bytes, want: int) -> tuple[list[NodeInfo], list[NodeInfo], bool]:
        """(peers, bridges, genesis) for ``asker``."""
        groups: dict[int, list[NodeEntry]] = {}
        for node_id, entry in self.nodes.items():
            if node_id != asker and entry.info.role == "node":
                groups.setdefault(common_prefix_len(asker, node_id), []).append(entry)
        for members in groups.values():
            self.rng.shuffle(members)
            members.sort(key=lambda e: e.healthy is not True)  # stable: healthy first
        peers: list[NodeInfo] = []
        order = sorted(groups)
        while len(peers) < want and order:
            for index in list(order):
                members = groups[index]
                peers.append(members.pop(0).info)
                if not members:
                    order.remove(index)
                if len(peers) >= want:
                    break
        bridges = [b for b in self.healthy_bridges() if b.id != asker]
        return peers, bridges, not peers and not bridges

    # -- bridges ----------------------------------------------------------------

    def bridge_registered(self, info: NodeInfo, now: float) -> None:
        self.bridges[info.id] = BridgeEntry(info, now, now)

    def bridge_closed(self, bridge_id: bytes) -> None:
        entry = self.bridges.get(bridge_id)
        if entry is not None:
            entry.connected = False

    def bridge_answered(self, bridge_id: bytes, now: float) -> None:
        entry = self.bridges.get(bridge_id)
        if entry is not None:
            entry.last_ok, entry.misses, entry.pending = now, 0, None

    def bridges_to_check(self, now: float) -> list[bytes]:
        """Bridges due a health check; counts the unanswered previous check as missed."""
        due = []
        for bridge_id, entry in self.bridges.items():
            if not entry.connected:
                continue
            if entry.pending is not None:
                if now - entry.pending < self.bridge_check:
                    continue
                entry.misses += 1
            elif now - entry.last_ok < self.bridge_check:
                continue
            entry.pending = now
            due.append(bridge_id)
        return due

    def bridge_healthy(self, entry: BridgeEntry) -> bool:
        return entry.connected and entry.misses < self.bridge_misses

    def healthy_bridges(self) -> list[NodeInfo]:
        return [e.info for e in self.bridges.values() if self.bridge_healthy(e)]
