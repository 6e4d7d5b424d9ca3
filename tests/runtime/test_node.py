"""Nodes on real WebSockets on 127.0.0.1, many in one process."""

from __future__ import annotations

import json
import logging
import os
import random
import urllib.error
import urllib.request

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from yzcore import wire
from yzcore.exceptions import EncodeError
from yzcore.identity import Identity
from yzcore.ids import key_for
from yzcore.protocol.config import EngineConfig
from yzcore.protocol.handshake import Handshake
from yzcore.runtime import Node

pytestmark = pytest.mark.anyio


def oracle(nodes: list[Node], target: bytes, k: int, asker: Node) -> list[bytes]:
    t = int.from_bytes(target, "big")
    ids = [n.id for n in nodes if n is not asker]
    return sorted(ids, key=lambda x: int.from_bytes(x, "big") ^ t)[:k]


async def start_network(tg, n: int, seed: int = 0, identities: list[Identity] | None = None) -> list[Node]:
    """n nodes, each joining through a random earlier one; ``identities`` fixes their keys."""
    rng = random.Random(seed)
    ids = identities or [None] * n
    nodes = [Node(seed=seed, identity=ids[0])]
    await nodes[0].start(tg)
    for i in range(1, n):
        node = Node(peers=[rng.choice(nodes).address], seed=seed + i, identity=ids[i])
        await node.start(tg)
        nodes.append(node)
    with anyio.fail_after(60):
        for node in nodes:
            await node.joined()
    return nodes


async def http_get(url: str, method: str = "GET") -> tuple[int, dict]:
    def fetch():
        try:
            body = b"" if method == "POST" else None
            request = urllib.request.Request(url, method=method, data=body)
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
    status, body = await anyio.to_thread.run_sync(fetch)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"text": body.decode()}


@pytest.mark.req("A4.1")
async def test_a_verified_connection_is_in_the_routing_table_before_anything_else_runs():
    async with anyio.create_task_group() as tg:
        a, b = Node(seed=31), Node(seed=32)
        for node in (a, b):
            await node.start(tg)
        assert a.engine.table.get(b.id) is None and b.engine.table.get(a.id) is None
        dialled = await a._dial(wire.NodeInfo(b.id, b.address))
        # No await between the dial's return and these checks: nothing else had a turn.
        assert dialled is not None and b.id in a.conns
        contact = a.engine.table.get(b.id)
        assert contact is not None and contact.address == b.address
        with anyio.fail_after(5):  # the accepting side, as soon as its side of the handshake ends
            while a.id not in b.conns:
                await anyio.sleep(0.01)
        assert b.engine.table.get(a.id) is not None
        # A browser-class peer is served but never enters a routing table.
        browser = Node(listen=None, role="browser", seed=33)
        await browser.start(tg)
        assert await browser._dial(wire.NodeInfo(a.id, a.address)) is not None
        with anyio.fail_after(5):
            while browser.id not in a.conns:
                await anyio.sleep(0.01)
        assert a.engine.table.get(browser.id) is None
        for node in (browser, a, b):
            await node.aclose()


@pytest.mark.req("A4.1", "A4.2", "B3.1", "B3.2")
async def test_hundred_nodes_exact_lookups_gettable_puts_and_abrupt_churn():
    # One 100-node network (forming it is the expensive part), three checks.
    async with anyio.create_task_group() as tg:
        network = await start_network(tg, 100, seed=3)
        rng = random.Random(1)
        await anyio.sleep(1.0)  # the far-bucket refreshes of the last joiners settle
        exact, recall = 0, []
        for _ in range(30):
            asker, target = rng.choice(network), rng.randbytes(32)
            got = [n.id for n in (await asker.find_node(target)).nodes]
            want = oracle(network, target, 20, asker)
            exact += got == want
            recall.append(len(set(got) & set(want)) / 20)
        # 100 nodes share one CPU here, so a busy peer can pass its soft
        # timeout and be skipped; the lookup then misses it. Exactness is
        # held to 99% at the benchmark; here, misses must stay rare.
        assert exact >= 27 and min(recall) >= 0.9, (exact, sorted(recall)[:3])
        keys = [key_for(f"key-{i}") for i in range(20)]
        for i, key in enumerate(keys):
            put = await rng.choice(network).put(key, f"value-{i}")
            assert put.stored >= 19
            for node in rng.sample(network, 3):
                assert await node.get(key) == f"value-{i}"
        # A fifth of the nodes disappear at once; every value stays gettable.
        victims = rng.sample(network[1:], 20)
        for node in victims:
            await node.kill()
        survivors = [n for n in network if n not in victims]
        for i, key in enumerate(keys):
            for node in rng.sample(survivors, 2):
                with anyio.fail_after(5):
                    assert await node.get(key) == f"value-{i}"
        dead = {n.id for n in victims}
        assert not any(dead & set(n.conns) for n in survivors)  # gone from active lists
        for node in survivors:
            await node.aclose()


