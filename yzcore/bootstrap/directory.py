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
  point. Healthy nodes come first in each group, in random order. The ids
  are kept sorted, so each group is a range found by bisection and an
  introduction costs O(log n), not a pass over every node: a server that
  knows 100,000 nodes answers a mass restart as fast as one that knows 100.
* **Genesis**: when nobody else is live, the asker is told it is the first
  node, so the first nodes of a network never wait forever. Since the asker
  is recorded at once, the next asker is introduced to it.
* **Bridges** register (authenticated by the server), are pinged every
  ``bridge_check`` seconds and are unhealthy after ``bridge_misses`` missed
  pongs in a row or at once when their connection drops: the verdict comes
  within ``bridge_check * (bridge_misses + 1)`` seconds plus one tick of the
  server's loop (about 7 s with the defaults; A5.3: within 10 s). A bridge
  whose connection closed is listed as down for ``bridge_ttl`` seconds, then
  forgotten (a bridge without a kept key comes back under a new id each time).
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from yzcore.ids import ID_BITS, ID_BYTES
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
        closed_at: ``now`` when its connection closed (None while open).
    """

    info: NodeInfo
    registered_at: float
    last_ok: float
    misses: int = 0
    connected: bool = True
    pending: float | None = None
    closed_at: float | None = None


class Directory:
    """Live nodes and bridges, and whom to introduce.

    Args:
        rng: The only source of randomness.
        node_ttl: A node not heard from this long is dropped.
        bridge_check: Seconds between bridge health checks.
        bridge_misses: Missed checks in a row that make a bridge unhealthy.
        bridge_ttl: A bridge whose connection closed this long ago is forgotten.
        max_nodes: Most nodes remembered; newcomers beyond it are not recorded.
    """

    def __init__(self, rng: random.Random, *, node_ttl: float = 30.0, bridge_check: float = 2.0,
                 bridge_misses: int = 2, bridge_ttl: float = 600.0,
                 max_nodes: int = 100_000) -> None:
        self.rng = rng
        self.max_nodes = max_nodes
        self.node_ttl = node_ttl
        self.bridge_check = bridge_check
        self.bridge_misses = bridge_misses
        self.bridge_ttl = bridge_ttl
        self.nodes: dict[bytes, NodeEntry] = {}
        self.bridges: dict[bytes, BridgeEntry] = {}
        self._introducible = _SortedIds()  # nodes of role "node"
        self._healthy = _SortedIds()  # those of them that reported healthy

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
        elif entry.info.role != info.role:  # leaves the index; rejoins it below if a node
            self._introducible.discard(info.id)
            self._healthy.discard(info.id)
        entry.info, entry.last_seen = info, now
        if info.role == "node":
            self._introducible.add(info.id)
            if entry.healthy is True:
                self._healthy.add(info.id)
        return entry

    def heartbeat(self, info: NodeInfo, now: float, *, healthy: bool, connections: int,
                  routing_table: int, probe: float | None, peers: tuple[bytes, ...] = (),
                  sent: int | None = None, received: int | None = None) -> None:
        entry = self.seen(info, now)
        if entry is not None:
            if entry.info.role == "node" and healthy is True:
                self._healthy.add(info.id)
            else:
                self._healthy.discard(info.id)
            entry.healthy, entry.connections = healthy, connections
            entry.routing_table, entry.probe = routing_table, probe
            entry.peers, entry.sent, entry.received = peers, sent, received

    def left(self, node_id: bytes) -> None:
        """A node's link to this server closed: its health is unknown (as before its first
        heartbeat) until a heartbeat says (a stopped node stays listed until ``node_ttl``;
        one that moved to another address reconnects within a heartbeat)."""
        entry = self.nodes.get(node_id)
        if entry is not None and entry.healthy is not None:
            entry.healthy = None
            self._healthy.discard(node_id)

    def expire(self, now: float) -> list[bytes]:
        """Drop nodes not heard from for ``node_ttl``, and bridges gone for ``bridge_ttl``;
        the nodes' ids."""
        for bridge_id in [i for i, e in self.bridges.items()
                          if e.closed_at is not None and now - e.closed_at > self.bridge_ttl]:
            del self.bridges[bridge_id]
        gone = [i for i, e in self.nodes.items() if now - e.last_seen > self.node_ttl]
        for node_id in gone:
            del self.nodes[node_id]
        if gone:
            self._introducible.keep(self.nodes)
            self._healthy.keep(self.nodes)
        return gone

    def introduce(self, asker: bytes, want: int) -> tuple[list[NodeInfo], list[NodeInfo], bool]:
        """(peers, bridges, genesis) for ``asker``."""
        groups = self._groups(asker)
        peers: list[NodeInfo] = []
        while len(peers) < want and groups:  # round-robin, the farthest group first
            for group in list(groups):
                node_id = group.draw(want)
                if node_id is None:
                    groups.remove(group)
                    continue
                peers.append(self.nodes[node_id].info)
                if len(peers) >= want:
                    break
        bridges = [b for b in self.healthy_bridges() if b.id != asker]
        return peers, bridges, not peers and not bridges

    def _groups(self, asker: bytes) -> list[_Group]:
        """The non-empty groups of introducible nodes, by the prefix length they share
        with ``asker``: group ``c`` is the range of ids that agree with it on ``c``
        leading bits and differ on the next."""
        a = int.from_bytes(asker, "big")
        ids = self._introducible.ids
        groups = []
        for shared in range(ID_BITS):
            shift = ID_BITS - 1 - shared
            below = (1 << shift) - 1
            lo = ((a >> shift) ^ 1) << shift
            span = self._introducible.span(lo, lo | below)
            if span[0] < span[1]:
                groups.append(_Group(self, span, self._healthy.span(lo, lo | below)))
            lo ^= 1 << shift  # the asker's side: ids that agree on one more bit
            i, j = self._introducible.span(lo, lo | below)
            if j - i == 0 or (j - i == 1 and ids[i] == asker):
                break  # nobody closer
        return groups

    # -- bridges ----------------------------------------------------------------

    def bridge_registered(self, info: NodeInfo, now: float) -> None:
        self.bridges[info.id] = BridgeEntry(info, now, now)

    def bridge_closed(self, bridge_id: bytes, now: float) -> None:
        entry = self.bridges.get(bridge_id)
        if entry is not None:
            entry.connected, entry.closed_at = False, now

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


