"""The engine's view of its routing table: contacts in, replies' contacts out, refreshes,
housekeeping, the size estimate.

A mixin of :class:`~yzcore.protocol.engine.Engine`, apart only to keep each
module to one job; it uses the engine's state.
"""

from __future__ import annotations

import random

from yzcore import routing
from yzcore.protocol.config import EngineConfig
from yzcore.wire import NodeInfo, Ping

__all__ = ["Neighbourhood"]


class Neighbourhood:
    """Routing-table helpers (mixed into the engine)."""

    config: EngineConfig
    rng: random.Random
    table: routing.RoutingTable
    info: NodeInfo
    _infos: dict[bytes, NodeInfo]

    def _table_add(self, info: NodeInfo, now: float, ip: str | None) -> None:
        status, other = self.table.add(info.id, info.addr, now, ip)  # type: ignore[arg-type]
        if status == routing.REPLACED and other not in self.peers:  # type: ignore[attr-defined]
            self.rpc.forget_peer(other)  # type: ignore[attr-defined,arg-type]  # its RTT goes too
        # The common role is the default: no dict per contact unless it differs.
        if info.role != "node" or getattr(self.table.get(info.id), "meta", None):
            self.table.update(info.id, meta={"role": info.role})
        cached = self._infos.get(info.id)
        if cached is not None and cached.role != info.role:
            del self._infos[info.id]  # _closest trusts a cached NodeInfo's role
        if status == routing.FULL and other is not None:
            # Ping the oldest, evicted if it does not answer — but only when it
            # has been quiet a while: pinging a fresh contact proves nothing,
            # and as the ping is itself a new connection for the pinged node,
            # pinging every time set off a chain of dials across the network.
            oldest = self.table.get(other)
            if oldest is not None and now - oldest.last_seen >= self.config.ping_quiet:
                self._request(NodeInfo(oldest.id, oldest.address), "ping", Ping, None, now)  # type: ignore[attr-defined]

    def _maintain(self, now: float) -> None:
        cfg = self.config
        self.store.expire(now)  # type: ignore[attr-defined]
        for key, value, ttl in self.store.due(now):  # type: ignore[attr-defined]
            o = self._ops[self._start("put", key, now, defer=True, notify=False)]  # type: ignore[attr-defined]
            o.value, o.ttl = value, ttl
            self._advance(o, now)  # type: ignore[attr-defined]
        for index in self.table.due_for_refresh(now, cfg.refresh_interval)[:2]:
            self._refresh(index, now)
        self._keep_connections(now)  # type: ignore[attr-defined]
        if self.limiter is not None:  # type: ignore[attr-defined]
            self.limiter.set_network_size(self.network_size_estimate())  # type: ignore[attr-defined]
            self.limiter.expire(now)  # type: ignore[attr-defined]

    def _closest(self, target: bytes, exclude: bytes) -> tuple[NodeInfo, ...]:
        # Every reply names k contacts: reuse their NodeInfo (frozen dataclasses
        # are slow to build) while the address still matches; a role change
        # drops the cached one (_table_add).
        cache, out, k = self._infos, [], self.config.k
        for c in self.table.nearest(target, k + 1):
            cid = c.id
            if cid == exclude:
                continue
            info = cache.get(cid)
            if info is None or info.addr != c.address:
                if len(cache) >= 4096:
                    cache.clear()
                meta = c.meta
                info = cache[cid] = NodeInfo(cid, c.address, meta.get("role", "node") if meta else "node")
            out.append(info)
        return tuple(out[:k])

    def _refresh_far_buckets(self, now: float) -> None:
        nearest = self.table.nearest(self.info.id, 1)
        if not nearest:
            return
        sizes, below = self.table.bucket_sizes(), self.config.join_refresh_below
        for index in range(self.table.bucket_of(nearest[0].id)):
            if sizes.get(index, 0) < below:  # else it already met live nodes there
                self._refresh(index, now)

    def _refresh(self, index: int, now: float) -> None:
        """Refresh bucket ``index``: a lookup of a random id in its range.

        Its purpose is to meet a few live nodes there (each verified
        connection enters the table, and tells them of us), not to prove the
        exact k closest, so it stops once the ``refresh_k`` closest answered:
        a handful of queries instead of k.
        """
        self._start("find_node", self._random_id_in(index), now, notify=False,  # type: ignore[attr-defined]
                    k=self.config.refresh_k)

    def _random_id_in(self, index: int) -> bytes:
        """A random id sharing exactly ``index`` leading bits with ours."""
        own = int.from_bytes(self.info.id, "big")
        flip = 1 << (255 - index)
        low = self.rng.getrandbits(255 - index) if index < 255 else 0
        value = ((own ^ flip) >> (255 - index) << (255 - index)) | low
        return value.to_bytes(32, "big")

    def network_size_estimate(self) -> int:
        """Estimated nodes in the network, from how close our k nearest contacts are.

        With fewer than k contacts the table holds the whole network its lookups
        found (a lookup of our own id finds the k closest): those and us. From two
        contacts the distance says 4 to 12 nodes, and a 3-node network, each node
        with its 2 peers, asked every node for 3 connections (unhealthy for good).
        """
        if len(self.table) < self.config.k:  # (stale contacts too: a degraded node is no guide)
            return len(self.table) + 1
        near = self.table.nearest(self.info.id, self.config.k)
        if not near:  # all stale
            return len(self.table) + 1
        own = int.from_bytes(self.info.id, "big")
        d_k = int.from_bytes(near[-1].id, "big") ^ own
        return max(len(near), min(2**40, len(near) * 2**256 // max(d_k, 1)))
