"""The bridge role: a server node that relays for peers that cannot be dialled (A1.5, A5.x).

A bridge is a full DHT node (role ``bridge``) that also

* registers with every bootstrap server it is given, proving the shared
  secret (A5.1), and answers their health checks (A5.3);
* accepts WebSocket connections from nodes and browser-class peers (A5.2);
* relays: a connection whose first frame is ``relay`` is spliced to a new
  connection from the named peer, which it asks for with ``relay_open`` over
  that peer's own verified connection (see :mod:`yzcore_transports.bridge`);
* answers ``reconnect`` with live peers for a node that lost everything.

Relayed bytes are forwarded unchanged; the hello on top is end to end.
"""

from __future__ import annotations

import logging
from typing import Any

from yzcore import wire
from yzcore.runtime.node import Node
from yzcore.runtime.peer import PeerConnection
from yzcore.transport import relay_address
from yzcore.wire import NodeInfo

__all__ = ["Bridge"]

log = logging.getLogger("yzcore.bridge")

MAX_RELAYED_PEERS = 512  # peers without a listener this bridge keeps connections to


class Bridge(Node):
    """A bridge node; takes :class:`~yzcore.runtime.node.Node`'s arguments (role is fixed)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(role="bridge", **kwargs)

    def _may_relay(self, pc: PeerConnection) -> bool:
        return True  # a bridge relays for every peer connected to it

    def _relays_for(self, pc: PeerConnection) -> bool:
        """Pinned: the peer's signed address is its own id relayed by us (bounded)."""
        if not self.address or pc.peer.advertise != relay_address(self.address, pc.peer.id):
            return False
        pinned = sum(1 for p in self._engine.peers.values() if p.kept)
        return pinned < MAX_RELAYED_PEERS

    def _service(self, pc: PeerConnection, msg: wire.Message) -> None:
        if isinstance(msg, wire.Reconnect):  # the reconnection service
            pc.send(wire.Introductions(msg.rid, tuple(self._fresh_peers(pc.peer.id, msg.want)), (),
                                       False))
        else:
            super()._service(pc, msg)

    def _fresh_peers(self, asker: bytes, want: int) -> list[NodeInfo]:
        """Live peers for ``asker``: those connected now first, then the table's closest to it."""
        out = [p.info for i, p in self.conns.items()
               if i != asker and p.info.addr and p.info.role in ("node", "bridge")]
        seen = {p.id for p in out} | {asker}
        for c in self._engine.table.nearest(asker, want):
            if c.id not in seen and c.address:
                out.append(NodeInfo(c.id, c.address, (c.meta or {}).get("role", "node")))  # type: ignore[arg-type]
        return out[:want]

    def relay_status(self) -> dict[str, Any]:
        return {**super().relay_status(),
                "registered": [link.url for link in self.links if link.registered]}
