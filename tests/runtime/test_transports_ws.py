"""The ws transport's own behaviour, on real sockets (127.0.0.1 only): valid UTF-8
as Text frames, an oversized frame closed with 1009, keepalive against a silent
peer, push mode (attach, send_nowait, abort) with no task per connection, and a
slow connect raced by a second attempt."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import websockets
from anyio.abc import SocketStream
from websockets.asyncio.client import connect as raw_connect
from yzcore_transports.ws import WebSocketTransport
from yzcore_transports.ws._conn import HIGH_WATER
from yzcore_transports.ws._dial import open_socket, race

from tests.runtime._transport_helpers import LIMIT, LISTEN, serving
from yzcore.exceptions import ConnectionClosed, FrameTooLarge
from yzcore.transport import Connection, PushConnection, get_transport

pytestmark = pytest.mark.anyio


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
        else:
            pytest.fail("no send noticed the reset: the case under test never happened")
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
# ws specifics: a dial races a second attempt when the first is slow
# --------------------------------------------------------------------------


@pytest.mark.req("A1.1", "A4.3")
async def test_a_slow_connect_races_a_second_attempt_and_the_first_to_connect_wins() -> None:
    # A lost SYN holds an attempt for the kernel's retransmission (1 s, then 3 s):
    # a second attempt joins it, and the one still waiting is cancelled.
    calls: list[int] = []
    cleaned: list[int] = []

    async def attempt() -> str:
        n = len(calls)
        calls.append(n)
        if n == 0:  # its SYN was lost
            try:
                await anyio.sleep_forever()
            finally:
                cleaned.append(n)
        return f"socket {n}"

    discarded: list[str] = []
    assert await race(attempt, 0.01, discarded.append) == "socket 1"
    await anyio.sleep(0.01)
    assert calls == [0, 1] and cleaned == [0] and discarded == []


async def test_a_prompt_connect_makes_one_attempt_and_a_refusal_fails_at_once() -> None:
    calls: list[int] = []

    async def prompt() -> str:
        calls.append(1)
        return "socket"

    assert await race(prompt, 30.0, print) == "socket" and calls == [1]
    assert await race(prompt, None, print) == "socket" and calls == [1, 1]

    async def refused() -> str:  # an answer, not a loss: no second attempt after it
        calls.append(2)
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(ConnectionRefusedError), anyio.fail_after(5):
        await race(refused, 30.0, print)
    assert calls == [1, 1, 2]


async def test_a_local_failure_of_one_attempt_waits_for_the_other_and_an_answer_does_not() -> None:
    # Out of descriptors is ours, not the peer's: the other attempt may still connect.
    # A refusal is the peer's answer: the attempt still waiting is given up at once.
    for error, outcome in ((errno.EMFILE, "socket 0"), (errno.ECONNREFUSED, None)):
        go = asyncio.Event()
        cleaned: list[int] = []

        async def attempt() -> str:
            if not go.is_set():
                go.set()
                try:
                    await asyncio.sleep(0.05)
                finally:
                    cleaned.append(0)
                return "socket 0"
            raise OSError(error, os.strerror(error))

        if outcome is None:
            with pytest.raises(ConnectionRefusedError), anyio.fail_after(5):
                await race(attempt, 0.01, print)
            await anyio.sleep(0.01)
        else:
            assert await race(attempt, 0.01, print) == outcome
        assert cleaned == [0]


async def test_an_attempt_that_connects_a_moment_too_late_is_closed() -> None:
    go = asyncio.Event()
    started: list[int] = []

    async def attempt() -> str:
        started.append(1)
        if len(started) == 1:
            await go.wait()  # connects the moment the second does
            return "first"
        go.set()
        return "second"

    discarded: list[str] = []
    won = await race(attempt, 0.01, discarded.append)
    assert sorted([won, *discarded]) == ["first", "second"]


async def test_open_socket_connects_or_says_why() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sock = await open_socket("127.0.0.1", port, 0.5)
    assert sock.getpeername() == ("127.0.0.1", port)
    sock.close()
    listener.close()
    with pytest.raises(ConnectionRefusedError), anyio.fail_after(5):
        await open_socket("127.0.0.1", port, 0.5)
