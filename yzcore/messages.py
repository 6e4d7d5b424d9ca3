"""Wire messages, limits, error codes and the version rule.

The messages are frozen, slotted dataclasses; :mod:`yzcore.wire` turns them
into frames and back and is the only place that validates untrusted input.
Import them from :mod:`yzcore.wire`, which re-exports everything here.
"""


from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Final, TypeAlias

import orjson

from yzcore.exceptions import EncodeError, WireError

__all__ = [
    "PROTOCOL_VERSION", "MAX_FRAME", "ROLES", "MAX_RID", "MAX_NODES", "MAX_ADDR", "MAX_AGENT",
    "MAX_CAPS", "MAX_CAP", "MAX_LISTEN", "MAX_CODE", "MAX_ERROR_MESSAGE", "MAX_VALUE",
    "value_fits", "NONCE_MIN", "NONCE_MAX", "ErrorCode", "advice", "printable", "compatible",
    "check_version", "NodeInfo", "Hello", "Auth", "Ping", "Pong", "FindNode", "Nodes",
    "FindValue", "Value", "Store", "Stored", "Error", "Keep", "Message", "MESSAGE_TYPES",
    "REQUEST_TYPES", "RESPONSE_TYPES", "REPLY_TYPES",
]

PROTOCOL_VERSION: Final = "1.1"  #: ``major.minor``; peers interoperate within one major
MAX_FRAME: Final = 64 * 1024  #: largest frame in bytes, either way
ROLES: Final = ("node", "bridge", "browser", "bootstrap")  #: the roles a peer may claim
MAX_RID: Final = 2**53  #: request ids are integers 0 <= rid < MAX_RID (exact in JavaScript)
MAX_NODES: Final = 64  #: most NodeInfo entries in one nodes/value message
MAX_ADDR: Final = 512  #: longest address (URL), in characters
MAX_AGENT: Final = 128  #: longest agent string
MAX_CAPS: Final = 32  #: most capabilities in a hello
MAX_CAP: Final = 64  #: longest capability name
MAX_LISTEN: Final = 8  #: most listen addresses in a hello
MAX_CODE: Final = 64  #: longest error code
MAX_ERROR_MESSAGE: Final = 1024  #: longest error message
#: Longest stored value, in bytes as a JSON string: a store or value message carrying
#: it fits one frame whatever its rid and ttl (so a replica can always be sent on).
MAX_VALUE: Final = MAX_FRAME - 256
NONCE_MIN: Final = 16  #: shortest hello nonce, in bytes
NONCE_MAX: Final = 64  #: longest hello nonce, in bytes

_ID: Final = 32  # ids, keys and targets are all sha256-sized
_SIG: Final = 64
_MAX_VERSION: Final = 16  # characters of a "major.minor" string


class ErrorCode(enum.StrEnum):
    """The stable error codes of ``error`` messages and of :class:`WireError`."""

    MALFORMED_JSON = "MALFORMED_JSON"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    VERSION_MISMATCH = "VERSION_MISMATCH"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    ID_MISMATCH = "ID_MISMATCH"
    SELF_CONNECTION = "SELF_CONNECTION"
    HANDSHAKE_REQUIRED = "HANDSHAKE_REQUIRED"
    HANDSHAKE_TIMEOUT = "HANDSHAKE_TIMEOUT"
    RATE_LIMITED = "RATE_LIMITED"
    NOT_FOUND = "NOT_FOUND"
    VALUE_TOO_LARGE = "VALUE_TOO_LARGE"
    TIMEOUT = "TIMEOUT"
    PEER_UNREACHABLE = "PEER_UNREACHABLE"
    DUPLICATE_CONNECTION = "DUPLICATE_CONNECTION"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    WRONG_ROLE = "WRONG_ROLE"
    BRIDGE_AUTH_FAILED = "BRIDGE_AUTH_FAILED"
    RELAY_UNAVAILABLE = "RELAY_UNAVAILABLE"
    NO_PEERS = "NO_PEERS"
    BOOTSTRAP_UNREACHABLE = "BOOTSTRAP_UNREACHABLE"
    OVER_CAPACITY = "OVER_CAPACITY"
    DIAL_BACK_REFUSED = "DIAL_BACK_REFUSED"
    WEBRTC_FAILED = "WEBRTC_FAILED"
    WEBRTC_UNAVAILABLE = "WEBRTC_UNAVAILABLE"
    INTERNAL = "INTERNAL"


