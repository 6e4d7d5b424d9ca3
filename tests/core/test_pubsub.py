"""Pubsub's sans-I/O parts: what a home holds and lets go, the seen filter, homes,
the wire messages, and the engine holding a pubsub connection open (no sockets)."""

from __future__ import annotations

import random

import orjson
import pytest

from yzcore import wire
from yzcore.exceptions import InvalidArgument, WireError
from yzcore.ids import distance, key_for
from yzcore.protocol.actions import Close
from yzcore.protocol.engine import Engine, EngineConfig
from yzcore.pubsub import (
    MAX_TTL,
    MIN_TTL,
    ChannelHomes,
    Seen,
    channel_key,
    homes_for,
)
from yzcore.wire import ErrorCode, NodeInfo

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32
K1, K2, K3 = key_for("one"), key_for("two"), key_for("three")


def test_a_channel_key_is_the_sha256_of_its_name_and_bad_names_are_refused():
    assert channel_key("news") == key_for("news")
    for bad in ("", "x" * 257, "\ud800", None, b"news"):
        with pytest.raises(InvalidArgument, match="channel name"):
            channel_key(bad)  # type: ignore[arg-type]


def test_the_homes_are_the_three_closest_server_nodes():
    rng = random.Random(1)
    key = rng.randbytes(32)
    nodes = [NodeInfo(rng.randbytes(32), f"ws://h{i}/dht", "node") for i in range(10)]
    browser = NodeInfo(key, None, "browser")  # the closest of all, but holds nothing
    homes = homes_for(key, [*nodes, browser, nodes[0]])
    assert homes == sorted(nodes, key=lambda n: distance(n.id, key))[:3]


def test_a_home_holds_subscriptions_until_they_expire_or_are_withdrawn():
    h = ChannelHomes()
    assert h.subscribe(A, K1, 10.0, 0.0) == 1
    assert h.subscribe(B, K1, 20.0, 0.0) == 2
    assert h.subscribe(A, K1, 30.0, 5.0) == 2  # a renewal moves the expiry
    assert h.subscribers(K1, 12.0) == [A, B]
    assert h.expire(25.0) == [B] and h.subscribers(K1, 25.0) == [A]  # B's ran out: freed
    assert not h.holds(B) and h.holds(A)
    assert h.unsubscribe(A, K1) == 0 and not h.holds(A)
    assert h.stats() == (0, 0)


def test_a_home_bounds_the_ttl():
    h = ChannelHomes()
    h.subscribe(A, K1, 1e9, 0.0)
    h.subscribe(B, K1, 0.0, 0.0)
    assert h.subscribers(K1, MIN_TTL - 0.1) == [A, B]
    assert h.subscribers(K1, MIN_TTL) == [A]
    assert h.subscribers(K1, MAX_TTL - 1) == [A] and h.subscribers(K1, MAX_TTL) == []
    assert sorted(h.expire(MAX_TTL)) == [A, B] and not h.holding()


def test_a_closed_connection_drops_every_subscription_of_its_peer():
    h = ChannelHomes()
    for key in (K1, K2, K3):
        h.subscribe(A, key, 60.0, 0.0)
    h.subscribe(B, K1, 60.0, 0.0)
    assert h.drop_peer(A) == 3
    assert h.stats() == (1, 1) and h.subscribers(K1, 1.0) == [B]


def test_a_home_holds_the_subscriptions_of_a_bounded_number_of_peers():
    h = ChannelHomes(max_peers=2)
    assert h.subscribe(A, K1, 60, 0) == 1 and h.subscribe(B, K2, 60, 0) == 1
    code, text = h.subscribe(C, K1, 60, 0)  # type: ignore[misc]
    assert code == ErrorCode.OVER_CAPACITY and "2 peers" in text
    assert h.subscribe(A, K3, 60, 0) == 1  # a peer it holds already may add a channel
    h.drop_peer(B)
    assert h.subscribe(C, K1, 60, 0) == 2


def test_each_limit_of_a_home_is_refused_with_over_capacity():
    h = ChannelHomes(max_channels=2, max_subscribers=2, max_peer_channels=2)
    assert h.subscribe(A, K1, 60, 0) == 1 and h.subscribe(A, K2, 60, 0) == 1
    code, text = h.subscribe(A, K3, 60, 0)  # type: ignore[misc]
    assert code == ErrorCode.OVER_CAPACITY and "for one peer" in text
    code, text = h.subscribe(B, K3, 60, 0)  # type: ignore[misc]
    assert code == ErrorCode.OVER_CAPACITY and "channels already" in text
    assert h.subscribe(B, K1, 60, 0) == 2
    code, text = h.subscribe(C, K1, 60, 0)  # type: ignore[misc]
    assert code == ErrorCode.OVER_CAPACITY and "subscribers" in text
    assert h.subscribe(A, K1, 90, 0) == 2  # renewing is never refused
    assert h.stats() == (2, 3)


