"""WebSocket transport (``ws://``, ``wss://``) on the ``websockets`` library.

Uses websockets' sans-I/O protocol under asyncio protocols of our own
(``_conn``): no task per connection, and every connection is a
:class:`~yzcore.transport.PushConnection`. It runs under anyio's
**asyncio** backend only; under trio, ``connect`` and ``listen`` raise
``TransportUnavailable``.

* ``listen("ws://127.0.0.1:0/dht")`` binds (port 0: a free port, reported in
  ``Listener.address``), upgrades WebSocket requests on the path (``/dht``
  when none is given) and serves plain HTTP on the same port (see ``_http``).
  Give an IP literal with port 0: a name like ``localhost`` binds one socket
  per address family, each on its own free port, and only the first is reported.
* Frames: ``send`` uses a Text frame when the bytes are valid UTF-8 (JSON
  always is, and browsers send and expect their JSON as text) and a Binary
  frame otherwise; ``receive`` returns bytes for both.
* ``max_frame`` is websockets' ``max_size``: a peer sending more is closed
  with 1009 and the receiving side sees ``ConnectionClosed(close_code=1009)``;
  our own ``send`` refuses a message over this side's ``max_frame`` up front
  (``FrameTooLarge``, the connection stays open).
* A peer whose host stops answering (power lost, the path cut: nothing
  closes the socket) is dropped by the kernel once nothing was acknowledged
  for ``dead_peer_timeout`` (4 s), through TCP keepalive and
  ``TCP_USER_TIMEOUT`` (``set_dead_peer_timeout``). Keepalive pings
  (``ping_interval``/``ping_timeout``, 10 s each by default) find a peer
  whose process hangs while its kernel still answers; the connection then
  closes with 1011. Both closes say ``silent``.
* A dial whose TCP connect has not completed within ``second_attempt_after``
  (1 s, the kernel's first SYN retransmission) races a second attempt
  alongside (``_dial``): a lossy path costs a dial seconds, not the dial.

All of websockets' and the socket layer's exceptions become ours in
:func:`_translate`, and only there.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import ssl as _ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed as WsClosed
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from yzcore.exceptions import (
    ConnectFailed,
    ConnectionClosed,
    InvalidArgument,
    ListenFailed,
    NameNotResolved,
    TransportUnavailable,
    WsUpgradeRejected,
    YzError,
)
from yzcore.messages import printable
from yzcore.transport import (
    DEFAULT_MAX_FRAME,
    KNOWN_ADDRESSES,
    AcceptQueue,
    Connection,
    ConnectionHandler,
    HttpHandler,
    Listener,
    Transport,
)

from ._conn import PING_TIMEOUT, WsConnection, hostport, set_dead_peer_timeout
from ._dial import SECOND_ATTEMPT_AFTER, open_socket
from ._http import make_process_request

log = logging.getLogger("yzcore.transport.ws")

__all__ = ["DEAD_PEER_TIMEOUT", "DEFAULT_PATH", "WebSocketTransport", "WsConnection", "WsListener",
           "set_dead_peer_timeout"]

DEFAULT_PATH = "/dht"
DEAD_PEER_TIMEOUT = 4.0  #: seconds; see set_dead_peer_timeout
_CLOSE_CAUSES = {
    1000: "closed normally",
    1001: "going away",
    1006: "dropped without a close frame",
    1009: "a frame was over the receiver's max_frame",
    1011: "closed on an error or a keepalive timeout",
}


def _translate(exc: BaseException, op: str, where: str, timeout: float | None,
               gave_up: float | None = None) -> YzError | None:
    """The one place websockets' and socket errors become yzcore's (None: not ours to map).

    ``gave_up``: a close the kernel made after that many seconds with nothing acknowledged
    (``dead_peer_timeout``), not the peer or we."""
    if isinstance(exc, WsClosed):
        if gave_up is not None:  # nothing closed it: the kernel gave up on the peer's host
            return ConnectionClosed(
                f"WebSocket to {where} closed with 1006: its host stopped answering "
                f"(nothing acknowledged for {gave_up:g} s)", close_code=1006, silent=True)
        frame = exc.rcvd or exc.sent
        code = frame.code if frame else 1006
        reason = printable(frame.reason) if frame else ""  # the peer's words, on one line
        cause = _CLOSE_CAUSES.get(code, "closed")
        if code == 1009:  # who closed first says whose limit it was
            peer_first = exc.rcvd is not None and exc.rcvd_then_sent is not False
            cause = (
                "our message was over the peer's max_frame"
                if peer_first
                else "the peer sent a frame over our max_frame"
            )
        return ConnectionClosed(
            f"WebSocket to {where} closed with {code}: {cause}"
            + (f" ({reason})" if reason else ""),
            close_code=code,
            reason=reason,
            silent=code == 1011 and exc.rcvd is None and reason == PING_TIMEOUT,  # ours, unanswered
        )
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status == 200:
            return WsUpgradeRejected(
                f"{where} answered HTTP 200 instead of 101 Switching Protocols: this URL serves a "
                f"web page, not the WebSocket endpoint; the endpoint is {DEFAULT_PATH}",
                status=200,
            )
        # The start of the page, on one line: a web server's 404 is HTML over many lines.
        body = printable(bytes(exc.response.body[:200]).decode("utf-8", "replace")).strip()
        return WsUpgradeRejected(
            f"{where} refused the WebSocket upgrade with HTTP {status} "
            f"{printable(exc.response.reason_phrase)}" + (f": {body}" if body else ""),
            status=status,
        )
    if isinstance(exc, InvalidURI) or (isinstance(exc, ValueError) and op != "io"):
        return InvalidArgument(
            f"{where!r} is not a WebSocket URL: {exc}", advice="Use ws://HOST:PORT/dht (or wss://)."
        )
    if isinstance(exc, InvalidHandshake):
        return WsUpgradeRejected(f"{where} did not complete the WebSocket handshake: {exc}")
    if isinstance(exc, TimeoutError):
        return ConnectFailed(
            f"timed out after {timeout} s opening {where} (TCP connect and WebSocket handshake)"
        )
    if isinstance(exc, OSError):
        url = urlsplit(where)
        hostport = url.netloc or where
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            kind = ListenFailed if op == "listen" else ConnectFailed
            return kind(f"cannot open a socket for {hostport}: {_no_descriptors(exc)}",
                        advice=NO_DESCRIPTORS_ADVICE)
        if op == "listen":
            return ListenFailed(f"cannot listen on {hostport}: {exc.strerror or exc}")
        if exc.errno == errno.ECONNREFUSED or f"[Errno {errno.ECONNREFUSED}]" in str(exc):
            return ConnectFailed(f"nothing listens on {hostport} (connection refused)")
        if isinstance(exc, socket.gaierror):
            return NameNotResolved(f"{url.hostname} does not resolve ({exc.strerror or exc}) and no "
                                   "address is known for it from before")
        return ConnectFailed(f"cannot reach {hostport}: {exc.strerror or exc}")
    return None


def _bound_socket(host: str | None, port: int) -> socket.socket | None:
    """A TCP socket bound to ``host`` when it is an IP address, else None (a name:
    asyncio resolves it). asyncio's ``create_server`` skips an address whose socket
    it cannot create, so an open-file limit would read as "no socket could be bound"."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((str(ip), port))
    except BaseException:
        sock.close()
        raise
    return sock


