"""The engine against peers that lie or flood, on a virtual clock (no sockets): what
one connected peer can make it do to lookups, the routing table and its memory."""

from __future__ import annotations

import random

import pytest

from yzcore.protocol.actions import Dial, Done, Send
from yzcore.protocol.engine import Engine, EngineConfig
from yzcore.wire import Error, FindNode, NodeInfo, Nodes


def id_near(base: bytes, shared_bits: int, rng: random.Random) -> bytes:
    """An id sharing exactly ``shared_bits`` leading bits with ``base``."""
    b, low = int.from_bytes(base, "big"), rng.getrandbits(255 - shared_bits)
    value = ((b ^ (1 << (255 - shared_bits))) >> (255 - shared_bits) << (255 - shared_bits)) | low
    return value.to_bytes(32, "big")


def engine(config: EngineConfig | None = None, own: bytes | None = None) -> Engine:
    me = NodeInfo(own or random.Random(0).randbytes(32), "ws://me", "node")
    return Engine(me, 0.0, random.Random(1), config or EngineConfig())


def queries(e: Engine) -> dict[bytes, int]:
    """The FindNode requests among the engine's actions: peer -> rid."""
    return {a.peer: a.message.rid for a in e.actions()
            if isinstance(a, Send) and isinstance(a.message, FindNode)}


def liar_and_honest(
        seed: int) -> tuple[Engine, NodeInfo, NodeInfo, NodeInfo, int, dict[bytes, int]]:
    """A node connected to a liar and an honest peer, looking up a target a live node is
    near: (engine, liar, honest, live, the lookup's op, its queries: peer -> rid)."""
    rng = random.Random(seed)
    e, target = engine(), rng.randbytes(32)
    liar, honest = (NodeInfo(rng.randbytes(32), f"ws://n{i}", "node") for i in range(2))
    live = NodeInfo(id_near(target, 200, rng), "ws://live:1/dht", "node")
    for p in (liar, honest):
        e.connection_opened(p, 0.0, outbound=False)
    e.actions()
    op = e.find_node(target, 0.1)
    return e, liar, honest, live, op, queries(e)


@pytest.mark.req("A4.3", "B3.2")
@pytest.mark.parametrize("bad_addr", [None, "ws://attacker-chosen:1/dht"])
def test_a_reply_naming_a_live_node_at_a_wrong_address_does_not_leave_it_out(bad_addr):
    # Replies are unsigned. A peer that answers first, naming a live node near the
    # target at no address or a bogus one, had the lookup fail that node for good,
    # the honest address a second peer gave being ignored.
    e, liar, honest, live, op, q = liar_and_honest(7)
    e.receive(liar.id, Nodes(q[liar.id], (NodeInfo(live.id, bad_addr, "node"),)), 0.15)
    e.receive(honest.id, Nodes(q[honest.id], (live,)), 0.16)
    dials = [a.node for a in e.actions() if isinstance(a, Dial)]
    if bad_addr is not None:  # asked where it was named first: that fails
        assert [d.addr for d in dials] == [bad_addr]
        e.dial_failed(live.id, 0.5)
        dials = [a.node for a in e.actions() if isinstance(a, Dial)]
    assert [(d.id, d.addr) for d in dials] == [(live.id, live.addr)]  # then at the other
    e.connection_opened(live, 0.6, outbound=True)
    e.receive(live.id, Nodes(queries(e)[live.id], ()), 0.7)
    (done,) = [a for a in e.actions() if isinstance(a, Done)]
    assert done.op == op and done.result.nodes[0].id == live.id
    assert bad_addr is None or live.id not in e.peers or e.peers[live.id].info.addr == live.addr


