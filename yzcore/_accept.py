"""AcceptQueue: the task-per-connection half of ``Listener.serve``, for backends.

Transport backends use it so that every listener serves connections the same
way: one task each, the handler attached before the first message is read, a
failing handler closing only its own connection.
"""

from __future__ import annotations

import logging
import math

import anyio

from yzcore.exceptions import ConnectionClosed, LocalProtocolError
from yzcore.transport import Connection, ConnectionHandler, PushConnection

__all__ = ["AcceptQueue"]

log = logging.getLogger("yzcore.transport")




class AcceptQueue:
    """Hands accepted connections to :meth:`Listener.serve`, each in its own task.

    A backend calls :meth:`put` for each accepted connection (before reading
    from it), forwards ``serve`` to :meth:`serve` and ``aclose`` to
    :meth:`aclose`. ``put`` returns an event set once the handler is done and
    the connection closed, for libraries (like websockets) that tie a
    connection's life to a callback; ``None`` means the listener is closed and
    the backend should drop the connection.
    """

    def __init__(self) -> None:
        self._send, self._recv = anyio.create_memory_object_stream[tuple[Connection, anyio.Event]](
            math.inf
        )
        self._serving = False
        self._closed = False
        self._scope: anyio.CancelScope | None = None

    def put(self, conn: Connection) -> anyio.Event | None:
        done = anyio.Event()
        try:
            self._send.send_nowait((conn, done))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return None
        return done

    async def serve(self, handler: ConnectionHandler) -> None:
        if self._serving:
            raise LocalProtocolError("serve() was already called on this listener")
        self._serving = True
        if self._closed:
            return
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                if self._closed:  # aclose() ran while the task group was starting
                    tg.cancel_scope.cancel()
                async for conn, done in self._recv:
                    tg.start_soon(self._run, handler, conn, done)
        finally:
            await self._drain()

    async def aclose(self) -> None:
        self._closed = True
        self._send.close()
        if self._scope is not None:
            self._scope.cancel()
        if not self._serving:
            await self._drain()

    @staticmethod
    async def _run(handler: ConnectionHandler, conn: Connection, done: anyio.Event) -> None:
        try:
            await handler(conn)
        except ConnectionClosed:
            pass  # the peer left while the handler was busy: normal life
        except Exception as exc:
            log.exception(
                "connection handler failed; closing that connection",
                extra={
                    "transport": conn.transport,
                    "peer": conn.remote_address,
                    "error": repr(exc),
                },
            )
        finally:
            if not (isinstance(conn, PushConnection) and conn.attached):
                with anyio.CancelScope(shield=True):
                    await conn.close()
            done.set()

    async def _drain(self) -> None:
        """Close the connections nobody will serve."""
        with anyio.CancelScope(shield=True):
            while True:
                try:
                    conn, done = self._recv.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                await conn.close()
                done.set()
            self._recv.close()
