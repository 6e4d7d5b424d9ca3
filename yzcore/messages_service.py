"""Service messages: introductions, heartbeats, bridge registration, relay, signals.

The DHT messages (:mod:`yzcore.messages`) are what nodes say to each other;
these are what nodes say to the bootstrap server and to bridges. They travel
through the same codec: :mod:`yzcore.wire` installs the decoders and encoders
below, and remains the only place untrusted input is checked. Import them
from :mod:`yzcore.wire`.

Relay frames (``relay``, ``relay_ready``, ``relay_accept``) are the exception
to "hello first": they are the first frame on a connection to a bridge that
will be spliced to another, and the end-to-end hello follows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, Final

from yzcore.messages import NodeInfo

__all__ = [
    "MAX_SIGNAL",
    "MAX_WANT",
    "SERVICE_REPLIES",
    "SERVICE_TYPES",
    "Challenge",
    "DialBack",
    "DialBackResult",
    "Heartbeat",
    "Introduce",
    "Introductions",
    "Reconnect",
    "Register",
    "Registered",
    "RelayAccept",
    "RelayConnect",
    "RelayOpen",
    "RelayReady",
    "Signal",
]

MAX_WANT: Final = 64  #: most introductions one request may ask for
MAX_SIGNAL: Final = 16 * 1024  #: largest signal payload, in bytes of JSON
_COUNT: Final = 2**31  # counters in heartbeats stay below this
_TOKEN: Final = 16
_MAC: Final = 32


@dataclass(frozen=True, slots=True)
class Introduce:
    """Ask a bootstrap server for peers to dial.

    Attributes:
        rid: Request id, echoed by the reply.
        want: How many peers (1 to 64).
    """

    TYPE: ClassVar[str] = "introduce"
    rid: int
    want: int


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Ask a bridge for live peers: the node lost its connections.

    Attributes:
        rid: Request id, echoed by the reply.
        want: How many peers (1 to 64).
    """

    TYPE: ClassVar[str] = "reconnect"
    rid: int
    want: int