@pytest.mark.req("B6.4")
async def test_nodes_on_a_pull_only_transport_still_form_a_network():
    # mem connections have only the pull API (receive/send), as a third-party
    # plugin may: the node runs them with a reader and a writer task each.
    async with anyio.create_task_group() as tg:
        first = Node(listen="mem://", seed=61)
        await first.start(tg)
        nodes = [first]
        for i in range(24):
            node = Node(listen="mem://", peers=[first.address], seed=62 + i)
            await node.start(tg)
            nodes.append(node)
        with anyio.fail_after(30):
            for node in nodes:
                await node.joined()
        assert all(not pc.push for node in nodes for pc in node.conns.values())
        rng = random.Random(5)
        for _ in range(5):
            asker, target = rng.choice(nodes), rng.randbytes(32)
            got = [n.id for n in (await asker.find_node(target)).nodes]
            assert got == oracle(nodes, target, 20, asker)
        await nodes[3].put(key_for("pull"), "works")
        assert await nodes[7].get(key_for("pull")) == "works"
        for node in nodes:
            await node.aclose()


@pytest.mark.req("B2.3", "B3.4")
async def test_http_endpoints_on_the_websocket_port():
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 5, seed=7)
        base = nodes[1].address.removesuffix("/dht").replace("ws://", "http://")
        with anyio.fail_after(15):
            while nodes[1].last_probe is None:
                await anyio.sleep(0.1)
        status, health = await http_get(base + "/healthz")
        assert status == 200 and health["healthy"], health
        status, body = await http_get(base + "/status")
        assert status == 200
        assert body["id"] == nodes[1].id.hex() and body["connections"]["ws"] >= 3
        assert body["routing_table"] == 4
        status, body = await http_get(base + "/metrics")
        assert status == 200 and "yz_connections" in body["text"]
        status, body = await http_get(base + "/dht")  # a plain GET on the endpoint
        assert status == 426 and "WebSocket" in body["message"]
        status, _ = await http_get(base + "/nope")
        assert status == 404
        # A page that only serves reads says so (it said "No page at /status", 404).
        status, body = await http_get(base + "/status", "POST")
        assert status == 405 and body["error"] == "METHOD_NOT_ALLOWED", body
        assert (await http_get(base + "/nope", "DELETE"))[0] == 404
        for node in nodes:
            await node.aclose()


async def test_health_counts_a_recent_lookup_and_an_idle_node_probes():
    async with anyio.create_task_group() as tg:
        first = Node(seed=31, probe_interval=0.3)
        await first.start(tg)
        nodes = [first]
        for i in range(4):
            node = Node(peers=[first.address], seed=32 + i, probe_interval=0.3)
            await node.start(tg)
            nodes.append(node)
        for node in nodes:
            await node.joined()
        busy, idle = nodes[1], nodes[2]
        with anyio.fail_after(10):
            while busy.last_probe is None or busy.last_probe["source"] != "lookup":
                await busy.find_node(os.urandom(32))
                await anyio.sleep(0.05)
            for _ in range(3):  # several intervals: its own probes are no evidence
                await anyio.sleep(0.3)
        assert busy.last_probe["ok"]
        assert idle.last_probe["ok"] and idle.last_probe["source"] == "probe"
        for node in nodes:
            await node.aclose()


