"""Values this node holds: expiry, republishing, and a bound on memory.

A value stored by a user of this node (``original``) is republished to the k
closest nodes every ``republish_interval`` until it expires, so it survives
churn among its holders. A replica another node asked us to keep is
re-replicated every ``replicate_interval`` unless someone stored it again
meanwhile (the usual Kademlia optimisation: one node's republish spares the
others theirs). Time is passed in.

The store is bounded by a budget of bytes: each value costs its UTF-8 size,
and at least ``max_bytes / max_records`` (so it holds ``max_records`` values
at most). When a new value does not fit, replicas go before originals, and a
replica is taken from the peer whose replicas cost the most: a peer that
floods the store with keys of its own pushes out only its own values, never
those the other peers stored.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

__all__ = ["Record", "ValueStore"]


@dataclass(slots=True)
class Record:
    """One stored value.

    Attributes:
        value: The value (a string, at most what fits in a frame).
        expires_at: When it is dropped.
        ttl: The lifetime it was stored with, seconds.
        original: True when a user of this node published it.
        next_push: When this node next re-stores it at the k closest.
        source: The peer that stored this replica last (``b""``: not known); None
            for an original.
        cost: What it takes of the store's budget, bytes.
    """

    value: str
    expires_at: float
    ttl: float
    original: bool
    next_push: float
    source: bytes | None = None
    cost: int = 0


@dataclass(slots=True)
class ValueStore:
    """Key -> value, bounded and expiring.

    Attributes:
        max_records: Most values held.
        republish_interval: How often originals are pushed to the k closest.
        replicate_interval: How often replicas are pushed, unless stored again meanwhile.
        max_bytes: The budget of all values, bytes (each costs at least
            ``max_bytes / max_records``).
    """

    max_records: int = 10_000
    republish_interval: float = 3600.0
    replicate_interval: float = 3600.0
    max_bytes: int = 64 * 1024 * 1024
    _records: dict[bytes, Record] = field(init=False, default_factory=dict)
    _spent: int = field(init=False, default=0)
    # Per source (None: originals), (expires_at, key) of its records, soonest
    # first, with entries of records since replaced or dropped (skipped when
    # popped): the next to evict in O(log n), not a pass over all.
    _queues: dict[bytes | None, list[tuple[float, bytes]]] = field(init=False, default_factory=dict)
    _entries: int = field(init=False, default=0)
    # What each source's replicas cost, and (-cost, source) at each change of it
    # (stale ones skipped): the heaviest source in O(log n).
    _held: dict[bytes, int] = field(init=False, default_factory=dict)
    _heaviest: list[tuple[int, bytes]] = field(init=False, default_factory=list)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    @property
    def spent(self) -> int:
        """What the values held cost, bytes."""
        return self._spent

    def put(self, key: bytes, value: str, ttl: float, now: float, *, original: bool = False,
            source: bytes | None = None) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds (``source``: the peer that sent it)."""
        old = self._records.get(key)
        original = original or bool(old and old.original)
        interval = self.republish_interval if original else self.replicate_interval
        cost = max(len(value.encode("utf-8", "surrogatepass")),
                   self.max_bytes // max(1, self.max_records))
        if old is not None:
            self._drop(key, old)
        while (len(self._records) >= self.max_records
               or self._spent + cost > self.max_bytes) and self._evict_one():
            pass
        rec = Record(value, now + ttl, ttl, original, now + interval,
                     None if original else source or b"", cost)
        self._records[key] = rec
        self._spent += cost
        self._queue(rec.source, rec.expires_at, key)
        if rec.source is not None:
            self._charge(rec.source, cost)

    def get(self, key: bytes, now: float) -> str | None:
        """The value under ``key``, or None when absent or expired."""
        rec = self._records.get(key)
        if rec is None:
            return None
        if rec.expires_at <= now:
            self._drop(key, rec)
            return None
        return rec.value

    def expire(self, now: float) -> int:
        """Drop expired records; returns how many."""
        dead = [(k, r) for k, r in self._records.items() if r.expires_at <= now]
        for k, r in dead:
            self._drop(k, r)
        return len(dead)

    def due(self, now: float) -> list[tuple[bytes, str, float]]:
        """Records to push to the k closest now: ``(key, value, remaining ttl)``.

        Each is scheduled for its next push as it is returned.
        """
        out = []
        for key, rec in self._records.items():
            if rec.next_push <= now < rec.expires_at:
                interval = self.republish_interval if rec.original else self.replicate_interval
                rec.next_push = now + interval
                out.append((key, rec.value, rec.expires_at - now))
        return out

    # -- the budget ------------------------------------------------------------------

    def _drop(self, key: bytes, rec: Record) -> None:
        del self._records[key]
        self._spent -= rec.cost
        if rec.source is not None:
            self._charge(rec.source, -rec.cost)

    def _charge(self, source: bytes, cost: int) -> None:
        held = self._held.get(source, 0) + cost
        if held > 0:
            self._held[source] = held
            heapq.heappush(self._heaviest, (-held, source))
        else:
            del self._held[source]
        if len(self._heaviest) > 2 * len(self._held) + 64:  # mostly stale: rebuild
            self._heaviest = [(-h, s) for s, h in self._held.items()]
            heapq.heapify(self._heaviest)

    def _queue(self, source: bytes | None, expires_at: float, key: bytes) -> None:
        heapq.heappush(self._queues.setdefault(source, []), (expires_at, key))
        self._entries += 1
        if self._entries > 2 * len(self._records) + 64:  # mostly stale: rebuild
            self._queues = {}
            for k, r in self._records.items():
                self._queues.setdefault(r.source, []).append((r.expires_at, k))
            for q in self._queues.values():
                heapq.heapify(q)
            self._entries = len(self._records)

    def _evict_one(self) -> bool:
        """Drop one record: replicas before originals, the one expiring soonest of
        the heaviest source. False when there was none."""
        source: bytes | None = None
        while self._heaviest:
            held, candidate = self._heaviest[0]
            if self._held.get(candidate) == -held:
                source = candidate
                break
            heapq.heappop(self._heaviest)
        queue = self._queues.get(source, [])
        while queue:
            expires_at, key = heapq.heappop(queue)
            self._entries -= 1
            rec = self._records.get(key)
            if rec is not None and rec.source == source and rec.expires_at == expires_at:
                self._drop(key, rec)
                if not queue:
                    del self._queues[source]
                return True
        self._queues.pop(source, None)
        return False