@dataclass(frozen=True, slots=True)
class Introductions:
    """Reply to :class:`Introduce` and :class:`Reconnect`.

    Attributes:
        rid: The request id.
        peers: Live nodes to dial, spread across the id space (at most 64).
        bridges: Healthy bridges (at most 64).
        genesis: True when the network is empty: the asker is its first node.
    """

    TYPE: ClassVar[str] = "introductions"
    rid: int
    peers: tuple[NodeInfo, ...]
    bridges: tuple[NodeInfo, ...]
    genesis: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A node tells the bootstrap server it lives, and how it is doing.

    Attributes:
        healthy: Its health by ARCHITECTURE §4.
        connections: Its live connections.
        routing_table: Contacts in its routing table.
        probe: Seconds its last find_node took, or None before the first.
        peers: The ids of the peers it is connected to (at most 64; the
            dashboard's connection graph).
        sent: Frames it has sent on its open connections (optional).
        received: Frames it has received on them (optional).
    """

    TYPE: ClassVar[str] = "heartbeat"
    healthy: bool
    connections: int
    routing_table: int
    probe: float | None = None
    peers: tuple[bytes, ...] = ()
    sent: int | None = None
    received: int | None = None


@dataclass(frozen=True, slots=True)
class Challenge:
    """The bootstrap server asks a bridge to prove it holds the shared secret.

    Attributes:
        nonce: 16 to 64 fresh random bytes.
    """

    TYPE: ClassVar[str] = "challenge"
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Register:
    """A bridge's answer to :class:`Challenge`.

    Attributes:
        rid: Request id, echoed by the reply.
        mac: HMAC-SHA256 (see :func:`yzcore.bootstrap.auth.bridge_mac`).
    """

    TYPE: ClassVar[str] = "register"
    rid: int
    mac: bytes


@dataclass(frozen=True, slots=True)
class Registered:
    """Reply to :class:`Register`: the bridge is in the registry.

    Attributes:
        rid: The request id of the register.
    """

    TYPE: ClassVar[str] = "registered"
    rid: int


@dataclass(frozen=True, slots=True)
class Signal:
    """A WebRTC offer, answer or candidate, relayed by the bootstrap server.

    Attributes:
        to: The 32-byte id of the recipient.
        frm: The sender's id; the relay fills it in from the verified hello.
        data: The payload, a JSON object (at most 16 KiB).
    """

    TYPE: ClassVar[str] = "signal"
    to: bytes
    frm: bytes | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RelayConnect:
    """First frame to a bridge: splice this connection to the peer ``to``.

    Attributes:
        to: The 32-byte id of the peer to reach.
    """

    TYPE: ClassVar[str] = "relay"
    to: bytes


@dataclass(frozen=True, slots=True)
class RelayReady:
    """The bridge spliced the connection: the end-to-end hello may start."""

    TYPE: ClassVar[str] = "relay_ready"


@dataclass(frozen=True, slots=True)
class RelayOpen:
    """The bridge asks a peer it relays for to open a connection for a dialer.

    Attributes:
        token: 16 random bytes naming the waiting dialer.
    """

    TYPE: ClassVar[str] = "relay_open"
    token: bytes


@dataclass(frozen=True, slots=True)
class RelayAccept:
    """First frame of the connection that answers :class:`RelayOpen`.

    Attributes:
        token: The token of the relay_open.
    """

    TYPE: ClassVar[str] = "relay_accept"
    token: bytes


@dataclass(frozen=True, slots=True)
class DialBack:
    """Ask a bootstrap server to dial ``addr`` and say what happened (A6.2, A6.3).

    The server dials only addresses on the asker's own IP address, as it sees
    it: a way to check one's own advertised address and port mapping, not a
    way to make the server dial others.

    Attributes:
        rid: Request id, echoed by the reply.
        addr: The URL to dial, e.g. the node's ``--advertise``.
    """

    TYPE: ClassVar[str] = "dial_back"
    rid: int
    addr: str


@dataclass(frozen=True, slots=True)
class DialBackResult:
    """Reply to :class:`DialBack`.

    Attributes:
        rid: The request id.
        ok: The dial and a hello completed.
        code: Why not (a dial failure's code), or None.
        message: What happened, for humans.
        seconds: How long the attempt took.
        node_id: Who answered the hello, if anyone did.
    """

    TYPE: ClassVar[str] = "dial_back_result"
    rid: int
    ok: bool
    code: str | None
    message: str
    seconds: float
    node_id: bytes | None = None


SERVICE_TYPES: Final = (Introduce, Introductions, Reconnect, Heartbeat, Challenge, Register,
                        Registered, Signal, RelayConnect, RelayReady, RelayOpen, RelayAccept,
                        DialBack, DialBackResult)
#: The successful reply of each service request.
SERVICE_REPLIES: Final = {Introduce: Introductions, Reconnect: Introductions, Register: Registered,
                          DialBack: DialBackResult}


def codecs(w: ModuleType) -> tuple[dict[str, Callable[[Any], Any]], dict[type, Callable[[Any], Any]]]:
    """Decoders and encoders of the service messages, built on the codec's field checks.

    ``w`` is :mod:`yzcore.wire` (passed in: it imports this module).
    """
    invalid = w._invalid
    show = w._show

    def want(value: object) -> int:
        if type(value) is int and 1 <= value <= MAX_WANT:
            return value
        raise invalid(f"'want' must be an integer from 1 to {MAX_WANT}, got {show(value)}.")

    def count(value: object, name: str) -> int:
        if type(value) is int and 0 <= value < _COUNT:
            return value
        raise invalid(f"{name!r} must be an integer from 0 to 2**31, got {show(value)}.")

    def opt_count(value: object, name: str) -> int | None:
        return None if value is None else count(value, name)

    def ids(value: object) -> tuple[bytes, ...]:
        if isinstance(value, list) and len(value) <= MAX_WANT:
            return tuple(w._hex(v, f"peers[{i}]", 32) for i, v in enumerate(value))
        raise invalid(f"'peers' must be a list of at most {MAX_WANT} ids, got {show(value)}.")

    def flag(value: object, name: str) -> bool:
        if value is True or value is False:
            return value
        raise invalid(f"{name!r} must be true or false, got {show(value)}.")

    def data(value: object) -> dict[str, Any]:
        if isinstance(value, dict):
            import orjson
            if len(orjson.dumps(value)) <= MAX_SIGNAL:
                return value
        raise invalid(f"'data' must be a JSON object of at most {MAX_SIGNAL} bytes, "
                      f"got {show(value)}.")

    def frm(value: object) -> bytes | None:
        return None if value is None else w._hex(value, "frm", 32)

    decoders: dict[str, Callable[[Any], Any]] = {
        "introduce": lambda o: Introduce(w._rid(o["rid"]), want(o["want"])),
        "reconnect": lambda o: Reconnect(w._rid(o["rid"]), want(o["want"])),
        "introductions": lambda o: Introductions(
            w._rid(o["rid"]), w._nodes(o["peers"]), w._nodes(o["bridges"]),
            flag(o.get("genesis", False), "genesis")),
        "heartbeat": lambda o: Heartbeat(
            flag(o["healthy"], "healthy"), count(o["connections"], "connections"),
            count(o["routing_table"], "routing_table"),
            None if o.get("probe") is None else w._seconds(o["probe"], "probe"),
            ids(o.get("peers", [])), opt_count(o.get("sent"), "sent"),
            opt_count(o.get("received"), "received")),
        "challenge": lambda o: Challenge(w._nonce(o["nonce"])),
        "register": lambda o: Register(w._rid(o["rid"]), w._hex(o["mac"], "mac", _MAC)),
        "registered": lambda o: Registered(w._rid(o["rid"])),
        "signal": lambda o: Signal(w._hex(o["to"], "to", 32), frm(o.get("frm")), data(o["data"])),
        "relay": lambda o: RelayConnect(w._hex(o["to"], "to", 32)),
        "relay_ready": lambda o: RelayReady(),
        "relay_open": lambda o: RelayOpen(w._hex(o["token"], "token", _TOKEN)),
        "relay_accept": lambda o: RelayAccept(w._hex(o["token"], "token", _TOKEN)),
        "dial_back": lambda o: DialBack(w._rid(o["rid"]), w._text(o["addr"], "addr", w.MAX_ADDR)),
        "dial_back_result": lambda o: DialBackResult(
            w._rid(o["rid"]), flag(o["ok"], "ok"),
            None if o.get("code") is None else w._text(o["code"], "code", w.MAX_CODE),
            w._text(o["message"], "message", w.MAX_ERROR_MESSAGE, empty=True),
            w._seconds(o["seconds"], "seconds"),
            None if o.get("node_id") is None else w._hex(o["node_id"], "node_id", 32)),
    }
    v = w.PROTOCOL_VERSION
    nodes = w._e_nodes
    encoders: dict[type, Callable[[Any], Any]] = {
        Introduce: lambda m: {"v": v, "t": "introduce", "rid": m.rid, "want": m.want},
        Reconnect: lambda m: {"v": v, "t": "reconnect", "rid": m.rid, "want": m.want},
        Introductions: lambda m: {"v": v, "t": "introductions", "rid": m.rid,
                                  "peers": nodes(m.peers), "bridges": nodes(m.bridges),
                                  "genesis": m.genesis},
        Heartbeat: lambda m: {"v": v, "t": "heartbeat", "healthy": m.healthy,
                              "connections": m.connections, "routing_table": m.routing_table,
                              "probe": m.probe, "peers": [p.hex() for p in m.peers],
                              "sent": m.sent, "received": m.received},
        Challenge: lambda m: {"v": v, "t": "challenge", "nonce": m.nonce.hex()},
        Register: lambda m: {"v": v, "t": "register", "rid": m.rid, "mac": m.mac.hex()},
        Registered: lambda m: {"v": v, "t": "registered", "rid": m.rid},
        Signal: lambda m: {"v": v, "t": "signal", "to": m.to.hex(),
                           "frm": m.frm.hex() if m.frm is not None else None, "data": m.data},
        RelayConnect: lambda m: {"v": v, "t": "relay", "to": m.to.hex()},
        RelayReady: lambda m: {"v": v, "t": "relay_ready"},
        RelayOpen: lambda m: {"v": v, "t": "relay_open", "token": m.token.hex()},
        RelayAccept: lambda m: {"v": v, "t": "relay_accept", "token": m.token.hex()},
        DialBack: lambda m: {"v": v, "t": "dial_back", "rid": m.rid, "addr": m.addr},
        DialBackResult: lambda m: {"v": v, "t": "dial_back_result", "rid": m.rid, "ok": m.ok,
                                   "code": m.code, "message": m.message, "seconds": m.seconds,
                                   "node_id": m.node_id.hex() if m.node_id is not None else None},
    }
    return decoders, encoders
