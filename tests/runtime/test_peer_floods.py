"""Peers that flood a node with what they may send at will, or are too slow to finish
their hello, over real WebSockets on 127.0.0.1: each is told why, the node's log,
status and metrics stay bounded, and it serves on."""

from __future__ import annotations

import logging
import os

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from yzcore import wire
from yzcore.identity import Identity
from yzcore.protocol.handshake import Handshake
from yzcore.metrics import MAX_UNKNOWN_CODES
from yzcore.runtime import Node

from .test_node import next_reply_to, raw_peer

pytestmark = pytest.mark.anyio


@pytest.mark.req("A2.1", "B5.3")
async def test_bad_frames_and_error_notices_in_a_flood_are_logged_a_line_a_second(caplog):
    # Each bad frame and each error notice a peer sent made a warning line, and
    # each new code a metrics series: 10,000 frames made 10,000 lines (5.5 MB)
    # and 5,001 series.
    caplog.set_level(logging.WARNING, logger="yzcore.node")
    async with anyio.create_task_group() as tg:
        node = Node(seed=71)
        await node.start(tg)
        ws = await raw_peer(node.address)
        count = 4 * MAX_UNKNOWN_CODES
        for i in range(count):
            await ws.send("{bad")
            await ws.send('{"v":"1.1","t":"error","rid":null,"code":"X%d","message":"%s"}'
                          % (i, "y" * 500))
        reply = await next_reply_to(ws, wire.Ping(1))  # served, after every one of them
        assert isinstance(reply, wire.Pong)
        lines = [r for r in caplog.records if r.name == "yzcore.node"]
        # A line for the first of each code up to the bound, then one for all the others.
        assert len(lines) <= MAX_UNKNOWN_CODES + 3, len(lines)
        assert sum(getattr(r, "code", None) == "MALFORMED_JSON" for r in lines) <= 2
        metrics = node.metrics
        assert metrics is not None and len(metrics.errors) <= MAX_UNKNOWN_CODES + 2
        assert metrics.errors[("ws", "MALFORMED_JSON")] == count  # each still counted
        assert metrics.errors[("ws", "OTHER")] == count - MAX_UNKNOWN_CODES
        metrics.error("ws", "TIMEOUT")  # a code peers cannot invent keeps its own series
        assert metrics.errors[("ws", "TIMEOUT")] == 1
        assert len(node.errors) == node.errors.maxlen
        await ws.close()
        await node.aclose()


async def frames_until_closed(ws) -> list[wire.Message]:
    out = []
    with anyio.fail_after(10):
        try:
            async for frame in ws:
                out.append(wire.decode(frame))
        except ConnectionClosed:
            pass
    return out


@pytest.mark.req("A2.3", "B2.2")
async def test_a_peer_too_slow_to_finish_its_hello_is_told_handshake_timeout():
    # It was closed without a word: its dialler saw a clean close, not why.
    async with anyio.create_task_group() as tg:
        node = Node(seed=72, handshake_timeout=1.0)
        await node.start(tg)
        silent = await connect(node.address)  # upgrades, then says nothing
        (said,) = await frames_until_closed(silent)
        assert isinstance(said, wire.Error) and said.code == "HANDSHAKE_TIMEOUT"
        halfway = await connect(node.address)  # a hello, never an auth
        hs = Handshake(Identity.generate(), role="node", listen=(), advertise=None, caps=(),
                       nonce=os.urandom(16))
        await halfway.send(wire.encode(hs.start()).decode())
        said = await frames_until_closed(halfway)
        assert [type(m) for m in said] == [wire.Hello, wire.Auth, wire.Error]
        assert said[-1].code == "HANDSHAKE_TIMEOUT"  # type: ignore[attr-defined]
        assert [e["code"] for e in node.errors] == ["HANDSHAKE_TIMEOUT"] * 2
        await node.aclose()


