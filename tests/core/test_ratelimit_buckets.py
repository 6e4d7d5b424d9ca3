"""Token-bucket rate limiter, on both twins: the per-peer and global buckets, the
audited emergency bypass, scaling with network size and the bound on remembered keys."""

from __future__ import annotations

import math
import random

import pytest

from yzcore.exceptions import InvalidArgument

FIND = "find_node"

UP = 1e-6  #: retry_after is rounded up by a microsecond (see the retry test)


def drain(rl, peer, now, n):
    """Make ``n`` allowed checks for ``peer`` at ``now``."""
    for _ in range(n):
        assert rl.check(peer, FIND, now).allowed


# --------------------------------------------------------------------------
# Per-peer bucket
# --------------------------------------------------------------------------


@pytest.mark.req("A3.5", "A2.2")
def test_burst_then_deny_with_exact_retry_after(ratelimit):
    rl = ratelimit.RateLimiter(rate=2.0, burst=4.0)
    for _ in range(4):
        assert rl.check(b"p", FIND, 0.0) is ratelimit.ALLOW
    d = rl.check(b"p", FIND, 0.0)
    assert d.allowed is False and d.bypassed is False
    assert d.scope == "peer"
    assert d.retry_after == 0.5 + UP  # one token at 2 tokens/s
    assert d.limit == 2.0 and d.burst == 4.0
    assert d.as_tuple() == (False, 0.5 + UP, "peer", False, 2.0, 4.0)
    # 0.125 s later a quarter token has come back: 0.75 tokens short at 2/s.
    d = rl.check(b"p", FIND, 0.125)
    assert d.retry_after == 0.375 + UP
    # A dearer request waits for its whole cost.
    d = rl.check(b"p", FIND, 0.125, cost=3.0)
    assert d.retry_after == (3.0 - 0.25) / 2.0 + UP
    assert (rl.allowed_count, rl.denied_count, rl.bypassed_count) == (4, 3, 0)


@pytest.mark.req("A3.5")
def test_refill_over_time(ratelimit):
    rl = ratelimit.RateLimiter(rate=4.0, burst=2.0)
    drain(rl, b"p", 0.0, 2)
    assert not rl.check(b"p", FIND, 0.0).allowed
    assert rl.check(b"p", FIND, 0.25).allowed  # exactly one token back
    assert not rl.check(b"p", FIND, 0.25).allowed
    # Refill stops at capacity: a long pause gives back burst, not more.
    drain(rl, b"p", 100.0, 2)
    d = rl.check(b"p", FIND, 100.0)
    assert not d.allowed and d.retry_after == 0.25 + UP


def test_keys_are_peer_and_op(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=1.0)
    assert rl.check(b"p", FIND, 0.0).allowed
    assert not rl.check(b"p", FIND, 0.0).allowed
    assert rl.check(b"p", "ping", 0.0).allowed
    assert rl.check("ab" * 32, FIND, 0.0).allowed
    assert len(rl) == 3


@pytest.mark.req("A3.1")
def test_legitimate_discovery_rate_always_passes(ratelimit):
    rl = ratelimit.RateLimiter(rate=8.0, burst=16.0, global_rate=64.0, global_burst=64.0)
    peers = [bytes([i]) * 32 for i in range(8)]
    now = 0.0
    for step in range(2000):
        # Each of 8 peers at its full 8/s; together exactly the global 64/s.
        assert rl.check(peers[step % 8], FIND, now) is ratelimit.ALLOW
        now += 1.0 / 64.0
    assert rl.denied_count == 0 and rl.allowed_count == 2000


@pytest.mark.req("A3.5")
def test_time_going_backwards_never_refills(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=2.0)
    drain(rl, b"p", 10.0, 2)
    d = rl.check(b"p", FIND, 5.0)  # clock went back: no refill, stamp kept at 10
    assert not d.allowed and d.retry_after == 1.0 + UP
    d = rl.check(b"p", FIND, 10.5)  # refills from 10, not from 5
    assert not d.allowed and d.retry_after == 0.5 + UP
    assert rl.check(b"p", FIND, 11.0).allowed


# --------------------------------------------------------------------------
# Global bucket
# --------------------------------------------------------------------------


@pytest.mark.req("A3.5", "A2.2")
def test_global_limit(ratelimit):
    rl = ratelimit.RateLimiter(rate=100.0, burst=100.0, global_rate=4.0, global_burst=3.0)
    for i in range(3):
        assert rl.check(bytes([i]), FIND, 0.0).allowed
    d = rl.check(b"new", FIND, 0.0)
    assert d.as_tuple() == (False, 0.25 + UP, "global", False, 4.0, 3.0)
    assert rl.check(b"new", FIND, 0.25).allowed


