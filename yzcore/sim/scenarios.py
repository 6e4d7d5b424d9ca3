"""Simulator scenarios, each named for the criterion it proves and judged by its number.

Every scenario builds a :class:`~yzcore.sim.world.World` from a seed, runs it
on the virtual clock and returns a :class:`Verdict`: passed or not, the
figures behind it, a health timeline and the trace digest (the same seed
gives the same digest). ``yz sim --scenario NAME`` prints them.
"""

from __future__ import annotations

import gc
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from yzcore.protocol.engine import EngineConfig
from yzcore.protocol.recovery import RecoveryConfig
from yzcore.sim import faults
from yzcore.sim.harness import Verdict, conn_range, crossing_lookups, form, run_for, sample
from yzcore.sim.world import World

__all__ = ["SCENARIOS", "Verdict", "run"]


def formation(n: int, seed: int) -> Verdict:
    """A1.1, B7.2: every new node has 3 peers within 30 s; the network settles at 3–8 each."""
    w = World(n, seed, bridges=min(2, n // 10))
    timeline: list = []
    started: dict[int, float] = {}
    reached: dict[int, float] = {}
    for i in range(n):
        at = w.rng.uniform(0.0, 10.0)
        started[i] = at
        w._at(at, lambda i=i: w.start(i))
    while w.now < 70.0:
        w.run(1.0)
        for i in range(n):  # long-lived ones: a lookup's passing connections do not count
            if i not in reached and w.alive[i] and w.maintained(i) >= min(3, n - 1):
                reached[i] = w.now - started[i]
        if int(w.now) % 5 == 0:
            sample(w, timeline)
    worst = max(reached.values()) if len(reached) == n else float("inf")
    low, high = conn_range(w)
    passed = worst <= 30.0 and low >= min(3, n - 1) and high <= 8 and w.health_share() == 1.0
    return Verdict("formation", "A1.1 B7.2", passed,
                   {"nodes": n, "slowest_to_3_peers_s": round(worst, 1),
                    "connections": f"{low}-{high}", "healthy": w.health_share()}, timeline, w.digest)


def lost_all(n: int, seed: int) -> Verdict:
    """A1.3, A7.1: a node that lost every connection, and everyone it knew, is back within 60 s.

    Every other node crashes; a new generation starts that joins among
    itself (it never asks for introductions, so nobody dials the victim).
    The victim must find it on its own: its cache and table are dead, so its
    recovery goes on to the bootstrap server (A7.1).
    """
    w = World(2 * n, seed, bridges=0)
    timeline: list = []
    old, new = list(range(n)), list(range(n, 2 * n))
    for i in old:
        w._at(w.rng.uniform(0.0, 10.0), lambda i=i: w.start(i))
    run_for(w, 60.0, timeline)
    victim = old[-1]
    for i in old[:-1]:
        w.crash(i)
    lost = w.now
    w.start_among(new)
    back = run_for(w, 120.0, timeline, every=1.0, until=lambda: w.maintained(victim) >= 3)
    took = (back - lost) if back is not None else float("inf")
    source = w.agents[victim].recovered_by
    return Verdict("lost_all", "A1.3 A7.1", took <= 60.0 and source == "bootstrap",
                   {"nodes": n, "reconnected_s": round(took, 1), "recovered_by": source},
                   timeline, w.digest)


def nat(n: int, seed: int) -> Verdict:
    """A1.5: nodes that accept no inbound connections are reached through bridges.

    A fifth of the nodes are behind NAT; lookups from public nodes for the
    NAT nodes' ids find them, and they are as healthy as everyone else.
    """
    w = World(n, seed, bridges=2, nat=n // 5)
    timeline: list = []
    form(w, timeline)
    behind = [i for i in range(n) if w.nat[i]]
    public = [i for i in range(n) if not w.nat[i] and i not in w.bridges]
    found = 0
    for i in behind:
        target = w.engines[i].info.id
        done = w.op(w.rng.choice(public), "find_node", target, limit=30.0)
        found += bool(done.result.nodes) and done.result.nodes[0].id == target  # type: ignore[union-attr]
    relayed = sum(1 for i in behind if w.adj[i] & w.bridges)
    healthy = sum(1 for i in behind if w.healthy(i))
    passed = found == relayed == healthy == len(behind)
    return Verdict("nat", "A1.5", passed,
                   {"nodes": n, "behind_nat": len(behind), "found_by_lookups": found,
                    "relayed_by_a_bridge": relayed, "healthy": healthy}, timeline, w.digest)


def dead_peer(n: int, seed: int) -> Verdict:
    """A4.2: a dead node leaves every peer's active connections within 5 s: one whose
    process crashed (its host resets the connections) and one whose host vanished
    (nothing is closed: each peer's kernel gives up on it)."""
    w = World(n, seed, bridges=min(2, n // 10))
    timeline: list = []
    form(w, timeline)
    figures: dict[str, Any] = {"nodes": n}
    for key, victim, die in (("removed_after_s", n // 2, w.crash),
                             ("host_gone_removed_after_s", (n // 2 + 1) % n, w.vanish)):
        victim_id = w.engines[victim].info.id
        die(victim)
        died = w.now
        gone = run_for(w, 30.0, timeline, every=0.1, until=lambda v=victim_id: not any(
            v in w.engines[i].connected() for i, ok in enumerate(w.alive) if ok))
        figures[key] = round(gone - died, 2) if gone is not None else float("inf")
    passed = figures["removed_after_s"] <= 5.0 and figures["host_gone_removed_after_s"] <= 5.0
    return Verdict("dead_peer", "A4.2", passed, figures, timeline, w.digest)


def crisis(n: int, seed: int) -> Verdict:
    """B7.1, B7.2: from 1 healthy node in n back to >= 80% healthy within 5 minutes.

    The crisis the original network died of: every node but one restarts at
    once (losing its routing table, keeping its peer cache) while the
    bootstrap server is down for the first minute.
    """
    w = World(n, seed, bridges=min(2, n // 10))
    timeline: list = []
    form(w, timeline)
    survivor = 0
    w.bootstrap_up = False
    for i in range(n):
        if i != survivor:
            w.crash(i)
    for i in range(n):
        if i != survivor:
            w._at(w.now + w.rng.uniform(0.0, 5.0), lambda i=i: w.restart(i))
    start = w.now
    low_point = w.health_share()  # the survivor alone
    w._at(start + 60.0, lambda: setattr(w, "bootstrap_up", True))
    back = run_for(w, 300.0, timeline, every=5.0, until=lambda: w.health_share() >= 0.8)
    took = (back - start) if back is not None else float("inf")
    run_for(w, 60.0, timeline)  # settled: connections within target
    sources: dict[str, int] = {}
    for i in range(n):
        if i != survivor:
            source = w.agents[i].recovered_by or "joined by others"
            sources[source] = sources.get(source, 0) + 1
    low, high = conn_range(w)
    passed = took <= 300.0 and low >= 3 and high <= 8
    return Verdict("crisis", "B7.1 B7.2", passed,
                   {"nodes": n, "healthy_nodes_at_start": round(low_point * n),
                    "to_80_percent_s": round(took, 1), "healthy_end": round(w.health_share(), 3),
                    "connections_end": f"{low}-{high}", "recovered_by": sources},
                   timeline, w.digest)


def partition(n: int, seed: int, *, split: float = 120.0, config: EngineConfig | None = None) -> Verdict:
    """A7.5: a 50/50 partition for 2 minutes (``split``), then healed: one network again
    within 60 s.

    "One network" is shown by lookups: nodes on each side look up ids on the
    other side, and every lookup finds its target, exactly.
    """
    w = World(n, seed, bridges=0, config=config)
    timeline: list = []
    form(w, timeline)
    nodes = list(range(n))
    w.rng.shuffle(nodes)
    left, right = sorted(nodes[: n // 2]), sorted(nodes[n // 2:])
    w.partition([left, right])
    run_for(w, split, timeline)
    split_ok = crossing_lookups(w, left, right) == 0.0  # really apart: nothing found across
    w.heal()
    healed = w.now
    merged = None
    while w.now - healed < 120.0:
        run_for(w, 5.0, timeline)
        if crossing_lookups(w, left, right) == 1.0:
            merged = w.now - healed
            break
    took = merged if merged is not None else float("inf")
    return Verdict("partition", "A7.5", split_ok and took <= 60.0,
                   {"nodes": n, "apart_during_partition": split_ok,
                    "one_network_after_heal_s": round(took, 1)}, timeline, w.digest)


def mass_restart(n: int, seed: int) -> Verdict:
    """A7.4: n fresh nodes restarting at once reach the bootstrap server at a peak rate
    at most 1/5 of the same restart without start jitter, and form one network again."""
    figures: dict[str, Any] = {"nodes": n}
    timeline: list = []
    digests = []
    for jitter in (0.0, 10.0):
        w = World(n, seed, bridges=0, recovery=RecoveryConfig(start_jitter=jitter))
        for i in range(n):  # a running network (formed enough: this is about the restart)
            w._at(w.rng.uniform(0.0, 10.0), lambda i=i, w=w: w.start(i))
        w.run(30.0)
        for i in range(n):
            w.crash(i)
        w.run(1.0)
        restart = w.now
        w.bootstrap_hits.clear()
        for i in range(n):  # fresh containers: no peer cache survives
            w.agents[i].cache, w.agents[i].bridges = [], []
            w.restart(i)
        back = run_for(w, 120.0, timeline if jitter else [], every=5.0,
                    until=lambda w=w: w.health_share() >= 0.8)
        per_second: dict[int, int] = {}
        for t in w.bootstrap_hits:
            per_second[int(t - restart)] = per_second.get(int(t - restart), 0) + 1
        key = "jitter" if jitter else "no_jitter"
        figures[f"peak_per_s_{key}"] = max(per_second.values(), default=0)
        figures[f"to_80_percent_s_{key}"] = round(back - restart, 1) if back else None
        digests.append(w.digest)
    ratio = figures["peak_per_s_jitter"] / max(1, figures["peak_per_s_no_jitter"])
    figures["peak_ratio"] = round(ratio, 3)
    passed = ratio <= 0.2 and all(figures[f"to_80_percent_s_{k}"] is not None
                                  for k in ("jitter", "no_jitter"))
    return Verdict("mass_restart", "A7.4", passed, figures, timeline,
                   hashlib.sha256("".join(digests).encode()).hexdigest()[:16])


SCENARIOS: dict[str, Callable[[int, int], Verdict]] = {
    "formation": formation, "lost_all": lost_all, "dead_peer": dead_peer, "crisis": crisis,
    "partition": partition, "mass_restart": mass_restart, "nat": nat,
    "backoff": faults.backoff, "stale": faults.stale, "failover": faults.failover,
    "stampede": faults.stampede, "lookups": faults.lookups,
}


# The cyclic collector's thresholds during a run. A world of n nodes holds a few
# hundred objects a node, all of them alive to the end, and allocates millions of
# short-lived ones (messages, events) that reference counting frees: at the default
# thresholds the collector took 24% of a 1,000-node crisis, mostly rescanning the
# world, and more at 10,000 (each full pass scans everything). Nothing in the
# simulator makes cycles of note: peak memory is the same either way.
RUN_GC_THRESHOLDS = (100_000, 50, 100)


@contextmanager
def _batch_gc() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(*RUN_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def run(name: str, n: int, seed: int) -> Verdict:
    """Run scenario ``name`` with ``n`` nodes from ``seed``, timing it."""
    started = time.perf_counter()
    with _batch_gc():
        verdict = SCENARIOS[name](n, seed)
    verdict.wall_s = round(time.perf_counter() - started, 2)
    return verdict
