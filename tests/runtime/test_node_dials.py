"""Runtime dials over real WebSockets on 127.0.0.1: failures logged with their
code, one connection per peer, and the process's dial slots."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest

from yzcore import wire
from yzcore.exceptions import ConnectionClosed
from yzcore.identity import Identity
from yzcore.ids import key_for
from yzcore.protocol.config import EngineConfig
from yzcore.runtime import Node, peer
from yzcore.transport import Connection, get_transport
from yzcore.wire import NodeInfo

pytestmark = pytest.mark.anyio


@pytest.mark.req("A2.1")
async def test_a_failed_dial_is_logged_with_peer_id_address_transport_and_code(caplog):
    from yzcore.cli import JsonFormatter

    caplog.set_level(logging.WARNING, logger="yzcore.node")
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{s.getsockname()[1]}/dht"
    async with anyio.create_task_group() as tg:
        node = Node(seed=51)
        await node.start(tg)
        peer_id = os.urandom(32)
        assert await node._dial(NodeInfo(peer_id, dead)) is None
        await node.aclose()
    record = next(r for r in caplog.records if getattr(r, "code", None) == "CONNECT_FAILED")
    line = json.loads(JsonFormatter().format(record))  # what --log-json prints
    assert line["peer_id"] == peer_id.hex() and line["node_id"] == node.id.hex()
    assert line["transport"] == "ws" and dead in line["message"]
    assert "connection refused" in line["message"]
    assert node.errors[-1]["code"] == "CONNECT_FAILED"  # and /status shows it


@pytest.mark.req("A2.1")
async def test_a_flood_of_failed_dials_logs_one_line_a_second_and_counts_the_rest(caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="yzcore.node")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{s.getsockname()[1]}/dht"
    async with anyio.create_task_group() as tg:
        node = Node(seed=52)
        await node.start(tg)
        monkeypatch.setattr("yzcore.runtime.reporting.DIAL_LOG_EVERY", 3600.0)  # no clock in the test
        for _ in range(20):  # within the interval: the first is logged, the others counted
            assert await node._dial(NodeInfo(os.urandom(32), dead)) is None
        monkeypatch.setattr("yzcore.runtime.reporting.DIAL_LOG_EVERY", 0.0)
        assert await node._dial(NodeInfo(os.urandom(32), dead)) is None
        await node.aclose()
    lines = [r for r in caplog.records if getattr(r, "code", None) == "CONNECT_FAILED"]
    assert [r.unlogged for r in lines] == [0, 19]  # type: ignore[attr-defined]
    assert "19 more CONNECT_FAILED not logged" in lines[1].getMessage()
    assert sum(e["code"] == "CONNECT_FAILED" for e in node.errors) == 21  # /status keeps each


async def test_simultaneous_dials_leave_exactly_one_connection():
    async with anyio.create_task_group() as tg:
        a, b = Node(seed=21), Node(seed=22)
        await a.start(tg)
        await b.start(tg)
        async with anyio.create_task_group() as dials:
            dials.start_soon(a._dial, NodeInfo(b.id, b.address))
            dials.start_soon(b._dial, NodeInfo(a.id, a.address))
        await anyio.sleep(0.3)
        assert list(a.conns) == [b.id] and list(b.conns) == [a.id]
        # Both kept the same one: the connection the smaller id dialled.
        assert a.conns[b.id].outbound == (a.id < b.id)
        assert b.conns[a.id].outbound == (b.id < a.id)
        # The loser's end says DUPLICATE_CONNECTION when it reads it: nothing to
        # do, so not reported as an error, unlike a peer's other notices.
        b.conns[a.id].send(wire.Error(None, wire.ErrorCode.DUPLICATE_CONNECTION, "already connected"))
        b.conns[a.id].send(wire.Error(None, wire.ErrorCode.INTERNAL, "a notice"))
        with anyio.fail_after(5):
            while not a.errors:
                await anyio.sleep(0.01)
        assert [e["code"] for e in a.errors] == ["INTERNAL"], a.errors
        await a.aclose()
        await b.aclose()


@pytest.mark.req("A4.4")
@pytest.mark.parametrize("smaller", [True, False], ids=["dialler-id-smaller", "dialler-id-larger"])
async def test_a_peer_that_dials_again_replaces_its_old_connection(smaller):
    # A peer's old connection still looks open here (its close was lost on the way,
    # say) when the peer dials again: it has let the old one go, so the node keeps the
    # new one, whichever id is smaller (the tie-break is for dials both ways at once).
    async with anyio.create_task_group() as tg:
        node = Node(seed=23)
        await node.start(tg)
        me = Identity.generate()
        while (me.node_id < node.id) != smaller:
            me = Identity.generate()

        async def dial() -> Connection:
            conn = await get_transport("ws").connect(node.address, timeout=5)
            await peer.handshake(conn, me, role="node", advertise="ws://127.0.0.1:9/dht",
                                 timeout=5, expected_id=node.id)
            with anyio.fail_after(5):
                while me.node_id not in node.conns:
                    await anyio.sleep(0.01)
            return conn

        first = await dial()
        old = node.conns[me.node_id]
        second = await dial()
        with anyio.fail_after(5):
            while node.conns.get(me.node_id) is old:
                await anyio.sleep(0.01)
        with anyio.move_on_after(0.3):  # no DUPLICATE_CONNECTION, no close
            while True:
                frame = await second.receive()
                assert b"DUPLICATE_CONNECTION" not in frame, frame
        assert me.node_id in node.conns and node.conns[me.node_id] is not old
        with pytest.raises(ConnectionClosed), anyio.fail_after(5):
            while True:
                await first.receive()  # closed by the node
        await second.close()
        await node.aclose()


@contextlib.asynccontextmanager
async def _silent_listener() -> AsyncIterator[int]:
    """A TCP listener on 127.0.0.1 that accepts and never answers (its port): a dial
    to it holds its slot until the dial's own timeout."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    held: list = []

    async def hold(stream) -> None:
        held.append(stream)
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()
    for stream in held:
        await stream.aclose()
    await listener.aclose()