_C = ErrorCode
# Worded so that they read right on either side: in this node's log and in
# the `error` message it sends back to the peer.
_ADVICE: Final[dict[str, str]] = {
    _C.MALFORMED_JSON: "Each frame must be one UTF-8 JSON object; the sender does not speak the "
    "yzcore protocol (check that the URL points at a yzcore /dht endpoint).",
    _C.FRAME_TOO_LARGE: "Frames are limited to 64 KiB; send less per message.",
    _C.UNKNOWN_TYPE: "The sender uses a message type the receiver does not know; upgrade the "
    "older side.",
    _C.INVALID_MESSAGE: "A field is missing, of the wrong type or out of range; the sender has a "
    "bug or runs an incompatible build (see the wire reference).",
    _C.VERSION_MISMATCH: "Run the same major protocol version on both sides: upgrade the older "
    "node.",
    _C.BAD_SIGNATURE: "The hello signature did not verify: the key does not match the claims, or "
    "the hello was replayed or altered; the peer was refused.",
    _C.ID_MISMATCH: "The address now belongs to another node (restarted without its node.key?); "
    "drop the stale contact and look the id up again.",
    _C.SELF_CONNECTION: "This node dialled itself; make sure its bootstrap and peer addresses do "
    "not point at its own advertised address.",
    _C.HANDSHAKE_REQUIRED: "Complete the signed hello first; no other message is accepted before "
    "the handshake is done.",
    _C.HANDSHAKE_TIMEOUT: "The hello was not completed in time; check the peer runs yzcore and is "
    "not overloaded, then retry.",
    _C.RATE_LIMITED: "Too many requests; wait retry_after seconds, then retry.",
    _C.NOT_FOUND: "No node holds this key; it may have expired, so store it again or retry later.",
    _C.VALUE_TOO_LARGE: "The value does not fit in one 64 KiB frame; store a smaller value or "
    "split it over several keys.",
    _C.TIMEOUT: "The peer did not answer in time; retry, preferably with another peer.",
    _C.PEER_UNREACHABLE: "The peer cannot be reached at its address; check that it runs and that "
    "the address is reachable from here (firewall, NAT, container port mapping).",
    _C.DUPLICATE_CONNECTION: "A connection to this peer already exists and the duplicate was "
    "closed; nothing to do.",
    _C.SHUTTING_DOWN: "The peer is shutting down; use another peer.",
    _C.WRONG_ROLE: "The peer's role does not serve this: send introductions requests to a "
    "bootstrap server, reconnect requests to a bridge and DHT requests to nodes.",
    _C.BRIDGE_AUTH_FAILED: "The bridge could not prove the shared secret: give the bridge and the "
    "bootstrap server the same --bridge-secret-file.",
    _C.RELAY_UNAVAILABLE: "The bridge would not relay (no connection to that peer, no answer "
    "from it, or too many relays already): retry shortly, through another of its bridges, or "
    "look its id up again for its current address.",
    _C.NO_PEERS: "No peer could be reached; check the --peer and --bootstrap URLs and that those "
    "nodes run. The node keeps retrying with backoff.",
    _C.BOOTSTRAP_UNREACHABLE: "No bootstrap server answered; check the --bootstrap URLs. Nodes "
    "that already have peers do not need one; this node keeps retrying with backoff.",
    _C.OVER_CAPACITY: "The peer has as many connections as it keeps; keep yours with another "
    "peer (nodes do this by themselves).",
    _C.DIAL_BACK_REFUSED: "A bootstrap server dials back only addresses on the asker's own IP "
    "address; run the check on the host the address belongs to.",
    _C.WEBRTC_FAILED: "The two peers found no WebRTC path (UDP dropped by a firewall, or NAT on "
    "both sides): configure a STUN/TURN server with --ice-server; traffic goes through a relay "
    "meanwhile.",
    _C.WEBRTC_UNAVAILABLE: "The peer cannot take WebRTC (its webrtc transport is not installed: "
    "pip install 'yzcore[webrtc]'); it is reached through a relay instead.",
    _C.INTERNAL: "The peer hit an internal error; report it to its operator with the log lines "
    "around it.",
}
_DEFAULT_ADVICE: Final = "See the error reference in the yzcore docs for this code."


def advice(code: str) -> str:
    """One sentence telling the user what to do about ``code``.

    Unknown codes (say, from a newer peer) get a pointer to the error reference.
    """
    return _ADVICE.get(code, _DEFAULT_ADVICE)


def printable(text: str, limit: int = MAX_ERROR_MESSAGE) -> str:
    """``text`` made fit for a message's text field: unless it is printable
    already, each run of whitespace or unprintable characters becomes one
    space; then it is cut to ``limit`` characters (ending ``...``).

    For text from outside, such as a web server's answer or a peer's close
    reason, put into an ``error`` or ``dial_back_result``: the encoder refuses
    to send unprintable text, and a log line should stay one line.
    """
    if not text.isprintable():
        text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def value_fits(value: str) -> bool:
    """Whether ``value`` is at most :data:`MAX_VALUE` bytes as a JSON string."""
    # A character takes 6 bytes at most ("\\u0000"): most values need no encoding.
    return 6 * len(value) + 2 <= MAX_VALUE or len(orjson.dumps(value)) <= MAX_VALUE


