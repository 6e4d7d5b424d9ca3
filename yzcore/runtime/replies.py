"""Requests waiting for their replies, matched by request id and by who was asked."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from yzcore import wire
from yzcore.runtime.peer import PeerConnection

__all__ = ["PUBSUB_RIDS", "Replies", "SERVICE_RIDS"]

# Request-id ranges, one per table of requests a node sends on its peer connections. The
# engine numbers its requests from 1; the other tables start far above, so an error reply
# (which carries only the rid) finds the one request it answers.
PUBSUB_RIDS = 2**40  #: pubsub's subscribes and publishes
SERVICE_RIDS = 2**41  #: the node's service requests: reconnection asked of bridges


class Replies:
    """The requests one side has sent outside the engine (service messages)."""

    def __init__(self, first: int = 1) -> None:
        """``first``: the first request id (requests of another table use others)."""
        self._rid = first - 1
        self._waiting: dict[int, tuple[anyio.Event, list[wire.Message], bytes]] = {}

    def next_rid(self) -> int:
        """A request id for a request whose reply nobody waits for."""
        self._rid += 1
        return self._rid

    async def ask(self, pc: PeerConnection, make: Callable[[int], wire.Message],
                  timeout: float) -> wire.Message | None:
        """Send ``make(rid)`` on ``pc`` and wait for its reply; None if none came in time."""
        rid = self.next_rid()
        event = anyio.Event()
        slot: list[wire.Message] = []
        self._waiting[rid] = (event, slot, pc.peer.id)
        pc.send(make(rid))
        with anyio.move_on_after(timeout):
            await event.wait()
        self._waiting.pop(rid, None)
        return slot[0] if slot else None

    def answer(self, msg: wire.Message, sender: bytes) -> bool:
        """Hand ``msg`` to the request it answers; False when none from ``sender`` waits for it."""
        rid = getattr(msg, "rid", None)
        waiter = self._waiting.get(rid) if rid is not None else None
        if waiter is None or waiter[2] != sender:  # only the peer asked may answer
            return False
        waiter[1].append(msg)
        waiter[0].set()
        return True

    def wake_peer(self, peer: bytes) -> None:
        """``peer``'s connection is gone: its requests end with no reply."""
        for event, _, sender in self._waiting.values():
            if sender == peer:
                event.set()

    def wake_all(self) -> None:
        """The connection is gone: every request waiting on it ends with no reply."""
        for event, _, _ in self._waiting.values():
            event.set()