async def test_a_dial_waits_for_one_of_the_process_slots_before_its_timeout_starts(monkeypatch):
    # With one slot, a dial to a listener that never finishes its WebSocket
    # handshake holds it until its 0.5 s timeout; a second dial waits for the
    # slot meanwhile, then connects: its own 0.5 s start only then.
    monkeypatch.setattr(peer, "DIAL_SLOTS", 1)
    ended: dict[str, tuple[bool, float]] = {}

    async def dial(name: str, node: Node, info: NodeInfo) -> None:
        ended[name] = (await node._dial(info)) is not None, anyio.current_time()

    async with _silent_listener() as port, anyio.create_task_group() as tg:
        a = Node(seed=61, dial_timeout=0.5, handshake_timeout=0.5)
        b = Node(seed=62)
        await a.start(tg)
        await b.start(tg)
        started = anyio.current_time()
        async with anyio.create_task_group() as dials:
            dials.start_soon(dial, "silent", a, NodeInfo(os.urandom(32), f"ws://127.0.0.1:{port}/dht"))
            await anyio.sleep(0.05)
            dials.start_soon(dial, "b", a, NodeInfo(b.id, b.address))
        assert ended["silent"][0] is False and ended["b"][0] is True
        assert ended["b"][1] - started > 0.5  # it waited for the slot, and was not timed out for it
        assert ended["silent"][1] < ended["b"][1]
        assert b.id in a.conns
        await a.aclose()
        await b.aclose()
        tg.cancel_scope.cancel()


async def test_a_dial_whose_get_finished_while_it_waited_for_its_slot_is_not_made(monkeypatch):
    # The process's one slot is held by a dial that hangs for 2 s. A get
    # meanwhile asks b, which holds the value, and c, which needs a dial and
    # waits for the slot. The get is done before the slot frees; then the
    # dial to c has nothing left to do and is not made.
    monkeypatch.setattr(peer, "DIAL_SLOTS", 1)
    async with _silent_listener() as port, anyio.create_task_group() as tg:
        quiet = EngineConfig(conn_target=0)  # no node dials to keep connections
        a = Node(seed=71, dial_timeout=2.0, handshake_timeout=2.0, config=quiet)
        b, c = Node(seed=72, config=quiet), Node(seed=73, config=quiet)
        for node in (a, b, c):
            await node.start(tg)
        key = key_for("found at b")
        assert (await b.put(key, "v")).stored == 0  # alone: b keeps its own copy
        assert await a._dial(NodeInfo(b.id, b.address)) is not None
        assert await c._dial(NodeInfo(b.id, b.address)) is not None  # c never has none left
        assert await a._dial(NodeInfo(c.id, c.address)) is not None
        await a.conns[c.id].close()  # c stays in a's routing table, unconnected
        with anyio.fail_after(2):
            while c.id in a.conns or a.id in c.conns:
                await anyio.sleep(0.01)
        hung = anyio.Event()

        async def hang() -> None:
            await a._dial(NodeInfo(os.urandom(32), f"ws://127.0.0.1:{port}/dht"))
            hung.set()

        tg.start_soon(hang)
        await anyio.sleep(0.05)  # the hanging dial has the slot
        assert await a.get(key) == "v"
        assert not hung.is_set()  # done while the slot was still held
        assert a.engine is not None and c.id in a.engine._dials  # c's dial is waiting
        await hung.wait()
        with anyio.fail_after(2):  # c's dial has its turn now
            while c.id in a.engine._dials:
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        assert c.id not in a.conns and a.id not in c.conns
        for node in (a, b, c):
            await node.aclose()
        tg.cancel_scope.cancel()