def check_value(value: str) -> None:
    """Refuse a value of ours over :data:`MAX_VALUE` bytes as JSON, or that is no text.

    Raises:
        EncodeError: ``VALUE_TOO_LARGE``, or ``INVALID_MESSAGE`` for a string that
            is not Unicode text (a lone surrogate): no frame could carry it.
    """
    try:  # orjson refuses a lone surrogate (a TypeError), and says the size
        size = len(orjson.dumps(value)) if isinstance(value, str) else -1
    except TypeError:
        size = -1
    if size < 0:
        raise EncodeError(_C.INVALID_MESSAGE, "the value must be Unicode text.")
    if size > MAX_VALUE:
        raise EncodeError(_C.VALUE_TOO_LARGE, f"the value is over {MAX_VALUE} bytes as JSON.")


# -- versions ---------------------------------------------------------------


def _show(value: object) -> str:
    """A short, safe description of a wire value for an error message."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"  # repr() may refuse huge ints
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:40] + "..."
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_SHARED: dict[str, str] = {}
MAX_SHARED: Final = 4096


def shared(text: str) -> str:
    """One copy of a string many connections keep: the version, agent and
    capabilities every peer's hello repeats, peers' IP addresses.

    Bounded, not ``sys.intern``: the strings come from peers, and one that
    sent a new one each time must not grow the process (on some CPython
    builds interned strings are never freed). Past the bound, strings are
    kept as they came.
    """
    copy = _SHARED.get(text)
    if copy is None:
        copy = text
        if len(_SHARED) < MAX_SHARED:
            _SHARED[text] = text
    return copy


def _major(version: object) -> str | None:
    """The major part of a valid ``major.minor`` string, else None."""
    if not isinstance(version, str) or len(version) > _MAX_VERSION:
        return None
    major, dot, minor = version.partition(".")
    # isascii() too: str.isdigit() accepts digits of other scripts, like "²".
    if dot and major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit():
        return major.lstrip("0") or "0"
    return None


def compatible(a: str, b: str) -> bool:
    """Whether protocol versions ``a`` and ``b`` interoperate: same major.

    False when either is not a ``major.minor`` string.
    """
    major = _major(a)
    return major is not None and major == _major(b)


def _mismatch_text(theirs: object) -> str:
    shown = theirs if _major(theirs) is not None else _show(theirs)
    return (
        f"peer speaks protocol {shown}, this node speaks {PROTOCOL_VERSION}; nodes interoperate "
        f"only within one major version ({PROTOCOL_VERSION.partition('.')[0]}.x)"
    )


def check_version(theirs: str) -> None:
    """Refuse a peer whose protocol version is not compatible with ours.

    Raises:
        WireError: ``VERSION_MISMATCH``, naming both versions.
    """
    if not compatible(theirs, PROTOCOL_VERSION):
        raise WireError(_C.VERSION_MISMATCH, _mismatch_text(theirs) + ".")


# -- messages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A contact as it travels in ``nodes`` and ``value`` replies.

    Attributes:
        id: The 32-byte node id.
        addr: The URL the node advertises, or None if it accepts no inbound connections.
        role: One of :data:`ROLES`.
    """

    id: bytes
    addr: str | None
    role: str = "node"


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message both ways: who we are and what we can do (unsigned part).

    Attributes:
        version: The sender's protocol version; travels as the frame's ``v``.
        key: The sender's 32-byte Ed25519 public key; its sha256 is the node id.
        nonce: 16 to 64 fresh random bytes that the peer must sign in its ``auth``.
        role: One of :data:`ROLES`.
        listen: The addresses the sender listens on (at most 8).
        advertise: The URL others should dial, or None if it accepts no inbound connections.
        caps: Capability names, e.g. transports or optional features (at most 32).
        agent: Software name and version, e.g. ``yzcore/1.2.0``.
    """

    TYPE: ClassVar[str] = "hello"
    version: str
    key: bytes
    nonce: bytes
    role: str
    listen: tuple[str, ...]
    advertise: str | None
    caps: tuple[str, ...]
    agent: str


@dataclass(frozen=True, slots=True)
class Auth:
    """Proof of key possession, sent after the peer's hello.

    Attributes:
        sig: 64-byte Ed25519 signature of the transcript (see :mod:`yzcore.protocol.handshake`).
    """

    TYPE: ClassVar[str] = "auth"
    sig: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness request.

    Attributes:
        rid: Request id, echoed by the reply.
    """

    TYPE: ClassVar[str] = "ping"
    rid: int


