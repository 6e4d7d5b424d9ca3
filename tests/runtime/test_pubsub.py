"""Pubsub channels over real WebSockets on 127.0.0.1: creating one, every subscriber
getting each message once, a lost home replaced, leaving, held connections, bad
requests answered with their codes, and nodes behind NAT using a channel through bridges."""

from __future__ import annotations

import os
import random

import anyio
import pytest

from yzcore import wire
from yzcore.exceptions import InvalidArgument, PubSubFailed
from yzcore.protocol.config import EngineConfig
from yzcore.ids import distance
from yzcore.pubsub import channel_key
from yzcore.runtime import Node
from yzcore.runtime.pubsub import Subscription
from tests.runtime.test_node import next_reply, next_reply_to, raw_peer, start_network
from tests.runtime.test_relay_and_recovery import bootstrap_with_bridges

pytestmark = [pytest.mark.anyio, pytest.mark.req("B7.5")]


async def collect(sub: Subscription, count: int, timeout: float = 10.0) -> list[wire.Message]:
    """``count`` messages from ``sub``, then proof that no copy follows."""
    got = []
    with anyio.fail_after(timeout):
        while len(got) < count:
            got.append(await sub.receive())
    await anyio.sleep(0.3)
    with pytest.raises(anyio.WouldBlock):
        sub._recv.receive_nowait()
    return got


def homes_of(nodes: list[Node], name: str) -> list[Node]:
    return [n for n in nodes if n._ps is not None and channel_key(name) in n._ps.homes._channels]


async def wait_for(check, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.05)


async def test_every_subscriber_gets_each_message_once_browser_class_peer_included():
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 16, seed=31)
        browser = Node(listen=None, role="browser", peers=[nodes[2].address], seed=99)
        await browser.start(tg)
        await browser.joined(30)
        subscribers = [nodes[1], nodes[4], nodes[7], browser]
        subs = [await n.subscribe("news") for n in subscribers]  # the first one creates it
        assert [s.homes for s in subs] == [3, 3, 3, 3]
        assert len(homes_of(nodes, "news")) == 3
        sent = []
        for i in range(5):
            for publisher in (nodes[10], nodes[1], browser):  # a subscriber publishes too
                data = f"message {i} from {publisher.id.hex()[:8]}"
                result = await publisher.publish("news", data)
                assert result.homes == 3 and result.reached >= 2
                sent.append((data, publisher.id))
        for sub in subs:
            got = await collect(sub, len(sent))
            assert sorted((p.data, p.sender) for p in got) == sorted(sent)  # each once
            assert {p.channel for p in got} == {"news"}
        # A browser-class peer holds no channels: asked to, it says so.
        server = nodes[2]
        reply = await server._ps_state().replies.ask(
            server.conns[browser.id], lambda rid: wire.Subscribe(rid, channel_key("x"), 60.0), 5.0)
        assert isinstance(reply, wire.Error) and reply.code == wire.ErrorCode.WRONG_ROLE
        for node in [*nodes, browser]:
            await node.aclose()


async def test_a_lost_home_is_replaced_and_messages_keep_arriving():
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 14, seed=32)
        name = "weather"
        subscribers = [nodes[i] for i in (2, 5, 9)]
        subs = [await n.subscribe(name) for n in subscribers]
        homes = homes_of(nodes, name)
        victim = next(h for h in homes if h not in subscribers and h is not nodes[0])
        await victim.kill()
        # Right after the loss, the two homes left still carry a message.
        result = await nodes[0].publish(name, "during")
        assert result.homes >= 2
        for sub in subs:
            assert [p.data for p in await collect(sub, 1)] == ["during"]
        # And the subscriptions find a third home by themselves.
        await wait_for(lambda: all(s.homes == 3 for s in subs))
        live = [n for n in nodes if n is not victim]
        homes = homes_of(live, name)
        assert len(homes) == 3
        result = await nodes[0].publish(name, "after")
        # A home passes a message to the subscribers it holds: all three, or two when it
        # subscribes itself (its own subscription is local).
        assert result.homes == 3
        assert result.reached == (3 if any(h not in subscribers for h in homes) else 2)
        for sub in subs:
            assert [p.data for p in await collect(sub, 1)] == ["after"]
        for node in live:
            await node.aclose()


