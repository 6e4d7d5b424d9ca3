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
from enum import Enum

from yzcore.wire import NodeInfo

__all__ = ["Lookup", "LookupResult", "State"]


class State(Enum):
    """Where a candidate stands in a lookup."""

    NEW = "new"  #: known, not queried yet
    ASKED = "asked"  #: query in flight, within its soft timeout
    SLOW = "slow"  #: past its soft timeout: no longer counts against alpha, still awaited
    ABANDONED = "abandoned"  #: past its abandon deadline: the lookup no longer waits for it
    ANSWERED = "answered"  #: responded: a live node
    FAILED = "failed"  #: hard timeout, error or unreachable


@dataclass(slots=True)
class _Candidate:
    info: NodeInfo
    distance: int
    state: State = State.NEW
    retried: bool = False


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
    """

    target: bytes
    nodes: tuple[NodeInfo, ...]
    value: str | None = None
    holder: bytes | None = None
    queried: int = 0
    failed: int = 0


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
    _order: list[tuple[int, bytes]] = field(init=False, default_factory=list)
    _value: str | None = field(init=False, default=None)
    _holder: bytes | None = field(init=False, default=None)
    _queried: int = field(init=False, default=0)
    _failed: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._t = int.from_bytes(self.target, "big")

    # -- events --------------------------------------------------------------

    def add(self, nodes: list[NodeInfo] | tuple[NodeInfo, ...]) -> None:
        """Offer candidates (seeds from the routing table, or nodes a peer returned)."""
        for info in nodes:
            if info.id == self.self_id or info.id in self._by_id:
                continue
            distance = int.from_bytes(info.id, "big") ^ self._t
            self._by_id[info.id] = _Candidate(info, distance)
            insort(self._order, (distance, info.id))

    def answered(self, peer: bytes, nodes: tuple[NodeInfo, ...] = (), value: str | None = None) -> None:
        """A peer answered: it is live; its nodes become candidates."""
        c = self._by_id.get(peer)
        if c is None or c.state in (State.ANSWERED, State.FAILED) or self.done:
            return
        c.state = State.ANSWERED
        if value is not None and self.want_value and self._value is None:
            self._value = value
            self._holder = peer
        self.add(nodes)

    def slow(self, peer: bytes) -> None:
        """A query passed its soft timeout: query someone else meanwhile."""
        c = self._by_id.get(peer)
        if c is not None and c.state is State.ASKED:
            c.state = State.SLOW

    def abandon(self, peer: bytes) -> None:
        """A query passed its abandon deadline: stop waiting for it."""
        c = self._by_id.get(peer)
        if c is not None and c.state in (State.ASKED, State.SLOW):
            c.state = State.ABANDONED

    def retry(self, peer: bytes) -> bool:
        """Ask ``peer`` again (once): its connection closed cleanly under the query.

        Returns:
            False when it was already retried; the caller then fails it.
        """
        c = self._by_id.get(peer)
        if c is None or c.retried or c.state not in (State.ASKED, State.SLOW, State.ABANDONED):
            return False
        c.state, c.retried = State.NEW, True
        self._queried -= 1
        return True

    def failed(self, peer: bytes) -> None:
        """A query failed for good (hard timeout, error, unreachable)."""
        c = self._by_id.get(peer)
        if c is not None and c.state in (State.NEW, State.ASKED, State.SLOW, State.ABANDONED):
            c.state = State.FAILED
            self._failed += 1

    # -- decisions -----------------------------------------------------------

    def next_queries(self) -> list[NodeInfo]:
        """Candidates to query now; they are marked as asked."""
        if self.done:
            return []
        active = 0
        fresh: list[_Candidate] = []
        considered = 0
        for _, node_id in self._order:
            c = self._by_id[node_id]
            if c.state is State.FAILED or c.state is State.ABANDONED:
                continue
            considered += 1
            if c.state is State.ASKED:
                active += 1
            elif c.state is State.NEW:
                fresh.append(c)
            if considered >= self.k:
                break
        out = []
        for c in fresh[: max(0, self.alpha - active)]:
            c.state = State.ASKED
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
        for _, node_id in self._order:
            state = self._by_id[node_id].state
            if state is State.FAILED:
                continue
            if state is State.ABANDONED:
                abandoned = True
                continue
            if state is not State.ANSWERED:
                return False
            considered += 1
            if considered >= self.k:
                return True
        return not abandoned

    def in_flight(self) -> list[bytes]:
        """Peers asked and not yet answered or failed."""
        return [i for i, c in self._by_id.items()
                if c.state in (State.ASKED, State.SLOW, State.ABANDONED)]

    def result(self) -> LookupResult:
        """The k closest nodes that answered, nearest first, and the value if found."""
        nodes = []
        for _, node_id in self._order:
            c = self._by_id[node_id]
            if c.state is State.ANSWERED:
                nodes.append(c.info)
                if len(nodes) >= self.k:
                    break
        return LookupResult(self.target, tuple(nodes), self._value, self._holder,
                            self._queried, self._failed)