@pytest.mark.req("A3.5", "A2.2")
def test_both_short_reports_peer_and_longest_wait(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=1.0, global_rate=4.0, global_burst=1.0)
    assert rl.check(b"p", FIND, 0.0).allowed
    d = rl.check(b"p", FIND, 0.0)
    assert d.scope == "peer" and d.retry_after == 1.0 + UP and d.limit == 1.0
    # Peer short by 1 token at 1/s, global short by 1 token at 4/s: wait 1 s.
    rl2 = ratelimit.RateLimiter(rate=4.0, burst=1.0, global_rate=1.0, global_burst=1.0)
    assert rl2.check(b"p", FIND, 0.0).allowed
    d = rl2.check(b"p", FIND, 0.0)
    assert d.scope == "peer" and d.retry_after == 1.0 + UP  # the global wait is longer
    assert (d.limit, d.burst) == (4.0, 1.0)


@pytest.mark.req("A3.5")
def test_denied_request_consumes_nothing(ratelimit):
    # A global denial leaves the peer's tokens alone...
    rl = ratelimit.RateLimiter(rate=0.001, burst=2.0, global_rate=1.0, global_burst=1.0)
    assert rl.check(b"a", FIND, 0.0).allowed
    for _ in range(3):
        assert rl.check(b"a", FIND, 0.0).scope == "global"
    assert rl.check(b"a", FIND, 1.0).allowed  # a's second token is still there
    # ...and a peer denial leaves the global tokens alone.
    rl = ratelimit.RateLimiter(rate=0.001, burst=1.0, global_rate=0.001, global_burst=2.0)
    assert rl.check(b"a", FIND, 0.0).allowed
    for _ in range(3):
        assert rl.check(b"a", FIND, 0.0).scope == "peer"
    assert rl.check(b"b", FIND, 0.0).allowed


# --------------------------------------------------------------------------
# Emergency bypass (audited)
# --------------------------------------------------------------------------


@pytest.mark.req("A3.2")
def test_emergency_bypass_is_audited_and_runs_out(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=1.0, bypass_rate=0.5, bypass_burst=2.0)
    assert rl.check(b"p", FIND, 0.0, emergency=True) is ratelimit.ALLOW  # limits suffice
    assert rl.audit() == []
    d = rl.check(b"p", FIND, 0.0)
    assert not d.allowed
    d = rl.check(b"p", FIND, 0.0, emergency=True)
    assert d.as_tuple() == (True, 0.0, "peer", True, 0.0, 0.0)
    assert d.allowed and d.bypassed
    assert rl.check(b"q", FIND, 0.25, emergency=True) is ratelimit.ALLOW  # q is within limits
    assert rl.check(b"p", FIND, 0.25, cost=1.0, emergency=True).bypassed
    # Bypass budget exhausted: an ordinary denial with the ordinary wait.
    d = rl.check(b"p", FIND, 0.25, emergency=True)
    assert d.as_tuple() == (False, 0.75 + UP, "peer", False, 1.0, 1.0)
    assert rl.audit() == [(0.0, b"p", FIND), (0.25, b"p", FIND)]
    assert (rl.allowed_count, rl.denied_count, rl.bypassed_count) == (2, 2, 2)
    # The bypass budget refills at bypass_rate: 1 token after 2 s.
    assert rl.check(b"p", FIND, 2.25).allowed  # the peer token that came back
    assert rl.check(b"p", FIND, 2.25, emergency=True).bypassed
    assert not rl.check(b"p", FIND, 2.25, emergency=True).allowed


@pytest.mark.req("A3.2")
def test_bypass_of_global_limit_names_it(ratelimit):
    rl = ratelimit.RateLimiter(global_rate=1.0, global_burst=1.0)
    assert rl.check(b"a", FIND, 0.0).allowed
    d = rl.check(b"b", FIND, 0.0, emergency=True)
    assert d.bypassed and d.scope == "global"


@pytest.mark.req("A3.2")
def test_audit_log_is_bounded_oldest_first(ratelimit):
    rl = ratelimit.RateLimiter(
        rate=1.0, burst=1.0, bypass_rate=0.0, bypass_burst=10.0, audit_size=3
    )
    drain(rl, b"p", 0.0, 1)
    for i in range(5):
        assert rl.check(b"p", FIND, float(i) / 8, emergency=True).bypassed
    assert rl.audit() == [(0.25, b"p", FIND), (0.375, b"p", FIND), (0.5, b"p", FIND)]
    assert rl.bypassed_count == 5
    rl.audit().clear()  # a copy
    assert len(rl.audit()) == 3