def test_seen_drops_copies_and_forgets_by_age_and_by_count():
    s = Seen(ttl=10.0, limit=3)
    assert s.add(b"1", 0.0) and not s.add(b"1", 5.0)
    assert s.add(b"1", 10.0)  # forgotten after ttl
    for mid in (b"2", b"3", b"4"):
        assert s.add(mid, 11.0)
    assert len(s) == 3 and s.add(b"1", 11.0)  # the oldest made room
    assert not s.add(b"4", 11.0)


MESSAGES = [
    wire.Subscribe(1, K1, 120.0),
    wire.Unsubscribe(2, K1),
    wire.Publish(3, K1, b"m" * 16, "hello ✓"),
    wire.PubSubOk(4, 7),
    wire.Delivery(K1, b"m" * 16, A, ""),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: m.TYPE)
def test_pubsub_messages_survive_the_codec(msg):
    assert wire.decode(wire.encode(msg)) == msg


@pytest.mark.parametrize(("fields", "named"), [
    ({"t": "pubsub.sub", "rid": 1, "ch": "zz", "ttl": 1}, "'ch'"),
    ({"t": "pubsub.sub", "rid": 1, "ch": "a" * 64, "ttl": -1}, "'ttl'"),
    ({"t": "pubsub.sub", "rid": 1, "ch": "a" * 64}, "'ttl'"),
    ({"t": "pubsub.pub", "rid": 1, "ch": "a" * 64, "mid": "00", "data": ""}, "'mid'"),
    ({"t": "pubsub.pub", "rid": 1, "ch": "a" * 64, "mid": "0" * 32, "data": 5}, "'data'"),
    ({"t": "pubsub.pub", "rid": 1, "ch": "a" * 64, "mid": "0" * 32, "data": "x" * 16385},
     "'data'"),
    # 16,384 characters, but more bytes as JSON: a delivery of it would not fit a frame
    ({"t": "pubsub.pub", "rid": 1, "ch": "a" * 64, "mid": "0" * 32,
      "data": "\U0001F600" * 16180 + "\u4e00" * 204}, "'data'"),
    ({"t": "pubsub.pub", "rid": 1, "ch": "a" * 64, "mid": "0" * 32, "data": "\u0001" * 2731},
     "'data'"),
    ({"t": "pubsub.ok", "rid": 1, "count": -1}, "'count'"),
    ({"t": "pubsub.msg", "ch": "a" * 64, "mid": "0" * 32, "from": "x", "data": ""}, "'from'"),
])
def test_a_bad_pubsub_message_is_invalid_and_names_its_field(fields, named):
    with pytest.raises(WireError) as info:
        wire.decode(orjson.dumps({"v": wire.PROTOCOL_VERSION, **fields}))
    assert info.value.code == ErrorCode.INVALID_MESSAGE
    assert named in info.value.message
    assert info.value.rid == fields.get("rid")


def _engine(rng: random.Random, **config: object) -> Engine:
    info = NodeInfo(rng.randbytes(32), f"mem://{rng.random()}", "node")
    cfg = EngineConfig(**config)  # type: ignore[arg-type]
    return Engine(info, 0.0, random.Random(rng.random()), cfg)


def _closes(e: Engine) -> list[Close]:
    return [a for a in e.actions() if isinstance(a, Close)]


def test_a_held_connection_is_not_closed_when_idle_nor_counted_as_kept():
    rng = random.Random(2)
    a, b = _engine(rng, conn_target=0), _engine(rng)
    a.connection_opened(b.info, 0.0, outbound=True)  # a transient connection a dialled
    a.hold(b.info.id, True)
    a.actions()
    a.handle_timer(100.0)
    assert _closes(a) == [] and not a.peers[b.info.id].kept
    a.hold(b.info.id, False)  # let go: idle, it closes
    a.handle_timer(200.0)
    assert [c.peer for c in _closes(a)] == [b.info.id]


def test_a_home_above_conn_max_keeps_the_subscribers_it_holds():
    rng = random.Random(3)
    home = _engine(rng, conn_target=0, conn_max=1)
    peers = [_engine(rng) for _ in range(4)]
    for p in peers:
        home.connection_opened(p.info, 0.0, outbound=False)
    home.hold(peers[0].info.id, True)
    home.actions()
    home.handle_timer(100.0)  # over conn_max: quiet inbound connections are shed
    shed = {c.peer for c in _closes(home)}
    # The held one stays and is not counted: of the other three, conn_max (1) stay.
    assert peers[0].info.id not in shed and len(shed) == 2


def test_holding_a_peer_with_no_connection_does_nothing():
    rng = random.Random(4)
    a, b = _engine(rng), _engine(rng)
    a.hold(b.info.id, True)
    assert b.info.id not in a.peers


def test_the_largest_publication_fits_a_frame_whichever_message_carries_it():
    for data in ("x" * 16384, "\U0001F600" * 4096, "\u0001" * 2730, '"' * 8192):
        assert wire.publication_fits(data)
        wire.encode(wire.Publish(1, K1, b"m" * 16, data))  # neither raises FRAME_TOO_LARGE
        wire.encode(wire.Delivery(K1, b"m" * 16, A, data))
    assert not wire.publication_fits("\ud800") and not wire.publication_fits(5)
