"""The transport SDK and the built-in transports, on real sockets (127.0.0.1 only).

The same behaviour is asked of ``mem`` and ``ws`` (the ``kind`` fixture); the
``mem`` specifics and the plugin registry follow. The WebSocket specifics are in
test_transports_ws.py (frames, keepalive, push mode) and test_transports_ws_http.py
(HTTP on the same port, why a dial failed).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
import pytest
from yzcore_transports.mem import MemoryTransport
from yzcore_transports.ws import WebSocketTransport

from tests.runtime._transport_helpers import LIMIT, LISTEN, echo, serving
from yzcore import transport as registry
from yzcore.exceptions import (
    ConnectFailed,
    ConnectionClosed,
    FrameTooLarge,
    InvalidArgument,
    ListenFailed,
    TransportUnavailable,
)
from yzcore.transport import (
    Connection,
    available_schemes,
    get_transport,
    transport_for,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["mem", "ws"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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
    clean_registry: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
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
    # `yz version` names it among the others, with what to install (the advice points there).
    from yzcore.cli import main

    capsys.readouterr()
    assert main(["version"]) == 0
    shown = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[4:]}
    assert shown["ws://"].endswith("yzcore_transports.ws:WebSocketTransport")
    assert "unavailable:" in shown["webrtc://"] and "No module named 'aiortc'" in shown["webrtc://"]
    assert "yzcore[webrtc]" in shown["webrtc://"]


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


@pytest.mark.parametrize(("url", "base"), [
    ("ws://127.0.0.1:8470/dht", "http://127.0.0.1:8470"),
    ("ws://127.0.0.1:8470/p2p", "http://127.0.0.1:8470"),  # any endpoint name (was .../p2p)
    ("wss://example.org/yz/dht", "https://example.org/yz"),  # a proxy's prefix stays
    ("ws://[::1]:8470/dht/", "http://[::1]:8470"),
    ("ws://127.0.0.1:8470", "http://127.0.0.1:8470"),
])
def test_the_http_endpoints_are_beside_the_websocket_endpoint_whatever_its_path(url, base):
    from yzcore.transport import http_base

    assert http_base(url) == base
