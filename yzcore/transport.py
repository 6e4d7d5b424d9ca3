"""The transport SDK: what a transport is, and where transports come from.

A transport carries whole messages (``bytes``) between two endpoints named by
URLs whose scheme picks the transport: ``ws://127.0.0.1:8470/dht``,
``mem://node-3``, ``webrtc://...``. One ``send()`` on one side is one
``receive()`` on the other, in order: framing is the transport's job.

Three interfaces, all anyio:

* :class:`Transport` dials (:meth:`~Transport.connect`) and binds
  (:meth:`~Transport.listen`);
* :class:`Listener` hands each accepted :class:`Connection` to a handler, each
  in its own task (:meth:`~Listener.serve`);
* :class:`Connection` sends, receives and closes; a :class:`PushConnection`
  can also hand messages to a callback and send without waiting, so that a
  node holding thousands of connections needs no task for each.

Transports are plugins. Each registers under the entry-point group
``yzcore.transports`` with its scheme as the name; the built-in ones
(``mem``, ``ws``, ``wss``) register exactly as a third party's would.
:func:`get_transport` imports a plugin only when its scheme is first asked
for, and caches the instance. A plugin that fails to import is logged with an
install hint and raises :class:`~yzcore.exceptions.TransportUnavailable` when
its scheme is requested; it never breaks the other transports.

Example::

    async def echo(conn: Connection) -> None:
        async for message in conn:
            await conn.send(message)

    listener = await transport_for("ws://127.0.0.1:0/dht").listen("ws://127.0.0.1:0/dht")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, echo)
        dialer = transport_for(listener.address)
        async with await dialer.connect(listener.address, timeout=5) as conn:
            await conn.send(b'{"t":"ping"}')
            print(await conn.receive())
        tg.cancel_scope.cancel()

Backends write only the I/O; :class:`AcceptQueue` gives them the
task-per-connection part of :meth:`Listener.serve`.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self
from urllib.parse import urlsplit

import orjson

from yzcore.addresses import KNOWN_ADDRESSES, KnownAddresses
from yzcore.exceptions import (
    ConnectionClosed,
    InvalidArgument,
    TransportUnavailable,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "DEFAULT_MAX_FRAME",
    "Connection",
    "PushConnection",
    "ConnectionHandler",
    "Listener",
    "Transport",
    "HttpResponse",
    "HttpHandler",
    "AcceptQueue",
    "get_transport",
    "transport_for",
    "scheme_of",
    "relay_address",
    "webrtc_address",
    "http_base",
    "available_schemes",
    "register",
    "unregister",
    "install_hint",
    "KnownAddresses",
    "KNOWN_ADDRESSES",
]

#: The entry-point group transports register under, named by their URL scheme.
ENTRY_POINT_GROUP = "yzcore.transports"
#: The default largest message, in bytes, a connection accepts (ARCHITECTURE §2).
DEFAULT_MAX_FRAME = 65536

log = logging.getLogger("yzcore.transport")


# --------------------------------------------------------------------------
# Interfaces
# --------------------------------------------------------------------------


class Connection(abc.ABC):
    """One open connection carrying whole messages, in order.

    ``send`` may be called from several tasks at once; ``receive`` from one
    task at a time. ``async with conn:`` closes it on exit, and ``async for
    message in conn:`` receives until the connection is closed.
    """

    __slots__ = ()  # subclasses may use slots (a node holds thousands of connections)

    @property
    @abc.abstractmethod
    def remote_address(self) -> str:
        """The peer, printable, for logs: ``"127.0.0.1:53211"``, ``"[::1]:8470"``, ``"auto-3"``."""

    @property
    @abc.abstractmethod
    def transport(self) -> str:
        """The scheme of the transport carrying it: ``"ws"``, ``"mem"``, ..."""

    @abc.abstractmethod
    async def send(self, data: bytes) -> None:
        """Send one message.

        Raises:
            FrameTooLarge: ``data`` is over this connection's ``max_frame`` (the
                limit given to ``connect``/``listen``); nothing was sent and the
                connection stays usable.
            ConnectionClosed: The connection is closed.
        """

    @abc.abstractmethod
    async def receive(self) -> bytes:
        """Receive the next message.

        Raises:
            ConnectionClosed: The peer closed, the network dropped the connection, or
                we closed it. Messages that arrived before the close are delivered first.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; idempotent, and safe in a cancelled scope."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[bytes]:
        while True:
            try:
                message = await self.receive()
            except ConnectionClosed:
                return
            yield message


