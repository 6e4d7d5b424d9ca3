"""The connection-manager factory (B6.3): which manager reaches a peer, and the fallback (B4.5).

* ``websocket`` reaches server nodes: every address but ``webrtc://`` (``ws``,
  ``wss``, ``bridge``, ``mem`` and third-party schemes). Node↔node and
  browser-class→node always use it.
* ``webrtc`` reaches browser-class peers (``webrtc://<id>``) from a
  browser-class peer, over a DataChannel set up with signals (see
  ``docs/reference/webrtc.md``). When it fails, the failure is recorded with
  its code and the peer is reached through a server node that relays for it
  (``relay``). A server node never uses WebRTC: it asks the browser-class peer,
  through a bootstrap server or a peer they share, to connect to it.

Each manager keeps its own counters and last error (``/status`` → ``managers``,
B6.5). They share nothing but the node: a ``webrtc`` plugin that cannot load
leaves ``websocket`` untouched (B6.1, B6.2).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from yzcore import wire
from yzcore.exceptions import ConnectFailed, TransportUnavailable, WebRtcFailed
from yzcore.ratelimit import RateLimiter
from yzcore.runtime.peer import describe_failure
from yzcore.runtime.reporting import limit_fields
from yzcore.transport import Connection, get_transport, scheme_of, transport_for, webrtc_address
from yzcore.wire import NodeInfo

if TYPE_CHECKING:
    from yzcore.runtime.node import Node
    from yzcore.runtime.peer import PeerConnection

__all__ = ["Manager", "Managers", "signal_error", "signal_limiter"]

log = logging.getLogger("yzcore.managers")

SIGNAL_PATHS = 3  #: server nodes a signal goes through (besides the bootstrap server)
MAX_DIALS = 4  #: `dial` signals followed at once
_SERVER_ROLES = ("node", "bridge")


def signal_error(data: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    """The data of a signal that ends its sender's WebRTC attempt: the attempt's
    ``session`` from ``data``, echoed only when it could be one (a short string: a
    16 KiB one would make the answer too large to send), the code and a sentence."""
    session = data.get("session")
    return {"kind": "error", "session": session if isinstance(session, str) and len(session) <= 64
            else None, "code": code, "message": wire.printable(message)}


def may_pass_on(role: str, advertise: str | None, data: dict[str, Any]) -> bool:
    """Whether a relay passes on a signal from a peer whose hello said ``role`` and
    ``advertise``: anything but a ``dial``, and a ``dial`` only from a server node naming
    its own address (any peer could have one aim browser-class peers at any URL)."""
    return data.get("kind") != "dial" or (role in _SERVER_ROLES and data.get("addr") == advertise)


def signal_limiter() -> RateLimiter:
    """Signals a peer may have passed on: 20/s, bursts of 40 (an offer and an answer per dial)."""
    return RateLimiter(rate=20.0, burst=40.0, global_rate=400.0, global_burst=800.0,
                       bypass_rate=0.0, bypass_burst=0.0, max_keys=4096)


class Manager:
    """One connection manager's record: what it tried, what worked, and its last error."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.available = True
        self.reason: str | None = None  # why it is not available
        self.attempts = self.connected = self.failed = 0
        self.last_error: dict[str, Any] | None = None

    def failure(self, code: str, message: str, peer: bytes | None) -> None:
        self.failed += 1
        self.last_error = {"code": code, "message": message, "time": time.time(),
                           "peer": peer.hex() if peer else None}

    def status(self) -> dict[str, Any]:
        return {"available": self.available, "reason": self.reason, "attempts": self.attempts,
                "connected": self.connected, "failed": self.failed, "last_error": self.last_error}


