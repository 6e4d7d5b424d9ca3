"""The transport SDK and the built-in transports, on real sockets (127.0.0.1 only).

The same behaviour is asked of ``mem`` and ``ws`` (the ``kind`` fixture);
the WebSocket specifics (HTTP on the same port, 1009, handshake errors) and
the plugin registry follow.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
import pytest
import websockets
from anyio.abc import SocketStream
from websockets.asyncio.client import connect as raw_connect
from yzcore_transports.mem import MemoryTransport
from yzcore_transports.ws import WebSocketTransport
from yzcore_transports.ws._conn import HIGH_WATER

from yzcore import transport as registry
from yzcore.exceptions import (
    ConnectFailed,
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    ListenFailed,
    TransportUnavailable,
    WsUpgradeRejected,
)
from yzcore.transport import (
    Connection,
    PushConnection,
    ConnectionHandler,
    HttpResponse,
    Listener,
    Transport,
    available_schemes,
    get_transport,
    transport_for,
)

pytestmark = pytest.mark.anyio

LISTEN = {"mem": "mem://", "ws": "ws://127.0.0.1:0/dht"}
LIMIT = 65536


@pytest.fixture(params=["mem", "ws"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------
# The same contract from every transport
# --------------------------------------------------------------------------

MESSAGES = [
    b"",
    b"x",
    orjson.dumps({"v": 1, "t": "find_node", "rid": 7, "target": "ab" * 32}),
    "héllo ✓ ünïcode".encode(),
    bytes(range(256)),  # not UTF-8: travels as a binary frame over ws
    b"\n\r\n{}\x00",
    b"y" * LIMIT,  # exactly at the limit
] + [orjson.dumps({"seq": i, "pad": "z" * (i * 37 % 900)}) for i in range(300)]


@pytest.mark.req("B3.1", "B3.2", "B6.1")  # B6.1: the rewritten ws transport keeps this contract
async def test_echo_keeps_order_and_boundaries(kind: str) -> None:
    t = get_transport(kind)
    async with serving(t, LISTEN[kind], echo) as listener:
        conn = await t.connect(listener.address, timeout=5)
        received: list[bytes] = []

        async def read_all() -> None:
            for _ in MESSAGES:
                received.append(await conn.receive())

        async with conn, anyio.create_task_group() as tg:
            tg.start_soon(read_all)
            for message in MESSAGES:
                await conn.send(message)
        assert received == MESSAGES


async def test_listener_reports_bound_address_and_connections_name_peers(kind: str) -> None:
    t = get_transport(kind)
    peers: list[tuple[str, str]] = []

    async def note(conn: Connection) -> None:
        peers.append((conn.transport, conn.remote_address))
        await echo(conn)

    async with (
        serving(t, LISTEN[kind], note) as listener,
        await t.connect(listener.address, timeout=5) as conn,
    ):
        await conn.send(b"hi")
        assert await conn.receive() == b"hi"
        assert conn.transport == kind
    if kind == "ws":
        host_port = listener.address.removeprefix("ws://").removesuffix("/dht")
        assert host_port.startswith("127.0.0.1:") and not host_port.endswith(":0")
        assert conn.remote_address == host_port
        assert peers[0][1].startswith("127.0.0.1:")
    else:
        assert listener.address.startswith("mem://") and listener.address != "mem://"
        assert conn.remote_address == listener.address.removeprefix("mem://")
    assert peers[0][0] == kind


@pytest.mark.req("B3.5")
async def test_oversized_frame_refused_and_listener_keeps_serving(kind: str) -> None:
    t = get_transport(kind)
    async with serving(t, LISTEN[kind], echo, max_frame=LIMIT) as listener:
        big = await t.connect(listener.address, timeout=5)
        with pytest.raises(FrameTooLarge) as info:
            await big.send(b"x" * (LIMIT + 1))
        assert info.value.code == "FRAME_TOO_LARGE"
        assert (info.value.size, info.value.limit) == (LIMIT + 1, LIMIT)
        assert "65537-byte" in str(info.value)
        # Nothing was sent: the same connection, and a new one, still work.
        await big.send(b"after")
        assert await big.receive() == b"after"
        async with await t.connect(listener.address, timeout=5) as other:
            await other.send(b"other")
            assert await other.receive() == b"other"
        await big.close()


async def test_peer_closing_makes_receive_raise(kind: str) -> None:
    t = get_transport(kind)

    async def one_then_close(conn: Connection) -> None:
        await conn.send(await conn.receive())  # returning closes the connection

    async with serving(t, LISTEN[kind], one_then_close) as listener:
        conn = await t.connect(listener.address, timeout=5)
        await conn.send(b"bye")
        assert await conn.receive() == b"bye"  # sent before the close: delivered
        with pytest.raises(ConnectionClosed) as info:
            await conn.receive()
        assert info.value.code == "CONNECTION_CLOSED"
        if kind == "ws":
            assert info.value.close_code == 1000
        with pytest.raises(ConnectionClosed):
            await conn.send(b"too late")
        await conn.close()
        await conn.close()  # idempotent


async def test_dialler_closing_ends_the_handlers_receive(kind: str) -> None:
    t = get_transport(kind)
    send, recv = anyio.create_memory_object_stream[BaseException](10)

    async def watch(conn: Connection) -> None:
        try:
            await conn.receive()
        except ConnectionClosed as exc:
            await send.send(exc)

    with send, recv:
        async with serving(t, LISTEN[kind], watch) as listener:
            conn = await t.connect(listener.address, timeout=5)
            await conn.close()
            assert isinstance(await recv.receive(), ConnectionClosed)
            with pytest.raises(ConnectionClosed):
                await conn.receive()  # our own closed end, too


async def test_messages_sent_before_serve_are_not_lost(kind: str) -> None:
    t = get_transport(kind)
    listener = await t.listen(LISTEN[kind])
    async with listener:
        conn = await t.connect(listener.address, timeout=5)
        for i in range(3):
            await conn.send(b"early %d" % i)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, echo)
            assert [await conn.receive() for _ in range(3)] == [b"early 0", b"early 1", b"early 2"]
            tg.cancel_scope.cancel()
        await conn.close()


async def test_handler_failure_closes_only_its_connection(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    t = get_transport(kind)

    async def fragile(conn: Connection) -> None:
        async for message in conn:
            if message == b"boom":
                raise RuntimeError("handler bug")
            await conn.send(message)

    async with serving(t, LISTEN[kind], fragile) as listener:
        bad = await t.connect(listener.address, timeout=5)
        await bad.send(b"boom")
        with pytest.raises(ConnectionClosed):
            await bad.receive()
        await bad.close()
        async with await t.connect(listener.address, timeout=5) as good:
            await good.send(b"fine")
            assert await good.receive() == b"fine"
    assert any("connection handler failed" in r.getMessage() for r in caplog.records)


async def test_closing_the_listener_ends_serve_and_its_connections(kind: str) -> None:
    t = get_transport(kind)
    listener = await t.listen(LISTEN[kind])
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, echo)
        conn = await t.connect(listener.address, timeout=5)
        await conn.send(b"ping")
        assert await conn.receive() == b"ping"
        await listener.aclose()  # serve() returns, so the task group can end
    with pytest.raises(ConnectionClosed):
        await conn.receive()
    await conn.close()
    with pytest.raises(ConnectFailed):
        await t.connect(listener.address, timeout=2)
    await listener.aclose()  # idempotent


async def test_listening_twice_on_one_address_fails(kind: str) -> None:
    t = get_transport(kind)
    async with await t.listen(LISTEN[kind]) as first:
        with pytest.raises(ListenFailed) as info:
            await t.listen(first.address)
        assert info.value.code == "LISTEN_FAILED"


OUT_OF_FILES = """
import errno, os, resource
import anyio, orjson
from yzcore.exceptions import ConnectFailed, ListenFailed
from yzcore.transport import get_transport

