"""Workloads shared by the speed-ratio script and the pytest-benchmark suite.

Each builder returns a zero-argument callable that runs the workload once on
the given implementation module. The same seed gives the same operations for
both implementations, so their times are directly comparable.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from types import ModuleType

__all__ = ["closest_workload", "routing_workload", "ratelimit_workload", "WORKLOADS"]


def closest_workload(xor: ModuleType, seed: int = 1, n: int = 10_000, k: int = 20) -> Callable[[], object]:
    """Select the k closest of ``n`` random ids to a random target."""
    rng = random.Random(seed)
    ids = [rng.randbytes(32) for _ in range(n)]
    targets = [rng.randbytes(32) for _ in range(8)]
    closest = xor.closest

    def run() -> object:
        return [closest(t, ids, k) for t in targets]

    return run


def routing_ops(seed: int = 2, n_ops: int = 100_000, pool: int = 2_000) -> list[tuple[int, bytes, str]]:
    """A node hearing about ``pool`` peers: 50% add, 25% seen, 15% fail, 10% remove."""
    rng = random.Random(seed)
    peers = [rng.randbytes(32) for _ in range(pool)]
    # Addresses from the benchmarking range 198.18.0.0/15, in 300 /24s, so the
    # IP-diversity limit is exercised; they are only strings here.
    ips = {p: f"198.{18 + rng.randrange(2)}.{rng.randrange(150)}.{rng.randrange(1, 255)}" for p in peers}
    ops = []
    for _ in range(n_ops):
        x = rng.random()
        peer = rng.choice(peers)
        op = 0 if x < 0.50 else 1 if x < 0.75 else 2 if x < 0.90 else 3
        ops.append((op, peer, ips[peer]))
    return ops


def routing_workload(kbucket: ModuleType, seed: int = 2) -> Callable[[], object]:
    """100,000 mixed add/seen/fail/remove operations on a fresh table."""
    ops = routing_ops(seed)
    self_id = random.Random(seed + 1).randbytes(32)

    def run() -> object:
        table = kbucket.RoutingTable(self_id)
        add, seen, fail, remove = table.add, table.seen, table.fail, table.remove
        now = 0.0
        for op, peer, ip in ops:
            now += 0.001
            if op == 0:
                add(peer, "ws://peer", now, ip)
            elif op == 1:
                seen(peer, now)
            elif op == 2:
                fail(peer, now)
            else:
                remove(peer)
        return table

    return run


def ratelimit_workload(ratelimit: ModuleType, seed: int = 3, n_checks: int = 100_000) -> Callable[[], object]:
    """find_node checks from 1,000 peers at 5,000 requests/s; most pass, some are denied."""
    rng = random.Random(seed)
    peers = [rng.randbytes(32) for _ in range(1000)]
    calls = [(rng.choice(peers), i * 0.0002) for i in range(n_checks)]

    def run() -> object:
        limiter = ratelimit.RateLimiter(global_rate=4000.0, global_burst=8000.0)
        check = limiter.check
        allowed = 0
        for peer, now in calls:
            if check(peer, "find_node", now).allowed:
                allowed += 1
        return allowed

    return run


#: name -> (module pair name, builder, the ratio the compiled module must reach)
WORKLOADS: dict[str, tuple[str, Callable[[ModuleType], Callable[[], object]], float]] = {
    "closest_k20_of_10000": ("_xor", closest_workload, 10.0),
    "routing_100000_mixed_ops": ("_kbucket", routing_workload, 3.0),
    "ratelimit_100000_checks": ("_ratelimit", ratelimit_workload, 3.0),
}
