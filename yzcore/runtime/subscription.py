"""What a node's user holds of pubsub: its subscriptions, and what a publish achieved.

The node keeps one :class:`Channel` per channel it subscribes to, whatever
the number of :class:`Subscription` objects on it; :mod:`yzcore.runtime.pubsub`
does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from yzcore.exceptions import PubSubFailed
from yzcore.pubsub import Publication

if TYPE_CHECKING:
    from yzcore.runtime.pubsub import PubSub

__all__ = ["Channel", "PublishResult", "Subscription"]


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What :meth:`PubSub.publish` achieved.

    Attributes:
        mid: The message id.
        homes: Homes that took the message (of up to 3).
        reached: Subscribers the best-connected home passed it on to: a
            lower bound on how many received it (each subscriber is held by
            several homes, so the homes' counts overlap).
    """

    mid: bytes
    homes: int
    reached: int


class Subscription:
    """This node's subscription to a channel: an async iterator of :class:`Publication`.

    Messages wait in a buffer of ``buffer`` entries; when it is full, new ones
    are dropped and counted in :attr:`dropped`. Leave with :meth:`aclose` (or
    ``async with``); the homes let go of the channel once this node has no
    subscription to it left.
    """

    def __init__(self, node: PubSub, channel: Channel, buffer: int) -> None:
        self._node = node
        self._channel = channel
        self._send: MemoryObjectSendStream[Publication]
        self._recv: MemoryObjectReceiveStream[Publication]
        self._send, self._recv = anyio.create_memory_object_stream[Publication](buffer)
        self.dropped = 0

    @property
    def channel(self) -> str:
        """The channel's name."""
        return self._channel.name

    @property
    def homes(self) -> int:
        """How many homes hold the subscription now (this node counts when it is one)."""
        return len(self._channel.homes) + self._channel.local

    async def receive(self) -> Publication:
        """The next message; raises ``anyio.EndOfStream`` once closed."""
        return await self._recv.receive()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Publication:
        try:
            return await self._recv.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Leave the channel (idempotent)."""
        self._node._ps_leave(self)
        self._send.close()
        self._recv.close()

    def _deliver(self, pub: Publication) -> None:
        try:
            self._send.send_nowait(pub)
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass


class Channel:
    """A channel this node subscribes to, shared by its local subscriptions."""

    __slots__ = ("name", "key", "subs", "homes", "local", "wake", "ready", "error", "hurry")

    def __init__(self, name: str, key: bytes) -> None:
        self.name = name
        self.key = key
        self.subs: set[Subscription] = set()
        self.homes: set[bytes] = set()  # remote homes that took the subscription
        self.local = False  # this node is one of the homes
        self.wake = anyio.Event()  # a home was lost, or the last subscription left
        self.ready = anyio.Event()  # the first round is over
        self.error: PubSubFailed | None = None
        self.hurry = False  # a home refused the last renewal for its rate limit: renew sooner
