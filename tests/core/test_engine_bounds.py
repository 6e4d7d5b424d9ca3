"""What the engine holds stays within its bounds, on a virtual clock (no sockets):
kept connections, dials in flight, and the state it keeps per peer."""

from __future__ import annotations

import random

import pytest

from yzcore.protocol.actions import Dial, Send
from yzcore.protocol.engine import Engine, EngineConfig
from yzcore.messages import MAX_VALUE
from yzcore.wire import FindNode, Keep, NodeInfo, Nodes, Store


def id_near(base: bytes, shared_bits: int, rng: random.Random) -> bytes:
    """An id sharing exactly ``shared_bits`` leading bits with ``base``."""
    b, low = int.from_bytes(base, "big"), rng.getrandbits(255 - shared_bits)
    value = ((b ^ (1 << (255 - shared_bits))) >> (255 - shared_bits) << (255 - shared_bits)) | low
    return value.to_bytes(32, "big")


def answer_all(e: Engine, now: float) -> None:
    """Every dial connects and every query is answered with nobody new, until quiet."""
    actions = e.actions()
    while actions:
        more = []
        for a in actions:
            if isinstance(a, Dial):
                e.connection_opened(a.node, now, outbound=True)
            elif isinstance(a, Send) and isinstance(a.message, FindNode):
                e.receive(a.peer, Nodes(a.message.rid, ()), now)
            more += e.actions()
        actions = more


def kept(e: Engine) -> int:
    return sum(1 for p in e.peers.values() if p.kept and p.connected)


@pytest.mark.req("B7.2")
def test_a_seed_the_join_never_asked_is_let_go_and_never_kept_over_conn_max():
    rng = random.Random(11)
    me = rng.randbytes(32)
    e = Engine(NodeInfo(me, "ws://me", "node"), 0.0, random.Random(5))
    for i in range(25):  # contacts near us, met before
        near = NodeInfo(id_near(me, 30 + i, rng), f"ws://near{i}", "node")
        e.connection_opened(near, 0.0, outbound=False)
        e.connection_closed(near.id, 0.0)
    e.actions()
    seed = NodeInfo(id_near(me, 0, rng), "ws://seed", "node")  # far: outside the join's window
    e.bootstrap([seed], 1.0)
    answer_all(e, 1.0)
    assert not e._ops and seed.id not in e.peers  # the join is over; the seed was let go
    i = 0
    while kept(e) < e.config.conn_max:  # peers that keep us fill us up
        other = NodeInfo(rng.randbytes(32), f"ws://in{i}", "node")
        e.connection_opened(other, 2.0, outbound=False)
        e.receive(other.id, Keep(), 2.0)
        i += 1
    e.actions()
    e.connection_opened(seed, 100.0, outbound=False)  # the seed dials us much later
    assert not any(isinstance(a, Send) and a.peer == seed.id and isinstance(a.message, Keep)
                   for a in e.actions())
    assert kept(e) == e.config.conn_max


def test_a_peer_queued_twice_for_a_dial_slot_is_dialled_once():
    rng = random.Random(21)
    e = Engine(NodeInfo(rng.randbytes(32), "ws://me", "node"), 0.0, random.Random(3),
               EngineConfig(max_dials=2, conn_target=0))
    contacts = [NodeInfo(rng.randbytes(32), f"ws://c{i}", "node") for i in range(3)]
    for p in contacts:  # known contacts, not connected now
        e.connection_opened(p, 0.0, outbound=False)
        e.connection_closed(p.id, 0.0)
    e.actions()
    e.find_node(rng.randbytes(32), 0.0)  # two dials out, x waits for a slot
    busy = [a.node for a in e.actions() if isinstance(a, Dial)]
    (x,) = [p for p in contacts if p not in busy]
    assert len(busy) == 2 and list(e._dial_queue) == [x.id]
    e.connection_opened(x, 0.1, outbound=False)  # x connects to us meanwhile, and answers
    for a in e.actions():
        if isinstance(a, Send) and isinstance(a.message, FindNode):
            e.receive(x.id, Nodes(a.message.rid, ()), 0.15)
    e.connection_closed(x.id, 0.2)
    e.find_node(rng.randbytes(32), 0.3)  # asked again: queued a second time
    e.actions()
    for b in busy:
        e.dial_failed(b.id, 1.0)
    dials = [a.node.id for a in e.actions() if isinstance(a, Dial)]
    assert dials.count(x.id) == 1 and len(e._dials) <= e.config.max_dials


def test_round_trip_estimates_leave_with_the_contacts_the_table_replaced():
    rng = random.Random(1)
    me = bytes(32)
    e = Engine(NodeInfo(me, "ws://me", "node"), 0.0, random.Random(1),
               EngineConfig(k=2, conn_target=0))  # small buckets fill at once
    for i in range(300):  # each comes, answers, dies: stale, then replaced by the next
        now = 1.0 + i
        x = NodeInfo(id_near(me, 0, rng), f"ws://x{i}", "node")
        e.connection_opened(x, now, outbound=False)
        e.actions()
        e.find_node(rng.randbytes(32), now)
        for a in e.actions():
            if isinstance(a, Send) and a.peer == x.id and isinstance(a.message, FindNode):
                e.receive(x.id, Nodes(a.message.rid, ()), now + 0.05)
        e.actions()
        e.connection_closed(x.id, now + 0.1, error=True)
        e.handle_timer(now + 0.2)
        e.actions()
    assert len(e.rpc._rtt) <= len(e.table) + len(e.peers)


