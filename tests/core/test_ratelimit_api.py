"""Token-bucket rate limiter's interface, on both twins: the Decision value, the
read-only properties, bad input refused with the right error, and the compiled module
against its pure twin (same API, same errors, the same decisions on random call sequences)."""

from __future__ import annotations

import math
import pickle
import random
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import impl_pair
from yzcore.exceptions import InvalidArgument, InvalidConfig

FIND = "find_node"

# --------------------------------------------------------------------------
# Decision
# --------------------------------------------------------------------------


@pytest.mark.req("A2.2")
def test_decision_is_read_only_value(ratelimit):
    Decision = ratelimit.Decision
    d = Decision(False, 1.5, "peer", False, 10.0, 20.0)
    assert d == Decision(False, 1.5, "peer", False, 10.0, 20.0)
    assert d != Decision(False, 1.5, "global", False, 10.0, 20.0)
    assert hash(d) == hash(Decision(False, 1.5, "peer", False, 10.0, 20.0))
    assert d.as_tuple() == (False, 1.5, "peer", False, 10.0, 20.0)
    assert not d and ratelimit.ALLOW
    assert repr(d) == (
        "Decision(allowed=False, retry_after=1.5, scope='peer', bypassed=False, "
        "limit=10.0, burst=20.0)"
    )
    assert ratelimit.ALLOW.as_tuple() == (True, 0.0, None, False, 0.0, 0.0)
    for name in ("allowed", "retry_after", "scope", "bypassed", "limit", "burst"):
        with pytest.raises(AttributeError):
            setattr(d, name, None)
    assert not hasattr(d, "__dict__")
    assert pickle.loads(pickle.dumps(d)) == d
    assert d != d.as_tuple()


def test_limiter_properties_are_read_only(ratelimit):
    rl = ratelimit.RateLimiter(1.0, 2.0, 3.0, 4.0, max_keys=5)
    assert (rl.rate, rl.burst, rl.global_rate, rl.global_burst, rl.max_keys) == (
        1.0,
        2.0,
        3.0,
        4.0,
        5,
    )
    assert (rl.bypass_rate, rl.bypass_burst, rl.reference_size, rl.max_scale, rl.audit_size) == (
        0.1,
        5.0,
        64.0,
        8.0,
        64,
    )
    for name in ("rate", "burst", "global_rate", "global_burst", "scale", "max_keys"):
        with pytest.raises(AttributeError):
            setattr(rl, name, 1.0)
    assert repr(rl) == (
        "RateLimiter(rate=1.0, burst=2.0, global_rate=3.0, global_burst=4.0, scale=1.0, keys=0)"
    )


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": math.nan},
        {"rate": 0.0},
        {"rate": -1.0},
        {"rate": math.inf},
        {"rate": "10"},
        {"rate": True},
        {"burst": -2.0},
        {"burst": math.nan},
        {"global_rate": math.inf},
        {"global_burst": 0},
        {"bypass_rate": -0.1},
        {"bypass_burst": math.nan},
        {"bypass_burst": math.inf},
        {"max_keys": 0},
        {"max_keys": 1.5},
        {"max_keys": True},
        {"max_keys": 2**70},
        {"reference_size": 1},
        {"reference_size": math.nan},
        {"max_scale": 0.5},
        {"max_scale": math.inf},
        {"audit_size": 0},
        {"audit_size": 2.0},
    ],
)
def test_bad_config_raises_invalid_config(ratelimit, kwargs):
    with pytest.raises(InvalidConfig) as info:
        ratelimit.RateLimiter(**kwargs)
    assert isinstance(info.value, ValueError)
    assert next(iter(kwargs)) in str(info.value)


def test_zero_bypass_is_valid_config_and_lets_nothing_past_the_limit(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=1.0, bypass_rate=0, bypass_burst=0)
    assert rl.check(b"a", FIND, 0.0).allowed
    refused = rl.check(b"a", FIND, 0.0, emergency=True)  # no budget to bypass with
    assert not refused.allowed and not refused.bypassed and rl.audit() == []


@pytest.mark.parametrize(
    ("now", "cost", "match"),
    [
        (math.nan, 1.0, "now"),
        (math.inf, 1.0, "now"),
        (-math.inf, 1.0, "now"),
        (0.0, 0.0, "cost"),
        (0.0, -1.0, "cost"),
        (0.0, math.nan, "cost"),
        (0.0, 21.0, "never pass"),
        (0.0, math.inf, "never pass"),
    ],
)
def test_bad_check_arguments(ratelimit, now, cost, match):
    rl = ratelimit.RateLimiter()
    with pytest.raises(InvalidArgument, match=match):
        rl.check(b"p", FIND, now, cost=cost)
    assert len(rl) == 0 and rl.allowed_count == rl.denied_count == 0


