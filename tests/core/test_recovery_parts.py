"""Sans-I/O parts of recovery and of the bootstrap server: backoff, the directory, bridge auth."""

from __future__ import annotations

import hashlib
import random

import pytest

from yzcore.bootstrap.auth import bridge_mac, check_mac
from yzcore.bootstrap.directory import Directory
from yzcore.ids import common_prefix_len
from yzcore.protocol.backoff import Backoff, BackoffPolicy
from yzcore.wire import NodeInfo


def nid(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


@pytest.mark.req("A1.4")
def test_backoff_is_full_jitter_exponential_with_5_attempts_a_round():
    policy = BackoffPolicy(base=0.5, cap=8.0, attempts=5, round_pause=30.0)
    rng = random.Random(1)
    bounds = [0.5, 1.0, 2.0, 4.0]
    shares: list[list[float]] = [[] for _ in bounds]  # each delay as a share of its bound
    for _ in range(200):
        b = Backoff(policy, rng)
        assert b.delay() == 0.0  # the first attempt goes at once
        ended = [b.failed()]
        for n, bound in enumerate(bounds):  # attempts 2..5 wait uniform(0, base * 2**(n-1))
            delay = b.delay()
            assert 0.0 <= delay <= bound
            shares[n].append(delay / bound)
            ended.append(b.failed())
        assert ended == [False, False, False, False, True]  # 5 attempts, then the round ends
        assert 15.0 <= b.delay() <= 30.0  # the pause before the next round
        b.succeeded()
        assert b.delay() == 0.0
    for drawn in shares:  # full jitter: uniform over the whole window, not near its bound
        assert 0.4 < sum(drawn) / len(drawn) < 0.6
        assert min(drawn) < 0.05 and max(drawn) > 0.95


@pytest.mark.req("A7.4")
def test_jitter_spreads_a_thousand_retries_over_the_window():
    rng = random.Random(7)
    delays = []
    for _ in range(1000):
        b = Backoff(BackoffPolicy(base=4.0), rng)
        b.failed()
        delays.append(b.delay())
    per_second = [sum(1 for d in delays if s <= d < s + 1) for s in range(3)]
    per_second.append(sum(1 for d in delays if 3 <= d <= 4))  # the window's bound included
    assert sum(per_second) == 1000  # every retry inside the window [0, 4]
    assert max(per_second) < 320 and min(per_second) > 180  # spread evenly, not in one instant
    assert len(set(delays)) > 990


def test_introductions_are_spread_across_the_askers_buckets_and_healthy_first():
    d = Directory(random.Random(3))
    for i in range(200):
        d.seen(NodeInfo(nid(i), f"ws://127.0.0.1:{9000 + i}/dht"), 0.0)
    for i in range(0, 200, 2):
        d.heartbeat(NodeInfo(nid(i), f"ws://127.0.0.1:{9000 + i}/dht"), 0.0, healthy=True,
                    connections=4, routing_table=20, probe=0.01)
    asker = nid(10_000)
    peers, bridges, genesis = d.introduce(asker, 8)
    assert len(peers) == 8 and not bridges and not genesis
    assert asker not in {p.id for p in peers}
    groups = sorted(common_prefix_len(asker, p.id) for p in peers)
    # Round-robin over buckets: the 8 come from the 8 distinct buckets present.
    present = sorted({common_prefix_len(asker, nid(i)) for i in range(200)})
    assert groups == present[:8] if len(present) >= 8 else set(groups) == set(present)
    assert all(d.nodes[p.id].healthy for p in peers if common_prefix_len(asker, p.id) == 0)


def _node(i: int, role: str = "node") -> NodeInfo:
    return NodeInfo(nid(i), f"ws://127.0.0.1:{(9000 + i) % 65536}/dht", role)


def _check_introduction(d: Directory, asker: bytes, want: int, peers: list[NodeInfo]) -> None:
    """What the old whole pass over the nodes gave, by brute force: the round-robin over
    the asker's groups fixes how many come from each, healthy first within each."""
    groups: dict[int, list[bytes]] = {}
    for node_id, entry in d.nodes.items():
        if node_id != asker and entry.info.role == "node":
            groups.setdefault(common_prefix_len(asker, node_id), []).append(node_id)
    expected: dict[int, int] = {}
    left = dict(sorted((c, len(m)) for c, m in groups.items()))
    total = 0
    while total < want and left:
        for c in list(left):
            expected[c] = expected.get(c, 0) + 1
            total += 1
            left[c] -= 1
            if not left[c]:
                del left[c]
            if total >= want:
                break
    ids = [p.id for p in peers]
    assert len(ids) == len(set(ids)) == sum(expected.values())
    got: dict[int, list[bytes]] = {}
    for node_id in ids:
        got.setdefault(common_prefix_len(asker, node_id), []).append(node_id)
    assert {c: len(m) for c, m in got.items()} == expected
    for c, chosen in got.items():  # healthy first: no unhealthy one while a healthy one is left
        healthy = {m for m in groups[c] if d.nodes[m].healthy is True}
        if any(d.nodes[m].healthy is not True for m in chosen):
            assert healthy <= set(chosen)


@pytest.mark.parametrize("size", [0, 1, 2, 7, 60, 500, 3000])
def test_introductions_match_the_whole_pass_at_every_size(size):
    rng = random.Random(size)
    d = Directory(random.Random(size))
    for i in range(size):
        info = _node(i, "bridge" if i % 50 == 7 else "node")
        if rng.random() < 0.4:
            d.heartbeat(info, 0.0, healthy=rng.random() < 0.7, connections=4, routing_table=9,
                        probe=0.01)
        else:
            d.seen(info, 0.0)
    for trial in range(40):
        asker = nid(size + trial) if trial % 2 else nid(rng.randrange(size)) if size else nid(1)
        want = rng.choice([1, 3, 8, 8, 20, 64])
        peers, _, genesis = d.introduce(asker, want)
        _check_introduction(d, asker, want, peers)
        assert genesis == (not peers)


def test_introductions_from_a_large_group_are_spread_over_its_members():
    d = Directory(random.Random(5))
    for i in range(4000):
        d.heartbeat(_node(i), 0.0, healthy=i % 10 == 0, connections=4, routing_table=9, probe=0.01)
    asker = nid(99_999)

    class NoPass(dict):  # an introduction reads the entries it picks, never all of them
        def items(self):
            raise AssertionError("a pass over every node")
        values = __iter__ = items

    d.nodes = NoPass(d.nodes)
    far = [p.id for _ in range(200) for p in d.introduce(asker, 8)[0]
           if common_prefix_len(asker, p.id) == 0]
    assert len(far) == 200
    assert len(set(far)) > 120  # 200 healthy ones to draw from, at random
    assert all(d.nodes[f].healthy is True for f in far)


def test_the_index_follows_health_roles_and_expiry():
    d = Directory(random.Random(2), node_ttl=30.0)
    d.heartbeat(_node(1), 0.0, healthy=True, connections=4, routing_table=9, probe=0.01)
    d.heartbeat(_node(2), 10.0, healthy=False, connections=4, routing_table=9, probe=0.01)
    asker = nid(3)
    assert sorted(p.id for p in d.introduce(asker, 8)[0]) == sorted([nid(1), nid(2)])
    d.heartbeat(_node(1), 10.0, healthy=False, connections=4, routing_table=9, probe=0.01)
    d.heartbeat(_node(2), 10.0, healthy=True, connections=4, routing_table=9, probe=0.01)
    _check_introduction(d, asker, 1, d.introduce(asker, 1)[0])
    d.seen(_node(2, "bridge"), 20.0)  # a role change: no longer introduced as a peer
    assert [p.id for p in d.introduce(asker, 8)[0]] == [nid(1)]
    d.seen(_node(2), 20.0)  # and back
    assert len(d.introduce(asker, 8)[0]) == 2
    assert d.expire(40.5) == [nid(1)]
    assert [p.id for p in d.introduce(asker, 8)[0]] == [nid(2)]
    d.expire(60.0)
    assert d.introduce(asker, 8) == ([], [], True)


def test_the_first_asker_is_told_it_is_genesis_and_the_second_gets_the_first():
    d = Directory(random.Random(1))
    a, b = NodeInfo(nid(1), "ws://127.0.0.1:1/dht"), NodeInfo(nid(2), "ws://127.0.0.1:2/dht")
    d.seen(a, 0.0)
    assert d.introduce(a.id, 8) == ([], [], True)
    d.seen(b, 0.1)
    assert d.introduce(b.id, 8) == ([a], [], False)
    # Peers without an address (browsers) are never introduced.
    assert d.seen(NodeInfo(nid(3), None, "browser"), 0.2) is None


def test_silent_nodes_expire_after_the_ttl():
    d = Directory(random.Random(1), node_ttl=30.0)
    d.seen(NodeInfo(nid(1), "ws://127.0.0.1:1/dht"), 0.0)
    d.heartbeat(NodeInfo(nid(2), "ws://127.0.0.1:2/dht"), 20.0, healthy=True, connections=4,
                routing_table=9, probe=0.01)
    assert d.expire(30.0) == []
    assert d.expire(30.5) == [nid(1)]
    assert list(d.nodes) == [nid(2)] and d.nodes[nid(2)].connections == 4


def test_a_node_whose_link_closed_is_not_counted_healthy_until_it_says_so_again():
    # A stopped node counted healthy in /status, the dashboard and yz health until it
    # expired (node_ttl, 30 s), though the server had seen its connection close.
    d = Directory(random.Random(1), node_ttl=30.0)
    info = NodeInfo(nid(1), "ws://127.0.0.1:1/dht")
    d.heartbeat(info, 0.0, healthy=True, connections=4, routing_table=9, probe=0.01)
    d.left(info.id)
    assert d.nodes[info.id].healthy is None and list(d.nodes) == [info.id]  # unknown: not healthy
    d.heartbeat(info, 5.0, healthy=True, connections=4, routing_table=9, probe=0.01)
    assert d.nodes[info.id].healthy is True


@pytest.mark.req("A5.3")
def test_a_silent_bridge_is_judged_unhealthy_within_10_s_and_a_closed_one_at_once():
    d = Directory(random.Random(1), bridge_check=2.0, bridge_misses=2)
    silent, closed = NodeInfo(nid(1), "ws://b1", "bridge"), NodeInfo(nid(2), "ws://b2", "bridge")
    d.bridge_registered(silent, 0.0)
    d.bridge_registered(closed, 0.0)
    d.bridge_closed(closed.id, 0.0)
    assert d.healthy_bridges() == [silent]
    t, verdict = 0.0, None
    while t < 20.0:  # the server ticks every second; the bridge never answers
        d.bridges_to_check(t)
        if verdict is None and silent not in d.healthy_bridges():
            verdict = t
        t += 1.0
    assert verdict is not None and verdict <= 10.0
    d.bridge_answered(silent.id, t)
    assert silent in d.healthy_bridges()


@pytest.mark.req("A5.3")
def test_a_closed_bridge_is_listed_as_down_for_the_ttl_then_forgotten():
    # A bridge run without a kept key registers under a new id at each start:
    # its old entries must not pile up in the registry, /status and the dashboard.
    d = Directory(random.Random(1), bridge_ttl=600.0)
    gone, back = NodeInfo(nid(1), "ws://b1", "bridge"), NodeInfo(nid(2), "ws://b2", "bridge")
    d.bridge_registered(gone, 0.0)
    d.bridge_registered(back, 0.0)
    d.bridge_closed(gone.id, 10.0)
    d.bridge_closed(back.id, 10.0)
    d.bridge_registered(back, 20.0)  # the same bridge again: a fresh entry
    d.expire(610.0)
    assert set(d.bridges) == {gone.id, back.id} and not d.bridges[gone.id].connected
    d.expire(610.5)
    assert list(d.bridges) == [back.id] and d.healthy_bridges() == [back]


@pytest.mark.req("A5.1")
def test_the_bridge_proof_is_bound_to_the_secret_the_nonce_and_both_ids():
    secret, nonce = b"s" * 32, b"n" * 32
    mac = bridge_mac(secret, nonce, nid(1), nid(2))
    assert check_mac(secret, nonce, nid(1), nid(2), mac)
    assert not check_mac(b"t" * 32, nonce, nid(1), nid(2), mac)  # another secret
    assert not check_mac(secret, b"m" * 32, nid(1), nid(2), mac)  # replayed on another challenge
    assert not check_mac(secret, nonce, nid(3), nid(2), mac)  # claimed by another bridge
    assert not check_mac(secret, nonce, nid(1), nid(3), mac)  # shown to another server


@pytest.mark.req("A1.3", "A7.1")
def test_recovery_tries_cache_then_bridges_then_bootstrap_and_backs_off_between_attempts():
    from yzcore.protocol.recovery import RecoveryConfig, RecoveryPolicy

    policy = RecoveryPolicy(RecoveryConfig(lost_grace=2.0), random.Random(5))
    policy.observe(0.0, connections=4, table=10)
    assert policy.next_step(0.0) is None and policy.get_timer() == float("inf")
    policy.observe(10.0, connections=0, table=10)  # every connection lost
    assert policy.next_step(11.0) is None  # the engine redials its table first
    assert policy.get_timer() == 12.0
    steps = [policy.next_step(12.0)]
    while (step := policy.step_done(steps[-1], False, 12.5)) is not None:
        steps.append(step)
    assert steps == ["cache", "bridges", "bootstrap"]
    # Failed attempts back off with full jitter, and a round is 5 attempts.
    starts = [12.0]
    t = 12.5
    for _ in range(4):
        t = policy.get_timer()
        assert policy.next_step(t) == "cache"
        starts.append(t)
        for source in ("cache", "bridges", "bootstrap"):
            policy.step_done(source, False, t)
    assert all(b - a <= 8.0 for a, b in zip(starts, starts[1:]))
    assert policy.get_timer() - t >= 15.0  # the round is over: a pause
    # Success anywhere ends the attempt and resets the schedule.
    policy.next_step(policy.get_timer())
    assert policy.step_done("cache", False, 100.0) == "bridges"
    assert policy.step_done("bridges", True, 100.0) is None
    assert policy.recoveries == 1 and policy.attempts == 6
    policy.observe(100.0, connections=3, table=10)
    assert policy.next_step(200.0) is None


def test_a_small_routing_table_starts_recovery_when_configured():
    from yzcore.protocol.recovery import RecoveryConfig, RecoveryPolicy

    policy = RecoveryPolicy(RecoveryConfig(min_table=5, lost_grace=0.0), random.Random(1))
    policy.observe(0.0, connections=2, table=3)
    assert policy.next_step(0.0) == "cache"
