"""The engine's connection policy on a virtual clock: kept connections and
conn_max, dials and their queue, requests waiting for a connection, and
peers that leave (no sockets)."""

from __future__ import annotations

import random

import pytest

from tests.core.swarm import Swarm
from yzcore.ids import key_for
from yzcore.protocol.actions import Close, Dial, Done, Send
from yzcore.protocol.engine import Engine, EngineConfig
from yzcore.protocol.rpc import CONNECT_LIMIT, RpcTable
from yzcore.wire import Error, ErrorCode, FindNode, Keep, NodeInfo, Nodes, Store, Stored, Value


@pytest.mark.req("B7.2")
def test_both_ends_of_every_connection_agree_whether_it_is_kept():
    # A small conn_max fills every node up, so Keep is refused often: what one
    # end counts among its kept connections, the other end counts too.
    s = Swarm(60, seed=4, config=EngineConfig(conn_target=2, conn_max=3))
    s.join_all()
    s.run(20.0)
    refused = sum(1 for e in s.engines if e._full)
    disagree = []
    for i in s.live():
        for peer_id in s.engines[i].connected():
            j = s.index[peer_id]
            mine, theirs = s.engines[i].peers[peer_id], s.engines[j].peers[s.engines[i].info.id]
            if mine.kept != theirs.kept:
                disagree.append((i, j, mine.kept, theirs.kept))
    kept = [sum(1 for p in e.peers.values() if p.kept and p.connected) for e in s.engines]
    assert refused > 0  # the case under test happened
    assert not disagree, disagree
    assert max(kept) <= 3 and min(kept) >= 1, kept


def _pair(conn_max: int, keeping: int) -> tuple[Engine, Engine, list[Engine]]:
    """An acceptor already keeping ``keeping`` connections, and a node that dialled it."""
    rng = random.Random(5)
    cfg = EngineConfig(conn_target=1, conn_max=conn_max)

    def make() -> Engine:
        info = NodeInfo(rng.randbytes(32), f"mem://{rng.random()}", "node")
        return Engine(info, 0.0, random.Random(rng.random()), cfg)

    acceptor, dialer, others = make(), make(), [make() for _ in range(keeping)]
    for o in others:  # each dialled the acceptor and keeps the connection
        acceptor.connection_opened(o.info, 0.0, outbound=False)
        assert not acceptor.peers[o.info.id].kept  # an inbound connection is kept on request only
        acceptor.receive(o.info.id, Keep(), 0.0)
    dialer.connection_opened(acceptor.info, 0.0, outbound=True)
    acceptor.connection_opened(dialer.info, 0.0, outbound=False)
    acceptor.actions()
    return acceptor, dialer, others


@pytest.mark.req("B7.2")
def test_a_node_keeping_conn_max_refuses_a_keep_and_the_asker_keeps_one_elsewhere():
    acceptor, dialer, _ = _pair(conn_max=2, keeping=2)
    asked = [a for a in dialer.actions() if isinstance(a, Send)]
    assert [a.message for a in asked] == [Keep()]  # it keeps what it dialled, and says so
    assert dialer.peers[acceptor.info.id].kept
    acceptor.receive(dialer.info.id, Keep(), 0.1)
    (answer,) = acceptor.actions()
    assert isinstance(answer, Send) and answer.message.code == ErrorCode.OVER_CAPACITY
    assert answer.message.rid is None
    assert not acceptor.peers[dialer.info.id].kept
    assert sum(p.kept for p in acceptor.peers.values()) == 2
    dialer.receive(acceptor.info.id, answer.message, 0.2)
    assert not dialer.peers[acceptor.info.id].kept  # transient now: closed when idle
    assert acceptor.info.id in dialer._full  # and not chosen again for full_backoff
    # A browser-class peer keeps its link to a full node all the same: it is
    # served without counting among the node's kept connections.
    browser = NodeInfo(b"\xbb" * 32, None, "browser")
    acceptor.connection_opened(browser, 0.3, outbound=False)
    acceptor.receive(browser.id, Keep(), 0.3)
    assert acceptor.actions() == [] and not acceptor.peers[browser.id].kept