@pytest.mark.req("B7.1")
async def test_a_three_node_network_is_healthy_and_a_node_no_bootstrap_answered_is_not():
    # Health by ARCHITECTURE §4: min(3, N-1) connections. A 3-node network estimated
    # N at 4-12 from two contacts and asked each node for 3 (0 of 3 healthy, for good);
    # a node whose only contact was a bootstrap server that never answered estimated a
    # network of one, itself, and called itself healthy with no connection.
    from tests.runtime.procs import free_port
    from yzcore.runtime.http import health

    async with anyio.create_task_group() as tg:
        first = Node(seed=51, probe_interval=0.3)
        await first.start(tg)
        nodes = [first, *(Node(peers=[first.address], seed=52 + i, probe_interval=0.3)
                          for i in range(2))]
        for node in nodes[1:]:
            await node.start(tg)
        lonely = Node(bootstrap=[f"ws://127.0.0.1:{free_port()}/dht"], seed=55, probe_interval=0.3)
        await lonely.start(tg)
        with anyio.fail_after(15):
            for node in nodes:
                await node.joined()
            while not all(health(n)["healthy"] for n in nodes):
                await anyio.sleep(0.1)
            await lonely.joined()
        assert [health(n)["needed"] for n in nodes] == [2, 2, 2]
        for _ in range(3):  # several probe intervals: still not healthy
            await anyio.sleep(0.3)
            verdict = health(lonely)
            assert not verdict["healthy"] and verdict["needed"] >= 1, verdict
        # /status names the server it cannot reach (it said null until connected).
        link = lonely.http.status()["bootstrap"][0]
        assert link["url"] == lonely.links[0].urls[0] and not link["connected"]
        for node in [*nodes, lonely]:
            await node.aclose()


async def test_an_operation_in_flight_when_the_node_closes_still_returns():
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 2, seed=41)
        mute, node = nodes
        mute.engine.receive = lambda *args: None  # type: ignore[method-assign]  # never answers
        results: list[object] = []

        async def lookup() -> None:
            results.append(await node.find_node(os.urandom(32)))

        tg.start_soon(lookup)
        await anyio.sleep(0.2)  # the query to the mute peer is in flight
        with anyio.fail_after(3):  # well before the 5 s request timeout
            await node.aclose()
            while not results:
                await anyio.sleep(0.01)
        await mute.aclose()


@pytest.mark.req("A4.2")
async def test_nodes_whose_task_group_is_cancelled_close_their_sockets_quietly(caplog):
    # Cancelling the task group a node runs in (Ctrl-C, a test's end) is a
    # way to stop it too: its connections close, so peers elsewhere see them
    # go, and nothing it still hears afterwards raises.
    caplog.set_level(logging.WARNING)
    async with anyio.create_task_group() as outer:
        survivor = Node(seed=71)
        await survivor.start(outer)
        async with anyio.create_task_group() as tg:
            nodes = [Node(peers=[survivor.address], seed=72 + i) for i in range(4)]
            for node in nodes:
                await node.start(tg)
            with anyio.fail_after(10):
                for node in nodes:
                    await node.joined()
                while len(survivor.conns) < len(nodes):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        with anyio.fail_after(5):  # the sockets closed: the survivor sees every one go
            while survivor.conns:
                await anyio.sleep(0.01)
        await anyio.sleep(0.5)  # closes still arriving at the cancelled nodes' handlers
        await survivor.aclose()
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not failures, [r.getMessage() for r in failures]


async def raw_peer(url: str, identity: Identity | None = None):
    """A hand-driven peer: a websockets client that completes a real handshake."""
    ws = await connect(url, max_size=None)
    hs = Handshake(identity or Identity.generate(), role="node", listen=(), advertise=None,
                   caps=(), nonce=os.urandom(16))
    await ws.send(wire.encode(hs.start()).decode())
    while not hs.done:
        for out in hs.receive(wire.decode(await ws.recv())):
            await ws.send(wire.encode(out).decode())
    return ws


async def next_reply(ws, type_: type) -> wire.Message:
    with anyio.fail_after(5):
        while True:
            msg = wire.decode(await ws.recv())
            if isinstance(msg, type_):
                return msg


@pytest.mark.req("B2.2", "B3.5")
async def test_bad_input_gets_its_error_code_and_the_node_keeps_serving():
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 4, seed=9)
        url = nodes[0].address
        ws = await raw_peer(url)
        for frame, code in [
            ("{not json", "MALFORMED_JSON"),
            ('{"v": "1.0", "t": "teleport", "rid": 4}', "UNKNOWN_TYPE"),
            ('{"v": "1.0", "t": "find_node", "rid": 5, "target": "abcd"}', "INVALID_MESSAGE"),
        ]:
            await ws.send(frame)
            reply = await next_reply(ws, wire.Error)
            assert reply.code == code
        reply_rid = await next_reply_to(ws, wire.FindNode(77, bytes(32)))
        assert isinstance(reply_rid, wire.Nodes) and reply_rid.rid == 77  # still served
        # An oversized frame closes that connection (1009), nobody else's.
        await ws.send("x" * (wire.MAX_FRAME + 1))
        with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
        result = await nodes[2].find_node(nodes[0].id)
        assert result.nodes[0].id == nodes[0].id
        for node in nodes:
            await node.aclose()


