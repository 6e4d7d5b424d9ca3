"""One verified connection: the signed handshake, then sends that never wait.

Sends never wait on the peer, so a peer that stops reading fills only its own
buffer and is dropped, while everyone else is served (ARCHITECTURE §2). On a
:class:`~yzcore.transport.PushConnection` (the ``ws`` transport) that buffer
is the connection's own write buffer and there is no task at all; on a plain
:class:`~yzcore.transport.Connection` it is a bounded queue drained by a
writer task.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.lowlevel import RunVar

from yzcore import wire
from yzcore.exceptions import (
    ConnectionClosed,
    EncodeError,
    FrameTooLarge,
    TransportError,
    WireError,
)
from yzcore.identity import Identity
from yzcore.messages import shared
from yzcore.protocol.handshake import Handshake, PeerInfo
from yzcore.transport import Connection, PushConnection
from yzcore.wire import NodeInfo

if TYPE_CHECKING:
    from yzcore.metrics import TransferMetrics

__all__ = ["DIAL_SLOTS", "PeerConnection", "dial_slots", "handshake", "source_of", "tell",
           "tell_late"]

log = logging.getLogger("yzcore.node")

SEND_QUEUE = 256  # frames waiting for one peer before it counts as not reading

# What one peer may send on one connection, whatever the frames (refused, repeated and
# malformed ones too): beyond it frames are dropped unread, and a peer still over it
# FLOOD_GRACE seconds later is dropped. One peer's stream of pings took a node's whole
# CPU (53,000 frames/s), its other peers' requests 300 times slower. An honest peer
# stays far below: lookups are limited to 10/s a peer, pubsub requests to 50/s; a busy
# channel's deliveries to one subscriber are the most.
FRAME_RATE = 1000.0
FRAME_BURST = 4000.0
FLOOD_GRACE = 2.0

# Outbound dials (connect and hello) in progress at once in one process, all
# its nodes together. A dial waits for a slot before its timeouts start: a
# process hosting many nodes that started every dial at once shared its CPU
# among so many handshakes that they passed their timeouts and were thrown
# away, half done, and dialled again (the CHANGELOG has the figures). A
# process with one node rarely has more than its engine's ``max_dials`` (8)
# in flight.
DIAL_SLOTS = 16
_slots: RunVar[anyio.Semaphore] = RunVar("yzcore_dial_slots")


def source_of(conn: Connection) -> str | None:
    """The address a connection counts against for per-address limits: its IP (an IPv6
    one's /64, an IPv4-mapped one as IPv4); None when it came through a proxy on this host
    or network, whose address it is not. A forwarding header from anywhere else is no
    proxy's: any client can send one."""
    try:
        ip = ipaddress.ip_address(conn.remote_address.rpartition(":")[0].strip("[]"))
    except ValueError:
        return None
    ip = getattr(ip, "ipv4_mapped", None) or ip
    if getattr(conn, "forwarded", False) and (ip.is_loopback or ip.is_private):
        return None
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def dial_slots() -> anyio.Semaphore:
    """The running event loop's dial slots (one set per loop)."""
    try:
        return _slots.get()
    except LookupError:
        slots = anyio.Semaphore(DIAL_SLOTS)
        _slots.set(slots)
        return slots


async def handshake(conn: Connection, identity: Identity, *, role: str, advertise: str | None,
                    timeout: float, expected_id: bytes | None = None,
                    first: bytes | None = None) -> PeerInfo:
    """Run the signed hello on a fresh connection; the verified peer, or an exception.

    ``first`` is the peer's first frame when the caller already read it (a
    bridge reads it to tell a hello from a relay request).

    Raises:
        HandshakeError: the peer failed verification (its code says why); an
            error reply was sent before raising.
        TransportError: the connection failed underneath.
        TimeoutError: no complete handshake within ``timeout`` seconds.
    """
    listen = (advertise,) if advertise else ()
    hs = Handshake(identity, role=role, listen=listen, advertise=advertise, caps=("ws",),
                   nonce=os.urandom(16), expected_id=expected_id)
    try:
        with anyio.fail_after(timeout):
            await conn.send(wire.encode(hs.start()))
            while not hs.done:
                frame, first = (first, None) if first is not None else (await conn.receive(), None)
                msg = wire.decode(frame)
                for out in hs.receive(msg):
                    await conn.send(wire.encode(out))
    except WireError as err:  # HandshakeError included: tell the peer why, then give up
        await tell(conn, wire.error_reply(err))
        raise
    except TimeoutError:
        await tell_late(conn, timeout)
        raise
    assert hs.peer is not None
    return hs.peer


async def tell(conn: Connection, msg: wire.Message) -> None:
    """Send ``msg`` on a connection about to be dropped: within a second, whatever the
    caller's cancel scope says, and never an error of its own."""
    with anyio.move_on_after(1.0, shield=True):
        try:
            await conn.send(wire.encode(msg))
        except TransportError:
            pass


async def tell_late(conn: Connection, timeout: float) -> None:
    """Tell a peer that did not complete its handshake in ``timeout`` seconds why it is
    dropped (``HANDSHAKE_TIMEOUT``), rather than close without a word."""
    code = wire.ErrorCode.HANDSHAKE_TIMEOUT
    await tell(conn, wire.Error(None, code, f"no complete handshake within {timeout:g} s. "
                                            f"{wire.advice(code)}"))


class PeerConnection:
    """A connection that passed the handshake.

    Args:
        conn: The transport connection.
        peer: Who the handshake proved is on the other end.
        outbound: True when we dialled it.
    """

    __slots__ = ("_over", "_recv", "_send", "_short", "_stamp", "_tokens", "conn", "dialled",
                 "dropping", "info", "metrics", "outbound", "peer", "push", "received", "sent")

    def __init__(self, conn: Connection, peer: PeerInfo, outbound: bool,
                 metrics: TransferMetrics | None = None) -> None:
        self.conn = conn
        self.peer = peer
        self.outbound = outbound
        self.info = NodeInfo(peer.id, peer.advertise, peer.role)
        #: The address we dialled (outbound): where the peer surely is, whatever it claims.
        self.dialled: str | None = None
        self.dropping = False  #: being closed for a fault of the peer's: said once
        self._tokens, self._stamp = FRAME_BURST, time.monotonic()  # the frame budget
        self._over = self._short = -FLOOD_GRACE  # when it last went, and last was, over budget
        self.push = isinstance(conn, PushConnection)
        self._send: ObjectSendStream[bytes] | None = None
        self._recv: ObjectReceiveStream[bytes] | None = None
        if not self.push:
            self._send, self._recv = anyio.create_memory_object_stream[bytes](SEND_QUEUE)
        self.sent = self.received = 0
        self.metrics = metrics  #: the node's transfer metrics; None: no hook at all

    @property
    def ip(self) -> str | None:
        """The peer's IP address as the transport sees it, when it has one.

        Shared: the routing table keeps it with each contact, and peers behind
        one address (a NAT, a host running several nodes) then hold one string.
        """
        if self.conn.transport == "bridge":  # the bridge's address, not the peer's
            return None
        host, sep, _ = self.conn.remote_address.rpartition(":")
        return shared(host.strip("[]")) if sep and host else None

    def admit(self, cost: float = 1.0) -> bool | None:
        """Charge a received frame (``cost`` frames) to the peer's budget (``FRAME_RATE``):
        True to handle it; None to drop it (over budget: the peer is told ``RATE_LIMITED``
        once); False, once, when it stayed over budget for ``FLOOD_GRACE`` s: drop the peer."""
        now = time.monotonic()
        tokens = min(FRAME_BURST, self._tokens + (now - self._stamp) * FRAME_RATE)
        self._stamp = now
        if tokens >= cost and not self.dropping:
            self._tokens = tokens - cost
            return True
        self._tokens = tokens
        if now - self._short > FLOOD_GRACE:  # under budget that long: a new time over it
            self._over = now
            self.send(wire.Error(None, wire.ErrorCode.RATE_LIMITED, (
                f"over {FRAME_RATE:g} frames/s (bursts of {FRAME_BURST:g}) on this connection: "
                f"frames are dropped unread, and it closes if that lasts {FLOOD_GRACE:g} s"), 1.0))
        self._short = now
        if now - self._over < FLOOD_GRACE or self.dropping:
            return None
        return not self.drop_once()

    def drop_once(self) -> bool:
        """True the first time: the caller closes the connection for the peer's fault."""
        first, self.dropping = not self.dropping, True
        return first

    def send(self, msg: wire.Message) -> bool:
        """Send or queue a message; False when the peer is not reading."""
        try:
            data = wire.encode(msg)
        except EncodeError as exc:  # our own message: a bug worth a log line, never a crash
            log.error("dropped a %s message that cannot be sent: %s", msg.TYPE, exc,
                      extra={"code": exc.code, "peer_id": self.peer.id.hex()})
            return True
        try:
            if self._send is None:
                ok = self.conn.send_nowait(data)  # type: ignore[attr-defined]
            else:
                self._send.send_nowait(data)
                ok = True
        except anyio.WouldBlock:
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, ConnectionClosed):
            return True  # closing already; the close path reports it
        except FrameTooLarge as exc:  # our own message: a bug worth a log line, not a crash
            log.error("dropped an oversized message: %s", exc, extra={"code": exc.code})
            return True
        self.sent += ok
        if ok and self.metrics is not None:
            self.metrics.sent(self.conn.transport, msg.TYPE, len(data))
        return ok

    async def writer(self) -> None:
        """Pull mode: drain the queue onto the connection until it is closed."""
        assert self._recv is not None
        try:
            async for frame in self._recv:
                await self.conn.send(frame)
        except (ConnectionClosed, TransportError):
            pass  # the reader sees the close and reports it

    async def pump(self, on_frame: Callable[[bytes], bool]) -> bool:
        """Pull mode: write the queue and read into ``on_frame`` until either ends.

        Reading stops when ``on_frame`` returns False or the connection closes;
        the connection is closed when this returns or is cancelled.

        Returns:
            True when it ended on an error rather than a clean close.
        """
        error = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.writer)
            try:
                while on_frame(await self.conn.receive()):
                    pass
            except ConnectionClosed as exc:
                error = exc.close_code not in (1000, 1001, None)
            except TransportError:
                error = True
            finally:
                tg.cancel_scope.cancel()
                await self.close()
        return error

    async def close(self) -> None:
        """Close the connection gracefully (pull mode: stop the writer first)."""
        if self._send is not None:
            self._send.close()
        with anyio.CancelScope(shield=True):
            await self.conn.close()

    def abort(self) -> None:
        """Drop the connection without a goodbye, where the transport can."""
        if self._send is not None:
            self._send.close()
        if self.push:
            self.conn.abort()  # type: ignore[attr-defined]


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(code, sentence) for a failed dial or handshake, for logs, /status and messages.

    The sentence may quote the peer (a web server's error page, a close
    reason): it is made one printable line (:func:`yzcore.wire.printable`).
    """
    if isinstance(exc, TimeoutError):
        return str(wire.ErrorCode.HANDSHAKE_TIMEOUT), "no complete handshake in time"
    code = getattr(exc, "code", type(exc).__name__)  # WireError's, a transport error's
    return str(code), wire.printable(str(exc.args[0] if exc.args else exc))