@pytest.mark.req("A3.2")
def test_zero_bypass_burst_disables_bypass(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=1.0, bypass_rate=0.0, bypass_burst=0.0)
    drain(rl, b"p", 0.0, 1)
    d = rl.check(b"p", FIND, 0.0, emergency=True)
    assert not d.allowed and not d.bypassed
    assert rl.check(b"p", FIND, 10.0, emergency=True) is ratelimit.ALLOW
    assert rl.audit() == [] and rl.bypassed_count == 0


# --------------------------------------------------------------------------
# Scaling with network size
# --------------------------------------------------------------------------


@pytest.mark.req("A3.4")
@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 1.0),
        (1, 1.0),
        (2, 1.0),
        (64, 1.0),
        (4096, 2.0),
        (2**24, 4.0),
        (2**48, 8.0),
        (2**96, 8.0),
        (1000, math.log2(1000) / 6.0),
        (1e6, math.log2(1e6) / 6.0),
    ],
)
def test_scale_formula(ratelimit, n, expected):
    rl = ratelimit.RateLimiter()
    assert rl.scale == 1.0 and rl.network_size is None
    rl.set_network_size(n)
    assert rl.scale == expected
    assert rl.scale == min(8.0, max(1.0, math.log2(max(n, 2)) / math.log2(64)))
    assert rl.network_size == n


@pytest.mark.req("A3.4")
def test_scale_respects_reference_size_and_max_scale(ratelimit):
    rl = ratelimit.RateLimiter(reference_size=16, max_scale=3.0)
    rl.set_network_size(2**8)
    assert rl.scale == 2.0
    rl.set_network_size(2**20)
    assert rl.scale == 3.0
    rl = ratelimit.RateLimiter(max_scale=1.0)
    rl.set_network_size(2**40)
    assert rl.scale == 1.0


@pytest.mark.req("A3.4", "A2.2")
def test_scaling_raises_capacity_and_rate(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=2.0, global_rate=10.0, global_burst=20.0)
    drain(rl, b"old", 0.0, 2)
    rl.set_network_size(4096)  # scale 2
    assert (rl.rate, rl.burst, rl.global_rate, rl.global_burst) == (1.0, 2.0, 10.0, 20.0)
    # A new key starts full at the scaled capacity.
    drain(rl, b"new", 0.0, 4)
    d = rl.check(b"new", FIND, 0.0)
    assert d.as_tuple() == (False, 0.5 + UP, "peer", False, 2.0, 4.0)
    # Existing tokens are not rescaled, but refill at the scaled rate.
    d = rl.check(b"old", FIND, 0.0)
    assert d.as_tuple() == (False, 0.5 + UP, "peer", False, 2.0, 4.0)
    assert rl.check(b"old", FIND, 0.5).allowed
    # Global capacity and rate scaled too: 20 tokens - 6 used + 0.5 s * 20/s
    # - 1 used = 23 left of a capacity of 40.
    for i in range(23):
        assert rl.check(("peer", i), FIND, 0.5).allowed
    d = rl.check(b"more", FIND, 0.5)
    assert d.as_tuple() == (False, 0.05 + UP, "global", False, 20.0, 40.0)


@pytest.mark.req("A3.4")
def test_scaling_down_clamps_tokens_to_new_capacity(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=2.0)
    rl.set_network_size(4096)
    assert rl.check(b"p", FIND, 0.0).allowed  # bucket created with 4 tokens, 3 left
    rl.set_network_size(10)
    assert rl.scale == 1.0
    drain(rl, b"p", 0.0, 2)  # clamped to 2
    d = rl.check(b"p", FIND, 0.0)
    assert d.as_tuple() == (False, 1.0 + UP, "peer", False, 1.0, 2.0)


@pytest.mark.req("A3.4")
def test_scaling_down_clamps_global_tokens(ratelimit):
    rl = ratelimit.RateLimiter(rate=100.0, burst=100.0, global_rate=1.0, global_burst=2.0)
    rl.set_network_size(4096)
    assert rl.check(b"a", FIND, 0.0).allowed  # global bucket starts at 4, 3 left
    rl.set_network_size(0)
    assert rl.check(b"b", FIND, 0.0).allowed  # clamped to 2
    assert rl.check(b"c", FIND, 0.0).allowed
    d = rl.check(b"d", FIND, 0.0)
    assert d.as_tuple() == (False, 1.0 + UP, "global", False, 1.0, 2.0)


