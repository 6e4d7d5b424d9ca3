"""The wire codec: round trips, every class of bad input, fuzzing, the version rule."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from yzcore import wire
from yzcore.exceptions import (
    EncodeError,
    InvalidArgument,
    LocalProtocolError,
    RemoteProtocolError,
    WireError,
    YzError,
)
from yzcore.wire import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    ROLES,
    Auth,
    Error,
    ErrorCode,
    FindNode,
    FindValue,
    Hello,
    Keep,
    NodeInfo,
    Nodes,
    Ping,
    Pong,
    Store,
    Stored,
    Value,
    decode,
    encode,
    error_reply,
)

# -- strategies ----------------------------------------------------------------------

ids = st.binary(min_size=32, max_size=32)
rids = st.integers(0, 2**53 - 1)
_printable_chars = st.characters(
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
) | st.just(" ")


def printable(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(_printable_chars, min_size=min_size, max_size=max_size)


addrs = printable(1, 60) | st.builds(lambda n: "ws://host/" + "p" * n, st.integers(0, 502))
seconds = st.floats(min_value=0, allow_nan=False, allow_infinity=False) | st.integers(0, 10**9)
versions = st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 999), st.integers(0, 999))

node_infos = st.builds(NodeInfo, ids, st.none() | addrs, st.sampled_from(ROLES))
node_lists = st.lists(node_infos, max_size=8).map(tuple)
hellos = st.builds(
    Hello,
    versions | st.just(PROTOCOL_VERSION),
    ids,
    st.binary(min_size=16, max_size=64),
    st.sampled_from(ROLES),
    st.lists(addrs, max_size=8).map(tuple),
    st.none() | addrs,
    st.lists(printable(1, 64), max_size=32).map(tuple),
    printable(0, 128),
)
messages = st.one_of(
    hellos,
    st.builds(Auth, st.binary(min_size=64, max_size=64)),
    st.builds(Ping, rids),
    st.builds(Pong, rids),
    st.builds(FindNode, rids, ids),
    st.builds(Nodes, rids, node_lists),
    st.builds(FindValue, rids, ids),
    st.builds(Value, rids, st.none() | st.text(max_size=200), node_lists),
    st.builds(Store, rids, ids, st.text(max_size=200), seconds),
    st.builds(Stored, rids),
    st.builds(
        Error,
        st.none() | rids,
        st.sampled_from(list(ErrorCode)) | printable(1, 64),
        st.text(max_size=300),
        st.none() | seconds,
    ),
    st.just(Keep()),
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
FIELD_NAMES = sorted(
    {"v", "t", "rid", "target", "key", "nodes", "value", "ttl", "code", "message", "retry_after",
     "sig", "nonce", "role", "listen", "advertise", "caps", "agent", "id", "addr"}
)
# Values that look almost right: hex of near-miss lengths, boundary numbers.
near_values = (
    st.integers(0, 70).flatmap(lambda n: st.binary(min_size=n, max_size=n)).map(bytes.hex)
    | st.sampled_from([0, -1, 2**53 - 1, 2**53, 1.5, -0.0, 1e308, True, False, None, "", [], {}])
    | st.sampled_from(list(ROLES) + ["1.0", "2.0", "1.0.0", "x.y", "².0"])
    | st.lists(st.fixed_dictionaries({"id": st.text(max_size=70), "addr": json_values}), max_size=3)
)
near_objects = st.fixed_dictionaries(
    {"t": st.sampled_from(sorted(wire.MESSAGE_TYPES) + ["zap", ""])},
    optional={"v": st.sampled_from(["1.0", "1.9", "2.0", "0.1", 1, None])},
).flatmap(
    lambda base: st.dictionaries(
        st.sampled_from(FIELD_NAMES), near_values | json_values, max_size=10
    ).map(lambda extra: {**extra, **base})
)


def wire_object(msg: wire.Message) -> dict:
    return orjson.loads(encode(msg))


def frame_of(**fields: object) -> bytes:
    return orjson.dumps({"v": PROTOCOL_VERSION, **fields})


def decode_error(frame: bytes | str) -> WireError:
    with pytest.raises(WireError) as info:
        decode(frame)
    return info.value


HEX32 = "ab" * 32
NODE = {"id": HEX32, "addr": "ws://a/dht", "role": "node"}
GOOD = {
    "ping": {"t": "ping", "rid": 1},
    "pong": {"t": "pong", "rid": 1},
    "find_node": {"t": "find_node", "rid": 1, "target": HEX32},
    "nodes": {"t": "nodes", "rid": 1, "nodes": [NODE]},
    "find_value": {"t": "find_value", "rid": 1, "key": HEX32},
    "value": {"t": "value", "rid": 1, "value": None, "nodes": [NODE]},
    "store": {"t": "store", "rid": 1, "key": HEX32, "value": "v", "ttl": 60},
    "stored": {"t": "stored", "rid": 1},
    "error": {"t": "error", "rid": 1, "code": "NOT_FOUND", "message": "m", "retry_after": None},
    "hello": {"t": "hello", "key": HEX32, "nonce": "00" * 16, "role": "node",
              "listen": ["ws://0.0.0.0:9000/dht"], "advertise": "ws://a:9000/dht",
              "caps": ["ws"], "agent": "yzcore/1.0"},
    "auth": {"t": "auth", "sig": "cd" * 64},
    "keep": {"t": "keep"},
}


def good(name: str, **changes: object) -> bytes:
    obj = {"v": PROTOCOL_VERSION, **GOOD[name], **changes}
    return orjson.dumps({k: v for k, v in obj.items() if v is not _DROP})


_DROP = object()


# -- round trips --------------------------------------------------------------------


@given(messages)
def test_every_message_round_trips(msg):
    frame = encode(msg)
    assert isinstance(frame, bytes)
    assert len(frame) <= MAX_FRAME
    assert decode(frame) == msg
    assert decode(frame.decode()) == msg  # text frames too
    assert decode(bytearray(frame)) == msg
    assert decode(memoryview(frame)) == msg


@given(messages)
def test_every_frame_carries_version_and_type(msg):
    obj = wire_object(msg)
    assert obj["t"] == type(msg).TYPE
    assert obj["v"] == (msg.version if isinstance(msg, Hello) else PROTOCOL_VERSION)
    assert list(obj)[:2] == ["v", "t"]


def test_the_documented_wire_form():
    # The examples of docs/reference/wire.md, byte for byte.
    assert encode(FindNode(7, bytes(32))) == (
        b'{"v":"1.0","t":"find_node","rid":7,"target":"' + b"0" * 64 + b'"}'
    )
    assert encode(Nodes(7, (NodeInfo(b"\x01" * 32, "wss://n1.example/dht"),
                            NodeInfo(b"\x02" * 32, None, "browser")))) == (
        b'{"v":"1.0","t":"nodes","rid":7,"nodes":['
        b'{"id":"' + b"01" * 32 + b'","addr":"wss://n1.example/dht","role":"node"},'
        b'{"id":"' + b"02" * 32 + b'","addr":null,"role":"browser"}]}'
    )
    assert encode(Error(3, ErrorCode.RATE_LIMITED, "slow down", 1.5)) == (
        b'{"v":"1.0","t":"error","rid":3,"code":"RATE_LIMITED","message":"slow down",'
        b'"retry_after":1.5}'
    )
    assert encode(Ping(0)) == b'{"v":"1.0","t":"ping","rid":0}'


def test_type_names_and_classes():
    assert set(wire.MESSAGE_TYPES) == {
        "hello", "auth", "ping", "pong", "find_node", "nodes", "find_value", "value", "store",
        "stored", "error", "keep",
        # service messages: bootstrap, bridges, relay, signaling
        "introduce", "introductions", "reconnect", "heartbeat", "challenge", "register",
        "registered", "signal", "relay", "relay_ready", "relay_open", "relay_accept",
        "dial_back", "dial_back_result",
    }
    assert all(cls.TYPE == name for name, cls in wire.MESSAGE_TYPES.items())
    assert wire.REQUEST_TYPES == (Ping, FindNode, FindValue, Store)
    assert set(wire.RESPONSE_TYPES) == {Pong, Nodes, Value, Stored, Error}
    assert set(wire.REPLY_TYPES) == set(wire.REQUEST_TYPES)
    assert all(reply in wire.RESPONSE_TYPES for reply in wire.REPLY_TYPES.values())


def test_messages_are_frozen_and_slotted():
    msg = Ping(1)
    with pytest.raises(AttributeError):
        msg.rid = 2  # type: ignore[misc]
    assert not hasattr(msg, "__dict__")
    assert hash(Nodes(1, (NodeInfo(bytes(32), None),))) is not None


def test_unknown_fields_are_ignored_for_forward_compatibility():
    assert decode(good("ping", future={"x": [1, 2]}, hint="new")) == Ping(1)
    node = {**NODE, "latency_ms": 12}
    assert decode(good("nodes", nodes=[node])) == Nodes(1, (NodeInfo(b"\xab" * 32, "ws://a/dht"),))


def test_fields_with_defaults_may_be_omitted():
    node = {"id": HEX32, "addr": None}
    assert decode(good("nodes", nodes=[node])).nodes[0].role == "node"
    assert decode(good("error", retry_after=_DROP)).retry_after is None


def test_a_newer_minor_version_is_accepted():
    assert decode(good("ping", v="1.9")) == Ping(1)


def test_integer_ttl_decodes_as_float():
    msg = decode(good("store", ttl=60))
    assert msg.ttl == 60.0 and type(msg.ttl) is float


def test_codes_passed_as_enum_members_travel_as_plain_strings():
    msg = decode(encode(Error(None, ErrorCode.NOT_FOUND, "gone")))
    assert msg.code == "NOT_FOUND" and type(msg.code) is str


# -- limits at their boundary ----------------------------------------------------------


def test_frame_of_exactly_max_frame_is_accepted():
    frame = encode(Ping(1))
    padded = frame[:-1] + b" " * (MAX_FRAME - len(frame)) + b"}"
    assert len(padded) == MAX_FRAME
    assert decode(padded) == Ping(1)


def test_sixty_four_nodes_are_accepted():
    nodes = tuple(NodeInfo(bytes([i]) * 32, "ws://" + "h" * 505) for i in range(wire.MAX_NODES))
    assert decode(encode(Nodes(1, nodes))).nodes == nodes


def test_longest_fields_are_accepted():
    hello = Hello("1.0", bytes(32), bytes(64), "bridge", ("a" * 512,) * 8, "b" * 512,
                  ("c" * 64,) * 32, "d" * 128)
    assert decode(encode(hello)) == hello
    err = Error(2**53 - 1, "X" * 64, "m" * 1024, 0.0)
    assert decode(encode(err)) == err


# -- bad input, class by class ----------------------------------------------------------


@pytest.mark.req("B2.2")
@pytest.mark.parametrize(
    "frame", [b"", b"{", b'{"v":"1.0",}', b"\xff\xfe", "not json", b'{"a":1} {"b":2}', b"[" * 2000]
)
def test_malformed_json(frame):
    err = decode_error(frame)
    assert err.code == ErrorCode.MALFORMED_JSON
    assert err.rid is None


@pytest.mark.req("B2.2")
def test_frame_over_64_kib_is_refused_before_parsing():
    frame = encode(Ping(1))
    padded = frame[:-1] + b" " * (MAX_FRAME + 1 - len(frame)) + b"}"
    assert decode_error(padded).code == ErrorCode.FRAME_TOO_LARGE
    # Garbage of that size is "too large", not "malformed": the size is checked first.
    err = decode_error(b"\xff" * (MAX_FRAME + 1))
    assert err.code == ErrorCode.FRAME_TOO_LARGE
    assert str(MAX_FRAME + 1) in str(err) and str(MAX_FRAME) in str(err)


def test_text_frames_are_measured_in_utf8_bytes():
    body = "é" * 33_000  # 33 000 characters, 66 000 bytes
    text = '{"v":"1.0","t":"ping","rid":1,"pad":"' + body + '"}'
    assert len(text) < MAX_FRAME < len(text.encode())
    assert decode_error(text).code == ErrorCode.FRAME_TOO_LARGE
    assert decode_error("x" * (MAX_FRAME + 1)).code == ErrorCode.FRAME_TOO_LARGE
    assert decode('{"v":"1.0","t":"ping","rid":1,"pad":"' + "é" * 1000 + '"}') == Ping(1)


@pytest.mark.parametrize("frame", [b"[1]", b"1", b"null", b'"ping"', b"true"])
def test_json_that_is_not_an_object(frame):
    assert decode_error(frame).code == ErrorCode.INVALID_MESSAGE


@pytest.mark.req("B2.2")
def test_unknown_type_names_the_type_and_keeps_the_rid():
    err = decode_error(frame_of(t="frobnicate", rid=42))
    assert err.code == ErrorCode.UNKNOWN_TYPE
    assert "frobnicate" in str(err)
    assert err.rid == 42


def test_unknown_type_is_truncated_in_the_message():
    err = decode_error(frame_of(t="x" * 5000))
    assert err.code == ErrorCode.UNKNOWN_TYPE
    assert "x" * 40 in str(err) and "x" * 41 not in str(err)


@pytest.mark.parametrize("t", [None, 1, ["ping"], {"a": 1}, _DROP])
def test_missing_or_non_string_type(t):
    assert decode_error(good("ping", t=t)).code == ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize(
    "v", [_DROP, None, 1, 1.0, "1", "1.0.0", "x.y", "1.", ".1", "².0", "1." + "0" * 20, ""]
)
def test_version_must_be_a_major_minor_string(v):
    err = decode_error(good("ping", v=v))
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert "'v'" in str(err)


@pytest.mark.req("B2.2")
@pytest.mark.parametrize(
    "name, field, value",
    [
        ("find_node", "target", "ab" * 31),  # 31 bytes
        ("find_node", "target", "ab" * 33),
        ("find_node", "target", "AB" * 32),  # upper case
        ("find_node", "target", "zz" * 32),
        ("find_node", "target", "ab " * 21 + "a"),  # fromhex would skip the spaces
        ("find_node", "target", 5),
        ("find_node", "target", None),
        ("find_value", "key", "ab" * 16),
        ("store", "key", "ab" * 64),
        ("auth", "sig", "cd" * 63),
        ("auth", "sig", "cd" * 65),
        ("hello", "key", "ab" * 31),
        ("hello", "nonce", "00" * 15),
        ("hello", "nonce", "00" * 65),
        ("hello", "nonce", "0" * 33),  # odd length
    ],
)
def test_wrong_hex_is_invalid(name, field, value):
    err = decode_error(good(name, **{field: value}))
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert repr(field) in str(err)


@pytest.mark.parametrize("rid", [True, False, -1, 2**53, 1.0, "1", None, [1]])
def test_rid_must_be_a_non_negative_integer_below_2_53(rid):
    err = decode_error(good("ping", rid=rid))
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert "'rid'" in str(err)
    assert err.rid is None  # a bad rid is never echoed


def test_largest_rid_is_accepted():
    assert decode(good("ping", rid=2**53 - 1)) == Ping(2**53 - 1)


@pytest.mark.req("B2.2")
def test_rid_is_attached_to_field_errors():
    err = decode_error(good("find_node", rid=7, target="nope"))
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert err.rid == 7
    assert error_reply(err).rid == 7


STORE_HEAD = b'{"v":"1.0","t":"store","rid":1,"key":"' + HEX32.encode() + b'","value":"v",'


@pytest.mark.parametrize(
    "frame",
    [
        STORE_HEAD + b'"ttl":NaN}',
        STORE_HEAD + b'"ttl":Infinity}',
        STORE_HEAD + b'"ttl":1e400}',
        b'{"v":"1.0","t":"error","rid":1,"code":"X","message":"m","retry_after":-Infinity}',
    ],
)
def test_non_finite_numbers_are_refused(frame):
    # NaN and infinities are not JSON; a hand-written frame gets them refused.
    err = decode_error(frame)
    assert err.code in (ErrorCode.MALFORMED_JSON, ErrorCode.INVALID_MESSAGE)


@pytest.mark.parametrize("ttl", [-1, -0.5, "60", True, None, [60]])
def test_ttl_must_be_a_finite_non_negative_number(ttl):
    err = decode_error(good("store", ttl=ttl))
    assert err.code == ErrorCode.INVALID_MESSAGE and "'ttl'" in str(err)


@pytest.mark.parametrize("retry", [-1, "1", True, [1]])
def test_retry_after_must_be_null_or_a_non_negative_number(retry):
    assert decode_error(good("error", retry_after=retry)).code == ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize(
    "name, changes",
    [
        ("nodes", {"nodes": [NODE] * 65}),
        ("value", {"nodes": [NODE] * 65}),
        ("nodes", {"nodes": NODE}),
        ("nodes", {"nodes": [HEX32]}),
        ("nodes", {"nodes": [{"addr": None}]}),
        ("nodes", {"nodes": [{"id": HEX32}]}),
        ("nodes", {"nodes": [{**NODE, "role": "king"}]}),
        ("nodes", {"nodes": [{**NODE, "role": None}]}),
        ("nodes", {"nodes": [{**NODE, "addr": "ws://" + "h" * 508}]}),  # 513 characters
        ("nodes", {"nodes": [{**NODE, "addr": ""}]}),
        ("nodes", {"nodes": [{**NODE, "addr": "ws://a\n/dht"}]}),
        ("nodes", {"nodes": [{**NODE, "addr": 80}]}),
        ("nodes", {"nodes": [{**NODE, "id": "ab" * 31}]}),
        ("value", {"value": 5}),
        ("value", {"value": ["x"]}),
        ("store", {"value": None}),
        ("hello", {"role": "admin"}),
        ("hello", {"role": "Node"}),
        ("hello", {"agent": "a" * 129}),
        ("hello", {"agent": None}),
        ("hello", {"caps": ["c"] * 33}),
        ("hello", {"caps": ["c" * 65]}),
        ("hello", {"caps": [""]}),
        ("hello", {"caps": "ws"}),
        ("hello", {"listen": ["ws://a"] * 9}),
        ("hello", {"listen": [None]}),
        ("hello", {"advertise": "a" * 513}),
        ("hello", {"advertise": "ws://a\r\nX-Evil: 1"}),
        ("error", {"code": ""}),
        ("error", {"code": 404}),
        ("error", {"code": "C" * 65}),
        ("error", {"message": "m" * 1025}),
        ("error", {"message": None}),
        ("error", {"rid": "1"}),
    ],
)
def test_out_of_range_fields_are_invalid(name, changes):
    err = decode_error(good(name, **changes))
    assert err.code == ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_required_field_is_required(name):
    for field in GOOD[name]:
        if field == "t" or (name, field) == ("error", "retry_after"):
            continue
        err = decode_error(good(name, **{field: _DROP}))
        assert err.code == ErrorCode.INVALID_MESSAGE
        assert repr(field) in str(err), (name, field)


def test_the_good_examples_really_are_good():
    for name in GOOD:
        assert type(decode(good(name))).TYPE == name


# -- versions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, ok",
    [
        ("1.0", "1.0", True),
        ("1.0", "1.7", True),
        ("1.12", "01.3", True),
        ("1.0", "2.0", False),
        ("0.9", "1.0", False),
        ("1.0", "1", False),
        ("1.0", "x", False),
        ("1.0", None, False),
    ],
)
def test_same_major_interoperates(a, b, ok):
    assert wire.compatible(a, b) is ok
    assert wire.compatible(b, a) is ok


@pytest.mark.req("B2.2")
def test_version_mismatch_names_both_versions():
    wire.check_version("1.4")
    with pytest.raises(WireError) as info:
        wire.check_version("2.0")
    err = info.value
    assert err.code == ErrorCode.VERSION_MISMATCH
    assert "peer speaks protocol 2.0, this node speaks 1.0" in str(err)
    assert "upgrade" in str(err)


@pytest.mark.req("B2.2")
def test_version_mismatch_with_a_garbled_version_still_names_ours():
    with pytest.raises(WireError) as info:
        wire.check_version("banana")
    assert "'banana'" in str(info.value) and "1.0" in str(info.value)


def test_a_valid_hello_of_another_major_decodes_for_the_handshake_to_refuse():
    msg = decode(good("hello", v="2.0"))
    assert isinstance(msg, Hello) and msg.version == "2.0"


@pytest.mark.req("B2.2")
def test_a_frame_of_another_major_that_we_cannot_read_blames_the_version():
    # The old network died of a silent version mismatch: "missing field" alone
    # would have hidden it.
    err = decode_error(orjson.dumps({"v": "2.0", "t": "hello", "pubkey": "..", "rid": 9}))
    assert err.code == ErrorCode.VERSION_MISMATCH
    assert "peer speaks protocol 2.0, this node speaks 1.0" in str(err)
    assert "'key'" in str(err)  # and the concrete problem
    assert err.rid == 9
    err = decode_error(orjson.dumps({"v": "3.1", "t": "hello2"}))
    assert err.code == ErrorCode.VERSION_MISMATCH
    # The same problems within our major stay what they are.
    assert decode_error(orjson.dumps({"v": "1.3", "t": "hello2"})).code == ErrorCode.UNKNOWN_TYPE


# -- encode -----------------------------------------------------------------------------


@pytest.mark.req("B2.2")
def test_too_large_value_is_refused_locally():
    with pytest.raises(EncodeError) as info:
        encode(Store(1, bytes(32), "x" * MAX_FRAME, 60.0))
    err = info.value
    assert isinstance(err, LocalProtocolError) and isinstance(err, YzError)
    assert err.code == ErrorCode.VALUE_TOO_LARGE
    assert str(MAX_FRAME) in str(err)
    with pytest.raises(EncodeError) as info:
        encode(Value(1, "\x00" * 20_000, ()))  # 6 bytes each once escaped
    assert info.value.code == ErrorCode.VALUE_TOO_LARGE


def test_anything_stored_can_be_served_back():
    # The largest value a store frame can carry also fits a value reply with
    # no nodes, even with the longest rid: the store engine relies on it.
    head = len(encode(Store(0, bytes(32), "", 0)))
    value = "x" * (MAX_FRAME - head)
    assert len(encode(Store(0, bytes(32), value, 0))) == MAX_FRAME
    assert len(encode(Value(2**53 - 1, value, ()))) <= MAX_FRAME


@pytest.mark.parametrize(
    "msg",
    [
        Ping(True),
        Ping(-1),
        Ping(2**53),
        Ping(2**70),
        FindNode(1, bytes(31)),
        FindNode(1, "ab" * 32),  # type: ignore[arg-type]
        Store(1, bytes(32), "v", math.nan),
        Store(1, bytes(32), "v", math.inf),
        Store(1, bytes(32), "v", -1.0),
        Store(1, bytes(32), "\ud800", 1.0),  # a lone surrogate is not UTF-8
        Nodes(1, (NodeInfo(bytes(32), "ws://x", "admin"),)),
        Nodes(1, (NodeInfo(bytes(32), ""),)),
        Nodes(1, tuple(NodeInfo(bytes(32), None) for _ in range(65))),
        Hello("1.0", bytes(32), bytes(8), "node", (), None, (), "a"),
        Hello("one", bytes(32), bytes(16), "node", (), None, (), "a"),
        Error(1, "", "m"),
        Error(1, "X", "m", -1.0),
        Auth(bytes(63)),
    ],
)
def test_invalid_messages_are_refused_before_they_leave(msg):
    with pytest.raises(EncodeError) as info:
        encode(msg)
    assert info.value.code == ErrorCode.INVALID_MESSAGE


def test_encode_refuses_what_is_not_a_message():
    with pytest.raises(EncodeError):
        encode({"t": "ping", "rid": 1})  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode(NodeInfo(bytes(32), None))  # type: ignore[arg-type]


def test_decode_refuses_what_is_not_a_frame():
    with pytest.raises(InvalidArgument):
        decode(123)  # type: ignore[arg-type]


# -- errors and advice ------------------------------------------------------------------


def test_every_code_has_its_own_advice():
    seen = set()
    for code in ErrorCode:
        text = wire.advice(code)
        assert text and text != wire.advice("NO_SUCH_CODE")
        assert text.endswith(".")
        seen.add(text)
        assert wire.advice(str(code)) == text
    assert len(seen) == len(ErrorCode)


def test_unknown_codes_point_to_the_reference():
    assert "reference" in wire.advice("SOMETHING_NEW")


def test_the_minimum_code_set_is_there():
    required = {
        "MALFORMED_JSON", "FRAME_TOO_LARGE", "UNKNOWN_TYPE", "INVALID_MESSAGE",
        "VERSION_MISMATCH", "BAD_SIGNATURE", "ID_MISMATCH", "HANDSHAKE_REQUIRED",
        "HANDSHAKE_TIMEOUT", "RATE_LIMITED", "NOT_FOUND", "VALUE_TOO_LARGE", "TIMEOUT",
        "PEER_UNREACHABLE", "DUPLICATE_CONNECTION", "SHUTTING_DOWN", "INTERNAL",
    }
    assert required <= {c.value for c in ErrorCode}


def test_wire_error_is_a_remote_protocol_error_with_code_and_advice():
    err = WireError(ErrorCode.RATE_LIMITED, "12 find_node/s over the limit", rid=5, retry_after=2.0)
    assert isinstance(err, RemoteProtocolError)
    assert err.code == "RATE_LIMITED" and type(err.code) is str
    assert err.message == "12 find_node/s over the limit"
    assert str(err).startswith("[RATE_LIMITED] 12 find_node/s")
    assert wire.advice("RATE_LIMITED") in str(err)


def test_error_reply_carries_code_rid_retry_after_and_advice():
    reply = error_reply(WireError("RATE_LIMITED", "over the limit.", rid=5, retry_after=2.0))
    assert reply == Error(5, "RATE_LIMITED", f"over the limit. {wire.advice('RATE_LIMITED')}", 2.0)
    assert decode(encode(reply)) == reply


def test_error_reply_keeps_internals_private():
    reply = error_reply(WireError("INTERNAL", "KeyError: 'secret' at engine.py:42"))
    assert "secret" not in reply.message
    assert reply.message == wire.advice("INTERNAL")


def test_error_reply_is_always_sendable():
    long = WireError("X" * 100, "m" * 5000, rid=2**60, retry_after=math.nan)
    reply = error_reply(long)
    assert len(reply.message) == wire.MAX_ERROR_MESSAGE
    assert reply.rid is None and reply.retry_after is None
    assert reply.code == "INTERNAL"
    encode(reply)


# -- fuzzing: decode raises WireError and nothing else ----------------------------------


def check_decode(frame: bytes | str) -> None:
    try:
        msg = decode(frame)
    except WireError as err:
        assert isinstance(err.code, str) and err.code in set(ErrorCode)
        assert err.rid is None or (type(err.rid) is int and 0 <= err.rid < 2**53)
        encode(error_reply(err))  # every refusal can be answered
    else:
        # Whatever decode accepts, encode accepts and reproduces.
        assert decode(encode(msg)) == msg


@given(st.binary(max_size=2000))
def test_fuzz_binary(frame):
    check_decode(frame)


@given(st.text(max_size=500))
def test_fuzz_text(frame):
    check_decode(frame)


@given(json_values)
def test_fuzz_json_values(value):
    check_decode(orjson.dumps(value))


@given(near_objects)
def test_fuzz_near_valid_objects(obj):
    check_decode(orjson.dumps(obj))


@given(messages, st.data())
def test_fuzz_mutated_valid_messages(msg, data):
    obj = wire_object(msg)
    field = data.draw(st.sampled_from(sorted(obj)))
    if data.draw(st.booleans()):
        del obj[field]
    else:
        obj[field] = data.draw(near_values | json_values)
    check_decode(orjson.dumps(obj))


@given(messages, st.data())
def test_fuzz_truncated_and_flipped_frames(msg, data):
    frame = bytearray(encode(msg))
    assume(frame)
    i = data.draw(st.integers(0, len(frame) - 1))
    if data.draw(st.booleans()):
        frame[i] ^= 1 << data.draw(st.integers(0, 7))
        check_decode(bytes(frame))
    else:
        check_decode(bytes(frame[:i]))


# -- the reference docs cannot drift ----------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference"


def test_error_reference_lists_every_wire_code_with_its_advice():
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    for code in ErrorCode:
        assert f"| `{code}` | {wire.advice(code)} |" in text, f"add {code} to errors.md"


def test_error_reference_lists_every_exception_class_and_code():
    from yzcore import exceptions

    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert f"| `{name}` |" in text, f"add the class {name} to docs/reference/errors.md"
        if cls not in (EncodeError, WireError, exceptions.HandshakeError):
            assert f"`{cls.code}`" in text, f"add the code {cls.code} to errors.md"


def test_wire_reference_examples_decode():
    text = (DOCS / "wire.md").read_text(encoding="utf-8")
    examples = [line for line in text.splitlines() if line.startswith('{"v":"1.0"')]
    assert len(examples) == len(wire.MESSAGE_TYPES) + 1  # value appears twice
    for line in examples:
        frame = line.replace("a1a1…a1", "a1" * 32).replace("b2b2…b2", "b2" * 32)
        frame = frame.replace("5e5e…5e", "5e" * 32).replace("c3c3…c3", "c3" * 64)
        msg = decode(frame)
        assert encode(msg).decode() == frame  # and it is exactly what encode writes
