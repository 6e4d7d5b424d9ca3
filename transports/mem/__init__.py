"""In-process transport: ``mem://name``, for tests and many nodes in one process.

A connection is a pair of anyio memory object streams, so messages keep their
boundaries and order and cost no syscalls. Names are looked up in a hub that
belongs to the :class:`MemoryTransport` instance; the registry caches one
instance per scheme, so ``get_transport("mem")`` shares one hub per process,
while ``MemoryTransport()`` made by hand is a private network of its own.

``mem://`` with an empty name listens on a fresh name (``auto-1``, ...).
``send`` refuses (``FrameTooLarge``) a message over this side's ``max_frame``
or the peer's, whichever is smaller: in one process both are known.
There is no HTTP here, so ``listen(http=...)`` is accepted and ignored.
"""

from __future__ import annotations

import itertools

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from yzcore.exceptions import (
    ConnectFailed,
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    ListenFailed,
)
from yzcore.transport import (
    DEFAULT_MAX_FRAME,
    AcceptQueue,
    Connection,
    ConnectionHandler,
    HttpHandler,
    Listener,
    Transport,
)

__all__ = ["MemoryTransport", "MemoryConnection", "MemoryListener"]

SCHEME = "mem://"


class MemoryConnection(Connection):
    """One end of an in-process connection."""

    def __init__(
        self,
        send: MemoryObjectSendStream[bytes],
        recv: MemoryObjectReceiveStream[bytes],
        remote: str,
        max_frame: int,
    ) -> None:
        self._send, self._recv = send, recv
        self._remote = remote
        self._max_frame = max_frame  # the smaller of the two sides' limits

    @property
    def remote_address(self) -> str:
        return self._remote

    @property
    def transport(self) -> str:
        return "mem"

    async def send(self, data: bytes) -> None:
        if len(data) > self._max_frame:
            raise FrameTooLarge(
                f"a {len(data)}-byte message to {self._remote} is over its max_frame "
                f"({self._max_frame} bytes); nothing was sent",
                size=len(data),
                limit=self._max_frame,
            )
        try:
            await self._send.send(bytes(data))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise ConnectionClosed(f"mem connection to {self._remote} is closed") from None

    async def receive(self) -> bytes:
        try:
            return await self._recv.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ConnectionClosed(f"mem connection to {self._remote} is closed") from None

    async def close(self) -> None:
        self._send.close()
        self._recv.close()


class MemoryListener(Listener):
    """A name in a :class:`MemoryTransport`'s hub."""

    def __init__(self, hub: dict[str, MemoryListener], name: str, max_frame: int) -> None:
        self._hub, self.name, self.max_frame = hub, name, max_frame
        self.queue = AcceptQueue()

    @property
    def address(self) -> str:
        return SCHEME + self.name

    async def serve(self, handler: ConnectionHandler) -> None:
        await self.queue.serve(handler)

    async def aclose(self) -> None:
        if self._hub.get(self.name) is self:
            del self._hub[self.name]
        await self.queue.aclose()


class MemoryTransport(Transport):
    """The ``mem://`` transport; see the module docstring.

    Args:
        buffer: Messages a connection queues per direction before ``send`` waits,
            like a socket buffer filling up.
    """

    schemes = ("mem",)

    def __init__(self, *, buffer: int = 1024) -> None:
        self._hub: dict[str, MemoryListener] = {}
        self._buffer = buffer
        self._ids = itertools.count(1)

    async def listen(
        self, address: str, *, http: HttpHandler | None = None, max_frame: int = DEFAULT_MAX_FRAME
    ) -> Listener:
        name = _name(address) or f"auto-{next(self._ids)}"
        if name in self._hub:
            raise ListenFailed(f"{SCHEME}{name} is already listening in this process")
        listener = self._hub[name] = MemoryListener(self._hub, name, max_frame)
        return listener

    async def connect(
        self, address: str, *, timeout: float = 10.0, max_frame: int = DEFAULT_MAX_FRAME
    ) -> Connection:
        name = _name(address)
        listener = self._hub.get(name)
        if listener is None:
            names = ", ".join(sorted(self._hub)) or "none"
            raise ConnectFailed(
                f"no mem listener named {name!r} in this process (listening: {names})"
            )
        to_server, server_in = anyio.create_memory_object_stream[bytes](self._buffer)
        to_client, client_in = anyio.create_memory_object_stream[bytes](self._buffer)
        dialer = f"mem-dialer-{next(self._ids)}"
        limit = min(max_frame, listener.max_frame)
        client = MemoryConnection(to_server, client_in, name, limit)
        server = MemoryConnection(to_client, server_in, dialer, limit)
        if listener.queue.put(server) is None:
            await client.close()
            await server.close()
            raise ConnectFailed(f"mem listener {name!r} is closing")
        return client


def _name(address: str) -> str:
    if not address.lower().startswith(SCHEME):
        raise InvalidArgument(f"{address!r} is not a mem:// address", advice="Use mem://NAME.")
    return address[len(SCHEME) :]
