"""WebRTC DataChannel transport (``webrtc://<id>``), for browser-class peers, on aiortc.

Two browser-class peers accept no connections, so they cannot reach each
other over WebSocket; they open a WebRTC DataChannel, set up with signals
(offer, answer) that a bootstrap server or a shared server node relays. The
protocol is in ``docs/reference/webrtc.md``; in short:

* the dialer makes one DataChannel (label ``yz``, ordered, reliable), gathers
  its ICE candidates (no trickle; no STUN unless configured) and signals the
  whole offer with a ``session`` and the relay URLs it can be reached through;
* the other side answers the same way; its :class:`RtcEndpoint` hands the
  opened channel to ``serve``'s handler like any accepted connection;
* each DataChannel message is one frame; the signed hello follows as on any
  other connection.

Signals travel over the peer's own verified connections, which this module
does not own: the runtime makes one :class:`RtcEndpoint` per local identity
with :meth:`WebRtcTransport.endpoint`, giving it a function that sends a
signal, and feeds it the signals that arrive (:meth:`RtcEndpoint.deliver`).
Failures raise :class:`~yzcore.exceptions.WebRtcFailed` (``WEBRTC_FAILED``)
carrying the relays the peer named, for the fallback.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from yzcore.exceptions import (
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    WebRtcFailed,
)
from yzcore.ids import id_from_hex
from yzcore.transport import (
    DEFAULT_MAX_FRAME,
    AcceptQueue,
    Connection,
    ConnectionHandler,
    HttpHandler,
    Listener,
    Transport,
    webrtc_address,
)

__all__ = ["RtcConnection", "RtcEndpoint", "Signaller", "WebRtcTransport", "parse"]

log = logging.getLogger("yzcore.transport.webrtc")

SCHEME = "webrtc://"
LABEL = "yz"
MAX_RELAYS = 8  #: relay URLs an offer or answer may name
MAX_ANSWERING = 16  #: offers answered at once; more are refused (a flood costs nothing)
MAX_ANSWERING_PER_PEER = 2  #: of which from one peer
RECV_BUFFER = 4096  #: frames received and not yet read before the peer counts as flooding
HIGH_WATER = 1 << 20  #: bytes queued on a channel before ``send`` waits
_SESSION = re.compile(r"[0-9a-f]{16}")

#: ``signal(to, data)`` sends a signal toward the peer ``to``; how many paths it went on (0: none).
Signaller = Callable[[bytes, dict[str, Any]], int]
#: ``reply(data)`` answers a signal on the path it came by.
Reply = Callable[[dict[str, Any]], object]


def parse(address: str) -> bytes:
    """The peer id of a ``webrtc://<64 hex digits>`` address.

    Raises:
        InvalidArgument: it is not one.
    """
    if not address.lower().startswith(SCHEME):
        raise InvalidArgument(f"{address!r} is not a webrtc:// address",
                              advice="Use webrtc://<64 hex digits of the peer's id>.")
    return id_from_hex(address[len(SCHEME):].strip("/"))


def _relays(value: object) -> tuple[str, ...]:
    """The relay URLs of a signal, checked: strings naming ws:// or wss:// URLs, at most 8."""
    if not isinstance(value, list):
        return ()
    return tuple(u for u in value[:MAX_RELAYS]
                 if isinstance(u, str) and len(u) <= 512 and u.startswith(("ws://", "wss://")))


def data_only(sdp: str) -> bool:
    """Whether every media section of ``sdp`` is a data channel: an offer with a video
    line besides it had its frames decoded and queued without end (1.9 GB in 45 s)."""
    media = [line for line in sdp.splitlines() if line.startswith("m=")]
    return bool(media) and all(m.startswith("m=application ") and m.rstrip().endswith(
        "webrtc-datachannel") for m in media)


