"""A node's connection to the bootstrap server: introductions, heartbeats, bridge registration.

The link is apart from the node's peer connections: the bootstrap server is
never in a routing table, never counted as a connection, and a node that has
peers never waits for it (A1.2). Connecting rotates through the ``--bootstrap``
URLs, one attempt each, with exponential backoff and full jitter, 5 attempts
a round (A1.4, A7.2). Once connected, the link sends a heartbeat every
``heartbeat_interval`` seconds; when it drops, the next heartbeat reconnects.

A bridge keeps one link per bootstrap server, since each keeps its own
registry, and proves the shared secret on each (A5.1).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from yzcore import wire
from yzcore.bootstrap.auth import bridge_mac
from yzcore.exceptions import HandshakeError, WireError
from yzcore.protocol.backoff import Backoff, BackoffPolicy
from yzcore.runtime.http import health
from yzcore.runtime.peer import PeerConnection, describe_failure, handshake
from yzcore.runtime.replies import Replies
from yzcore.transport import transport_for
from yzcore.wire import ErrorCode

if TYPE_CHECKING:
    from yzcore.runtime.node import Node

__all__ = ["BootstrapLink", "BridgeRefused"]

log = logging.getLogger("yzcore.node")

REPLY_TIMEOUT = 5.0


class BridgeRefused(HandshakeError):
    """The bootstrap server refused this bridge's secret: retrying cannot help."""