async def test_leaving_a_channel_lets_its_homes_and_connections_go():
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 10, seed=33)
        sub = await nodes[3].subscribe("leaving")
        other = await nodes[3].subscribe("leaving")  # two local subscriptions, one channel
        homes = homes_of(nodes, "leaving")
        held = [h.id for h in homes if h is not nodes[3]]
        assert held and all(nodes[3].engine.peers[h].held for h in held)
        await sub.aclose()
        await anyio.sleep(0.3)
        assert homes_of(nodes, "leaving") == homes  # the other subscription still holds it
        await nodes[6].publish("leaving", "still one")
        assert [p.data for p in await collect(other, 1)] == ["still one"]
        await other.aclose()
        await wait_for(lambda: not homes_of(nodes, "leaving"))
        assert not any(p.held for p in nodes[3].engine.peers.values())
        for h in homes:
            assert not any(p.held for p in h.engine.peers.values())
        assert (await nodes[6].publish("leaving", "nobody")).reached == 0
        with pytest.raises(StopAsyncIteration):
            await other.__anext__()
        for node in nodes:
            await node.aclose()


async def test_held_connections_outlive_the_idle_timeout_and_are_not_counted_as_kept():
    # Nobody keeps a connection (conn_target 0): every one is transient and closes once
    # idle for 0.3 s, but for those pubsub holds.
    cfg = EngineConfig(conn_target=0, idle_timeout=0.3, maintenance_interval=0.1,
                       maintenance_interval_settled=0.1)
    async with anyio.create_task_group() as tg:
        nodes = [Node(seed=40, config=cfg)]
        await nodes[0].start(tg)
        for i in range(1, 10):
            node = Node(peers=[nodes[i - 1].address], seed=40 + i, config=cfg)
            await node.start(tg)
            await node.joined(30)
            nodes.append(node)
        sub = await nodes[8].subscribe("quiet")
        remote = [h for h in homes_of(nodes, "quiet") if h is not nodes[8]]
        await anyio.sleep(2.0)  # many idle timeouts
        peers = nodes[8].engine.peers
        assert all(peers[i].kept or peers[i].held for i in nodes[8].conns)  # transients went
        assert {i for i in nodes[8].conns if peers[i].held} == {h.id for h in remote}
        for home in remote:
            assert home.engine.peers[nodes[8].id].held
        kept = sum(1 for i in nodes[8].conns if peers[i].kept)
        assert nodes[8].engine._kept_count() == kept  # held ones are not counted as kept
        await nodes[1].publish("quiet", "still here")
        assert [p.data for p in await collect(sub, 1)] == ["still here"]
        for node in nodes:
            await node.aclose()


async def test_bad_pubsub_requests_get_their_codes_and_the_home_keeps_serving():
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 4, seed=34)
        ws = await raw_peer(nodes[0].address)
        await ws.send('{"v": "1.0", "t": "pubsub.sub", "rid": 3, "ch": "zz", "ttl": 60}')
        reply = await next_reply(ws, wire.Error)
        assert reply.code == "INVALID_MESSAGE" and reply.rid == 3 and "'ch'" in reply.message
        await ws.send('{"v": "1.0", "t": "pubsub.pub", "rid": 4, "ch": "%s", "mid": "%s", '
                      '"data": "%s"}' % ("a" * 64, "0" * 32, "x" * 16385))
        reply = await next_reply(ws, wire.Error)
        assert reply.code == "INVALID_MESSAGE" and reply.rid == 4 and "'data'" in reply.message
        # One peer may have 64 channels held by one home.
        rng = random.Random(5)
        codes = []
        for rid in range(100, 165):
            reply = await next_reply_to(ws, wire.Subscribe(rid, rng.randbytes(32), 60.0))
            codes.append(reply.code if isinstance(reply, wire.Error) else "ok")
        assert codes == ["ok"] * 64 + ["OVER_CAPACITY"]
        # A flood of publishes is cut at the burst, with the wait to respect.
        key = rng.randbytes(32)
        for rid in range(200, 400):
            await ws.send(wire.encode(wire.Publish(rid, key, rng.randbytes(16), "x")).decode())
        limited = []
        with anyio.fail_after(10):
            while len(limited) < 200:
                msg = wire.decode(await ws.recv())
                if getattr(msg, "rid", 0) >= 200:
                    limited.append(msg)
        refusals = [m for m in limited if isinstance(m, wire.Error)]
        assert refusals and all(m.code == "RATE_LIMITED" and m.retry_after > 0 for m in refusals)
        assert any(e["code"] == "RATE_LIMITED" for e in nodes[0].errors)
        # Still serving: the DHT, and pubsub for everyone else.
        assert isinstance(await next_reply_to(ws, wire.FindNode(7, bytes(32))), wire.Nodes)
        sub = await nodes[2].subscribe("fine")
        await nodes[3].publish("fine", "yes")
        assert [p.data for p in await collect(sub, 1)] == ["yes"]
        await ws.close()
        for node in nodes:
            await node.aclose()