class RtcConnection(Connection):
    """One open DataChannel (and the peer connection under it) carrying whole frames."""

    def __init__(self, pc: RTCPeerConnection, channel: Any, remote: str, max_frame: int) -> None:
        self._pc, self._ch = pc, channel
        self._remote = remote
        self._max_frame = max_frame
        self._in, self._out = anyio.create_memory_object_stream[bytes](RECV_BUFFER)
        self._closed = False
        self.peer_id: bytes | None = None  #: on an accepted channel, the id the offer came from
        self.settled = anyio.Event()  #: set when the channel opened, or the connection failed
        # Handlers go on before the channel can deliver anything: nothing is lost.
        channel.on("message", self._on_message)
        channel.on("open", self.settled.set)
        channel.on("close", self._gone)
        pc.on("connectionstatechange", self._on_state)

    @property
    def remote_address(self) -> str:
        return self._remote

    @property
    def transport(self) -> str:
        return "webrtc"

    @property
    def open(self) -> bool:
        return self._ch.readyState == "open" and not self._closed

    def _on_message(self, message: str | bytes) -> None:
        data = message.encode() if isinstance(message, str) else message
        if len(data) > self._max_frame:
            log.warning("%s sent a %d-byte frame over the %d-byte limit; closing", self._remote,
                        len(data), self._max_frame, extra={"code": "FRAME_TOO_LARGE",
                                                            "transport": "webrtc"})
            self._gone()
            return
        try:
            self._in.send_nowait(data)
        except anyio.WouldBlock:
            log.warning("%s sent %d frames nobody read; closing", self._remote, RECV_BUFFER,
                        extra={"code": "SLOW_READER", "transport": "webrtc"})
            self._gone()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def _on_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self._gone()

    def _gone(self) -> None:
        self._in.close()  # receive() drains what arrived, then raises ConnectionClosed
        self.settled.set()

    async def send(self, data: bytes) -> None:
        if len(data) > self._max_frame:
            raise FrameTooLarge(f"a {len(data)}-byte message to {self._remote} is over max_frame "
                                f"({self._max_frame} bytes); nothing was sent",
                                size=len(data), limit=self._max_frame)
        while self.open and self._ch.bufferedAmount > HIGH_WATER:
            await anyio.sleep(0.005)
        if not self.open:
            raise ConnectionClosed(f"the DataChannel to {self._remote} is closed")
        self._ch.send(bytes(data))

    async def receive(self) -> bytes:
        try:
            return await self._out.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise ConnectionClosed(f"the DataChannel to {self._remote} is closed") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._gone()
        self._out.close()
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            try:
                self._ch.close()
                await self._pc.close()
            except Exception as exc:  # noqa: BLE001 -- closing must not raise
                log.debug("closing the WebRTC connection to %s: %r", self._remote, exc)


class _Dial:
    __slots__ = ("event", "misses", "paths", "reply", "target")

    def __init__(self, target: bytes) -> None:
        self.target = target
        self.event = anyio.Event()
        self.reply: dict[str, Any] | None = None
        self.paths = 1  # signal paths the offer went on
        self.misses = 0  # relays that said they could not pass it on


