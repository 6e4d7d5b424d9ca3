"""Pubsub messages: subscriptions held by a channel's home nodes, and what they pass on.

A channel's key is ``sha256(utf-8 name)``; its homes are the server nodes
closest to that key (:mod:`yzcore.pubsub`). They travel through the same
codec as every other message: :mod:`yzcore.wire` installs the decoders and
encoders below, and remains the only place untrusted input is checked.
Import them from :mod:`yzcore.wire`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, Final

import orjson

__all__ = [
    "MAX_PUBLICATION",
    "PUBSUB_TYPES",
    "publication_fits",
    "Delivery",
    "PubSubOk",
    "Publish",
    "Subscribe",
    "Unsubscribe",
]

#: Longest published data: bytes of its JSON string (escapes and UTF-8 counted), so a
#: message always fits in a frame, whichever message carries it.
MAX_PUBLICATION: Final = 16 * 1024
_MID: Final = 16  # bytes of a message id
_COUNT: Final = 2**31


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Ask a home node to hold a subscription to a channel for ``ttl`` seconds.

    The subscriber keeps the connection open; the home pushes the channel's
    messages down it (:class:`Delivery`) until the subscription expires, is
    withdrawn, or the connection closes. Renewed before it expires.

    Attributes:
        rid: Request id, echoed by the reply (:class:`PubSubOk`).
        channel: The channel key.
        ttl: Seconds to hold it; the home caps this.
    """

    TYPE: ClassVar[str] = "pubsub.sub"
    rid: int
    channel: bytes
    ttl: float


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Withdraw a subscription (:class:`PubSubOk` in reply, held or not)."""

    TYPE: ClassVar[str] = "pubsub.unsub"
    rid: int
    channel: bytes


@dataclass(frozen=True, slots=True)
class Publish:
    """Ask a home node to pass ``data`` on to the channel's subscribers.

    Attributes:
        rid: Request id, echoed by the reply.
        channel: The channel key.
        mid: The message id (16 bytes, chosen by the publisher): homes and
            subscribers drop a message they have already seen.
        data: The message, a string of at most :data:`MAX_PUBLICATION` bytes as JSON.
    """

    TYPE: ClassVar[str] = "pubsub.pub"
    rid: int
    channel: bytes
    mid: bytes
    data: str


@dataclass(frozen=True, slots=True)
class PubSubOk:
    """Reply to :class:`Subscribe`, :class:`Unsubscribe` and :class:`Publish`.

    Attributes:
        rid: The request id.
        count: Subscribers this home holds for the channel (after a
            subscribe or unsubscribe), or how many it passed the message on
            to (after a publish; 0 for one it had already seen).
    """

    TYPE: ClassVar[str] = "pubsub.ok"
    rid: int
    count: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """A home passes a published message on to a subscriber (no reply).

    Attributes:
        channel: The channel key.
        mid: The message id.
        sender: The publisher's node id, as verified by the home's handshake.
        data: The message.
    """

    TYPE: ClassVar[str] = "pubsub.msg"
    channel: bytes
    mid: bytes
    sender: bytes
    data: str


PUBSUB_TYPES: Final = (Subscribe, Unsubscribe, Publish, PubSubOk, Delivery)


def publication_fits(value: object) -> bool:
    """Whether ``value`` is a string of at most :data:`MAX_PUBLICATION` bytes as JSON."""
    if not isinstance(value, str) or len(value) > MAX_PUBLICATION:
        return False
    try:
        return len(orjson.dumps(value)) - 2 <= MAX_PUBLICATION  # not counting the quotes
    except TypeError:  # a lone surrogate: not UTF-8
        return False


_Codecs = tuple[dict[str, Callable[[Any], Any]], dict[type, Callable[[Any], Any]]]


def codecs(w: ModuleType) -> _Codecs:
    """Decoders and encoders of the pubsub messages, built on the codec's field checks.

    ``w`` is :mod:`yzcore.wire` (passed in: it imports this module).
    """
    invalid = w._invalid
    show = w._show

    def channel(o: dict[str, Any]) -> bytes:
        return w._hex(o["ch"], "ch", 32)  # type: ignore[no-any-return]

    def mid(o: dict[str, Any]) -> bytes:
        return w._hex(o["mid"], "mid", _MID)  # type: ignore[no-any-return]

    def data(value: object) -> str:
        if publication_fits(value):
            return value  # type: ignore[return-value]
        raise invalid(f"'data' must be a string of at most {MAX_PUBLICATION} bytes as JSON, "
                      f"got {show(value)}.")

    def count(value: object) -> int:
        if type(value) is int and 0 <= value < _COUNT:
            return value
        raise invalid(f"'count' must be an integer from 0 to 2**31, got {show(value)}.")

    decoders: dict[str, Callable[[Any], Any]] = {
        "pubsub.sub": lambda o: Subscribe(w._rid(o["rid"]), channel(o),
                                          w._seconds(o["ttl"], "ttl")),
        "pubsub.unsub": lambda o: Unsubscribe(w._rid(o["rid"]), channel(o)),
        "pubsub.pub": lambda o: Publish(w._rid(o["rid"]), channel(o), mid(o), data(o["data"])),
        "pubsub.ok": lambda o: PubSubOk(w._rid(o["rid"]), count(o["count"])),
        "pubsub.msg": lambda o: Delivery(channel(o), mid(o), w._hex(o["from"], "from", 32),
                                         data(o["data"])),
    }
    v = w.PROTOCOL_VERSION
    encoders: dict[type, Callable[[Any], Any]] = {
        Subscribe: lambda m: {"v": v, "t": "pubsub.sub", "rid": m.rid, "ch": m.channel.hex(),
                              "ttl": m.ttl},
        Unsubscribe: lambda m: {"v": v, "t": "pubsub.unsub", "rid": m.rid, "ch": m.channel.hex()},
        Publish: lambda m: {"v": v, "t": "pubsub.pub", "rid": m.rid, "ch": m.channel.hex(),
                            "mid": m.mid.hex(), "data": m.data},
        PubSubOk: lambda m: {"v": v, "t": "pubsub.ok", "rid": m.rid, "count": m.count},
        Delivery: lambda m: {"v": v, "t": "pubsub.msg", "ch": m.channel.hex(), "mid": m.mid.hex(),
                             "from": m.sender.hex(), "data": m.data},
    }
    return decoders, encoders
