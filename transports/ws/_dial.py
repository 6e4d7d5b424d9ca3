"""A TCP connect that does not hang on a lost SYN.

A kernel sends a connection's first SYN again after 1 s and then after 2 s
more: two SYNs (or their answers) lost in a row hold a dial for 3 s, three
for 7 s, past the node's 5 s dial timeout. At 5% loss each way one SYN
exchange in ten fails, so one dial in a thousand would time out with its
peer alive, and a lookup would leave that peer out. :func:`open_socket`
starts a second attempt on a fresh socket when the first has not connected
within ``second_after`` (its SYNs then go out at 0, 1 and 3 s, the second's
at 1, 2 and 4 s): six tries before 5 s instead of three. The first to
connect is used and the other closed. A refusal or an unreachable host
fails the dial at once: it is an answer, not a loss. (A host that vanished
holds both sockets until the dial's timeout.)
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["SECOND_ATTEMPT_AFTER", "open_socket", "race"]

T = TypeVar("T")

SECOND_ATTEMPT_AFTER = 1.0  #: seconds; the kernel's first SYN retransmission
# The peer's host (or a router) answered: another attempt would hear the same.
_ANSWERS = frozenset((errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH))


async def open_socket(host: str, port: int, second_after: float | None) -> socket.socket:
    """A connected, non-blocking TCP socket to ``host:port``.

    Each address ``host`` resolves to is tried in turn, like
    ``loop.create_connection``; on each, a second attempt joins the first
    after ``second_after`` seconds (``None``: never).

    Raises:
        socket.gaierror: ``host`` does not resolve.
        OSError: No address could be connected (the first address's error).
    """
    loop = asyncio.get_running_loop()
    infos = _literal(host, port) or await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    errors: list[OSError] = []
    for family, type_, proto, _, address in infos:

        async def attempt(family: int = family, type_: int = type_, proto: int = proto,
                          address: Any = address) -> socket.socket:
            sock = socket.socket(family, type_, proto)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
            except BaseException:
                sock.close()
                raise
            return sock

        try:
            return await race(attempt, second_after, socket.socket.close)
        except OSError as exc:
            errors.append(exc)
    if not errors:
        raise OSError(f"getaddrinfo({host!r}) returned no address")
    raise errors[0]


def _literal(host: str, port: int) -> list[tuple[Any, ...]] | None:
    """An IP address's one address info, without the resolver's thread (as asyncio does;
    a scoped IPv6 one still has its scope looked up by the socket call)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if ip.version == 4:
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(ip), port))]
    return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(ip), port, 0, 0))]


async def race(attempt: Callable[[], Awaitable[T]], second_after: float | None,
               discard: Callable[[T], object]) -> T:
    """The result of ``attempt()``, or of a second one started alongside after
    ``second_after`` seconds (``None``: never), whichever comes first.

    The peer's answer (refused, unreachable) fails it at once; a local failure
    of one attempt (out of descriptors, say) waits for the other. A cancelled
    attempt cleans up after itself; one that succeeded too late is passed to
    ``discard``.
    """
    tasks = {asyncio.ensure_future(attempt())}
    try:
        done, _ = await asyncio.wait(tasks, timeout=second_after)
        if not done:
            tasks.add(asyncio.ensure_future(attempt()))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        while True:
            ok = [t for t in done if t.exception() is None]
            if ok:
                tasks.discard(ok[0])
                return ok[0].result()
            tasks -= done
            error = next(iter(done)).exception()
            assert error is not None
            if not tasks or not isinstance(error, OSError) or error.errno in _ANSWERS:
                raise error
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()  # the attempt cleans up as the cancellation unwinds it
            elif not task.cancelled() and task.exception() is None:
                discard(task.result())  # succeeded too, a moment too late
