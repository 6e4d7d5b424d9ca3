"""What the engine asks its driver (the runtime or the simulator) to do."""

from __future__ import annotations

from dataclasses import dataclass

from yzcore.protocol.lookup import LookupResult
from yzcore.wire import Message, NodeInfo

__all__ = ["Send", "Dial", "Close", "Done", "Limited", "PutResult", "Action"]


@dataclass(frozen=True, slots=True)
class Send:
    """Send one message on the open connection to a peer.

    Attributes:
        peer: The peer's node id.
        message: What to send.
    """

    peer: bytes
    message: Message


@dataclass(frozen=True, slots=True)
class Dial:
    """Open a connection to a node; report back with ``connection_opened`` or ``dial_failed``.

    Attributes:
        node: Whom to dial (``node.addr`` is where).
    """

    node: NodeInfo


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection to a peer.

    Attributes:
        peer: The peer's node id.
        reason: Why, as an error code or a short word ("idle", "over_capacity").
    """

    peer: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Limited:
    """The rate limiter refused a peer's request (the reply is a :class:`Send` of its own),
    or let it through on its bypass budget: to be logged with the limit and the wait (A2.2).

    Attributes:
        peer: Whose request.
        operation: The limited operation ("find_node": lookups, find_value included).
        scope: "peer" (this peer's bucket) or "global" (everyone's).
        limit: The sustained rate allowed, per second.
        burst: The burst allowed.
        retry_after: Seconds until the peer may ask again.
        bypassed: Not refused after all: a joining node's request let through on
            the emergency bypass budget (A3.2).
    """

    peer: bytes
    operation: str
    scope: str
    limit: float
    burst: float
    retry_after: float
    bypassed: bool = False


@dataclass(frozen=True, slots=True)
class PutResult:
    """What a put achieved.

    Attributes:
        key: The key stored under.
        stored: How many of the k closest nodes confirmed the store.
        nodes: The k closest nodes it was sent to.
    """

    key: bytes
    stored: int
    nodes: tuple[NodeInfo, ...]


@dataclass(frozen=True, slots=True)
class Done:
    """A user operation finished.

    Attributes:
        op: The id the operation was started with.
        kind: "find_node", "get" or "put".
        result: The lookup's result, or the put's.
        started_at: ``now`` when it started.
        finished_at: ``now`` when it finished.
    """

    op: int
    kind: str
    result: LookupResult | PutResult
    started_at: float
    finished_at: float


Action = Send | Dial | Close | Done | Limited