NO_DESCRIPTORS_ADVICE = ("Raise the open-file limit (ulimit -n, or LimitNOFILE= for a service), "
                         "or run fewer nodes in this process.")


def _no_descriptors(exc: OSError) -> str:
    """Why a socket could not be made; for EMFILE, with the limit it hit."""
    if exc.errno == errno.EMFILE:
        try:
            import resource  # POSIX only
        except ImportError:
            return "this process has no file descriptor left"
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return f"this process has no file descriptor left (open-file limit {soft})"
    if exc.errno == errno.ENFILE:
        return "the system has no file descriptor left (fs.file-max)"
    return exc.strerror or str(exc)


def _translate_io(exc: WsClosed, where: str, gave_up: float | None = None) -> YzError:
    """How a closed connection is reported (never None for a close)."""
    err = _translate(exc, "io", where, None, gave_up)
    assert err is not None
    return err


@contextmanager
def _errors(op: str, where: str, timeout: float | None = None) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        err = _translate(exc, op, where, timeout)
        if err is None:
            raise
        raise err from exc


def _require_asyncio() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise TransportUnavailable(
            "the ws transport runs on anyio's asyncio backend only (websockets' asyncio API)",
            advice="Run yzcore under asyncio (anyio's default backend), not trio.",
        ) from None


class WsListener(Listener):
    def __init__(self, server: asyncio.Server, address: str, queue: AcceptQueue,
                 conns: set[WsConnection]) -> None:
        self._server, self._address, self._queue, self._conns = server, address, queue, conns

    @property
    def address(self) -> str:
        return self._address

    async def serve(self, handler: ConnectionHandler) -> None:
        await self._queue.serve(handler)

    async def aclose(self) -> None:
        self._server.close()
        await self._queue.aclose()
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for conn in list(self._conns):
                    tg.start_soon(conn.close)