async def main():
    t = get_transport("ws")
    got = {}
    async with await t.listen("ws://127.0.0.1:0/dht") as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, lambda conn: anyio.sleep(0.1))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        fillers = []
        try:
            while True:
                fillers.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
        for name, call in (("connect", lambda: t.connect(listener.address, timeout=5)),
                           ("listen", lambda: t.listen("ws://127.0.0.1:0/dht"))):
            try:
                await call()
            except (ConnectFailed, ListenFailed) as exc:
                got[name] = [exc.code, str(exc)]
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        async with await t.connect(listener.address, timeout=5):
            got["after"] = "connected"
        tg.cancel_scope.cancel()
    print(orjson.dumps(got).decode())

anyio.run(main)
"""


@pytest.mark.req("B3.5")
def test_out_of_file_descriptors_is_named_with_the_limit_and_what_to_do() -> None:
    """A process at its open-file limit (many nodes in one process) is told so, not
    "no socket could be bound"; the listener it has keeps serving once descriptors free up."""
    out = subprocess.run([sys.executable, "-c", OUT_OF_FILES], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    got = orjson.loads(out.strip().splitlines()[-1])
    assert got["connect"][0] == "CONNECT_FAILED"
    assert got["listen"][0] == "LISTEN_FAILED"
    for _, text in (got["connect"], got["listen"]):
        assert "no file descriptor left (open-file limit" in text
        assert "Raise the open-file limit" in text
    assert got["after"] == "connected"


@pytest.mark.req("B3.5", "B6.5")
async def test_connect_to_nothing_names_the_address(kind: str) -> None:
    t = get_transport(kind)
    if kind == "ws":
        port = closed_port()
        address, expected = f"ws://127.0.0.1:{port}/dht", f"nothing listens on 127.0.0.1:{port}"
    else:
        address, expected = "mem://nobody-here", "no mem listener named 'nobody-here'"
    with pytest.raises(ConnectFailed) as info:
        await t.connect(address, timeout=5)
    assert info.value.code == "CONNECT_FAILED"
    assert expected in str(info.value)


# --------------------------------------------------------------------------
# mem specifics
# --------------------------------------------------------------------------


async def test_mem_hubs_are_per_instance_and_names_are_given() -> None:
    a, b = MemoryTransport(), MemoryTransport()
    async with await a.listen("mem://node-1") as listener:
        assert listener.address == "mem://node-1"
        with pytest.raises(ConnectFailed, match="listening: none"):
            await b.connect("mem://node-1")
        with pytest.raises(InvalidArgument):
            await a.connect("ws://127.0.0.1:1/dht")


async def test_mem_full_buffer_makes_send_wait_not_drop() -> None:
    t = MemoryTransport(buffer=2)
    async with await t.listen("mem://slow") as listener:
        conn = await t.connect(listener.address)
        await conn.send(b"1")
        await conn.send(b"2")
        with anyio.move_on_after(0.05) as scope:
            await conn.send(b"3")  # nobody reads: the third waits
        assert scope.cancelled_caught
        await conn.close()


# --------------------------------------------------------------------------
# ws specifics: frames
# --------------------------------------------------------------------------


@pytest.mark.req("B3.1", "B3.2")
async def test_ws_sends_utf8_as_text_and_accepts_text_and_binary() -> None:
    t = get_transport("ws")
    got: list[bytes] = []

    async def handler(conn: Connection) -> None:
        got.append(await conn.receive())
        got.append(await conn.receive())
        await conn.send(b'{"t":"pong"}')
        await conn.send(b"\xff\xfe")
        await conn.receive()

    async with (
        serving(t, LISTEN["ws"], handler) as listener,
        raw_connect(listener.address, proxy=None) as ws,
    ):
        await ws.send('{"t":"héllo"}')  # what a browser sends: text
        await ws.send(b"\x00\x01")
        assert await ws.recv() == '{"t":"pong"}'  # a str: a Text frame
        assert await ws.recv() == b"\xff\xfe"  # not UTF-8: a Binary frame
    assert got == ['{"t":"héllo"}'.encode(), b"\x00\x01"]


@pytest.mark.req("B3.5")
async def test_ws_peer_oversized_frame_closes_with_1009_and_listener_keeps_serving() -> None:
    t = get_transport("ws")
    send, recv = anyio.create_memory_object_stream[ConnectionClosed](10)

    async def handler(conn: Connection) -> None:
        try:
            while True:
                await conn.send(await conn.receive())
        except ConnectionClosed as exc:
            await send.send(exc)

    async with serving(t, LISTEN["ws"], handler, max_frame=LIMIT) as listener:
        async with raw_connect(listener.address, max_size=None, proxy=None) as ws:
            await ws.send(b"x" * (LIMIT + 1))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as raw:
                await ws.recv()
            assert raw.value.rcvd is not None and raw.value.rcvd.code == 1009
        seen = await recv.receive()
        assert seen.close_code == 1009
        assert "over our max_frame" in str(seen)
        async with await t.connect(listener.address, timeout=5) as other:
            await other.send(b"still here")
            assert await other.receive() == b"still here"
        # Our own client, allowed more than the listener accepts, is told whose limit it was.
        async with await t.connect(listener.address, timeout=5, max_frame=2 * LIMIT) as eager:
            await eager.send(b"x" * (LIMIT + 1))
            with pytest.raises(ConnectionClosed) as info:
                await eager.receive()
        assert info.value.close_code == 1009
        assert "our message was over the peer's max_frame" in str(info.value)
        assert isinstance(await recv.receive(), ConnectionClosed)
    send.close()
    recv.close()


@asynccontextmanager
async def silent_websocket(address: str) -> AsyncIterator[SocketStream]:
    """A raw TCP client that completes a hand-made upgrade, then never sends a byte."""
    port = int(address.split(":")[2].split("/")[0])
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(
            b"GET /dht HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await stream.receive()).startswith(b"HTTP/1.1 101")
        yield stream


async def test_ws_keepalive_detects_a_silent_peer() -> None:
    t = WebSocketTransport(ping_interval=0.05, ping_timeout=0.05, close_timeout=0.1)
    send, recv = anyio.create_memory_object_stream[ConnectionClosed](1)

    async def handler(conn: Connection) -> None:
        try:
            await conn.receive()
        except ConnectionClosed as exc:
            await send.send(exc)

    async with serving(t, LISTEN["ws"], handler) as listener:
        async with silent_websocket(listener.address):  # no pong ever comes back
            seen = await recv.receive()
    send.close()
    recv.close()
    assert seen.close_code == 1011


# --------------------------------------------------------------------------
# ws specifics: push mode (no task per connection)
# --------------------------------------------------------------------------


@asynccontextmanager
async def push_pair(**kw: Any) -> AsyncIterator[tuple[PushConnection, Any]]:
    """Our accepted connection (push-capable) and a raw websockets client."""
    accepted: list[Connection] = []
    ready = anyio.Event()

    async def keep(conn: Connection) -> None:
        accepted.append(conn)
        ready.set()
        await anyio.sleep_forever()

    async with (
        serving(get_transport("ws"), LISTEN["ws"], keep, **kw) as listener,
        raw_connect(listener.address, proxy=None, max_size=None) as ws,
    ):
        await ready.wait()
        conn = accepted[0]
        assert isinstance(conn, PushConnection)
        yield conn, ws


@pytest.mark.req("B3.1")
async def test_ws_attach_delivers_what_came_before_then_pushes_in_order() -> None:
    async with push_pair() as (conn, ws):
        for i in range(3):
            await ws.send(f"early-{i}")
        await anyio.sleep(0.05)  # they arrive before anyone listens
        got: list[bytes] = []
        closed: list[ConnectionClosed] = []
        conn.attach(got.append, closed.append)
        assert conn.attached and got == [b"early-0", b"early-1", b"early-2"]
        for i in range(50):
            await ws.send(f"late-{i}")
        assert conn.send_nowait(b"from the push side")
        assert await ws.recv() == "from the push side"
        with anyio.fail_after(5):
            while len(got) < 53:
                await anyio.sleep(0.01)
        assert got[3:] == [f"late-{i}".encode() for i in range(50)]
        await ws.close()
        with anyio.fail_after(5):
            while not closed:
                await anyio.sleep(0.01)
    assert len(closed) == 1 and closed[0].close_code == 1000


@pytest.mark.req("B3.5")
async def test_ws_send_nowait_refuses_once_the_peer_stops_reading() -> None:
    async with push_pair() as (conn, ws):
        conn.attach(lambda _: None, lambda _: None)
        frame = b"x" * 60_000
        sent = 0
        while conn.send_nowait(frame):  # the raw client never reads
            sent += 1
            assert sent < 10_000, "the write buffer never filled"
        assert sent * len(frame) >= HIGH_WATER // 2
        with pytest.raises(FrameTooLarge):
            conn.send_nowait(b"y" * (LIMIT + 1))
        conn.abort()  # the raw client would otherwise read megabytes before its close


async def test_ws_abort_drops_without_a_close_frame() -> None:
    async with push_pair() as (conn, ws):
        conn.attach(lambda _: None, lambda _: None)
        conn.abort()
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is None  # no goodbye: the peer sees 1006


@pytest.mark.req("B3.5")
async def test_ws_sends_to_a_peer_that_reset_the_connection_fail_quietly(caplog) -> None:
    # The peer is gone (RST) before the event loop has told us: the first
    # write finds out, and the ones after it must not reach the dead socket
    # (asyncio logs "socket.send() raised exception." from the fifth on).
    caplog.set_level(logging.WARNING, logger="asyncio")
    t = get_transport("ws")
    accepted: list[Connection] = []

    async def hold(conn: Connection) -> None:
        accepted.append(conn)
        await anyio.sleep_forever()

    async with serving(t, LISTEN["ws"], hold) as listener:
        conn = await t.connect(listener.address, timeout=5)
        assert isinstance(conn, PushConnection)
        conn.attach(lambda _: None, lambda _: None)
        with anyio.fail_after(5):
            while not accepted:
                await anyio.sleep(0.01)
        accepted[0].abort()  # type: ignore[attr-defined]
        await anyio.sleep(0)  # nothing read yet on our side
        for _ in range(20):
            try:
                conn.send_nowait(b"after the reset")
            except ConnectionClosed:
                break
        await anyio.sleep(0.1)
        await conn.close()
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


async def test_ws_keepalive_without_a_ping_timeout_pings_once_an_interval() -> None:
    t = WebSocketTransport(ping_interval=0.05, ping_timeout=None)

    async def hold(conn: Connection) -> None:
        await anyio.sleep_forever()

    async with serving(t, LISTEN["ws"], hold) as listener:
        async with silent_websocket(listener.address) as stream:
            pings = b""
            with anyio.move_on_after(0.5):
                while True:
                    pings += await stream.receive()
    # Unanswered pings never close it, and come once an interval (not in a spin).
    assert 3 <= pings.count(b"\x89\x00") <= 15, len(pings)


# --------------------------------------------------------------------------
# ws specifics: HTTP on the same port
# --------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def http_get(address: str, path: str, method: str = "GET", extra: str = "") -> Reply:
    """One raw HTTP/1.1 request to the listener at ``address`` (ws://127.0.0.1:P/...)."""
    port = int(address.split(":")[2].split("/")[0])
    stream: SocketStream
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()
        )
        data = b""
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(lines[0].split()[1]), headers, body)