def test_a_full_store_drops_the_replica_expiring_soonest_as_a_full_scan_would():
    # The store found the one to drop by a pass over every record, for each new key
    # once full: about 1 ms a store at 10,000, a cost any peer could make us pay.
    # Now a heap; the same choice as the scan, checked over random operations.
    from yzcore.protocol.store import ValueStore

    rng = random.Random(4)
    store = ValueStore(max_records=50)
    keys = [bytes([i]) * 32 for i in range(120)]
    for step in range(5000):
        now = step * 0.5
        key = rng.choice(keys)
        records = store._records
        rank = {k: (r.original, r.expires_at) for k, r in records.items()}
        full = key not in records and len(records) >= store.max_records
        store.put(key, "v", rng.choice((10.0, 60.0, 3600.0)), now, original=rng.random() < 0.1)
        dropped = set(rank) - set(records)
        if full:  # one of those a scan would pick (ties: any of them)
            assert len(dropped) == 1 and rank[dropped.pop()] == min(rank.values()), step
        else:
            assert not dropped, step
        assert len(records) <= store.max_records
        if rng.random() < 0.05:
            store.expire(now)
    assert store._entries <= 2 * len(store) + 64


def test_a_cached_contact_whose_request_fails_leaves_the_replacement_cache():
    # Else a dead candidate waits there, to be promoted when a live contact leaves.
    rng = random.Random(2)
    me = bytes(32)
    e = Engine(NodeInfo(me, "ws://me", "node"), 0.0, random.Random(1), EngineConfig(k=1))
    first, cached = (NodeInfo(id_near(me, 0, rng), f"ws://c{i}", "node") for i in range(2))
    for p in (first, cached):  # one bucket place: the second waits in its cache
        e.connection_opened(p, 0.0, outbound=False)
    assert cached.id not in e.table
    e.connection_closed(cached.id, 1.0, error=True)  # its host is gone
    assert e.table.fail(cached.id, 2.0)[0] == "unknown"  # left the cache with the failure


def _stores(e: Engine, peer: NodeInfo, items: list[tuple[bytes, str]], now: float, rid: int) -> int:
    """``peer`` stores each (key, value) at ``e``; returns the next rid."""
    for key, value in items:
        e.receive(peer.id, Store(rid, key, value, 86400.0), now)
        rid += 1
    e.actions()
    return rid


def test_a_peer_flooding_the_store_pushes_out_only_its_own_values():
    # Any peer may store under any key. The store dropped the replica expiring
    # soonest when full: one peer's stores under keys of its own, with the longest
    # ttl, pushed out every value the other peers had stored here.
    rng = random.Random(5)
    me = NodeInfo(bytes(32), "ws://me", "node")
    e = Engine(me, 0.0, random.Random(1), EngineConfig(max_values=100))
    honest = [NodeInfo(rng.randbytes(32), f"ws://h{i}", "node") for i in range(5)]
    flooder = NodeInfo(rng.randbytes(32), "ws://f", "node")
    for p in [*honest, flooder]:
        e.connection_opened(p, 0.0, outbound=False)
    e.actions()
    theirs = {}
    for i, p in enumerate(honest):  # 50 values, 10 from each, short-lived
        items = [(rng.randbytes(32), f"honest {i}.{j}") for j in range(10)]
        e.receive(p.id, Store(1, items[0][0], items[0][1], 600.0), 1.0)
        _stores(e, p, items[1:], 1.0, 2)
        theirs.update(items)
    _stores(e, flooder, [(rng.randbytes(32), "x" * 100) for _ in range(5000)], 2.0, 1)
    assert len(e.store) == 100
    assert all(e.store.get(k, 3.0) == v for k, v in theirs.items())  # all 50 still here
    mine = [(rng.randbytes(32), "mine") for _ in range(60)]  # published here: kept before replicas
    for key, value in mine:
        e.put(key, value, 4.0)
    e.actions()
    assert all(e.store.get(k, 5.0) == v for k, v in mine)
    # The 40 places left are shared: the flooder is cut to the others' 10 first,
    # then all six lose alike.
    held = {p.id: 0 for p in [*honest, flooder]}
    for rec in e.store._records.values():
        if rec.source is not None:
            held[rec.source] += 1
    assert sum(held.values()) == 40 and max(held.values()) - min(held.values()) <= 1


def test_the_store_holds_its_byte_budget_whatever_the_values_sizes():
    # 10,000 values of MAX_VALUE bytes were 650 MB that any peer could make a node hold.
    rng = random.Random(6)
    budget = 1 << 20
    e = Engine(NodeInfo(bytes(32), "ws://me", "node"), 0.0, random.Random(1),
               EngineConfig(max_values=1000, max_value_bytes=budget))
    peers = [NodeInfo(rng.randbytes(32), f"ws://p{i}", "node") for i in range(3)]
    for p in peers:
        e.connection_opened(p, 0.0, outbound=False)
    rid = 1
    for step in range(600):
        p = rng.choice(peers)
        size = rng.choice((1, 100, 5000, MAX_VALUE - 2))  # (JSON adds the quotes)
        rid = _stores(e, p, [(rng.randbytes(32), "é" * (size // 2) if step % 7 == 0 else
                              "v" * size)], float(step), rid)
        held = sum(len(r.value.encode()) for r in e.store._records.values())
        assert held <= e.store.spent <= budget
        assert len(e.store) <= 1000
    assert e.store.spent > budget - MAX_VALUE  # the budget is used, not just kept