@pytest.mark.req("A1.1", "B7.2")
def test_a_node_keeping_conn_max_makes_room_for_a_newcomer_by_releasing_one_it_dialled():
    rng = random.Random(8)
    cfg = EngineConfig(conn_target=2, conn_max=3)

    def make() -> Engine:
        return Engine(NodeInfo(rng.randbytes(32), f"mem://{rng.random()}", "node"), 0.0,
                      random.Random(rng.random()), cfg)

    full, dialled, caller, extra, newcomer = make(), [make(), make()], make(), make(), make()
    for o in dialled:  # it keeps what it dials while short of conn_target
        full.connection_opened(o.info, 0.0, outbound=True)
    full.connection_opened(extra.info, 0.0, outbound=True)  # a lookup's dial past the target
    assert [full.peers[o.info.id].kept for o in dialled] == [True, True]
    assert not full.peers[extra.info.id].kept
    full.connection_opened(caller.info, 0.0, outbound=False)
    full.receive(caller.info.id, Keep(), 0.0)
    assert sum(p.kept for p in full.peers.values()) == 3  # conn_max
    sent = [a for a in full.actions() if isinstance(a, Send)]
    assert [a.peer for a in sent] == [o.info.id for o in dialled]  # Keep to those it dialled only
    full.connection_opened(newcomer.info, 0.1, outbound=False)
    full.receive(newcomer.info.id, Keep(), 0.1)
    (told,) = full.actions()
    assert isinstance(told, Send) and told.message.code == ErrorCode.OVER_CAPACITY
    assert told.message.rid is None and told.peer in {o.info.id for o in dialled}
    assert full.peers[newcomer.info.id].kept and not full.peers[told.peer].kept
    assert full.peers[caller.info.id].kept  # what others keep with it is not released
    assert sum(p.kept for p in full.peers.values()) == 3
    released = next(o for o in dialled if o.info.id == told.peer)
    released.connection_opened(full.info, 0.0, outbound=False)
    released.receive(full.info.id, Keep(), 0.0)
    released.receive(full.info.id, told.message, 0.2)
    assert not released.peers[full.info.id].kept  # both ends count it transient now


def test_a_node_under_conn_max_keeps_what_its_peer_keeps_and_a_pin_survives_a_refusal():
    acceptor, dialer, _ = _pair(conn_max=3, keeping=2)
    acceptor.receive(dialer.info.id, Keep(), 0.1)
    assert acceptor.peers[dialer.info.id].kept and acceptor.actions() == []
    acceptor.receive(dialer.info.id, Keep(), 0.2)  # asked twice: still one connection kept
    assert sum(p.kept for p in acceptor.peers.values()) == 3
    dialer.pin(acceptor.info.id)  # a node relayed by this bridge keeps it whatever it says
    dialer.receive(acceptor.info.id, Error(None, ErrorCode.OVER_CAPACITY, "full"), 0.3)
    assert dialer.peers[acceptor.info.id].kept


@pytest.mark.req("A4.2")
def test_dead_peer_leaves_connections_and_requests_fail_at_once():
    s = Swarm(30, seed=4)
    s.join_all()
    victim = 5
    neighbours = [i for i in s.live() if s.engines[victim].info.id in s.engines[i].connected()]
    assert neighbours
    s.kill(victim)
    s.run(0.1)  # one latency later
    for i in neighbours:
        assert s.engines[victim].info.id not in s.engines[i].connected()


def test_dials_in_flight_stay_under_max_dials_and_lookups_stay_exact():
    s = Swarm(60, seed=9, config=EngineConfig(max_dials=2))
    most = [0]
    flush = s._flush

    def watch(i):
        flush(i)
        most[0] = max(most[0], len(s.engines[i]._dials))

    s._flush = watch  # type: ignore[method-assign]
    s.join_all()
    for n in range(10):
        target = s.rng.randbytes(32)
        done = s.op(n, "find_node", target)
        assert [x.id for x in done.result.nodes] == s.oracle(target, 20, n)
    assert most[0] == 2  # the limit was reached, and held
    assert not any(e._dial_queue for e in s.engines)  # nothing left waiting


def test_a_node_forgets_peers_it_no_longer_talks_to():
    s = Swarm(80, seed=6)
    s.join_all()
    s.run(30.0)  # transient lookup connections close when idle
    for i in s.live():
        e = s.engines[i]
        assert all(p.connected or p.dialing for p in e.peers.values())
        assert len(e.peers) <= e.config.conn_cap


def _one_peer() -> tuple[Engine, NodeInfo, random.Random]:
    rng = random.Random(9)
    me, peer = (NodeInfo(rng.randbytes(32), f"mem://{i}", "node") for i in range(2))
    engine = Engine(me, 0.0, random.Random(1), EngineConfig())
    engine.connection_opened(peer, 0.0, outbound=True)
    engine.actions()
    return engine, peer, rng