@pytest.mark.req("B3.2", "B5.2")
async def test_a_value_at_the_frame_limit_is_refused_and_one_that_fits_is_passed_on(caplog):
    # A peer's store of exactly 64 KiB was kept; passing the replica on (our own
    # rid, the ttl left as a float) made a frame over the limit, whose EncodeError
    # escaped the node's timer task: the node stopped.
    async with anyio.create_task_group() as tg:
        node = Node(config=EngineConfig(replicate_interval=1.0), seed=61)
        await node.start(tg)
        other = Node(peers=[node.address], seed=62)
        await other.start(tg)
        await other.joined()
        ws = await raw_peer(node.address)
        head = '{"v":"1.0","t":"store","rid":0,"key":"%s","value":"' % ("ab" * 32)
        tail = '","ttl":7200}'
        at_limit = "x" * (wire.MAX_FRAME - len(head) - len(tail))
        await ws.send(head + at_limit + tail)
        reply = await next_reply(ws, wire.Error)
        assert reply.code == "VALUE_TOO_LARGE" and reply.rid == 0
        fits = "y" * (wire.MAX_VALUE - 2)
        await ws.send(head.replace('"rid":0', '"rid":1') + fits + tail)
        assert (await next_reply(ws, wire.Stored)).rid == 1
        with anyio.fail_after(20):  # the replica reaches the other node
            while other.engine.store.get(bytes.fromhex("ab" * 32), anyio.current_time()) != fits:
                await anyio.sleep(0.1)
        assert node.fatal is None
        # Whatever cannot be encoded is dropped with a log line, never raised.
        caplog.set_level(logging.ERROR, logger="yzcore.node")
        assert node.conns[other.id].send(wire.Store(1, bytes(32), "z" * wire.MAX_FRAME, 1.0))
        assert any(getattr(r, "code", None) == "VALUE_TOO_LARGE" for r in caplog.records)
        with pytest.raises(EncodeError) as err:
            await node.put(b"k" * 32, fits + "y")
        assert err.value.code == "VALUE_TOO_LARGE"
        assert (await other.find_node(node.id)).nodes[0].id == node.id  # still serving
        await ws.close()
        await other.aclose()
        await node.aclose()


@pytest.mark.req("A2.2", "A3.5")
async def test_a_lookup_flood_is_refused_with_the_wait_and_logged_with_the_limit(caplog):
    caplog.set_level(logging.WARNING, "yzcore.node")
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 3, seed=21)
        ws = await raw_peer(nodes[0].address)
        for rid in range(1, 301):  # far past any burst: the limiter must refuse some
            await ws.send(wire.encode(wire.FindNode(rid, os.urandom(32))).decode())
        refused: list[wire.Error] = []
        with anyio.fail_after(10):
            for _ in range(300):  # every request is answered: nodes, or a refusal with its wait
                msg = wire.decode(await ws.recv())
                if isinstance(msg, wire.Error):
                    refused.append(msg)
        assert refused and all(e.code == "RATE_LIMITED" and e.retry_after > 0 for e in refused)
        lines = [r for r in caplog.records if getattr(r, "code", None) == "RATE_LIMITED"]
        assert lines, "a refused lookup must be logged"
        line = lines[0]
        assert line.operation == "find_node" and line.limit_scope in ("peer", "global")
        assert line.limit_per_s > 0 and line.limit_burst > 0 and line.retry_after > 0
        assert f"limit of {line.limit_per_s:g}/s" in line.getMessage()
        # A flood logs about a line a second, and /status counts every refusal.
        assert len(lines) < len(refused) or len(refused) == 1
        recorded = [e for e in nodes[0].errors if e["code"] == "RATE_LIMITED"]
        assert len(recorded) == min(len(refused), nodes[0].errors.maxlen)
        await ws.close()
        for node in nodes:
            await node.aclose()


async def next_reply_to(ws, request: wire.Message) -> wire.Message:
    await ws.send(wire.encode(request).decode())
    with anyio.fail_after(5):
        while True:
            msg = wire.decode(await ws.recv())
            if getattr(msg, "rid", None) == request.rid:  # type: ignore[attr-defined]
                return msg


