"""One WebSocket connection: an asyncio protocol around websockets' sans-I/O core.

The loop python-websockets itself recommends for custom I/O: bytes from the
socket go into the protocol object, events come out, bytes to write come
out. There is no task per connection — a node holds thousands — only this
object, the asyncio transport under it and one keepalive timer. Whole
messages go to a small inbox read by ``receive()`` until :meth:`attach`
installs callbacks; from then on they are pushed.

Both sides share the class: the dialler starts in ``CONNECTING`` having sent
its upgrade request and opens on a 101; the listener's side parses the
request, answers plain HTTP itself (``on_request``) or upgrades, then hands
the open connection to ``on_open``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed as WsClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import CONNECTING, OPEN, Protocol

import anyio

from yzcore.exceptions import ConnectionClosed, FrameTooLarge, YzError
from yzcore.transport import PushConnection

__all__ = ["WsConnection", "HIGH_WATER", "PING_TIMEOUT", "hostport", "set_dead_peer_timeout"]

#: Bytes waiting in one connection's write buffer before the peer counts as not reading.
HIGH_WATER = 1 << 20
INBOX_HIGH = 64  # unread messages (pull mode) before the socket stops being read
_SPENT = Headers()  # a handshake's headers once read: empty, never written
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
# How the kernel reports that it gave up on a connection (TCP_USER_TIMEOUT): ETIMEDOUT,
# or, with data in flight, the last ICMP error it got meanwhile (a router saying the host
# is gone). An established socket ends with these only through that timeout.
_GAVE_UP = frozenset((errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN))
#: Headers a proxy adds to the requests it passes on (RFC 7239, and the de facto ones).
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
PING_TIMEOUT = "keepalive ping timeout"  #: the close reason when a peer leaves a ping unanswered


def set_dead_peer_timeout(sock: Any, seconds: float) -> bool:
    """Have the kernel drop a TCP connection whose peer's host stopped answering.

    A host that loses power, or a path that stops carrying packets, closes
    nothing: without this the connection looks open until a ping goes
    unanswered (``ping_interval`` + ``ping_timeout``, 20 s by default). With
    it, a quiet connection is probed by the kernel every ``seconds / 4`` (at
    least 1 s: three probes before the end), and ``TCP_USER_TIMEOUT`` drops it
    once nothing was acknowledged for ``seconds`` (data in flight included),
    which the close then says (``silent``), so a dead peer leaves the
    active lists within that (A4.2). The probes are the kernel's, answered by
    the peer's kernel: no Python runs for them, and a peer that is merely
    busy or slow to read still answers them. A process that hangs with its
    kernel alive is still found by the pings.

    Returns False where the socket or the system has no such options (not
    TCP; a system without ``TCP_USER_TIMEOUT``): the pings alone then.
    """
    if sock is None or sock.type != socket.SOCK_STREAM or sock.family not in (
            socket.AF_INET, socket.AF_INET6):
        return False
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    probe = max(1, int(seconds // 4))  # at least three probes before the timeout
    for name, value in (("TCP_KEEPIDLE", probe), ("TCP_KEEPINTVL", probe),
                        ("TCP_USER_TIMEOUT", int(seconds * 1000))):
        if not hasattr(socket, name):
            return False
        options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    try:
        for level, option, value in options:
            sock.setsockopt(level, option, value)
    except OSError:
        return False
    return True


def _is_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def hostport(sockname: Any) -> str:
    """``host:port`` of a socket address, IPv6 hosts in brackets."""
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class WsConnection(PushConnection, asyncio.Protocol):
    """A WebSocket connection from either side, pull or push.

    Args:
        ws: websockets' sans-I/O protocol (client or server side).
        scheme: "ws" or "wss", for :attr:`transport`.
        max_frame: Largest message we send (websockets enforces it on receive).
        keepalive: (ping_interval, ping_timeout) in seconds, or Nones for no pings.
        tcp_timeout: Seconds without an acknowledgement from the peer's host before the
            kernel drops the connection (see :func:`set_dead_peer_timeout`); None: the
            system's defaults (hours when idle).
        close_timeout: Seconds a closing handshake may take before the socket is dropped.
        translate: Turns websockets' close exception into ours (with the seconds after which
            the kernel gave up on the peer's host, if it did).
        on_request: Listener side: answers a plain HTTP request (None: upgrade).
        on_open: Listener side: receives the connection once it is open.
        open_timeout: Listener side: seconds the peer has to send its upgrade request.
    """

    __slots__ = (
        "_ws", "_scheme", "_max_frame", "_keepalive", "_close_timeout", "_translate",
        "_on_request", "_on_open", "_open_timeout", "_transport", "_remote", "_loop", "opened",
        "_inbox", "_reading_paused", "_waiter", "_drain", "_paused", "_abort_timer", "_fragments", "_on_message",
        "_on_closed", "_closed", "_lost", "_timer", "_last_recv", "_ping_at", "_tcp_timeout",
        "forwarded",
    )

    def __init__(
        self,
        ws: Protocol,
        scheme: str,
        max_frame: int,
        keepalive: tuple[float | None, float | None],
        close_timeout: float,
        translate: Callable[[WsClosed, str, float | None], YzError],
        on_request: Callable[[Any, Request], Response | None] | None = None,
        on_open: Callable[[WsConnection], None] | None = None,
        open_timeout: float = 10.0,
        tcp_timeout: float | None = None,
    ) -> None:
        self._ws = ws
        self._scheme = scheme
        self._max_frame = max_frame
        self._keepalive = keepalive
        self._close_timeout = close_timeout
        self._translate = translate
        self._on_request = on_request
        self._on_open = on_open
        self._open_timeout = open_timeout
        self._transport: asyncio.Transport | None = None
        self._remote = "?"
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.opened: asyncio.Future[None] = loop.create_future()
        # Made on the first message nobody takes at once: in push mode (every
        # node's connections) it never is, and an empty deque is 760 bytes.
        self._inbox: deque[bytes] | None = None
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._abort_timer: asyncio.TimerHandle | None = None
        self._fragments: list[bytes] | None = None
        self._on_message: Callable[[bytes], None] | None = None
        self._on_closed: Callable[[ConnectionClosed], None] | None = None
        self._closed: ConnectionClosed | None = None
        self._lost: asyncio.Future[None] = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._last_recv = loop.time()
        self._ping_at: float | None = None
        self._tcp_timeout = tcp_timeout
        #: Listener side: the upgrade request came through a proxy (it carried a
        #: forwarding header), so :attr:`remote_address` is the proxy's, not the peer's.
        self.forwarded = False

    # -- Connection -------------------------------------------------------------

    @property
    def remote_address(self) -> str:
        return self._remote

    @property
    def transport(self) -> str:
        return self._scheme

    def carried_by(self, scheme: str) -> None:
        """Report ``scheme`` as this connection's transport (a relay running over ws)."""
        self._scheme = scheme

    def tighten_keepalive(self, interval: float, timeout: float) -> None:
        """Ping sooner on a connection whose loss matters most (a node's relaying bridge):
        a peer that hangs is given up after ``interval + timeout`` s, not the default 20."""
        self._keepalive = (interval, timeout)
        if self.opened.done():  # else the open starts it
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_later(interval, self._tick)

    @property
    def lost(self) -> asyncio.Future[None]:
        """Done once the socket is gone."""
        return self._lost

    @property
    def attached(self) -> bool:
        return self._on_message is not None

    async def send(self, data: bytes) -> None:
        self.send_nowait(data, force=True)
        if self._paused:  # asyncio's own high-water mark: wait until the socket drains
            self._drain = self._drain or self._loop.create_future()
            await asyncio.shield(self._drain)

    def send_nowait(self, data: bytes, *, force: bool = False) -> bool:
        if len(data) > self._max_frame:
            raise FrameTooLarge(
                f"a {len(data)}-byte message to {self._remote} is over max_frame "
                f"({self._max_frame} bytes); nothing was sent",
                size=len(data),
                limit=self._max_frame,
            )
        if (self._closed is not None or self._ws.state is not OPEN or self._transport is None
                or self._transport.is_closing()):  # a write failed: the loop has yet to say so
            raise self._closed or self._close_error()
        if not force and self._transport.get_write_buffer_size() > HIGH_WATER:
            return False
        if _is_utf8(data):
            self._ws.send_text(data)
        else:
            self._ws.send_binary(data)
        self._flush()
        return True

    async def receive(self) -> bytes:
        while not self._inbox:
            if self._closed is not None:
                raise self._closed
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        inbox = self._inbox
        assert inbox is not None
        if self._reading_paused and len(inbox) <= INBOX_HIGH // 2 and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        return inbox.popleft()

    def attach(
        self, on_message: Callable[[bytes], None], on_closed: Callable[[ConnectionClosed], None]
    ) -> None:
        self._on_message, self._on_closed = on_message, on_closed
        while self._inbox and self._on_message is not None:
            on_message(self._inbox.popleft())
        if not self._inbox:
            self._inbox = None
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        if self._closed is not None and self._on_closed is not None:
            self._on_closed, callback = None, self._on_closed
            callback(self._closed)

    async def close(self) -> None:
        if self._transport is None or self._lost.done():
            return
        if self._ws.state is OPEN:
            self._ws.send_close(1000)
            self._flush()
        elif self._ws.state is CONNECTING:
            self._transport.close()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout):
            await asyncio.shield(self._lost)
        if not self._lost.done():
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._remote = hostport(peer) if peer else "?"
        if self._tcp_timeout is not None:
            if not set_dead_peer_timeout(transport.get_extra_info("socket"), self._tcp_timeout):
                self._tcp_timeout = None  # not applied: a later timeout is not ours to name
        if self._on_request is None:  # dialler: send the upgrade request
            request = self._ws.connect()  # type: ignore[attr-defined]
            self._ws.send_request(request)  # type: ignore[attr-defined]
            self._flush()
        else:  # listener: a socket that never upgrades does not stay forever
            self._timer = self._loop.call_later(self._open_timeout, self._open_expired)

    def data_received(self, data: bytes) -> None:
        self._last_recv = self._loop.time()
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            if isinstance(event, Frame):
                if event.opcode in _DATA:
                    self._frame(event)
            elif isinstance(event, Request):
                self._request(event)
            elif isinstance(event, Response):
                self._response(event)
        self._flush()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ws.receive_eof()
        self._ws.data_to_send()  # nowhere to write any more
        for timer in (self._timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._closed = self._close_error(exc)
        if not self.opened.done():
            self.opened.set_exception(ConnectionResetError(
                "the connection closed during the WebSocket opening handshake"))
            self.opened.exception()  # retrieved: a failed dial reports it through connect()
        for fut in (self._waiter, self._drain):
            if fut is not None and not fut.done():
                fut.set_result(None)
        self._lost.set_result(None)
        # Its handlers hold whoever owns this connection, and the owner holds
        # it: dropped, the whole connection is freed by reference counting
        # the moment its owner lets go, not left to the cyclic collector
        # (which a process holding many nodes pays for dearly).
        self._on_message = None
        # Two more cycles, outside our code, would leave every socket's objects
        # to the collector: websockets keeps the parser's exception (EOF on an
        # abrupt close), whose traceback holds the parser's frame and so the
        # protocol; and CPython 3.11's socket transport keeps a bound method
        # of itself. Nothing reads either once the socket is gone.
        if self._ws.parser_exc is not None:
            self._ws.parser_exc.__traceback__ = None
        if getattr(self._transport, "_read_ready_cb", None) is not None:
            self._transport._read_ready_cb = None  # type: ignore[union-attr]
        if self._on_closed is not None:
            self._on_closed, callback = None, self._on_closed
            callback(self._closed)

    # -- internals --------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        if not frame.fin:  # a fragment: websockets checked the size limit already
            if self._fragments is None:
                self._fragments = []
            self._fragments.append(frame.data)
            return
        data = frame.data
        if self._fragments is not None:
            data, self._fragments = b"".join([*self._fragments, data]), None
        if self._on_message is not None:
            self._on_message(bytes(data))
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(bytes(data))
        if len(inbox) >= INBOX_HIGH and self._transport is not None and not self._reading_paused:
            self._reading_paused = True  # a reader that does not keep up holds the sender back
            self._transport.pause_reading()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _request(self, request: Request) -> None:
        assert self._on_request is not None
        response = self._on_request(self, request)
        upgrade = response is None
        if response is None:
            self.forwarded = any(name in request.headers for name in FORWARDING_HEADERS)
            response = self._ws.accept(request)  # type: ignore[attr-defined]
            response.headers["Server"] = "yzcore"
        self._ws.send_response(response)  # type: ignore[attr-defined]
        if upgrade and response.status_code == 101:
            self._open()
            if self._on_open is not None:
                self._on_open(self)

    def _response(self, response: Response) -> None:
        exc = self._ws.handshake_exc
        if exc is not None:
            if not self.opened.done():
                self.opened.set_exception(exc)
            return
        # The dialler's parser, like the listener's (see _open), keeps the
        # response alive for the connection's life, and its parser cannot be
        # restarted; its headers, read once the upgrade was checked, can go
        # (~1.7 KiB a connection).
        response.headers = _SPENT
        self._open()

    def _open_expired(self) -> None:
        if self._ws.state is CONNECTING:
            self.abort()

    def _open(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ws = self._ws
        if self._on_request is not None and not ws.reader.buffer:
            # websockets' opening parser keeps the HTTP request alive in its
            # frame for the connection's whole life (~2 KiB); restart it as the
            # plain frame parser. Safe here: a client sends no frame before our
            # 101 (RFC 6455 §4.1), so the old parser is between frames. (A
            # dialler cannot know that of the server's first frame.)
            ws.parser = Protocol.parse(ws)
            next(ws.parser)
        if not self.opened.done():
            self.opened.set_result(None)
        if self._keepalive[0] is not None:
            self._timer = self._loop.call_later(self._keepalive[0], self._tick)

    def _tick(self) -> None:
        """Keepalive: ping an idle peer; one that stays silent is closed with 1011."""
        interval, timeout = self._keepalive
        assert interval is not None
        now = self._loop.time()
        if self._ws.state is not OPEN:
            return
        if self._reading_paused:  # we stopped reading, not the peer: its pong may be waiting
            self._last_recv, self._ping_at = now, None
        if timeout is not None and self._ping_at is not None and self._last_recv < self._ping_at:
            if now - self._ping_at >= timeout:
                self._ws.fail(1011, PING_TIMEOUT)
                self._flush()
                return
            self._timer = self._loop.call_later(timeout - (now - self._ping_at), self._tick)
            return
        if now - self._last_recv >= interval:
            self._ws.send_ping(b"")
            self._flush()
            self._ping_at = now
            self._timer = self._loop.call_later(interval if timeout is None else timeout, self._tick)
            return
        self._ping_at = None
        self._timer = self._loop.call_later(self._last_recv + interval - now, self._tick)

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self._ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        if self._ws.close_expected() and not transport.is_closing():
            # websockets' rule: the server closes TCP; a client gives it a moment first.
            if self._on_request is not None:
                transport.close()
            elif self._abort_timer is None:
                self._abort_timer = self._loop.call_later(self._close_timeout, transport.abort)

    def _close_error(self, lost: Exception | None = None) -> ConnectionClosed:
        ws = self._ws  # close_exc without its assert: CLOSING is reported like CLOSED
        gave_up = (self._tcp_timeout if ws.close_rcvd is None and isinstance(lost, OSError)
                   and lost.errno in _GAVE_UP else None)  # after our dead_peer_timeout
        error = self._translate(WsClosed(ws.close_rcvd, ws.close_sent, ws.close_rcvd_then_sent),
                                self._remote, gave_up)
        assert isinstance(error, ConnectionClosed)
        return error