def _queries(engine: Engine) -> list[FindNode]:
    return [a.message for a in engine.actions()
            if isinstance(a, Send) and isinstance(a.message, FindNode)]


@pytest.mark.req("B3.1", "B3.2")
def test_requests_lost_with_a_duplicate_connection_are_asked_again_each_time():
    # Two nodes that dialled each other at once keep one connection (the
    # runtime's tie-break); what went out on the other may be lost. A put's
    # store and a lookup's query are asked again on the kept connection each
    # time that happens, not only the first: a put still reaches its replica.
    engine, peer, rng = _one_peer()
    op = engine.put(key_for("dup"), "v", 0.0)
    (query,) = [a.message for a in engine.actions() if isinstance(a, Send)]
    engine.receive(peer.id, Nodes(query.rid, ()), 0.01)
    (store,) = [a.message for a in engine.actions() if isinstance(a, Send)]
    for t in (0.02, 0.03, 0.04):  # superseded three times under the store
        engine.connection_superseded(peer.id, t)
        (again,) = [a.message for a in engine.actions() if isinstance(a, Send)]
        assert isinstance(again, Store) and again.rid != store.rid
        store = again
    engine.receive(peer.id, Stored(store.rid), 0.05)
    (done,) = [a for a in engine.actions() if isinstance(a, Done)]
    assert done.op == op and done.result.stored == 1
    lookup = engine.find_node(rng.randbytes(32), 1.0)
    (query,) = [a.message for a in engine.actions() if isinstance(a, Send)]
    for t in (1.01, 1.02):
        engine.connection_superseded(peer.id, t)
        (query,) = [a.message for a in engine.actions() if isinstance(a, Send)]
        assert isinstance(query, FindNode)
    engine.receive(peer.id, Nodes(query.rid, ()), 1.03)
    (done,) = [a for a in engine.actions() if isinstance(a, Done)]
    assert done.op == lookup and [n.id for n in done.result.nodes] == [peer.id]


@pytest.mark.req("A4.3")
def test_a_query_cut_by_an_error_close_is_asked_again_once_on_a_new_connection():
    # A lossy path's kernel gives up on a connection (an error close) with its
    # peer alive: the lookup dials it again and asks once more, rather than
    # leave a live node out. A peer really gone fails the second time.
    engine, peer, rng = _one_peer()
    for second_time in (False, True):
        op = engine.find_node(rng.randbytes(32), 1.0)
        assert len(_queries(engine)) == 1
        engine.connection_closed(peer.id, 1.1, error=True)
        actions = engine.actions()
        assert [a.node.id for a in actions if isinstance(a, Dial)] == [peer.id]
        assert not [a for a in actions if isinstance(a, Done)]
        engine.connection_opened(peer, 1.2, outbound=True)
        (again,) = _queries(engine)
        if second_time:
            engine.connection_closed(peer.id, 1.3, error=True)
            (done,) = [a for a in engine.actions() if isinstance(a, Done)]
            assert done.op == op and done.result.nodes == () and done.result.failed == 1
        else:
            engine.receive(peer.id, Nodes(again.rid, ()), 1.3)
            (done,) = [a for a in engine.actions() if isinstance(a, Done)]
            assert done.op == op and [n.id for n in done.result.nodes] == [peer.id]
            engine.connection_opened(peer, 1.4, outbound=True)  # as before the next lookup
            engine.actions()


def test_a_query_made_while_our_own_close_completes_waits_for_its_one_dial():
    # We closed an idle connection; a lookup asks the peer before that close is
    # done. The close completing is not the query's failure, and makes no second
    # dial (two dials to one peer end in a duplicate, and one of them is lost).
    engine, peer, rng = _one_peer()
    engine.peers[peer.id].kept = False
    engine.handle_timer(30.0)  # idle for long enough: we close it
    actions = engine.actions()
    assert [a.reason for a in actions if isinstance(a, Close)] == ["idle"]
    op = engine.find_node(rng.randbytes(32), 30.0)
    assert [a.node.id for a in engine.actions() if isinstance(a, Dial)] == [peer.id]
    engine.connection_closed(peer.id, 30.01)  # the idle one, closed at last
    assert not [a for a in engine.actions() if isinstance(a, Dial | Done)]
    engine.connection_opened(peer, 30.02, outbound=True)
    (query,) = _queries(engine)
    engine.receive(peer.id, Nodes(query.rid, ()), 30.03)
    (done,) = [a for a in engine.actions() if isinstance(a, Done)]
    assert done.op == op and [n.id for n in done.result.nodes] == [peer.id]


