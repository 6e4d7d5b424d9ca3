"""The engine's view of its routing table: replies' contacts, refreshes, the size estimate.

A mixin of :class:`~yzcore.protocol.engine.Engine`, apart only to keep each
module to one job; it uses the engine's state.
"""

from __future__ import annotations

import random

from yzcore import routing
from yzcore.protocol.config import EngineConfig
from yzcore.wire import NodeInfo

__all__ = ["Neighbourhood"]


class Neighbourhood:
    """Routing-table helpers (mixed into the engine)."""

    config: EngineConfig
    rng: random.Random
    table: routing.RoutingTable
    info: NodeInfo
    _infos: dict[bytes, NodeInfo]

    def _closest(self, target: bytes, exclude: bytes) -> tuple[NodeInfo, ...]:
        # Every reply names k contacts: reuse their NodeInfo (frozen dataclasses
        # are slow to build) while the address and role still match.
        cache, out = self._infos, []
        for c in self.table.nearest(target, self.config.k + 1):
            if c.id == exclude:
                continue
            role = c.meta.get("role", "node") if c.meta else "node"
            info = cache.get(c.id)
            if info is None or info.addr != c.address or info.role != role:
                if len(cache) >= 4096:
                    cache.clear()
                info = cache[c.id] = NodeInfo(c.id, c.address, role)
            out.append(info)
        return tuple(out[: self.config.k])

    def _refresh_far_buckets(self, now: float) -> None:
        nearest = self.table.nearest(self.info.id, 1)
        if not nearest:
            return
        for index in range(self.table.bucket_of(nearest[0].id)):
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
        """Estimated nodes in the network, from how close our k nearest contacts are."""
        near = self.table.nearest(self.info.id, self.config.k)
        if not near:
            return 1
        own = int.from_bytes(self.info.id, "big")
        d_k = int.from_bytes(near[-1].id, "big") ^ own
        return max(len(near), min(2**40, len(near) * 2**256 // max(d_k, 1)))