def node_pages(method: str, path: str, headers: Mapping[str, str]) -> HttpResponse | None:
    if path == "/healthz":
        return HttpResponse.json(200, {"healthy": True, "ua": headers.get("user-agent", "")})
    if path == "/broken":
        raise RuntimeError("handler bug")
    return None


@pytest.mark.req("B2.3")
async def test_ws_plain_get_on_the_endpoint_is_426_with_a_json_hint() -> None:
    async with serving(get_transport("ws"), LISTEN["ws"], echo) as listener:
        reply = await http_get(listener.address, "/dht")
    assert reply.status == 426
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["upgrade"] == "websocket"
    assert reply.json() == {
        "error": "WS_UPGRADE_REQUIRED",
        "message": "This is the yzcore WebSocket endpoint; connect with a WebSocket client "
        "(ws://HOST:PORT/dht).",
    }


@pytest.mark.req("B2.3")
async def test_ws_http_handler_serves_pages_and_never_answers_the_endpoint_with_200() -> None:
    async with serving(get_transport("ws"), LISTEN["ws"], echo, http=node_pages) as listener:
        health = await http_get(listener.address, "/healthz", extra="User-Agent: probe/1\r\n")
        endpoint = await http_get(listener.address, "/dht?x=1")  # handler says None
        missing = await http_get(listener.address, "/nope")
        broken = await http_get(listener.address, "/broken")
        head = await http_get(listener.address, "/healthz", method="HEAD")
        # The WebSocket endpoint still upgrades with a handler installed.
        async with await get_transport("ws").connect(listener.address, timeout=5) as conn:
            await conn.send(b"ws ok")
            assert await conn.receive() == b"ws ok"
    assert (health.status, health.json()) == (200, {"healthy": True, "ua": "probe/1"})
    assert health.headers["content-length"] == str(len(health.body))
    assert endpoint.status == 426
    assert (missing.status, missing.json()["error"]) == (404, "NOT_FOUND")
    assert "/dht" in missing.json()["message"]
    assert (broken.status, broken.json()["error"]) == (500, "INTERNAL")
    assert (head.status, head.body) == (200, b"")