def test_our_dial_failing_after_the_peer_connected_to_us_fails_nothing():
    # On a lossy path our dial stalls; meanwhile the peer dials us and the query
    # goes out on its connection. Our dial timing out later is no failure of the
    # peer, nor of the query waiting for its answer on that connection.
    rng = random.Random(9)
    me, peer = (NodeInfo(rng.randbytes(32), f"mem://{i}", "node") for i in range(2))
    engine = Engine(me, 0.0, random.Random(1), EngineConfig())
    engine.bootstrap([peer], 0.0)
    engine.actions()
    engine.connection_opened(peer, 0.5, outbound=False)
    engine.actions()
    op = engine.find_node(rng.randbytes(32), 1.0)
    (query,) = _queries(engine)
    engine.dial_failed(peer.id, 6.0)
    assert not [a for a in engine.actions() if isinstance(a, Done)]
    assert peer.id in engine.table
    engine.receive(peer.id, Nodes(query.rid, ()), 6.1)
    (done,) = [a for a in engine.actions() if isinstance(a, Done)]
    assert done.op == op and [n.id for n in done.result.nodes] == [peer.id]


@pytest.mark.req("A4.3", "A4.4")
def test_a_peer_that_declines_our_connection_as_a_duplicate_is_asked_again_on_its_own():
    # The peer closed our new connection with DUPLICATE_CONNECTION: it keeps
    # another with us (its own dial, whose handshake has not reached us yet).
    # That is no failure: the lookup waits, and asks again after declined_wait
    # on whatever connection there is then, here the peer's, with no new dial.
    engine, peer, rng = _one_peer()
    op = engine.find_node(rng.randbytes(32), 1.0)
    assert len(_queries(engine)) == 1
    engine.receive(peer.id, Error(None, ErrorCode.DUPLICATE_CONNECTION, "already connected"), 1.1)
    engine.connection_closed(peer.id, 1.1)
    assert not [a for a in engine.actions() if isinstance(a, Dial | Done)]
    engine.connection_opened(peer, 1.5, outbound=False)  # the peer's connection
    assert _queries(engine) == []  # not before the wait
    assert engine.get_timer() <= 1.1 + engine.config.declined_wait
    engine.handle_timer(1.1 + engine.config.declined_wait)
    actions = engine.actions()
    (again,) = [a.message for a in actions if isinstance(a, Send) and isinstance(a.message, FindNode)]
    assert not [a for a in actions if isinstance(a, Dial)]
    engine.receive(peer.id, Nodes(again.rid, ()), 2.2)
    (done,) = [a for a in engine.actions() if isinstance(a, Done)]
    assert done.op == op and [n.id for n in done.result.nodes] == [peer.id]


def test_a_retried_query_keeps_the_first_requests_abandon_deadline():
    # Asked again after a clean close (a redial), a peer gets no more patience
    # than it had: a lookup goes around a peer that keeps not answering.
    rpc = RpcTable(timeout=5.0, initial_rto=1.0)
    first = rpc.start(b"p" * 32, "find_node", 0.0, owner=1, connecting=True)
    assert first.abandon_at == 4.0  # 3 RTO, plus a second for the dial
    again = rpc.start(b"p" * 32, "find_node", 1.5, owner=1, connecting=True, abandon_by=first.abandon_at)
    assert again.abandon_at == 4.0 and again.soft_at <= again.abandon_at
    late = rpc.start(b"p" * 32, "find_node", 4.5, owner=1, abandon_by=first.abandon_at)
    assert late.abandon_at == 4.5  # already past: abandoned at the next expiry
    assert late in rpc.expire(4.5)[1]


