"""When and how a node gets back into the network: sans-I/O (A1.3, A7.1–A7.4).

The runtime and the simulator both drive :class:`RecoveryPolicy`: they tell
it how connected the node is (:meth:`~RecoveryPolicy.observe`), ask it what
to try (:meth:`~RecoveryPolicy.next_step`), carry the step out their own
way, and report whether it worked (:meth:`~RecoveryPolicy.step_done`).

A node recovers when it has had no connection for ``lost_grace`` seconds
(the engine redials its routing table first, which is usually enough), or
when its routing table holds fewer than ``min_table`` contacts. One attempt
tries the sources in ARCHITECTURE §4's order, each only if the one before
failed: ``"cache"`` (routing-table contacts and peers cached on disk),
``"bridges"`` (ask for fresh live peers), ``"bootstrap"`` (each URL in
turn). When all three fail, the next attempt waits as :mod:`backoff` says:
full jitter, 5 attempts a round, then a pause.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from yzcore.protocol.backoff import Backoff, BackoffPolicy

__all__ = ["SOURCES", "RecoveryConfig", "RecoveryPolicy"]

SOURCES = ("cache", "bridges", "bootstrap")  #: the order of one attempt


@dataclass(frozen=True, slots=True)
class RecoveryConfig:
    """Recovery knobs (seconds).

    Attributes:
        lost_grace: No connection for this long starts recovery.
        min_table: A routing table smaller than this starts recovery too
            (0: only losing every connection does).
        backoff: The schedule between failed attempts.
        start_jitter: A starting node waits ``uniform(0, start_jitter)``
            before its first attempt, so that a fleet restarted at once does
            not reach the bootstrap server at once (A7.4).
    """

    lost_grace: float = 2.0
    min_table: int = 0
    start_jitter: float = 0.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)


class RecoveryPolicy:
    """One node's recovery state.

    Args:
        config: The knobs.
        rng: Jitter; the only source of randomness.
    """

    __slots__ = ("attempts", "backoff", "config", "lost_since", "next_at", "recoveries", "stage")

    def __init__(self, config: RecoveryConfig, rng: random.Random) -> None:
        self.config = config
        self.backoff = Backoff(config.backoff, rng)
        self.lost_since: float | None = None  #: since when the node needs recovery
        self.next_at = 0.0  #: no attempt starts before this
        self.stage: int | None = None  #: the source being tried, as an index of SOURCES
        self.attempts = 0  #: attempts started, in all
        self.recoveries = 0  #: attempts that worked

    def start(self, now: float) -> float:
        """The node starts with nothing: recovery is due after the start jitter; that delay."""
        delay = self.backoff.rng.uniform(0.0, self.config.start_jitter) if self.config.start_jitter else 0.0
        self.lost_since = now - self.config.lost_grace
        self.next_at = now + delay
        return delay

    def joined(self, ok: bool, now: float) -> None:
        """The node's join (the runtime's own first attempt) ended: success, or a failed attempt."""
        if ok:
            self.lost_since = None
            self.backoff.succeeded()
        else:
            self.attempts += 1
            self.backoff.failed()
            self.next_at = now + self.backoff.delay()

    def observe(self, now: float, connections: int, table: int) -> None:
        """How connected the node is now."""
        needed = connections == 0 or table < self.config.min_table
        if not needed:
            if self.lost_since is not None and self.stage is None:
                self.backoff.succeeded()  # it came back by itself
            self.lost_since = None
        elif self.lost_since is None:
            self.lost_since = now

    def get_timer(self) -> float:
        """When :meth:`next_step` may next have something to do."""
        if self.lost_since is None or self.stage is not None:
            return float("inf")
        return max(self.lost_since + self.config.lost_grace, self.next_at)

    def next_step(self, now: float) -> str | None:
        """The source to try now, or None (not needed, not yet, or a step is running)."""
        if self.lost_since is None or self.stage is not None or now < self.get_timer():
            return None
        self.stage = 0
        self.attempts += 1
        return SOURCES[0]

    def step_done(self, source: str, ok: bool, now: float) -> str | None:
        """Report the step ``source``; the next source of this attempt, or None."""
        if self.stage is None or SOURCES[self.stage] != source:
            return None
        if self.lost_since is None and not ok:  # connections came back meanwhile: done
            self.stage = None
            return None
        if ok:
            self.stage = None
            self.lost_since = None
            self.recoveries += 1
            self.backoff.succeeded()
            return None
        self.stage += 1
        if self.stage < len(SOURCES):
            return SOURCES[self.stage]
        self.stage = None
        self.backoff.failed()
        self.next_at = now + self.backoff.delay()
        return None