async def test_ws_unknown_path_is_404_json_without_a_handler() -> None:
    async with serving(get_transport("ws"), LISTEN["ws"], echo) as listener:
        reply = await http_get(listener.address, "/nope")
    assert reply.status == 404
    assert reply.json() == {
        "error": "NOT_FOUND",
        "message": "No page at /nope; the WebSocket endpoint is /dht.",
    }


@pytest.mark.req("B3.4")
async def test_ws_http_answers_carry_cors_headers() -> None:
    async with serving(get_transport("ws"), LISTEN["ws"], echo, http=node_pages) as listener:
        replies = [
            await http_get(listener.address, "/healthz", extra="Origin: http://example.test\r\n"),
            await http_get(listener.address, "/dht"),
            await http_get(listener.address, "/nope"),
        ]
        preflight = await http_get(
            listener.address,
            "/status",
            method="OPTIONS",
            extra="Origin: http://example.test\r\nAccess-Control-Request-Method: GET\r\n",
        )
    for reply in [*replies, preflight]:
        assert reply.headers["access-control-allow-origin"] == "*"
    assert preflight.status == 204
    assert "GET" in preflight.headers["access-control-allow-methods"]


# --------------------------------------------------------------------------
# ws specifics: why a dial failed
# --------------------------------------------------------------------------