async def test_a_channel_needs_a_server_node_and_a_valid_name():
    async with anyio.create_task_group() as tg:
        lonely = Node(listen=None, role="browser", seed=50)
        await lonely.start(tg)
        with pytest.raises(PubSubFailed) as info:
            await lonely.subscribe("nobody")
        assert info.value.code == "NO_PEERS" and "no server node" in str(info.value)
        with pytest.raises(PubSubFailed):
            await lonely.publish("nobody", "hello")
        with pytest.raises(InvalidArgument):
            await lonely.subscribe("")
        with pytest.raises(InvalidArgument):
            await lonely.publish("x", "y" * 16385)
        assert lonely.pubsub_status()["subscribed"] == 0
        await lonely.aclose()


@pytest.mark.req("B7.5", "A1.5")
async def test_nodes_behind_nat_hold_and_use_a_channel_through_bridges(procs):
    boot = await bootstrap_with_bridges(procs)
    c = Node(listen=None, bootstrap=[boot], heartbeat_interval=1)
    d = Node(listen=None, bootstrap=[boot], heartbeat_interval=1)
    async with anyio.create_task_group() as tg:
        for node in (c, d):
            await node.start(tg)
            await node.joined()
        await wait_for(lambda: c.address.startswith("bridge://")
                       and d.address.startswith("bridge://"))
        # Four server nodes (two bridges, C and D): the homes of most channels include
        # a node behind NAT, reached through its bridge. Pick one whose homes do.
        name = next(f"nat-{i}" for i in range(100) if _nat_home(f"nat-{i}", c, d))
        sub_c = await c.subscribe(name)
        sub_d = await d.subscribe(name)
        assert sub_c.homes >= 2 and sub_d.homes >= 2
        await d.publish(name, "from d")
        await c.publish(name, "from c")
        for sub in (sub_c, sub_d):
            got = await collect(sub, 2)
            assert sorted(p.data for p in got) == ["from c", "from d"]
        # The one of C and D that is not a home holds a relayed connection to the one that is.
        assert any(n.engine.peers[i].held for n in (c, d) for i, pc in n.conns.items()
                   if pc.conn.transport == "bridge")
        await c.aclose()
        await d.aclose()
        tg.cancel_scope.cancel()


def _nat_home(name: str, c: Node, d: Node) -> bool:
    """Whether C or D is among the 3 of the four server nodes closest to the channel."""
    key = channel_key(name)
    ids = {c.id, d.id, *(contact.id for contact in c.engine.table.contacts())}
    return bool({c.id, d.id} & set(sorted(ids, key=lambda i: distance(i, key))[:3]))


