"""An example yzcore transport plugin: ``example://NAME``, carried in memory.

It wraps yzcore's own ``mem`` transport and renames the scheme, which is all
a plugin needs to show: a :class:`~yzcore.transport.Transport` subclass, its
:class:`~yzcore.transport.Listener` and :class:`~yzcore.transport.Connection`,
and the entry point in ``pyproject.toml``.
"""

from __future__ import annotations

from yzcore_transports.mem import MemoryTransport

from yzcore.exceptions import InvalidArgument
from yzcore.transport import (
    DEFAULT_MAX_FRAME,
    Connection,
    ConnectionHandler,
    HttpHandler,
    Listener,
    Transport,
)

__all__ = ["ExampleTransport"]

SCHEME = "example://"


def _to_mem(address: str) -> str:
    if not address.startswith(SCHEME):
        raise InvalidArgument(f"{address!r} is not an {SCHEME} address")
    return "mem://" + address[len(SCHEME) :]


class ExampleConnection(Connection):
    def __init__(self, inner: Connection) -> None:
        self._inner = inner

    @property
    def remote_address(self) -> str:
        return self._inner.remote_address

    @property
    def transport(self) -> str:
        return "example"

    async def send(self, data: bytes) -> None:
        await self._inner.send(data)

    async def receive(self) -> bytes:
        return await self._inner.receive()

    async def close(self) -> None:
        await self._inner.close()


class ExampleListener(Listener):
    def __init__(self, inner: Listener) -> None:
        self._inner = inner

    @property
    def address(self) -> str:
        return SCHEME + self._inner.address.removeprefix("mem://")

    async def serve(self, handler: ConnectionHandler) -> None:
        async def wrapped(conn: Connection) -> None:
            await handler(ExampleConnection(conn))

        await self._inner.serve(wrapped)

    async def aclose(self) -> None:
        await self._inner.aclose()


class ExampleTransport(Transport):
    schemes = ("example",)

    def __init__(self) -> None:
        self._mem = MemoryTransport()  # a private hub: example:// names only

    async def connect(
        self, address: str, *, timeout: float = 10.0, max_frame: int = DEFAULT_MAX_FRAME
    ) -> Connection:
        conn = await self._mem.connect(_to_mem(address), timeout=timeout, max_frame=max_frame)
        return ExampleConnection(conn)

    async def listen(
        self, address: str, *, http: HttpHandler | None = None, max_frame: int = DEFAULT_MAX_FRAME
    ) -> Listener:
        return ExampleListener(await self._mem.listen(_to_mem(address), max_frame=max_frame))