def test_a_request_waiting_for_its_dial_times_out_from_when_the_connection_opens():
    # A dial that waits for a slot, or loses SYNs, is the dial's business: its
    # own timeouts fail it. The request behind it is not failed for the wait,
    # and gets its full hard timeout once the connection opens.
    rpc = RpcTable(timeout=5.0, initial_rto=1.0)
    a, b, c = b"a" * 32, b"b" * 32, b"c" * 32
    waited = rpc.start(a, "find_node", 0.0, owner=1, connecting=True)
    early = rpc.start(b, "find_node", 0.0, owner=1, connecting=True)
    never = rpc.start(c, "find_node", 0.0, owner=1, connecting=True)
    rpc.connected(b, 0.5)  # opened before its soft deadline
    soft, abandon, hard = rpc.expire(4.0)
    assert [p.peer for p in soft] == [p.peer for p in abandon] == [a, b, c]
    assert rpc.expire(5.4)[2] == []  # a plain request would have failed at 5.0
    assert rpc.expire(5.5)[2] == [early]
    assert rpc.expire(30.0)[2] == []
    rpc.connected(a, 30.0)
    assert rpc.expire(34.9)[2] == []
    assert rpc.expire(35.0)[2] == [waited]
    assert rpc.expire(CONNECT_LIMIT - 0.1)[2] == []
    assert rpc.expire(CONNECT_LIMIT)[2] == [never]  # a dial that neither opened nor failed
    assert len(rpc) == 0


def test_a_finished_get_withdraws_its_requests_that_wait_for_dials_and_those_dials_are_not_made():
    # Under load a dial waits its turn; a get that found its value meanwhile
    # does not need it. Its requests still waiting for a connection are
    # dropped, and the runtime, asking when the dial's turn comes, skips a
    # dial that nothing else wants (one another lookup wants is still made).
    key = b"\xf0" * 32
    me = Engine(NodeInfo(b"\x00" * 32, "mem://me"), 0.0, random.Random(1),
                EngineConfig(conn_target=0, max_dials=2))
    a, b = (NodeInfo(bytes([0x80 + i]) * 32, f"mem://{i}") for i in range(2))
    c1, c2, c3 = (NodeInfo(bytes([0xF1 + i]) * 32, f"mem://c{i}") for i in range(3))
    for peer in (a, b):
        me.connection_opened(peer, 0.0, outbound=False)
    get, find = me.get(key, 0.0), me.find_node(key, 0.0)
    asked = {(s.peer, type(s.message).__name__): s.message.rid for s in me.actions()
             if isinstance(s, Send)}
    me.receive(a.id, Value(asked[(a.id, "FindValue")], None, (c1, c2, c3)), 0.1)
    me.receive(a.id, Nodes(asked[(a.id, "FindNode")], (c1,)), 0.1)
    assert sorted(d.node.id for d in me.actions() if isinstance(d, Dial)) == [c1.id, c2.id]
    me.receive(b.id, Value(asked[(b.id, "FindValue")], "v", ()), 0.2)  # found: the get is done
    assert [d.result.value for d in me.actions() if isinstance(d, Done)] == ["v"]
    assert me.dial_wanted(c1.id)  # the find_node still waits for it
    assert not me.dial_wanted(c2.id)  # only the get wanted it
    assert c2.id not in me.peers and not me.rpc.has_pending(c2.id)
    me.connection_opened(c1, 0.4, outbound=True)
    sent = [type(s.message).__name__ for s in me.actions() if isinstance(s, Send) and s.peer == c1.id]
    assert sent == ["FindNode"]  # the get's find_value never goes out
    assert not any(p.owner == get for p in me.rpc._pending.values())
    assert any(p.owner == find for p in me.rpc._pending.values())