@pytest.mark.req("B2.2")
async def test_forged_hello_is_refused_with_bad_signature():
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 2, seed=11)
        ws = await connect(nodes[0].address)
        victim, forger = Identity.generate(), Identity.generate()
        hs = Handshake(victim, role="node", listen=(), advertise=None, caps=(), nonce=os.urandom(16))
        await ws.send(wire.encode(hs.start()).decode())
        their_hello = wire.decode(await ws.recv())
        auth = hs.receive(their_hello)[0]
        forged = wire.Auth(forger.sign(b"not the transcript") if auth else b"")
        await ws.send(wire.encode(forged).decode())
        reply = await next_reply(ws, wire.Error)
        assert reply.code == "BAD_SIGNATURE"
        assert victim.node_id not in nodes[0].conns
        assert nodes[0].engine.table.get(victim.node_id) is None  # never in a routing table
        for node in nodes:
            await node.aclose()


async def test_a_peer_that_stops_reading_does_not_stall_the_node():
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 4, seed=13)
        ws = await raw_peer(nodes[0].address)
        for rid in range(1, 3001):  # never reads a single answer
            await ws.send(wire.encode(wire.Ping(rid)).decode())
        with anyio.fail_after(5):
            for _ in range(10):
                result = await nodes[1].find_node(nodes[0].id)
                assert result.nodes[0].id == nodes[0].id
        for node in nodes:
            await node.aclose()


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_a_closed_connection_is_freed_without_the_cyclic_collector(how):
    # A process holding many nodes closes thousands of lookup connections.
    # Left in reference cycles (a connection's handlers hold its owner, which
    # holds it), each waited for the cyclic collector, whose full passes over
    # millions of live objects took most of the CPU of 300 nodes forming.
    # Below our code too: asyncio's socket transport (CPython 3.11) and, on an
    # abrupt close, websockets' protocol sit in cycles of their own.
    import gc

    async with anyio.create_task_group() as tg:
        a, b = Node(seed=31), Node(seed=32)
        await a.start(tg)
        await b.start(tg)
        gc.collect()
        gc.disable()
        try:
            await a._dial(wire.NodeInfo(b.id, b.address))
            ends = [a.conns[b.id], b.conns[a.id]]
            if how == "close":
                await ends[0].close()
            else:  # no closing handshake: both ends see the socket end
                ends[0].conn.abort()
            with anyio.fail_after(5):  # (a node left with no connection dials again: a new one)
                while a.conns.get(b.id) in ends or b.conns.get(a.id) in ends:
                    await anyio.sleep(0.01)
                for end in ends:
                    await end.conn.lost
            del ends, end
            await anyio.sleep(0.05)  # the transports' last callbacks
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            held = ("PeerConnection", "WsConnection", "_SelectorSocketTransport", "socket",
                    "ServerProtocol", "ClientProtocol", "StreamReader")
            left = [type(o).__name__ for o in gc.garbage if type(o).__name__ in held]
            assert left == []
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        await a.aclose()
        await b.aclose()


async def test_an_open_connection_keeps_no_handshake_leftovers():
    # Memory per node is a target (1,000 nodes in a process hold ~6,000
    # connection ends). Four things each end or node used to keep for
    # nothing: the upgrade's HTTP headers (websockets' parser holds the
    # request or response for the connection's life), an empty inbox deque
    # a push-mode connection never reads, copies of the hello's version,
    # agent and capabilities, and a Mersenne Twister (2.5 KiB) for each of
    # the engine, the recovery policy, the links and the probe.
    import gc

    from websockets.datastructures import Headers

    gc.collect()  # earlier tests' nodes
    before = sum(1 for o in gc.get_objects() if type(o) is random.Random)
    async with anyio.create_task_group() as tg:
        a, b = Node(seed=33), Node(seed=34)
        await a.start(tg)
        await b.start(tg)
        await a._dial(wire.NodeInfo(b.id, b.address))
        ends = [a.conns[b.id], b.conns[a.id]]
        gc.collect()
        assert sum(1 for o in gc.get_objects() if type(o) is random.Random) - before == 2
        assert [len(o) for o in gc.get_objects() if type(o) is Headers and len(o)] == []
        assert [end.conn._inbox for end in ends] == [None, None]
        # Each end decoded the other's hello: the words every peer sends are one copy.
        assert ends[0].peer.agent is ends[1].peer.agent
        assert ends[0].peer.caps[0] is ends[1].peer.caps[0]
        await a.aclose()
        await b.aclose()