class Managers:
    """The node's connection managers and the factory that picks one for a peer."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.websocket, self.webrtc, self.relay = Manager("websocket"), Manager("webrtc"), Manager("relay")
        self.endpoint: Any = None  # the webrtc transport's RtcEndpoint, for browser-class peers
        self.ice_servers: tuple[str, ...] = ()  #: STUN/TURN URLs for WebRTC (none: host candidates)
        self.timeout = 10.0  #: seconds a WebRTC dial may take before the fallback
        self._reaching: set[bytes] = set()  # peers reach() dials: the only webrtc:// dials made
        self._asked: set[bytes] = set()  # server nodes whose `dial` signal is being followed
        self._limiter = signal_limiter()

    def start(self, tg: TaskGroup) -> None:
        """Set up WebRTC for a browser-class peer (server nodes have none, by design)."""
        if self.node.role != "browser":
            self.webrtc.available, self.webrtc.reason = False, "server nodes use WebSocket only"
            return
        try:
            transport = get_transport("webrtc")
        except TransportUnavailable as exc:  # logged once with its install hint; ws goes on
            self.webrtc.available, self.webrtc.reason = False, str(exc)
            return
        self.endpoint = transport.endpoint(self.node.id, self.signal, relays=self.relays,  # type: ignore[attr-defined]
                                           ice_servers=self.ice_servers)
        tg.start_soon(self.endpoint.serve, self._accept_rtc)

    async def _accept_rtc(self, conn: Connection) -> None:
        """An accepted DataChannel: say hello only once the dialer's came, since a message
        sent the moment our channel opens can beat the dialer's channel opening, and be lost."""
        first = None
        with anyio.move_on_after(self.node.handshake_timeout):
            first = await conn.receive()
        if first is not None:  # else nothing came: the connection is closed on return
            # The offer's sender, as its relay vouched: nobody else may answer on its channel.
            await self.node._accepted(conn, first, getattr(conn, "peer_id", None))

    async def aclose(self) -> None:
        """Stop taking offers and close the DataChannels (they have no abort). Idempotent."""
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            await endpoint.aclose()
            for pc in list(self.node.conns.values()):
                if pc.conn.transport == "webrtc":
                    await pc.conn.close()

    def status(self) -> dict[str, Any]:
        return {m.name: m.status() for m in (self.websocket, self.webrtc, self.relay)}

    # -- the factory ---------------------------------------------------------------------

    def pick(self, info: NodeInfo) -> Manager:
        """The manager for ``info``: webrtc for browser-class peers, websocket for the rest."""
        return self.webrtc if info.addr and scheme_of(info.addr) == "webrtc" else self.websocket

    async def connect(self, info: NodeInfo, timeout: float) -> Connection:
        """A connection to ``info`` by its manager; for webrtc, the relayed fallback when it fails."""
        manager = self.pick(info)
        manager.attempts += 1
        if manager is self.websocket:
            try:
                conn = await transport_for(info.addr).connect(info.addr, timeout=timeout)  # type: ignore[arg-type]
            except Exception as exc:
                manager.failure(*describe_failure(exc), info.id)
                raise
            manager.connected += 1
            return conn
        if info.id not in self._reaching:  # a webrtc:// contact from some peer's answer
            text = f"{info.addr} is dialled only on request (reach), not from a contact list"
            manager.failure(str(wire.ErrorCode.WEBRTC_UNAVAILABLE), text, info.id)
            raise ConnectFailed(text)
        try:
            if self.endpoint is None:
                raise WebRtcFailed(f"this peer has no WebRTC: {self.webrtc.reason}",
                                   code="WEBRTC_UNAVAILABLE")
            conn = await self.endpoint.connect(info.id, timeout=self.timeout)
        except WebRtcFailed as exc:
            text = f"WebRTC to {info.id.hex()[:16]} failed: {exc.args[0]}; trying a relay"
            manager.failure(exc.code, text, info.id)
            self.node._record(exc.code, info.id, text, transport="webrtc")
            return await self._relayed(info.id, exc.relays, timeout)
        manager.connected += 1
        return conn

    async def _relayed(self, target: bytes, theirs: tuple[str, ...], timeout: float) -> Connection:
        """``target`` through a server node that relays for it (B4.5): theirs first, then ours."""
        self.relay.attempts += 1
        tried: list[str] = []
        bridge = get_transport("bridge")
        for url in dict.fromkeys([*theirs, *self.relays()]):
            tried.append(url)
            try:
                conn = await bridge.connect_via(url, target, timeout=timeout)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 -- the next relay may do
                log.info("relay %s to %s failed: %s", url, target.hex()[:16], exc,
                         extra={"peer_id": target.hex(), "transport": "bridge"})
                continue
            self.relay.connected += 1
            return conn
        text = (f"{target.hex()[:16]} is unreachable: WebRTC failed and no relay of "
                f"{len(tried)} ({', '.join(tried) or 'none known'}) holds a connection to it")
        self.relay.failure(str(wire.ErrorCode.PEER_UNREACHABLE), text, target)
        raise WebRtcFailed(text, code=str(wire.ErrorCode.PEER_UNREACHABLE),
                           advice=wire.advice(wire.ErrorCode.PEER_UNREACHABLE))

    async def reach(self, peer_id: bytes, timeout: float = 15.0) -> NodeInfo:
        """A verified connection to the browser-class peer ``peer_id``; its info.

        A browser-class peer dials it (WebRTC, else a relay). A server node
        cannot dial a browser: it asks it, by a ``dial`` signal through a
        bootstrap server or a peer they share, to connect here over WebSocket.

        Raises:
            ConnectFailed: it could not be reached (the code says how it failed).
        """
        node = self.node
        if peer_id in node.conns:
            return node.conns[peer_id].info
        if node.role == "browser":
            self._reaching.add(peer_id)
            try:
                with anyio.move_on_after(timeout):
                    info = await node._dial(NodeInfo(peer_id, webrtc_address(peer_id), "browser"))
                    if info is not None:
                        return info
            finally:
                self._reaching.discard(peer_id)
            last = self.relay.last_error or self.webrtc.last_error or {}
            raise ConnectFailed(f"could not reach {peer_id.hex()[:16]}: "
                                f"[{last.get('code', 'TIMEOUT')}] {last.get('message', '')}")
        if not node.address or not self.signal(peer_id, {"kind": "dial", "addr": node.address}):
            raise ConnectFailed(f"no way to ask {peer_id.hex()[:16]} to connect: this node has no "
                                "address, or no bootstrap server or shared peer to signal through")
        with anyio.move_on_after(timeout):
            while peer_id not in node.conns:
                await anyio.sleep(0.02)
            return node.conns[peer_id].info
        raise ConnectFailed(f"asked {peer_id.hex()[:16]} to connect; it did not within {timeout:g} s")

    # -- signals -------------------------------------------------------------------------

    def relays(self) -> list[str]:
        """ws:// URLs of the server nodes this peer holds connections to (they can relay to it)."""
        return [pc.info.addr for pc in self.node.conns.values()
                if pc.info.role in _SERVER_ROLES and pc.info.addr
                and pc.info.addr.startswith(("ws://", "wss://"))][:8]

    def signal(self, to: bytes, data: dict[str, Any]) -> int:
        """Send a signal toward ``to``: by its bootstrap server and by up to 3 server nodes
        (the peer may be linked to another bootstrap server, and share only server nodes
        with us; it answers the first copy, by its session).

        Returns how many paths it went on (0: none).
        """
        message = wire.Signal(to, None, data)
        linked = any(link.pc is not None and link.pc.send(message) for link in self.node.links)
        nodes = 0
        for pc in list(self.node.conns.values()):
            if pc.info.role in _SERVER_ROLES and nodes < SIGNAL_PATHS and pc.send(message):
                nodes += 1
        return linked + nodes

    def on_signal(self, pc: PeerConnection, msg: wire.Signal) -> None:
        """A signal on a DHT connection: ours, or one to pass on (B4.4)."""
        if msg.to == self.node.id:
            # A server node we dialled fills in the sender from its hello (None: it says it could
            # not pass ours on); on any other connection the sender is who its hello proved.
            trusted = (pc.outbound and pc.info.role in _SERVER_ROLES
                       and pc.conn.transport in ("ws", "wss"))
            frm = msg.frm if trusted else pc.peer.id
            self.deliver(frm, msg.data, None if frm is None else  # replies go back the same way
                         lambda data: pc.send(wire.Signal(frm, None, data)))  # type: ignore[arg-type]
            return
        if self.node.role not in _SERVER_ROLES:
            return  # browser-class peers pass nothing on
        decision = self._limiter.check(pc.peer.id, "signal", anyio.current_time())
        if not decision.allowed:
            self.node._record(str(wire.ErrorCode.RATE_LIMITED), pc.peer.id,
                              f"signal not passed on: over {decision.limit:g}/s; wait "
                              f"{decision.retry_after:.2f} s", throttle=True,
                              fields=limit_fields("signal", decision.scope, decision.limit,
                                                  decision.burst, decision.retry_after))
            return
        target = self.node.conns.get(msg.to)
        if not may_pass_on(pc.peer.role, pc.peer.advertise, msg.data):
            return
        if target is not None:
            target.send(wire.Signal(msg.to, pc.peer.id, msg.data))
        elif msg.data.get("kind") != "error":
            pc.send(wire.Signal(pc.peer.id, None, signal_error(
                msg.data, str(wire.ErrorCode.PEER_UNREACHABLE),
                f"peer {msg.to.hex()[:16]} holds no connection to this node")))

    def deliver(self, frm: bytes | None, data: dict[str, Any], reply: Any = None) -> None:
        """A signal for this peer, from ``frm`` (None: from the relay itself).

        ``reply(data)`` answers on the path it came by (default: :meth:`signal` to ``frm``).
        """
        if data.get("kind") == "dial":
            self._follow_dial(frm, data.get("addr"))
        elif self.endpoint is not None:
            self.endpoint.deliver(frm, data, reply)
        elif data.get("kind") == "offer" and frm is not None:
            (reply or (lambda d: self.signal(frm, d)))(signal_error(
                data, "WEBRTC_UNAVAILABLE", f"this peer cannot take WebRTC: {self.webrtc.reason}"))

    def _follow_dial(self, frm: bytes | None, addr: object) -> None:
        """A server node asks us (browser-class) to connect to it: only to the id the relay
        vouched for, one at a time per asker and a few in all."""
        node = self.node
        if (node.role != "browser" or frm is None or not isinstance(addr, str)
                or not addr.startswith(("ws://", "wss://")) or frm in node.conns
                or frm in self._asked or len(self._asked) >= MAX_DIALS or node._tg is None):
            return

        async def dial() -> None:
            try:
                await node._dial(NodeInfo(frm, addr, "node"))
            finally:
                self._asked.discard(frm)

        self._asked.add(frm)
        node._tg.start_soon(dial)