def test_a_put_withdraws_its_lookups_waiting_requests_when_it_starts_storing():
    # The lookup of a put is over once the k closest have answered; its
    # queries still waiting for a dial are dropped then, not when the last
    # Stored arrives, and a dial only they wanted is not made.
    key = b"\xf0" * 32
    me = Engine(NodeInfo(b"\x00" * 32, "mem://me"), 0.0, random.Random(1),
                EngineConfig(k=2, conn_target=0))
    a, b = (NodeInfo(bytes([0x81 + i]) * 32, f"mem://{i}") for i in range(2))  # far
    mid = NodeInfo(b"\xc1" * 32, "mem://mid")
    near, nearest = NodeInfo(b"\xf2" * 32, "mem://near"), NodeInfo(b"\xf1" * 32, "mem://nearest")
    for peer in (a, b):
        me.connection_opened(peer, 0.0, outbound=False)
    put = me.put(key, "v", 0.0)
    asked = {s.peer: s.message.rid for s in me.actions() if isinstance(s, Send)}
    me.receive(a.id, Nodes(asked[a.id], (mid, nearest)), 0.1)
    assert sorted(d.node.id for d in me.actions() if isinstance(d, Dial)) == sorted([mid.id, nearest.id])
    me.connection_opened(nearest, 0.2, outbound=True)
    rid = next(s.message.rid for s in me.actions() if isinstance(s, Send) and s.peer == nearest.id)
    me.receive(nearest.id, Nodes(rid, (near,)), 0.3)  # mid drops out of the k window
    me.connection_opened(near, 0.4, outbound=True)
    rid = next(s.message.rid for s in me.actions() if isinstance(s, Send) and s.peer == near.id)
    me.receive(near.id, Nodes(rid, ()), 0.5)  # the k closest answered: store
    stores = [s for s in me.actions() if isinstance(s, Send) and isinstance(s.message, Store)]
    assert sorted(s.peer for s in stores) == sorted([near.id, nearest.id])
    assert not me.rpc.has_pending(mid.id)  # its find_node, still waiting for the dial, is gone
    assert me.rpc.has_pending(b.id)  # sent already: its answer still refreshes the table
    assert not me.dial_wanted(mid.id)
    for s in stores:
        me.receive(s.peer, Stored(s.message.rid), 0.7)
    assert [(d.op, d.result.stored) for d in me.actions() if isinstance(d, Done)] == [(put, 2)]


@pytest.mark.req("A7.5", "A4.4")
def test_an_evicted_contact_sleeps_in_the_dormant_cache_and_is_dialled_again_later():
    cfg = EngineConfig(dormant_interval=20.0)
    me = Engine(NodeInfo(b"\x01" * 32, "mem://me"), 0.0, random.Random(1), cfg)
    other = NodeInfo(b"\x02" * 32, "mem://other")
    me.connection_opened(other, 0.0, outbound=True)
    me.connection_closed(other.id, 1.0, error=True)
    now = 1.0
    for _ in range(100):  # the engine redials it and every dial fails: stale, then evicted
        now += 1.0
        me.handle_timer(now)
        for action in me.actions():
            if isinstance(action, Dial):
                me.dial_failed(action.node.id, now)
        if other.id not in me.table:
            break
    assert other.id not in me.table and other.id in me._dormant
    me.actions()
    me.handle_timer(now + 25.0)  # the partition healed: the dormant contact is tried again
    assert any(isinstance(a, Dial) and a.node.id == other.id for a in me.actions())
    me.connection_opened(other, now + 25.1, outbound=True)
    out = me.actions()
    assert other.id not in me._dormant and other.id in me.table
    # It rejoins through it: a lookup of its own id goes to the woken contact.
    assert any(isinstance(a, Send) and a.peer == other.id and isinstance(a.message, FindNode)
               and a.message.target == me.info.id for a in out)


@pytest.mark.req("A5.2", "B7.2")
def test_a_bridge_relaying_for_many_nodes_still_keeps_and_serves_its_own_connections():
    # Pinned relayed nodes counted among the kept and against conn_cap: past 16,
    # a bridge closed every other connection at its next maintenance (lookups to it
    # cut short) and refused every node that asked to keep it (OVER_CAPACITY).
    rng = random.Random(7)
    bridge = Engine(NodeInfo(rng.randbytes(32), "ws://bridge", "bridge"), 0.0, random.Random(1))
    for i in range(20):
        relayed = NodeInfo(rng.randbytes(32), f"relay://bridge/{i}", "node")
        bridge.connection_opened(relayed, 0.0, outbound=False)
        bridge.pin(relayed.id)
    bridge.actions()
    joining = [NodeInfo(rng.randbytes(32), f"ws://n{i}", "node") for i in range(3)]
    for n in joining:  # nodes that keep the bridge among their connections
        bridge.connection_opened(n, 0.5, outbound=False)
        bridge.receive(n.id, Keep(), 0.5)
    asker = NodeInfo(rng.randbytes(32), "ws://asker", "node")  # a lookup passing by
    bridge.connection_opened(asker, 0.6, outbound=False)
    bridge.receive(asker.id, FindNode(1, rng.randbytes(32)), 0.6)
    refused = [a for a in bridge.actions() if isinstance(a, Send) and isinstance(a.message, Error)]
    assert not refused, refused
    bridge.handle_timer(1.0)
    closed = [a for a in bridge.actions() if isinstance(a, Close)]
    assert not closed, closed
    assert all(bridge.peers[n.id].kept for n in joining)
    assert len(bridge.connected()) == 24