class BootstrapLink:
    """The connection to one of ``urls`` at a time.

    Args:
        node: The node it serves.
        urls: Bootstrap server URLs, tried in turn.
        policy: The retry schedule.
        rng: Jitter.
        secret: A bridge's shared secret, proved at every connection.
    """

    def __init__(self, node: Node, urls: Sequence[str], policy: BackoffPolicy, rng: random.Random,
                 secret: bytes | None = None) -> None:
        self.node = node
        self.urls = list(urls)
        self.backoff = Backoff(policy, rng)
        self.secret = secret
        self.pc: PeerConnection | None = None
        self.url: str | None = None
        self.registered = False
        self._next = 0
        self._replies = Replies()
        self._challenge: list[bytes] = []
        self._challenged = anyio.Event()
        self._lock = anyio.Lock()

    @property
    def target(self) -> str:
        """The server it is connected to, else the next it will try (``/status``)."""
        return self.url or self.urls[self._next % len(self.urls)]

    # -- connecting -------------------------------------------------------------

    async def connect(self) -> bool:
        """Connected already, or one round of attempts; True when connected."""
        async with self._lock:
            while self.pc is None:
                await anyio.sleep(self.backoff.delay())
                url = self.urls[self._next % len(self.urls)]
                self._next += 1
                try:
                    await self._open(url)
                except BridgeRefused as exc:
                    self.node._record(str(exc.code), None, str(exc.args[0]))
                    self.node._fatal(exc)  # a wrong secret stays wrong: stop, say why
                    return False
                except Exception as exc:  # noqa: BLE001 -- every failure is reported the same way
                    code, text = describe_failure(exc)
                    self.node._record(code, None, f"bootstrap server {url}: {text}")
                    if self.backoff.failed():
                        self.node._record(
                            str(ErrorCode.BOOTSTRAP_UNREACHABLE), None,
                            f"no bootstrap server answered {self.backoff.policy.attempts} attempts "
                            f"over {len(self.urls)} URL(s); retrying later")
                        return False
                else:
                    self.backoff.succeeded()
            return True

    async def _open(self, url: str) -> None:
        node = self.node
        conn = await transport_for(url).connect(url, timeout=node.dial_timeout)
        try:
            peer = await handshake(conn, node.identity, role=node.role, advertise=node.address,
                                   timeout=node.handshake_timeout)
            if peer.role != "bootstrap":
                raise HandshakeError(ErrorCode.WRONG_ROLE, f"{url} answered as a {peer.role}, not a "
                                     "bootstrap server; point --bootstrap at a `yz bootstrap`")
        except BaseException:
            await conn.close()
            raise
        pc = PeerConnection(conn, peer, outbound=True, metrics=node.metrics)
        self._challenge.clear()
        self._challenged = anyio.Event()
        self.pc, self.url, self.registered = pc, url, False
        if pc.push:
            pc.conn.attach(lambda f: self._on_frame(pc, f), lambda _e: self._closed(pc))  # type: ignore[attr-defined]
        else:
            node._tg.start_soon(self._read, pc)  # type: ignore[union-attr]
        if self.secret is not None:
            await self._register(pc, peer.id)

    async def _register(self, pc: PeerConnection, bootstrap_id: bytes) -> None:
        """Answer the server's challenge with the HMAC of the shared secret (A5.1)."""
        with anyio.move_on_after(REPLY_TIMEOUT):
            await self._challenged.wait()
        if not self._challenge:
            self.close()
            raise HandshakeError(ErrorCode.TIMEOUT, f"{self.url} sent no bridge challenge in time")
        mac = bridge_mac(self.secret, self._challenge[0], self.node.id, bootstrap_id)  # type: ignore[arg-type]
        reply = await self.request(lambda rid: wire.Register(rid, mac))
        if isinstance(reply, wire.Registered):
            self.registered = True
            log.info("registered as a bridge with %s", self.url)
            return
        self.close()
        if isinstance(reply, wire.Error) and reply.code in (ErrorCode.BRIDGE_AUTH_FAILED,
                                                             ErrorCode.WRONG_ROLE):
            # A wrong secret, or a server that takes no bridges: retrying cannot help.
            raise BridgeRefused(reply.code, f"{self.url} refused this bridge: {reply.message}")
        raise HandshakeError(ErrorCode.TIMEOUT, f"{self.url} did not confirm the registration")

    def close(self) -> None:
        if self.pc is not None:
            self.pc.abort()
            self._closed(self.pc)

    # -- messages -----------------------------------------------------------------

    async def request(self, make: Callable[[int], wire.Message]) -> wire.Message | None:
        """Send a request (``make(rid)``) and wait for its reply; None if none came."""
        if self.pc is None:
            return None
        return await self._replies.ask(self.pc, make, REPLY_TIMEOUT)

    async def introduce(self, want: int) -> wire.Introductions | None:
        """Peers and bridges from the bootstrap server; None when none could be asked."""
        if not await self.connect():
            return None
        reply = await self.request(lambda rid: wire.Introduce(rid, want))
        if isinstance(reply, wire.Introductions):
            return reply
        text = f"[{reply.code}] {reply.message}" if isinstance(reply, wire.Error) else "no answer"
        self.node._record(str(getattr(reply, "code", ErrorCode.TIMEOUT)), None,
                          f"bootstrap server {self.url} gave no introductions: {text}")
        return None

    def heartbeat(self) -> None:
        if self.pc is not None:
            h = health(self.node)
            probe = self.node.last_probe
            table = len(self.node.engine.table) if self.node.engine else 0
            conns = list(self.node.conns.values())
            self.pc.send(wire.Heartbeat(h["healthy"], h["connections"], table,
                                        probe["seconds"] if probe else None,  # type: ignore[arg-type]
                                        tuple(pc.peer.id for pc in conns[:wire.MAX_WANT]),
                                        # since the start: a closed connection's count stays
                                        self.node.gone[0] + sum(pc.sent for pc in conns),
                                        self.node.gone[1] + sum(pc.received for pc in conns)))

    def _on_frame(self, pc: PeerConnection, frame: bytes) -> None:
        try:
            msg = wire.decode(frame)
        except WireError as err:
            if pc.metrics is not None:
                pc.metrics.received(pc.conn.transport, "invalid", len(frame))
            pc.send(wire.error_reply(err))
            return
        if pc.metrics is not None:
            pc.metrics.received(pc.conn.transport, msg.TYPE, len(frame))
        if isinstance(msg, wire.Ping):
            pc.send(wire.Pong(msg.rid))
        elif isinstance(msg, wire.Challenge):
            self._challenge.append(msg.nonce)
            self._challenged.set()
        elif isinstance(msg, wire.Signal):  # the server vouches for frm: it checked the hello
            frm = msg.frm
            self.node.managers.deliver(frm, msg.data, None if frm is None else  # answer this way
                                       lambda data: pc.send(wire.Signal(frm, None, data)))
        elif not self._replies.answer(msg, pc.peer.id) and isinstance(msg, wire.Error):
            self.node._record(str(msg.code), pc.peer.id, f"bootstrap server reports: {msg.message}")

    async def _read(self, pc: PeerConnection) -> None:
        """Pull mode (a transport without push connections)."""
        try:
            await pc.pump(lambda frame: self._on_frame(pc, frame) or True)
        finally:
            self._closed(pc)

    def _closed(self, pc: PeerConnection) -> None:
        if self.pc is pc:
            self.pc, self.registered = None, False
            self._replies.wake_all()
