"""The iterative Kademlia lookup, as a state machine of its own.

A lookup keeps every candidate it has heard of, ordered by XOR distance to
the target. It keeps ``alpha`` queries in flight among the ``k`` closest
candidates that have not failed, and it is done when those ``k`` have all
answered: the answer is then exactly the ``k`` closest live nodes it could
find (or the value, for a value lookup).

A slow peer never holds the lookup up for long. When a query passes its
*soft* timeout (the peer's adaptive RTO) it stops counting against
``alpha``, so the next candidate is queried in parallel — libtorrent's "short
timeout" — but the lookup still waits for its answer. Past the *abandon*
deadline (a few RTOs) the peer leaves the k-window and the lookup may finish
without it; an answer that still comes in time is used. Only the *hard*
timeout fails it for the routing table.

No I/O and no clock: the engine tells the lookup what happened and asks it
which peers to query next.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field

from yzcore.wire import NodeInfo

__all__ = ["Lookup", "LookupResult"]


# Where a candidate stands in a lookup (plain ints: compared on every step).
NEW = 0  #: known, not queried yet
ASKED = 1  #: query in flight, within its soft timeout
SLOW = 2  #: past its soft timeout: no longer counts against alpha, still awaited
ABANDONED = 3  #: past its abandon deadline: the lookup no longer waits for it
ANSWERED = 4  #: responded: a live node
FAILED = 5  #: hard timeout, error or unreachable
DEFERRED = 6  #: refused for now (rate limited, or a duplicate connection): asked again later
_WAITING = (ASKED, SLOW, ABANDONED)


class _Candidate:
    __slots__ = ("alt", "deferred", "info", "retried", "state")

    def __init__(self, info: NodeInfo) -> None:
        self.info = info
        self.state = NEW
        self.retried = False  # asked again after a clean close
        self.deferred = False  # asked again after a rate limit's wait
        # Another address a reply gave for it, to ask if the first fails; False
        # once one was taken (one other address per candidate, no more).
        self.alt: NodeInfo | None | bool = None


@dataclass(frozen=True, slots=True)
class LookupResult:
    """What a finished lookup found.

    Attributes:
        target: The id or key looked up.
        nodes: The closest live nodes that answered, nearest first (at most k).
        value: The value, for a value lookup that found one; else None.
        holder: The node that returned the value, if any.
        queried: How many peers were asked.
        failed: How many of them failed.
        limited: How many of those had refused for their rate limit first.
    """

    target: bytes
    nodes: tuple[NodeInfo, ...]
    value: str | None = None
    holder: bytes | None = None
    queried: int = 0
    failed: int = 0
    limited: int = 0


@dataclass(slots=True)
class Lookup:
    """One iterative lookup for ``target``.

    Attributes:
        target: The 32-byte id or key.
        self_id: Our own id, never a candidate.
        k: How many closest nodes to find.
        alpha: Queries in flight at once (not counting slow ones).
        want_value: True for find_value: stop at the first value.
    """

    target: bytes
    self_id: bytes
    k: int = 20
    alpha: int = 3
    want_value: bool = False
    _t: int = field(init=False, default=0)
    _by_id: dict[bytes, _Candidate] = field(init=False, default_factory=dict)
    # Distances to the target, nearest first: XOR with the target is one to
    # one, so a distance names its candidate, and ints sort fast.
    _order: list[int] = field(init=False, default_factory=list)
    _at: dict[int, _Candidate] = field(init=False, default_factory=dict)
    _value: str | None = field(init=False, default=None)
    _holder: bytes | None = field(init=False, default=None)
    _queried: int = field(init=False, default=0)
    _failed: int = field(init=False, default=0)
    _stalled: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._t = int.from_bytes(self.target, "big")

    # -- events --------------------------------------------------------------

    def add(self, nodes: list[NodeInfo] | tuple[NodeInfo, ...]) -> None:
        """Offer candidates (seeds from the routing table, or nodes a peer returned).

        Replies are not signed: a peer may name a live node at an address that
        is not its own. The first address heard for an id is asked first; the
        first other one (from another reply) is kept, and asked if the first
        fails, or at once if it failed already; no third. A candidate with no
        address (nobody can dial it) is no candidate.
        """
        by_id, at, t, own = self._by_id, self._at, self._t, self.self_id
        from_bytes = int.from_bytes
        fresh: list[int] = []
        for info in nodes:
            node_id = info.id
            known = by_id.get(node_id)
            if known is not None:
                if known.alt is None and info.addr and info.addr != known.info.addr:
                    self._other_address(known, info, fresh)
                continue
            if node_id == own or not info.addr:
                continue
            c = by_id[node_id] = _Candidate(info)
            distance = from_bytes(node_id, "big") ^ t
            at[distance] = c
            fresh.append(distance)
        if len(fresh) == 1:
            insort(self._order, fresh[0])
        elif fresh:  # one sort of a mostly sorted list beats an insort each
            self._order.extend(fresh)
            self._order.sort()

    def _other_address(self, c: _Candidate, info: NodeInfo, fresh: list[int]) -> None:
        """A reply names candidate ``c`` at another address than it has (``fresh``: the
        distances of the candidates this reply made so far)."""
        if (int.from_bytes(info.id, "big") ^ self._t) in fresh:
            return  # named twice in one reply: the peer's second guess is no other source
        if c.state == FAILED:  # failed at the first address already: ask at this one
            c.info, c.alt, c.state = info, False, NEW
            self._failed -= 1
        elif c.state != ANSWERED:
            c.alt = info

    def answered(self, peer: bytes, nodes: tuple[NodeInfo, ...] = (), value: str | None = None) -> None:
        """A peer answered: it is live; its nodes become candidates."""
        c = self._by_id.get(peer)
        if c is None or c.state == ANSWERED or c.state == FAILED or self.done:
            return
        c.state = ANSWERED
        if value is not None and self.want_value and self._value is None:
            self._value = value
            self._holder = peer
        nearest = self._order[0] if self._order else None
        self.add(nodes)
        # An answer that names nobody nearer than the nearest known means the
        # lookup has converged: the rest of the k window is asked at once.
        self._stalled = bool(self._order) and self._order[0] == nearest

    def slow(self, peer: bytes) -> None:
        """A query passed its soft timeout: query someone else meanwhile."""
        c = self._by_id.get(peer)
        if c is not None and c.state == ASKED:
            c.state = SLOW

    def abandon(self, peer: bytes) -> None:
        """A query passed its abandon deadline: stop waiting for it."""
        c = self._by_id.get(peer)
        if c is not None and (c.state == ASKED or c.state == SLOW):
            c.state = ABANDONED

    def retry(self, peer: bytes, again: bool = False) -> bool:
        """Ask ``peer`` again (once, unless ``again``): its connection closed under the
        query (``again``: it lost a simultaneous-dial tie-break).

        Returns:
            False when it was already retried; the caller then fails it.
        """
        c = self._by_id.get(peer)
        if c is None or (c.retried and not again) or c.state not in _WAITING:
            return False
        c.state, c.retried = NEW, True
        self._queried -= 1
        return True

    def defer(self, peer: bytes) -> bool:
        """The peer refused the query for now (``RATE_LIMITED``), or closed the connection it
        came on as a duplicate of another: ask it again later (once).

        Meanwhile others are asked in its place (A3.3); if it is among the k
        closest, the lookup waits for the second answer rather than finish
        without it (A3.5).

        Returns:
            False when it was already deferred once; the caller then fails it.
        """
        c = self._by_id.get(peer)
        if c is None or c.deferred or c.state not in _WAITING:
            return False
        c.state, c.deferred = DEFERRED, True
        self._queried -= 1
        return True

    def revive(self, peer: bytes) -> None:
        """A deferred peer's wait is over: it is a candidate to ask again."""
        c = self._by_id.get(peer)
        if c is not None and c.state == DEFERRED:
            c.state = NEW

    def failed(self, peer: bytes) -> None:
        """A query failed for good (hard timeout, error, unreachable); a peer another
        reply gave another address for is asked there next."""
        c = self._by_id.get(peer)
        if c is not None and c.state != ANSWERED and c.state != FAILED:
            if isinstance(c.alt, NodeInfo) and c.state != ABANDONED:  # (not waited for again)
                c.info, c.alt, c.state = c.alt, False, NEW
                self._queried -= 1
                return
            c.state = FAILED
            self._failed += 1

    # -- decisions -----------------------------------------------------------

    def next_queries(self) -> list[NodeInfo]:
        """Candidates to query now; they are marked as asked."""
        if self.done:
            return []
        active = 0
        fresh: list[_Candidate] = []
        considered = 0
        at, k = self._at, self.k
        for distance in self._order:
            c = at[distance]
            state = c.state
            if state == FAILED or state == ABANDONED:
                continue
            considered += 1
            if state == ASKED:
                active += 1
            elif state == NEW:
                fresh.append(c)
            if considered >= k:
                break
        out = []
        for c in fresh if self._stalled else fresh[: max(0, self.alpha - active)]:
            c.state = ASKED
            self._queried += 1
            out.append(c.info)
        return out

    @property
    def done(self) -> bool:
        """True once a value was found, or the k closest candidates that are
        neither failed nor abandoned have answered.

        Abandoned peers are skipped only when others fill the window: with
        fewer than k candidates left, the lookup waits for them to answer or
        fail rather than finish with less than it could have.
        """
        if self._value is not None:
            return True
        considered = 0
        abandoned = False
        at, k = self._at, self.k
        for distance in self._order:
            state = at[distance].state
            if state == FAILED:
                continue
            if state == ABANDONED:
                abandoned = True
                continue
            if state != ANSWERED:
                return False  # new, asked, or deferred: still to be heard
            considered += 1
            if considered >= k:
                return True
        return not abandoned

    def in_flight(self) -> list[bytes]:
        """Peers asked and not yet answered or failed."""
        return [i for i, c in self._by_id.items() if c.state in _WAITING]

    def result(self) -> LookupResult:
        """The k closest nodes that answered, nearest first, and the value if found."""
        nodes = []
        at = self._at
        for distance in self._order:
            c = at[distance]
            if c.state == ANSWERED:
                nodes.append(c.info)
                if len(nodes) >= self.k:
                    break
        limited = sum(1 for c in self._by_id.values() if c.deferred and c.state == FAILED)
        return LookupResult(self.target, tuple(nodes), self._value, self._holder,
                            self._queried, self._failed, limited)
