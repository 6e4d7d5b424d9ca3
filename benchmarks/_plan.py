"""The plan of a peer_compare run: every random choice, made once from (N, seed),
so both implementations face the same joins, lookups, keys and kills."""

from __future__ import annotations

import argparse
import hashlib
import random
from dataclasses import dataclass, field

from _measure import other

# -- the plan: every random choice, made once from (N, seed) -------------------


@dataclass
class Plan:
    """Every random decision of a run, identical for both implementations."""

    n: int
    seed: int
    k: int
    waves: list[list[int]] = field(default_factory=list)
    bootstrap: list[list[int]] = field(default_factory=list)
    probes: list[tuple[int, bytes]] = field(default_factory=list)
    lookups: list[tuple[int, bytes]] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    putters: list[int] = field(default_factory=list)
    getters: list[int] = field(default_factory=list)
    concurrent: list[tuple[int, int]] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    churn_getters: list[int] = field(default_factory=list)


def make_plan(args: argparse.Namespace) -> Plan:
    n, rng = args.nodes, random.Random(args.seed)
    plan = Plan(n=n, seed=args.seed, k=args.k)
    # Join waves: 1 seed node, then doubling up to --join-batch at a time.
    start, size = 1, 1
    plan.waves.append([0])
    while start < n:
        size = min(size * 2, args.join_batch)
        plan.waves.append(list(range(start, min(n, start + size))))
        start += size
    plan.bootstrap = [[] for _ in range(n)]
    joined: list[int] = []
    for wave in plan.waves:
        for i in wave:
            plan.bootstrap[i] = rng.sample(joined, min(args.bootstrap_peers, len(joined)))
        joined.extend(wave)
    plan.probes = [(a, rng.randbytes(32)) for a in rng.sample(range(n), min(args.probes, n))]
    plan.lookups = [(rng.randrange(n), rng.randbytes(32)) for _ in range(args.lookups)]
    plan.keys = [hashlib.sha256(f"key-{i}".encode()).digest() for i in range(args.values)]
    plan.values = [f"value-{i}-{rng.getrandbits(64):016x}" for i in range(args.values)]
    plan.putters = [rng.randrange(n) for _ in plan.keys]
    plan.getters = [other(rng, n, p) for p in plan.putters]
    plan.concurrent = [(rng.randrange(n), rng.randrange(len(plan.keys)))
                       for _ in range(args.concurrent)] if plan.keys else []
    kills = int(n * args.kill_fraction)
    plan.killed = sorted(rng.sample(range(n), kills))
    dead = set(plan.killed)
    survivors = [i for i in range(n) if i not in dead]
    plan.churn_getters = [rng.choice(survivors) for _ in plan.keys] if survivors else []
    return plan
