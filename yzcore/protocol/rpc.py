"""Outstanding requests: request ids, adaptive timeouts, duplicate suppression.

Each peer gets its own retransmission-timeout estimate from measured round
trips (RFC 6298: ``rto = srtt + 4 * rttvar``). A request has two deadlines:
the *soft* one (the peer's RTO), after which a lookup asks someone else in parallel; the
*abandon* one (a few RTOs, at least a second), after which the lookup no
longer waits for it; and the *hard* one, after which it has failed. Time is
always passed in; nothing here reads a clock.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field

CONNECT_ALLOWANCE = 1.0  # seconds more before a request that must dial first is abandoned
# A request waiting for its dial fails with the dial (the runtime's connect and
# hello timeouts, which start once the dial holds one of the process's slots);
# its own hard timeout runs from the moment the connection opens. This bounds
# the wait of a dial that neither opens nor fails.
CONNECT_LIMIT = 60.0

__all__ = ["RttEstimator", "Pending", "RpcTable"]


@dataclass(slots=True)
class RttEstimator:
    """Smoothed round-trip time of one peer.

    Attributes:
        srtt: Smoothed RTT in seconds (None until the first sample).
        rttvar: RTT variation in seconds.
    """

    srtt: float | None = None
    rttvar: float = 0.0

    def sample(self, rtt: float) -> None:
        """Fold one measured round trip in."""
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def rto(self, initial: float, floor: float, ceiling: float) -> float:
        """The retransmission timeout, clamped to [floor, ceiling]."""
        if self.srtt is None:
            return initial
        return min(ceiling, max(floor, self.srtt + 4 * self.rttvar))


@dataclass(slots=True)
class Pending:
    """A request waiting for its answer.

    Attributes:
        rid: The request id.
        peer: Who was asked.
        kind: The request type ("find_node", "ping", ...).
        sent_at: ``now`` when it was sent.
        soft_at: The soft deadline.
        abandon_at: When a lookup stops waiting for it.
        hard_at: The hard deadline.
        owner: Who wants the answer (an operation id), or None.
        soft_fired: Whether the soft deadline already passed.
        abandon_fired: Whether the abandon deadline already passed.
    """

    rid: int
    peer: bytes
    kind: str
    sent_at: float
    soft_at: float
    abandon_at: float
    hard_at: float
    owner: int | None
    soft_fired: bool = False
    abandon_fired: bool = False
    connecting: bool = False  #: it waited for a dial: its time is no round trip


@dataclass(slots=True)
class RpcTable:
    """Requests in flight across all peers.

    Attributes:
        timeout: Hard timeout of every request, seconds.
        initial_rto: Soft timeout for a peer with no RTT sample yet.
        min_rto: Floor of the soft timeout.
        dedup_window: How long a received request id is remembered.
        dedup_max: At most this many remembered request ids.
        first_rid: The first request id. Peers remember ids per node id (the
            dedup window): a node restarted with its key must not start where
            its last run did, or its first requests are dropped as repeats.
            The engine draws it at random.
    """

    timeout: float = 5.0
    initial_rto: float = 1.0
    min_rto: float = 0.05
    dedup_window: float = 10.0
    dedup_max: int = 1024
    first_rid: int = 1
    _next: int = field(init=False, default=1)
    _pending: dict[int, Pending] = field(init=False, default_factory=dict)
    _by_peer: dict[bytes, dict[int, Pending]] = field(init=False, default_factory=dict)
    _deadlines: list[tuple[float, int]] = field(init=False, default_factory=list)
    _rtt: dict[bytes, RttEstimator] = field(init=False, default_factory=dict)
    _seen: OrderedDict[tuple[bytes, int], float] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self._next = self.first_rid

    def __len__(self) -> int:
        return len(self._pending)

    def rto(self, peer: bytes) -> float:
        """The current soft timeout for ``peer``."""
        est = self._rtt.get(peer)
        if est is None:
            return self.initial_rto
        return est.rto(self.initial_rto, self.min_rto, self.timeout)

    def srtt(self, peer: bytes) -> float | None:
        """Smoothed RTT of ``peer``, or None before the first answer."""
        est = self._rtt.get(peer)
        return None if est is None else est.srtt

    def start(self, peer: bytes, kind: str, now: float, owner: int | None = None,
              *, connecting: bool = False, abandon_by: float | None = None) -> Pending:
        """Allocate a request id and its deadlines.

        ``connecting``: the request waits for a dial first; it is abandoned a
        second later (what a lost SYN costs TCP), not for slowness it did not show,
        and its hard timeout starts when the connection opens (:meth:`connected`):
        until then the dial's outcome decides, within ``CONNECT_LIMIT``.
        ``abandon_by``: abandoned then at the latest (a retry keeps the first
        request's deadline: asking again buys the peer no more patience).
        """
        rid = self._next
        self._next = rid + 1 if rid < 2**53 - 1 else 1
        rto = self.rto(peer)
        abandon = min(max(3 * rto, 1.0) + (CONNECT_ALLOWANCE if connecting else 0.0), self.timeout)
        if abandon_by is not None:
            abandon = min(abandon, max(0.0, abandon_by - now))
        soft = min(rto, self.timeout, abandon)
        hard = now + (max(self.timeout, CONNECT_LIMIT) if connecting else self.timeout)
        p = Pending(rid, peer, kind, now, now + soft, now + abandon, hard, owner,
                    connecting=connecting)
        self._pending[rid] = p
        mine = self._by_peer.get(peer)
        if mine is None:
            mine = self._by_peer[peer] = {}
        mine[rid] = p
        # One heap entry at a time, the next deadline; most requests are answered
        # before their first, and the next goes in only if it was not (expire).
        heapq.heappush(self._deadlines, (p.soft_at, rid))
        return p

    def finish(self, peer: bytes, rid: int, now: float) -> Pending | None:
        """The answer to ``rid`` arrived from ``peer``: the request, or None if unknown.

        An answer from a peer other than the one asked is ignored (None): a
        peer cannot complete someone else's request.
        """
        p = self._pending.get(rid)
        if p is None or p.peer != peer:
            return None
        del self._pending[rid]
        self._unindex(p)
        if not p.connecting:  # a dial's connect and hello would inflate every estimate
            rtt = max(0.0, now - p.sent_at)
            self._rtt.setdefault(peer, RttEstimator()).sample(rtt)
        return p

    def connected(self, peer: bytes, now: float) -> None:
        """The connection the requests to ``peer`` waited for opened: their hard
        timeouts run from now (capped by the ``CONNECT_LIMIT`` they started with)."""
        mine = self._by_peer.get(peer)  # on every connection that opens: mostly none
        if mine is None:
            return
        for p in mine.values():
            if p.connecting and p.hard_at > now + self.timeout:
                p.hard_at = now + self.timeout
                if p.abandon_fired:
                    heapq.heappush(self._deadlines, (p.hard_at, p.rid))

    def busy_peers(self) -> set[bytes]:
        """Peers with a request in flight."""
        return set(self._by_peer)

    def has_pending(self, peer: bytes) -> bool:
        """Whether a request to ``peer`` is in flight."""
        return peer in self._by_peer

    def drop_peer(self, peer: bytes) -> list[Pending]:
        """Fail every request to ``peer`` at once (its connection is gone)."""
        mine = self._by_peer.pop(peer, None)
        if mine is None:
            return []
        for rid in mine:
            del self._pending[rid]
        return list(mine.values())

    def withdraw(self, peer: bytes, owner: int) -> list[int]:
        """Drop ``owner``'s requests to ``peer`` without an outcome (they were never
        sent); their ids."""
        mine = self._by_peer.get(peer)
        if mine is None:
            return []
        gone = [rid for rid, p in mine.items() if p.owner == owner]
        for rid in gone:
            del self._pending[rid]
            del mine[rid]
        if not mine:
            del self._by_peer[peer]
        return gone

    def _unindex(self, p: Pending) -> None:
        mine = self._by_peer[p.peer]
        del mine[p.rid]
        if not mine:
            del self._by_peer[p.peer]

    def forget_peer(self, peer: bytes) -> None:
        """Drop the RTT history of a peer that left the routing table."""
        self._rtt.pop(peer, None)

    def expire(self, now: float) -> tuple[list[Pending], list[Pending], list[Pending]]:
        """Requests whose soft, abandon and hard deadlines just passed (hard ones are gone)."""
        soft: list[Pending] = []
        abandon: list[Pending] = []
        hard: list[Pending] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, rid = heapq.heappop(self._deadlines)
            p = self._pending.get(rid)
            if p is None:
                continue
            if p.hard_at <= now:
                del self._pending[rid]
                self._unindex(p)
                hard.append(p)
                continue
            if not p.soft_fired and p.soft_at <= now:
                p.soft_fired = True
                soft.append(p)
            if not p.abandon_fired and p.abandon_at <= now:
                p.abandon_fired = True
                abandon.append(p)
            # Its next deadline (the soft one has passed: entries come in order).
            heapq.heappush(self._deadlines, (p.hard_at if p.abandon_fired else p.abandon_at, rid))
        return soft, abandon, hard

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do."""
        while self._deadlines and self._deadlines[0][1] not in self._pending:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def is_duplicate(self, peer: bytes, rid: int, now: float) -> bool:
        """True if ``peer`` already sent request ``rid`` recently; remembers it otherwise."""
        seen = self._seen
        while seen:
            key, at = next(iter(seen.items()))
            if at + self.dedup_window > now and len(seen) < self.dedup_max:
                break
            del seen[key]
        key = (peer, rid)
        if key in seen:
            return True
        seen[key] = now
        return False
