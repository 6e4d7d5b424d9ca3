"""A bootstrap server given awkward requests, over real WebSockets on 127.0.0.1: each
is answered with its code, and the server goes on serving everyone."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from yzcore import wire
from yzcore.bootstrap.server import BootstrapServer
from yzcore.identity import Identity
from yzcore.runtime.peer import handshake
from yzcore.transport import Connection, transport_for

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@asynccontextmanager
async def bootstrap_server() -> AsyncIterator[BootstrapServer]:
    server = BootstrapServer(seed=7)
    async with anyio.create_task_group() as tg:
        await server.start(tg)
        yield server
        await server.aclose()


async def client(address: str) -> Connection:
    conn = await transport_for(address).connect(address, timeout=5)
    await handshake(conn, Identity.generate(), role="node", advertise=None, timeout=5)
    return conn


async def ask(conn: Connection, msg: wire.Message) -> wire.Message:
    await conn.send(wire.encode(msg))
    with anyio.fail_after(10):
        return wire.decode(await conn.receive())


async def web_error_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A web server's 404 for the upgrade: HTML over lines, and something private."""
    await reader.read(4096)
    body = (b"<html>\r\n<head><title>404 Not Found</title></head>\r\n"
            b"\ttoken=s3cret\x1b[0m\r\n</html>\r\n")
    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    writer.close()


@pytest.mark.req("A2.3")
async def test_a_dial_back_to_a_web_page_is_answered_with_its_code_and_the_server_serves_on():
    # A dial-back's failure quoting a multi-line page once failed to encode, in a task
    # of the server's own group: the whole server went down.
    async with tcp_server(web_error_page) as port, bootstrap_server() as server:
        conn = await client(server.address)
        reply = await ask(conn, wire.DialBack(1, f"ws://127.0.0.1:{port}/dht"))
        assert isinstance(reply, wire.DialBackResult) and not reply.ok
        assert reply.code == "WS_UPGRADE_REJECTED" and "HTTP 404" in reply.message
        assert "s3cret" not in reply.message  # the page is not the asker's to read
        other = await client(server.address)  # the server still serves
        assert isinstance(await ask(other, wire.Introduce(2, 8)), wire.Introductions)
        assert isinstance(await ask(conn, wire.Ping(3)), wire.Pong)
        await conn.close()
        await other.close()


@pytest.mark.req("A2.3")
async def test_unreadable_dial_back_addresses_and_huge_signal_sessions_get_their_codes():
    async with bootstrap_server() as server:
        conn = await client(server.address)
        for rid, addr in ((1, "ws://[::1/dht"), (2, "ws://[zz]:1/dht")):
            reply = await ask(conn, wire.DialBack(rid, addr))
            assert isinstance(reply, wire.Error) and reply.rid == rid
            assert reply.code == "DIAL_BACK_REFUSED", reply
        # A signal to a peer that is not here ends the sender's attempt with a signal
        # naming its session; a session no real one could be is not echoed back.
        for session, echoed in (("0123456789abcdef", "0123456789abcdef"),
                                ("x" * (wire.MAX_SIGNAL - 40), None)):
            reply = await ask(conn, wire.Signal(os.urandom(32), None, {"kind": "offer",
                                                                       "session": session}))
            assert isinstance(reply, wire.Signal) and reply.data["code"] == "PEER_UNREACHABLE"
            assert reply.data["session"] == echoed
        assert not server.errors or all(e["code"] != "INTERNAL" for e in server.errors)
        await conn.close()


@asynccontextmanager
async def forwarding_proxy(target_port: int) -> AsyncIterator[int]:
    """A reverse proxy on 127.0.0.1: it adds X-Forwarded-For to the upgrade request
    and passes the bytes on both ways."""
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        line, rest = request.split(b"\r\n", 1)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        up_writer.write(line + b"\r\nX-Forwarded-For: 192.0.2.7\r\n" + rest)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async with tcp_server(handle) as port:
        yield port


@pytest.mark.req("A2.3")
async def test_a_client_that_comes_through_a_proxy_gets_no_dial_back():
    # Behind a proxy on the same host every client looks like 127.0.0.1: a dial-back
    # would let anyone probe the host's loopback ports.
    async with tcp_server(web_error_page) as web, bootstrap_server() as server:
        own_port = int(server.address.rsplit(":", 1)[1].split("/")[0])
        async with forwarding_proxy(own_port) as port:
            conn = await client(f"ws://127.0.0.1:{port}/dht")
            reply = await ask(conn, wire.DialBack(1, f"ws://127.0.0.1:{web}/dht"))
            assert isinstance(reply, wire.Error) and reply.code == "DIAL_BACK_REFUSED"
            assert "proxy" in reply.message
            await conn.close()
        direct = await client(server.address)  # the same request, not through a proxy
        reply = await ask(direct, wire.DialBack(2, f"ws://127.0.0.1:{web}/dht"))
        assert isinstance(reply, wire.DialBackResult) and reply.code == "WS_UPGRADE_REJECTED"
        await direct.close()


@pytest.mark.req("A3.1", "B2.2")
async def test_new_node_ids_from_one_address_are_limited():
    # Keys cost nothing: one client made 8,000 node ids, each listed for node_ttl
    # with 64 peers: /status grew to 36 MB and the health share fell to 0%. Here
    # from 198.18.0.1 (a namespace of the test's own: loopback is not counted).
    from tests.runtime.netns import ADDRESSES, inside_netns

    with inside_netns("boot"):
        server = BootstrapServer(listen=f"ws://{ADDRESSES[0]}:0/dht", seed=8)
        async with anyio.create_task_group() as tg:
            await server.start(tg)
            conns = []
            for _ in range(64 + 6):  # a few seconds at most: the burst, then 1 a second
                conn = await transport_for(server.address).connect(server.address, timeout=5)
                await handshake(conn, Identity.generate(), role="node", advertise=None, timeout=5)
                conns.append(conn)
            refused = 0

            async def told(conn: Connection) -> None:
                nonlocal refused
                try:
                    msg = wire.decode(await conn.receive())
                    refused += isinstance(msg, wire.Error) and msg.code == "RATE_LIMITED"
                except Exception:  # noqa: BLE001 -- closed after the refusal
                    pass

            with anyio.move_on_after(1.0):
                async with anyio.create_task_group() as reading:
                    for conn in conns:
                        reading.start_soon(told, conn)
            for conn in conns:
                await conn.close()
            assert 1 <= refused <= 6, refused  # past the burst of 64 (and what refilled meanwhile)
            await server.aclose()
            tg.cancel_scope.cancel()


@pytest.mark.parametrize(("remote", "forwarded", "limited"), [
    ("[::1]:4000", False, False),  # loopback, v6 too, is not counted
    ("127.0.0.1:4000", False, False),
    ("100.64.0.7:4000", False, True),
    ("100.64.0.7:4000", True, True),  # a forwarding header from beyond the network: counted
    ("10.0.0.2:4000", True, False),  # a proxy on the network: not its own address
])
def test_which_clients_the_new_node_id_limit_counts(remote, forwarded, limited):
    from types import SimpleNamespace

    server = BootstrapServer(seed=9)
    refused = 0
    for _ in range(70):  # the burst is 64
        pc = SimpleNamespace(peer=SimpleNamespace(role="node", id=os.urandom(32)),
                             conn=SimpleNamespace(remote_address=remote, forwarded=forwarded),
                             send=lambda msg: True)
        refused += not server._may_join(pc)
    assert (refused >= 6) == limited, refused