def test_cost_above_global_capacity(ratelimit):
    rl = ratelimit.RateLimiter(rate=1.0, burst=10.0, global_burst=5.0)
    with pytest.raises(InvalidArgument, match="global bucket capacity"):
        rl.check(b"p", FIND, 0.0, cost=6.0)


def test_bad_expire_and_network_size(ratelimit):
    rl = ratelimit.RateLimiter()
    with pytest.raises(InvalidArgument):
        rl.expire(math.nan)
    for bad in (-1, -0.5, math.nan, math.inf, "100", None):
        with pytest.raises(InvalidArgument):
            rl.set_network_size(bad)
    assert rl.scale == 1.0
    with pytest.raises(TypeError):
        rl.check(b"p", FIND, "0")
    with pytest.raises(TypeError):
        rl.check([1], FIND, 0.0)  # unhashable peer


# --------------------------------------------------------------------------
# Compiled vs pure
# --------------------------------------------------------------------------


def test_same_public_api():
    c, py = impl_pair("_ratelimit")
    assert c.__all__ == py.__all__
    for name in ("RateLimiter", "Decision"):
        public_c = {n for n in dir(getattr(c, name)) if not n.startswith("_")}
        public_py = {n for n in dir(getattr(py, name)) if not n.startswith("_")}
        assert public_c == public_py, name


@pytest.mark.req("A2.2")
def test_decisions_compare_across_implementations():
    c, py = impl_pair("_ratelimit")
    args = (False, 0.25, "global", False, 4.0, 3.0)
    dc, dp = c.Decision(*args), py.Decision(*args)
    assert dc == dp and dp == dc
    assert (dc != dp) is False and (dp != dc) is False
    assert hash(dc) == hash(dp) and repr(dc) == repr(dp)
    assert c.ALLOW == py.ALLOW
    assert dc != py.ALLOW and py.ALLOW != dc


def test_error_messages_match():
    c, py = impl_pair("_ratelimit")
    for kwargs in ({"rate": math.nan}, {"max_keys": 0}, {"reference_size": 1.5}):
        msgs = []
        for mod in (c, py):
            with pytest.raises(InvalidConfig) as info:
                mod.RateLimiter(**kwargs)
            msgs.append(str(info.value))
        assert msgs[0] == msgs[1]
    for call in (
        lambda rl: rl.check(b"p", FIND, math.nan),
        lambda rl: rl.check(b"p", FIND, 0.0, cost=0.0),
        lambda rl: rl.check(b"p", FIND, 0.0, cost=1e9),
        lambda rl: rl.set_network_size(-3),
        lambda rl: rl.expire(math.inf),
    ):
        msgs = []
        for mod in (c, py):
            with pytest.raises(InvalidArgument) as info:
                call(mod.RateLimiter())
            msgs.append(str(info.value))
        assert msgs[0] == msgs[1]


_PEERS = [bytes([i]) * 32 for i in range(6)] + ["ab" * 32, "cd" * 32, 7]


@st.composite
def _dt(draw):
    """A clock step: mostly forward and small, sometimes zero, sometimes back."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return 0.0
    if kind == 1:
        return draw(st.floats(min_value=-1.0, max_value=0.0))
    if kind == 2:
        return draw(st.floats(min_value=0.0, max_value=3.0))
    if kind == 3:
        return draw(st.sampled_from([0.125, 1.0 / 3.0, 0.1]))
    return draw(st.floats(min_value=0.0, max_value=0.1))


@st.composite
def _op(draw):
    """One call: check (mostly), set_network_size or expire."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        n = draw(
            st.one_of(
                st.integers(0, 200),  # scale 1 (for most reference sizes): scales down
                st.integers(0, 2**70),
                st.floats(min_value=0.0, max_value=1e12),
                st.sampled_from([-1, math.nan]),
            )
        )
        return ("size", n)
    if kind == 1:
        return ("expire", draw(_dt()))
    cost_kind = draw(st.integers(0, 9))
    if cost_kind < 6:
        cost = 1.0
    elif cost_kind < 9:
        cost = draw(st.floats(min_value=0.05, max_value=2.0))
    else:
        cost = draw(st.sampled_from([0.0, 50.0, math.inf]))  # always refused
    return (
        "check",
        draw(st.one_of(st.integers(0, 1), st.integers(0, len(_PEERS) - 1))),  # 0, 1 are hot
        draw(st.sampled_from(["find_node", "find_node", "ping"])),
        draw(_dt()),
        cost,
        draw(st.integers(0, 3)) == 0,
    )


_OPS = _op()


