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
import os
from typing import Any

import anyio

from yzcore import wire
from yzcore.exceptions import TransportError, WireError
from yzcore.runtime.node import Node
from yzcore.runtime.peer import PeerConnection
from yzcore.transport import Connection, relay_address
from yzcore.wire import ErrorCode, NodeInfo

__all__ = ["Bridge"]

log = logging.getLogger("yzcore.bridge")

RELAY_ANSWER_TIMEOUT = 5.0  # seconds the relayed peer has to connect back
MAX_RELAYS = 1024  # spliced connections at once
MAX_RELAYS_PER_PEER = 64
MAX_RELAYED_PEERS = 512  # peers without a listener this bridge keeps connections to


class Bridge(Node):
    """A bridge node; takes :class:`~yzcore.runtime.node.Node`'s arguments (role is fixed)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(role="bridge", **kwargs)
        # token -> (answered, [(the peer's connection, set when the splice ends)])
        self._waiting: dict[bytes, tuple[anyio.Event, list[tuple[Connection, anyio.Event]]]] = {}
        self.relays: dict[bytes, int] = {}  # spliced connections per relayed peer
        self.relayed_frames = 0

    async def _accepted(self, conn: Connection, first: bytes | None = None) -> None:
        if first is None:
            with anyio.move_on_after(self.handshake_timeout):
                try:
                    first = await conn.receive()
                except TransportError:
                    return
            if first is None:
                return
        try:
            msg = wire.decode(first)
        except WireError:
            msg = None  # the handshake answers it with its code
        if isinstance(msg, wire.RelayConnect):
            await self._relay_dialer(conn, msg.to)
        elif isinstance(msg, wire.RelayAccept):
            await self._relay_target(conn, msg.token)
        else:
            await super()._accepted(conn, first)

    async def _refuse(self, conn: Connection, text: str) -> None:
        self._record(str(ErrorCode.RELAY_UNAVAILABLE), None, text)
        try:
            await conn.send(wire.encode(wire.Error(None, ErrorCode.RELAY_UNAVAILABLE,
                                                   f"{text}. {wire.advice(ErrorCode.RELAY_UNAVAILABLE)}")))
        except TransportError:
            pass
        await conn.close()

    async def _relay_dialer(self, conn: Connection, target: bytes) -> None:
        pc = self.conns.get(target)
        if pc is None:
            await self._refuse(conn, f"relay to {target.hex()[:16]} from {conn.remote_address}: "
                               "that peer holds no connection to this bridge")
            return
        if sum(self.relays.values()) >= MAX_RELAYS or self.relays.get(target, 0) >= MAX_RELAYS_PER_PEER:
            await self._refuse(conn, f"relay to {target.hex()[:16]}: too many relayed connections")
            return
        # The slot is taken now, not once spliced: a burst of requests cannot
        # pass the check together, and a waiting request counts too.
        self.relays[target] = self.relays.get(target, 0) + 1
        try:
            await self._relay(conn, target, pc)
        finally:
            self.relays[target] -= 1
            if not self.relays[target]:
                del self.relays[target]

    async def _relay(self, conn: Connection, target: bytes, pc: PeerConnection) -> None:
        token = os.urandom(16)
        event = anyio.Event()
        slot: list[tuple[Connection, anyio.Event]] = []
        self._waiting[token] = (event, slot)
        pc.send(wire.RelayOpen(token))
        with anyio.move_on_after(RELAY_ANSWER_TIMEOUT):
            await event.wait()
        self._waiting.pop(token, None)
        if not slot:
            await self._refuse(conn, f"relay to {target.hex()[:16]}: the peer did not connect back "
                               f"within {RELAY_ANSWER_TIMEOUT:g} s")
            return
        other, done = slot[0]
        try:
            await conn.send(wire.encode(wire.RelayReady()))
            await self._splice(conn, other)
        except TransportError:
            pass
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close()
                await other.close()
            done.set()

    async def _relay_target(self, conn: Connection, token: bytes) -> None:
        waiting = self._waiting.pop(token, None)
        if waiting is None:
            await conn.close()  # unknown or late: the dialer gave up
            return
        event, slot = waiting
        done = anyio.Event()
        slot.append((conn, done))
        event.set()
        await done.wait()  # the dialer's handler splices; this one keeps the connection open

    async def _splice(self, a: Connection, b: Connection) -> None:
        async def pump(src: Connection, dst: Connection) -> None:
            try:
                async for frame in src:
                    await dst.send(frame)
                    self.relayed_frames += 1
            except TransportError:
                pass
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump, a, b)
            tg.start_soon(pump, b, a)

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
        return {"relays": sum(self.relays.values()), "relayed_peers": len(self.relays),
                "relayed_frames": self.relayed_frames,
                "registered": [link.url for link in self.links if link.registered]}
