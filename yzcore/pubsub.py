"""Pubsub channels: a channel lives at the server nodes closest to its key.

A channel named ``N`` has the key ``sha256(utf-8 N)``, like a stored value.
Its *homes* are the :data:`REPLICAS` server nodes closest to that key, found
with an ordinary lookup, so every node that looks finds the same ones and no
node is special. A subscriber asks each home to hold its subscription
(``pubsub.sub``, renewed every ``ttl / 2``) and keeps those connections
open; a publisher sends its message to the homes (``pubsub.pub``), and each
home passes it to every subscriber it holds (``pubsub.msg``). Subscribers
drop the copies they already have, by message id.

Three homes: one lost home costs no message. A subscriber subscribes again
as soon as a home's connection closes, and every renewal looks the homes up
afresh, so a channel follows its key as nodes come and go. A channel exists
as long as someone subscribes to it: "creating" one is the first subscribe.

This module is the sans-I/O part: what a home holds and when it lets go
(:class:`ChannelHomes`), and the seen-message filter (:class:`Seen`). Time
comes in as ``now``. The runtime (:mod:`yzcore.runtime.pubsub`) does the
lookups and the talking.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from yzcore.exceptions import InvalidArgument
from yzcore.ids import closest, key_for
from yzcore.wire import ErrorCode, NodeInfo

__all__ = [
    "DEFAULT_TTL",
    "MAX_CHANNELS",
    "MAX_NAME",
    "MAX_PEERS",
    "MAX_PEER_CHANNELS",
    "MAX_SUBSCRIBERS",
    "MAX_TTL",
    "MIN_TTL",
    "REPLICAS",
    "ChannelHomes",
    "Publication",
    "Seen",
    "channel_key",
    "homes_for",
]

REPLICAS: Final = 3  #: homes per channel
DEFAULT_TTL: Final = 120.0  #: seconds a subscription is held unless renewed
MAX_TTL: Final = 600.0  #: a home holds no subscription longer than this
MIN_TTL: Final = 1.0  #: nor shorter
MAX_NAME: Final = 256  #: longest channel name, in characters
MAX_CHANNELS: Final = 4096  #: channels one home holds at most
MAX_SUBSCRIBERS: Final = 1024  #: subscribers of one channel one home holds at most
MAX_PEER_CHANNELS: Final = 64  #: channels one peer may have held by one home
MAX_PEERS: Final = 1024  #: subscribers (peers, so held connections) one home holds at most
SEEN_TTL: Final = 120.0  #: seconds a message id is remembered
SEEN_MAX: Final = 16384  #: message ids remembered at most
_SERVER_ROLES: Final = ("node", "bridge")


def channel_key(name: str) -> bytes:
    """The key of the channel called ``name``: ``sha256(utf-8 name)``.

    Raises:
        InvalidArgument: ``name`` is not a non-empty string of at most
            :data:`MAX_NAME` characters.
    """
    if isinstance(name, str) and 0 < len(name) <= MAX_NAME:
        try:
            return key_for(name)
        except UnicodeEncodeError:  # a lone surrogate: not text any peer could type
            pass
    raise InvalidArgument(f"a channel name must be a non-empty string of at most {MAX_NAME} "
                          f"characters of valid text, got {name!r:.80}.")


def homes_for(key: bytes, candidates: Iterable[NodeInfo], count: int = REPLICAS) -> list[NodeInfo]:
    """The ``count`` server nodes (role ``node`` or ``bridge``) among ``candidates``
    closest to ``key``, nearest first; browser-class peers hold nothing."""
    unique = {c.id: c for c in candidates if c.role in _SERVER_ROLES}
    return [unique[i] for i in closest(key, list(unique), count)]


@dataclass(frozen=True, slots=True)
class Publication:
    """A message published on a channel, as a subscriber receives it.

    Attributes:
        channel: The channel's name.
        data: The message.
        sender: The publisher's node id, as the home that passed it on verified it.
        mid: The message id.
    """

    channel: str
    data: str
    sender: bytes
    mid: bytes


class Seen:
    """Message ids seen lately: at most ``limit``, each for ``ttl`` seconds."""

    def __init__(self, ttl: float = SEEN_TTL, limit: int = SEEN_MAX) -> None:
        self._ttl = ttl
        self._limit = limit
        self._ids: OrderedDict[bytes, float] = OrderedDict()  # id -> expiry, oldest first

    def add(self, mid: bytes, now: float) -> bool:
        """Remember ``mid``; False when it was already remembered (a copy)."""
        ids = self._ids
        while ids:
            oldest, expiry = next(iter(ids.items()))
            if expiry > now and len(ids) < self._limit:
                break
            del ids[oldest]
        if mid in ids:
            return False
        ids[mid] = now + self._ttl
        return True

    def __len__(self) -> int:
        return len(self._ids)


class ChannelHomes:
    """What this node holds as a home: subscribers of channels, until they expire.

    Every subscriber is a connected peer whose connection the runtime holds
    open, so the subscribers are bounded (:data:`MAX_PEERS`) and a peer's
    subscriptions go the moment its connection closes (:meth:`drop_peer`).
    The runtime calls :meth:`expire` every second while anything is held.
    """

    def __init__(self, *, max_channels: int = MAX_CHANNELS,
                 max_subscribers: int = MAX_SUBSCRIBERS,
                 max_peer_channels: int = MAX_PEER_CHANNELS, max_peers: int = MAX_PEERS) -> None:
        self.max_channels = max_channels
        self.max_subscribers = max_subscribers
        self.max_peer_channels = max_peer_channels
        self.max_peers = max_peers
        self._channels: dict[bytes, dict[bytes, float]] = {}  # key -> subscriber -> expiry
        self._by_peer: dict[bytes, set[bytes]] = {}  # subscriber -> keys
        self.seen = Seen()

    def subscribe(self, peer: bytes, key: bytes, ttl: float,
                  now: float) -> tuple[ErrorCode, str] | int:
        """Hold ``peer``'s subscription to ``key`` for ``ttl`` seconds (from
        :data:`MIN_TTL` to :data:`MAX_TTL`); renewing one moves its expiry.

        Returns:
            The channel's subscriber count here, or the code and sentence of
            a refusal (``OVER_CAPACITY``) when a limit would be passed.
        """
        subs = self._channels.get(key)
        mine = self._by_peer.get(peer, ())
        if subs is None or peer not in subs:
            if not mine and len(self._by_peer) >= self.max_peers:
                return (ErrorCode.OVER_CAPACITY, f"this home holds subscriptions of "
                        f"{self.max_peers} peers already; retry later")
            if key not in mine and len(mine) >= self.max_peer_channels:
                return (ErrorCode.OVER_CAPACITY, f"this home holds {self.max_peer_channels} "
                        "channels for one peer at most; unsubscribe from one first")
            if subs is None and len(self._channels) >= self.max_channels:
                return (ErrorCode.OVER_CAPACITY, f"this home holds {self.max_channels} channels "
                        "already; retry later")
            if subs is not None and len(subs) >= self.max_subscribers:
                return (ErrorCode.OVER_CAPACITY, f"this channel has {self.max_subscribers} "
                        "subscribers at this home already")
        if subs is None:
            subs = self._channels[key] = {}
        subs[peer] = now + min(max(ttl, MIN_TTL), MAX_TTL)
        self._by_peer.setdefault(peer, set()).add(key)
        return len(subs)

    def unsubscribe(self, peer: bytes, key: bytes) -> int:
        """Let go of ``peer``'s subscription to ``key``; the subscribers left."""
        subs = self._channels.get(key)
        if subs is not None and subs.pop(peer, None) is not None:
            self._forget(peer, key)
            if not subs:
                del self._channels[key]
        return len(subs) if subs else 0

    def subscribers(self, key: bytes, now: float) -> list[bytes]:
        """The peers whose subscription to ``key`` is held at ``now``, in id order."""
        subs = self._channels.get(key)
        return sorted(p for p, expiry in subs.items() if expiry > now) if subs else []

    def drop_peer(self, peer: bytes) -> int:
        """``peer`` is gone: let go of all its subscriptions; how many there were."""
        keys = self._by_peer.pop(peer, set())
        for key in keys:
            subs = self._channels[key]
            del subs[peer]
            if not subs:
                del self._channels[key]
        return len(keys)

    def holding(self) -> bool:
        """Whether any subscription is held here."""
        return bool(self._by_peer)

    def holds(self, peer: bytes) -> bool:
        """Whether ``peer`` has a subscription held here (its connection must stay)."""
        return peer in self._by_peer

    def expire(self, now: float) -> list[bytes]:
        """Let go of subscriptions past their expiry; the peers that no longer hold any."""
        freed = []
        for key, subs in list(self._channels.items()):
            for peer in [p for p, expiry in subs.items() if expiry <= now]:
                del subs[peer]
                if self._forget(peer, key):
                    freed.append(peer)
            if not subs:
                del self._channels[key]
        return freed

    def stats(self) -> tuple[int, int]:
        """(channels, subscriptions) held here."""
        return len(self._channels), sum(len(s) for s in self._channels.values())

    def _forget(self, peer: bytes, key: bytes) -> bool:
        keys = self._by_peer.get(peer)
        if keys is None:
            return False
        keys.discard(key)
        if not keys:
            del self._by_peer[peer]
            return True
        return False
