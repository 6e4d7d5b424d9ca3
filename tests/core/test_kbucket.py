"""The Kademlia routing table, on both implementations."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import impl_pair
from yzcore.exceptions import InvalidArgument, InvalidConfig, InvalidId

SELF = bytes(32)


def in_bucket(index: int, rng: random.Random) -> bytes:
    """A random id sharing exactly ``index`` leading bits with SELF (all zeros)."""
    value = (1 << (255 - index)) | rng.getrandbits(255 - index)
    return value.to_bytes(32, "big")


@pytest.fixture
def rng() -> random.Random:
    return random.Random(42)


def fill(table, index, n, rng, now=1.0, ip_base="203.0."):
    ids = [in_bucket(index, rng) for _ in range(n)]
    for i, node in enumerate(ids):
        assert table.add(node, f"ws://n{i}", now + i, f"{ip_base}{i}.1") == ("added", None)
    return ids


def test_buckets_are_indexed_by_common_prefix_length(kbucket, rng):
    table = kbucket.RoutingTable(SELF)
    for index in (0, 1, 7, 64, 200, 255):
        node = in_bucket(index, rng)
        assert table.bucket_of(node) == index
        table.add(node, "ws://x", 1.0)
        assert [c.id for c in table.bucket(index)] == [node]
    assert table.bucket_sizes() == {0: 1, 1: 1, 7: 1, 64: 1, 200: 1, 255: 1}
    assert len(table) == 6


def test_own_id_is_refused(kbucket):
    table = kbucket.RoutingTable(SELF)
    assert table.add(SELF, "ws://me", 1.0) == ("self", None)
    assert len(table) == 0


def test_seen_moves_contact_to_most_recent(kbucket, rng):
    table = kbucket.RoutingTable(SELF)
    a, b, c = fill(table, 3, 3, rng)
    assert [x.id for x in table.bucket(3)] == [a, b, c]
    assert table.seen(a, 10.0) is True
    assert [x.id for x in table.bucket(3)] == [b, c, a]
    assert table.get(a).last_seen == 10.0
    assert table.add(b, "ws://b-moved", 11.0) == ("updated", None)
    assert [x.id for x in table.bucket(3)] == [c, a, b]
    assert table.get(b).address == "ws://b-moved"
    assert table.oldest(3).id == c
    assert table.seen(in_bucket(3, rng), 12.0) is False


def test_full_bucket_reports_oldest_and_caches_candidate(kbucket, rng):
    table = kbucket.RoutingTable(SELF, k=4, replacements=2)
    members = fill(table, 0, 4, rng)
    extra = [in_bucket(0, rng) for _ in range(3)]
    assert table.add(extra[0], "ws://e0", 20.0) == ("full", members[0])
    table.seen(members[0], 21.0)  # the caller pinged the oldest and it answered
    assert table.add(extra[1], "ws://e1", 22.0) == ("full", members[1])
    assert [c.id for c in table.replacement_cache(0)] == extra[:2]
    # The cache is bounded: the oldest candidate falls out.
    assert table.add(extra[2], "ws://e2", 23.0)[0] == "full"
    assert [c.id for c in table.replacement_cache(0)] == extra[1:]
    # A candidate heard again moves to the fresh end of the cache.
    table.add(extra[1], "ws://e1", 24.0)
    assert [c.id for c in table.replacement_cache(0)] == [extra[2], extra[1]]
    assert len(table) == 4


@pytest.mark.req("A4.3", "A4.4")
def test_failures_mark_stale_then_evict_and_promote_freshest(kbucket, rng):
    table = kbucket.RoutingTable(SELF, k=3, max_fails=3)
    a, b, c = fill(table, 0, 3, rng)
    d, e = in_bucket(0, rng), in_bucket(0, rng)
    table.add(d, "ws://d", 10.0)
    table.add(e, "ws://e", 11.0)
    assert table.fail(a, 12.0) == ("stale", None)
    assert table.get(a).stale and table.get(a).fails == 1
    assert [x.id for x in table.stale_contacts()] == [a]
    assert table.seen(a, 13.0) and not table.get(a).stale and table.get(a).fails == 0
    for _ in range(2):
        assert table.fail(a, 14.0) == ("stale", None)
    assert table.fail(a, 15.0) == ("evicted", e)  # freshest replacement promoted
    assert a not in table and e in table
    assert table.get(e).address == "ws://e"
    assert [x.id for x in table.replacement_cache(0)] == [d]
    assert table.fail(a, 16.0) == ("unknown", None)
    assert table.fail(d, 16.0) == ("evicted", None)  # a failing candidate leaves the cache
    assert table.replacement_cache(0) == []


@pytest.mark.req("A4.3", "A4.4")
def test_stale_contact_makes_room_for_a_new_one(kbucket, rng):
    table = kbucket.RoutingTable(SELF, k=3)
    a, b, c = fill(table, 0, 3, rng)
    table.fail(b, 5.0)
    table.fail(c, 5.0)
    table.fail(c, 5.0)
    newcomer = in_bucket(0, rng)
    assert table.add(newcomer, "ws://new", 6.0) == ("replaced", c)  # most failures goes first
    assert c not in table and newcomer in table
    assert table.add(in_bucket(0, rng), "ws://n2", 7.0) == ("replaced", b)


@pytest.mark.req("A4.4")
def test_remove_promotes_and_cleans_up(kbucket, rng):
    table = kbucket.RoutingTable(SELF, k=2)
    a, b = fill(table, 5, 2, rng)
    cand = in_bucket(5, rng)
    assert table.add(cand, "ws://c", 9.0) == ("full", a)
    assert table.remove(a) == ("removed", cand)
    assert table.remove(a) == ("unknown", None)
    assert sorted(c.id for c in table.bucket(5)) == sorted([b, cand])
    other = in_bucket(5, rng)
    table.add(other, "ws://o", 10.0)  # goes to the cache
    assert table.remove(other) == ("removed", None)
    assert table.replacement_cache(5) == []


def test_ip_diversity_limit_per_bucket(kbucket, rng):
    table = kbucket.RoutingTable(SELF, ip_limit=2)
    ids = [in_bucket(2, rng) for _ in range(6)]
    assert table.add(ids[0], "ws://a", 1.0, "198.51.100.1")[0] == "added"
    assert table.add(ids[1], "ws://b", 1.0, "198.51.100.2")[0] == "added"
    assert table.add(ids[2], "ws://c", 1.0, "198.51.100.3") == ("ip_limit", None)
    assert table.add(ids[2], "ws://c", 1.0, "198.51.101.3")[0] == "added"  # another /24
    # Zero-padded octets are the same /24, not a way around the limit.
    assert table.add(ids[3], "ws://d", 1.0, "198.051.100.9") == ("ip_limit", None)
    # The limit is per bucket: another bucket takes the same /24.
    assert table.add(in_bucket(9, rng), "ws://e", 1.0, "198.51.100.4")[0] == "added"
    # Loopback is exempt, so local networks on 127.0.0.1 are never limited.
    for node in ids[3:]:
        assert table.add(node, "ws://l", 1.0, "127.0.0.1")[0] == "added"
    # Removing a contact frees its slot in the group.
    table.remove(ids[0])
    assert table.add(in_bucket(2, rng), "ws://f", 1.0, "198.51.100.7")[0] == "added"


def test_ipv6_groups_by_48_and_mapped_ipv4_by_24(kbucket, rng):
    table = kbucket.RoutingTable(SELF, ip_limit=1)
    assert table.add(in_bucket(1, rng), "ws://a", 1.0, "2001:db8:1:2::1")[0] == "added"
    assert table.add(in_bucket(1, rng), "ws://b", 1.0, "2001:db8:1:ffff::9") == ("ip_limit", None)
    assert table.add(in_bucket(1, rng), "ws://c", 1.0, "2001:db8:2::1")[0] == "added"
    assert table.add(in_bucket(1, rng), "ws://d", 1.0, "192.0.2.1")[0] == "added"
    assert table.add(in_bucket(1, rng), "ws://e", 1.0, "::ffff:192.0.2.77") == ("ip_limit", None)
    assert table.add(in_bucket(1, rng), "ws://f", 1.0, "::1")[0] == "added"


def test_promotion_skips_candidates_over_the_ip_limit(kbucket, rng):
    table = kbucket.RoutingTable(SELF, k=2, ip_limit=1)
    a = in_bucket(0, rng)
    b = in_bucket(0, rng)
    table.add(a, "ws://a", 1.0, "198.51.100.1")
    table.add(b, "ws://b", 1.0, "192.0.2.1")
    fresh_same_group = in_bucket(0, rng)
    older_other_group = in_bucket(0, rng)
    assert table.add(older_other_group, "ws://o", 2.0, "203.0.113.5")[0] == "full"
    assert table.add(fresh_same_group, "ws://s", 3.0, "192.0.2.200")[0] == "ip_limit"
    assert table.remove(a) == ("removed", older_other_group)


@pytest.mark.req("A4.5")
def test_update_merges_metadata_and_never_replaces_it_whole(kbucket, rng):
    table = kbucket.RoutingTable(SELF)
    node = in_bucket(4, rng)
    table.add(node, "ws://old:1", 1.0, "198.51.100.1")
    assert table.update(node, meta={"role": "node", "caps": ["ws"]})
    assert table.update(node, address="ws://new:2", meta={"version": "1.0"})
    c = table.get(node)
    assert c.address == "ws://new:2"
    assert c.meta == {"role": "node", "caps": ["ws"], "version": "1.0"}
    assert table.update(node, ip="198.51.100.9") and table.get(node).ip == "198.51.100.9"
    # add() without an ip keeps the one we know.
    table.add(node, "ws://new:2", 2.0)
    assert table.get(node).ip == "198.51.100.9"
    assert table.update(in_bucket(4, rng), address="ws://x") is False


def brute_nearest(table, target, k, include_stale=False):
    t = int.from_bytes(target, "big")
    pool = [c for c in table.contacts() if include_stale or not c.stale]
    return sorted(pool, key=lambda c: int.from_bytes(c.id, "big") ^ t)[:k]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 300), k=st.integers(0, 40),
       stale=st.booleans())
def test_nearest_equals_brute_force(kbucket, seed, n, k, stale):
    rng = random.Random(seed)
    self_id = rng.randbytes(32)
    table = kbucket.RoutingTable(self_id, k=8)
    ids = [rng.randbytes(32) for _ in range(n)]
    # Also ids close to ours, so that deep buckets are populated.
    ids += [bytes(a ^ b for a, b in zip(self_id, rng.randbytes(2) + bytes(30))) for _ in range(n // 4)]
    for node in ids:
        table.add(node, "ws://x", 1.0)
    for node in ids[::7]:
        table.fail(node, 2.0)
    # Targets near ours too: their bucket is deep, and the deeper buckets
    # come in an order that depends on the target's bits.
    near_self = bytes(a ^ b for a, b in zip(self_id, bytes(1) + rng.randbytes(31)))
    for target in (rng.randbytes(32), self_id, ids[0] if ids else self_id, ids[-1] if ids else self_id,
                   near_self):
        got = table.nearest(target, k, include_stale=stale)
        want = brute_nearest(table, target, k, include_stale=stale)
        assert [c.id for c in got] == [c.id for c in want]


def test_nearest_defaults_to_k_and_skips_stale(kbucket, rng):
    table = kbucket.RoutingTable(SELF, k=5)
    ids = [rng.randbytes(32) for _ in range(200)]
    for node in ids:
        table.add(node, "ws://x", 1.0)
    assert len(table.nearest(rng.randbytes(32))) == 5
    first = table.nearest(ids[0], 1)[0]
    table.fail(first.id, 2.0)
    assert table.nearest(ids[0], 1)[0].id != first.id
    assert table.nearest(ids[0], 1, include_stale=True)[0].id == first.id


def test_refresh_bookkeeping(kbucket, rng):
    table = kbucket.RoutingTable(SELF, now=100.0)
    assert table.due_for_refresh(100.0, 60.0) == []
    assert table.due_for_refresh(160.0, 60.0) == [0]
    table.add(in_bucket(3, rng), "ws://x", 100.0)
    assert table.due_for_refresh(160.0, 60.0) == [0, 1, 2, 3]
    table.mark_refreshed(2, 150.0)
    assert table.due_for_refresh(160.0, 60.0) == [0, 1, 3]
    assert table.due_for_refresh(210.0, 60.0) == [0, 1, 2, 3]


def test_bad_input_raises_typed_errors(kbucket):
    with pytest.raises(InvalidId):
        kbucket.RoutingTable(b"short")
    for kwargs in ({"k": 0}, {"k": -1}, {"replacements": -1}, {"ip_limit": -2},
                   {"max_fails": 0}, {"k": 2.5}):
        with pytest.raises(InvalidConfig):
            kbucket.RoutingTable(SELF, **kwargs)
    with pytest.raises(InvalidArgument):
        kbucket.RoutingTable(SELF, now=float("nan"))
    table = kbucket.RoutingTable(SELF)
    with pytest.raises(InvalidId):
        table.add(b"\x01" * 31, "ws://x", 1.0)
    with pytest.raises(InvalidId):
        table.add("01" * 32, "ws://x", 1.0)
    with pytest.raises(InvalidId):
        table.nearest(b"x")
    with pytest.raises(InvalidArgument):
        table.nearest(bytes(32), -1)
    with pytest.raises(InvalidArgument):
        table.add(b"\x80" * 32, "ws://x", 1.0, "not-an-ip")
    with pytest.raises(InvalidArgument):
        table.add(b"\x80" * 32, "ws://x", 1.0, "300.1.1.1")
    for odd in ("1.2.3.\u00b2", "\uff11\uff10.0.0.1", "10.0.0.\u0661"):  # digits, not ASCII ones
        with pytest.raises(InvalidArgument):  # (a raw ValueError, or grouped as 10.0.0)
            table.add(b"\x80" * 32, "ws://x", 1.0, odd)
    assert table.add(b"\x80" * 32, "ws://x", 1.0, "fe80::1%eth0") == ("added", None)  # scoped
    with pytest.raises(InvalidArgument):
        table.bucket(256)
    assert len(table) == 1  # (the scoped one): nothing half-inserted


# -- the two implementations, driven alike -------------------------------

IPS = [None, "127.0.0.1", "198.51.100.1", "198.51.100.2", "192.0.2.3", "2001:db8::1"]
# Adds and failures weigh triple, so that full buckets with several stale
# contacts of different failure counts (the eviction choices) come up often.
OP_NAMES = ["add"] * 3 + ["fail"] * 3 + ["seen", "remove", "update", "nearest"]


def crowded_pool(rng, self_id, n):
    """Ids crowded into buckets 0-2, so buckets fill and replacement caches churn."""
    return [bytes([self_id[0] ^ (0x80 >> rng.randrange(3))]) + rng.randbytes(31) for _ in range(n)]


def apply_alike(tables, name, node, arg, now):
    """One operation on every table; every table must answer the same."""
    if name == "add":
        results = [t.add(node, "ws://a", now, IPS[arg % len(IPS)]) for t in tables]
    elif name == "fail":
        results = [t.fail(node, now) for t in tables]
    elif name == "seen":
        results = [t.seen(node, now) for t in tables]
    elif name == "remove":
        results = [t.remove(node) for t in tables]
    elif name == "update":
        results = [t.update(node, address=f"ws://u{arg}", ip=IPS[arg % len(IPS)], meta={"n": arg})
                   for t in tables]
    else:
        results = [[x.as_tuple() for x in t.nearest(node, include_stale=arg % 2 == 0)]
                   for t in tables]
    assert results[0] == results[1], (name, node.hex(), arg)


def assert_same_state(tables, now):
    snaps = [([x.as_tuple() for x in t.contacts()],
              [[x.as_tuple() for x in t.replacement_cache(b)] for b in range(256)],
              t.bucket_sizes(), [x.id for x in t.stale_contacts()],
              t.due_for_refresh(now, 1.0), len(t)) for t in tables]
    assert snaps[0] == snaps[1]


def make_pair(self_id, **params):
    c_mod, py_mod = impl_pair("_kbucket")
    return [m.RoutingTable(self_id, **params) for m in (c_mod, py_mod)]


def test_implementations_agree_on_random_operation_sequences():
    impl_pair("_kbucket")  # skips without extensions

    @settings(max_examples=300, deadline=None)
    @given(seed=st.integers(0, 2**32),
           ops=st.lists(st.tuples(st.sampled_from(OP_NAMES), st.integers(0, 19), st.integers(0, 11)),
                        max_size=250),
           k=st.integers(1, 6), repl=st.integers(0, 4), ip_limit=st.integers(0, 3),
           max_fails=st.integers(1, 4))
    def check(seed, ops, k, repl, ip_limit, max_fails):
        rng = random.Random(seed)
        self_id = rng.randbytes(32)
        pool = crowded_pool(rng, self_id, 20)
        tables = make_pair(self_id, k=k, replacements=repl, ip_limit=ip_limit,
                           max_fails=max_fails)
        now = 0.0
        for name, i, arg in ops:
            now += 0.5
            apply_alike(tables, name, pool[i], arg, now)
        assert_same_state(tables, now)

    check()


@pytest.mark.parametrize("seed", range(40))
def test_implementations_agree_on_long_seeded_runs(seed):
    # Hypothesis keeps operation lists short; long runs reach the rare states
    # (evictions among stale contacts with different failure counts).
    rng = random.Random(seed)
    self_id = rng.randbytes(32)
    pool = crowded_pool(rng, self_id, 24)
    tables = make_pair(self_id, k=rng.randint(1, 6), replacements=rng.randint(0, 4),
                       ip_limit=rng.randint(0, 3), max_fails=rng.randint(1, 4))
    now = 0.0
    for _ in range(600):
        now += 0.25
        apply_alike(tables, rng.choice(OP_NAMES), rng.choice(pool), rng.randrange(12), now)
    assert_same_state(tables, now)


@pytest.mark.parametrize("how", ["pickle", "copy", "deepcopy"])
def test_a_copied_or_pickled_table_is_the_same_table(kbucket, rng, how):
    # The compiled table's own pickling took its id for a C string: cut at the id's
    # first zero byte, and read from freed memory after (a copy filed its own id).
    import copy
    import pickle

    me = b"\x5a\x00" + rng.randbytes(30)
    table = kbucket.RoutingTable(me, 4, now=1.0)
    for i in range(200):
        table.add(rng.randbytes(32), f"ws://n{i}", 2.0 + i, f"10.{i % 7}.0.{i}")
    twin = {"pickle": lambda t: pickle.loads(pickle.dumps(t)), "copy": copy.copy,
            "deepcopy": copy.deepcopy}[how](table)
    ids = [rng.randbytes(32) for _ in range(100)]
    assert [twin.bucket_of(i) for i in ids] == [table.bucket_of(i) for i in ids]
    near = [c.as_tuple() for c in table.nearest(me, 20)]
    assert [c.as_tuple() for c in twin.nearest(me, 20)] == near
    assert twin.add(me, "ws://me", 500.0) == ("self", None) and len(twin) == len(table)


def test_a_known_contact_cannot_move_into_a_full_ip_group(kbucket, rng):
    # The diversity limit was checked when a contact came in, not when a known one's
    # address changed: nine contacts of one /24 shared a bucket with a limit of 2.
    table = kbucket.RoutingTable(SELF, 20, ip_limit=2)
    for i, node in enumerate(in_bucket(0, rng) for _ in range(2)):  # 203.0.113/24: full here
        assert table.add(node, f"ws://n{i}", 1.0, f"203.0.113.{i + 1}") == ("added", None)
    movers = [in_bucket(0, rng) for _ in range(4)]
    for i, node in enumerate(movers):
        assert table.add(node, f"ws://m{i}", 10.0, f"198.51.{i}.1") == ("added", None)
    table.add(movers[0], "ws://203.0.113.77", 11.0, "203.0.113.77")  # again, from the full /24
    table.update(movers[1], address="ws://203.0.113.78", ip="203.0.113.78")
    in_group = [c for c in table.nearest(SELF, 20) if c.ip and c.ip.startswith("203.0.113.")]
    assert len(in_group) == 2
    assert table.get(movers[0]).ip == "198.51.0.1" and table.get(movers[1]).ip == "198.51.1.1"
    # ... nor is it handed out, and dialled, at the full group's address.
    assert (table.get(movers[0]).address, table.get(movers[1]).address) == ("ws://m0", "ws://m1")
    table.update(movers[2], ip="198.51.99.1")  # to a group with room: it moves
    assert table.get(movers[2]).ip == "198.51.99.1"