class RtcEndpoint(Listener):
    """One local identity's WebRTC side: dials peers and answers their offers.

    Args:
        local: This peer's id (its address is ``webrtc://<id>``).
        signal: Sends a signal to a peer (see :data:`Signaller`).
        relays: The ws:// URLs of server nodes this peer can be reached
            through right now (named in offers and answers).
        ice_servers: STUN/TURN URLs; none by default (host candidates only).
        max_frame: The largest frame accepted.
    """

    def __init__(self, transport: WebRtcTransport, local: bytes, signal: Signaller,
                 relays: Callable[[], Sequence[str]] = tuple, ice_servers: Sequence[str] = (),
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._transport, self.local = transport, local
        self._signal, self._relays = signal, relays
        self.ice_servers = tuple(ice_servers)
        self.max_frame = max_frame
        self.queue = AcceptQueue()
        self._dials: dict[str, _Dial] = {}
        self._offers, self._offers_out = anyio.create_memory_object_stream[
            tuple[bytes, dict[str, Any], Reply]](MAX_ANSWERING)
        self._answering: dict[bytes, int] = {}  # peer -> offers of it being answered
        self._seen: dict[str, None] = {}  # recent offer sessions: one offer may come by several paths

    @property
    def address(self) -> str:
        return webrtc_address(self.local)

    def _config(self) -> RTCConfiguration:
        return RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in self.ice_servers])

    def _offer_relays(self) -> list[str]:
        return list(self._relays())[:MAX_RELAYS]

    # -- signals in ----------------------------------------------------------------------

    def deliver(self, frm: bytes | None, data: dict[str, Any], reply: Reply | None = None) -> None:
        """A signal addressed to this peer, from ``frm`` (None: from the relay itself).

        ``reply`` answers on the path the signal came by (default: :attr:`signal`'s).
        """
        kind, session = data.get("kind"), data.get("session")
        if not isinstance(session, str) or not _SESSION.fullmatch(session):
            log.debug("signal without a valid session from %s ignored", (frm or b"").hex()[:16])
            return
        if kind == "offer" and frm is not None:
            if session in self._seen:
                return
            self._seen[session] = None
            if len(self._seen) > 256:
                del self._seen[next(iter(self._seen))]
            reply = reply or (lambda d: self._signal(frm, d))
            if (sum(self._answering.values()) >= MAX_ANSWERING
                    or self._answering.get(frm, 0) >= MAX_ANSWERING_PER_PEER):
                self._refuse(reply, session, "WEBRTC_FAILED", "too many offers at once; retry later")
                return
            try:
                self._offers.send_nowait((frm, data, reply))
                self._answering[frm] = self._answering.get(frm, 0) + 1
            except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._refuse(reply, session, "WEBRTC_FAILED", "this peer is not taking offers")
        elif kind in ("answer", "error"):
            dial = self._dials.get(session)
            if dial is None or dial.reply is not None:
                return
            if kind == "error" and frm is None:  # a relay could not pass the offer on
                dial.misses += 1
                if dial.misses < dial.paths:
                    return  # another path may still get there
            elif frm != dial.target:
                return  # an answer comes from the peer we dialled, and no one else
            dial.reply = data
            dial.event.set()

    @staticmethod
    def _refuse(reply: Reply, session: str, code: str, message: str) -> None:
        reply({"kind": "error", "session": session, "code": code, "message": message})

    # -- dialling ------------------------------------------------------------------------

    async def connect(self, target: bytes, *, timeout: float = 10.0) -> RtcConnection:
        """A DataChannel to ``target``, set up through the signalling path.

        Raises:
            WebRtcFailed: No signalling path, the peer refused, ICE failed or
                ``timeout`` passed; ``relays`` holds the peer's relay URLs when
                its answer came.
        """
        session = os.urandom(8).hex()
        pc = RTCPeerConnection(self._config())
        conn = RtcConnection(pc, pc.createDataChannel(LABEL, ordered=True),
                             f"webrtc:{target.hex()[:16]}", self.max_frame)
        dial = self._dials[session] = _Dial(target)
        relays: tuple[str, ...] = ()
        stage = "making the offer"
        try:
            with anyio.fail_after(timeout):
                await pc.setLocalDescription(await pc.createOffer())
                stage = "waiting for the answer"
                dial.paths = self._signal(target, {"kind": "offer", "session": session,
                                                   "sdp": pc.localDescription.sdp,
                                                   "relays": self._offer_relays()})
                if not dial.paths:
                    raise WebRtcFailed(f"no signalling path to {target.hex()[:16]}: not connected "
                                       "to a bootstrap server or a server node")
                await dial.event.wait()
                if dial.reply is None:  # this peer is closing (aclose): no failure of the path's
                    raise ConnectionClosed(f"WebRTC to {target.hex()[:16]}: this peer is closing")
                reply = dial.reply
                relays = _relays(reply.get("relays"))
                if reply.get("kind") == "error":  # the peer's or the relay's code, as they said it
                    code = re.sub(r"[^A-Z_]", "", str(reply.get("code") or ""))[:64] or "WEBRTC_FAILED"
                    raise WebRtcFailed(f"{target.hex()[:16]} could not take the offer: [{code}] "
                                       f"{str(reply.get('message', ''))[:300]}", relays=relays,
                                       code=code)
                sdp = reply.get("sdp")
                if not isinstance(sdp, str):
                    raise WebRtcFailed(f"{target.hex()[:16]} answered without an SDP", relays=relays)
                stage = "connecting (ICE, DTLS, SCTP)"
                await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
                await conn.settled.wait()
                if not conn.open:
                    raise WebRtcFailed(f"no path to {target.hex()[:16]}: ICE or DTLS failed "
                                       f"({pc.connectionState})", relays=relays)
        except TimeoutError:
            await conn.close()
            raise WebRtcFailed(f"no DataChannel to {target.hex()[:16]} within {timeout:g} s "
                               f"({stage})", relays=relays) from None
        except (WebRtcFailed, ConnectionClosed):
            await conn.close()
            raise
        except Exception as exc:  # aiortc raises ValueError and friends on a bad SDP
            await conn.close()
            raise WebRtcFailed(f"WebRTC to {target.hex()[:16]} failed while {stage}: {exc!r}",
                               relays=relays) from exc
        except BaseException:
            await conn.close()
            raise
        finally:
            self._dials.pop(session, None)
        return conn

    # -- answering -----------------------------------------------------------------------

    async def _answer(self, frm: bytes, data: dict[str, Any], reply: Reply,
                      timeout: float = 10.0) -> None:
        session, sdp = data["session"], data.get("sdp")
        pc = RTCPeerConnection(self._config())
        holder: list[RtcConnection] = []
        ready = anyio.Event()

        def on_channel(channel: Any) -> None:
            if holder or channel.label != LABEL:
                channel.close()
                return
            conn = RtcConnection(pc, channel, f"webrtc:{frm.hex()[:16]}", self.max_frame)
            conn.peer_id = frm  # who the offer came from: the handshake must prove it is them
            holder.append(conn)
            ready.set()

        pc.on("datachannel", on_channel)
        pc.on("connectionstatechange", lambda: pc.connectionState == "failed" and ready.set())
        try:
            if not isinstance(sdp, str):
                raise TypeError("the offer has no SDP")
            if not data_only(sdp):  # aiortc would decode it, queued for a track nobody reads
                raise ValueError("the offer carries audio or video; only a data channel is taken")
            with anyio.fail_after(timeout):
                await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                reply({"kind": "answer", "session": session, "sdp": pc.localDescription.sdp,
                       "relays": self._offer_relays()})
                await ready.wait()
            if not holder:
                raise ConnectionError(f"ICE or DTLS failed ({pc.connectionState})")
        except Exception as exc:  # noqa: BLE001 -- a bad offer costs the offerer only
            log.warning("WebRTC offer from %s failed: %r", frm.hex()[:16], exc,
                        extra={"code": "WEBRTC_FAILED", "peer_id": frm.hex(), "transport": "webrtc"})
            self._refuse(reply, session, "WEBRTC_FAILED", f"could not answer: {exc!r}"[:300])
            with anyio.CancelScope(shield=True):
                await pc.close()
            return
        except BaseException:  # cancelled (the endpoint closes): leave no ICE task behind
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await pc.close()
            raise
        finally:
            left = self._answering.get(frm, 1) - 1
            if left:
                self._answering[frm] = left
            else:
                self._answering.pop(frm, None)
        if self.queue.put(holder[0]) is None:
            await holder[0].close()

    async def serve(self, handler: ConnectionHandler) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.queue.serve, handler)
            async with self._offers_out:
                async for frm, data, reply in self._offers_out:
                    tg.start_soon(self._answer, frm, data, reply)
            tg.cancel_scope.cancel()

    async def aclose(self) -> None:
        self._offers.close()
        for dial in self._dials.values():
            dial.event.set()
        if self._transport._endpoints.get(self.local) is self:
            del self._transport._endpoints[self.local]
        await self.queue.aclose()