@pytest.mark.req("A4.3", "B3.2")
@pytest.mark.parametrize("case", ["failed-before-the-honest-reply", "named-twice-in-one-reply"])
def test_a_live_node_named_wrongly_first_is_still_asked_where_an_honest_reply_says(case):
    e, liar, honest, live, _, q = liar_and_honest(8)
    wrong = (NodeInfo(live.id, "ws://bogus:1/dht", "node"),)
    if case == "named-twice-in-one-reply":  # its second guess must not take the honest one's place
        wrong += (NodeInfo(live.id, "ws://bogus:2/dht", "node"),)
    e.receive(liar.id, Nodes(q[liar.id], wrong), 0.15)
    assert [a.node.addr for a in e.actions() if isinstance(a, Dial)] == ["ws://bogus:1/dht"]
    if case == "failed-before-the-honest-reply":  # refused at once: failed before the honest reply
        e.dial_failed(live.id, 0.16)
        e.actions()
        e.receive(honest.id, Nodes(q[honest.id], (live,)), 0.2)
    else:
        e.receive(honest.id, Nodes(q[honest.id], (live,)), 0.2)
        e.dial_failed(live.id, 0.25)
    assert [a.node.addr for a in e.actions() if isinstance(a, Dial)] == [live.addr]


@pytest.mark.req("A4.3", "A4.4")
def test_a_failed_dial_to_an_address_a_reply_named_is_no_failure_of_the_contact():
    # A contact in the table, named by a reply at a bogus address: the dial there
    # failed, and counted against the contact (stale at once, evicted after three).
    rng = random.Random(3)
    target = rng.randbytes(32)
    e = engine(EngineConfig(k=3, alpha=3), own=id_near(target, 50, rng))
    near = [NodeInfo(id_near(target, 100 + i, rng), f"ws://near{i}:1/dht", "node")
            for i in range(3)]
    contact = NodeInfo(id_near(target, 40, rng), "ws://contact:1/dht", "node")
    liar = NodeInfo(id_near(target, 2, rng), "ws://liar:1/dht", "node")
    e.connection_opened(contact, 0.0, outbound=False)
    e.connection_closed(contact.id, 0.0)  # met before, closed cleanly: in the table, idle
    for p in (*near, liar):
        e.connection_opened(p, 0.0, outbound=False)
    e.actions()
    for t in (1.0, 2.0, 3.0):
        op = e.find_node(target, t)  # asks the three nearest: one of them fails
        q = queries(e)
        e.receive(near[1].id, Nodes(q[near[1].id], ()), t)
        e.receive(near[2].id, Nodes(q[near[2].id], ()), t)
        e.receive(near[0].id, Error(q[near[0].id], "INTERNAL", "failed"), t)
        q = queries(e)  # the liar is next
        bogus = NodeInfo(contact.id, "ws://bogus:1/dht", "node")
        e.receive(liar.id, Nodes(q[liar.id], (bogus,)), t)
        (dial,) = [a.node for a in e.actions() if isinstance(a, Dial)]
        assert dial.id == contact.id and dial.addr == "ws://bogus:1/dht"
        e.dial_failed(contact.id, t)
        assert [a.op for a in e.actions() if isinstance(a, Done)] == [op]
    kept = e.table.get(contact.id)
    assert kept is not None and not kept.stale and kept.fails == 0


@pytest.mark.req("B3.2")
def test_contacts_without_an_address_are_no_candidates_and_leave_nothing_behind():
    # A peer answering every query with 64 ids at no address left a peer state for
    # each in the engine for good, and every housekeeping pass scanned them all.
    rng = random.Random(5)
    e = engine()
    liar = NodeInfo(rng.randbytes(32), "ws://liar:1/dht", "node")
    e.connection_opened(liar, 0.0, outbound=False)
    e.actions()
    for i in range(20):
        t = 1.0 + i
        op = e.find_node(rng.randbytes(32), t)
        q = queries(e)
        e.receive(liar.id, Nodes(q[liar.id], tuple(NodeInfo(rng.randbytes(32), None, "node")
                                                    for _ in range(64))), t)
        done = [a for a in e.actions() if isinstance(a, Done)]
        assert [d.op for d in done] == [op] and [n.id for n in done[0].result.nodes] == [liar.id]
    assert list(e.peers) == [liar.id]
