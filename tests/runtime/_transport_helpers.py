"""What the transport tests share: where each transport listens, the frame limit
they test against, a listener serving a handler for the length of a block, and an
echo handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from yzcore.transport import Connection, ConnectionHandler, Listener, Transport

LISTEN = {"mem": "mem://", "ws": "ws://127.0.0.1:0/dht"}
LIMIT = 65536


@asynccontextmanager
async def serving(
    t: Transport, address: str, handler: ConnectionHandler, **kw: Any
) -> AsyncIterator[Listener]:
    """A listener on ``address`` serving ``handler`` until the block ends."""
    listener = await t.listen(address, **kw)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        yield listener
        tg.cancel_scope.cancel()


async def echo(conn: Connection) -> None:
    async for message in conn:
        await conn.send(message)
