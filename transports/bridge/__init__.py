"""Bridge relay transport (``bridge://HOST:PORT/<node id>``): reach a peer through a bridge.

A node that accepts no inbound connections (behind NAT, ``--no-listen``)
keeps a verified connection to a bridge and advertises
``bridge://BRIDGE_HOST:BRIDGE_PORT/<its id in hex>``. Dialling that address
opens a WebSocket to the bridge's ``/dht`` and sends ``relay`` naming the
id; the bridge asks the peer (over the peer's own connection) to connect back
and splices the two connections, then answers ``relay_ready``. From there on
the connection is end to end: the signed hello follows as on any other, so
the bridge cannot impersonate either side.

Listening on a ``bridge://`` address is not a thing: a node becomes
reachable through a bridge by running with ``--no-listen`` (the node picks a
healthy bridge from its introductions and moves to the next when it fails).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import anyio

from yzcore import wire
from yzcore.exceptions import (
    ConnectFailed, InvalidArgument, RelayUnavailable, TransportError, WireError,
)
from yzcore.ids import id_from_hex
from yzcore.transport import (
    DEFAULT_MAX_FRAME,
    Connection,
    HttpHandler,
    Listener,
    Transport,
    transport_for,
)

__all__ = ["BridgeTransport", "parse"]


def parse(address: str) -> tuple[str, bytes]:
    """(the bridge's ws:// URL, the target id) of a ``bridge://`` address.

    Raises:
        InvalidArgument: not ``bridge://HOST:PORT/<64 hex digits>``.
    """
    url = urlsplit(address)
    try:
        target = id_from_hex(url.path.strip("/"))
        port = url.port
    except (ValueError, InvalidArgument):
        target, port = b"", None
    if url.scheme != "bridge" or not url.hostname or not port or not target:
        raise InvalidArgument(f"{address!r} is not a bridge address",
                              advice="Use bridge://HOST:PORT/<64 hex digits of the node id>.")
    return f"ws://{url.netloc}/dht", target


class BridgeTransport(Transport):
    """Dials peers through bridges; connections are the bridge's WebSocket ones."""

    schemes = ("bridge",)

    async def connect(
        self, address: str, *, timeout: float = 10.0, max_frame: int = DEFAULT_MAX_FRAME
    ) -> Connection:
        bridge_url, target = parse(address)
        return await self.connect_via(bridge_url, target, timeout=timeout, max_frame=max_frame)

    async def connect_via(self, bridge_url: str, target: bytes, *, timeout: float = 10.0,
                          max_frame: int = DEFAULT_MAX_FRAME) -> Connection:
        """A connection to ``target`` relayed by the node at ``bridge_url`` (any ws:// or wss:// URL).

        Raises:
            ConnectFailed: the relay could not be reached, or would not relay.
        """
        with anyio.move_on_after(timeout) as scope:
            conn = await transport_for(bridge_url).connect(bridge_url, timeout=timeout,
                                                           max_frame=max_frame)
            try:
                await conn.send(wire.encode(wire.RelayConnect(target)))
                reply = wire.decode(await conn.receive())
            except (TransportError, WireError) as exc:
                await conn.close()
                raise ConnectFailed(f"relay to {target.hex()[:16]} through {bridge_url} failed: "
                                    f"{exc}") from None
            except BaseException:
                await conn.close()
                raise
            if isinstance(reply, wire.RelayReady):
                carried_by = getattr(conn, "carried_by", None)
                if carried_by is not None:
                    carried_by("bridge")
                return conn
            await conn.close()
            text = f"[{reply.code}] {reply.message}" if isinstance(reply, wire.Error) else reply.TYPE
            raise RelayUnavailable(f"bridge {bridge_url} would not relay to {target.hex()[:16]}: "
                                   f"{text}")
        assert scope.cancelled_caught
        raise ConnectFailed(f"relay to {target.hex()[:16]} through {bridge_url} took over "
                            f"{timeout:g} s", advice=wire.advice(wire.ErrorCode.RELAY_UNAVAILABLE))

    async def listen(
        self, address: str, *, http: HttpHandler | None = None, max_frame: int = DEFAULT_MAX_FRAME
    ) -> Listener:
        raise InvalidArgument(
            f"cannot listen on {address}: a bridge address is reached through the bridge",
            advice="Run the node with --no-listen: it registers with a bridge by itself.")