class _SortedIds:
    """Ids in order: the ids sharing a prefix with any id are one range of it."""

    __slots__ = ("ids",)

    def __init__(self) -> None:
        self.ids: list[bytes] = []

    def add(self, node_id: bytes) -> None:
        i = bisect_left(self.ids, node_id)
        if i == len(self.ids) or self.ids[i] != node_id:
            self.ids.insert(i, node_id)

    def discard(self, node_id: bytes) -> None:
        i = bisect_left(self.ids, node_id)
        if i < len(self.ids) and self.ids[i] == node_id:
            del self.ids[i]

    def __contains__(self, node_id: bytes) -> bool:
        i = bisect_left(self.ids, node_id)
        return i < len(self.ids) and self.ids[i] == node_id

    def keep(self, nodes: dict[bytes, NodeEntry]) -> None:
        """Drop the ids no longer in ``nodes``."""
        self.ids = [i for i in self.ids if i in nodes]

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """The index range of the ids from ``lo`` to ``hi`` (inclusive)."""
        return (bisect_left(self.ids, lo.to_bytes(ID_BYTES, "big")),
                bisect_right(self.ids, hi.to_bytes(ID_BYTES, "big")))


class _Group:
    """The introducible nodes of one prefix length, drawn healthy first, each group
    in random order, without repeats.

    A small group is shuffled whole; a large one (more than four times what
    one introduction may take from it) is sampled by rejection, which then
    succeeds at least half the time: nothing scans a group of thousands.
    """

    __slots__ = ("all", "directory", "healthy", "order", "taken")

    def __init__(self, directory: Directory, span: tuple[int, int], healthy: tuple[int, int]) -> None:
        self.directory = directory
        self.all, self.healthy = span, healthy
        self.order: list[bytes] | None = None  # a small group, shuffled: drawn from its end
        self.taken: set[bytes] = set()

    def draw(self, want: int) -> bytes | None:
        d, (i, j), (hi, hj) = self.directory, self.all, self.healthy
        is_healthy = d._healthy.__contains__
        if self.order is None and j - i <= 4 * want:
            members = d._introducible.ids[i:j]
            d.rng.shuffle(members)
            members.sort(key=is_healthy)  # stable: the healthy last, drawn first
            self.order = members
        if self.order is not None:
            return self.order.pop() if self.order else None
        healthy = d._healthy.ids
        if sum(map(is_healthy, self.taken)) < hj - hi:
            if hj - hi <= 4 * want:  # few healthy ones: pick among those not taken
                left = [m for m in healthy[hi:hj] if m not in self.taken]
                pick = left[d.rng.randrange(len(left))]
            else:
                while (pick := healthy[d.rng.randrange(hi, hj)]) in self.taken:
                    pass
        else:  # every healthy one taken (at most want of over 4 * want): most are not
            ids = d._introducible.ids
            while (pick := ids[d.rng.randrange(i, j)]) in self.taken or is_healthy(pick):
                pass
        self.taken.add(pick)
        return pick