@dataclass(frozen=True, slots=True)
class Pong:
    """Reply to :class:`Ping`.

    Attributes:
        rid: The request id of the ping.
    """

    TYPE: ClassVar[str] = "pong"
    rid: int


@dataclass(frozen=True, slots=True)
class FindNode:
    """Ask for the contacts closest to ``target``.

    Attributes:
        rid: Request id, echoed by the reply.
        target: The 32-byte id to look up.
        emergency: The asker is joining (its lookup of its own id): a receiver
            whose rate limit would refuse it may let it through on its small,
            audited bypass budget (A3.2). Sent only when true.
    """

    TYPE: ClassVar[str] = "find_node"
    rid: int
    target: bytes
    emergency: bool = False


@dataclass(frozen=True, slots=True)
class Nodes:
    """Reply to :class:`FindNode`.

    Attributes:
        rid: The request id of the find_node.
        nodes: The closest contacts the sender knows (at most 64).
    """

    TYPE: ClassVar[str] = "nodes"
    rid: int
    nodes: tuple[NodeInfo, ...]


@dataclass(frozen=True, slots=True)
class FindValue:
    """Ask for the value stored under ``key``, or closer contacts.

    Attributes:
        rid: Request id, echoed by the reply.
        key: The 32-byte key (sha256 of the value's name).
    """

    TYPE: ClassVar[str] = "find_value"
    rid: int
    key: bytes


@dataclass(frozen=True, slots=True)
class Value:
    """Reply to :class:`FindValue`.

    Attributes:
        rid: The request id of the find_value.
        value: The stored value, or None when the sender does not hold it.
        nodes: When ``value`` is None, contacts closer to the key (at most 64).
    """

    TYPE: ClassVar[str] = "value"
    rid: int
    value: str | None
    nodes: tuple[NodeInfo, ...]


@dataclass(frozen=True, slots=True)
class Store:
    """Ask the peer to keep ``value`` under ``key`` for ``ttl`` seconds.

    Attributes:
        rid: Request id, echoed by the reply.
        key: The 32-byte key (sha256 of the value's name).
        value: The value; it must fit, JSON-escaped, in one frame.
        ttl: Seconds to keep it: finite and >= 0.
    """

    TYPE: ClassVar[str] = "store"
    rid: int
    key: bytes
    value: str
    ttl: float


@dataclass(frozen=True, slots=True)
class Stored:
    """Reply to :class:`Store`: the value is kept.

    Attributes:
        rid: The request id of the store.
    """

    TYPE: ClassVar[str] = "stored"
    rid: int


@dataclass(frozen=True, slots=True)
class Error:
    """A refusal or failure, in reply to a request or to a bad frame.

    Attributes:
        rid: The request id it answers, or None if it answers no readable request.
        code: A stable code, usually an :class:`ErrorCode` (a newer peer may send others).
        message: What went wrong and what to do, for humans (at most 1024 characters).
        retry_after: Seconds to wait before retrying (``RATE_LIMITED``), or None.
    """

    TYPE: ClassVar[str] = "error"
    rid: int | None
    code: str
    message: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Keep:
    """"I count this connection among the ones I keep; do you?"

    Sent by whichever end decides to keep an open connection (usually its
    dialer, while it keeps fewer than its target). The other end keeps it
    too, and says nothing; when it already keeps as many as it may, it makes
    room by releasing one it dialled, or, with none to release, answers with
    an ``error`` of code ``OVER_CAPACITY`` (no ``rid``). Whoever receives that
    error keeps one elsewhere. Both ends thus agree on which connections are
    kept (B7.2).
    """

    TYPE: ClassVar[str] = "keep"


Message: TypeAlias = (
    Hello | Auth | Ping | Pong | FindNode | Nodes | FindValue | Value | Store | Stored | Error | Keep
)

#: The message class of each wire type name.
MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.TYPE: cls
    for cls in (Hello, Auth, Ping, Pong, FindNode, Nodes, FindValue, Value, Store, Stored, Error,
                Keep)
}
REQUEST_TYPES: Final = (Ping, FindNode, FindValue, Store)  #: messages that expect a reply
RESPONSE_TYPES: Final = (Pong, Nodes, Value, Stored, Error)  #: replies, matched by ``rid``
#: The successful reply of each request type (any request may also get an Error).
REPLY_TYPES: Final[dict[type[Message], type[Message]]] = {
    Ping: Pong, FindNode: Nodes, FindValue: Value, Store: Stored,
}