@pytest.mark.req("B2.2")
async def test_a_peer_flooding_frames_is_told_then_dropped_and_the_others_are_served():
    # Nothing bounded what one peer could send: its pings (53,000 a second) took the
    # node's whole CPU and made every other peer's requests 300 times slower, and
    # the node said nothing. Past FRAME_RATE frames are dropped unread, the peer is
    # told RATE_LIMITED, and a peer still over it after FLOOD_GRACE s is dropped.
    from yzcore.runtime.peer import FLOOD_GRACE, FRAME_BURST, FRAME_RATE

    async with anyio.create_task_group() as tg:
        node = Node(seed=73)
        await node.start(tg)
        flooder, honest = await raw_peer(node.address), await raw_peer(node.address)
        told: list[wire.Message] = []
        sent = 0

        async def flood() -> None:
            nonlocal sent
            with anyio.move_on_after(FLOOD_GRACE + 8):
                try:
                    while True:
                        for _ in range(200):
                            await flooder.send(wire.encode(wire.Ping(sent + 1)).decode())
                            sent += 1
                        await anyio.sleep(0)
                except ConnectionClosed:  # dropped
                    pass

        async def listen() -> None:
            try:
                async for frame in flooder:
                    msg = wire.decode(frame)
                    if isinstance(msg, wire.Error):
                        told.append(msg)
            except ConnectionClosed:
                pass

        with anyio.fail_after(FLOOD_GRACE + 10):
            async with anyio.create_task_group() as inner:
                inner.start_soon(listen)
                inner.start_soon(flood)
                await anyio.sleep(1.0)
                reply = await next_reply_to(honest, wire.Ping(1))  # served meanwhile
                assert isinstance(reply, wire.Pong)
        assert sent > FRAME_BURST + FRAME_RATE * FLOOD_GRACE  # the flood was one
        assert [m.code for m in told] == ["RATE_LIMITED"] and told[0].rid is None
        assert flooder.close_code is not None  # dropped
        assert [e["code"] for e in node.errors if "frames/s" in e["message"]] == ["RATE_LIMITED"]
        assert isinstance(await next_reply_to(honest, wire.Ping(2)), wire.Pong)
        await honest.close()
        await node.aclose()


def test_the_frame_budget_charges_by_cost_and_starts_a_new_grace_after_2_s_under_it(monkeypatch):
    # On a clock of the test's own: the budget's arithmetic, not a timing.
    from types import SimpleNamespace

    from yzcore.protocol.handshake import PeerInfo
    from yzcore.runtime import peer as peer_mod

    now = [1000.0]
    monkeypatch.setattr(peer_mod, "time", SimpleNamespace(monotonic=lambda: now[0]))
    me = Identity.generate()
    info = PeerInfo(me.node_id, me.public_key, "node", (), None, (), wire.PROTOCOL_VERSION, "")

    def fresh() -> peer_mod.PeerConnection:
        return peer_mod.PeerConnection(SimpleNamespace(transport="ws", remote_address="x"),
                                       info, False)

    def flood(pc: peer_mod.PeerConnection) -> bool | None:
        """Frames until one is not handled: what became of it."""
        while (verdict := pc.admit()) is True:
            pass
        return verdict

    pc = fresh()
    assert flood(pc) is None and pc._tokens < 1  # the burst of 4,000, then over: told once
    now[0] += 0.0005  # half a frame's worth refilled: a home's delivery passes, a frame not
    assert pc.admit(0.1) is True and pc.admit() is None
    now[0] += 1.0  # a second under it is not 2: the same time over it ...
    assert flood(pc) is None
    now[0] += peer_mod.FLOOD_GRACE - 0.9  # ... which lasted 2 s: dropped, once
    assert flood(pc) is False and pc.admit() is None and pc.dropping
    pc = fresh()
    assert flood(pc) is None
    now[0] += peer_mod.FLOOD_GRACE + 0.1  # 2 s under it: a new time over it, a new grace
    assert flood(pc) is None and not pc.dropping