class WebRtcTransport(Transport):
    """The ``webrtc://`` transport; one :class:`RtcEndpoint` per local identity."""

    schemes = ("webrtc",)

    def __init__(self) -> None:
        self._endpoints: dict[bytes, RtcEndpoint] = {}

    def endpoint(self, local: bytes, signal: Signaller, *,
                 relays: Callable[[], Sequence[str]] = tuple, ice_servers: Sequence[str] = (),
                 max_frame: int = DEFAULT_MAX_FRAME) -> RtcEndpoint:
        """The WebRTC side of the local peer ``local``; signals go out through ``signal``."""
        ep = self._endpoints[local] = RtcEndpoint(self, local, signal, relays, ice_servers, max_frame)
        return ep

    def _endpoint_for(self, local: bytes | None) -> RtcEndpoint:
        if local is not None and local in self._endpoints:
            return self._endpoints[local]
        if local is None and len(self._endpoints) == 1:
            return next(iter(self._endpoints.values()))
        raise InvalidArgument(
            "WebRTC needs a signalling path: no browser-class peer of this process has one"
            if not self._endpoints else "several local peers have WebRTC: say which (local=)",
            advice="Run a browser-class peer (yz client --bootstrap URL, or Node(role='browser')); "
            "it sets up its WebRTC endpoint itself.")

    async def connect(self, address: str, *, timeout: float = 10.0,
                      max_frame: int = DEFAULT_MAX_FRAME, local: bytes | None = None) -> Connection:
        return await self._endpoint_for(local).connect(parse(address), timeout=timeout)

    async def listen(self, address: str, *, http: HttpHandler | None = None,
                     max_frame: int = DEFAULT_MAX_FRAME) -> Listener:
        raise InvalidArgument(
            f"cannot listen on {address}: WebRTC has no port; offers arrive as signals",
            advice="Run a browser-class peer (yz client --bootstrap URL serve, or "
            "Node(role='browser')): it takes WebRTC offers through its endpoint by itself.")
