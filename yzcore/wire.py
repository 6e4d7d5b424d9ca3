"""The wire format: messages, limits, error codes, and the one codec.

Every frame is one JSON object (UTF-8, at most :data:`MAX_FRAME` bytes)::

    {"v": "1.0", "t": "find_node", "rid": 7, "target": "<64 hex digits>"}

``v`` is the sender's protocol version (``major.minor``), ``t`` the message
type, and the other keys are the fields of the message's dataclass. Bytes
travel as lowercase hex. Keys this version does not know are ignored, so a
newer minor version may add optional fields without breaking older nodes.

:func:`decode` is the only place where untrusted input is checked: whatever it
returns is well-formed (right types, lengths and ranges), and whatever is
wrong becomes a :class:`~yzcore.exceptions.WireError` with a stable
:class:`ErrorCode` and, when the frame carried one, the request id to answer.
It never raises anything else for any input. :func:`encode` applies the same
rules to what this node sends, so a bug here is caught as a
:class:`~yzcore.exceptions.EncodeError` before a peer ever sees it.

The full message table is in ``docs/reference/wire.md``. This module re-exports
every message, the service and pubsub ones included.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, Final, TypeAlias

import orjson

from yzcore.exceptions import EncodeError, InvalidArgument, WireError
from yzcore import messages as _messages, messages_pubsub as _pubsub, messages_service as _service
from yzcore.messages_pubsub import *  # noqa: F403 - re-exported through __all__
from yzcore.messages_service import *  # noqa: F403 - re-exported through __all__
from yzcore.messages import (  # noqa: F401 - all re-exported through __all__
    PROTOCOL_VERSION,
    MAX_FRAME,
    ROLES,
    MAX_RID,
    MAX_NODES,
    MAX_ADDR,
    MAX_AGENT,
    MAX_CAPS,
    MAX_CAP,
    MAX_LISTEN,
    MAX_CODE,
    MAX_ERROR_MESSAGE,
    MAX_VALUE,
    value_fits,
    NONCE_MIN,
    NONCE_MAX,
    ErrorCode,
    advice,
    printable,
    compatible,
    check_version,
    NodeInfo,
    Hello,
    Auth,
    Ping,
    Pong,
    FindNode,
    Nodes,
    FindValue,
    Value,
    Store,
    Stored,
    Error,
    Keep,
    Message,
    MESSAGE_TYPES,
    REQUEST_TYPES,
    RESPONSE_TYPES,
    REPLY_TYPES,
)
from yzcore.messages import (  # noqa: F401 - the codec's own helpers
    _show,
    _C,
    _ID,
    _SIG,
    _major,
    _mismatch_text,
    shared,
)

__all__ = [*_messages.__all__, *_service.__all__, *_pubsub.__all__,
           "encode", "decode", "error_reply"]

# -- field checks -------------------------------------------------------------
# Each takes a wire value (as orjson produced it, or as an encoder built it)
# and returns the in-memory value, or raises INVALID_MESSAGE naming the field.


def _invalid(text: str) -> WireError:
    return WireError(_C.INVALID_MESSAGE, text)


def _rid(value: object) -> int:
    # type() rather than isinstance(): a JSON true must not pass as 1.
    if type(value) is int and 0 <= value < MAX_RID:
        return value
    raise _invalid(f"'rid' must be an integer 0 <= rid < 2**53, got {_show(value)}.")


def _opt_rid(value: object) -> int | None:
    return None if value is None else _rid(value)


def _hex(value: object, name: str, size: int) -> bytes:
    if isinstance(value, str) and len(value) == 2 * size:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            pass
        else:
            # fromhex also accepts spaces (fewer bytes) and upper case.
            if len(raw) == size and raw.hex() == value:
                return raw
    raise _invalid(f"{name!r} must be {size} bytes as {2 * size} lowercase hex digits, "
                   f"got {_show(value)}.")


def _nonce(value: object) -> bytes:
    if isinstance(value, str) and 2 * NONCE_MIN <= len(value) <= 2 * NONCE_MAX:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            pass
        else:
            if 2 * len(raw) == len(value) and raw.hex() == value:
                return raw
    raise _invalid(
        f"'nonce' must be {NONCE_MIN} to {NONCE_MAX} bytes as lowercase hex, got {_show(value)}."
    )


def _text(value: object, name: str, limit: int, *, empty: bool = False) -> str:
    # Printable only: these strings end up in logs, status pages and dashboards.
    if (
        isinstance(value, str)
        and len(value) <= limit
        and (empty or value)
        and value.isprintable()
    ):
        return value
    what = "" if empty else "non-empty "
    raise _invalid(
        f"{name!r} must be a {what}printable string of at most {limit} characters, "
        f"got {_show(value)}."
    )


def _opt_addr(value: object, name: str) -> str | None:
    return None if value is None else _text(value, name, MAX_ADDR)


def _texts(value: object, name: str, count: int, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > count:
        raise _invalid(f"{name!r} must be an array of at most {count} strings, got {_show(value)}.")
    return tuple([_text(item, f"{name}[{i}]", limit) for i, item in enumerate(value)])


_ROLE_NAMES: Final = {role: role for role in ROLES}


def _role(value: object) -> str:
    # Our own copy of the name, not the decoded one: a node keeps the role of
    # every contact and connection, and a few constants serve them all.
    role = _ROLE_NAMES.get(value) if isinstance(value, str) else None
    if role is not None:
        return role
    raise _invalid(f"'role' must be one of {', '.join(ROLES)}, got {_show(value)}.")


def _seconds(value: object, name: str) -> float:
    cls = type(value)
    if cls is float or cls is int:
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except OverflowError:
            seconds = math.inf
        # Also false for NaN, which orjson would otherwise send as null.
        if 0.0 <= seconds < math.inf:
            return seconds
    raise _invalid(f"{name!r} must be a finite number of seconds >= 0, got {_show(value)}.")


_fromhex = bytes.fromhex
# Validated contacts by their wire form. Lookups see the same contacts over and
# over (everyone's k closest overlap), and a hit skips the hex round trip and
# the dataclass construction, most of the cost of a nodes reply. Values are
# immutable, so sharing them is safe; the bound keeps memory flat.
_NODE_CACHE: dict[tuple[object, object, object], NodeInfo] = {}
_NODE_CACHE_MAX: Final = 4096


def _node(value: object, index: int) -> NodeInfo:
    # The common case inline, on the hottest path of a lookup. Anything
    # unusual takes the slow path, which applies the same rules and names
    # what is wrong.
    if isinstance(value, dict):
        node_id = value.get("id")
        addr = value.get("addr", _node)  # a sentinel: a function is never JSON
        role = value.get("role", "node")
        if type(node_id) is str and (type(addr) is str or addr is None) and type(role) is str:
            key = (node_id, addr, role)
            hit = _NODE_CACHE.get(key)
            if hit is not None:
                return hit
            if (
                len(node_id) == 2 * _ID
                and (addr is None or (0 < len(addr) <= MAX_ADDR and addr.isprintable()))
                and role in ROLES
            ):
                try:
                    raw = _fromhex(node_id)
                except ValueError:
                    raw = b""
                if len(raw) == _ID and raw.hex() == node_id:
                    node = NodeInfo(raw, addr, role)
                    if len(_NODE_CACHE) >= _NODE_CACHE_MAX:
                        _NODE_CACHE.clear()
                    _NODE_CACHE[key] = node
                    return node
    return _node_slow(value, index)


def _node_slow(value: object, index: int) -> NodeInfo:
    if not isinstance(value, dict):
        raise _invalid(f"nodes[{index}] must be an object, got {_show(value)}.")
    try:
        role = value.get("role", "node")
        return NodeInfo(
            _hex(value["id"], "id", _ID),
            _opt_addr(value["addr"], "addr"),
            role if role == "node" else _role(role),
        )
    except KeyError as exc:
        raise _invalid(f"nodes[{index}] lacks the field {exc.args[0]!r}.") from None
    except WireError as exc:
        raise _invalid(f"nodes[{index}]: {exc.message}") from None


def _nodes(value: object) -> tuple[NodeInfo, ...]:
    if not isinstance(value, list | tuple) or len(value) > MAX_NODES:
        raise _invalid(
            f"'nodes' must be an array of at most {MAX_NODES} nodes, got {_show(value)}."
        )
    return tuple([_node(item, i) for i, item in enumerate(value)])


def _value(value: object) -> str:
    if not isinstance(value, str):
        raise _invalid(f"'value' must be a string, got {_show(value)}.")
    if not value_fits(value):
        raise WireError(_C.VALUE_TOO_LARGE, f"the value is over {MAX_VALUE} bytes as JSON.")
    return value


# -- decoders: wire object -> message -------------------------------------------

_Obj: TypeAlias = dict[str, Any]


def _d_hello(o: _Obj) -> Hello:
    version = o["v"]
    if _major(version) is None:  # decode() checked it, but encode() comes here directly
        raise _invalid(f"'v' must be a \"major.minor\" string, got {_show(version)}.")
    # The fields are checked in this order (the first bad one is named). A
    # verified hello is kept for the connection's life; its version, agent
    # and capabilities are the same few words from every peer: shared, no
    # connection holds copies of its own.
    key, nonce, role = _hex(o["key"], "key", _ID), _nonce(o["nonce"]), _role(o["role"])
    listen = _texts(o["listen"], "listen", MAX_LISTEN, MAX_ADDR)
    advertise = _opt_addr(o["advertise"], "advertise")
    if listen and advertise == listen[0]:
        advertise = listen[0]
    caps = tuple([shared(cap) for cap in _texts(o["caps"], "caps", MAX_CAPS, MAX_CAP)])
    agent = shared(_text(o["agent"], "agent", MAX_AGENT, empty=True))
    return Hello(shared(version), key, nonce, role, listen, advertise, caps, agent)


def _d_auth(o: _Obj) -> Auth:
    return Auth(_hex(o["sig"], "sig", _SIG))


def _d_error(o: _Obj) -> Error:
    message = o["message"]
    if not isinstance(message, str) or len(message) > MAX_ERROR_MESSAGE:
        raise _invalid(
            f"'message' must be a string of at most {MAX_ERROR_MESSAGE} characters, "
            f"got {_show(message)}."
        )
    retry = o.get("retry_after")
    return Error(_opt_rid(o["rid"]), _text(o["code"], "code", MAX_CODE), message,
                 None if retry is None else _seconds(retry, "retry_after"))


_DECODERS: Final[dict[str, Callable[[_Obj], Message]]] = {
    "hello": _d_hello,
    "auth": _d_auth,
    "ping": lambda o: Ping(_rid(o["rid"])),
    "pong": lambda o: Pong(_rid(o["rid"])),
    "find_node": lambda o: FindNode(_rid(o["rid"]), _hex(o["target"], "target", _ID),
                                    o.get("emergency") is True),
    "nodes": lambda o: Nodes(_rid(o["rid"]), _nodes(o["nodes"])),
    "find_value": lambda o: FindValue(_rid(o["rid"]), _hex(o["key"], "key", _ID)),
    "value": lambda o: Value(
        _rid(o["rid"]), None if o["value"] is None else _value(o["value"]), _nodes(o["nodes"])
    ),
    "store": lambda o: Store(
        _rid(o["rid"]), _hex(o["key"], "key", _ID), _value(o["value"]), _seconds(o["ttl"], "ttl")
    ),
    "stored": lambda o: Stored(_rid(o["rid"])),
    "error": _d_error,
    "keep": lambda o: Keep(),
}


# -- encoders: message -> wire object -------------------------------------------

_V: Final = PROTOCOL_VERSION


def _e_nodes(nodes: tuple[NodeInfo, ...]) -> list[dict[str, Any]]:
    return [{"id": n.id.hex(), "addr": n.addr, "role": n.role} for n in nodes]


_ENCODERS: Final[dict[type, Callable[[Any], _Obj]]] = {
    Hello: lambda m: {
        "v": m.version, "t": "hello", "key": m.key.hex(), "nonce": m.nonce.hex(),
        "role": m.role, "listen": list(m.listen), "advertise": m.advertise,
        "caps": list(m.caps), "agent": m.agent,
    },
    Auth: lambda m: {"v": _V, "t": "auth", "sig": m.sig.hex()},
    Ping: lambda m: {"v": _V, "t": "ping", "rid": m.rid},
    Pong: lambda m: {"v": _V, "t": "pong", "rid": m.rid},
    FindNode: lambda m: {"v": _V, "t": "find_node", "rid": m.rid, "target": m.target.hex(),
                         **({"emergency": True} if m.emergency else {})},
    Nodes: lambda m: {"v": _V, "t": "nodes", "rid": m.rid, "nodes": _e_nodes(m.nodes)},
    FindValue: lambda m: {"v": _V, "t": "find_value", "rid": m.rid, "key": m.key.hex()},
    Value: lambda m: {"v": _V, "t": "value", "rid": m.rid, "value": m.value,
                      "nodes": _e_nodes(m.nodes)},
    Store: lambda m: {"v": _V, "t": "store", "rid": m.rid, "key": m.key.hex(), "value": m.value,
                      "ttl": m.ttl},
    Stored: lambda m: {"v": _V, "t": "stored", "rid": m.rid},
    Error: lambda m: {"v": _V, "t": "error", "rid": m.rid, "code": str(m.code),
                      "message": m.message, "retry_after": m.retry_after},
    Keep: lambda m: {"v": _V, "t": "keep"},
}


# -- the codec ------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """The frame of ``msg``: one compact JSON object, UTF-8.

    The message is checked against the same rules :func:`decode` applies to
    peers, so this node never sends what a peer would refuse.

    Raises:
        EncodeError: ``VALUE_TOO_LARGE`` when a store/value message exceeds
            :data:`MAX_FRAME`, ``FRAME_TOO_LARGE`` for any other message that
            does, ``INVALID_MESSAGE`` when a field breaks the rules (wrong
            length, type or range).
    """
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        raise EncodeError(_C.INVALID_MESSAGE, f"not a wire message: {type(msg).__name__}.")
    name = msg.TYPE
    try:
        obj = encoder(msg)
        _DECODERS[name](obj)
        frame = orjson.dumps(obj)
    except WireError as exc:
        raise EncodeError(  # INVALID_MESSAGE, or VALUE_TOO_LARGE
            exc.code, f"refusing to send an invalid {name} message: {exc.message}"
        ) from None
    except (AttributeError, TypeError, ValueError) as exc:
        # A field of the wrong type (.hex() of a str), an unencodable string
        # (lone surrogates), an integer beyond 64 bits.
        raise EncodeError(
            _C.INVALID_MESSAGE, f"refusing to send an invalid {name} message: {exc}."
        ) from exc
    if len(frame) > MAX_FRAME:
        code = _C.VALUE_TOO_LARGE if name in ("store", "value") else _C.FRAME_TOO_LARGE
        raise EncodeError(
            code, f"the {name} message is {len(frame)} bytes; frames are limited to {MAX_FRAME}."
        )
    return frame


def decode(frame: bytes | bytearray | memoryview | str) -> Message:
    """The message in ``frame``, fully validated.

    Keys the message type does not define are ignored (forward compatibility:
    a newer minor version may add optional fields). Fields with a default
    (``NodeInfo.role``, ``Error.retry_after``) may be omitted.

    Raises:
        WireError: for every bad frame, with ``rid`` set when the frame is a
            JSON object whose ``rid`` is a valid request id. Codes:
            ``FRAME_TOO_LARGE`` (checked before parsing), ``MALFORMED_JSON``,
            ``UNKNOWN_TYPE``, ``INVALID_MESSAGE``, and ``VERSION_MISMATCH``
            only when a frame from another major version fails the checks of
            this one (a valid hello of another major version is returned, and
            refused by the handshake, which names both versions).
        InvalidArgument: ``frame`` is not bytes-like or str (a bug of the caller).
    """
    if isinstance(frame, bytes | bytearray):
        size = len(frame)
    elif isinstance(frame, str):
        size = len(frame)
        # A character is 1 to 4 bytes in UTF-8: only measure when it matters.
        if MAX_FRAME // 4 < size <= MAX_FRAME:
            size = len(frame.encode("utf-8", "surrogatepass"))
    elif isinstance(frame, memoryview):
        size = frame.nbytes
    else:
        raise InvalidArgument(f"decode() takes bytes or str, not {type(frame).__name__}.")
    if size > MAX_FRAME:
        raise WireError(
            _C.FRAME_TOO_LARGE, f"frame of {size} bytes exceeds the limit of {MAX_FRAME} bytes."
        )
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise WireError(_C.MALFORMED_JSON, f"frame is not valid JSON: {exc}.") from None
    if not isinstance(obj, dict):
        raise WireError(_C.INVALID_MESSAGE, f"frame must be a JSON object, got {_show(obj)}.")
    try:
        return _decode_object(obj)
    except WireError as exc:
        raise _with_context(exc, obj) from None


def _decode_object(obj: _Obj) -> Message:
    version = obj.get("v")
    if version != PROTOCOL_VERSION and _major(version) is None:
        raise _invalid(f"'v' must be a \"major.minor\" version string, got {_show(version)}.")
    name = obj.get("t")
    if not isinstance(name, str):
        raise _invalid(f"'t' must be the message type as a string, got {_show(name)}.")
    decoder = _DECODERS.get(name)
    if decoder is None:
        raise WireError(_C.UNKNOWN_TYPE, f"unknown message type {_show(name)}.")
    try:
        return decoder(obj)
    except KeyError as exc:
        raise _invalid(f"{name} message lacks the field {exc.args[0]!r}.") from None


def _with_context(exc: WireError, obj: _Obj) -> WireError:
    """Attach the request id, and blame another major version when it is the cause."""
    rid = obj.get("rid")
    exc.rid = rid if type(rid) is int and 0 <= rid < MAX_RID else None
    version = obj.get("v")
    if (
        exc.code in (_C.INVALID_MESSAGE, _C.UNKNOWN_TYPE)
        and isinstance(version, str)
        and _major(version) is not None
        and not compatible(version, PROTOCOL_VERSION)
    ):
        # A newer major may well change fields; "missing field" alone would
        # hide the real cause, which is exactly how the old network died.
        return WireError(
            _C.VERSION_MISMATCH, f"{_mismatch_text(version)} ({exc.message})", rid=exc.rid
        )
    return exc


def error_reply(err: WireError) -> Error:
    """The ``error`` message that answers ``err`` (same code, rid and retry_after).

    Its text is the error's message followed by its advice, except for
    ``INTERNAL``, where only the advice is sent: internals stay in our log.
    """
    text = err.advice if err.code == _C.INTERNAL else f"{err.message} {err.advice}"
    if len(text) > MAX_ERROR_MESSAGE:
        text = text[: MAX_ERROR_MESSAGE - 3] + "..."
    rid = err.rid if type(err.rid) is int and 0 <= err.rid < MAX_RID else None
    retry = err.retry_after
    if retry is not None and not 0.0 <= retry < math.inf:
        retry = None
    code = err.code
    if not (0 < len(code) <= MAX_CODE and code.isprintable()):
        code = _C.INTERNAL.value
    return Error(rid, code, text, retry)


# The service messages (bootstrap, bridges, relay) and pubsub's go through this same codec.
for _more, _types in ((_service, _service.SERVICE_TYPES), (_pubsub, _pubsub.PUBSUB_TYPES)):
    _decoders, _encoders = _more.codecs(sys.modules[__name__])
    _DECODERS.update(_decoders), _ENCODERS.update(_encoders)
    MESSAGE_TYPES.update({cls.TYPE: cls for cls in _types})  # type: ignore[misc]