@st.composite
def _config(draw):
    """Limiter settings; the global limits are a few peers' worth, so both bind."""
    rate = draw(st.floats(min_value=0.01, max_value=10.0))
    burst = draw(st.floats(min_value=2.0, max_value=8.0))
    return {
        "rate": rate,
        "burst": burst,
        "global_rate": rate * draw(st.floats(min_value=0.5, max_value=20.0)),
        "global_burst": burst * draw(st.floats(min_value=1.0, max_value=6.0)),
        "bypass_rate": draw(st.one_of(st.just(0.0), st.floats(min_value=0.01, max_value=3.0))),
        "bypass_burst": draw(st.one_of(st.just(0.0), st.floats(min_value=0.5, max_value=5.0))),
        "max_keys": draw(st.integers(1, 8)),
        "reference_size": draw(st.one_of(st.sampled_from([2, 16, 64]), st.floats(2.0, 1e4))),
        "max_scale": draw(st.one_of(st.just(1.0), st.floats(min_value=1.0, max_value=10.0))),
        "audit_size": draw(st.integers(1, 4)),
    }


_CONFIG = _config()


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as exc:  # noqa: BLE001 -- compare the error, not just that there was one
        return ("err", type(exc).__name__, str(exc))


def _drive(c, py, config, ops, start):
    """Run ``ops`` on a compiled and a pure limiter; assert they never differ."""
    rc, rp = c.RateLimiter(**config), py.RateLimiter(**config)
    now = start
    for op in ops:
        if op[0] == "check":
            _, pi, name, dt, cost, emergency = op
            now += dt
            args = (_PEERS[pi], name, now, cost, emergency)
            oc = _outcome(partial(rc.check, *args))
            op_ = _outcome(partial(rp.check, *args))
            if oc[0] == "ok":
                assert op_[0] == "ok", (oc, op_)
                assert oc[1] == op_[1]
                assert repr(oc[1]) == repr(op_[1])  # bit-identical floats
                assert (oc[1] is c.ALLOW) == (op_[1] is py.ALLOW)
            else:
                assert oc == op_
        elif op[0] == "size":
            assert _outcome(partial(rc.set_network_size, op[1])) == _outcome(
                partial(rp.set_network_size, op[1])
            )
            assert repr(rc.scale) == repr(rp.scale)
        else:
            now += op[1]
            assert rc.expire(now) == rp.expire(now)
        assert len(rc) == len(rp) <= config["max_keys"]
    assert rc.audit() == rp.audit()
    assert [repr(e[0]) for e in rc.audit()] == [repr(e[0]) for e in rp.audit()]
    assert (rc.allowed_count, rc.denied_count, rc.bypassed_count) == (
        rp.allowed_count,
        rp.denied_count,
        rp.bypassed_count,
    )
    assert repr(rc) == repr(rp)


@settings(max_examples=200)
@given(config=_CONFIG, ops=st.lists(_OPS, min_size=20, max_size=100), start=st.floats(-1e3, 1e6))
def test_differential_random_sequences(config, ops, start):
    c, py = impl_pair("_ratelimit")
    _drive(c, py, config, ops, start)


@pytest.mark.parametrize("seed", range(20))
def test_differential_long_seeded_runs(seed):
    """Long call sequences from a seeded generator: deep states hypothesis rarely reaches."""
    c, py = impl_pair("_ratelimit")
    rng = random.Random(seed)
    rate, burst = rng.uniform(0.01, 10.0), rng.uniform(2.0, 8.0)
    config = {
        "rate": rate,
        "burst": burst,
        "global_rate": rate * rng.uniform(0.5, 20.0),
        "global_burst": burst * rng.uniform(1.0, 6.0),
        "bypass_rate": rng.choice([0.0, rng.uniform(0.01, 3.0)]),
        "bypass_burst": rng.choice([0.0, rng.uniform(0.5, 5.0)]),
        "max_keys": rng.randint(1, 8),
        "reference_size": rng.choice([2, 16, 64, rng.uniform(2.0, 1e4)]),
        "max_scale": rng.choice([1.0, rng.uniform(1.0, 10.0)]),
        "audit_size": rng.randint(1, 4),
    }

    def dt():
        kind = rng.randrange(10)
        if kind == 0:
            return 0.0
        if kind == 1:
            return -rng.random()
        if kind == 2:
            return rng.uniform(0.0, 3.0)
        return rng.uniform(0.0, 0.1)

    ops = []
    for _ in range(2000):
        kind = rng.randrange(20)
        if kind == 0:
            ops.append(("size", rng.choice([rng.randrange(200), rng.randrange(2**40), -1])))
        elif kind == 1:
            ops.append(("expire", dt()))
        else:
            cost = 1.0 if rng.random() < 0.7 else rng.uniform(0.05, 2.0)
            ops.append(
                (
                    "check",
                    rng.randrange(2 if rng.random() < 0.6 else len(_PEERS)),  # 0, 1 are hot
                    rng.choice(["find_node", "ping"]),
                    dt(),
                    cost,
                    rng.random() < 0.25,
                )
            )
    _drive(c, py, config, ops, rng.uniform(-1e3, 1e6))
