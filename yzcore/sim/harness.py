"""What every scenario shares: the verdict, running with samples, forming, measuring.

A scenario builds a :class:`~yzcore.sim.world.World` from a seed, runs it on
the virtual clock and returns a :class:`Verdict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from yzcore.sim.world import World

__all__ = ["Verdict", "conn_range", "crossing_lookups", "form", "run_for", "sample"]


@dataclass
class Verdict:
    """What a scenario found."""

    scenario: str
    criteria: str
    passed: bool
    figures: dict[str, Any]
    timeline: list[tuple[float, float, float]] = field(default_factory=list)  #: (t, healthy share, mean connections)
    digest: str = ""
    wall_s: float = 0.0


def sample(w: World, timeline: list[tuple[float, float, float]]) -> None:
    live = [i for i, ok in enumerate(w.alive) if ok]
    conns = sum(w.connections(i) for i in live) / len(live) if live else 0.0
    timeline.append((round(w.now, 1), round(w.health_share(), 3), round(conns, 2)))


def run_for(w: World, seconds: float, timeline: list, every: float = 5.0,
         until: Callable[[], bool] | None = None) -> float | None:
    """Run up to ``seconds``, sampling; the virtual time ``until`` first held, if given."""
    end = w.now + seconds
    while w.now < end - 1e-9:
        w.run(min(every, end - w.now))
        sample(w, timeline)
        if until is not None and until():
            return w.now
    return None


def form(w: World, timeline: list, spread: float = 10.0) -> None:
    n = len(w.engines)
    for i in range(n):
        w._at(w.now + w.rng.uniform(0.0, spread), lambda i=i: w.start(i))
    run_for(w, spread + 50.0, timeline)


def conn_range(w: World, seconds: int = 20) -> tuple[int, int]:
    """The range over live nodes of each one's median long-lived connections (B7.2).

    Sampled every second for ``seconds``: a node that is handed one
    connection too many sheds it within a second or two, and a single
    instant would catch that.
    """
    live = [i for i, ok in enumerate(w.alive) if ok]
    samples: dict[int, list[int]] = {i: [] for i in live}
    for _ in range(seconds):
        w.run(1.0)
        for i in live:
            samples[i].append(w.maintained(i))
    medians = [sorted(v)[len(v) // 2] for v in samples.values()]
    return min(medians), max(medians)


def crossing_lookups(w: World, left: list[int], right: list[int], count: int = 10) -> float:
    """The share of lookups from each side that find an id on the other side exactly."""
    found = 0
    for _ in range(count):
        for src, dst in ((left, right), (right, left)):
            a, b = w.rng.choice(src), w.rng.choice(dst)
            target = w.engines[b].info.id
            done = w.op(a, "find_node", target, limit=30.0)
            found += bool(done.result.nodes) and done.result.nodes[0].id == target  # type: ignore[union-attr]
    return found / (2 * count)
