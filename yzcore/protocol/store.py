"""Values this node holds: expiry, republishing, and a bound on memory.

A value stored by a user of this node (``original``) is republished to the k
closest nodes every ``republish_interval`` until it expires, so it survives
churn among its holders. A replica another node asked us to keep is
re-replicated every ``replicate_interval`` unless someone stored it again
meanwhile (the usual Kademlia optimisation: one node's republish spares the
others theirs). Time is passed in.
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
    """

    value: str
    expires_at: float
    ttl: float
    original: bool
    next_push: float


@dataclass(slots=True)
class ValueStore:
    """Key -> value, bounded and expiring.

    Attributes:
        max_records: Most values held; storing one more drops the one expiring soonest.
        republish_interval: How often originals are pushed to the k closest.
        replicate_interval: How often replicas are pushed, unless stored again meanwhile.
    """

    max_records: int = 10_000
    republish_interval: float = 3600.0
    replicate_interval: float = 3600.0
    _records: dict[bytes, Record] = field(init=False, default_factory=dict)
    # (original, expires_at, key) of every record, and of records since replaced
    # (skipped when popped): the next to evict in O(log n), not a pass over all.
    _order: list[tuple[bool, float, bytes]] = field(init=False, default_factory=list)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def put(self, key: bytes, value: str, ttl: float, now: float, *, original: bool = False) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds."""
        old = self._records.get(key)
        interval = self.republish_interval if original or (old and old.original) else self.replicate_interval
        if old is None and len(self._records) >= self.max_records:
            self._evict_one()
        rec = self._records[key] = Record(
            value, now + ttl, ttl, original or bool(old and old.original), now + interval
        )
        heapq.heappush(self._order, (rec.original, rec.expires_at, key))
        if len(self._order) > 2 * len(self._records) + 64:  # mostly replaced entries: rebuild
            self._order = [(r.original, r.expires_at, k) for k, r in self._records.items()]
            heapq.heapify(self._order)

    def get(self, key: bytes, now: float) -> str | None:
        """The value under ``key``, or None when absent or expired."""
        rec = self._records.get(key)
        if rec is None:
            return None
        if rec.expires_at <= now:
            del self._records[key]
            return None
        return rec.value

    def expire(self, now: float) -> int:
        """Drop expired records; returns how many."""
        dead = [k for k, r in self._records.items() if r.expires_at <= now]
        for k in dead:
            del self._records[k]
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

    def _evict_one(self) -> None:
        # Replicas go before originals; among them, the one expiring soonest.
        while self._order:
            original, expires_at, key = heapq.heappop(self._order)
            rec = self._records.get(key)
            if rec is not None and rec.original == original and rec.expires_at == expires_at:
                del self._records[key]
                return