class PushConnection(Connection):
    """A connection that can also push messages to callbacks and send without waiting.

    The pull API of :class:`Connection` stays usable until :meth:`attach` is
    called (the handshake is read with ``receive()``); after it, messages go
    to ``on_message`` only. The runtime prefers this API when a transport
    offers it: it needs no task and no queue per connection.
    """

    __slots__ = ()

    @abc.abstractmethod
    def attach(
        self, on_message: Callable[[bytes], None], on_closed: Callable[[ConnectionClosed], None]
    ) -> None:
        """Deliver each further message to ``on_message``, in order, and the end once to ``on_closed``.

        Messages that arrived before ``attach`` are delivered first, at once,
        so nothing is lost between the handshake and the handlers.
        Both callbacks run on the event loop and must not block. A connection
        with handlers attached outlives the :meth:`Listener.serve` handler
        that accepted it; close it with :meth:`close` or :meth:`abort`.
        """

    @abc.abstractmethod
    def send_nowait(self, data: bytes) -> bool:
        """Send one message without waiting.

        Returns:
            False, and nothing is sent, when the peer is not reading: the
            connection's write buffer is over its high-water mark.

        Raises:
            FrameTooLarge: As :meth:`Connection.send`.
            ConnectionClosed: The connection is closed.
        """

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake (as a crash would)."""

    @property
    @abc.abstractmethod
    def attached(self) -> bool:
        """True once :meth:`attach` was called."""


#: What :meth:`Listener.serve` calls with each accepted connection.
ConnectionHandler = Callable[[Connection], Awaitable[None]]


class Listener(abc.ABC):
    """A bound address that accepts connections. ``async with listener:`` closes it."""

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """The URL actually bound: the real port when port 0 was asked for."""

    @abc.abstractmethod
    async def serve(self, handler: ConnectionHandler) -> None:
        """Call ``handler(conn)`` for each accepted connection, each in its own task.

        Runs until cancelled or until the listener is closed; call it once.
        Connections accepted before ``serve`` starts wait for it, and no message
        is lost: the handler is attached before the first message can be read.
        The connection is closed when the handler returns; an exception from the
        handler is logged and closes that connection only.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop accepting, cancel the handlers, close their connections. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A plain HTTP answer served on a listener's port (``/healthz``, ``/status``, ...)."""

    status: int
    """HTTP status code."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra headers; the transport adds Content-Length, and CORS unless given."""
    body: bytes = b""
    """The body, sent as is."""

    @classmethod
    def json(cls, status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
        """A JSON response: ``HttpResponse.json(200, {"healthy": True})``."""
        return cls(status, (("Content-Type", "application/json"), *headers), orjson.dumps(obj))


#: ``http(method, path, headers)``: called, synchronously, for every plain HTTP
#: request on a listener's port that is not a WebSocket upgrade of its endpoint.
#: ``path`` is the request target as sent (it may carry a ``?query``); header
#: names are lower-case. Return ``None`` for the transport's default answer
#: (426 on the WebSocket path, 404 elsewhere). Keep it cheap: it runs on the
#: event loop during the handshake.
HttpHandler = Callable[[str, str, Mapping[str, str]], HttpResponse | None]


class Transport(abc.ABC):
    """Dials and binds addresses of the schemes in :attr:`schemes`.

    Instantiated with no arguments by the registry; options go to the
    constructor, e.g. ``register("ws", lambda: WebSocketTransport(ping_interval=5))``.
    """

    #: The URL schemes this transport serves, e.g. ``("ws", "wss")``.
    schemes: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    async def connect(
        self, address: str, *, timeout: float = 10.0, max_frame: int = DEFAULT_MAX_FRAME
    ) -> Connection:
        """Open a connection to ``address``.

        Args:
            address: A URL of one of :attr:`schemes`.
            timeout: Seconds for the whole opening (connect and handshake).
            max_frame: The largest message this side accepts.

        Raises:
            ConnectFailed: Nothing answered, it refused, or the time ran out (its
                subclass ``WsUpgradeRejected`` when an HTTP server refused the upgrade).
            InvalidArgument: ``address`` is not a valid URL for this transport.
        """

    @abc.abstractmethod
    async def listen(
        self,
        address: str,
        *,
        http: HttpHandler | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> Listener:
        """Bind ``address`` (port 0 picks a free port) and return the listener.

        Args:
            address: A URL of one of :attr:`schemes`.
            http: Serves plain HTTP on the same port, where the transport has HTTP.
            max_frame: The largest message accepted from a peer.

        Raises:
            ListenFailed: The address cannot be bound.
            InvalidArgument: ``address`` is not a valid URL for this transport.
        """


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------


class EntryPointLike(Protocol):
    """What discovery yields: :class:`importlib.metadata.EntryPoint` or a test double."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    def load(self) -> Any: ...


_HINTS = {"webrtc": "pip install 'yzcore[webrtc]'"}

_registered: dict[str, Callable[[], Transport]] = {}
_instances: dict[str, Transport] = {}
_failures: dict[str, tuple[str, str]] = {}  # scheme -> (message, advice), logged once


def _entry_points() -> Iterable[EntryPointLike]:
    """Discovery: the installed entry points of :data:`ENTRY_POINT_GROUP`."""
    return entry_points(group=ENTRY_POINT_GROUP)


def _discover() -> dict[str, EntryPointLike]:
    found: dict[str, EntryPointLike] = {}
    try:
        eps = list(_entry_points())
    except Exception as exc:  # noqa: BLE001 -- broken metadata must not take transports down
        log.warning("cannot list transport plugins: %r", exc, extra={"error": repr(exc)})
        return found
    for ep in eps:
        first = found.setdefault(ep.name.lower(), ep)
        if first.value != ep.value:
            log.warning(
                "two plugins claim the transport scheme %r: using %s, ignoring %s",
                ep.name,
                first.value,
                ep.value,
                extra={"scheme": ep.name, "entry_point": ep.value},
            )
    return found


def install_hint(scheme: str) -> str:
    """What to install to get the transport for ``scheme``."""
    return _HINTS.get(scheme, f"pip install the package that provides the '{scheme}' transport")


def scheme_of(url: str) -> str:
    """The lower-case scheme of ``url``: ``"ws"`` for ``"ws://127.0.0.1:8470/dht"``.

    Raises:
        InvalidArgument: ``url`` has no ``scheme://``.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme or not scheme.replace("+", "").replace("-", "").isalnum():
        raise InvalidArgument(
            f"{url!r} is not a transport URL (scheme://...)",
            advice="Write addresses as URLs, e.g. ws://127.0.0.1:8470/dht or mem://node-1.",
        )
    return scheme.lower()


def http_base(url: str) -> str:
    """The HTTP base of a node's or bootstrap server's URL: ``ws://H:P/dht`` -> ``http://H:P``:
    where ``/status``, ``/healthz`` and ``/metrics`` are, beside the WebSocket endpoint, whatever
    its name (``ws://H:P/p2p`` -> ``http://H:P``; ``wss://example.org/yz/dht`` -> ``.../yz``)."""
    parts = urlsplit(url.replace("wss://", "https://", 1).replace("ws://", "http://", 1))
    path = parts.path.rstrip("/").rpartition("/")[0]
    return f"{parts.scheme}://{parts.netloc}{path}"


def webrtc_address(peer_id: bytes) -> str:
    """``webrtc://<id in hex>``: how a browser-class peer is dialled (the ``webrtc`` transport)."""
    return f"webrtc://{peer_id.hex()}"


def relay_address(bridge_url: str, node_id: bytes) -> str:
    """The ``bridge://`` address of ``node_id`` as relayed by the bridge at ``bridge_url``.

    ``bridge://HOST:PORT/<id in hex>``, where ``HOST:PORT`` is the bridge's
    (its ``ws://HOST:PORT/dht``); the ``bridge`` transport dials it.
    """
    return f"bridge://{urlsplit(bridge_url).netloc}/{node_id.hex()}"


def get_transport(scheme: str) -> Transport:
    """The transport serving ``scheme``, loaded on first use and cached.

    Raises:
        TransportUnavailable: No plugin provides ``scheme``, or its plugin failed to
            load (logged once, with an install hint).
    """
    scheme = scheme.lower().removesuffix("://")
    if scheme in _instances:
        return _instances[scheme]
    if scheme in _failures:
        message, advice = _failures[scheme]
        raise TransportUnavailable(message, advice=advice)
    factory = _registered.get(scheme)
    if factory is not None:
        instance = factory()
    else:
        instance = _load(scheme)
    _instances[scheme] = instance
    return instance


def _load(scheme: str) -> Transport:
    hint = install_hint(scheme)
    found = _discover()
    ep = found.get(scheme)
    if ep is None:
        installed = ", ".join(sorted(set(found) | set(_registered))) or "none"
        raise TransportUnavailable(
            f"no transport is installed for {scheme}:// (installed: {installed})",
            advice=f"{hint}; `yz version` lists the installed transports.",
        )
    try:
        obj = ep.load()
        instance = obj if isinstance(obj, Transport) else obj()
        if not isinstance(instance, Transport):
            raise TypeError(f"{ep.value} gave {type(instance).__name__}, not a yzcore Transport")
    except Exception as exc:  # ImportError mostly; anything else is as fatal for this plugin
        message = f"the {scheme}:// transport plugin ({ep.value}) failed to load: {exc!r}"
        advice = f"{hint}; the other transports keep working."
        log.warning(
            "%s; install hint: %s",
            message,
            hint,
            extra={"scheme": scheme, "entry_point": ep.value, "error": repr(exc), "hint": hint},
        )
        _failures[scheme] = (message, advice)
        raise TransportUnavailable(message, advice=advice) from exc
    return instance


def transport_for(url: str) -> Transport:
    """The transport for ``url``'s scheme (see :func:`get_transport`)."""
    return get_transport(scheme_of(url))


def available_schemes() -> list[str]:
    """Every scheme a plugin is installed or registered for (not yet loaded, so maybe broken)."""
    return sorted(set(_discover()) | set(_registered))


def register(scheme: str, factory: Callable[[], Transport]) -> None:
    """Serve ``scheme`` with ``factory()``, ahead of any entry point (tests, in-process use).

    Replaces a cached instance or a remembered load failure of that scheme.
    """
    scheme = scheme.lower()
    _registered[scheme] = factory
    _instances.pop(scheme, None)
    _failures.pop(scheme, None)


def unregister(scheme: str) -> None:
    """Undo :func:`register`, and forget the cached instance or failure of ``scheme``."""
    scheme = scheme.lower()
    _registered.pop(scheme, None)
    _instances.pop(scheme, None)
    _failures.pop(scheme, None)


# AcceptQueue is a helper for backends; it lives apart but is part of the SDK.
from yzcore._accept import AcceptQueue  # noqa: E402  (it needs the classes above)