class WebSocketTransport(Transport):
    """The ``ws://`` / ``wss://`` transport.

    Args:
        ping_interval: Seconds between keepalive pings (``None``: no pings).
        ping_timeout: Seconds to wait for a pong before the peer is declared dead.
        dead_peer_timeout: Seconds without an acknowledgement from the peer's host before
            the kernel drops the connection (``None``: the system's defaults, hours when
            idle). The contract's 5 s for a dead peer to leave the active lists (A4.2).
        close_timeout: Seconds to wait for the closing handshake.
        open_timeout: Seconds an accepted socket has to complete its upgrade request.
        second_attempt_after: Seconds a dial's TCP connect may take before a second
            attempt joins it on a fresh socket, the first to connect winning (``None``:
            one attempt). Lost SYNs then cost a dial seconds, not the dial (``_dial``).
        ssl: Server TLS context, needed to listen on ``wss://``. Dialling ``wss://``
            uses the system's default trust store.
    """

    schemes = ("ws", "wss")

    def __init__(
        self,
        *,
        ping_interval: float | None = 10.0,
        ping_timeout: float | None = 10.0,
        dead_peer_timeout: float | None = DEAD_PEER_TIMEOUT,
        close_timeout: float = 2.0,
        open_timeout: float = 10.0,
        second_attempt_after: float | None = SECOND_ATTEMPT_AFTER,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        # No permessage-deflate: frames are small JSON, and zlib was the
        # largest single CPU cost of a busy node.
        self._keepalive = (ping_interval, ping_timeout)
        self._dead_peer_timeout = dead_peer_timeout
        self._close_timeout = close_timeout
        self._open_timeout = open_timeout
        self._second_attempt_after = second_attempt_after
        self._ssl = ssl

    def _conn(self, ws: Any, scheme: str, max_frame: int, **listener: Any) -> WsConnection:
        return WsConnection(ws, scheme, max_frame, self._keepalive, self._close_timeout,
                            _translate_io, tcp_timeout=self._dead_peer_timeout, **listener)

    async def connect(
        self, address: str, *, timeout: float = 10.0, max_frame: int = DEFAULT_MAX_FRAME
    ) -> Connection:
        _require_asyncio()
        loop = asyncio.get_running_loop()
        conn: WsConnection | None = None
        with _errors("connect", address, timeout):
            uri = parse_uri(address)
            scheme = "wss" if uri.secure else "ws"

            async def open_to(host: str) -> WsConnection:
                sock = await open_socket(host, uri.port, self._second_attempt_after)
                transport, proto = await loop.create_connection(
                    lambda: self._conn(ClientProtocol(uri, max_size=max_frame), scheme, max_frame),
                    sock=sock, ssl=_ssl.create_default_context() if uri.secure else None,
                    server_hostname=uri.host if uri.secure else None)
                peer = transport.get_extra_info("peername")
                if peer:
                    KNOWN_ADDRESSES.remember(uri.host, str(peer[0]))
                return proto

            try:
                async with asyncio.timeout(timeout):
                    try:
                        conn = await open_to(uri.host)
                    except socket.gaierror as exc:  # A6.4: DNS failed; the address it had before
                        known = KNOWN_ADDRESSES.lookup(uri.host)
                        if known is None:
                            raise
                        log.warning("%s does not resolve (%s); connecting to %s, its last known address",
                                    uri.host, exc.strerror or exc, known,
                                    extra={"code": "DNS_FAILED", "transport": scheme})
                        conn = await open_to(known)
                    await conn.opened
            except BaseException:
                if conn is not None:
                    conn.abort()
                raise
        assert conn is not None
        return conn

    async def listen(
        self, address: str, *, http: HttpHandler | None = None, max_frame: int = DEFAULT_MAX_FRAME
    ) -> Listener:
        _require_asyncio()
        url = urlsplit(address)
        if url.scheme not in self.schemes or not url.hostname:
            raise InvalidArgument(
                f"{address!r} is not a ws:// or wss:// URL with a host",
                advice="Listen on e.g. ws://127.0.0.1:0/dht.",
            )
        if url.scheme == "wss" and self._ssl is None:
            raise ListenFailed(
                f"cannot listen on {address}: wss:// needs a TLS certificate",
                advice="Pass ssl= to WebSocketTransport, or listen on ws:// behind "
                "a TLS-terminating proxy.",
            )
        try:
            port = url.port or 0
        except ValueError:
            raise InvalidArgument(f"{address!r} has an invalid port") from None
        path = url.path or DEFAULT_PATH
        queue = AcceptQueue()
        conns: set[WsConnection] = set()
        process_request = make_process_request(path, http)

        def on_open(conn: WsConnection) -> None:
            conns.add(conn)
            conn.lost.add_done_callback(lambda _: conns.discard(conn))
            if queue.put(conn) is None:  # the listener is closing
                conn.abort()

        def factory() -> WsConnection:
            return self._conn(ServerProtocol(max_size=max_frame), url.scheme, max_frame,
                              on_request=process_request,
                              on_open=on_open, open_timeout=self._open_timeout)

        loop = asyncio.get_running_loop()
        tls = self._ssl if url.scheme == "wss" else None
        with _errors("listen", address):
            sock = _bound_socket(url.hostname, port)  # an IP: every error has its errno
            if sock is not None:
                server = await loop.create_server(factory, sock=sock, ssl=tls)
            else:
                server = await loop.create_server(factory, url.hostname, port, ssl=tls)
        if not server.sockets:  # asyncio skips an address it cannot bind, without a reason
            server.close()
            raise ListenFailed(f"cannot listen on {address}: no socket could be bound")
        bound = hostport(server.sockets[0].getsockname())
        return WsListener(server, f"{url.scheme}://{bound}{path}", queue, conns)