@asynccontextmanager
async def plain_web_server() -> AsyncIterator[int]:
    """A tiny HTTP server on 127.0.0.1 that answers every request 200 with a page."""

    async def answer(stream: SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            page = b"<html>hello</html>"
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(page), page)
            )

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as tcp:
        port = tcp.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(tcp.serve, answer)
            yield port
            tg.cancel_scope.cancel()


@pytest.mark.req("B2.3", "B3.5", "B6.5")
async def test_ws_dialling_a_web_page_names_the_cause() -> None:
    async with plain_web_server() as port:
        with pytest.raises(WsUpgradeRejected) as info:
            await get_transport("ws").connect(f"ws://127.0.0.1:{port}/", timeout=5)
    err = info.value
    assert (err.code, err.status) == ("WS_UPGRADE_REJECTED", 200)
    assert isinstance(err, ConnectFailed)
    assert "HTTP 200 instead of 101" in str(err)
    assert "serves a web page, not the WebSocket endpoint; the endpoint is /dht" in str(err)


@pytest.mark.req("B3.5", "B6.5")
async def test_ws_dialling_the_wrong_path_reports_the_status_and_the_hint() -> None:
    async with serving(get_transport("ws"), LISTEN["ws"], echo) as listener:
        wrong = listener.address.removesuffix("/dht") + "/ws"
        with pytest.raises(WsUpgradeRejected) as info:
            await get_transport("ws").connect(wrong, timeout=5)
    assert info.value.status == 404
    assert "HTTP 404" in str(info.value) and "the WebSocket endpoint is /dht" in str(info.value)