async def test_publishes_at_once_share_one_lookup_and_all_arrive():
    # Each publish looked up the channel's homes: 300 at once made 300 lookups, the
    # peers refused most for their rate limits, and a publish whose lookup found
    # nobody went to this node alone and still said it had a home: 275 of 300 lost.
    # (80 here: within a home's burst of 100 pubsub requests a peer.)
    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 10, seed=35)
        sub = await nodes[1].subscribe("burst")
        publisher = nodes[6]
        lookups = 0
        find_node = publisher.find_node

        async def counted(target, k=None):
            nonlocal lookups
            lookups += 1
            return await find_node(target, k)

        publisher.find_node = counted  # type: ignore[method-assign]
        results = []

        async def one(i: int) -> None:
            results.append(await publisher.publish("burst", f"m{i}"))

        async with anyio.create_task_group() as burst:
            for i in range(80):
                burst.start_soon(one, i)
        assert lookups == 1 and all(r.homes == 3 for r in results)
        got = await collect(sub, 80)
        assert sorted(p.data for p in got) == sorted(f"m{i}" for i in range(80))
        for node in nodes:
            await node.aclose()


async def test_a_publish_whose_lookup_reached_nobody_fails_with_the_cause():
    # It went to the publishing node alone, as if that were the channel's only home.
    from yzcore.protocol.lookup import LookupResult

    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 4, seed=36)
        node = nodes[2]

        lookups = 0

        async def refused(target, k=None):  # every peer asked refused, for its rate limit
            nonlocal lookups
            lookups += 1
            await anyio.sleep(0.2)
            return LookupResult(target, (), queried=3, failed=3, limited=3)

        node.find_node = refused  # type: ignore[method-assign]
        codes = []

        async def one() -> None:
            with pytest.raises(PubSubFailed) as err:
                await node.publish("nobody", "hello")
            codes.append(err.value.code)

        async with anyio.create_task_group() as burst:  # the failure is shared too
            for _ in range(20):
                burst.start_soon(one)
        assert codes == ["RATE_LIMITED"] * 20 and lookups == 1
        for n in nodes:
            await n.aclose()


@pytest.mark.req("B2.2")
async def test_a_busy_channel_s_deliveries_are_not_held_to_the_frame_budget():
    # A subscriber charged its homes' deliveries to their connection's frame budget
    # (1,000/s): a channel busier than that had its deliveries dropped unread, then
    # the home dropped as a flooder. A home's deliveries are not charged now.
    from yzcore.runtime.peer import FLOOD_GRACE, FRAME_BURST, FRAME_RATE

    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 6, seed=37)
        sub = await nodes[1].subscribe("busy", buffer=100_000)
        home = next(n for n in nodes if n.id in nodes[1]._ps.channels[channel_key("busy")].homes)
        link = nodes[1].conns[home.id]
        count = int(FRAME_BURST + 3 * FRAME_RATE * FLOOD_GRACE)
        key, started = channel_key("busy"), anyio.current_time()
        with anyio.fail_after(60):
            for i in range(count):  # what the home passes on, as fast as it can
                home._ps_fanout(key, os.urandom(16), home.id, f"m{i}")
                if i % 100 == 99:
                    await anyio.sleep(0)  # (the transport writes)
            assert count / (anyio.current_time() - started) > FRAME_RATE  # over the budget's rate
            got = await collect(sub, count, timeout=30)
        assert len(got) == count and sub.dropped == 0
        assert nodes[1].conns.get(home.id) is link  # the home kept
        for node in nodes:
            await node.aclose()


async def test_a_home_s_bad_frames_are_charged_to_its_budget(monkeypatch):
    # A home's frames are decoded before they are charged (its deliveries cost a
    # tenth); its malformed ones were then never charged at all.
    from types import SimpleNamespace

    from yzcore.runtime import peer as peer_mod

    async with anyio.create_task_group() as tg:
        nodes = await start_network(tg, 5, seed=38)
        await nodes[1].subscribe("bad-home")
        home_id = next(iter(nodes[1]._ps.channels[channel_key("bad-home")].homes))
        pc = nodes[1].conns[home_id]
        frozen = peer_mod.time.monotonic()  # (no refill while the test sends)
        monkeypatch.setattr(peer_mod, "time", SimpleNamespace(monotonic=lambda: frozen))
        for _ in range(int(peer_mod.FRAME_BURST) + 100):
            nodes[1]._on_frame(pc, b"{not json")
        assert pc._tokens < 1  # spent: the next ones are dropped
        monkeypatch.undo()
        for node in nodes:
            await node.aclose()