@pytest.mark.req("A3.4")
def test_cost_valid_only_at_some_scale(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=2.0)
    with pytest.raises(InvalidArgument, match="never pass"):
        rl.check(b"p", FIND, 0.0, cost=3.0)
    rl.set_network_size(4096)
    assert rl.check(b"p", FIND, 0.0, cost=3.0).allowed


# --------------------------------------------------------------------------
# Memory bound
# --------------------------------------------------------------------------


def test_expire_drops_only_full_buckets(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=2.0, global_burst=1000.0)
    drain(rl, b"a", 0.0, 2)  # empty
    drain(rl, b"b", 0.0, 1)  # half
    assert rl.check(b"c", FIND, 0.0, cost=2.0).allowed  # empty
    assert len(rl) == 3
    assert rl.expire(0.0) == 0
    assert rl.expire(1.0) == 1  # b is full again at t=1
    assert len(rl) == 2
    assert rl.expire(0.5) == 0  # earlier than the stamps: no refill assumed
    assert rl.expire(2.0) == 2
    assert len(rl) == 0
    assert rl.expire(3.0) == 0


def test_expire_loses_nothing(ratelimit):
    kept = ratelimit.RateLimiter(rate=2.0, burst=3.0, global_rate=1e6, global_burst=1e6)
    pruned = ratelimit.RateLimiter(rate=2.0, burst=3.0, global_rate=1e6, global_burst=1e6)
    peers = [bytes([i]) for i in range(5)]
    now = 0.0
    for step in range(400):
        peer = peers[(step * 7) % 5 if step % 3 else step % 2]
        assert kept.check(peer, FIND, now) == pruned.check(peer, FIND, now)
        if step % 11 == 0:
            pruned.expire(now)
        now += 0.125 if step % 4 else 1.5
    assert len(pruned) <= len(kept)


def test_eviction_order_when_nothing_expires(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=2.0, global_burst=1000.0, max_keys=4)
    for p in (b"a", b"b", b"c", b"d"):
        drain(rl, p, 0.0, 2)
    assert len(rl) == 4
    assert rl.check(b"e", FIND, 0.0).allowed  # makes room: oldest a, b forgiven
    assert len(rl) == 3
    assert rl.check(b"a", FIND, 0.0).allowed  # forgiven: starts full again
    assert not rl.check(b"c", FIND, 0.0).allowed  # c still remembered


def test_eviction_prefers_full_buckets(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=2.0, global_burst=1000.0, max_keys=4)
    drain(rl, b"a", 0.0, 2)
    for p in (b"b", b"c", b"d"):
        drain(rl, p, 1.0, 1)
    drain(rl, b"a", 1.5, 1)  # a: 0 + 1.5 refilled - 1 = 0.5 tokens
    # At t=2 b, c, d are full again (1 + 1) but a has only 1 token.
    assert rl.check(b"e", FIND, 2.0).allowed
    assert len(rl) == 2  # b, c, d expired; a kept; e added
    assert not rl.check(b"a", FIND, 2.0, cost=2.0).allowed


@pytest.mark.parametrize("global_burst", [400.0, 1e9])
def test_flood_of_distinct_peers_stays_bounded(ratelimit, global_burst):
    rl = ratelimit.RateLimiter(global_rate=200.0, global_burst=global_burst, max_keys=1000)
    most = 0
    for i in range(100_000):
        rl.check(i.to_bytes(32, "big"), FIND, i * 1e-4)
        most = max(most, len(rl))
    assert most <= 1000
    assert len(rl) <= 1000
    assert rl.allowed_count + rl.denied_count == 100_000


def test_max_keys_one(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=1.0, max_keys=1)
    for i in range(10):
        assert rl.check(i, FIND, 0.0).allowed
        assert len(rl) == 1


@pytest.mark.req("A3.5")
def test_a_request_made_exactly_retry_after_later_passes(ratelimit):
    # retry_after was exact, and now + retry_after lost a little to rounding: a
    # caller on a virtual clock that waited exactly that long was refused again
    # (for 2e-11 s), over half the time at a clock near 5e5 s.
    rng = random.Random(3)
    stuck = 0
    for _ in range(2000):
        rl = ratelimit.RateLimiter(rate=rng.choice((0.7, 3.0, 10.0)), burst=2.0)
        now = rng.uniform(1e3, 1e6)
        while rl.check(b"p", "find_node", now).allowed:
            pass
        d = rl.check(b"p", "find_node", now)
        stuck += not rl.check(b"p", "find_node", now + d.retry_after).allowed
    assert stuck == 0