@pytest.mark.req("B3.5", "B6.5")
async def test_ws_dial_timeout_is_a_connect_failure() -> None:
    async def silent(stream: SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as tcp:
        port = tcp.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(tcp.serve, silent)
            with pytest.raises(ConnectFailed) as info:
                await get_transport("ws").connect(f"ws://127.0.0.1:{port}/dht", timeout=0.2)
            tg.cancel_scope.cancel()
    assert "timed out after 0.2 s" in str(info.value)
    assert not isinstance(info.value, WsUpgradeRejected)


@pytest.mark.parametrize("url", ["ws://", "http://127.0.0.1:1/dht", "ws://127.0.0.1:x/dht"])
async def test_ws_malformed_urls_are_invalid_arguments(url: str) -> None:
    with pytest.raises(InvalidArgument):
        await get_transport("ws").connect(url, timeout=1)
    with pytest.raises(InvalidArgument):
        await get_transport("ws").listen(url)


async def test_ws_cannot_listen_on_wss_without_a_certificate() -> None:
    with pytest.raises(ListenFailed, match="TLS certificate"):
        await get_transport("wss").listen("wss://127.0.0.1:0/dht")


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    error: BaseException | None = None
    obj: Any = None

    def load(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.obj


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry with nothing cached or registered, restored afterwards."""
    monkeypatch.setattr(registry, "_instances", {})
    monkeypatch.setattr(registry, "_failures", {})
    monkeypatch.setattr(registry, "_registered", {})


def test_entry_points_resolve_the_builtin_transports(clean_registry: None) -> None:
    assert {"mem", "ws", "wss"} <= set(available_schemes())
    assert isinstance(get_transport("mem"), MemoryTransport)
    assert isinstance(get_transport("ws"), WebSocketTransport)
    assert isinstance(get_transport("WSS://"), WebSocketTransport)
    assert get_transport("mem") is get_transport("mem")  # cached
    assert transport_for("ws://127.0.0.1:1/dht") is get_transport("ws")
    assert transport_for("mem://x") is get_transport("mem")
    with pytest.raises(InvalidArgument):
        transport_for("127.0.0.1:8470")


def test_a_scheme_without_plugin_is_unavailable_with_a_hint(clean_registry: None) -> None:
    with pytest.raises(TransportUnavailable) as info:
        get_transport("carrier-pigeon")
    assert info.value.code == "TRANSPORT_UNAVAILABLE"
    assert "no transport is installed for carrier-pigeon://" in str(info.value)
    assert "mem, " in str(info.value)  # lists what is installed
    assert "pip install the package that provides the 'carrier-pigeon' transport" in str(info.value)


@pytest.mark.req("B6.5")
def test_a_broken_plugin_is_logged_with_a_hint_and_the_others_keep_working(
    clean_registry: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = [ep for ep in registry._entry_points() if ep.name != "webrtc"]  # the real one loads
    broken = FakeEntryPoint(
        "webrtc",
        "yzcore_transports.webrtc:WebRtcTransport",
        ModuleNotFoundError("No module named 'aiortc'"),
    )
    monkeypatch.setattr(registry, "_entry_points", lambda: [*real, broken])
    caplog.set_level(logging.WARNING, logger="yzcore.transport")

    assert "webrtc" in available_schemes()
    assert isinstance(get_transport("mem"), MemoryTransport)  # loading others is untouched
    for _ in range(2):
        with pytest.raises(TransportUnavailable) as info:
            get_transport("webrtc")
        assert "pip install 'yzcore[webrtc]'" in str(info.value)
        assert "aiortc" in str(info.value)
    assert isinstance(get_transport("ws"), WebSocketTransport)

    records = [r for r in caplog.records if getattr(r, "scheme", None) == "webrtc"]
    assert len(records) == 1  # logged once, raised on every request
    record: Any = records[0]
    assert record.levelno == logging.WARNING
    assert record.entry_point == "yzcore_transports.webrtc:WebRtcTransport"
    assert "No module named 'aiortc'" in record.error
    assert record.hint == "pip install 'yzcore[webrtc]'"


def test_a_plugin_that_is_not_a_transport_is_unavailable(
    clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = FakeEntryPoint("odd", "somewhere:thing", obj=lambda: object())
    monkeypatch.setattr(registry, "_entry_points", lambda: [odd])
    with pytest.raises(TransportUnavailable, match="not a yzcore Transport"):
        get_transport("odd")


def test_register_serves_a_scheme_in_process(clean_registry: None) -> None:
    private = MemoryTransport()
    registry.register("mem", lambda: private)
    assert get_transport("mem") is private
    registry.unregister("mem")
    assert get_transport("mem") is not private  # back to the entry point
